package espinnet.imagej;

import java.util.LinkedHashMap;
import java.util.Map;

import com.sun.jna.Memory;

import ij.IJ;
import ij.Macro;
import ij.ImagePlus;
import ij.ImageStack;
import ij.gui.GenericDialog;
import ij.plugin.PlugIn;
import ij.util.Tools;
import ij.process.FloatProcessor;

/**
 * Plugins › ESPINNet › ESPINNet Simulate...: a simulated reference and sample stack (photon
 * counts, 32-bit) titled "reference" and "sample", to try the plugin without data. Macro
 * keys: preset= size= scans= seed= truth (also opens the true maps, titled truth_dx ...).
 * The presets' geometry: 20 keV, 0.5 m, 6.5 µm pixels, magnification 10.
 */
public class Simulate implements PlugIn {
    static final String[] PRESETS = {"mask-diagonal", "sandpaper-random", "grating-grid", "lens"};

    @Override
    public void run(String arg) {
        GenericDialog gd = new GenericDialog("ESPINNet Simulate");
        gd.addChoice("preset", PRESETS, PRESETS[0]);
        gd.addNumericField("size", 256, 0, 6, "px");
        gd.addNumericField("scans", 20, 0, 4, "positions N");
        gd.addNumericField("seed", 1, 0, 6, "");
        gd.addCheckbox("truth", false);
        gd.showDialog();
        if (gd.wasCanceled()) {
            return;
        }
        String error = execute(gd.getNextChoice(), (int) gd.getNextNumber(), (int) gd.getNextNumber(),
                (long) gd.getNextNumber(), gd.getNextBoolean());
        if (error != null) {
            Errors.show(error);
        }
    }

    /**
     * The same without any dialog, for true headless use (no display):
     * call("espinnet.imagej.Simulate.headless", "preset=lens size=256 scans=20 seed=1");
     * returns "ok" or the error message.
     */
    public static String headless(String macroOptions) {
        return Errors.headless(() -> headlessRun(macroOptions + " "));
    }

    private static String headlessRun(String o) {
        return execute(Macro.getValue(o, "preset", PRESETS[0]),
                (int) Tools.parseDouble(Macro.getValue(o, "size", "256"), 0),
                (int) Tools.parseDouble(Macro.getValue(o, "scans", "20"), 0),
                (long) Tools.parseDouble(Macro.getValue(o, "seed", "1"), 0),
                o.contains(" truth "));
    }

    /** Opens the simulated pair (and the truth); null or the error. */
    static String execute(String preset, int size, int n, long seed, boolean truth) {
        if (size < 16 || size > 8192 || n < 1 || n > 1000) {
            return "size must be 16 to 8192 px and scans 1 to 1000.";
        }
        try {
            long frame = (long) size * size;
            Memory ref = new Memory(n * frame * 4);
            Memory smp = new Memory(n * frame * 4);
            Map<String, Memory> maps = new LinkedHashMap<>();
            for (String name : new String[] {"dx", "dy", "transmission", "darkfield", "phase"}) {
                maps.put(name, new Memory(frame * 4));
            }
            Native.check(Native.lib().esp_simulate(preset, size, size, n, seed, ref, smp, n * frame,
                    new Native.Outputs(maps, frame)));
            open("reference", ref, size, n);
            open("sample", smp, size, n);
            if (truth) {
                for (Map.Entry<String, Memory> e : maps.entrySet()) {
                    ImagePlus imp = new ImagePlus("truth_" + e.getKey(),
                            new FloatProcessor(size, size, e.getValue().getFloatArray(0, (int) frame)));
                    imp.show();
                }
            }
            return null;
        } catch (Native.Failure f) {
            return f.getMessage();
        } catch (LinkageError e) {
            return Errors.missingNative(e);
        }
    }

    static void open(String title, Memory data, int size, int n) {
        ImageStack stack = new ImageStack(size, size);
        int frame = size * size;
        for (int k = 0; k < n; k++) {
            stack.addSlice("scan " + (k + 1), data.getFloatArray((long) k * frame * 4, frame));
        }
        ImagePlus imp = new ImagePlus(title, stack);
        imp.resetDisplayRange();
        imp.show();
        IJ.showStatus("ESPINNet: simulated " + title);
    }
}
