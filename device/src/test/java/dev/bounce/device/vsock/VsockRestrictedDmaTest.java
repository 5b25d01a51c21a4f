package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.backend.DmaMetrics;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.io.ByteArrayOutputStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
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
  static final long GUEST_CID = 3;
  static final int ECHO_PORT = 1234;
  static final int BUFFER = 64 * 1024;
  static final long RAM_START = 0x4000_0000L;
  static final long RAM_SIZE = 64L << 20;
  static final long POOL_START = 0x8000_0000L;
  static final long POOL_SIZE = 16L << 20;
  static final Duration TIMEOUT = Duration.ofSeconds(20);

  @TempDir Path dir;

  @ParameterizedTest
  @EnumSource(
      value = MemoryMode.class,
      names = {"POOL", "DEVICE_POOL"})
  void aStreamEchoesIntactThroughThePool(MemoryMode mode) throws Exception {
    RestrictedDma.Pool pool =
        mode == MemoryMode.POOL
            ? new RestrictedDma.Window(POOL_START, POOL_SIZE)
            : new RestrictedDma.DeviceOwned(POOL_SIZE);
    RestrictedDma dma = new RestrictedDma(RestrictedDma.Policy.REQUIRED, pool);
    Path socket = dir.resolve("vsock.sock");
    LoopbackHost host = new LoopbackHost().echo(ECHO_PORT);
    VsockDevice device = new VsockDevice(GUEST_CID, BUFFER, 64, 1024, host);
    FrontendSession.Options options =
        VsockDriver.options(Handshake.QEMU, 128)
            .withDriverFeatures(VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA));
    try (EventLoops loops = new EventLoops(2, "vsock-dma-test");
        BackendServer server =
            BackendServer.listen(
                socket,
                new BackendServer.Config("vsock", device, loops.next(), loops.next(), dma));
        GuestRam ram =
            GuestRam.create(
                mode,
                RAM_START,
                RAM_SIZE,
                mode == MemoryMode.POOL ? POOL_START : 0,
                mode == MemoryMode.POOL ? POOL_SIZE : 0);
        FrontendSession session = FrontendSession.connect(socket, ram, options)) {
      VsockDriver driver = new VsockDriver(session, GUEST_CID, BUFFER);
      driver.pump(0);
      VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
      byte[] data = new byte[1 << 20];
      new Random(7).nextBytes(data);
      ByteArrayOutputStream back = new ByteArrayOutputStream();
      byte[] chunk = new byte[8192];
      int sent = 0;
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (back.size() < data.length) {
        int n =
            sent < data.length
                ? s.trySend(data, sent, Math.min(data.length - sent, 32 << 10), false)
                : 0;
        sent += n;
        int got = s.read(chunk, 0, chunk.length);
        back.write(chunk, 0, got);
        if (n == 0 && got == 0) {
          assertTrue(
              System.nanoTime() < deadline, "stalled: sent " + sent + ", back " + back.size());
          driver.pump(10);
        }
      }
      assertArrayEquals(data, back.toByteArray());
      assertEquals(0, driver.badPackets(), driver.firstProblem());
      assertEquals(0, device.guestErrors());
      DmaMetrics metrics = server.session().dmaMetrics();
      assertEquals(List.of(0L, 0L, 0L), metrics.violations(), metrics.toString()); // rx, tx, event
      assertEquals(POOL_SIZE, metrics.poolSize());
      assertTrue(metrics.peakBytesInFlight() > 0, metrics.toString());
    }
  }
}
