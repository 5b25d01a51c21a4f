package dev.bounce.device.vsock;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.socket.SeqpacketSocket;
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.socket.UnixSocket;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.ref.WeakReference;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The hybrid-vsock host side ({@link UnixHost}) with real Unix sockets on the host (the JDK's, as a
 * host application would use them) and the fake frontend's guest driver on the other end.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class UnixHostTest {
  static final int BUFFER = 64 * 1024;
  static final Duration TIMEOUT = Duration.ofSeconds(20);

  /** The host side's patience with silent peers, short so that its tests are quick. */
  static final Duration PATIENCE = Duration.ofSeconds(2);

  @TempDir Path dir;

  private Path uds;
  private VsockRig rig;
  private VsockDriver driver;
  private ExecutorService hostApps;

  @BeforeEach
  void start() throws Exception {
    uds = dir.resolve("vm.vsock");
    startRig(PATIENCE);
    hostApps = Executors.newCachedThreadPool();
  }

  private void startRig(Duration patience) throws Exception {
    rig = new VsockRig(dir, 256, BUFFER, 64, loop -> UnixHost.listen(uds, loop, patience));
    driver = rig.driver;
  }

  @AfterEach
  void tearDown() {
    hostApps.shutdownNow();
    rig.close();
  }

  static byte[] random(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  private ServerSocketChannel hostListener(int port) throws IOException {
    ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
    server.bind(UnixDomainSocketAddress.of(uds + "_" + port));
    return server;
  }

  private SocketChannel connectLine(String line) throws IOException {
    SocketChannel ch = SocketChannel.open(UnixDomainSocketAddress.of(uds));
    writeAll(ch, line.getBytes(StandardCharsets.US_ASCII));
    return ch;
  }

  /** A host application that accepts one connection and sends its first {@code n} bytes back. */
  private Future<byte[]> echoOnce(ServerSocketChannel listener, int n) {
    return hostApp(
        () -> {
          try (SocketChannel ch = listener.accept()) {
            byte[] got = readExactly(ch, n);
            writeAll(ch, got);
            return got;
          }
        });
  }

  /** Runs a host application on its own thread while the test thread drives the guest. */
  private <T> Future<T> hostApp(Callable<T> app) {
    return hostApps.submit(app);
  }

  private <T> T await(Future<T> f) throws Exception {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!f.isDone()) {
      assertTrue(System.nanoTime() < deadline, "the host application did not finish");
      driver.pump(10);
    }
    return f.get();
  }

  static void writeAll(SocketChannel ch, byte[] bytes) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(bytes);
    while (b.hasRemaining()) ch.write(b);
  }

  static byte[] readExactly(SocketChannel ch, int n) throws IOException {
    ByteBuffer b = ByteBuffer.allocate(n);
    while (b.hasRemaining()) {
      if (ch.read(b) < 0) throw new IOException("EOF after " + b.position() + " of " + n);
    }
    return b.array();
  }

  /** Reads to end of stream. */
  static byte[] readToEof(SocketChannel ch) throws IOException {
    ByteArrayOutputStream all = new ByteArrayOutputStream();
    ByteBuffer b = ByteBuffer.allocate(64 * 1024);
    while (ch.read(b) >= 0) {
      all.write(b.array(), 0, b.position());
      b.clear();
    }
    return all.toByteArray();
  }

  /** Reads to end of stream 16 KiB at a time, pausing 0.2 ms after each read: a slow host. */
  static byte[] readSlowlyToEof(SocketChannel ch) throws IOException {
    ByteArrayOutputStream all = new ByteArrayOutputStream();
    ByteBuffer b = ByteBuffer.allocate(16 * 1024);
    while (ch.read(b.clear()) >= 0) {
      all.write(b.array(), 0, b.position());
      java.util.concurrent.locks.LockSupport.parkNanos(200_000);
    }
    return all.toByteArray();
  }

  static String readLine(SocketChannel ch) throws IOException {
    StringBuilder line = new StringBuilder();
    ByteBuffer one = ByteBuffer.allocate(1);
    while (true) {
      one.clear();
      if (ch.read(one) < 0) throw new IOException("EOF after '" + line + "'");
      char c = (char) one.get(0);
      if (c == '\n') return line.toString();
      line.append(c);
    }
  }

  @Test
  void aGuestConnectsToAHostListenerAndBytesFlowBothWays() throws Exception {
    byte[] toHost = random(4 << 20, 1);
    byte[] toGuest = random(3 << 20, 2);
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<byte[]> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  byte[] got = readExactly(ch, toHost.length);
                  writeAll(ch, toGuest);
                  ch.shutdownOutput();
                  assertEquals(-1, ch.read(ByteBuffer.allocate(1)), "the guest's EOF");
                  return got;
                }
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      s.send(toHost, TIMEOUT);
      assertArrayEquals(toGuest, s.readFully(toGuest.length, TIMEOUT));
      s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
      s.shutdown(VsockHeader.SHUTDOWN_SEND);
      assertArrayEquals(toHost, await(app));
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }

  @Test
  void hostBytesInBurstsAndPausesArriveInOrderAndTheHostsHalfCloseAfterTheLastByte()
      throws Exception {
    byte[] toGuest = random(3 << 20, 30);
    // Sizes around an rx buffer's payload (3732) and the 64-buffer batch of one read, and pauses
    // that let the socket run empty (so the device reads straight from a socket that holds bytes,
    // and Netty's read wakes it once the socket was empty).
    int[] sizes = {1, 7, 100, 3731, 3732, 3733, 8192, 65_536, 238_848, 300_000};
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<Void> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  Random r = new Random(31);
                  for (int at = 0; at < toGuest.length; ) {
                    int n = Math.min(toGuest.length - at, sizes[r.nextInt(sizes.length)]);
                    ByteBuffer b = ByteBuffer.wrap(toGuest, at, n);
                    while (b.hasRemaining()) ch.write(b);
                    at += n;
                    if (r.nextInt(4) == 0) LockSupport.parkNanos(r.nextInt(3_000_000));
                  }
                  ch.shutdownOutput();
                  assertEquals(-1, ch.read(ByteBuffer.allocate(1)), "the guest's EOF");
                  return null;
                }
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      assertArrayEquals(toGuest, s.readFully(toGuest.length, TIMEOUT));
      s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
      assertEquals(toGuest.length, s.receivedAtPeerShutdown(), "bytes before the SHUTDOWN");
      assertEquals(0, s.available(), "nothing after it");
      s.shutdown(VsockHeader.SHUTDOWN_SEND);
      await(app);
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }

  @Test
  void aHostApplicationConnectsToAGuestListener() throws Exception {
    driver.listen(5000);
    byte[] early = "sent-with-the-CONNECT-line".getBytes(StandardCharsets.US_ASCII);
    byte[] toGuest = random(2 << 20, 3);
    byte[] toHost = random(1 << 20, 4);
    Future<byte[]> app =
        hostApp(
            () -> {
              byte[] line =
                  ("CONNECT 5000\n" + new String(early, StandardCharsets.US_ASCII))
                      .getBytes(StandardCharsets.US_ASCII);
              try (SocketChannel ch = connectLine(new String(line, StandardCharsets.US_ASCII))) {
                String ok = readLine(ch);
                assertTrue(ok.matches("OK \\d+"), ok);
                assertTrue(Long.parseLong(ok.substring(3)) >= UnixHost.FIRST_HOST_PORT, ok);
                writeAll(ch, toGuest);
                return readExactly(ch, toHost.length);
              }
            });
    VsockDriver.Socket s = driver.accept(5000, TIMEOUT);
    assertArrayEquals(early, s.readFully(early.length, TIMEOUT));
    assertArrayEquals(toGuest, s.readFully(toGuest.length, TIMEOUT));
    s.send(toHost, TIMEOUT);
    assertArrayEquals(toHost, await(app));
    // The host application closed: the guest hears it (SHUTDOWN, then RST).
    s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  @Test
  void anEndedHostInitiatedConnectionIsNotKeptForThePatience() throws Exception {
    // The patience is longer than the test: only a cancelled guest-answer timer lets go of it.
    rig.close();
    startRig(Duration.ofHours(1));
    driver.listen(5000);
    WeakReference<VsockConnection> ended;
    try (SocketChannel ch = connectLine("CONNECT 5000\n")) {
      VsockDriver.Socket s = driver.accept(5000, TIMEOUT);
      int hostPort = s.peerPort();
      assertEquals("OK " + hostPort, readLine(ch));
      UnixHost host = (UnixHost) rig.host;
      ended =
          new WeakReference<>(
              host.loop().submit(() -> rig.device.connection(hostPort, 5000)).get());
      assertNotNull(ended.get(), "the connection to guest port 5000 from host port " + hostPort);
      s.reset();
    }
    awaitNoConnections();
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (ended.get() != null) {
      assertTrue(System.nanoTime() < deadline, "the ended connection is still held");
      System.gc();
      driver.pump(10);
    }
  }

  @Test
  void aHostPortNobodyListensOnIsRefused() throws Exception {
    IOException e =
        assertThrows(
            IOException.class, () -> driver.connect(4321, VsockHeader.TYPE_STREAM, TIMEOUT));
    assertTrue(e.getMessage().contains("refused"), e.getMessage());
  }

  /**
   * The device's first and only answer to a REQUEST for a host port nobody listens on is RST: a
   * RESPONSE before it would have a Linux guest's connect() succeed and its next call fail with
   * ECONNRESET, not connect() with ECONNREFUSED. While another connection is open, as a guest's
   * mostly is (the host side's connect then completed only after an rx pass had sent RESPONSE).
   */
  @ParameterizedTest(name = "type {0}")
  @ValueSource(ints = {VsockHeader.TYPE_STREAM, VsockHeader.TYPE_SEQPACKET})
  void aHostPortNobodyListensOnGetsNoResponseBeforeItsRst(int type) throws Exception {
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<SocketChannel> accepted = hostApp(listener::accept);
      VsockDriver.Socket other = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      try (SocketChannel ch = await(accepted)) {
        for (int attempt = 0; attempt < 10; attempt++) {
          long responses = driver.responses();
          // The device takes both in one pass, likely: the other connection's answer asks for an
          // rx pass before the REQUEST's host connect was tried.
          other.requestCredit();
          VsockDriver.Socket s = driver.startConnect(4321, type);
          long deadline = System.nanoTime() + TIMEOUT.toNanos();
          while (!s.wasReset()) {
            assertTrue(System.nanoTime() < deadline, "no RST (attempt " + attempt + ")");
            driver.pump(10);
          }
          assertEquals(responses, driver.responses(), "RESPONSE before RST, attempt " + attempt);
        }
      }
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  @Test
  void badConnectRequestsAreClosedWithoutAReply() throws Exception {
    for (String line :
        new String[] {
          "HELLO 5000\n", "CONNECT\n", "CONNECT five\n", "CONNECT 99999999999\n", "x".repeat(100)
        }) {
      Future<byte[]> app =
          hostApp(
              () -> {
                try (SocketChannel ch = connectLine(line)) {
                  return readToEof(ch);
                }
              });
      assertEquals(0, await(app).length, "a reply to '" + line + "'");
    }
    // A well-formed request for a guest port nobody listens on: the guest's RST closes it.
    Future<byte[]> app =
        hostApp(
            () -> {
              try (SocketChannel ch = connectLine("CONNECT 6000\nCONNECT 6001\n")) {
                return readToEof(ch);
              }
            });
    assertEquals(0, await(app).length);
    assertEquals(0, rig.device.connectionCount(), "a connection outlived its refusal");
  }

  @Test
  void hostApplicationsThatNeverSendConnectAreBounded() throws Exception {
    // A patience longer than the test may run: whatever closes a connection here does so at once,
    // not by the CONNECT timeout, however long a busy machine takes to get there.
    rig.close();
    startRig(Duration.ofHours(1));
    List<SocketChannel> silent = new ArrayList<>();
    try {
      for (int i = 0; i < UnixHost.MAX_AWAITING_CONNECT; i++) {
        silent.add(SocketChannel.open(UnixDomainSocketAddress.of(uds)));
      }
      // One more is closed at once rather than holding an fd and a timer.
      Future<byte[]> extra =
          hostApp(
              () -> {
                try (SocketChannel ch = SocketChannel.open(UnixDomainSocketAddress.of(uds))) {
                  return readToEof(ch);
                }
              });
      assertEquals(0, await(extra).length);
    } finally {
      for (SocketChannel ch : silent) ch.close();
    }
    // Once they are gone, a host application is served again.
    driver.listen(5000);
    Future<String> ok =
        hostApp(
            () -> {
              long deadline = System.nanoTime() + TIMEOUT.toNanos();
              while (true) {
                try (SocketChannel ch = connectLine("CONNECT 5000\n")) {
                  return readLine(ch);
                } catch (IOException closedBeforeOk) {
                  assertTrue(System.nanoTime() < deadline, "never admitted again");
                  Thread.sleep(20);
                }
              }
            });
    assertTrue(await(ok).startsWith("OK "));
  }

  @Test
  void aHostApplicationThatSendsNothingIsClosedAfterThePatience() throws Exception {
    Future<Long> app =
        hostApp(
            () -> {
              long started = System.nanoTime();
              try (SocketChannel ch = SocketChannel.open(UnixDomainSocketAddress.of(uds))) {
                assertEquals(0, readToEof(ch).length);
              }
              return (System.nanoTime() - started) / 1_000_000;
            });
    long closedAfterMillis = await(app);
    assertTrue(closedAfterMillis >= PATIENCE.toMillis() - 100, "closed after " + closedAfterMillis);
  }

  @Test
  void aGuestThatNeverAnswersAConnectLosesItAfterThePatience() throws Exception {
    driver.listen(5000);
    Future<byte[]> app =
        hostApp(
            () -> {
              try (SocketChannel ch = connectLine("CONNECT 5000\n")) {
                return readToEof(ch);
              }
            });
    // The guest does not run at all until the host application is done: REQUEST stays
    // unanswered, so only the patience can end the host application's wait.
    assertEquals(
        0,
        app.get(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS).length,
        "an OK for a connection the guest never accepted");
    // The REQUEST then reaches the guest, which accepts, and the device answers with RST.
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (rig.device.connectionCount() > 0) {
      assertTrue(System.nanoTime() < deadline, "the unanswered connection is still held");
      driver.pump(10);
    }
  }

  @Test
  void aHostThatNeverReadsStallsOnlyItsOwnConnection() throws Exception {
    byte[] data = random(8 << 20, 5);
    try (ServerSocketChannel stuck = hostListener(1234);
        ServerSocketChannel echo = hostListener(1235)) {
      Future<SocketChannel> idle = hostApp(stuck::accept);
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      int sent = VsockRig.sendUntilStalled(driver, s, data, 32 * 1024);
      assertTrue(sent < data.length, "a host that never reads took all " + sent + " bytes");
      assertEquals(0, s.credit(), "the device must give no more credit");
      // Another connection goes on meanwhile.
      Future<byte[]> other = echoOnce(echo, 100_000);
      VsockDriver.Socket t = driver.connect(1235, VsockHeader.TYPE_STREAM, TIMEOUT);
      byte[] small = random(100_000, 6);
      t.send(small, TIMEOUT);
      assertArrayEquals(small, t.readFully(small.length, TIMEOUT));
      assertArrayEquals(small, await(other));
      // When the host reads at last, every byte arrives in order.
      int total = sent;
      Future<byte[]> drained =
          hostApp(
              () -> {
                try (SocketChannel ch = idle.get()) {
                  return readExactly(ch, data.length);
                }
              });
      s.send(java.util.Arrays.copyOfRange(data, total, data.length), TIMEOUT);
      assertArrayEquals(data, await(drained));
    }
    assertEquals(0, driver.creditViolations());
  }

  @Test
  void aHostThatClosesAbruptlyResetsTheGuestConnection() throws Exception {
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<Void> app =
          hostApp(
              () -> {
                listener.accept().close();
                return null;
              });
      VsockDriver.Socket s = driver.startConnect(1234, VsockHeader.TYPE_STREAM);
      await(app);
      // The host's close resets the connection: at once when bounce sees it before the guest
      // writes (even before the guest saw it established), else when writing into it fails.
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (!s.wasReset()) {
        assertTrue(System.nanoTime() < deadline, "the guest connection outlived the host's");
        if (s.isOpen()) s.trySend(random(4096, 7), 0, 4096, false);
        driver.pump(10);
      }
    }
    assertEquals(0, rig.device.guestErrors());
  }

  @Test
  void aGuestResetClosesTheHostSocketWhicheverSideConnected() throws Exception {
    driver.listen(5000);
    try (ServerSocketChannel listener = hostListener(1234)) {
      // Guest-initiated.
      Future<byte[]> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  return readToEof(ch);
                }
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      byte[] sent = random(1000, 8);
      s.send(sent, TIMEOUT);
      s.reset();
      // What the host read before its socket closed: some of the bytes sent, in order, no more.
      byte[] got = await(app);
      assertTrue(got.length <= sent.length, "the host read " + got.length + " bytes");
      assertArrayEquals(java.util.Arrays.copyOf(sent, got.length), got);
      // Host-initiated.
      Future<byte[]> connected =
          hostApp(
              () -> {
                try (SocketChannel ch = connectLine("CONNECT 5000\n")) {
                  assertTrue(readLine(ch).startsWith("OK "));
                  return readToEof(ch);
                }
              });
      VsockDriver.Socket t = driver.accept(5000, TIMEOUT);
      t.reset();
      assertEquals(0, await(connected).length);
    }
    awaitNoConnections();
    assertEquals(0, rig.device.guestErrors());
  }

  /**
   * A connection that ends while its host socket still holds bytes the host application never read
   * keeps the channel only for the patience: the guest's last bytes get that long to be taken, but
   * a host that never reads would otherwise keep bounce's fd and the bytes it holds for ever,
   * outside every connection limit. The host application never reads before the end, since reading
   * would let the bytes go and close the channel without the patience.
   */
  @Test
  void aHostThatNeverReadsHasItsSocketClosedThePatienceAfterTheGuestResets() throws Exception {
    byte[] data = random(8 << 20, 15);
    try (UnixListener listener = UnixListener.bind(Path.of(uds + "_1234"), true)) {
      Future<UnixSocket> accepted =
          hostApp(
              () -> {
                UnixSocket peer = null;
                while (peer == null) {
                  Libc.pollIn(listener.fd().value(), 100);
                  peer = listener.accept();
                }
                return peer;
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      try (UnixSocket host = await(accepted)) {
        int sent = VsockRig.sendUntilStalled(driver, s, data, 32 * 1024);
        assertTrue(sent < data.length, "a host that never reads took all " + sent + " bytes");
        long resetAt = System.nanoTime();
        s.reset();
        Future<Integer> hangUp = hostApp(() -> awaitHangUp(host.fd(), HANG_UP_TIMEOUT));
        int events = await(hangUp);
        long closedAfterMillis = (System.nanoTime() - resetAt) / 1_000_000;
        assertTrue(
            (events & POLLHUP) != 0,
            "bounce did not close the host socket within "
                + HANG_UP_TIMEOUT.toMillis()
                + " ms of the guest's reset (poll events 0x"
                + Integer.toHexString(events)
                + ")");
        assertTrue(
            closedAfterMillis >= PATIENCE.toMillis() - 100,
            "closed " + closedAfterMillis + " ms after the reset: not after the patience");
        // Only what the kernel held is left to read, then the end of the stream: what bounce
        // still held (the device's buffer, the channel's) was dropped.
        long drained = drain(host);
        assertTrue(drained > 0, "the host socket held no unread bytes when the connection ended");
        assertTrue(drained < sent, "the host read " + drained + " of " + sent + " bytes sent");
      }
    }
    awaitNoConnections();
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }

  @Test
  void aGuestShutdownOfSendingIsEndOfStreamAndTheHostMayStillWrite() throws Exception {
    byte[] toHost = random(50_000, 9);
    byte[] toGuest = random(300_000, 10);
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<byte[]> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  byte[] got = readToEof(ch);
                  writeAll(ch, toGuest);
                  ch.shutdownOutput();
                  return got;
                }
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      s.send(toHost, TIMEOUT);
      s.shutdown(VsockHeader.SHUTDOWN_SEND);
      assertArrayEquals(toGuest, s.readFully(toGuest.length, TIMEOUT));
      s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
      assertArrayEquals(toHost, await(app));
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  /**
   * The request-reply pattern of {@code nc -N} and HTTP/1.0 clients: the host application sends its
   * request, shuts down its sending side, then reads a reply far larger than its socket buffer and
   * bounce's channel buffer hold. Netty 4.2.18's epoll drops a socket whose input was shut down
   * from its epoll set once nothing else is wanted, and then cannot ask to hear of room to write
   * again; bounce writes such a socket itself, so the reply still arrives whole.
   */
  @Test
  void aHostThatHalfClosesStillReceivesAReplyLargerThanEveryBuffer() throws Exception {
    driver.listen(5000);
    byte[] request = random(1000, 16);
    byte[] reply = random(4 << 20, 17);
    Future<byte[]> app =
        hostApp(
            () -> {
              try (SocketChannel ch = connectLine("CONNECT 5000\n")) {
                assertTrue(readLine(ch).startsWith("OK "));
                writeAll(ch, request);
                ch.shutdownOutput();
                Thread.sleep(300); // bounce's writes must wait for room
                return readToEof(ch);
              }
            });
    VsockDriver.Socket s = driver.accept(5000, TIMEOUT);
    assertArrayEquals(request, s.readFully(request.length, TIMEOUT));
    s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
    s.send(reply, TIMEOUT);
    s.shutdown(VsockHeader.SHUTDOWN_SEND);
    assertArrayEquals(reply, await(app));
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  /**
   * A host that half-closes and later closes for good, while the guest sends nothing: with the
   * socket's input shut down Netty hears nothing of the close (see StreamBridge), so without a
   * watch of its own bounce would keep the connection half-open until the guest wrote again.
   */
  @Test
  void aHostThatHalfClosesAndThenClosesResetsTheGuestConnection() throws Exception {
    try (ServerSocketChannel listener = hostListener(1234)) {
      CountDownLatch halfCloseSeen = new CountDownLatch(1);
      Future<Void> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  ch.shutdownOutput();
                  // Closes only once bounce has taken the half-close (the guest heard it), so
                  // that the close comes to a socket whose input is shut down.
                  assertTrue(halfCloseSeen.await(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS));
                }
                return null;
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
      halfCloseSeen.countDown();
      await(app);
      s.awaitReset(TIMEOUT);
    }
    awaitNoConnections();
  }

  @Test
  void aGuestShutdownOfReceivingFailsTheHostsWritesButNotItsReads() throws Exception {
    // More than every buffer on the way holds, and read late: bounce's writes to the socket must
    // wait for room after it shut the socket's input down (see StreamBridge's class comment).
    byte[] toHost = random(4 << 20, 11);
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<byte[]> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  Thread.sleep(300);
                  // The guest sends these after its SHUTDOWN, so bounce has had the SHUTDOWN
                  // before the host writes a byte.
                  byte[] got = readExactly(ch, toHost.length);
                  long written = 0;
                  IOException refused = null;
                  while (refused == null) {
                    try {
                      writeAll(ch, random(64 * 1024, written));
                      written += 64 * 1024;
                    } catch (IOException e) {
                      refused = e;
                    }
                    assertTrue(written < 64 << 20, "64 MiB written to a guest that shut RCV");
                  }
                  return got;
                }
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      s.shutdown(VsockHeader.SHUTDOWN_RCV);
      s.send(toHost, TIMEOUT);
      assertArrayEquals(toHost, await(app));
      assertTrue(s.creditGivenFree() > 0);
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
  }

  @Test
  void aHostThatWritesAndClosesHasEveryByteDeliveredBeforeTheEnd() throws Exception {
    driver.listen(5000);
    byte[] toGuest = random(1 << 20, 12); // more than every buffer on the way holds
    Future<Void> app =
        hostApp(
            () -> {
              try (SocketChannel ch = connectLine("CONNECT 5000\n")) {
                assertTrue(readLine(ch).startsWith("OK "));
                writeAll(ch, toGuest);
              }
              return null;
            });
    VsockDriver.Socket s = driver.accept(5000, TIMEOUT);
    // Read until the host has written everything and closed; most of the bytes are then still
    // on the way (buffered by the kernel, the device and the guest's credit).
    ByteArrayOutputStream got = new ByteArrayOutputStream();
    byte[] chunk = new byte[4096];
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!app.isDone()) {
      assertTrue(System.nanoTime() < deadline, "the host application did not finish");
      int n = s.read(chunk, 0, chunk.length);
      got.write(chunk, 0, n);
      if (n == 0) driver.pump(1);
    }
    await(app);
    got.write(s.readFully(toGuest.length - got.size(), TIMEOUT));
    assertArrayEquals(toGuest, got.toByteArray());
    s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
    s.shutdown(VsockHeader.SHUTDOWN_BOTH);
    s.awaitReset(TIMEOUT);
    awaitNoConnections();
  }

  @Test
  void aGuestWithoutRxBuffersStallsTheHostWithBoundedMemoryUntilBuffersComeBack() throws Exception {
    byte[] data = random(8 << 20, 13);
    AtomicLong written = new AtomicLong();
    try (ServerSocketChannel stalled = hostListener(1234);
        ServerSocketChannel echo = hostListener(1235)) {
      Future<Void> sender =
          hostApp(
              () -> {
                try (SocketChannel ch = stalled.accept()) {
                  ByteBuffer b = ByteBuffer.wrap(data);
                  while (b.hasRemaining()) written.addAndGet(ch.write(b));
                  ch.shutdownOutput();
                  readToEof(ch);
                }
                return null;
              });
      // Stop restocking before connecting: the host may send right behind the RESPONSE, and
      // buffers restocked in that same pump would lift the bound checked below.
      driver.postRxBuffers(false);
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      // The guest reads all it gets (credit is never what stops the host) until the device has
      // used every rx buffer: from then on nothing can reach the guest, however slow the machine.
      ByteArrayOutputStream got = new ByteArrayOutputStream();
      byte[] chunk = new byte[64 * 1024];
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (driver.rxBuffersPosted() > 0) {
        assertTrue(System.nanoTime() < deadline, "the rx buffers were never all used");
        got.write(chunk, 0, s.read(chunk, 0, chunk.length));
        driver.pump(10);
      }
      got.write(chunk, 0, s.read(chunk, 0, chunk.length));
      assertEquals(0, s.available(), "bytes left unread");
      assertTrue(got.size() < data.length, "nothing stalled");
      assertTrue(
          got.size() <= 256 * (VsockDriver.RX_BUFFER_SIZE - VsockHeader.SIZE),
          "more than the posted rx buffers hold arrived: " + got.size());
      // Bounded: the device's buffer, a read in flight and the kernel's socket buffers.
      assertTrue(
          written.get() - got.size() < 1 << 20,
          "bytes held between host and guest: " + (written.get() - got.size()));
      // Another connection cannot even be answered now: the RESPONSE needs an rx buffer.
      Future<byte[]> other = echoOnce(echo, 100_000);
      VsockDriver.Socket t = driver.startConnect(1235, VsockHeader.TYPE_STREAM);
      for (int i = 0; i < 20; i++) driver.pump(10);
      assertTrue(t.isConnecting(), "answered without rx buffers");
      // The host cannot have gone on writing into the stalled guest beyond that bound either.
      assertTrue(
          written.get() - got.size() < 1 << 20,
          "the host went on writing into a stalled guest: "
              + (written.get() - got.size())
              + " bytes held");
      // Buffers come back: the other connection goes on, and the stalled one completes intact.
      driver.postRxBuffers(true);
      deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (t.isConnecting()) {
        assertTrue(System.nanoTime() < deadline, "no RESPONSE after buffers came back");
        driver.pump(10);
      }
      byte[] small = random(100_000, 14);
      t.send(small, TIMEOUT);
      assertArrayEquals(small, t.readFully(small.length, TIMEOUT));
      assertArrayEquals(small, await(other));
      got.write(s.readFully(data.length - got.size(), TIMEOUT));
      assertArrayEquals(data, got.toByteArray());
      s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
      s.shutdown(VsockHeader.SHUTDOWN_BOTH);
      await(sender);
    }
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }

  /**
   * How long a test waits for bounce to close a host socket the patience after a connection ended:
   * only that it happens is checked (and not before the patience), so this is merely a bound on a
   * broken build's wait, shorter than {@link #TIMEOUT} so that the poll says what was missing.
   */
  static final Duration HANG_UP_TIMEOUT = TIMEOUT.minusSeconds(5);

  private static final short POLLHUP = 0x10;
  private static final int ECONNRESET = 104;
  private static final MethodHandle POLL =
      Libc.downcall("poll", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));

  /**
   * Waits up to {@code timeout} for poll(2) to report a hang-up or an error on {@code fd}, without
   * reading it (no events asked for: only those two wake it); the events it reported, 0 if none.
   */
  static int awaitHangUp(Fd fd, Duration timeout) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment pollfd = arena.allocate(8, 4);
      pollfd.set(JAVA_INT, 0, fd.value());
      long deadline = System.nanoTime() + timeout.toNanos();
      while (true) {
        int left = (int) Math.max(0, (deadline - System.nanoTime()) / 1_000_000);
        int n = (int) POLL.invokeExact(state, pollfd, 1L, left);
        if (n >= 0) return n == 0 ? 0 : pollfd.get(JAVA_SHORT, 6);
        if (Libc.errno(state) != Libc.EINTR) throw Libc.fail("poll", "fd " + fd, state);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** Reads {@code socket} to its end (or a reset); the bytes read. */
  static long drain(UnixSocket socket) throws IOException {
    MemorySegment into = Arena.ofAuto().allocate(64 * 1024);
    long total = 0;
    while (true) {
      long n;
      try {
        n = socket.receive(into, new ArrayList<>());
      } catch (NativeException e) {
        if (e.errno() == ECONNRESET) return total;
        throw e;
      }
      if (n == 0) return total;
      total += n;
    }
  }

  private void awaitNoConnections() throws IOException {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (rig.device.connectionCount() > 0) {
      assertTrue(
          System.nanoTime() < deadline,
          rig.device.connectionCount() + " connections outlived both ends");
      driver.pump(10);
    }
  }

  /**
   * A guest that closes (SHUTDOWN of both directions) right after its last write: the connection
   * ends inside the host side's last read of the guest's bytes, and those bytes, and every byte
   * still queued for the slow host, must reach it before the socket is closed, whether bounce
   * writes the socket through Netty or, after the host's own half-close, itself.
   */
  @ParameterizedTest(name = "host half-closed first: {0}")
  @ValueSource(booleans = {false, true})
  void aGuestThatClosesRightAfterItsLastBytesHasThemAllReachASlowHost(boolean hostHalfCloses)
      throws Exception {
    sendToHostApp(
        random(4 << 20, 53),
        hostHalfCloses,
        UnixHostTest::readSlowlyToEof,
        VsockHeader.SHUTDOWN_BOTH);
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  /** How a host application reads a connection to end of stream. */
  @FunctionalInterface
  interface ToEof {
    byte[] read(SocketChannel ch) throws IOException;
  }

  /**
   * The guest connects to a host application on port 1234, which reads with {@code reader} (after
   * half-closing if {@code hostHalfCloses}), sends {@code data}, and shuts down {@code shutdown};
   * every byte reaches the host, in order, before its end of stream.
   *
   * @return the guest's socket
   */
  private VsockDriver.Socket sendToHostApp(
      byte[] data, boolean hostHalfCloses, ToEof reader, int shutdown) throws Exception {
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<byte[]> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  if (hostHalfCloses) ch.shutdownOutput();
                  return reader.read(ch);
                }
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      if (hostHalfCloses) s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
      s.send(data, TIMEOUT);
      s.shutdown(shutdown);
      byte[] got = await(app);
      assertEquals(data.length, got.length, "bytes that reached the host before its EOF");
      assertArrayEquals(data, got);
      return s;
    }
  }

  /** Reads to end of stream in bursts of up to 256 KiB with a 5 ms pause after each. */
  static byte[] readInBurstsToEof(SocketChannel ch) throws IOException {
    ByteArrayOutputStream all = new ByteArrayOutputStream();
    ByteBuffer b = ByteBuffer.allocate(16 * 1024);
    while (true) {
      for (int burst = 0; burst < 256 * 1024; ) {
        int n = ch.read(b.clear());
        if (n < 0) return all.toByteArray();
        all.write(b.array(), 0, n);
        burst += n;
      }
      java.util.concurrent.locks.LockSupport.parkNanos(5_000_000);
    }
  }

  /**
   * Guest-to-host bytes written to the host socket straight from guest memory (one writev per
   * packet while nothing waits before them) to a host application that reads in bursts, so that the
   * socket keeps filling up: through Netty's channel, and after the host half-closed through
   * bounce's own write path. Every byte arrives in order, and the guest's SHUTDOWN of sending is
   * the host's end of stream after the last one.
   */
  @ParameterizedTest(name = "host half-closed first: {0}")
  @ValueSource(booleans = {false, true})
  void guestBytesWrittenStraightReachAHostReadingInBurstsWholeThenEndOfStream(
      boolean hostHalfCloses) throws Exception {
    VsockDriver.Socket s =
        sendToHostApp(
            random(6 << 20, 54),
            hostHalfCloses,
            UnixHostTest::readInBurstsToEof,
            VsockHeader.SHUTDOWN_SEND);
    assertFalse(s.wasReset(), "the connection was reset");
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }

  @Test
  void aHostThatReadsSlowlyGetsTheGuestsLastBytesBeforeEndOfStream() throws Exception {
    byte[] data = random(4 << 20, 52);
    try (ServerSocketChannel listener = hostListener(1234)) {
      Future<byte[]> app =
          hostApp(
              () -> {
                try (SocketChannel ch = listener.accept()) {
                  // Slower than the guest: the channel always holds bytes when the guest's
                  // SHUTDOWN comes, which must not drop them.
                  return readSlowlyToEof(ch);
                }
              });
      VsockDriver.Socket s = driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
      s.send(data, TIMEOUT);
      s.shutdown(VsockHeader.SHUTDOWN_SEND);
      assertArrayEquals(data, await(app));
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  // ---- SEQPACKET ----

  static final int[] MESSAGE_SIZES = {1, 100, 3776, 3777, 10_000, 60_000, 2};

  /** Receives one whole message, waiting up to the test timeout. */
  static byte[] receiveMessage(SeqpacketSocket s) throws IOException {
    MemorySegment into = Arena.ofAuto().allocate(BUFFER + 1);
    long n = receiveWaiting(s, into);
    if (n == 0) throw new IOException("end of stream");
    assertTrue(n <= BUFFER, "a message of " + n + " bytes");
    return into.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE);
  }

  /** Receives one message into {@code into}, waiting for it: its length, 0 at end of stream. */
  static long receiveWaiting(SeqpacketSocket s, MemorySegment into) throws IOException {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (true) {
      long n = s.receive(into);
      if (n != Libc.WOULD_BLOCK) return n;
      assertTrue(System.nanoTime() < deadline, "neither a message nor the end came");
      Libc.pollIn(s.fd().value(), 100);
    }
  }

  static void sendMessage(SeqpacketSocket s, byte[] message) throws Exception {
    MemorySegment segment = Arena.ofAuto().allocate(Math.max(1, message.length));
    MemorySegment.copy(MemorySegment.ofArray(message), 0, segment, 0, message.length);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!s.send(segment, message.length)) {
      assertTrue(System.nanoTime() < deadline, "the socket never took the message");
      Thread.sleep(1);
    }
  }

  @Test
  void aGuestSeqpacketConnectionKeepsMessageBoundariesBothWays() throws Exception {
    try (SeqpacketSocket listener = SeqpacketSocket.listen(Path.of(uds + "_2000"))) {
      Future<Void> app =
          hostApp(
              () -> {
                SeqpacketSocket peer = null;
                while (peer == null) {
                  Libc.pollIn(listener.fd().value(), 100);
                  peer = listener.accept();
                }
                try (SeqpacketSocket p = peer) {
                  for (int k = 0; k < MESSAGE_SIZES.length; k++) {
                    assertArrayEquals(random(MESSAGE_SIZES[k], 20 + k), receiveMessage(p));
                  }
                  for (int k = 0; k < MESSAGE_SIZES.length; k++) {
                    sendMessage(p, random(MESSAGE_SIZES[k], 40 + k));
                  }
                }
                return null;
              });
      VsockDriver.Socket s = driver.connect(2000, VsockHeader.TYPE_SEQPACKET, TIMEOUT);
      for (int k = 0; k < MESSAGE_SIZES.length; k++) {
        s.sendMessage(random(MESSAGE_SIZES[k], 20 + k), TIMEOUT);
      }
      for (int k = 0; k < MESSAGE_SIZES.length; k++) {
        assertArrayEquals(random(MESSAGE_SIZES[k], 40 + k), s.readMessage(TIMEOUT), "message " + k);
      }
      await(app);
      s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT); // the host closed
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  @Test
  void aHostApplicationReachesAGuestSeqpacketListener() throws Exception {
    driver.listen(6000);
    Future<Void> app =
        hostApp(
            () -> {
              try (SeqpacketSocket s = SeqpacketSocket.connect(Path.of(uds + ".seqpacket"))) {
                sendMessage(s, "CONNECT 6000\n".getBytes(StandardCharsets.US_ASCII));
                String ok = new String(receiveMessage(s), StandardCharsets.US_ASCII);
                assertTrue(ok.matches("OK \\d+\n"), ok);
                for (int k = 0; k < MESSAGE_SIZES.length; k++) {
                  sendMessage(s, random(MESSAGE_SIZES[k], 60 + k));
                }
                for (int k = 0; k < MESSAGE_SIZES.length; k++) {
                  assertArrayEquals(random(MESSAGE_SIZES[k], 80 + k), receiveMessage(s));
                }
              }
              return null;
            });
    VsockDriver.Socket s = driver.accept(6000, TIMEOUT);
    assertTrue(s.isOpen());
    for (int k = 0; k < MESSAGE_SIZES.length; k++) {
      assertArrayEquals(random(MESSAGE_SIZES[k], 60 + k), s.readMessage(TIMEOUT), "message " + k);
    }
    for (int k = 0; k < MESSAGE_SIZES.length; k++) {
      s.sendMessage(random(MESSAGE_SIZES[k], 80 + k), TIMEOUT);
    }
    await(app);
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  /** Waits for the one connection {@code listener} gets, on a host application's thread. */
  private Future<SeqpacketSocket> acceptOne(SeqpacketSocket listener) {
    return hostApp(
        () -> {
          SeqpacketSocket peer = null;
          while (peer == null) {
            Libc.pollIn(listener.fd().value(), 100);
            peer = listener.accept();
          }
          return peer;
        });
  }

  /**
   * A guest that closes (SHUTDOWN of both directions) while its messages wait for a host
   * application that has not read yet: the connection ends inside the host side's read of the last
   * message, which must still reach the host, after every message before it and before its end of
   * stream.
   */
  @Test
  void aGuestThatClosesWhileASlowHostHasNotReadGetsEveryMessageThere() throws Exception {
    int size = 8000;
    try (SeqpacketSocket listener = SeqpacketSocket.listen(Path.of(uds + "_2000"));
        WarningLog log = new WarningLog()) {
      Future<SeqpacketSocket> accepted = acceptOne(listener);
      VsockDriver.Socket s = driver.connect(2000, VsockHeader.TYPE_SEQPACKET, TIMEOUT);
      try (SeqpacketSocket host = await(accepted)) {
        // Until the socket is full and messages wait in the device too (its credit runs out).
        int sent = 0;
        while (s.credit() >= size || s.settledCredit(TIMEOUT) >= size) {
          s.sendMessage(random(size, 100 + sent), TIMEOUT);
          sent++;
        }
        s.shutdown(VsockHeader.SHUTDOWN_BOTH);
        VsockRig.awaitTxTaken(driver, TIMEOUT); // the host reads only after the SHUTDOWN came
        Future<List<byte[]>> app =
            hostApp(
                () -> {
                  List<byte[]> got = new ArrayList<>();
                  MemorySegment into = Arena.ofAuto().allocate(BUFFER + 1);
                  for (long n; (n = receiveWaiting(host, into)) > 0; ) {
                    got.add(into.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE));
                  }
                  return got;
                });
        List<byte[]> got = await(app);
        assertEquals(sent, got.size(), "messages before the host's end of stream");
        for (int k = 0; k < sent; k++) {
          assertArrayEquals(random(size, 100 + k), got.get(k), "message " + k);
        }
      }
      awaitNoConnections();
      assertEquals(List.of(), log.lines());
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  /**
   * As {@link #aGuestThatNeverAnswersAConnectLosesItAfterThePatience} through {@code
   * <uds-path>.seqpacket}: bounce closes the host application's socket and lets the connection go.
   */
  @Test
  void aGuestThatNeverAnswersASeqpacketConnectLosesItAfterThePatience() throws Exception {
    driver.listen(6000);
    try (SeqpacketSocket app = SeqpacketSocket.connect(Path.of(uds + ".seqpacket"))) {
      sendMessage(app, "CONNECT 6000\n".getBytes(StandardCharsets.US_ASCII));
      // The guest does not run at all until bounce closed the socket: REQUEST stays unanswered.
      int events = awaitHangUp(app.fd(), HANG_UP_TIMEOUT);
      assertTrue(
          (events & POLLHUP) != 0,
          "bounce did not close the host socket within "
              + HANG_UP_TIMEOUT.toMillis()
              + " ms (poll events 0x"
              + Integer.toHexString(events)
              + ")");
      assertEquals(
          0,
          receiveWaiting(app, Arena.ofAuto().allocate(BUFFER)),
          "an OK for a connection the guest never accepted");
    }
    // The REQUEST then reaches the guest, which accepts, and the device answers with RST.
    awaitNoConnections();
  }

  @Test
  void aSeqpacketPortNobodyListensOnIsRefused() {
    IOException e =
        assertThrows(
            IOException.class, () -> driver.connect(2001, VsockHeader.TYPE_SEQPACKET, TIMEOUT));
    assertTrue(e.getMessage().contains("refused"), e.getMessage());
  }
}
