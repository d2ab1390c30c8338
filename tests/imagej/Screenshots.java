import java.awt.Rectangle;
import java.awt.Robot;
import java.awt.Window;
import java.awt.event.KeyEvent;
import java.io.File;

import javax.imageio.ImageIO;

import ij.IJ;
import ij.gui.GenericDialog;

/**
 * Documentation helper (not shipped): call("Screenshots.dialog", "file.png") opens the
 * Reconstruct dialog, saves a picture of it and cancels it (Esc), as under Xvfb.
 */
public class Screenshots {
    public static String dialog(String path) throws Exception {
        Thread command = new Thread(() -> IJ.run("ESPINNet Reconstruct..."));
        command.start();
        Robot robot = new Robot();
        for (int i = 0; i < 50; i++) {
            Thread.sleep(200);
            for (Window w : Window.getWindows()) {
                if (w instanceof GenericDialog && w.isShowing()) {
                    Thread.sleep(500);
                    Rectangle r = w.getBounds();
                    ImageIO.write(robot.createScreenCapture(r), "png", new File(path));
                    w.toFront();
                    robot.keyPress(KeyEvent.VK_ESCAPE);
                    robot.keyRelease(KeyEvent.VK_ESCAPE);
                    command.join(5000);
                    if (w.isShowing()) {
                        w.dispose();
                    }
                    return "saved";
                }
            }
        }
        return "no dialog";
    }
}
