package dev.bounce.vhost.socket;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.testing.OpenFds;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** Many connections, on the good path and the error paths, leave the fd count where it was. */
// A hang (a receive that never sees end of stream, a connect that never returns) fails the test.
@Timeout(value = 15, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SocketFdLeakTest {
  @TempDir Path dir;

  @Test
  void thousandConnectAcceptSendWithFdCloseCyclesLeakNothing() throws IOException {
    try (Arena arena = Arena.ofConfined();
        UnixListener listener = UnixListener.bind(dir.resolve("leak.sock"), false)) {
      MemorySegment message = arena.allocate(12);
      MemorySegment into = arena.allocate(12);
      int baseline = OpenFds.count();
      for (int i = 0; i < 1000; i++) {
        message.fill((byte) i);
        try (UnixSocket client = UnixSocket.connect(listener.path());
            UnixSocket server = listener.accept();
            EventFd kick = EventFd.create()) {
          client.send(message, kick.fd());
          List<Fd> fds = new ArrayList<>();
          try {
            assertTrue(server.receiveFully(into, fds));
            assertEquals(1, fds.size());
            assertEquals((byte) i, into.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 11));
            EventFd.adopt(fds.getFirst()).signal();
            assertEquals(1, kick.drain());
          } finally {
            fds.forEach(Fd::close);
          }
        }
      }
      OpenFds.assertBackTo(baseline);
    }
  }

  @Test
  void refusedMessagesAndRefusedBindsLeakNothing() throws IOException {
    try (Arena arena = Arena.ofConfined();
        UnixListener listener = UnixListener.bind(dir.resolve("errors.sock"), true)) {
      List<Memfd> memfds = new ArrayList<>();
      try {
        for (int i = 0; i < 12; i++) memfds.add(Memfd.create("leak-" + i, Mapping.PAGE_SIZE));
        int[] twelve = memfds.stream().mapToInt(m -> m.fd().value()).toArray();
        MemorySegment into = arena.allocate(4);
        int baseline = OpenFds.count();
        for (int i = 0; i < 200; i++) {
          try (UnixSocket client = UnixSocket.connect(listener.path());
              UnixSocket server = listener.accept()) {
            SocketTesting.rawSend(client.fd().value(), new byte[4], twelve);
            assertThrows(IOException.class, () -> server.receive(into, new ArrayList<>()));
          }
          // A second listener at a live path is refused; its socket and its probe are closed.
          assertThrows(IOException.class, () -> UnixListener.bind(listener.path(), false));
          assertThrows(IOException.class, () -> UnixSocket.connect(dir.resolve("nobody.sock")));
          // The refused bind's probe is a connection the live listener sees: drain it.
          UnixSocket probe = listener.accept();
          if (probe != null) probe.close();
        }
        OpenFds.assertBackTo(baseline);
      } finally {
        memfds.forEach(Memfd::close);
      }
    }
  }
}
