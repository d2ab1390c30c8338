package espinnet.imagej;

import java.io.File;
import java.util.HashMap;
import java.util.Map;

import com.sun.jna.Callback;
import com.sun.jna.Library;
import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import com.sun.jna.Structure;
import com.sun.jna.ptr.PointerByReference;

/**
 * The C ABI of libespinnet (include/espinnet.h, ABI 0.3) through JNA, and the native
 * libraries shipped in this jar: libespinnet.so and ONNX Runtime's libonnxruntime.so under
 * JNA's resource paths (linux-x86-64/, win32-x86-64/, darwin-...), found with the plugin's
 * class loader, so that the jar is the whole installation.
 */
public final class Native {
    private Native() {}

    /** size_t is 64-bit on the platforms this jar ships natives for. */
    public interface Lib extends Library {
        String esp_version();
        String esp_last_error();
        String esp_status_str(int status);
        Pointer esp_options_new();
        void esp_options_free(Pointer opts);
        int esp_options_set(Pointer opts, String key, String value);
        int esp_engine_new(Pointer opts, PointerByReference engine);
        String esp_engine_provider(Pointer engine);
        void esp_engine_free(Pointer engine);
        int esp_engine_reconstruct_with_progress(Pointer engine, Stack reference, Stack sample,
                Outputs out, Progress progress, Pointer userData);
        int esp_simulate(String preset, long height, long width, long n, long seed,
                Pointer reference, Pointer sample, long stackLen, Outputs truth);
        int esp_available_providers(String ortLibrary, PointerByReference providers);
    }

    /** esp_progress_fn: fraction done; nonzero cancels. */
    public interface Progress extends Callback {
        int invoke(double fractionDone, Pointer userData);
    }

    /** esp_stack: n frames of height × width float32, rows rowStride floats apart. */
    @Structure.FieldOrder({"data", "len", "n", "height", "width", "rowStride"})
    public static class Stack extends Structure {
        public Pointer data;
        public long len, n, height, width, rowStride;

        public Stack(Memory data, int n, int height, int width) {
            this.data = data;
            this.len = (long) n * height * width;
            this.n = n;
            this.height = height;
            this.width = width;
        }
    }

    /**
     * esp_outputs: one float32 height × width buffer per map and a byte per pixel for the
     * status, NULL to skip any.
     */
    @Structure.FieldOrder({"dx", "dy", "transmission", "darkfield", "quality", "refraction_x",
            "refraction_y", "phase", "len", "status"})
    public static class Outputs extends Structure {
        public Pointer dx, dy, transmission, darkfield, quality, refraction_x, refraction_y, phase;
        public long len;
        public Pointer status;

        /** Buffers for the named maps (MAPS and STATUS); the others are skipped. */
        public Outputs(Map<String, Memory> maps, long len) {
            this.len = len;
            for (Map.Entry<String, Memory> e : maps.entrySet()) {
                try {
                    getClass().getField(e.getKey()).set(this, e.getValue());
                } catch (ReflectiveOperationException x) {
                    throw new IllegalArgumentException("unknown map " + e.getKey());
                }
            }
        }
    }

    /** The maps of esp_outputs, in order, and their units for slice labels. */
    public static final String[] MAPS = {"dx", "dy", "transmission", "darkfield", "quality",
            "refraction_x", "refraction_y", "phase"};
    public static final String[] UNITS = {"px", "px", "", "", "relative RMS residual", "rad",
            "rad", "rad"};
    /** The per-pixel status (8-bit) and what its numbers (esp_pixel) mean. */
    public static final String STATUS = "status";
    public static final String STATUS_LABEL =
            "status (0 measured, 1 search edge, 2 ill-conditioned, 3 not measured, 4 resolved)";

    /** A failed call: the C ABI's status and message. */
    public static class Failure extends Exception {
        public final int status;

        Failure(int status, String message) {
            super(message);
            this.status = status;
        }
    }

    private static Lib lib;
    private static String libraryPath;
    private static String ortLibrary;

    /** The loaded library (loaded once). */
    public static synchronized Lib lib() {
        if (lib == null) {
            ClassLoader loader = Native.class.getClassLoader();
            Map<String, Object> options = new HashMap<>();
            options.put(Library.OPTION_CLASSLOADER, loader);
            options.put(Library.OPTION_STRING_ENCODING, "UTF-8");
            lib = com.sun.jna.Native.load("espinnet", Lib.class, options);
            com.sun.jna.NativeLibrary handle = com.sun.jna.NativeLibrary.getInstance("espinnet", options);
            libraryPath = handle.getFile() == null ? "espinnet" : handle.getFile().getPath();
            // ONNX Runtime from the jar, unless the environment names one.
            if (System.getenv("ESPINNET_ORT_PATH") == null && System.getenv("ORT_DYLIB_PATH") == null) {
                try {
                    File ort = com.sun.jna.Native.extractFromResourcePath("onnxruntime", loader);
                    ortLibrary = ort.getAbsolutePath();
                } catch (java.io.IOException e) {
                    ortLibrary = null; // the library's own search then says what is missing
                }
            }
        }
        return lib;
    }

    /** Where libespinnet was loaded from. */
    public static String libraryPath() {
        lib();
        return libraryPath;
    }

    /** The ONNX Runtime library the network engine loads, or null for the library's search. */
    public static String ortLibrary() {
        lib();
        return ortLibrary;
    }

    /** Throws the failure of a non-OK status; call on the thread that made the call. */
    public static void check(int status) throws Failure {
        if (status != 0) {
            String message = lib().esp_last_error();
            throw new Failure(status, message == null || message.isEmpty()
                    ? lib().esp_status_str(status) : message);
        }
    }

    /** Execution providers the network can use here, best first. */
    public static String providers() throws Failure {
        PointerByReference out = new PointerByReference();
        check(lib().esp_available_providers(ortLibrary(), out));
        return out.getValue().getString(0, "UTF-8");
    }
}
