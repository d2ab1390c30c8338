// True headless (java.awt.headless=true, no display): the static entries, no dialog.
dir = getArgument();
setBatchMode(true);
print("simulate: " + call("espinnet.imagej.Simulate.headless", "preset=mask-diagonal size=128 scans=10 seed=1"));
print("reconstruct: " + call("espinnet.imagej.Reconstruct.headless", "reference=reference sample=sample engine=tracking outputs=dx"));
selectImage("dx");
saveAs("Tiff", dir + "/headless-dx.tif");
print("bad: " + call("espinnet.imagej.Reconstruct.headless", "reference=reference sample=nothing"));
print("macro done: headless");
