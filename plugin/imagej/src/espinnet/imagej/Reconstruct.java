package espinnet.imagej;

import java.awt.Rectangle;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;

import ij.IJ;
import ij.Macro;
import ij.ImagePlus;
import ij.ImageStack;
import ij.WindowManager;
import ij.gui.GenericDialog;
import ij.gui.Roi;
import ij.plugin.PlugIn;
import ij.util.Tools;
import ij.process.ByteProcessor;
import ij.process.FloatProcessor;
import ij.process.ImageProcessor;

/**
 * Plugins › ESPINNet › ESPINNet Reconstruct...: the multi-contrast maps of an open reference
 * and sample stack, opened as 32-bit images titled dx, dy, transmission, darkfield, quality
 * and, with the geometry, refraction_x, refraction_y and phase, and the 8-bit status of each
 * pixel (3: not measured, NaN in every map; 4: the network's estimate solved again by its
 * guard). Macro keys (stable):
 * reference= sample= engine= provider= window= max_shift= energy_kev= distance_m=
 * pixel_size_um= magnification= outputs=.
 */
public class Reconstruct implements PlugIn {
    static final String TITLE = "ESPINNet";
    static final String[] ENGINES = {"network", "tracking"};
    static final String[] PROVIDERS = {"auto", "cpu", "cuda", "tensorrt"};
    static final String DEFAULT_OUTPUTS = "dx dy transmission darkfield quality phase status";

    /** Kept while the C call may call it. */
    private Native.Progress progress;

    @Override
    public void run(String arg) {
        int[] ids = WindowManager.getIDList();
        if (ids == null) {
            Errors.show("Open a reference and a sample stack first (or run ESPINNet Simulate...).");
            return;
        }
        String[] titles = new String[ids.length];
        for (int i = 0; i < ids.length; i++) {
            titles[i] = WindowManager.getImage(ids[i]).getTitle();
        }
        GenericDialog gd = new GenericDialog("ESPINNet Reconstruct");
        gd.addChoice("reference", titles, guess(titles, "reference", 0));
        gd.addChoice("sample", titles, guess(titles, "sample", Math.min(1, titles.length - 1)));
        gd.addChoice("engine", ENGINES, ENGINES[0]);
        gd.addChoice("provider", PROVIDERS, PROVIDERS[0]);
        gd.addNumericField("window", 1, 0, 4, "px, tracking: matching half-window");
        gd.addNumericField("max_shift", 8, 0, 4, "px, tracking: search range");
        gd.addMessage("Geometry, for refraction and phase (0: none)");
        gd.addNumericField("energy_kev", 0, 3, 8, "keV");
        gd.addNumericField("distance_m", 0, 4, 8, "m, sample to detector");
        gd.addNumericField("pixel_size_um", 0, 3, 8, "µm, detector pixel");
        gd.addNumericField("magnification", 1, 3, 8, "");
        gd.addStringField("outputs", DEFAULT_OUTPUTS, 40);
        gd.addMessage("A rectangle on the sample limits the work to it. Esc cancels.");
        gd.showDialog();
        if (gd.wasCanceled()) {
            return;
        }
        ImagePlus reference = WindowManager.getImage(ids[gd.getNextChoiceIndex()]);
        ImagePlus sample = WindowManager.getImage(ids[gd.getNextChoiceIndex()]);
        Map<String, String> options = new LinkedHashMap<>();
        options.put("engine", gd.getNextChoice());
        options.put("provider", gd.getNextChoice());
        options.put("window", integer(gd.getNextNumber()));
        options.put("max_shift", integer(gd.getNextNumber()));
        double[] geometry = {gd.getNextNumber(), gd.getNextNumber(), gd.getNextNumber(), gd.getNextNumber()};
        String outputs = gd.getNextString();
        String error = execute(reference, sample, options, geometry, outputs);
        if (error != null) {
            Errors.show(error);
        }
    }

    /**
     * The same without any dialog, for true headless use (no display):
     * call("espinnet.imagej.Reconstruct.headless", "reference=TITLE sample=TITLE engine=...")
     * with the keys of the dialog; returns "ok" or the error message.
     */
    public static String headless(String macroOptions) {
        return Errors.headless(() -> headlessRun(macroOptions + " "));
    }

