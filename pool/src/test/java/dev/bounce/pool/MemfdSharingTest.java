package dev.bounce.pool;

import static dev.bounce.pool.MemfdSharingChild.CHILD;
import static dev.bounce.pool.MemfdSharingChild.PARENT_FIRST;
import static dev.bounce.pool.MemfdSharingChild.PARENT_SECOND;
import static dev.bounce.pool.MemfdSharingChild.fill;
import static dev.bounce.pool.MemfdSharingChild.firstMismatch;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.testing.ChildJvm;
import dev.bounce.pool.testing.JnrFdPassing;
import dev.bounce.pool.testing.OpenFds;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import jnr.unixsocket.UnixServerSocketChannel;
import jnr.unixsocket.UnixSocketAddress;
import jnr.unixsocket.UnixSocketChannel;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A memfd created here and sent to another process over a real AF_UNIX socket (SCM_RIGHTS through
 * jnr-posix, not bounce's code) is the same memory on both sides: what one writes through its
 * {@link Mapping}, the other reads through its own.
 */
class MemfdSharingTest {
  private static final Duration TIMEOUT = Duration.ofSeconds(30);

  @Test
  @DisplayName("a memfd sent with SCM_RIGHTS to a child JVM: each side sees the other's writes")
  void memfdIsSharedBothWaysWithAChildJvm(@TempDir Path dir) throws Exception {
    String name = "bounce-share-" + ProcessHandle.current().pid() + "-" + System.nanoTime();
    long size = 1 << 20;
    Path socketPath = dir.resolve("share.sock");
    int fdsBefore = OpenFds.count();
    long mappingsBefore = Mapping.liveCount();
    long deadline = System.nanoTime() + TIMEOUT.toNanos();

    try (Memfd memfd = Memfd.create(name, size);
        Mapping mapping = memfd.map(0, size);
        UnixServerSocketChannel server = UnixServerSocketChannel.open()) {
      server.socket().bind(new UnixSocketAddress(socketPath.toFile()));
      server.configureBlocking(false);
      fill(mapping.segment(), PARENT_FIRST);

      try (ChildJvm child = ChildJvm.start(MemfdSharingChild.class, socketPath.toString());
          UnixSocketChannel channel = accept(server, child, deadline)) {
        channel.configureBlocking(false);
        JnrFdPassing.send(
            channel, ByteBuffer.allocate(Long.BYTES).putLong(size).array(), memfd.fd().value());

        expectByte(channel, 'W', child, deadline);
        assertEquals(
            -1,
            firstMismatch(mapping.segment(), CHILD),
            () -> "the child's write is not visible here; " + child.describe());

        fill(mapping.segment(), PARENT_SECOND);
        channel.write(ByteBuffer.wrap(new byte[] {'P'}));
        expectByte(channel, 'V', child, deadline);

        assertEquals(0, child.waitFor(TIMEOUT), child::describe);
        assertTrue(
            child.stdout().contains("-> /memfd:" + name + " (deleted)"),
            () -> "the child did not receive this memfd; " + child.describe());
      }
      // The fd stays ours: sending it gave the child its own copy.
      assertTrue(memfd.fd().isOpen());
    }
    OpenFds.assertBackTo(fdsBefore);
    assertEquals(mappingsBefore, Mapping.liveCount());
  }

  private static UnixSocketChannel accept(
      UnixServerSocketChannel server, ChildJvm child, long deadline) throws Exception {
    while (true) {
      UnixSocketChannel channel = server.accept();
      if (channel != null) return channel;
      if (!child.isAlive())
        throw new AssertionError("child exited before connecting; " + child.describe());
      if (System.nanoTime() - deadline > 0) {
        throw new AssertionError("child did not connect in time; " + child.describe());
      }
      Thread.sleep(5);
    }
  }

  /** Reads one byte from a non-blocking channel, failing if the child dies or time runs out. */
  private static void expectByte(
      UnixSocketChannel channel, char expected, ChildJvm child, long deadline) throws Exception {
    ByteBuffer b = ByteBuffer.allocate(1);
    while (b.hasRemaining()) {
      int n = channel.read(b);
      if (n < 0) {
        child.waitFor(TIMEOUT);
        throw new AssertionError(
            "child closed the socket before '" + expected + "'; " + child.describe());
      }
      if (n == 0) {
        if (System.nanoTime() - deadline > 0) {
          throw new AssertionError(
              "no '" + expected + "' from the child in time; " + child.describe());
        }
        Thread.sleep(2);
      }
    }
    assertEquals((byte) expected, b.get(0), child::describe);
  }
}
