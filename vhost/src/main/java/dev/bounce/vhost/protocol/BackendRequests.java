package dev.bounce.vhost.protocol;

import dev.bounce.pool.Fd;
import io.netty.buffer.ByteBuf;
import java.util.List;

/**
 * Back-end requests on the channel from SET_BACKEND_REQ_FD: encoding on the back-end side (error
 * and call notifications, config changes), decoding on the front-end side.
 */
public final class BackendRequests {
  private BackendRequests() {}

  /** As {@link Requests#checkHeader}, for the back-end channel. */
  public static void checkHeader(Header header) throws ProtocolException {
    Codec.checkRequestHeader(header, BackendRequest.fromCode(header.request()));
  }

  /** As {@link Requests#decode}, for the back-end channel: every fd given is closed on failure. */
  public static Message<BackendRequest> decode(Header header, ByteBuf payload, List<Fd> fds)
      throws ProtocolException {
    return Codec.decodeRequest(
        header, BackendRequest.fromCode(header.request()), "back-end", payload, fds);
  }

  /**
   * Writes a back-end request.
   *
   * @throws IllegalArgumentException when {@code payload} is not the request's layout
   */
  public static void encode(
      ByteBuf out, BackendRequest request, Payload payload, boolean needReply) {
    Codec.encodeRequest(out, request, payload, needReply);
  }

  /** BACKEND_VRING_CALL for {@code index} (in-band notification; num is reserved, 0). */
  public static void vringCall(ByteBuf out, long index, boolean needReply) {
    encode(out, BackendRequest.VRING_CALL, new VringState(index, 0), needReply);
  }

  /** BACKEND_VRING_ERR for {@code index} (in-band error; num is reserved, 0). */
  public static void vringErr(ByteBuf out, long index, boolean needReply) {
    encode(out, BackendRequest.VRING_ERR, new VringState(index, 0), needReply);
  }

  /** BACKEND_CONFIG_CHANGE_MSG: the front-end should re-read the config space. */
  public static void configChange(ByteBuf out, boolean needReply) {
    encode(out, BackendRequest.CONFIG_CHANGE_MSG, Empty.INSTANCE, needReply);
  }
}