    private static String headlessRun(String o) {
        ImagePlus reference = WindowManager.getImage(Macro.getValue(o, "reference", ""));
        ImagePlus sample = WindowManager.getImage(Macro.getValue(o, "sample", ""));
        if (reference == null || sample == null) {
            return "reference= and sample= must name open images";
        }
        Map<String, String> options = new LinkedHashMap<>();
        options.put("engine", Macro.getValue(o, "engine", ENGINES[0]));
        options.put("provider", Macro.getValue(o, "provider", PROVIDERS[0]));
        options.put("window", Macro.getValue(o, "window", "1"));
        options.put("max_shift", Macro.getValue(o, "max_shift", "8"));
        double[] geometry = new double[4];
        String[] keys = {"energy_kev", "distance_m", "pixel_size_um", "magnification"};
        for (int i = 0; i < keys.length; i++) {
            geometry[i] = Tools.parseDouble(Macro.getValue(o, keys[i], i == 3 ? "1" : "0"), Double.NaN);
        }
        return new Reconstruct().execute(reference, sample, options, geometry,
                Macro.getValue(o, "outputs", DEFAULT_OUTPUTS));
    }

    /** Runs with the geometry (keV, m, µm, magnification; 0: none); null or the error. */
    String execute(ImagePlus reference, ImagePlus sample, Map<String, String> options,
            double[] geometry, String outputs) {
        if (geometry[0] > 0 && geometry[1] > 0 && geometry[2] > 0) {
            String[] keys = {"energy_kev", "distance_m", "pixel_size_um", "magnification"};
            for (int i = 0; i < keys.length; i++) {
                options.put(keys[i], Double.toString(geometry[i]));
            }
        }
        try {
            reconstruct(reference, sample, options, outputs.trim().split("[\\s,]+"));
            return null;
        } catch (Native.Failure f) {
            if (f.status == 11) {
                IJ.showStatus("ESPINNet: cancelled");
                return null;
            }
            return f.getMessage() + Errors.hint(f.status);
        } catch (IllegalArgumentException e) {
            return e.getMessage();
        } catch (LinkageError e) {
            return Errors.missingNative(e);
        } finally {
            IJ.showProgress(1.0);
        }
    }

    /** Runs the engine on two open stacks and shows the maps asked for. */
    void reconstruct(ImagePlus reference, ImagePlus sample, Map<String, String> options,
            String[] outputs) throws Native.Failure {
        for (ImagePlus imp : new ImagePlus[] {reference, sample}) {
            if (imp.getBitDepth() == 24) {
                throw new IllegalArgumentException("'" + imp.getTitle()
                        + "' is RGB: convert it to 8, 16 or 32-bit (Image › Type) first.");
            }
        }
        if (reference.getWidth() != sample.getWidth() || reference.getHeight() != sample.getHeight()
                || reference.getStackSize() != sample.getStackSize()) {
            throw new IllegalArgumentException(String.format(
                    "The stacks differ: '%s' is %d×%d×%d, '%s' is %d×%d×%d; they must be the same scan.",
                    reference.getTitle(), reference.getWidth(), reference.getHeight(), reference.getStackSize(),
                    sample.getTitle(), sample.getWidth(), sample.getHeight(), sample.getStackSize()));
        }
        Rectangle whole = new Rectangle(0, 0, sample.getWidth(), sample.getHeight());
        Roi roi = sample.getRoi();
        Rectangle r = roi != null && roi.isArea() ? roi.getBounds().intersection(whole) : whole;
        if (r.isEmpty()) {
            throw new IllegalArgumentException("The selection on '" + sample.getTitle()
                    + "' lies outside the image.");
        }
        boolean geometry = options.containsKey("energy_kev");
        List<String> wanted = new ArrayList<>();
        for (String name : outputs) {
            if (name.isEmpty()) {
                continue;
            }
            boolean status = Native.STATUS.equals(name);
            if (index(name) < 0 && !status) {
                throw new IllegalArgumentException("Unknown output '" + name + "': choose among "
                        + String.join(" ", Native.MAPS) + " " + Native.STATUS + ".");
            }
            if (status || index(name) < 5 || geometry) {
                wanted.add(name); // refraction and phase only with the geometry
            }
        }
        Native.Lib lib = Native.lib();
        if ("network".equals(options.get("engine")) && Native.ortLibrary() != null) {
            options.put("ort_library", Native.ortLibrary());
        }
        // The network's session is planned for this size's tiles: it starts in a third of
        // the time.
        options.put("image_px", r.height + "x" + r.width);
        IJ.resetEscape();
        IJ.showStatus("ESPINNet: " + options.get("engine") + " on " + r.width + "×" + r.height
                + "×" + sample.getStackSize());
        Memory ref = frames(reference, r);
        Memory smp = frames(sample, r);
        int n = sample.getStackSize();
        long pixels = (long) r.width * r.height;
        Map<String, Memory> maps = new LinkedHashMap<>();
        for (String name : wanted) {
            maps.put(name, new Memory(Native.STATUS.equals(name) ? pixels : pixels * 4));
        }
        Pointer engine = Engine.create(options);
        try {
            progress = (fraction, user) -> {
                IJ.showProgress(fraction);
                return IJ.escapePressed() ? 1 : 0;
            };
            Native.check(lib.esp_engine_reconstruct_with_progress(engine,
                    new Native.Stack(ref, n, r.height, r.width), new Native.Stack(smp, n, r.height, r.width),
                    new Native.Outputs(maps, pixels), progress, null));
        } finally {
            lib.esp_engine_free(engine);
            progress = null;
        }
        for (Map.Entry<String, Memory> e : maps.entrySet()) {
            if (Native.STATUS.equals(e.getKey())) {
                showStatus(e.getValue().getByteArray(0, (int) pixels), r, sample);
            } else {
                show(e.getKey(), e.getValue().getFloatArray(0, (int) pixels), r, sample);
            }
        }
        IJ.showStatus("ESPINNet: done (" + Engine.lastProvider + ")");
    }

