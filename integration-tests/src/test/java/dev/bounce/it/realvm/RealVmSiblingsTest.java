package dev.bounce.it.realvm;

import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Two Linux 6.1 guests under QEMU 7.2, each with a vhost-user-vsock device served by the one {@code
 * bounce vsock} process (a {@code --vm} each, both in the default group): guest 4 connects to a
 * listener of guest 3 by its CID, as vhost-device-vsock's sibling VM communication has it, and the
 * bytes it sends come back intact through Linux's own vsock on both sides (bounce splitting the
 * sender's 64 KiB packets into the receiver's rx buffers).
 */
@Tag("realvm")
@Timeout(value = 40, unit = TimeUnit.MINUTES) // the first one pays for the images
class RealVmSiblingsTest {
  private static final int PORT = 5000;
  private static final long BYTES = 4L << 20;

  /** Covers both boots (5-7 s each under TCG on an idle machine, at once here) on a busy one. */
  private static final Duration BOOT_AND_STEP = Duration.ofSeconds(240);

  @Test
  void twoGuestsOfOneBounceStreamToEachOther() throws Exception {
    try (RealVm three = new RealVm(Guest.X86_Q35, 3);
        RealVm four = new RealVm(Guest.X86_Q35, 4)) {
      three.startBounceWith(four);
      three.boot("listen:" + PORT + ":" + BYTES);
      try {
        three.awaitListening(PORT, BOOT_AND_STEP);
        four.boot("connect:" + PORT + ":" + BYTES + ":3");
        Transfer pattern = Transfer.ofPattern(BYTES);
        Map<String, String> connect = four.awaitResult("connect", BOOT_AND_STEP);
        Map<String, String> listen = three.awaitResult("listen", BOOT_AND_STEP);
        four.assertSame(pattern, Transfer.of(connect, "sent"), "guest 4 to guest 3: what 4 sent");
        four.assertSame(pattern, Transfer.of(listen, "received"), "guest 4 to guest 3: what 3 got");
        four.assertSame(pattern, Transfer.of(connect, "received"), "guest 3's echo, at guest 4");
        three.awaitPoweroff(BOOT_AND_STEP);
        four.awaitPoweroff(BOOT_AND_STEP);
      } catch (AssertionError e) {
        // Each guest's failure carries its own console: add the other's (guest 3's).
        throw three.failure(e.getMessage());
      }
    }
  }
}
