package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
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
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.socket.UnixSocket;
import dev.bounce.vhost.spi.DeviceContext;
import dev.bounce.vhost.spi.VirtioFeatures;
import io.netty.buffer.Unpooled;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A device's {@link DeviceContext#configChanged()} reaches the frontend as CONFIG_CHANGE_MSG on the
 * backend channel, where the frontend negotiated CONFIG and BACKEND_REQ, and nowhere else.
 */
class ConfigChangeTest {
  @TempDir Path dir;

  @Test
  void configChangeIsSentOnTheBackendChannelWhenNegotiated() throws Exception {
    Message<BackendRequest> message = announce(true, 20_000);
    assertNotNull(message, "CONFIG_CHANGE_MSG on the backend channel");
    try (message) {
      assertEquals(BackendRequest.CONFIG_CHANGE_MSG, message.request());
      assertEquals(Header.VERSION, message.header().flags(), "no NEED_REPLY: nobody waits");
    }
  }

  @Test
  void nothingIsSentWithoutBackendReq() throws Exception {
    assertEquals(null, announce(false, 1000), "no message without BACKEND_REQ negotiated");
  }

  /**
   * A frontend that never reads its backend channel (a blocking socket, as it chose) cannot stall
   * the control loop: once the channel is full bounce gives up on it, and the session still
   * answers.
   */
  @Test
  void aBackendChannelNobodyReadsStallsNothing() throws Exception {
    ConfiguredEcho device = new ConfiguredEcho(2, 256, 0);
    long protocol =
        ProtocolFeature.maskOf(
            ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.BACKEND_REQ);
    try (BackendFixture backend = BackendFixture.listen(dir.resolve("b.sock"), device);
        FrontendChannel channel = FrontendChannel.connect(dir.resolve("b.sock"));
        UnixListener pairMaker = UnixListener.bind(dir.resolve("pair.sock"), false);
        UnixSocket ours = UnixSocket.connect(dir.resolve("pair.sock"));
        UnixSocket theirs = pairMaker.accept()) {
      channel.getU64(FrontendRequest.GET_FEATURES);
      channel.send(FrontendRequest.SET_PROTOCOL_FEATURES, new U64(protocol), false);
      channel.ack(FrontendRequest.SET_BACKEND_REQ_FD, Empty.INSTANCE, theirs.fd());
      channel.ack(
          FrontendRequest.SET_FEATURES,
          new U64(
              VirtioFeatures.bit(VirtioFeatures.VERSION_1)
                  | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES)));
      // Far more 12-byte messages than a socket buffer holds; nobody reads `ours`.
      for (int i = 0; i < 100_000; i++) device.context.get(5, TimeUnit.SECONDS).configChanged();
      // The control loop is free: a request is answered at once.
      assertTrue(channel.getU64(FrontendRequest.GET_FEATURES) != 0);
    }
  }

  /**
   * Negotiates (BACKEND_REQ or not), hands the backend one end of a socket pair, has the device
   * call configChanged(), and returns what arrived on the other end within {@code waitMillis}, or
   * null. Where a message must come the wait is long (it ends when the message does); where none
   * may, a second shows a wrong one (a busy machine would only make it show later).
   */
  private Message<BackendRequest> announce(boolean backendReq, int waitMillis) throws Exception {
    ConfiguredEcho device = new ConfiguredEcho(2, 256, 0);
    long protocol =
        backendReq
            ? ProtocolFeature.maskOf(
                ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.BACKEND_REQ)
            : ProtocolFeature.maskOf(ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG);
    try (BackendFixture backend = BackendFixture.listen(dir.resolve("b.sock"), device);
        FrontendChannel channel = FrontendChannel.connect(dir.resolve("b.sock"));
        UnixListener pairMaker = UnixListener.bind(dir.resolve("pair.sock"), false);
        UnixSocket ours = UnixSocket.connect(dir.resolve("pair.sock"));
        UnixSocket theirs = pairMaker.accept();
        Arena arena = Arena.ofConfined()) {
      channel.getU64(FrontendRequest.GET_FEATURES);
      channel.send(FrontendRequest.SET_PROTOCOL_FEATURES, new U64(protocol), false);
      channel.ack(FrontendRequest.SET_OWNER);
      channel.ack(FrontendRequest.SET_BACKEND_REQ_FD, Empty.INSTANCE, theirs.fd());
      long features =
          VirtioFeatures.bit(VirtioFeatures.VERSION_1)
              | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES);
      channel.ack(FrontendRequest.SET_FEATURES, new U64(features));
      device.context.get(5, TimeUnit.SECONDS).configChanged();
      if (!Libc.pollIn(ours.fd().value(), waitMillis)) return null;
      MemorySegment header = arena.allocate(Header.SIZE);
      List<Fd> fds = new ArrayList<>();
      assertTrue(ours.receiveFully(header, fds), "a whole header");
      Header h = Header.read(Unpooled.wrappedBuffer(header.asByteBuffer()));
      return BackendRequests.decode(h, Unpooled.EMPTY_BUFFER, fds);
    }
  }
}
