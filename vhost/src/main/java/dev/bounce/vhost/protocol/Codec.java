package dev.bounce.vhost.protocol;

import static dev.bounce.vhost.protocol.ProtocolException.Kind.BAD_FD_COUNT;
import static dev.bounce.vhost.protocol.ProtocolException.Kind.BAD_FLAGS;
import static dev.bounce.vhost.protocol.ProtocolException.Kind.TOO_LARGE;
import static dev.bounce.vhost.protocol.ProtocolException.Kind.TRUNCATED;
import static dev.bounce.vhost.protocol.ProtocolException.Kind.UNKNOWN_REQUEST;
import static dev.bounce.vhost.protocol.ProtocolException.Kind.WRONG_SIZE;

import dev.bounce.pool.Fd;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.List;

/** The checks every direction shares: header, sizes, payload layout, fd count. */
final class Codec {
  private Codec() {}

  /**
   * Checks a request header (either channel). The size comes first, so that {@link
   * ProtocolException#framingIntact()} is right: flags can be wrong in a message whose end is still
   * known.
   */
  static void checkRequestHeader(Header h, Request known) throws ProtocolException {
    checkSize(h, known, h.needsReply());
    String problem = null;
    if (h.version() != Header.VERSION) {
      problem = "version " + h.version() + " in flags " + flags(h) + ", expected " + Header.VERSION;
    } else if (h.unknownFlags() != 0) {
      problem =
          "flags "
              + flags(h)
              + " set undefined bits "
              + Format.hex(Integer.toUnsignedLong(h.unknownFlags()));
    } else if (h.isReply()) {
      problem = "flags " + flags(h) + " mark a reply, but this is a request";
    }
    if (problem != null) {
      throw ProtocolException.of(BAD_FLAGS, h.request(), known, h.needsReply(), problem);
    }
  }

  static void checkSize(Header h, Request known, boolean replyExpected) throws ProtocolException {
    if (h.payloadSize() > Header.MAX_PAYLOAD) {
      throw ProtocolException.of(
          TOO_LARGE,
          h.request(),
          known,
          replyExpected,
          "payload of " + h.payloadSize() + " bytes announced, at most " + Header.MAX_PAYLOAD,
          h.payloadSize(),
          Header.MAX_PAYLOAD);
    }
  }

  static ProtocolException unknown(Header h, String channel) {
    return ProtocolException.of(
        UNKNOWN_REQUEST, h.request(), null, h.needsReply(), "unknown " + channel + " request code");
  }

  static String flags(Header h) {
    return Format.hex(Integer.toUnsignedLong(h.flags()));
  }

  /**
   * Decodes a request on {@code channel} ("front-end", "back-end") whose code means {@code request}
   * there (null: unknown); every fd given is closed on any failure.
   */
  static <R extends Request> Message<R> decodeRequest(
      Header header, R request, String channel, ByteBuf payload, List<Fd> fds)
      throws ProtocolException {
    try {
      checkRequestHeader(header, request);
      if (request == null) throw unknown(header, channel);
      return decode(
          header, request, request.payload(), request.fds(), payload, fds, header.needsReply());
    } catch (Throwable t) {
      closeAll(fds);
      throw t;
    }
  }

  /** Writes a request after checking that {@code payload} is its layout. */
  static void encodeRequest(ByteBuf out, Request request, Payload payload, boolean needReply) {
    if (!request.payload().accepts(payload)) {
      throw new IllegalArgumentException(
          request.label()
              + " takes a "
              + request.payload()
              + " payload, not "
              + payload.getClass().getSimpleName());
    }
    write(out, Header.request(request.code(), payload.size(), needReply), payload);
  }

  static <R extends Request> Message<R> decode(
      Header h,
      R request,
      PayloadKind kind,
      FdRule rule,
      ByteBuf payload,
      List<Fd> fds,
      boolean replyExpected)
      throws ProtocolException {
    List<Fd> given = fds == null ? List.of() : fds;
    int code = h.request();
    int count = given.size();
    if (count > FdRule.MAX_FDS) {
      throw ProtocolException.of(
          BAD_FD_COUNT,
          code,
          request,
          replyExpected,
          "carries " + Format.fds(count) + ", at most " + FdRule.MAX_FDS,
          count,
          FdRule.MAX_FDS);
    }
    ByteBuf in = payload == null ? Unpooled.EMPTY_BUFFER : payload;
    long size = h.payloadSize();
    int readable = in.readableBytes();
    if (readable < size) {
      throw ProtocolException.of(
          TRUNCATED,
          code,
          request,
          replyExpected,
          "payload is " + Format.bytesCount(readable) + ", header says " + size,
          readable,
          size);
    }
    if (readable > size) {
      throw ProtocolException.of(
          WRONG_SIZE,
          code,
          request,
          replyExpected,
          "payload buffer holds " + Format.bytesCount(readable) + ", header says " + size,
          readable,
          size);
    }
    Payload decoded;
    try {
      decoded = kind.decode(in, (int) size);
    } catch (BadPayload e) {
      throw new ProtocolException(
          e.kind, code, request.label(), replyExpected, e.getMessage(), e.actual, e.expected);
    } catch (IndexOutOfBoundsException e) {
      // Every layout checks its size before reading; this is a guard against our own slip, so
      // that a short payload still surfaces as the peer's protocol error.
      throw ProtocolException.of(
          WRONG_SIZE, code, request, replyExpected, "payload too short: " + e.getMessage());
    }
    int min = rule.min(decoded);
    int max = rule.max(decoded);
    if (count < min || count > max) {
      throw ProtocolException.of(
          BAD_FD_COUNT, code, request, replyExpected, fdProblem(count, min, max, rule), count, max);
    }
    return new Message<>(h, request, decoded, given);
  }

  private static String fdProblem(int count, int min, int max, FdRule rule) {
    String carries = "carries " + Format.fds(count);
    if (rule == FdRule.ONE_UNLESS_NOFD) {
      return max == 0
          ? carries + ", takes none with the no-fd flag set"
          : carries + ", expected 1 (the no-fd flag is not set)";
    }
    if (max == 0) return carries + ", takes none";
    if (min == max) return carries + ", expected " + max;
    return carries + ", expected " + min + " to " + max;
  }

  /** Closes every fd given to a decode that failed. */
  static void closeAll(List<Fd> fds) {
    if (fds == null) return;
    for (Fd fd : fds) {
      if (fd != null) fd.close();
    }
  }

  /** Writes header and payload, after checking that the payload has the request's layout. */
  static void write(ByteBuf out, Header header, Payload payload) {
    header.write(out);
    int start = out.writerIndex();
    payload.encode(out);
    if (out.writerIndex() - start != header.size()) {
      throw new IllegalStateException(
          payload.getClass().getSimpleName()
              + " wrote "
              + (out.writerIndex() - start)
              + " bytes, declared "
              + header.size());
    }
  }
}
