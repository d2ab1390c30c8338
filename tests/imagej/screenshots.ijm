// Pictures for plugin/imagej/README.md (scripts/imagej-screenshots.sh): the dialog, and
// the results of the network engine on a simulated lens, tiled.
dir = getArgument();
run("ESPINNet Simulate...", "preset=lens size=256 scans=10 seed=1");
print(call("Screenshots.dialog", dir + "/dialog.png"));
run("ESPINNet Reconstruct...", "reference=reference sample=sample engine=network provider=auto energy_kev=20 distance_m=0.5 pixel_size_um=6.5 magnification=10 outputs=[dx dy transmission darkfield phase status]");
selectImage("reference"); close();
selectImage("sample"); close();
run("Tile");
wait(1500);
run("Capture Screen");
saveAs("PNG", dir + "/results.png");
print("macro done: screenshots");
run("Quit");
