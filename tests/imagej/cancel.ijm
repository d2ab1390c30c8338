// Esc during a long run cancels it: no output opens.
run("ESPINNet Simulate...", "preset=sandpaper-random size=768 scans=20 seed=3");
seconds = call("EspinnetChecks.cancel", "reference=reference sample=sample engine=tracking window=2 max_shift=12");
print("cancel: seconds=" + seconds + " dx_open=" + isOpen("dx"));
print("macro done: cancel");
