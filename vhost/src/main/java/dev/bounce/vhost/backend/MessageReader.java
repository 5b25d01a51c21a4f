package dev.bounce.vhost.backend;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.vhost.socket.UnixSocket;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Reassembles vhost-user messages from a non-blocking socket: the 12-byte header, then as many
 * payload bytes as it announces, with the fds that came along. A peer that trickles a message byte
 * by byte cannot stall the loop (each call reads what is there and returns), and cannot make it
 * buffer more than one header and {@code maxPayload} bytes, nor hold more than {@link
 * UnixSocket#MAX_FDS} fds.
 */
final class MessageReader implements AutoCloseable {
  static final int HEADER_SIZE = 12;
  private static final long SIZE_OFFSET = 8;

  /**
   * A whole message as it came off the socket: header bytes, payload bytes, and its fds (owned).
   */
  record Frame(MemorySegment header, MemorySegment payload, List<Fd> fds) {}

  private final UnixSocket socket;
  private final int maxPayload;
  private final Arena arena = Arena.ofConfined();
  private final MemorySegment buffer;
  private final List<Fd> fds = new ArrayList<>();
  private long filled;
  private long expected = HEADER_SIZE;

  MessageReader(UnixSocket socket, int maxPayload) {
    this.socket = socket;
    this.maxPayload = maxPayload;
    this.buffer = arena.allocate(HEADER_SIZE + maxPayload);
  }

  /**
   * Reads what the socket has towards the next message.
   *
   * @return the whole message once it is complete (its segments are valid until the next call), or
   *     null when more bytes are needed (the socket has none now)
   * @throws EndOfStream when the peer closed the connection (mid-message or between messages)
   * @throws IOException when the peer announced a payload over the bound or sent too many fds; the
   *     connection cannot be resynchronised after that
   */
  Frame read() throws IOException {
    while (filled < expected) {
      long n = socket.receive(buffer.asSlice(filled, expected - filled), fds);
      if (fds.size() > UnixSocket.MAX_FDS) {
        throw new IOException(fds.size() + " fds in one message; at most " + UnixSocket.MAX_FDS);
      }
      if (n == Libc.WOULD_BLOCK) return null;
      if (n == 0) throw new EndOfStream(filled > 0);
      filled += n;
      if (filled == HEADER_SIZE) {
        long size = Integer.toUnsignedLong(buffer.get(JAVA_INT_UNALIGNED, SIZE_OFFSET));
        if (size > maxPayload) {
          throw new IOException(
              "message announces a payload of " + size + " bytes; at most " + maxPayload);
        }
        expected = HEADER_SIZE + size;
      }
    }
    Frame frame =
        new Frame(
            buffer.asSlice(0, HEADER_SIZE),
            buffer.asSlice(HEADER_SIZE, expected - HEADER_SIZE),
            List.copyOf(fds));
    fds.clear();
    filled = 0;
    expected = HEADER_SIZE;
    return frame;
  }

  /** Closes the fds of a message not yet complete, and the buffer. */
  @Override
  public void close() {
    fds.forEach(Fd::close);
    fds.clear();
    arena.close();
  }

  /** The peer closed the connection. */
  static final class EndOfStream extends IOException {
    EndOfStream(boolean midMessage) {
      super(
          midMessage
              ? "the frontend closed the connection mid-message"
              : "the frontend disconnected",
          null);
    }
  }
}
