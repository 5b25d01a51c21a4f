package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.testing.OpenFds;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.ProtocolException;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.socket.UnixSocket;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.SocketTimeoutException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The frontend channel (jnr) against a peer built on the backend's own FFM socket layer: the two
 * fd-passing implementations meet in both directions. Timeouts, end of stream, bad replies and
 * excess fds are reported clearly and leak nothing.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class FrontendChannelTest {
  private static final Duration SHORT = Duration.ofMillis(150);

  /** How long to wait for a connection that must come: the wait ends when it does. */
  private static final Duration WAIT = Duration.ofSeconds(20);

  /** A call that may fail with an IOException. */
  @FunctionalInterface
  private interface Attempt<T> {
    T run() throws IOException;
  }

  /**
   * Runs {@code connect} until it succeeds: the other side binds and listens at the path on its own
   * thread, and until it has, connecting fails (no such file, or refused between bind and listen).
   */
  private static <T> T onceListening(Attempt<T> connect) throws InterruptedException {
    long deadline = System.nanoTime() + WAIT.toNanos();
    while (true) {
      try {
        return connect.run();
      } catch (IOException notYet) {
        if (System.nanoTime() - deadline > 0) throw new RuntimeException(notYet);
        Thread.sleep(10);
      }
    }
  }

  @TempDir Path dir;

  /** A connected pair: our frontend channel and the peer's FFM socket. */
  private record Pair(FrontendChannel frontend, UnixSocket peer) implements AutoCloseable {
    void reply(byte[] bytes, Fd... fds) throws IOException {
      peer.send(offHeap(bytes), fds);
    }

    @Override
    public void close() {
      frontend.close();
      peer.close();
    }
  }

  private Pair connect() throws IOException {
    try (UnixListener listener = UnixListener.bind(dir.resolve("peer.sock"), false)) {
      FrontendChannel frontend = FrontendChannel.connect(listener.path());
      return new Pair(frontend, listener.accept());
    }
  }

  /** The FFM socket passes native memory only. */
  private static MemorySegment offHeap(byte[] bytes) {
    MemorySegment segment = Arena.ofAuto().allocate(Math.max(1, bytes.length));
    MemorySegment.copy(MemorySegment.ofArray(bytes), 0, segment, 0, bytes.length);
    return segment.asSlice(0, bytes.length);
  }

  private static byte[] u64Reply(int code, int flags, long value) {
    return BadInputTest.concat(BadInputTest.header(code, flags, 8), BadInputTest.u64(value));
  }

  @Test
  void fdsTravelBothWaysBetweenJnrAndFfm() throws Exception {
    int baseline = OpenFds.count();
    try (Pair pair = connect();
        EventFd ours = EventFd.create()) {
      pair.frontend()
          .send(FrontendRequest.SET_VRING_CALL, new VringFdIndex(3, false), true, ours.fd());
      MemorySegment into = offHeap(new byte[20]);
      List<Fd> received = new ArrayList<>();
      assertTrue(pair.peer().receiveFully(into, received));
      assertEquals(1, received.size());
      EventFd theirs = EventFd.adopt(received.getFirst());
      theirs.signal();
      theirs.close();
      assertEquals(1, ours.drain(), "the peer's fd is our eventfd");
      // A reply that carries an fd (POSTCOPY_ADVISE's userfaultfd): the message owns it.
      try (EventFd sent = EventFd.create()) {
        pair.reply(BadInputTest.header(FrontendRequest.POSTCOPY_ADVISE.code(), 0x5, 0), sent.fd());
        try (Message<FrontendRequest> reply =
            pair.frontend().receiveReply(FrontendRequest.POSTCOPY_ADVISE, SHORT)) {
          assertEquals(1, reply.fds().size());
          EventFd.adopt(reply.takeFd(0)).close();
        }
      }
    }
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void noReplyIsATimeoutAndTheChannelGoesOn() throws Exception {
    try (Pair pair = connect()) {
      long start = System.nanoTime();
      assertThrows(
          SocketTimeoutException.class,
          () -> pair.frontend().receiveReply(FrontendRequest.GET_FEATURES, SHORT));
      assertTrue(System.nanoTime() - start >= SHORT.toNanos(), "waited the whole timeout");
      assertFalse(pair.frontend().awaitInput(SHORT));
      pair.reply(u64Reply(FrontendRequest.GET_FEATURES.code(), 0x5, 0x1234));
      assertTrue(pair.frontend().awaitInput(SHORT));
      assertFalse(pair.frontend().isClosedByPeer(SHORT), "data pending is not a close");
      try (Message<FrontendRequest> reply =
          pair.frontend().receiveReply(FrontendRequest.GET_FEATURES, SHORT)) {
        assertEquals(0x1234, reply.payload(U64.class).value());
      }
    }
  }

  @Test
  void aReplyCutOffByTheTimeoutLeavesTheChannelUnusable() throws Exception {
    try (Pair pair = connect()) {
      byte[] reply = u64Reply(FrontendRequest.GET_FEATURES.code(), 0x5, 1);
      pair.reply(java.util.Arrays.copyOf(reply, 15));
      assertThrows(
          SocketTimeoutException.class,
          () -> pair.frontend().receiveReply(FrontendRequest.GET_FEATURES, SHORT));
      IOException later =
          assertThrows(
              IOException.class,
              () -> pair.frontend().receiveReply(FrontendRequest.GET_FEATURES, SHORT));
      assertTrue(later.getMessage().contains("lost its message boundaries"), later.getMessage());
    }
  }

  @Test
  void badRepliesAreRefusedWithTheirFdsClosed() throws Exception {
    int baseline = OpenFds.count();
    try (Pair pair = connect();
        EventFd stray = EventFd.create()) {
      // flags 0x9 instead of 0x5 (QEMU's "Flags 0x9 instead of 0x5"), with a stray fd
      pair.reply(u64Reply(FrontendRequest.SET_STATUS.code(), 0x9, 0), stray.fd());
      IOException flags =
          assertThrows(
              IOException.class,
              () -> pair.frontend().receiveReply(FrontendRequest.SET_STATUS, SHORT));
      assertInstanceOf(ProtocolException.class, flags.getCause(), flags.toString());
      // another request's code
      pair.reply(u64Reply(FrontendRequest.GET_STATUS.code(), 0x5, 0));
      assertThrows(
          IOException.class, () -> pair.frontend().receiveReply(FrontendRequest.SET_STATUS, SHORT));
      // the channel is still in step: a good reply is read
      pair.reply(u64Reply(FrontendRequest.SET_STATUS.code(), 0x5, 0));
      pair.frontend().receiveReply(FrontendRequest.SET_STATUS, SHORT).close();
      // a failure status is a Refused
      pair.reply(u64Reply(FrontendRequest.SET_STATUS.code(), 0x5, 7));
      FrontendChannel.Refused refused =
          assertThrows(
              FrontendChannel.Refused.class,
              () -> pair.frontend().ack(FrontendRequest.SET_STATUS, new U64(8)));
      assertEquals(7, refused.status());
    }
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void moreFdsThanFitAreAllClosed() throws Exception {
    int baseline = OpenFds.count();
    Path path = dir.resolve("pair.sock");
    // The FFM socket will not send more than 8 fds; two jnr channels will.
    CompletableFuture<FrontendChannel> connecting =
        CompletableFuture.supplyAsync(
            () -> {
              try {
                Thread.sleep(50);
                return onceListening(() -> FrontendChannel.connect(path));
              } catch (InterruptedException e) {
                throw new RuntimeException(e);
              }
            });
    List<EventFd> fds = new ArrayList<>();
    try (FrontendChannel receiver = FrontendChannel.accept(path, WAIT);
        FrontendChannel sender = connecting.get(WAIT.toSeconds(), TimeUnit.SECONDS)) {
      for (int i = 0; i < 12; i++) fds.add(EventFd.create());
      sender.sendRaw(
          u64Reply(FrontendRequest.GET_FEATURES.code(), 0x5, 1),
          fds.stream().map(EventFd::fd).toArray(Fd[]::new));
      IOException e =
          assertThrows(
              IOException.class, () -> receiver.receiveReply(FrontendRequest.GET_FEATURES, SHORT));
      assertTrue(e.getMessage().contains("more than 8 fds"), e.getMessage());
    } finally {
      fds.forEach(EventFd::close);
    }
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void endOfStreamIsClosedByPeer() throws Exception {
    try (Pair pair = connect()) {
      pair.peer().close();
      assertTrue(pair.frontend().isClosedByPeer(WAIT));
      assertThrows(
          FrontendChannel.ClosedByPeer.class,
          () -> pair.frontend().receiveReply(FrontendRequest.GET_FEATURES, SHORT));
      assertThrows(
          FrontendChannel.ClosedByPeer.class,
          () -> {
            for (int i = 0; i < 100; i++) pair.frontend().send(FrontendRequest.GET_FEATURES, false);
          });
    }
  }

  @Test
  void wrongFdCountsAreTheCallersBug() throws Exception {
    try (Pair pair = connect();
        EventFd fd = EventFd.create()) {
      assertThrows(
          IllegalArgumentException.class,
          () ->
              pair.frontend()
                  .send(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), false));
      assertThrows(
          IllegalArgumentException.class,
          () -> pair.frontend().send(FrontendRequest.GET_FEATURES, new U64(0), false));
      assertThrows(
          IllegalArgumentException.class,
          () ->
              pair.frontend()
                  .send(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, true), false, fd.fd()));
      assertThrows(
          IllegalArgumentException.class, () -> pair.frontend().sendRaw(new byte[0], fd.fd()));
    }
  }

  @Test
  void acceptWaitsForABackendThenStopsListening() throws Exception {
    int baseline = OpenFds.count();
    Path path = dir.resolve("frontend.sock");
    CompletableFuture<UnixSocket> backend =
        CompletableFuture.supplyAsync(
            () -> {
              try {
                Thread.sleep(100);
                return onceListening(() -> UnixSocket.connect(path));
              } catch (InterruptedException e) {
                throw new RuntimeException(e);
              }
            });
    try (FrontendChannel frontend = FrontendChannel.accept(path, WAIT);
        UnixSocket peer = backend.get(WAIT.toSeconds(), TimeUnit.SECONDS)) {
      assertFalse(Files.exists(path), "the socket file is gone once a backend is accepted");
      peer.send(offHeap(u64Reply(FrontendRequest.GET_QUEUE_NUM.code(), 0x5, 2)));
      frontend.send(FrontendRequest.GET_QUEUE_NUM, false);
      try (Message<FrontendRequest> reply =
          frontend.receiveReply(FrontendRequest.GET_QUEUE_NUM, SHORT)) {
        assertEquals(2, reply.payload(U64.class).value());
      }
    }
    // Nobody comes: a timeout, and no socket file left behind.
    assertThrows(SocketTimeoutException.class, () -> FrontendChannel.accept(path, SHORT));
    assertFalse(Files.exists(path));
    // A stale socket file (its listener gone without removing it) is replaced.
    jnr.unixsocket.UnixServerSocketChannel stale = jnr.unixsocket.UnixServerSocketChannel.open();
    stale.socket().bind(new jnr.unixsocket.UnixSocketAddress(path.toFile()));
    stale.close();
    assertTrue(Files.exists(path), "a stale socket file");
    assertThrows(SocketTimeoutException.class, () -> FrontendChannel.accept(path, SHORT));
    assertFalse(Files.exists(path));
    // A live listener's path is refused, and its socket file stays.
    try (UnixListener live = UnixListener.bind(dir.resolve("live.sock"), false)) {
      IOException e =
          assertThrows(IOException.class, () -> FrontendChannel.accept(live.path(), SHORT));
      assertTrue(e.getMessage().contains("another process is listening"), e.getMessage());
      assertTrue(Files.exists(live.path()));
      live.accept().close(); // the probe's connection
    }
    OpenFds.assertBackTo(baseline);
  }
}
