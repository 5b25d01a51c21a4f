package dev.bounce.vhost.frontend.hostile;

import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.Payload;
import dev.bounce.vhost.protocol.Requests;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Raw messages for the hostile scenarios, and what a backend did about one: the bytes go out
 * through {@link FrontendChannel#sendRaw} unchecked, and the answer (a reply, the end of the
 * connection, or nothing) is read back as it came.
 */
final class RawProbe {
  private RawProbe() {}

  /** A header as 12 bytes: code, flags and size as given (size need not match what follows). */
  static byte[] header(int code, int flags, long size) {
    return ByteBuffer.allocate(Header.SIZE)
        .order(ByteOrder.LITTLE_ENDIAN)
        .putInt(code)
        .putInt(flags)
        .putInt((int) size)
        .array();
  }

  /** A header whose size field is the payload's length, and the payload. */
  static byte[] message(int code, int flags, byte[] payload) {
    return concat(header(code, flags, payload.length), payload);
  }

  /** The bytes of a well-formed payload, to cut or pad. */
  static byte[] bytes(Payload payload) {
    ByteBuf out = Unpooled.buffer(payload.size());
    try {
      payload.encode(out);
      byte[] bytes = new byte[out.readableBytes()];
      out.readBytes(bytes);
      return bytes;
    } finally {
      out.release();
    }
  }

  /** A well-formed request's bytes (header and payload), to cut short. */
  static byte[] request(FrontendRequest request, Payload payload, boolean needReply) {
    ByteBuf out = Unpooled.buffer(Header.SIZE + payload.size());
    try {
      Requests.encode(out, request, payload, needReply);
      byte[] bytes = new byte[out.readableBytes()];
      out.readBytes(bytes);
      return bytes;
    } finally {
      out.release();
    }
  }

  static byte[] concat(byte[] a, byte[] b) {
    byte[] both = new byte[a.length + b.length];
    System.arraycopy(a, 0, both, 0, a.length);
    System.arraycopy(b, 0, both, a.length, b.length);
    return both;
  }

  static byte[] u64(long value) {
    return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(value).array();
  }

  /** What a backend did after a malformed message. */
  enum Kind {
    /** A failure reply: flags exactly 0x5, the request's code, a non-zero u64. */
    FAILURE_REPLY,
    /** The connection ended. */
    CLOSED,
    /** A reply that says success (status 0) to a message that was wrong. */
    SUCCESS_REPLY,
    /** Something that is not a reply to the request at all. */
    BAD_REPLY,
    /** Nothing: no reply, and the connection stays open. */
    SILENT
  }

  /** A {@link Kind} and its particulars, for the scenario's account. */
  record Reaction(Kind kind, String detail) {
    /**
     * Whether the backend reported the error as ARCHITECTURE.md says (a failure reply or the end).
     */
    boolean reported() {
      return kind == Kind.FAILURE_REPLY || kind == Kind.CLOSED;
    }

    @Override
    public String toString() {
      return switch (kind) {
        case FAILURE_REPLY -> "failure reply (" + detail + ")";
        case CLOSED -> "connection closed";
        case SUCCESS_REPLY -> "a SUCCESS reply (" + detail + ")";
        case BAD_REPLY -> "a message that is no failure reply (" + detail + ")";
        case SILENT -> "no reply and the connection stayed open for " + detail;
      };
    }
  }

  /**
   * Waits up to {@code wait} for the backend's answer to a message with request code {@code code}
   * and reads it: a failure reply, the end of the connection, something else, or nothing.
   */
  static Reaction reaction(FrontendChannel channel, int code, Duration wait) throws IOException {
    if (!channel.awaitInput(wait)) return new Reaction(Kind.SILENT, wait.toMillis() + " ms");
    FrontendChannel.Frame frame;
    try {
      frame = channel.receiveFrame(wait);
    } catch (FrontendChannel.ClosedByPeer e) {
      return new Reaction(Kind.CLOSED, "");
    } catch (IOException e) {
      return new Reaction(Kind.BAD_REPLY, e.getMessage());
    }
    try (frame) {
      Header h = frame.header();
      String what =
          "request "
              + Integer.toUnsignedString(h.request())
              + ", flags 0x"
              + Integer.toHexString(h.flags());
      if (h.request() != code || h.flags() != Header.REPLY_FLAGS || frame.payload().length != 8) {
        return new Reaction(
            Kind.BAD_REPLY, what + ", " + frame.payload().length + " payload bytes" + fds(frame));
      }
      long status = ByteBuffer.wrap(frame.payload()).order(ByteOrder.LITTLE_ENDIAN).getLong();
      if (!frame.fds().isEmpty()) return new Reaction(Kind.BAD_REPLY, what + fds(frame));
      return status == 0
          ? new Reaction(Kind.SUCCESS_REPLY, "status 0")
          : new Reaction(Kind.FAILURE_REPLY, "status " + Long.toUnsignedString(status));
    }
  }

  private static String fds(FrontendChannel.Frame frame) {
    return frame.fds().isEmpty() ? "" : ", with " + frame.fds().size() + " fds";
  }

  /**
   * Connects to {@code socket} and waits until the backend serves the connection (GET_FEATURES is
   * answered): a backend that serves one frontend at a time turns a new connection away while it is
   * still letting go of the last one, so a refused or closed connection is tried again until {@code
   * patience} runs out.
   */
  static FrontendChannel served(Path socket, Duration patience, Duration replyTimeout)
      throws IOException {
    long deadline = System.nanoTime() + patience.toNanos();
    while (true) {
      FrontendChannel channel = null;
      try {
        channel = FrontendChannel.connect(socket);
        channel.setReplyTimeout(replyTimeout);
        channel.getU64(FrontendRequest.GET_FEATURES);
        return channel;
      } catch (IOException e) {
        if (channel != null) channel.close();
        if (System.nanoTime() - deadline > 0) {
          throw new IOException("the backend did not serve a new connection: " + e.getMessage(), e);
        }
        pause();
      }
    }
  }

  static void pause() throws IOException {
    try {
      Thread.sleep(20);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new java.io.InterruptedIOException("interrupted");
    }
  }
}
