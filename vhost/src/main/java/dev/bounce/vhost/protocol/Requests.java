package dev.bounce.vhost.protocol;

import dev.bounce.pool.Fd;
import io.netty.buffer.ByteBuf;
import java.util.List;

/**
 * Front-end requests on the main socket: decoding on the back-end side, encoding on the front-end
 * side (the fake frontend).
 */
public final class Requests {
  private Requests() {}

  /**
   * Checks a request header as soon as its 12 bytes are in, before the payload is read: version 1,
   * no undefined flag bits, no REPLY flag, size within {@link Header#MAX_PAYLOAD}. The code may be
   * unknown; {@link #decode} reports that, once the payload has been read and the connection can go
   * on.
   */
  public static void checkHeader(Header header) throws ProtocolException {
    Codec.checkRequestHeader(header, FrontendRequest.fromCode(header.request()));
  }

  /**
   * Decodes and validates one request: the header as {@link #checkHeader}, a known code, a payload
   * of exactly the size its layout needs, valid field values, and the fds the request takes.
   *
   * @param payload exactly the payload's bytes (read, not released; the caller owns the buffer)
   * @param fds the fds that came with the message; on success the message owns them, on any failure
   *     they are all closed before this throws
   * @throws ProtocolException naming the request, what is wrong and the numbers
   */
  public static Message<FrontendRequest> decode(Header header, ByteBuf payload, List<Fd> fds)
      throws ProtocolException {
    return Codec.decodeRequest(
        header, FrontendRequest.fromCode(header.request()), "front-end", payload, fds);
  }

  /**
   * Writes a request (header and payload). The fds to send with it are the socket's business; see
   * {@link FdRule#min}/{@link FdRule#max} for how many the request takes.
   *
   * @throws IllegalArgumentException when {@code payload} is not the request's layout
   */
  public static void encode(
      ByteBuf out, FrontendRequest request, Payload payload, boolean needReply) {
    Codec.encodeRequest(out, request, payload, needReply);
  }

  /** Writes a request without payload (GET_FEATURES, SET_OWNER, GET_STATUS, ...). */
  public static void encode(ByteBuf out, FrontendRequest request, boolean needReply) {
    encode(out, request, Empty.INSTANCE, needReply);
  }

  /**
   * Writes any header and bytes, unchecked: for probing how a back-end copes with malformed
   * messages. The size field is the payload's length.
   */
  public static void encodeRaw(ByteBuf out, int code, int flags, byte[] payload) {
    new Header(code, flags, payload.length).write(out);
    out.writeBytes(payload);
  }
}
