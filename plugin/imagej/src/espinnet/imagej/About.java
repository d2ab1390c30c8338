package espinnet.imagej;

import ij.IJ;
import ij.plugin.PlugIn;

/** Plugins › ESPINNet › About ESPINNet: version, engines, providers, native library. */
public class About implements PlugIn {
    @Override
    public void run(String arg) {
        try {
            String providers;
            try {
                providers = Native.providers();
            } catch (Native.Failure f) {
                providers = "none (" + f.getMessage() + ")";
            }
            String text = "ESPINNet " + Native.lib().esp_version() + "\n"
                    + "X-ray multi-contrast imaging from scanned modulated patterns.\n"
                    + "Engines: network (ESPINNet, Qiao et al., J. Synchrotron Rad. 33, 467-480, 2026)"
                    + " and tracking (correlation, UMPA class).\n"
                    + "Network providers here: " + providers + "\n"
                    + "Native library: " + Native.libraryPath() + "\n"
                    + "ONNX Runtime: " + (Native.ortLibrary() == null ? "from the environment" : Native.ortLibrary());
            IJ.showMessage("About ESPINNet", text);
        } catch (LinkageError e) {
            Errors.show(Errors.missingNative(e));
        }
    }
}
