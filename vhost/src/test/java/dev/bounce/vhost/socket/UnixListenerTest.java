package dev.bounce.vhost.socket;

import static dev.bounce.vhost.socket.SocketTesting.bytes;
import static dev.bounce.vhost.socket.SocketTesting.fileKey;
import static dev.bounce.vhost.socket.SocketTesting.isSocketFile;
import static dev.bounce.vhost.socket.SocketTesting.segment;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.testing.OpenFds;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

// A hang (a receive that never sees end of stream, a connect that never returns) fails the test.
@Timeout(value = 15, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class UnixListenerTest {
  @TempDir Path dir;

  private final Arena arena = Arena.ofShared();
  private final List<AutoCloseable> toClose = new ArrayList<>();

  @AfterEach
  void closeAll() throws Exception {
    for (AutoCloseable c : toClose.reversed()) c.close();
    arena.close();
  }

  private <T extends AutoCloseable> T closing(T resource) {
    toClose.add(resource);
    return resource;
  }

  /**
   * Connects to {@code listener}'s path, sends {@code text}, and checks the accepted end gets it.
   */
  private void assertServes(UnixListener listener, String text) throws IOException {
    UnixSocket client = closing(UnixSocket.connect(listener.path()));
    byte[] sent = text.getBytes(StandardCharsets.UTF_8);
    client.send(segment(arena, sent));
    UnixSocket server = closing(listener.accept());
    assertNotNull(server, "accept returned no connection");
    MemorySegment into = arena.allocate(sent.length);
    assertTrue(server.receiveFully(into, new ArrayList<>()));
    assertArrayEquals(sent, bytes(into));
  }

  @Test
  void bindsAFreshPathAndAcceptsConnections() throws IOException {
    Path path = dir.resolve("fresh.sock");
    UnixListener listener = closing(UnixListener.bind(path, false));
    assertEquals(path, listener.path());
    assertTrue(isSocketFile(path), "no socket file at " + path);
    assertServes(listener, "hello");
  }

  @Test
  void replacesAStaleSocketFile() throws IOException {
    Path path = dir.resolve("stale.sock");
    SocketTesting.leaveStaleSocketFile(path);
    assertTrue(isSocketFile(path), "the stale socket file should be there");
    int baseline = OpenFds.count();

    UnixListener listener = closing(UnixListener.bind(path, false));
    assertTrue(isSocketFile(path));
    assertServes(listener, "after the crash");
    toClose.forEach(
        c -> {
          try {
            c.close();
          } catch (Exception e) {
            throw new AssertionError(e);
          }
        });
    toClose.clear();
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void replacesTheSocketFileOfAListenerWhoseFdWasClosed() throws IOException {
    Path path = dir.resolve("dead.sock");
    UnixListener dead = UnixListener.bind(path, false);
    dead.fd().close(); // the process "died": the file stays, nobody listens
    assertTrue(isSocketFile(path));

    UnixListener listener = closing(UnixListener.bind(path, false));
    assertServes(listener, "second life");
  }

  @Test
  void refusesALiveListenerAndLeavesItWorking() throws IOException {
    Path path = dir.resolve("live.sock");
    UnixListener live = closing(UnixListener.bind(path, false));
    Object key = fileKey(path);
    int baseline = OpenFds.count();

    IOException e = assertThrows(IOException.class, () -> UnixListener.bind(path, false));
    assertTrue(e.getMessage().contains(path.toString()), "message should name the path: " + e);
    OpenFds.assertBackTo(baseline);
    assertTrue(isSocketFile(path), "the live listener's socket file was removed");
    assertEquals(key, fileKey(path), "the live listener's socket file was replaced");

    // The live listener still serves. The refused bind's liveness probe was a connection, so the
    // first accept may return it, already closed (end of stream); at most one such connection.
    UnixSocket client = closing(UnixSocket.connect(path));
    byte[] sent = "still here".getBytes(StandardCharsets.UTF_8);
    client.send(segment(arena, sent));
    MemorySegment into = arena.allocate(sent.length);
    int probes = 0;
    while (true) {
      UnixSocket server = closing(live.accept());
      if (server.receiveFully(into, new ArrayList<>())) break;
      probes++;
      assertTrue(probes <= 1, "more than one empty connection reached the live listener");
    }
    assertArrayEquals(sent, bytes(into));
  }

  @Test
  void refusesALiveListenerWhoseBacklogIsFullWithoutHanging() throws IOException {
    Path path = dir.resolve("busy.sock");
    UnixListener live = closing(UnixListener.bind(path, false));
    // Fill its backlog: nobody accepts, so non-blocking connects queue until the kernel says
    // EAGAIN.
    List<Fd> pending = new ArrayList<>();
    try {
      while (true) {
        Fd fd =
            Fd.adopt(
                SocketCalls.socket(
                    SocketCalls.SOCK_STREAM
                        | SocketCalls.SOCK_CLOEXEC
                        | SocketCalls.SOCK_NONBLOCK));
        pending.add(fd);
        try {
          assertEquals(0, SocketCalls.connect(fd.value(), path));
        } catch (NativeException e) {
          assertEquals(Libc.EAGAIN, e.errno(), e.getMessage());
          break;
        }
        assertTrue(pending.size() < 1000, "the backlog never filled");
      }

      IOException e =
          assertTimeoutPreemptively(
              Duration.ofSeconds(10),
              () -> assertThrows(IOException.class, () -> UnixListener.bind(path, false)),
              "binding next to a busy live listener hung");
      assertTrue(e.getMessage().contains(path.toString()), "message should name the path: " + e);
      assertTrue(isSocketFile(path), "the live listener's socket file was removed");
    } finally {
      pending.forEach(Fd::close);
    }
    // It still accepts (the queued connections first).
    assertNotNull(closing(live.accept()));
  }

  @Test
  void refusesARegularFileAndLeavesItAlone() throws IOException {
    Path path = dir.resolve("precious.txt");
    Files.writeString(path, "precious");
    int baseline = OpenFds.count();
    IOException e = assertThrows(IOException.class, () -> UnixListener.bind(path, false));
    assertTrue(e.getMessage().contains(path.toString()), "message should name the path: " + e);
    assertTrue(e.getMessage().contains("not a socket"), e.getMessage());
    assertEquals("precious", Files.readString(path));
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void refusesADirectoryAndASymlink() throws IOException {
    Path directory = Files.createDirectory(dir.resolve("a-directory"));
    assertThrows(IOException.class, () -> UnixListener.bind(directory, false));
    assertTrue(Files.isDirectory(directory));

    // A symlink to a stale socket is not ours to remove, even though its target would be.
    Path target = dir.resolve("target.sock");
    SocketTesting.leaveStaleSocketFile(target);
    Path link = Files.createSymbolicLink(dir.resolve("link.sock"), target);
    assertThrows(IOException.class, () -> UnixListener.bind(link, false));
    assertTrue(Files.isSymbolicLink(link));
    assertTrue(isSocketFile(target));
  }

  @Test
  void refusesAFifoAndLeavesItAlone() throws IOException {
    Path path = dir.resolve("a.fifo");
    SocketTesting.mkfifo(path);
    Object key = fileKey(path);
    IOException e = assertThrows(IOException.class, () -> UnixListener.bind(path, false));
    assertTrue(e.getMessage().contains(path.toString()), "message should name the path: " + e);
    assertTrue(Files.exists(path), "the FIFO was removed");
    assertEquals(key, fileKey(path), "the FIFO was replaced");
    assertFalse(isSocketFile(path));
  }

  /** A path under dir of exactly {@code length} bytes. */
  private Path pathOfLength(int length) {
    String prefix = dir.toString() + "/";
    int nameLength = length - prefix.getBytes(StandardCharsets.UTF_8).length;
    assertTrue(nameLength > 0 && nameLength < 255, "temp dir too long: " + dir);
    return Path.of(prefix + "s".repeat(nameLength));
  }

  @Test
  void acceptsAPathOf107BytesAndRefusesLongerOnesClearly() throws IOException {
    Path longest = pathOfLength(107);
    UnixListener listener = closing(UnixListener.bind(longest, false));
    assertServes(listener, "just fits");

    Path tooLong = pathOfLength(108);
    int baseline = OpenFds.count();
    Exception e = assertThrows(Exception.class, () -> UnixListener.bind(tooLong, false));
    assertTrue(
        e instanceof IOException || e instanceof IllegalArgumentException,
        "unexpected exception type: " + e);
    assertTrue(e.getMessage().contains(tooLong.toString()), "message should name the path: " + e);
    assertTrue(e.getMessage().contains("108 bytes"), "message should say how long: " + e);
    assertTrue(e.getMessage().contains("107"), "message should give the limit: " + e);
    assertFalse(Files.exists(tooLong));
    OpenFds.assertBackTo(baseline);

    Path wayTooLong = pathOfLength(200);
    assertThrows(Exception.class, () -> UnixListener.bind(wayTooLong, false));
    assertThrows(Exception.class, () -> UnixSocket.connect(wayTooLong));
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void closeRemovesTheSocketFileAndTheFd() throws IOException {
    Path path = dir.resolve("closing.sock");
    int baseline = OpenFds.count();
    UnixListener listener = UnixListener.bind(path, false);
    Fd fd = listener.fd();
    assertTrue(isSocketFile(path));
    listener.close();
    assertFalse(Files.exists(path), "close left the socket file");
    assertFalse(fd.isOpen());
    OpenFds.assertBackTo(baseline);
    listener.close(); // again: nothing to do, no exception
    IOException e = assertThrows(IOException.class, () -> UnixSocket.connect(path));
    assertTrue(e.getMessage().contains(path.toString()), e.getMessage());
  }

  @Test
  void closeLeavesARegularFileSomeoneElsePutThere() throws IOException {
    Path path = dir.resolve("replaced.sock");
    UnixListener listener = UnixListener.bind(path, false);
    Files.delete(path);
    Files.writeString(path, "not yours");
    listener.close();
    assertEquals("not yours", Files.readString(path));
  }

  @Test
  void closeLeavesAnotherListenersSocketFile() throws IOException {
    Path path = dir.resolve("taken-over.sock");
    UnixListener first = UnixListener.bind(path, false);
    Files.delete(path);
    UnixListener second = closing(UnixListener.bind(path, false));
    Object key = fileKey(path);
    first.close();
    assertTrue(isSocketFile(path), "the first listener's close removed the second's file");
    assertEquals(key, fileKey(path));
    assertServes(second, "mine now");
  }

  @Test
  void closeDoesNotMindAMissingFile() throws IOException {
    Path path = dir.resolve("gone.sock");
    UnixListener listener = UnixListener.bind(path, false);
    Files.delete(path);
    listener.close();
    assertFalse(listener.fd().isOpen());
  }

  @Test
  void nonBlockingAcceptReturnsNullWhenNobodyWaits() throws IOException {
    UnixListener listener = closing(UnixListener.bind(dir.resolve("nb.sock"), true));
    assertNull(listener.accept());
    assertNull(listener.accept());
    assertServes(listener, "now someone is here");
    assertNull(listener.accept());
  }

  @Test
  void blockingAcceptWaitsForAConnection() throws Exception {
    UnixListener listener = closing(UnixListener.bind(dir.resolve("b.sock"), false));
    Thread connector =
        Thread.ofPlatform()
            .start(
                () -> {
                  try {
                    Thread.sleep(100);
                    closing(UnixSocket.connect(listener.path()));
                  } catch (Exception e) {
                    fail(e);
                  }
                });
    UnixSocket accepted =
        assertTimeoutPreemptively(Duration.ofSeconds(10), () -> listener.accept());
    assertNotNull(accepted);
    accepted.close();
    connector.join();
  }

  @Test
  void connectingWhereNobodyListensNamesThePath() throws IOException {
    Path nothing = dir.resolve("nothing.sock");
    int baseline = OpenFds.count();
    IOException e = assertThrows(IOException.class, () -> UnixSocket.connect(nothing));
    assertTrue(e.getMessage().contains(nothing.toString()), e.getMessage());

    Path stale = dir.resolve("stale.sock");
    SocketTesting.leaveStaleSocketFile(stale);
    e = assertThrows(IOException.class, () -> UnixSocket.connect(stale));
    assertTrue(e.getMessage().contains(stale.toString()), e.getMessage());
    OpenFds.assertBackTo(baseline);
  }
}
