// Timed runs for scripts/imagej-bench.sh: argument "DIR,ENGINE". The first run of a
// session also unpacks the native libraries from the jar; the second does not.
args = split(getArgument(), ",");
open(args[0] + "/reference.tif");
rename("reference");
open(args[0] + "/sample.tif");
rename("sample");
for (i = 0; i < 2; i++) {
    start = getTime();
    run("ESPINNet Reconstruct...", "reference=reference sample=sample engine=" + args[1]);
    print("reconstruct_ms " + (getTime() - start) + " images " + nImages);
    while (nImages > 2) { selectImage(nImages); close(); }
}
