package espinnet.imagej;

import java.util.Map;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;

/** Builds an engine from options by name (esp_options_set's vocabulary). */
final class Engine {
    private Engine() {}

    static volatile String lastProvider = "";

    /** A new engine; the caller frees it with esp_engine_free. */
    static Pointer create(Map<String, String> options) throws Native.Failure {
        Native.Lib lib = Native.lib();
        Pointer opts = lib.esp_options_new();
        if (opts == null) {
            throw new Native.Failure(10, "out of memory");
        }
        try {
            for (Map.Entry<String, String> e : options.entrySet()) {
                Native.check(lib.esp_options_set(opts, e.getKey(), e.getValue()));
            }
            PointerByReference engine = new PointerByReference();
            Native.check(lib.esp_engine_new(opts, engine));
            lastProvider = lib.esp_engine_provider(engine.getValue());
            return engine.getValue();
        } finally {
            lib.esp_options_free(opts);
        }
    }
}
