package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.SocketException;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
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
 * host socket straight into the guest's rx buffers: what Netty's wake-up read takes, and a readv(2)
 * that faults because the frontend truncated the guest memory under the rx buffers. The host
 * application is a JDK Unix socket, the guest the fake frontend's {@link VsockDriver}.
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

  /**
   * Reads the host application's socket without waiting: 0 while it is open and bounce sent
   * nothing, -1 once bounce closed it.
   */
  private static int readWithoutWaiting(SocketChannel ch) throws IOException {
    ch.configureBlocking(false);
    try {
      return ch.read(ByteBuffer.allocate(1));
    } catch (SocketException e) {
      throw new AssertionError("bounce closed the host application's socket: " + e, e);
    } finally {
      ch.configureBlocking(true);
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

  /**
   * The frontend truncates the guest memory under the rx buffers while host bytes wait in the
   * socket for them: the device's readv(2) fails with EFAULT. That is the frontend's doing, as a
   * fault in bounce's own copy is: the rx ring stops as a memory fault (error eventfd, the engine's
   * guest-error line), the buffer is not consumed, and the connection and the host application's
   * socket stay, with every byte. Once the memory is back and the ring set up again, they arrive.
   */
  @Test
  void efaultFromTheStraightReadStopsTheRxRingAndKeepsTheHostSocketAndItsBytes() throws Exception {
    start(16, VsockDriver.LINUX_BUFFER_SIZE);
    VsockDriver.Socket[] guest = new VsockDriver.Socket[1];
    try (SocketChannel ch = connect(guest);
        WarningLog log = new WarningLog()) {
      VsockDriver.Socket s = guest[0];
      VsockConnection c = host.last;
      useUpRxBuffers(s);
      byte[] data = UnixHostTest.random(200_000, 50);
      hostWritesWhole(ch, data);
      // Netty's wake-up read waits in the connection: give it buffers until it went, one at a
      // time, so that none is left for the device to read the socket into.
      pumpUntilOnLoop(() -> c.queuedForGuest() > 0, "Netty's wake-up read");
      while (onLoop(c::queuedForGuest) > 0) {
        driver.postRxBuffer(VsockDriver.RX_BUFFER_SIZE);
        pumpUntil(() -> driver.rxBuffersPosted() == 0, "the wake-up read's bytes");
      }
      int received = s.available();
      int waiting = data.length - received;
      assertEquals(waiting, waitingInHostSocket(c), "the rest waits in the socket");

      // Away goes the memory above the rings: the driver's buffers, tx and rx.
      long cut = rig.session.ringAreaEnd();
      rig.truncateRamAt(cut);
      driver.postRxBuffer(VsockDriver.RX_BUFFER_SIZE); // descriptor and kick only: no pump now
      rig.awaitRingError(VsockDriver.RX_QUEUE, TIMEOUT);
      onLoop(() -> null); // whatever the loop does after the fault has run
      assertEquals(0, readWithoutWaiting(ch), "the host application's socket was closed");
      assertTrue(onLoop(c::isOpen), "the connection ended");
      assertEquals(waiting, waitingInHostSocket(c), "bytes left the socket");
      assertTrue(
          log.any("ring 0 stopped", "access faulted", "readv"),
          "no memory-fault guest error for the rx ring's readv: " + log.lines());

      // The frontend gives the memory back and restarts the ring where bounce stopped: at the
      // buffer posted last, which it did not consume.
      rig.truncateRamAt(VsockRig.RAM_START + VsockRig.RAM_SIZE);
      int base = rig.stopRing(VsockDriver.RX_QUEUE);
      assertEquals(
          rig.session.queue(VsockDriver.RX_QUEUE).ring().lastUsedIndex(),
          base,
          "the rx buffer the read faulted on was consumed");
      rig.startRing(VsockDriver.RX_QUEUE, base);
      driver.postRxBuffers(true);
      assertArrayEquals(data, s.readFully(data.length, TIMEOUT));
      assertFalse(rig.ringErrorSignalled(VsockDriver.RX_QUEUE));
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }
}
