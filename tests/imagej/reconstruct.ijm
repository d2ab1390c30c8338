// Simulates a pair, reconstructs it with both engines as a recorded macro would, and saves
// the inputs and outputs in the folder given as the argument (scripts/imagej-tests.sh).
dir = getArgument();
run("ESPINNet Simulate...", "preset=mask-diagonal size=128 scans=10 seed=1");
for (i = 0; i < 2; i++) {
    name = newArray("reference", "sample");
    selectImage(name[i]);
    saveAs("Tiff", dir + "/" + name[i] + ".tif");
    rename(name[i]);
}
geometry = " energy_kev=20 distance_m=0.5 pixel_size_um=6.5 magnification=10";
engines = newArray("tracking", "network");
maps = newArray("dx", "dy", "transmission", "darkfield", "quality", "phase", "status");
for (e = 0; e < engines.length; e++) {
    run("ESPINNet Reconstruct...", "reference=reference sample=sample engine=" + engines[e]
        + " window=1 max_shift=8 provider=auto" + geometry);
    for (i = 0; i < maps.length; i++) {
        selectImage(maps[i]);
        print("output " + engines[e] + " " + getTitle() + " " + getWidth() + "x" + getHeight()
              + " bits=" + bitDepth() + " label=" + getMetadata("Label"));
        saveAs("Tiff", dir + "/" + engines[e] + "-" + maps[i] + ".tif");
        close();
    }
}
// A rectangle on the sample limits the work to it.
selectImage("sample");
makeRectangle(16, 8, 96, 80);
run("ESPINNet Reconstruct...", "reference=reference sample=sample engine=tracking outputs=dx");
selectImage("dx");
print("roi dx " + getWidth() + "x" + getHeight());
saveAs("Tiff", dir + "/roi-dx.tif");
// Virtual stacks (read from disk slice by slice) give the same maps.
close("*");
run("TIFF Virtual Stack...", "open=[" + dir + "/reference.tif]");
rename("virtual_reference");
run("TIFF Virtual Stack...", "open=[" + dir + "/sample.tif]");
rename("virtual_sample");
print("virtual: " + is("Virtual Stack"));
run("ESPINNet Reconstruct...", "reference=virtual_reference sample=virtual_sample engine=tracking outputs=dx");
selectImage("dx");
saveAs("Tiff", dir + "/virtual-dx.tif");
print("macro done: reconstruct");
