package dev.bounce.vhost.socket;

import static dev.bounce.vhost.socket.SocketTesting.bytes;
import static dev.bounce.vhost.socket.SocketTesting.segment;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.testing.BlockedThreads;
import dev.bounce.pool.testing.BlockedThreads.Syscall;
import dev.bounce.pool.testing.OpenFds;
import dev.bounce.pool.testing.TestSyscalls;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.FutureTask;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

// A hang (a receive that never sees end of stream, a connect that never returns) fails the test.
@Timeout(value = 15, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class UnixSocketTest {
  @TempDir Path dir;

  private final Arena arena = Arena.ofShared();
  private final List<AutoCloseable> toClose = new ArrayList<>();
  private UnixListener listener;
  private UnixSocket client;
  private UnixSocket server;

  @BeforeEach
  void connect() throws IOException {
    listener = closing(UnixListener.bind(dir.resolve("pair.sock"), false));
    client = closing(UnixSocket.connect(listener.path()));
    server = closing(listener.accept());
  }

  @AfterEach
  void closeAll() throws Exception {
    for (AutoCloseable c : toClose.reversed()) c.close();
    arena.close();
  }

  private <T extends AutoCloseable> T closing(T resource) {
    toClose.add(resource);
    return resource;
  }

  private <T extends AutoCloseable> List<T> closingAll(List<T> resources) {
    toClose.addAll(resources);
    return resources;
  }

  private MemorySegment text(String s) {
    return segment(arena, s.getBytes(StandardCharsets.UTF_8));
  }

  private static String text(MemorySegment segment) {
    return new String(bytes(segment), StandardCharsets.UTF_8);
  }

  private static boolean isCloseOnExec(Fd fd) throws NativeException {
    return (Libc.fcntl(fd.value(), Libc.F_GETFD, 0) & SocketTesting.FD_CLOEXEC) != 0;
  }

  @Test
  void bytesRoundTripBothWays() throws IOException {
    client.send(text("ping from the frontend"));
    MemorySegment into = arena.allocate(22);
    List<Fd> fds = new ArrayList<>();
    assertTrue(server.receiveFully(into, fds));
    assertEquals("ping from the frontend", text(into));
    assertTrue(fds.isEmpty());

    server.send(text("pong"));
    MemorySegment back = arena.allocate(64);
    assertEquals(4, client.receive(back, fds));
    assertEquals("pong", text(back.asSlice(0, 4)));
    assertTrue(fds.isEmpty());
  }

  @Test
  void oneEventFdArrivesWorking() throws IOException {
    EventFd sent = closing(EventFd.create());
    client.send(text("kick"), sent.fd());

    MemorySegment into = arena.allocate(4);
    List<Fd> fds = closingAll(new ArrayList<>());
    assertTrue(server.receiveFully(into, fds));
    assertEquals("kick", text(into));
    assertEquals(1, fds.size());
    Fd received = fds.getFirst();
    assertNotEquals(sent.fd().value(), received.value(), "a received fd is a new fd");
    assertTrue(isCloseOnExec(received), "received fds must be close-on-exec");

    EventFd.adopt(received).signal();
    EventFd.adopt(received).signal();
    assertEquals(2, sent.drain(), "signals through the received eventfd reach the sender's");
  }

  @Test
  void eightFdsArriveWorkingAndInOrder() throws IOException {
    List<EventFd> eventFds = new ArrayList<>();
    List<Memfd> memfds = new ArrayList<>();
    List<Mapping> senderMappings = new ArrayList<>();
    Fd[] sent = new Fd[UnixSocket.MAX_FDS];
    for (int i = 0; i < UnixSocket.MAX_FDS; i++) {
      if (i % 2 == 0) {
        EventFd e = closing(EventFd.create());
        eventFds.add(e);
        sent[i] = e.fd();
      } else {
        Memfd m = closing(Memfd.create("socket-test-" + i, Mapping.PAGE_SIZE));
        Mapping mapping = closing(m.map(0, Mapping.PAGE_SIZE));
        mapping.segment().fill((byte) (0x40 + i));
        mapping.segment().set(JAVA_LONG, 8, 1000L + i);
        memfds.add(m);
        senderMappings.add(mapping);
        sent[i] = m.fd();
      }
    }
    client.send(text("set mem table"), sent);

    MemorySegment into = arena.allocate(13);
    List<Fd> fds = closingAll(new ArrayList<>());
    assertTrue(server.receiveFully(into, fds));
    assertEquals("set mem table", text(into));
    assertEquals(UnixSocket.MAX_FDS, fds.size());

    for (int i = 0; i < UnixSocket.MAX_FDS; i++) {
      Fd received = fds.get(i);
      assertTrue(isCloseOnExec(received), "fd " + i + " is not close-on-exec");
      if (i % 2 == 0) {
        EventFd e = EventFd.adopt(received);
        for (int k = 0; k <= i; k++) e.signal();
        assertEquals(i + 1, eventFds.get(i / 2).drain(), "eventfd " + i + " arrived out of place");
      } else {
        Mapping mapping = closing(Mapping.map(received, 0, Mapping.PAGE_SIZE));
        MemorySegment seen = mapping.segment();
        assertEquals((byte) (0x40 + i), seen.get(JAVA_BYTE, 0), "memfd " + i);
        assertEquals(1000L + i, seen.get(JAVA_LONG, 8), "memfd " + i + " arrived out of place");
        assertEquals((byte) (0x40 + i), seen.get(JAVA_BYTE, Mapping.PAGE_SIZE - 1));
        seen.set(JAVA_LONG, 16, -i);
        assertEquals(-i, senderMappings.get(i / 2).segment().get(JAVA_LONG, 16));
      }
    }
  }

  @Test
  void fdsArriveWithTheFirstByteWhenTheMessageIsReadInTwoParts() throws IOException {
    EventFd a = closing(EventFd.create());
    Memfd b = closing(Memfd.create("two-parts", Mapping.PAGE_SIZE));
    client.send(text("header__payload!"), a.fd(), b.fd());

    List<Fd> fds = closingAll(new ArrayList<>());
    MemorySegment head = arena.allocate(8);
    assertEquals(8, server.receive(head, fds));
    assertEquals("header__", text(head));
    assertEquals(2, fds.size(), "the fds must come with the first part");

    MemorySegment rest = arena.allocate(8);
    assertTrue(server.receiveFully(rest, fds));
    assertEquals("payload!", text(rest));
    assertEquals(2, fds.size(), "the second part must bring no fds");

    EventFd.adopt(fds.get(0)).signal();
    assertEquals(1, a.drain());
    assertTrue(Libc.fstat(fds.get(1).value()).isRegularFile());
  }

  @Test
  void fdsOfConsecutiveMessagesStayWithTheirMessages() throws IOException {
    EventFd first = closing(EventFd.create());
    EventFd second = closing(EventFd.create());
    client.send(text("one"), first.fd());
    client.send(text("two"), second.fd());
    client.send(text("three"));

    List<Fd> fds = closingAll(new ArrayList<>());
    MemorySegment into = arena.allocate(3);
    assertTrue(server.receiveFully(into, fds));
    assertEquals("one", text(into));
    assertEquals(1, fds.size());
    EventFd.adopt(fds.getLast()).signal();
    assertEquals(1, first.drain());
    assertEquals(0, second.drain());

    assertTrue(server.receiveFully(into, fds));
    assertEquals("two", text(into));
    assertEquals(2, fds.size());
    EventFd.adopt(fds.getLast()).signal();
    assertEquals(1, second.drain());

    MemorySegment five = arena.allocate(5);
    assertTrue(server.receiveFully(five, fds));
    assertEquals("three", text(five));
    assertEquals(2, fds.size());
  }

  @ParameterizedTest
  @ValueSource(ints = {9, 16, 64})
  void moreThanEightFdsFromThePeerFailTheReceiveAndAreAllClosed(int count) throws IOException {
    List<EventFd> sent = closingAll(new ArrayList<>());
    for (int i = 0; i < count; i++) sent.add(EventFd.create());
    int baseline = OpenFds.count();

    int[] numbers = sent.stream().mapToInt(e -> e.fd().value()).toArray();
    assertEquals(5, SocketTesting.rawSend(client.fd().value(), "hello".getBytes(), numbers));

    List<Fd> fds = new ArrayList<>();
    IOException e = assertThrows(IOException.class, () -> server.receive(arena.allocate(5), fds));
    assertTrue(e.getMessage().contains("more than 8 fds"), e.getMessage());
    assertTrue(fds.isEmpty(), "fds of a refused message must not reach the caller: " + fds);
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void moreThanEightFdsFailReceiveFullyToo() throws IOException {
    List<Memfd> sent = closingAll(new ArrayList<>());
    for (int i = 0; i < 10; i++) sent.add(Memfd.create("too-many-" + i, Mapping.PAGE_SIZE));
    int baseline = OpenFds.count();
    int[] numbers = sent.stream().mapToInt(m -> m.fd().value()).toArray();
    SocketTesting.rawSend(client.fd().value(), new byte[12], numbers);

    List<Fd> fds = new ArrayList<>();
    IOException e =
        assertThrows(IOException.class, () -> server.receiveFully(arena.allocate(12), fds));
    assertTrue(e.getMessage().contains("more than 8 fds"), e.getMessage());
    assertTrue(fds.isEmpty());
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void ancillaryDataOtherThanFdsFailsTheReceiveAndClosesWhatCame() throws IOException {
    // With SO_PASSCRED the kernel adds SCM_CREDENTIALS to every message: not what a frontend
    // sends, so receive refuses it, and closes any fd that came along.
    SocketTesting.setInt(server.fd(), SocketTesting.SO_PASSCRED, 1);
    EventFd sent = closing(EventFd.create());
    int baseline = OpenFds.count();

    client.send(text("creds"));
    IOException e =
        assertThrows(IOException.class, () -> server.receive(arena.allocate(5), new ArrayList<>()));
    assertTrue(e.getMessage().contains("ancillary"), e.getMessage());

    client.send(text("creds"), sent.fd());
    List<Fd> fds = new ArrayList<>();
    assertThrows(IOException.class, () -> server.receive(arena.allocate(5), fds));
    assertTrue(fds.isEmpty());
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void sendRefusesMoreThanEightFds() throws IOException {
    List<EventFd> eventFds = closingAll(new ArrayList<>());
    for (int i = 0; i < 9; i++) eventFds.add(EventFd.create());
    Fd[] nine = eventFds.stream().map(EventFd::fd).toArray(Fd[]::new);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> client.send(text("x"), nine));
    assertTrue(e.getMessage().contains("9"), e.getMessage());
    assertTrue(e.getMessage().contains("8"), e.getMessage());

    // Nothing was sent.
    SocketTesting.setNonBlocking(server.fd());
    assertEquals(Libc.WOULD_BLOCK, server.receive(arena.allocate(1), new ArrayList<>()));
    for (EventFd e2 : eventFds) assertTrue(e2.fd().isOpen(), "send must not close the caller's");
  }

  @Test
  void sendRefusesFdsWithoutABytetoCarryThem() throws IOException {
    // A stream socket sends no fds without data: they would be dropped without a word.
    EventFd e = closing(EventFd.create());
    assertThrows(IllegalArgumentException.class, () -> client.send(arena.allocate(0), e.fd()));
    client.send(arena.allocate(0)); // no fds, no bytes: nothing to do
  }

  @Test
  void endOfStreamAtAMessageBoundary() throws IOException {
    client.send(text("last words"));
    client.close();

    List<Fd> fds = new ArrayList<>();
    MemorySegment into = arena.allocate(10);
    assertTrue(server.receiveFully(into, fds));
    assertEquals("last words", text(into));
    assertEquals(0, server.receive(arena.allocate(16), fds));
    assertFalse(server.receiveFully(arena.allocate(12), fds));
    assertFalse(server.receiveFully(arena.allocate(12), fds), "end of stream stays end of stream");
    assertTrue(fds.isEmpty());
  }

  @Test
  void peerClosingMidMessageIsAnError() throws IOException {
    client.send(text("12345"));
    client.close();
    IOException e =
        assertThrows(
            IOException.class, () -> server.receiveFully(arena.allocate(12), new ArrayList<>()));
    assertTrue(e.getMessage().contains("mid-message"), e.getMessage());
    assertTrue(e.getMessage().contains("5 of 12"), e.getMessage());
  }

  @Test
  void receiveOnANonBlockingSocketWithNothingToRead() throws IOException {
    SocketTesting.setNonBlocking(server.fd());
    List<Fd> fds = new ArrayList<>();
    assertEquals(Libc.WOULD_BLOCK, server.receive(arena.allocate(8), fds));
    IOException e =
        assertThrows(IOException.class, () -> server.receiveFully(arena.allocate(8), fds));
    assertTrue(e.getMessage().contains("non-blocking"), e.getMessage());

    client.send(text("now"));
    MemorySegment into = arena.allocate(8);
    assertEquals(3, server.receive(into, fds));
    assertEquals("now", text(into.asSlice(0, 3)));
    assertEquals(Libc.WOULD_BLOCK, server.receive(into, fds));
  }

  @Test
  void sendToAClosedPeerThrowsEpipeInsteadOfKillingTheProcess() throws IOException {
    server.close();
    for (int attempt = 0; attempt < 2; attempt++) {
      IOException e = assertThrows(IOException.class, () -> client.send(text("anyone?")));
      NativeException n = assertInstanceOf(NativeException.class, e);
      assertEquals(SocketTesting.EPIPE, n.errno(), n.getMessage());
      assertTrue(n.getMessage().contains("EPIPE"), n.getMessage());
    }
    EventFd fd = closing(EventFd.create());
    assertThrows(IOException.class, () -> client.send(text("with fd"), fd.fd()));
    assertTrue(fd.fd().isOpen());
  }

  @Test
  void aLargePayloadIsSentCompletelyWhileThePeerReads() throws Exception {
    byte[] payload = new byte[1 << 20];
    new Random(42).nextBytes(payload);
    EventFd attached = closing(EventFd.create());

    CompletableFuture<byte[]> read =
        CompletableFuture.supplyAsync(
            () -> {
              try (Arena local = Arena.ofConfined()) {
                MemorySegment all = local.allocate(payload.length);
                List<Fd> fds = new ArrayList<>();
                long got = 0;
                int step = 7919; // odd-sized reads, so parts never line up with the writes
                while (got < payload.length) {
                  long n = Math.min(step, payload.length - got);
                  assertTrue(server.receiveFully(all.asSlice(got, n), fds));
                  if (got == 0) assertEquals(1, fds.size(), "the fd comes with the first byte");
                  got += n;
                }
                assertEquals(1, fds.size(), "the fd must arrive exactly once");
                fds.forEach(Fd::close);
                return bytes(all);
              } catch (IOException e) {
                throw new RuntimeException(e);
              }
            });

    assertTimeoutPreemptively(
        Duration.ofSeconds(10), () -> client.send(segment(arena, payload), attached.fd()));
    byte[] received = read.get(10, TimeUnit.SECONDS);
    assertTrue(Arrays.equals(payload, received), "the payload arrived changed");
  }

  @Test
  void shortWritesAreContinuedFromWhereTheyStopped() throws Exception {
    // A send timeout makes the kernel return a short count once it has taken some bytes and the
    // peer does not read in time, so the first sendmsg is short and send must go on with the rest,
    // without the fd. The timeout is taken when a write starts to wait: once the first sendmsg
    // waits, the peer turns it off, so that the next sendmsg waits for as long as it takes the peer
    // to read (a second timeout with nothing taken would be a failure of send, not of the test).
    long probeMillis = 300;
    SocketTesting.setInt(client.fd(), SocketTesting.SO_SNDBUF, 16 * 1024);

    // The setup produces short writes: with nobody reading, one sendmsg takes only part of 1 MiB.
    try (UnixSocket probeClient = UnixSocket.connect(listener.path());
        UnixSocket probeServer = listener.accept()) {
      SocketTesting.setInt(probeClient.fd(), SocketTesting.SO_SNDBUF, 16 * 1024);
      SocketTesting.setSendTimeout(probeClient.fd(), probeMillis);
      assertTrue(probeServer != null);
      long n = SocketTesting.rawSend(probeClient.fd().value(), new byte[1 << 20]);
      assertTrue(n > 0 && n < 1 << 20, "expected a short write, got " + n);
    }

    long timeoutMillis = 1000;
    SocketTesting.setSendTimeout(client.fd(), timeoutMillis);
    int sendBuffer = SocketTesting.getInt(client.fd(), SocketTesting.SO_SNDBUF);
    byte[] payload = new byte[1 << 20];
    new Random(7).nextBytes(payload);
    EventFd attached = closing(EventFd.create());
    CountDownLatch watching = new CountDownLatch(1);
    CompletableFuture<byte[]> read =
        CompletableFuture.supplyAsync(
            () -> {
              try (Arena local = Arena.ofConfined()) {
                watching.countDown();
                // The first sendmsg has filled the socket's buffer: its next piece waits.
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (SocketTesting.unsent(client.fd()) < sendBuffer) {
                  assertTrue(System.nanoTime() < deadline, "the buffer never filled");
                  Thread.sleep(1);
                }
                long full = System.nanoTime();
                Thread.sleep(20); // had the wait not begun yet, it would simply not time out
                SocketTesting.setSendTimeout(client.fd(), 0);
                // Read after the first timeout; how much later does not matter any more.
                long firstTimedOut = full + TimeUnit.MILLISECONDS.toNanos(timeoutMillis * 3 / 2);
                long left = firstTimedOut - System.nanoTime();
                if (left > 0) Thread.sleep(Duration.ofNanos(left));

                MemorySegment all = local.allocate(payload.length);
                List<Fd> fds = new ArrayList<>();
                assertTrue(server.receiveFully(all, fds));
                assertEquals(1, fds.size(), "the fd must arrive exactly once");
                EventFd.adopt(fds.getFirst()).signal();
                fds.forEach(Fd::close);
                return bytes(all);
              } catch (IOException | InterruptedException e) {
                throw new RuntimeException(e);
              }
            });
    assertTrue(watching.await(20, TimeUnit.SECONDS), "the reader did not start");
    client.send(segment(arena, payload), attached.fd());
    byte[] received = read.get(20, TimeUnit.SECONDS);
    assertTrue(Arrays.equals(payload, received), "the payload arrived changed");
    assertEquals(1, attached.drain());
  }

  @Test
  void shutdownWakesABlockedReceiver() throws Exception {
    FutureTask<Long> blocked =
        new FutureTask<>(
            () -> {
              try (Arena local = Arena.ofConfined()) {
                return server.receive(local.allocate(8), new ArrayList<>());
              }
            });
    Thread receiver = BlockedThreads.start(blocked);
    // Shut down only once it sleeps in recvmsg(2): a receiver that came after would return at once.
    BlockedThreads.awaitBlocked(
        receiver, Syscall.RECVMSG, server.fd().value(), Duration.ofSeconds(10));
    server.shutdown();
    assertEquals(0L, blocked.get(10, TimeUnit.SECONDS));
    server.shutdown(); // again: harmless
    server.close(); // the receiver has returned: close frees the fd and the buffers
    assertFalse(server.fd().isOpen());
  }

  @Test
  void closeReleasesTheFdAndIsIdempotent() throws IOException {
    int baseline = OpenFds.count();
    UnixSocket extra = UnixSocket.connect(listener.path());
    UnixSocket accepted = listener.accept();
    int number = extra.fd().value();
    extra.close();
    accepted.close();
    assertFalse(TestSyscalls.isOpen(number));
    OpenFds.assertBackTo(baseline);
    extra.close(); // a second close (as try-with-resources after an explicit close) is harmless
    accepted.close();
    extra.shutdown();
    assertThrows(Exception.class, () -> extra.send(text("after close")));
  }
}
