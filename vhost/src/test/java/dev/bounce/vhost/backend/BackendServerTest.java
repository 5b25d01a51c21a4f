package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.testdevice.EchoDevice;
import io.netty.buffer.Unpooled;
import io.netty.channel.IoEventLoop;
import io.netty.util.ResourceLeakDetector;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The listener outlives whatever its frontends, or a session's start, throw at it. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class BackendServerTest {
  private static final Duration CLOSED = Duration.ofSeconds(10);

  @TempDir Path dir;

  @Test
  void aSessionThatCannotStartLeavesTheListenerAccepting() throws Exception {
    // A queue size that is no power of two: every session's start throws. Each frontend is
    // turned away with a line saying why, and the next one is still accepted. Every buffer is
    // tracked meanwhile: one a failed start left unreleased is reported (as a SEVERE line) once
    // it has been collected and the next buffer is allocated.
    ResourceLeakDetector.Level level = ResourceLeakDetector.getLevel();
    ResourceLeakDetector.setLevel(ResourceLeakDetector.Level.PARANOID);
    try (BackendFixture backend =
        BackendFixture.listen(dir.resolve("bad-device.sock"), new EchoDevice(2, 3))) {
      for (int i = 0; i < 3; i++) {
        try (FrontendChannel channel = FrontendChannel.connect(backend.path)) {
          assertTrue(channel.isClosedByPeer(CLOSED), "frontend " + i + " turned away");
        }
      }
      // The line comes just after the close the frontend saw.
      long deadline = System.nanoTime() + CLOSED.toNanos();
      while (turnedAwayLines(backend) < 3 && System.nanoTime() < deadline) Thread.sleep(10);
      assertEquals(3, turnedAwayLines(backend));
      assertEquals(List.of(), backend.loopFailures(), "exceptions that escaped into a loop");
      for (int i = 0; i < 3; i++) {
        System.gc();
        Thread.sleep(50);
        Unpooled.directBuffer(1).release(); // a tracked allocation reports what leaked before it
      }
      assertEquals(
          List.of(),
          backend.warnings().stream().filter(l -> l.contains("LEAK")).toList(),
          "buffers a failed session start did not release");
    } finally {
      ResourceLeakDetector.setLevel(level);
    }
  }

  @Test
  void inClientModeAFrontendThatDoesNotAcceptCannotHoldTheControlLoop() throws Exception {
    Path path = dir.resolve("not-accepting.sock");
    try (EventLoops loops = new EventLoops(2, "client-mode")) {
      UnixListener frontend = UnixListener.bind(path, false);
      List<SocketChannel> crowd = new ArrayList<>();
      try {
        boolean full = false;
        for (int i = 0; i < 1000 && !full; i++) {
          SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
          ch.configureBlocking(false);
          try {
            ch.connect(UnixDomainSocketAddress.of(path));
            crowd.add(ch);
          } catch (IOException backlogFull) {
            ch.close();
            full = true;
          }
        }
        assertTrue(full, "the listener's backlog never filled");
        IoEventLoop control = loops.next();
        BackendServer server =
            BackendServer.connect(
                path,
                new BackendServer.Config(
                    "client",
                    new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE),
                    control,
                    loops.next()));
        Thread.sleep(200); // its first connect has been tried
        control.submit(() -> {}).get(CLOSED.toSeconds(), TimeUnit.SECONDS);
        server.close();
      } finally {
        // Before the loops: a connect still blocked in the listener's backlog then fails, and the
        // loops can close.
        for (SocketChannel ch : crowd) ch.close();
        frontend.close();
      }
    }
  }

  @Test
  void aFrontendReconnectingInALoopCannotFloodTheLog() throws Exception {
    try (BackendFixture backend =
        BackendFixture.listen(
            dir.resolve("reconnecting.sock"),
            new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE))) {
      for (int i = 0; i < 100; i++) {
        try (FrontendChannel channel = FrontendChannel.connect(backend.path)) {
          channel.getU64(FrontendRequest.GET_FEATURES); // served, so a session of its own
        }
      }
      long deadline = System.nanoTime() + CLOSED.toNanos();
      while (backend.server.session() != null && System.nanoTime() < deadline) Thread.sleep(10);
      // 100 sessions, each answered: 200 lines of their comings and goings, of which the first
      // 20 of the minute are logged.
      List<String> lines = backend.infos();
      long connected = lines.stream().filter(l -> l.contains("frontend connected")).count();
      long gone = lines.stream().filter(l -> l.contains("disconnected")).count();
      assertEquals(20, connected + gone, connected + " connected and " + gone + " gone lines");
    }
  }

  private static long turnedAwayLines(BackendFixture backend) {
    return backend.warnings().stream()
        .filter(l -> l.contains("could not serve the frontend that connected"))
        .count();
  }

  @Test
  void frontendsCrowdingInCannotFloodTheLog() throws Exception {
    try (BackendFixture backend =
            BackendFixture.listen(
                dir.resolve("crowded.sock"),
                new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE));
        FrontendChannel served = FrontendChannel.connect(backend.path)) {
      served.getU64(FrontendRequest.GET_FEATURES);
      List<FrontendChannel> turnedAway = new ArrayList<>();
      try {
        for (int i = 0; i < 1000; i++) turnedAway.add(FrontendChannel.connect(backend.path));
        for (FrontendChannel c : turnedAway) assertTrue(c.isClosedByPeer(CLOSED));
      } finally {
        turnedAway.forEach(FrontendChannel::close);
      }
      List<String> lines =
          backend.warnings().stream().filter(l -> l.contains("a second frontend")).toList();
      assertEquals(21, lines.size(), "the first 20, then the 1000th");
      served.getU64(FrontendRequest.GET_FEATURES); // the first one is still served
    }
  }
}
