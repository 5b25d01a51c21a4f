package dev.bounce.vhost.protocol;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.NativeException;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;

/** Bytes in and out of the codec, the way the socket layer hands them over. */
final class Wire {
  private Wire() {}

  /** Hex with spaces allowed, for byte layouts written out field by field. */
  static byte[] hex(String hex) {
    return HexFormat.of().parseHex(hex.replaceAll("\\s+", ""));
  }

  static ByteBuf buf(String hex) {
    return Unpooled.wrappedBuffer(hex(hex));
  }

  static String hexOf(ByteBuf buf) {
    return ByteBufUtil.hexDump(buf);
  }

  /** A whole message (header and payload) decoded as a front-end request. */
  static Message<FrontendRequest> decodeRequest(ByteBuf message, List<Fd> fds)
      throws ProtocolException {
    Header header = Header.read(message);
    return Requests.decode(header, message.readSlice(message.readableBytes()), fds);
  }

  /** A whole message decoded as a back-end request. */
  static Message<BackendRequest> decodeBackendRequest(ByteBuf message, List<Fd> fds)
      throws ProtocolException {
    Header header = Header.read(message);
    return BackendRequests.decode(header, message.readSlice(message.readableBytes()), fds);
  }

  /** A whole message decoded as the reply to {@code sent}. */
  static <R extends Request> Message<R> decodeReply(R sent, ByteBuf message, List<Fd> fds)
      throws ProtocolException {
    Header header = Header.read(message);
    return Replies.decode(sent, header, message.readSlice(message.readableBytes()), fds);
  }

  /** Encodes a request and decodes it again, as the two ends of a socket would. */
  static Message<FrontendRequest> roundTrip(
      FrontendRequest request, Payload payload, boolean needReply, List<Fd> fds)
      throws ProtocolException {
    ByteBuf out = Unpooled.buffer();
    Requests.encode(out, request, payload, needReply);
    return decodeRequest(out, fds);
  }

  /** {@code count} fresh eventfds, as stand-ins for whatever a peer would send. */
  static List<Fd> eventFds(int count) throws NativeException {
    List<Fd> fds = new ArrayList<>();
    for (int i = 0; i < count; i++) fds.add(EventFd.create().fd());
    return fds;
  }

  static boolean allClosed(List<Fd> fds) {
    return fds.stream().noneMatch(Fd::isOpen);
  }

  static void closeAll(List<Fd> fds) {
    fds.forEach(Fd::close);
  }
}
