package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.device.vsock.VsockDriver;
import dev.bounce.device.vsock.VsockHeader;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.EchoDriver;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestBuffers;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * {@code --ring-poll} reaches the engine of {@code scripts/bounce echo-backend} and {@code
 * scripts/bounce vsock} in another process: 50 ms after a chain, a ring polled for a second still
 * has the driver's kicks suppressed (EVENT_IDX: avail_event left behind), and one polled for the
 * default 50-200 us has them re-armed.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class RingPollCliTest {
  @TempDir Path dir;

  @ParameterizedTest(name = "ring-poll {0}: the next chain needs a kick: {1}")
  @CsvSource({"1000000, false", "default, true"})
  void theFlagSetsHowLongARingIsPolled(String ringPoll, boolean kickNeeded) throws Exception {
    Path socket = dir.resolve("echo.sock");
    List<String> args = new ArrayList<>(List.of("echo-backend", "--socket", socket.toString()));
    if (!ringPoll.equals("default")) args.addAll(List.of("--ring-poll", ringPoll));
    BounceDaemon backend = BounceDaemon.start(dir.resolve("echo.log"), args.toArray(String[]::new));
    try {
      backend.awaitLine("bounce echo-backend: serving");
      try (GuestRam ram = GuestRam.create(MemoryMode.SHARED, 0x4000_0000L, 16L << 20, 0, 0);
          FrontendSession session =
              FrontendSession.connect(
                  socket,
                  ram,
                  new FrontendSession.Options(
                      Handshake.QEMU, VirtioFeatures.bit(VirtioFeatures.EVENT_IDX), 1, 256, 0))) {
        Stats one = new EchoDriver(session).run(1, 64, Duration.ofSeconds(30));
        assertEquals(1, one.operations(), "the first chain, kicked, came back");
        Thread.sleep(50); // far past the default 200 us, well inside 1 s
        GuestBuffers buffers = GuestBuffers.of(session);
        long out = buffers.allocate(64);
        long in = buffers.allocate(64);
        DriverQueue ring = session.queue(0).ring();
        assertTrue(ring.add(out, 64, in, 64, false) != DriverQueue.NO_SPACE);
        assertEquals(kickNeeded, ring.prepareKick(), "50 ms after the ring's last work");
      }
    } finally {
      assertEquals(143, backend.stop(Duration.ofSeconds(10)), "exit on SIGTERM");
    }
  }

  @ParameterizedTest(name = "vsock, ring-poll {0}: the next tx chain needs a kick: {1}")
  @CsvSource({"1000000, false", "default, true"})
  void theVsockCommandTakesItToo(String ringPoll, boolean kickNeeded) throws Exception {
    Path socket = dir.resolve("vsock.sock");
    List<String> args =
        new ArrayList<>(
            List.of(
                "vsock",
                "--socket",
                socket.toString(),
                "--uds-path",
                dir.resolve("vm.vsock").toString()));
    if (!ringPoll.equals("default")) args.addAll(List.of("--ring-poll", ringPoll));
    BounceDaemon backend =
        BounceDaemon.start(dir.resolve("vsock.log"), args.toArray(String[]::new));
    try {
      backend.awaitLine("bounce vsock: guest CID 3: vhost-user socket");
      try (GuestRam ram = GuestRam.create(MemoryMode.SHARED, 0x4000_0000L, 16L << 20, 0, 0);
          FrontendSession session =
              FrontendSession.connect(socket, ram, VsockDriver.options(Handshake.QEMU, 256))) {
        VsockDriver driver = new VsockDriver(session, 3, VsockDriver.LINUX_BUFFER_SIZE);
        // A connect to a host port nothing listens on: the tx ring's last work; the RST says done.
        VsockDriver.Socket s = driver.startConnect(1234, VsockHeader.TYPE_STREAM);
        s.awaitReset(Duration.ofSeconds(30));
        Thread.sleep(50); // far past the default 200 us, well inside 1 s
        GuestBuffers buffers = GuestBuffers.of(session);
        long header = buffers.allocate(VsockHeader.SIZE);
        DriverQueue tx = session.queue(VsockDriver.TX_QUEUE).ring();
        assertTrue(tx.add(header, VsockHeader.SIZE, false) != DriverQueue.NO_SPACE);
        assertEquals(kickNeeded, tx.prepareKick(), "50 ms after the tx ring's last work");
      }
    } finally {
      assertEquals(143, backend.stop(Duration.ofSeconds(10)), "exit on SIGTERM");
    }
  }
}
