package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Host-to-guest bytes through {@link UnixHost}'s {@link StreamBridge}, where the device reads the
 * host socket straight into the guest's rx buffers. The host application is a JDK Unix socket, the
 * guest the fake frontend's {@link VsockDriver}.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class UnixHostStraightReadsTest {
  static final Duration TIMEOUT = Duration.ofSeconds(20);
  static final int PORT = 1234;

  @TempDir Path dir;
  private Path uds;
  private RecordingHost host;
  private VsockRig rig;
  private VsockDriver driver;
  private final ExecutorService hostApps = Executors.newCachedThreadPool();

  private void start(int queueSize, int bufferSize) throws Exception {
    uds = dir.resolve("vm.vsock");
    rig =
        new VsockRig(
            dir,
            queueSize,
            bufferSize,
            8,
            loop -> host = new RecordingHost(UnixHost.listen(uds, loop, Duration.ofSeconds(5))));
    driver = rig.driver;
  }

  @AfterEach
  void tearDown() {
    hostApps.shutdownNow();
    if (rig != null) rig.close();
  }

  /** {@link UnixHost}, remembering the last connection the guest asked for. */
  static final class RecordingHost implements HostSide, AutoCloseable {
    final UnixHost unix;
    volatile VsockConnection last;

    RecordingHost(UnixHost unix) {
      this.unix = unix;
    }

    @Override
    public void attach(VsockDevice device) {
      unix.attach(device);
    }

    @Override
    public HostEndpoint guestConnect(VsockConnection connection) {
      last = connection;
      return unix.guestConnect(connection);
    }

    @Override
    public void detach() {
      unix.detach();
    }

    @Override
    public void close() {
      unix.close();
    }
  }

  // ---- helpers ----

  private <T> T onLoop(Callable<T> task) throws Exception {
    return rig.device.dataLoop().submit(task).get(10, TimeUnit.SECONDS);
  }

  private void pumpUntil(BooleanSupplier condition, String what) throws IOException {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!condition.getAsBoolean()) {
      assertTrue(System.nanoTime() < deadline, "waited in vain for " + what);
      driver.pump(10);
    }
  }

  /** Pumps the driver until {@code condition}, which runs on the data loop, holds. */
  private void pumpUntilOnLoop(Callable<Boolean> condition, String what) throws Exception {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!onLoop(condition)) {
      assertTrue(System.nanoTime() < deadline, "waited in vain for " + what);
      driver.pump(10);
    }
  }

  /**
   * The guest connects to a host application listening on {@link #PORT}: its socket, with a send
   * buffer that takes a burst whole (as long as bounce takes nothing).
   */
  private SocketChannel connect(VsockDriver.Socket[] guest) throws Exception {
    try (ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
      listener.bind(UnixDomainSocketAddress.of(uds + "_" + PORT));
      Future<SocketChannel> accepted = hostApps.submit(listener::accept);
      guest[0] = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
      SocketChannel ch = accepted.get(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
      ch.setOption(StandardSocketOptions.SO_SNDBUF, 1 << 20);
      return ch;
    }
  }

  /** Writes {@code data} whole on the host application's socket, on a host application thread. */
  private void hostWritesWhole(SocketChannel ch, byte[] data) throws Exception {
    hostApps
        .submit(
            () -> {
              UnixHostTest.writeAll(ch, data);
              return null;
            })
        .get(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
  }

  /**
   * Has the device use up every rx buffer the guest posted, without bytes (one CREDIT_REQUEST
   * answered per buffer), and stops posting: nothing reaches the guest until it posts again.
   */
  private void useUpRxBuffers(VsockDriver.Socket s) throws IOException {
    driver.postRxBuffers(false);
    while (driver.rxBuffersPosted() > 0) {
      int before = driver.rxBuffersPosted();
      s.requestCredit();
      pumpUntil(() -> driver.rxBuffersPosted() < before, "the answer to CREDIT_REQUEST");
    }
  }

  /** Bytes in bounce's end of the host socket (FIONREAD), asked on the data loop. */
  private int waitingInHostSocket(VsockConnection c) throws Exception {
    return onLoop(() -> c.endpoint.bytesAtHost(c));
  }

  // ---- the tests ----

  /**
   * Netty's read is only the wake-up that tells the device bytes came after the socket ran empty:
   * it takes at most {@link UnixHost#WAKE_UP_READ} bytes, and the rest of a burst stays in the
   * socket for the device's readv(2) into the guest's buffers. Seen while the guest has no rx
   * buffer: what the wake-up read took waits in the connection, the rest in the socket. Several
   * bursts, each after the socket ran empty: Netty's default allocator would grow its reads after
   * the first.
   */
  @Test
  void aBurstAfterTheSocketRanEmptyIsReadStraightButForASmallWakeUpRead() throws Exception {
    start(64, VsockDriver.LINUX_BUFFER_SIZE);
    VsockDriver.Socket[] guest = new VsockDriver.Socket[1];
    try (SocketChannel ch = connect(guest)) {
      VsockDriver.Socket s = guest[0];
      VsockConnection c = host.last;
      for (int burst = 0; burst < 3; burst++) {
        useUpRxBuffers(s);
        // The device found the socket empty and asked Netty to read when more comes.
        pumpUntilOnLoop(() -> !c.bytesWaitAtHost, "the socket handed to Netty's read");
        byte[] data = UnixHostTest.random(300_000, 40 + burst);
        hostWritesWhole(ch, data);
        pumpUntilOnLoop(() -> c.queuedForGuest() > 0, "Netty's wake-up read");
        int wakeUp = onLoop(c::queuedForGuest);
        assertTrue(
            wakeUp <= UnixHost.WAKE_UP_READ,
            "burst " + burst + ": the wake-up read took " + wakeUp + " bytes");
        assertEquals(
            data.length - wakeUp,
            waitingInHostSocket(c),
            "burst " + burst + ": the rest waits in the socket for the device");
        driver.postRxBuffers(true);
        assertArrayEquals(data, s.readFully(data.length, TIMEOUT), "burst " + burst);
      }
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }
}
