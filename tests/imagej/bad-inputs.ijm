// Each bad input must give its message ("ESPINNet error: ..." in the log) and change
// nothing that is open.
run("ESPINNet Simulate...", "preset=lens size=64 scans=5 seed=2");
newImage("small", "32-bit ramp", 32, 32, 5);
newImage("rgb", "RGB ramp", 64, 64, 5);
before = nImages;
selectImage("reference");
value = getPixel(10, 10);
cases = newArray("reference=reference sample=small engine=tracking",
                 "reference=rgb sample=sample engine=tracking",
                 "reference=reference sample=sample engine=tracking outputs=dx,phse",
                 "reference=reference sample=sample engine=tracking max_shift=40",
                 "reference=reference sample=sample engine=tracking window=-3");
for (i = 0; i < cases.length; i++)
    print("case " + i + ": " + call("EspinnetChecks.attempt", cases[i]));
selectImage("reference");
print("unchanged: images=" + (nImages == before) + " pixels=" + (getPixel(10, 10) == value));
print("macro done: bad-inputs");