    /** The stack's frames, cropped to r, as contiguous float32 (32-bit frames copied once). */
    static Memory frames(ImagePlus imp, Rectangle r) {
        ImageStack stack = imp.getStack();
        int n = stack.getSize();
        boolean whole = r.x == 0 && r.y == 0 && r.width == imp.getWidth() && r.height == imp.getHeight();
        long frame = (long) r.width * r.height;
        Memory m = new Memory(n * frame * 4);
        for (int k = 1; k <= n; k++) {
            ImageProcessor ip = stack.getProcessor(k);
            if (!whole) {
                ip = ip.duplicate();
                ip.setRoi(r);
                ip = ip.crop();
            }
            float[] px = (float[]) ip.convertToFloat().getPixels();
            m.write((k - 1) * frame * 4, px, 0, px.length);
        }
        return m;
    }

    static void show(String name, float[] pixels, Rectangle r, ImagePlus like) {
        String unit = Native.UNITS[index(name)];
        ImageStack stack = new ImageStack(r.width, r.height);
        stack.addSlice(unit.isEmpty() ? name : name + " (" + unit + ")",
                new FloatProcessor(r.width, r.height, pixels));
        ImagePlus out = new ImagePlus(name, stack);
        out.setCalibration(like.getCalibration().copy());
        out.resetDisplayRange();
        out.show();
    }

    /** The status map as an 8-bit image, its numbers shown over 0–4. */
    static void showStatus(byte[] pixels, Rectangle r, ImagePlus like) {
        ImageStack stack = new ImageStack(r.width, r.height);
        stack.addSlice(Native.STATUS_LABEL, new ByteProcessor(r.width, r.height, pixels));
        ImagePlus out = new ImagePlus(Native.STATUS, stack);
        out.setCalibration(like.getCalibration().copy());
        out.setDisplayRange(0, 4);
        out.show();
    }

    static int index(String map) {
        for (int i = 0; i < Native.MAPS.length; i++) {
            if (Native.MAPS[i].equals(map)) {
                return i;
            }
        }
        return -1;
    }

    static String integer(double v) {
        return Long.toString(Math.round(v));
    }

    static String guess(String[] titles, String prefix, int fallback) {
        for (String t : titles) {
            if (t.toLowerCase().startsWith(prefix)) {
                return t;
            }
        }
        return titles[fallback];
    }
}
