package dev.bounce.device.vsock;

import static dev.bounce.device.vsock.VsockDriver.creditUpdateDue;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** When the fake guest's reader announces its credit: Linux's virtio_transport rules. */
class CreditUpdateTest {
  private static final int KIB = 1024;
  private static final int BUFFER = 256 * KIB;

  @Test
  void aStreamReaderAnnouncesOnceLessThanAPacketIsFreeInWhatTheDeviceHeard() {
    assertFalse(creditUpdateDue(false, BUFFER, 64 * KIB, false), "a quarter read: 192 KiB free");
    assertFalse(creditUpdateDue(false, BUFFER, 192 * KIB, false), "exactly 64 KiB free");
    assertTrue(creditUpdateDue(false, BUFFER, 192 * KIB + 1, false), "under 64 KiB free (6.1)");
  }

  @Test
  void aStreamReaderThatReadEverythingAnnounces() {
    assertTrue(creditUpdateDue(false, BUFFER, 100, true), "6.8's low_rx_bytes");
  }

  @Test
  void aSmallBufferAnnouncesEveryRead() {
    // Under 64 KiB, Linux's free space is always under one packet: every read announces.
    assertTrue(creditUpdateDue(false, 16 * KIB, 1, false));
  }

  @Test
  void aSeqpacketReaderAnnouncesAfterEveryMessage() {
    // 150 KiB read with 10 KiB of the next message buffered: the device, which last heard of 0
    // read, sees 96 KiB free. Without an update now it would send those 96 KiB and stall, and
    // the reader, waiting for the rest of a 200 KiB message, would never read again.
    assertTrue(creditUpdateDue(true, BUFFER, 150 * KIB, false));
  }

  @Test
  void nothingNewIsNeverAnnounced() {
    assertFalse(creditUpdateDue(false, BUFFER, 0, true));
    assertFalse(creditUpdateDue(true, BUFFER, 0, true));
  }
}
