import java.awt.event.KeyEvent;

import ij.IJ;

/**
 * Test helpers (not shipped), called from macros with call("EspinnetChecks.method", arg):
 * a command that fails aborts the macro that ran it, as ImageJ commands do, so these run
 * it on the macro's behalf and report instead.
 */
public class EspinnetChecks {
    /** Runs ESPINNet Reconstruct; "ok" or "aborted". */
    public static String attempt(String options) {
        try {
            IJ.run("ESPINNet Reconstruct...", options);
            return "ok";
        } catch (RuntimeException e) {
            return "aborted";
        }
    }

    /** Runs ESPINNet Reconstruct while another thread presses Esc every 100 ms, as a user
     *  would; returns the seconds it took. */
    public static String cancel(String options) {
        final boolean[] done = {false};
        Thread esc = new Thread(() -> {
            while (!done[0]) {
                try {
                    Thread.sleep(100);
                } catch (InterruptedException e) {
                    return;
                }
                IJ.setKeyDown(KeyEvent.VK_ESCAPE);
            }
        });
        esc.start();
        long start = System.nanoTime();
        String result = attempt(options);
        done[0] = true;
        IJ.resetEscape();
        return String.format("%.2f %s", (System.nanoTime() - start) / 1e9, result);
    }
}
