package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.BackendRequest;
import dev.bounce.vhost.protocol.BackendRequests;
import dev.bounce.vhost.protocol.Empty;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.socket.SocketTesting;
import dev.bounce.vhost.testdevice.EchoDevice;
import io.netty.buffer.Unpooled;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS: where the frontend negotiated it with BACKEND_REQ,
 * VRING_KICK starts and kicks a ring, and a ring without a call (error) eventfd is answered with
 * BACKEND_VRING_CALL (ERR) on the backend channel; where it did not, VRING_KICK is refused.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class InBandNotificationsTest {
  private static final long IN_BAND =
      TestFrontend.PROTOCOL_FEATURES
          | ProtocolFeature.maskOf(
              ProtocolFeature.BACKEND_REQ, ProtocolFeature.INBAND_NOTIFICATIONS);
  private static final Duration QUIET = Duration.ofMillis(100);

  @TempDir Path dir;

  /**
   * The restricted-DMA issue's "VRING_ERR on the backend channel where negotiated": a ring outside
   * memory stops, the frontend hears of it in-band, and the session goes on.
   */
  @Test
  void guestErrorOfARingWithoutAnErrorEventfdIsSentAsVringErr() throws Exception {
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        FrontendChannel backendChannel = handBackendChannel(frontend, IN_BAND)) {
      frontend.shareMemory();
      frontend.configureRing(0, outsideMemory(), frontend.kick[0], frontend.call[0], null);
      assertNotice(backendChannel, BackendRequest.VRING_ERR, 0);
      // The session goes on: ring 1 works, ring 0 consumed nothing.
      frontend.setUpRing(1, TestFrontend.ringAddress(1));
      frontend.echo(1);
      assertEquals(0, frontend.stop(0), "ring 0 never consumed anything");
      assertFalse(backendChannel.awaitInput(QUIET), "one error, one message");
    }
  }

  /** Without INBAND_NOTIFICATIONS, a backend channel alone carries no errors: logged, as before. */
  @Test
  void withoutInBandNotificationsAGuestErrorSendsNothing() throws Exception {
    long backendReqAlone = TestFrontend.PROTOCOL_FEATURES | ProtocolFeature.BACKEND_REQ.mask();
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        FrontendChannel backendChannel = handBackendChannel(frontend, backendReqAlone)) {
      frontend.shareMemory();
      frontend.configureRing(0, outsideMemory(), frontend.kick[0], frontend.call[0], null);
      assertTrue(
          backend.warnings().stream().anyMatch(l -> l.contains("ring 0 stopped")),
          "the guest error logged: " + backend.warnings());
      frontend.setUpRing(1, TestFrontend.ringAddress(1));
      frontend.echo(1);
      assertFalse(backendChannel.awaitInput(QUIET), "no BACKEND_VRING_ERR");
    }
  }

  /**
   * Linux UML's frontend: with INBAND_NOTIFICATIONS it sends neither SET_VRING_KICK nor
   * SET_VRING_CALL; its first VRING_KICK starts the ring (vhost-user.rst, "Starting and stopping
   * rings"), and used buffers are announced with BACKEND_VRING_CALL.
   */
  @Test
  void aRingWithoutKickAndCallMessagesIsStartedByVringKickAndAnsweredWithVringCall()
      throws Exception {
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        FrontendChannel backendChannel = handBackendChannel(frontend, IN_BAND)) {
      frontend.shareMemory();
      DriverRing ring = configureWithoutKickAndCall(frontend, 0);
      for (int used = 0; used < 2; used++) {
        byte[] data = ("in-band " + used).getBytes(StandardCharsets.UTF_8);
        int head = ring.postEcho(data, data.length + 16);
        frontend.channel.send(FrontendRequest.VRING_KICK, new VringState(0, 0), false);
        assertNotice(backendChannel, BackendRequest.VRING_CALL, 0);
        ring.awaitEcho(head, data, used, TestFrontend.TIMEOUT);
      }
      // A kick for a ring the device does not have is refused; the session goes on.
      assertThrows(
          FrontendChannel.Refused.class,
          () ->
              frontend.channel.ack(
                  FrontendRequest.VRING_KICK, new VringState(TestFrontend.QUEUES, 0)));
      assertEquals(2, frontend.stop(0));
      assertEquals(0, frontend.err[0].drain(), "ring 0 error eventfd");
    }
  }

  /**
   * SET_VRING_CALL with the no-fd flag is a driver that polls its used ring (vhost-user.rst), under
   * INBAND_NOTIFICATIONS as without: no BACKEND_VRING_CALL then. SET_VRING_KICK with the no-fd flag
   * asks the backend to poll, which bounce does not: refused, in-band or not.
   */
  @Test
  void aNoFdCallIsADriverThatPollsAndANoFdKickIsRefused() throws Exception {
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        FrontendChannel backendChannel = handBackendChannel(frontend, IN_BAND)) {
      frontend.shareMemory();
      assertNoFdKickIsRefused(frontend);
      DriverRing ring = configureWithoutKickAndCall(frontend, 0);
      frontend.setVringFd(FrontendRequest.SET_VRING_CALL, 0, null);
      byte[] data = "polled".getBytes(StandardCharsets.UTF_8);
      int head = ring.postEcho(data, data.length + 16);
      frontend.channel.send(FrontendRequest.VRING_KICK, new VringState(0, 0), false);
      ring.awaitEcho(head, data, 0, TestFrontend.TIMEOUT);
      assertFalse(backendChannel.awaitInput(QUIET), "no BACKEND_VRING_CALL for a polling driver");
    }
  }

  /**
   * In-band negotiated but no backend channel ever given: the ring still works, and that its driver
   * is never told of used buffers is said once, not per publish.
   */
  @Test
  void withoutABackendChannelTheMissingCallsAreSaidOnce() throws Exception {
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path))) {
      frontend.negotiate(true, IN_BAND);
      frontend.shareMemory();
      DriverRing ring = configureWithoutKickAndCall(frontend, 0);
      for (int used = 0; used < 3; used++) {
        byte[] data = ("no channel " + used).getBytes(StandardCharsets.UTF_8);
        int head = ring.postEcho(data, data.length + 16);
        frontend.channel.send(FrontendRequest.VRING_KICK, new VringState(0, 0), false);
        ring.awaitEcho(head, data, used, TestFrontend.TIMEOUT);
      }
      long deadline = System.nanoTime() + TestFrontend.TIMEOUT.toNanos();
      while (noChannelWarnings(backend) == 0 && System.nanoTime() < deadline) Thread.sleep(5);
      Thread.sleep(QUIET.toMillis()); // any later notice has reached the control loop by now
      assertEquals(1, noChannelWarnings(backend), backend.warnings().toString());
    }
  }

  /**
   * Used-buffer notices the data loop makes while the control loop is busy elsewhere: one waiting
   * BACKEND_VRING_CALL covers the ones after it, so the control loop's queue does not grow with the
   * ring's pace.
   */
  @Test
  void noticesWaitingForTheControlLoopAreOneMessagePerRing() throws Exception {
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        FrontendChannel backendChannel = handBackendChannel(frontend, IN_BAND)) {
      frontend.shareMemory();
      DriverRing ring = configureWithoutKickAndCall(frontend, 0);
      // A kick eventfd, which the data loop serves without the control loop; still no call fd.
      frontend.setVringFd(FrontendRequest.SET_VRING_KICK, 0, frontend.kick[0]);
      CountDownLatch busy = new CountDownLatch(1);
      CountDownLatch release = new CountDownLatch(1);
      backend.controlLoop.execute(
          () -> {
            busy.countDown();
            try {
              release.await();
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
          });
      busy.await();
      try {
        for (int used = 0; used < 10; used++) {
          byte[] data = ("busy " + used).getBytes(StandardCharsets.UTF_8);
          int head = ring.postEcho(data, data.length + 16);
          frontend.kick[0].signal();
          ring.awaitEcho(head, data, used, TestFrontend.TIMEOUT);
        }
      } finally {
        release.countDown();
      }
      assertNotice(backendChannel, BackendRequest.VRING_CALL, 0);
      assertFalse(backendChannel.awaitInput(QUIET), "ten used buffers, one waiting notice");
    }
  }

  /**
   * A frontend that does not read its channel for a while (QEMU's main loop busy elsewhere) while
   * the guest goes on: the notices fill the channel, and what meets it full waits until the
   * frontend reads, instead of ending the channel, and with it every later notice, for good.
   */
  @Test
  void aChannelTheFrontendDoesNotReadForAWhileCarriesTheNoticesOnceItDoes() throws Exception {
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path))) {
      frontend.negotiate(true, IN_BAND);
      FrontendChannel.RequestChannel pair = FrontendChannel.backendRequestChannel();
      try (FrontendChannel backendChannel = pair.ours();
          Fd bouncesEnd = Libc.dup(pair.theirs().value())) {
        try (var theirs = pair.theirs()) {
          frontend.channel.ack(FrontendRequest.SET_BACKEND_REQ_FD, Empty.INSTANCE, theirs);
        }
        frontend.shareMemory();
        DriverRing ring = configureWithoutKickAndCall(frontend, 0);
        frontend.setVringFd(FrontendRequest.SET_VRING_KICK, 0, frontend.kick[0]);
        // A message meets a full channel once what the frontend has not read reaches SO_SNDBUF.
        int full = SocketTesting.getInt(bouncesEnd, SocketTesting.SO_SNDBUF) - 2048;
        int used = 0;
        while (SocketTesting.unsent(bouncesEnd) < full) {
          assertTrue(
              used < 100_000, "the channel never filled: " + SocketTesting.unsent(bouncesEnd));
          echo(frontend, ring, used++);
        }
        for (int i = 0; i < 10; i++) echo(frontend, ring, used++); // while it is full
        int read = 0;
        while (backendChannel.awaitInput(QUIET)) {
          receive(backendChannel).close();
          read++;
        }
        assertTrue(read > 0 && read < used, read + " notices for " + used + " used buffers");
        echo(frontend, ring, used);
        assertNotice(backendChannel, BackendRequest.VRING_CALL, 0);
        assertEquals(
            List.of(),
            backend.warnings().stream().filter(l -> l.contains("back-end requests")).toList(),
            "the channel was kept");
      }
    }
  }

  private static void echo(TestFrontend frontend, DriverRing ring, int used) throws Exception {
    byte[] data = ("used " + used).getBytes(StandardCharsets.UTF_8);
    int head = ring.postEcho(data, data.length + 16);
    frontend.kick[0].signal();
    ring.awaitEcho(head, data, used, TestFrontend.TIMEOUT);
  }

  /** The next backend request is {@code request} for ring {@code index}, without NEED_REPLY. */
  private static void assertNotice(FrontendChannel channel, BackendRequest request, int index)
      throws Exception {
    try (Message<BackendRequest> notice = receive(channel)) {
      assertEquals(request, notice.request());
      assertEquals(new VringState(index, 0), notice.payload(VringState.class), "ring " + index);
      assertEquals(Header.VERSION, notice.header().flags(), "no NEED_REPLY: nobody waits");
    }
  }

  private static long noChannelWarnings(BackendFixture backend) {
    return backend.warnings().stream().filter(l -> l.contains("no backend channel")).count();
  }

  /** Ring {@code i} set up as UML does: size, base, addresses, error eventfd, enable; no kick. */
  private static DriverRing configureWithoutKickAndCall(TestFrontend frontend, int i)
      throws Exception {
    VringAddress address = TestFrontend.ringAddress(i);
    frontend.channel.ack(FrontendRequest.SET_VRING_NUM, new VringState(i, TestFrontend.QUEUE_SIZE));
    frontend.channel.ack(FrontendRequest.SET_VRING_BASE, new VringState(i, 0));
    frontend.channel.ack(FrontendRequest.SET_VRING_ADDR, address);
    frontend.setVringFd(FrontendRequest.SET_VRING_ERR, i, frontend.err[i]);
    frontend.channel.ack(FrontendRequest.SET_VRING_ENABLE, new VringState(i, 1));
    DriverRing ring = new DriverRing(frontend.memory, TestFrontend.QUEUE_SIZE, address);
    ring.startAt(0);
    frontend.rings[i] = ring;
    return ring;
  }

  /**
   * vhost-user.rst: INBAND_NOTIFICATIONS without BACKEND_REQ and REPLY_ACK is an error the backend
   * answers by closing the connection.
   */
  @Test
  void inBandNotificationsWithoutBackendReqAndReplyAckEndTheConnection() throws Exception {
    long inBand = ProtocolFeature.INBAND_NOTIFICATIONS.mask();
    long withoutBackendReq = TestFrontend.PROTOCOL_FEATURES | inBand;
    long withoutReplyAck =
        (TestFrontend.PROTOCOL_FEATURES | inBand | ProtocolFeature.BACKEND_REQ.mask())
            & ~ProtocolFeature.REPLY_ACK.mask();
    for (long protocol : new long[] {withoutBackendReq, withoutReplyAck}) {
      try (BackendFixture backend = echoBackend();
          FrontendChannel channel = FrontendChannel.connect(backend.path)) {
        channel.getU64(FrontendRequest.GET_FEATURES);
        channel.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
        channel.send(FrontendRequest.SET_PROTOCOL_FEATURES, new U64(protocol), false);
        assertTrue(
            channel.isClosedByPeer(Duration.ofSeconds(10)), ProtocolFeature.describe(protocol));
      }
    }
  }

  /**
   * Without INBAND_NOTIFICATIONS a ring without a kick eventfd would never be served (bounce does
   * not poll): refused, as is VRING_KICK.
   */
  @Test
  void withoutInBandNotificationsNoFdKickAndVringKickAreRefused() throws Exception {
    try (BackendFixture backend = echoBackend();
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path))) {
      frontend.negotiate(true);
      frontend.shareMemory();
      assertNoFdKickIsRefused(frontend);
      assertThrows(
          FrontendChannel.Refused.class,
          () -> frontend.channel.ack(FrontendRequest.VRING_KICK, new VringState(0, 0)));
      // Set up with its kick eventfd, the same ring works.
      frontend.setUpRing(0, TestFrontend.ringAddress(0));
      frontend.echo(0);
    }
  }

  /** Ring 0 set up without a kick eventfd: refused at SET_VRING_KICK (bounce does not poll). */
  private static void assertNoFdKickIsRefused(TestFrontend frontend) {
    FrontendChannel.Refused refused =
        assertThrows(
            FrontendChannel.Refused.class,
            () ->
                frontend.configureRing(
                    0, TestFrontend.ringAddress(0), null, frontend.call[0], frontend.err[0]));
    assertEquals(FrontendRequest.SET_VRING_KICK, refused.request());
  }

  /** Ring 0 with every part past the end of the frontend's memory. */
  private static VringAddress outsideMemory() {
    long end = TestFrontend.USER_BASE + TestFrontend.MEMORY_SIZE;
    return new VringAddress(0, 0, end + 0x10000, end + 0x12000, end + 0x11000, 0);
  }

  private BackendFixture echoBackend() throws Exception {
    return BackendFixture.listen(
        dir.resolve("in-band.sock"), new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE));
  }

  /** Negotiates {@code protocol} and hands the backend its channel; our end of it. */
  private static FrontendChannel handBackendChannel(TestFrontend frontend, long protocol)
      throws Exception {
    frontend.negotiate(true, protocol);
    FrontendChannel.RequestChannel pair = FrontendChannel.backendRequestChannel();
    try (var theirs = pair.theirs()) {
      frontend.channel.ack(FrontendRequest.SET_BACKEND_REQ_FD, Empty.INSTANCE, theirs);
      return pair.ours();
    } catch (Exception e) {
      pair.ours().close();
      throw e;
    }
  }

  /** The next back-end request on {@code channel}. */
  private static Message<BackendRequest> receive(FrontendChannel channel) throws Exception {
    try (FrontendChannel.Frame frame = channel.receiveFrame(TestFrontend.TIMEOUT)) {
      return BackendRequests.decode(
          frame.header(), Unpooled.wrappedBuffer(frame.payload()), frame.fds());
    }
  }
}
