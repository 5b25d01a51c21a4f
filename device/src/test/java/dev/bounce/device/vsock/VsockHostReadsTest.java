package dev.bounce.device.vsock;

import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.IoVectors;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.testing.TestSyscalls;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
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
 * Host-to-guest stream bytes read straight from the host socket into the guest's rx buffers ({@link
 * HostReads}), the twin of {@link VsockStraightPathTest}: the host end is a real Unix stream socket
 * (bytesAtHost is its FIONREAD, readInto one readv(2)), the guest the fake frontend's {@link
 * VsockDriver} with Linux's 3776-byte rx buffers.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class VsockHostReadsTest {
  static final Duration TIMEOUT = Duration.ofSeconds(20);
  static final int PORT = 1234;

  /** Payload bytes one of the driver's rx buffers holds. */
  static final int RX_PAYLOAD = VsockDriver.RX_BUFFER_SIZE - VsockHeader.SIZE;

  @TempDir Path dir;
  private TestSyscalls.SocketPair socket;
  private SocketEndpoint endpoint;
  private VsockRig rig;
  private VsockDriver driver;
  private final ExecutorService hostApp = Executors.newSingleThreadExecutor();

  private void start(int queueSize, int bufferSize) throws Exception {
    socket = TestSyscalls.socketPair();
    Libc.setNonBlocking(socket.one().value()); // bounce's end, as Netty's channel has it
    endpoint = new SocketEndpoint(socket.one());
    rig = new VsockRig(dir, queueSize, bufferSize, 8, loop -> new OneEndpoint(endpoint));
    driver = rig.driver;
  }

  @AfterEach
  void tearDown() {
    hostApp.shutdownNow();
    if (rig != null) rig.close();
    if (socket != null) socket.close();
  }

  private static byte[] random(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  // ---- the host application's end of the socket ----

  /** Writes {@code data[off, off + len)} to the host application's end, blocking for room. */
  private void hostWrites(byte[] data, int off, int len) throws NativeException {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment from = arena.allocate(Math.max(1, len));
      MemorySegment.copy(data, off, from, JAVA_BYTE, 0, len);
      long done = 0;
      while (done < len) {
        long n = Libc.write(socket.other().value(), from.asSlice(done), len - done);
        if (n == Libc.WOULD_BLOCK) return;
        done += n;
      }
    }
  }

  /**
   * Writes as much of {@code data} as the socket takes now, without blocking: bytes that then stay
   * in the socket are exactly the rest.
   */
  private int hostWritesWhatFits(byte[] data) throws NativeException {
    int fd = socket.other().value();
    int flags = Libc.fcntl(fd, Libc.F_GETFL, 0);
    Libc.fcntl(fd, Libc.F_SETFL, flags | Libc.O_NONBLOCK);
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment from = arena.allocate(data.length);
      MemorySegment.copy(data, 0, from, JAVA_BYTE, 0, data.length);
      long done = 0;
      while (done < data.length) {
        long n = Libc.write(fd, from.asSlice(done), data.length - done);
        if (n == Libc.WOULD_BLOCK) break;
        done += n;
      }
      return (int) done;
    } finally {
      Libc.fcntl(fd, Libc.F_SETFL, flags);
    }
  }

  /** The host application sends all of {@code data}, and the host end says so. */
  private void hostSends(byte[] data) throws NativeException {
    hostWrites(data, 0, data.length);
    bytesWaitAtHost();
  }

  /** A guest connection, with all {@code queueSize} rx buffers posted and no more to come. */
  private VsockDriver.Socket connectedWithStockedRxRing(int queueSize) throws Exception {
    start(queueSize, VsockDriver.LINUX_BUFFER_SIZE);
    VsockDriver.Socket s = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    stockedRxRing(queueSize);
    return s;
  }

  /** The host end says bytes may wait (what a Netty read or an epoll wake-up would say). */
  private void bytesWaitAtHost() {
    rig.device.dataLoop().execute(() -> endpoint.connection.bytesWaitAtHost());
  }

  /** Bytes in the socket that bounce has not read. */
  private int leftInSocket() throws NativeException {
    return Libc.bytesReadable(socket.one().value());
  }

  private <T> T onLoop(Callable<T> task) throws Exception {
    return rig.device.dataLoop().submit(task).get(10, TimeUnit.SECONDS);
  }

  /** Pumps the driver until {@code condition} holds, failing after {@link #TIMEOUT}. */
  private void pumpUntil(BooleanSupplier condition, String what) throws Exception {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!condition.getAsBoolean()) {
      assertTrue(System.nanoTime() < deadline, "waited in vain for " + what);
      driver.pump(10);
    }
  }

  private void assertNoGuestOrDriverProblem() {
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }

  // ---- the tests ----

  @Test
  void bytesArriveInOrderAndCompleteAcrossManyRxBuffers() throws Exception {
    start(256, VsockDriver.LINUX_BUFFER_SIZE);
    VsockDriver.Socket s = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    byte[] data = random(4 << 20, 1);
    Future<?> writer =
        hostApp.submit(
            () -> {
              Random sizes = new Random(2);
              for (int at = 0; at < data.length; ) {
                int n = Math.min(data.length - at, 1 + sizes.nextInt(100_000));
                hostWrites(data, at, n);
                bytesWaitAtHost();
                at += n;
              }
              return null;
            });
    assertArrayEquals(data, s.readFully(data.length, TIMEOUT));
    writer.get(10, TimeUnit.SECONDS);
    assertEquals(data.length, onLoop(() -> endpoint.bytesRead), "every byte went straight");
    assertTrue(
        onLoop(() -> endpoint.largestRead) > RX_PAYLOAD,
        "one read fills several rx buffers: " + onLoop(() -> endpoint.largestRead));
    assertNoGuestOrDriverProblem();
  }

  @Test
  void aGuestThatStopsReadingGetsNoMoreThanItsCreditAndTheRestStaysInTheSocket() throws Exception {
    int credit = 64 * 1024;
    start(256, credit); // 256 rx buffers hold more than the credit: only the credit stops it
    VsockDriver.Socket s = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    byte[] data = random(200_000, 3);
    int written = hostWritesWhatFits(data);
    assertTrue(written > credit, "the socket took only " + written + " bytes");
    bytesWaitAtHost();
    pumpUntil(
        () -> s.available() >= credit || driver.creditViolations() > 0,
        "the guest's credit worth of bytes");
    assertEquals(0, driver.creditViolations(), driver.firstProblem());
    // Whatever the device does after the credit ran out comes before the answer to this.
    s.settledCredit(TIMEOUT);
    assertEquals(credit, s.available());
    assertEquals(0, driver.creditViolations());
    assertEquals(written - credit, leftInSocket(), "the rest waits in the socket");
    assertEquals(0, (int) onLoop(() -> endpoint.connection.queuedForGuest()), "not in bounce");

    // Once the guest reads, the rest follows in order.
    assertArrayEquals(Arrays.copyOf(data, written), s.readFully(written, TIMEOUT));
    assertEquals(0, leftInSocket());
    assertNoGuestOrDriverProblem();
  }

  @Test
  void rxBuffersAShortReadDidNotFillGoBackAndCarryTheNextBytes() throws Exception {
    int queueSize = 16;
    start(queueSize, VsockDriver.LINUX_BUFFER_SIZE);
    VsockDriver.Socket s = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    driver.postRxBuffers(false); // the guest posts no more: every buffer lost would show
    pumpUntil(() -> driver.rxBuffersPosted() == queueSize, "the rx ring stocked");
    // A host end that says more waits than a read then finds: each read pops 8 buffers more than
    // it fills, and must give them back.
    onLoop(() -> endpoint.overstatement = 8 * RX_PAYLOAD);
    byte[] data = random(3 * 5000 + (queueSize - 6) * RX_PAYLOAD, 4);
    ByteArrayOutputStream got = new ByteArrayOutputStream();
    for (int k = 1; k <= 3; k++) {
      hostWrites(data, (k - 1) * 5000, 5000); // two rx buffers' worth
      bytesWaitAtHost();
      got.write(s.readFully(5000, TIMEOUT));
      assertEquals(queueSize - 2 * k, driver.rxBuffersPosted(), "two buffers used per read");
    }
    // Exactly what the buffers still posted hold: all of it arrives, in them.
    hostWrites(data, 15_000, data.length - 15_000);
    bytesWaitAtHost();
    got.write(s.readFully(data.length - 15_000, TIMEOUT));
    assertArrayEquals(data, got.toByteArray());
    assertEquals(0, driver.rxBuffersPosted(), "every buffer was used");
    assertTrue(onLoop(() -> endpoint.shortReads) >= 3, "the reads came back short");

    // A guest that posts again goes on receiving.
    driver.postRxBuffers(true);
    driver.pump(0);
    byte[] more = random(50_000, 5);
    hostSends(more);
    assertArrayEquals(more, s.readFully(more.length, TIMEOUT));
    assertNoGuestOrDriverProblem();
  }

  @Test
  void bytesQueuedWithWriteGoBeforeBytesReadStraightFromTheHost() throws Exception {
    int buffer = 64 * 1024;
    start(256, buffer);
    VsockDriver.Socket s = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    byte[] queued = random(buffer, 6); // fills the connection's ring and the guest's credit
    byte[] atHost = random(100_000, 7);
    hostWrites(atHost, 0, atHost.length);
    onLoop(
        () -> {
          VsockConnection c = endpoint.connection;
          assertEquals(
              queued.length, c.write(MemorySegment.ofArray(queued), 0, queued.length, false));
          c.bytesWaitAtHost();
          return null;
        });
    byte[] got = s.readFully(queued.length + atHost.length, TIMEOUT);
    assertArrayEquals(queued, Arrays.copyOf(got, queued.length), "the ring's bytes first");
    assertArrayEquals(atHost, Arrays.copyOfRange(got, queued.length, got.length));
    assertEquals(atHost.length, onLoop(() -> endpoint.bytesRead), "the host's went straight");
    assertNoGuestOrDriverProblem();
  }

  /** Uses up the posted rx buffers with host bytes the guest then reads. */
  private void useUpPostedRxBuffers(VsockDriver.Socket s) throws Exception {
    driver.postRxBuffers(false);
    int posted = driver.rxBuffersPosted();
    byte[] fill = random(posted * RX_PAYLOAD, 8);
    hostSends(fill);
    assertArrayEquals(fill, s.readFully(fill.length, TIMEOUT));
    assertEquals(0, driver.rxBuffersPosted());
  }

  @Test
  void anRxBufferTooSmallForHeaderAndDataFirstInLineIsAGuestErrorAndNoDataIsLost()
      throws Exception {
    start(16, VsockDriver.LINUX_BUFFER_SIZE);
    VsockDriver.Socket s = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    useUpPostedRxBuffers(s);
    driver.postRxBuffer(20); // shorter than a header
    driver.postRxBuffer(VsockHeader.SIZE); // a header and no data
    driver.postRxBuffers(true);
    driver.pump(0);
    byte[] data = random(10_000, 9);
    hostSends(data);
    assertArrayEquals(data, s.readFully(data.length, TIMEOUT));
    assertEquals(2, rig.device.guestErrors());
    // Both came back to the guest, empty (which the driver counts as bad packets).
    pumpUntil(() -> driver.badPackets() == 2, "the small buffers back");
    assertTrue(driver.firstProblem().contains("0 bytes"), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
  }

  @Test
  void anRxBufferTooSmallBehindAUsableOneIsGivenBackThenAGuestErrorAndNoDataIsLost()
      throws Exception {
    start(16, VsockDriver.LINUX_BUFFER_SIZE);
    VsockDriver.Socket s = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    useUpPostedRxBuffers(s);
    driver.postRxBuffer(VsockDriver.RX_BUFFER_SIZE);
    driver.postRxBuffer(20); // met in the middle of a read: given back, then the first of the next
    driver.postRxBuffers(true);
    driver.pump(0);
    byte[] data = random(10_000, 10);
    hostSends(data);
    assertArrayEquals(data, s.readFully(data.length, TIMEOUT));
    assertEquals(1, rig.device.guestErrors());
    pumpUntil(() -> driver.badPackets() == 1, "the small buffer back");
    assertEquals(0, driver.creditViolations());
    // The connection goes on.
    byte[] more = random(20_000, 11);
    hostSends(more);
    assertArrayEquals(more, s.readFully(more.length, TIMEOUT));
    assertEquals(1, rig.device.guestErrors());
  }

  // ---- a guest that breaks its rx ring while the device works on it ----

  static final int RX = VsockDriver.RX_QUEUE;

  /** A guest address outside guest memory (below RAM). */
  static final long OUTSIDE_MEMORY = 0x1000;

  /** Stops restocking and waits until every rx buffer is posted and nothing is in flight. */
  private void stockedRxRing(int queueSize) throws Exception {
    driver.postRxBuffers(false);
    pumpUntil(() -> driver.rxBuffersPosted() == queueSize, "the rx ring stocked");
  }

  /** The next available index the device will consume (every buffer it used was harvested). */
  private int nextRxIndex() {
    return rig.session.queue(RX).ring().lastUsedIndex();
  }

  /**
   * A pass whose batch meets a descriptor outside guest memory at its fourth buffer stops the rx
   * ring (a guest error) having read nothing, and gives back the three buffers it popped before:
   * GET_VRING_BASE reports none consumed. The connection waits for the next pass, so once the guest
   * mended the descriptor and set the ring up again, the host's bytes arrive without any further
   * word from the host end.
   */
  @Test
  void aBatchThatMeetsABadDescriptorMidwayGivesItsBuffersBackAndTheConnectionWaitsForTheRing()
      throws Exception {
    VsockDriver.Socket s = connectedWithStockedRxRing(16);
    int next = nextRxIndex();
    MemorySegment fourth = rig.descriptor(RX, rig.availableHead(RX, 3));
    long address = fourth.get(LE64, 0);
    fourth.set(LE64, 0, OUTSIDE_MEMORY);
    byte[] data = random(8 * RX_PAYLOAD, 12); // eight buffers' worth
    hostSends(data);
    rig.awaitRingError(RX, TIMEOUT);
    assertEquals(next, rig.stopRing(RX), "rx buffers the failed pass popped were consumed");
    assertEquals(data.length, leftInSocket(), "bytes were read");
    assertTrue(onLoop(() -> endpoint.connection.queued), "the connection waits for no pass");
    assertTrue(onLoop(() -> endpoint.connection.bytesWaitAtHost));

    fourth.set(LE64, 0, address);
    rig.startRing(RX, next);
    assertArrayEquals(data, s.readFully(data.length, TIMEOUT));
    assertEquals(0, leftInSocket());
    assertNoGuestOrDriverProblem();
  }

  /**
   * A buffer the guest made bad between the read into it and its completion (its descriptor moved
   * outside guest memory) stops the rx ring when the device completes it. The buffer before it
   * stays used; it and the one after go back (GET_VRING_BASE counts them not consumed). The bytes
   * read into them cannot reach the guest, so the connection is reset: the guest gets the first
   * buffer's bytes, then RST. Other connections go on.
   */
  @Test
  void aBufferThatTurnsBadBeforeItsCompletionGoesBackAndTheStreamThatLostBytesIsReset()
      throws Exception {
    VsockDriver.Socket s = connectedWithStockedRxRing(16);
    int next = nextRxIndex();
    MemorySegment second = rig.descriptor(RX, rig.availableHead(RX, 1));
    long address = second.get(LE64, 0);
    onLoop(() -> endpoint.afterRead = () -> second.set(LE64, 0, OUTSIDE_MEMORY));
    byte[] data = random(3 * RX_PAYLOAD, 13); // three buffers' worth, read at once
    hostSends(data);
    rig.awaitRingError(RX, TIMEOUT);
    assertEquals(
        next + 1, rig.stopRing(RX), "only the buffer completed before the bad one is consumed");
    assertEquals(data.length, onLoop(() -> endpoint.bytesRead), "the read before it");
    assertTrue(onLoop(() -> endpoint.connection.isClosed()), "a stream that lost bytes goes on");

    second.set(LE64, 0, address);
    rig.startRing(RX, next + 1);
    driver.postRxBuffers(true);
    s.awaitReset(TIMEOUT);
    assertArrayEquals(Arrays.copyOf(data, RX_PAYLOAD), s.readFully(RX_PAYLOAD, TIMEOUT));
    assertEquals(0, s.available(), "bytes after the ones of the completed buffer");

    VsockDriver.Socket t = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    byte[] more = random(50_000, 14);
    hostSends(more);
    assertArrayEquals(more, t.readFully(more.length, TIMEOUT));
    assertNoGuestOrDriverProblem();
  }

  /**
   * A guest that shortens the first descriptor of an rx buffer below a header between the read into
   * it and its completion: the device cannot put the header in front of the bytes. The buffer comes
   * back empty (used len 0), a guest error, and the connection, whose bytes are lost, is reset (the
   * RST goes in a buffer the pass gave back). The ring goes on, and so do other connections.
   */
  @Test
  void anRxBufferShortenedBelowAHeaderBeforeItsCompletionComesBackEmptyAndResetsTheStream()
      throws Exception {
    VsockDriver.Socket s = connectedWithStockedRxRing(16);
    MemorySegment first = rig.descriptor(RX, rig.availableHead(RX, 0));
    onLoop(() -> endpoint.afterRead = () -> first.set(LE32, 8, 20)); // len: 20 bytes
    byte[] data = random(5000, 15); // two buffers' worth
    hostSends(data);
    s.awaitReset(TIMEOUT);
    assertEquals(data.length, onLoop(() -> endpoint.bytesRead), "the read");
    assertEquals(0, s.available(), "bytes of the lost read arrived");
    assertEquals(1, rig.device.guestErrors());
    pumpUntil(() -> driver.badPackets() > 0, "the shortened buffer back");
    assertEquals(1, driver.badPackets(), driver.firstProblem());
    assertTrue(driver.firstProblem().contains("came back with 0 bytes"), driver.firstProblem());

    driver.postRxBuffers(true);
    VsockDriver.Socket t = driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    byte[] more = random(50_000, 16);
    hostSends(more);
    assertArrayEquals(more, t.readFully(more.length, TIMEOUT));
    assertEquals(1, rig.device.guestErrors());
    assertEquals(0, driver.creditViolations());
    assertFalse(rig.ringErrorSignalled(RX), "the rx ring stopped");
  }

  /**
   * The host end of every connection: one real socket, read with FIONREAD and readv(2) as {@link
   * StreamBridge} reads its channel's. Runs on the data loop.
   */
  static final class SocketEndpoint extends OneEndpoint.Endpoint {
    private final Fd fd;

    /**
     * Added to what FIONREAD says: a host end that can only say how much may wait, whose reads then
     * come back short.
     */
    int overstatement;

    long bytesRead;
    long largestRead;
    int shortReads;

    /**
     * Runs once, on the data loop, right after the next read: between the device's gathering of the
     * rx buffers and their completion, where a guest may change their descriptors.
     */
    Runnable afterRead;

    SocketEndpoint(Fd fd) {
      this.fd = fd;
    }

    @Override
    public int bytesAtHost(VsockConnection c) {
      try {
        int n = Libc.bytesReadable(fd.value());
        return n == 0 ? 0 : n + overstatement;
      } catch (NativeException e) {
        throw new AssertionError(e);
      }
    }

    @Override
    public long readInto(VsockConnection c, IoVectors buffers) {
      long n;
      try {
        n = Math.max(0, Libc.readv(fd.value(), buffers));
      } catch (NativeException e) {
        throw new AssertionError(e);
      }
      bytesRead += n;
      largestRead = Math.max(largestRead, n);
      if (n < buffers.bytes()) shortReads++;
      Runnable then = afterRead;
      afterRead = null;
      if (then != null) then.run();
      return n;
    }
  }
}
