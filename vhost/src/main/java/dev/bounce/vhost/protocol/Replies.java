package dev.bounce.vhost.protocol;

import static dev.bounce.vhost.protocol.ProtocolException.Kind.BAD_FLAGS;
import static dev.bounce.vhost.protocol.ProtocolException.Kind.UNEXPECTED_REPLY;

import dev.bounce.pool.Fd;
import io.netty.buffer.ByteBuf;
import java.util.List;

/**
 * Replies, both ways: the receiver of a request writes them (the back-end on the main socket, the
 * front-end on the back-end channel) and the sender reads them.
 *
 * <p>Every reply's flags are exactly {@link Header#REPLY_FLAGS} (0x5): QEMU rejects anything else,
 * NEED_REPLY echoed included, and bounce holds its peers to the same.
 *
 * <p>Which payload a reply carries: the request's {@link Request#replyPayload()} when it has one
 * (GET_FEATURES' u64, GET_VRING_BASE's vring state, GET_CONFIG's config space, ...); otherwise a
 * u64 status for REPLY_ACK, 0 for success and non-zero for failure. For requests that always reply,
 * NEED_REPLY changes nothing: the explicit reply is the acknowledgement.
 */
public final class Replies {
  private Replies() {}

  /**
   * Checks a reply header against the request it answers: size within {@link Header#MAX_PAYLOAD},
   * flags exactly 0x5, the same request code.
   */
  public static void checkHeader(Header header, Request sent) throws ProtocolException {
    Codec.checkSize(header, sent, false);
    if (header.flags() != Header.REPLY_FLAGS) {
      throw ProtocolException.of(
          BAD_FLAGS,
          header.request(),
          sent,
          false,
          "reply flags " + Codec.flags(header) + ", expected exactly 0x5");
    }
    if (header.request() != sent.code()) {
      throw ProtocolException.of(
          UNEXPECTED_REPLY,
          header.request(),
          sent,
          false,
          "reply carries request code "
              + Integer.toUnsignedString(header.request())
              + ", expected "
              + sent.code(),
          Integer.toUnsignedLong(header.request()),
          sent.code());
    }
  }

  /**
   * Decodes the reply to {@code sent}: the header as {@link #checkHeader}, the payload as the
   * request's reply layout (u64 status for an acknowledgement; for GET_CONFIG an empty payload is
   * the back-end's failure and decodes to {@link Empty}), and the fds the reply may carry. Every fd
   * given is closed on failure.
   */
  public static <R extends Request> Message<R> decode(
      R sent, Header header, ByteBuf payload, List<Fd> fds) throws ProtocolException {
    try {
      checkHeader(header, sent);
      PayloadKind kind = sent.replyPayload() == null ? PayloadKind.U64 : sent.replyPayload();
      FdRule rule = sent.replyPayload() == null ? FdRule.NONE : sent.replyFds();
      if (sent == FrontendRequest.GET_CONFIG && header.size() == 0) kind = PayloadKind.EMPTY;
      return Codec.decode(header, sent, kind, rule, payload, fds, false);
    } catch (Throwable t) {
      Codec.closeAll(fds);
      throw t;
    }
  }

  /**
   * Writes the reply to {@code request}.
   *
   * @throws IllegalArgumentException when {@code payload} is not what that request's reply carries
   */
  public static void encode(ByteBuf out, Request request, Payload payload) {
    PayloadKind expected =
        request.replyPayload() == null ? PayloadKind.U64 : request.replyPayload();
    boolean configFailure = request == FrontendRequest.GET_CONFIG && payload instanceof Empty;
    if (!expected.accepts(payload) && !configFailure) {
      throw new IllegalArgumentException(
          "the reply to "
              + request.label()
              + " carries a "
              + expected
              + " payload, not "
              + payload.getClass().getSimpleName());
    }
    Codec.write(out, Header.reply(request.code(), payload.size()), payload);
  }

  /**
   * A u64 reply: the value of GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
   * GET_MAX_MEM_SLOTS, GET_STATUS, or a status.
   */
  public static void u64(ByteBuf out, Request request, long value) {
    encode(out, request, new U64(value));
  }

  /**
   * The REPLY_ACK status for a request that set NEED_REPLY: u64 0 on success, 1 on failure. Takes
   * the raw code so that an unknown request can be refused too.
   */
  public static void ack(ByteBuf out, int requestCode, boolean success) {
    U64 status = success ? U64.SUCCESS : U64.FAILURE;
    Codec.write(out, Header.reply(requestCode, status.size()), status);
  }

  /** The GET_VRING_BASE reply: the ring's index and next avail index. */
  public static void vringBase(ByteBuf out, VringState state) {
    encode(out, FrontendRequest.GET_VRING_BASE, state);
  }

  /** The GET_CONFIG reply; offset and size must be the request's. */
  public static void config(ByteBuf out, ConfigSpace config) {
    encode(out, FrontendRequest.GET_CONFIG, config);
  }

  /** The GET_CONFIG failure: "zero length of payload to indicate an error". */
  public static void configFailure(ByteBuf out) {
    encode(out, FrontendRequest.GET_CONFIG, Empty.INSTANCE);
  }

  /** The GET_SHMEM_CONFIG reply. */
  public static void shmemConfig(ByteBuf out, ShmemConfig config) {
    encode(out, FrontendRequest.GET_SHMEM_CONFIG, config);
  }
}
