package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.backend.DmaMetrics;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * vsock through the engine with restricted DMA (issue 7), policy required: Firecracker's layout
 * (only the pool shared, --pool) and a device-owned pool. The guest driver bounces every buffer
 * through the pool; a stream echoes intact both ways and the engine saw no address outside it.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class VsockRestrictedDmaTest {
  static final int ECHO_PORT = 1234;
  static final int BUFFER = 64 * 1024;
  static final long POOL_START = 0x8000_0000L;
  static final long POOL_SIZE = 16L << 20;
  static final Duration TIMEOUT = Duration.ofSeconds(20);

  @TempDir Path dir;

  @ParameterizedTest
  @EnumSource(
      value = MemoryMode.class,
      names = {"POOL", "DEVICE_POOL"})
  void aStreamEchoesIntactThroughThePool(MemoryMode mode) throws Exception {
    boolean window = mode == MemoryMode.POOL;
    RestrictedDma.Pool pool =
        window
            ? new RestrictedDma.Window(POOL_START, POOL_SIZE)
            : new RestrictedDma.DeviceOwned(POOL_SIZE);
    VsockRig.Memory memory =
        new VsockRig.Memory(
            mode,
            window ? POOL_START : 0,
            window ? POOL_SIZE : 0,
            new RestrictedDma(RestrictedDma.Policy.REQUIRED, pool));
    LoopbackHost host = new LoopbackHost().echo(ECHO_PORT);
    try (WarningLog log = new WarningLog(Level.INFO);
        VsockRig rig =
            new VsockRig(
                dir, 128, BUFFER, 64, loop -> host, memory, Siblings.alone(VsockRig.GUEST_CID))) {
      // The fake frontend asks for the pool after SET_OWNER, as QEMU does.
      assertFalse(log.any("before SET_OWNER"), log.lines().toString());
      assertTrue(
          VirtioFeatures.has(rig.session.features(), VirtioFeatures.RESTRICTED_DMA),
          "the guest accepted bit 27: 0x"
              + Long.toHexString(rig.session.features())
              + " of 0x"
              + Long.toHexString(rig.session.offeredFeatures()));
      VsockDriver.Socket s = rig.driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
      byte[] data = new byte[2 << 20];
      new Random(7).nextBytes(data);
      assertArrayEquals(data, VsockRig.echo(rig.driver, s, data, TIMEOUT));
      assertEquals(0, rig.driver.badPackets(), rig.driver.firstProblem());
      assertEquals(0, rig.device.guestErrors());
      DmaMetrics metrics = rig.server.session().dmaMetrics();
      assertEquals(List.of(0L, 0L, 0L), metrics.violations(), metrics.toString()); // rx, tx, event
      assertEquals(POOL_SIZE, metrics.poolSize());
      assertTrue(metrics.peakBytesInFlight() > 0, metrics.toString());
    }
  }
}
