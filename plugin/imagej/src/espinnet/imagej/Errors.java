package espinnet.imagej;

import ij.IJ;
import ij.Macro;

/** Messages that say what to do, never a stack trace. */
final class Errors {
    private Errors() {}

    /** An error dialog; in a macro also a line in the Log window, which tests and batch runs read. */
    static void show(String message) {
        if (Macro.getOptions() != null || IJ.getInstance() == null) {
            IJ.log("ESPINNet error: " + message);
        }
        IJ.error("ESPINNet", message);
    }

    /** What a headless entry returns: "ok", the error, or an unexpected failure's text
     *  (a headless caller has no dialog to see it in). */
    static String headless(java.util.function.Supplier<String> run) {
        try {
            String error = run.get();
            return error == null ? "ok" : error;
        } catch (RuntimeException e) {
            return e.toString();
        }
    }

    static String hint(int status) {
        switch (status) {
            case 8:
                return "\nThe network engine needs ONNX Runtime, which this jar carries for Linux x86-64;"
                        + " elsewhere set ESPINNET_ORT_PATH to libonnxruntime, or use engine=tracking.";
            case 9:
                return "\nChoose provider=auto or cpu, or install a GPU build of ONNX Runtime.";
            default:
                return "";
        }
    }

    static String missingNative(LinkageError e) {
        if (e instanceof NoClassDefFoundError) {
            return "ESPINNet needs JNA: copy jna.jar into ImageJ's plugins/jars/ folder (Fiji has it already).";
        }
        return "ESPINNet's native library cannot be loaded on this platform: " + e.getMessage();
    }
}
