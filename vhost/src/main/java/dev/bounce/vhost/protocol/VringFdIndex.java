package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * The u64 of SET_VRING_KICK, SET_VRING_CALL and SET_VRING_ERR: the vring index in bits 0-7, and in
 * bit 8 the "invalid FD" flag (VHOST_USER_VRING_NOFD_MASK), set when no eventfd comes with the
 * message (poll instead of waiting for kicks; no call or error notification). Any other bit set is
 * an error: it would otherwise be read as a different index.
 */
public record VringFdIndex(int index, boolean noFd) implements Payload {
  public static final int SIZE = 8;

  /** VHOST_USER_VRING_IDX_MASK. */
  public static final long INDEX_MASK = 0xFF;

  /** VHOST_USER_VRING_NOFD_MASK. */
  public static final long NOFD_MASK = 1L << 8;

  public VringFdIndex {
    Fields.u8("vring index", index);
  }

  static VringFdIndex decode(ByteBuf in) throws BadPayload {
    long value = in.readLongLE();
    if ((value & ~(INDEX_MASK | NOFD_MASK)) != 0) {
      throw BadPayload.value(
          "vring fd word "
              + Format.hex(value)
              + " sets bits beyond the index (0-7) and the no-fd flag (8)");
    }
    return new VringFdIndex((int) (value & INDEX_MASK), (value & NOFD_MASK) != 0);
  }

  /** The u64 on the wire. */
  public long value() {
    return index | (noFd ? NOFD_MASK : 0);
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeLongLE(value());
  }

  @Override
  public String describe() {
    return "index=" + index + (noFd ? " nofd" : "");
  }
}
