package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * The 12-byte message header (vhost-user.rst, "Header"): u32 request, u32 flags, u32 payload size,
 * little endian (the spec says native order; bounce runs on little-endian hosts only, as QEMU's
 * peers here do). Plain data: the checks live with the side that reads it ({@link
 * Requests#checkHeader}, {@link BackendRequests#checkHeader}, {@link Replies#checkHeader}), which
 * knows what the request code means there.
 *
 * @param request the request code (unsigned)
 * @param flags version in bits 0-1, REPLY in bit 2, NEED_REPLY in bit 3
 * @param size the payload size in bytes (unsigned)
 */
public record Header(int request, int flags, int size) {
  /** Bytes on the wire. */
  public static final int SIZE = 12;

  /**
   * The largest payload accepted; a header announcing more ends the connection before a byte of the
   * payload is buffered, so a peer cannot make bounce allocate what it likes. The largest
   * legitimate payloads are small: the GET_SHMEM_CONFIG reply is 8 + 256 * 8 = 2056 bytes;
   * SET_MEM_TABLE is at most 8 + 8 * 32 = 264 (328 with XEN_MMAP's longer regions); GET/SET_CONFIG
   * at most 12 + 256 = 268; everything else is 40 bytes or less. One page covers them all with room
   * to spare, and is the bound rust-vmm/vhost uses (MAX_MSG_SIZE = 0x1000).
   */
  public static final int MAX_PAYLOAD = 4096;

  /** The protocol version, the only one there is. */
  public static final int VERSION = 0x1;

  /** The version bits. */
  public static final int VERSION_MASK = 0x3;

  /** Set on every reply. */
  public static final int REPLY = 0x4;

  /** The sender waits for a reply (REPLY_ACK, or a request that always has one). */
  public static final int NEED_REPLY = 0x8;

  /**
   * The flags of every reply, exactly: QEMU rejects any other value ("Failed to read msg header.
   * Flags 0x9 instead of 0x5"), so NEED_REPLY is never echoed.
   */
  public static final int REPLY_FLAGS = VERSION | REPLY;

  /** Flag bits the spec defines; any other bit set is an error. */
  static final int KNOWN_FLAGS = VERSION_MASK | REPLY | NEED_REPLY;

  /** A request header: version 1, NEED_REPLY if asked. */
  public static Header request(int code, int size, boolean needReply) {
    return new Header(code, VERSION | (needReply ? NEED_REPLY : 0), size);
  }

  /** A reply header: flags exactly {@link #REPLY_FLAGS}. */
  public static Header reply(int code, int size) {
    return new Header(code, REPLY_FLAGS, size);
  }

  /**
   * Reads the 12 header bytes from {@code in}, unchecked.
   *
   * @throws ProtocolException (TRUNCATED) when fewer than 12 bytes are readable
   */
  public static Header read(ByteBuf in) throws ProtocolException {
    if (in.readableBytes() < SIZE) {
      throw ProtocolException.of(
          ProtocolException.Kind.TRUNCATED,
          -1,
          null,
          false,
          "header is " + Format.bytesCount(in.readableBytes()) + ", expected " + SIZE,
          in.readableBytes(),
          SIZE);
    }
    return new Header(in.readIntLE(), in.readIntLE(), in.readIntLE());
  }

  /** Writes the 12 header bytes. */
  public void write(ByteBuf out) {
    out.writeIntLE(request);
    out.writeIntLE(flags);
    out.writeIntLE(size);
  }

  /** The payload size as the unsigned number it is. */
  public long payloadSize() {
    return Integer.toUnsignedLong(size);
  }

  public int version() {
    return flags & VERSION_MASK;
  }

  public boolean isReply() {
    return (flags & REPLY) != 0;
  }

  public boolean needsReply() {
    return (flags & NEED_REPLY) != 0;
  }

  /** Flag bits set that the spec does not define. */
  public int unknownFlags() {
    return flags & ~KNOWN_FLAGS;
  }

  /** "req=9 flags=0x1 size=40", as the recorded sequences print headers. */
  public String describe() {
    return "req="
        + Integer.toUnsignedString(request)
        + " flags="
        + Format.hex(Integer.toUnsignedLong(flags))
        + " size="
        + payloadSize();
  }
}
