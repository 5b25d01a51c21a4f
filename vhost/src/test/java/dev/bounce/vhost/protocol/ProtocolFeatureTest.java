package dev.bounce.vhost.protocol;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.Set;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

class ProtocolFeatureTest {
  @Test
  @DisplayName("bits 0-22 in spec order")
  void bits() {
    ProtocolFeature[] all = ProtocolFeature.values();
    for (int i = 0; i < all.length; i++) assertEquals(i, all[i].bit(), all[i].name());
    assertEquals(23, all.length);
    assertEquals(1L << 9, ProtocolFeature.CONFIG.mask());
    assertEquals(16, ProtocolFeature.STATUS.bit());
    assertEquals(19, ProtocolFeature.DEVICE_STATE.bit());
    assertEquals(22, ProtocolFeature.SHMEM.bit());
  }

  @Test
  @DisplayName("describe: the recorded masks read as the recordings print them")
  void describeRecordedMasks() {
    assertEquals("MQ|REPLY_ACK|CONFIG|STATUS", ProtocolFeature.describe(0x10209));
    assertEquals("MQ|REPLY_ACK|STATUS", ProtocolFeature.describe(0x10009));
    assertEquals("REPLY_ACK|BACKEND_REQ|CONFIG", ProtocolFeature.describe(0x228));
    assertEquals(
        "MQ|LOG_SHMFD|RARP|REPLY_ACK|MTU|BACKEND_REQ|CRYPTO_SESSION|BACKEND_SEND_FD|HOST_NOTIFIER"
            + "|STATUS",
        ProtocolFeature.describe(0x10cbf));
    assertEquals("none", ProtocolFeature.describe(0));
    assertEquals("MQ|bit40|bit63", ProtocolFeature.describe(1L | 1L << 40 | 1L << 63));
  }

  @Test
  @DisplayName("masks and sets convert both ways; unknown bits are kept apart")
  void masks() {
    long mask =
        ProtocolFeature.maskOf(
            ProtocolFeature.MQ,
            ProtocolFeature.REPLY_ACK,
            ProtocolFeature.CONFIG,
            ProtocolFeature.STATUS);
    assertEquals(0x10209, mask);
    Set<ProtocolFeature> set = ProtocolFeature.setOf(mask | 1L << 50);
    assertEquals(
        EnumSet.of(
            ProtocolFeature.MQ,
            ProtocolFeature.REPLY_ACK,
            ProtocolFeature.CONFIG,
            ProtocolFeature.STATUS),
        set);
    assertEquals(mask, ProtocolFeature.maskOf(set));
    assertEquals(1L << 50, ProtocolFeature.unknown(mask | 1L << 50));
    assertEquals((1L << 23) - 1, ProtocolFeature.knownMask());
    assertTrue(ProtocolFeature.REPLY_ACK.in(mask));
    assertFalse(ProtocolFeature.BACKEND_REQ.in(mask));
  }
}
