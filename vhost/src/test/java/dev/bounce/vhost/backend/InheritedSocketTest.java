package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.socket.UnixSocket;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link BackendServer#inherit}: the vhost-user socket handed over as an fd (vhost-user.rst,
 * "Backend program conventions", {@code --fd}), a listening one or a connected one, and a number
 * that is neither.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class InheritedSocketTest {
  @TempDir Path dir;
  private EventLoops loops;
  private BackendServer.Config config;

  @BeforeEach
  void loops() {
    loops = new EventLoops(2, "inherit-test");
    config =
        new BackendServer.Config(
            "inherited",
            new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE),
            loops.next(),
            loops.next());
  }

  @AfterEach
  void close() {
    loops.close();
  }

  @Test
  void aListeningSocketServesOneFrontendAfterAnother() throws Exception {
    Path path = dir.resolve("listening.sock");
    UnixListener listener = UnixListener.bind(path, false);
    int number = inheritedAsFromAnExec(listener.fd().release());
    try (BackendServer server = BackendServer.inherit(number, config)) {
      assertTrue(closeOnExec(number), "bounce's now: not for the programs it may start");
      for (int boot = 0; boot < 2; boot++) {
        try (TestFrontend frontend = new TestFrontend(FrontendChannel.connect(path))) {
          frontend.handshake().echo(0);
        }
        awaitNoSession(server);
      }
      assertFalse(server.finished().isDone(), "a listening socket serves on");
    }
  }

  @Test
  void aConnectedSocketServesItsFrontendAndFinishesWhenItLeaves() throws Exception {
    try (TestFrontend frontend = new TestFrontend(connectedPair());
        BackendServer server = BackendServer.inherit(inheritedAsFromAnExec(inherited), config)) {
      assertTrue(closeOnExec(inherited), "bounce's now: not for the programs it may start");
      frontend.handshake().echo(1);
      frontend.channel.close();
      server.finished().get(TestFrontend.TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
      assertNull(server.failure(), "the frontend left: no failure");
    }
  }

  @Test
  void aConnectedSocketWhoseFrontendBreaksTheProtocolFinishesWithTheReason() throws Exception {
    try (FrontendChannel frontend = connectedPair();
        BackendServer server = BackendServer.inherit(inherited, config)) {
      // GET_FEATURES without the version bit, and no reply asked for: the connection ends.
      frontend.sendRaw(BadInputTest.header(FrontendRequest.GET_FEATURES.code(), 0x0, 0));
      server.finished().get(TestFrontend.TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
      assertTrue(server.failure() != null && !server.failure().isBlank(), server.failure());
    }
  }

  @Test
  void aNumberThatIsNoStreamSocketIsRefusedAndLeftOpen() throws Exception {
    try (EventFd notASocket = EventFd.create()) {
      int number = notASocket.fd().value();
      IOException e = assertThrows(IOException.class, () -> BackendServer.inherit(number, config));
      assertTrue(e.getMessage().contains("fd " + number + " is not a socket"), e.getMessage());
      Libc.fcntl(number, Libc.F_GETFD, 0); // still open: it may have been the JVM's
    }
  }

  @Test
  void aNumberThatIsNotOpenIsRefusedSayingSo() {
    int number = Integer.MAX_VALUE - 1; // beyond any fd limit: never open
    IOException e = assertThrows(IOException.class, () -> BackendServer.inherit(number, config));
    assertEquals("fd " + number + " is not open in this process", e.getMessage());
  }

  /** {@code fd} as a parent hands it over (systemd, a management layer): not close-on-exec. */
  private static int inheritedAsFromAnExec(int fd) throws NativeException {
    Libc.fcntl(fd, Libc.F_SETFD, 0);
    assertFalse(closeOnExec(fd));
    return fd;
  }

  private static boolean closeOnExec(int fd) throws NativeException {
    return (Libc.fcntl(fd, Libc.F_GETFD, 0) & Libc.FD_CLOEXEC) != 0;
  }

  /** The backend's end of a connected pair, for {@link BackendServer#inherit}. */
  private int inherited;

  /** A connected pair: the frontend's end returned, the backend's in {@link #inherited}. */
  private FrontendChannel connectedPair() throws IOException {
    Path path = dir.resolve("pair.sock");
    try (UnixListener listener = UnixListener.bind(path, false)) {
      FrontendChannel frontend = FrontendChannel.connect(path);
      try (UnixSocket backend = listener.accept()) {
        inherited = backend.fd().release(); // closing the wrapper then leaves the fd open
      }
      return frontend;
    }
  }

  private static void awaitNoSession(BackendServer server) throws InterruptedException {
    long deadline = System.nanoTime() + TestFrontend.TIMEOUT.toNanos();
    while (server.session() != null) {
      assertTrue(System.nanoTime() < deadline, "the session did not end");
      Thread.sleep(5);
    }
  }
}
