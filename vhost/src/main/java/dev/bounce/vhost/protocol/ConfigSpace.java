package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;
import java.util.Arrays;

/**
 * The virtio device config space layout of GET_CONFIG and SET_CONFIG: u32 offset, u32 size, u32
 * flags, then size bytes. The header size must be 12 + size, and offset + size must stay within
 * {@link #MAX_SIZE} (QEMU's VHOST_USER_MAX_CONFIG_SIZE): a config access is small, and a frontend
 * cannot make the backend read or write past the device's config space.
 *
 * <p>A GET_CONFIG request carries size bytes of filler (QEMU sends zeros); the reply carries the
 * same offset and size with the contents. An empty reply payload (header size 0) is the back-end's
 * failure, see {@link Replies#configFailure}.
 *
 * @param flags 0 for a driver write (VHOST_SET_CONFIG_TYPE_FRONTEND), 1 during migration
 *     (VHOST_SET_CONFIG_TYPE_MIGRATION); not checked here, since rust-vmm uses 0x1 and 0x2 as bits
 *     instead: the device decides what to accept
 */
public record ConfigSpace(int offset, long flags, byte[] data) implements Payload {
  /** VHOST_USER_MAX_CONFIG_SIZE. */
  public static final int MAX_SIZE = 256;

  /** offset, size and flags. */
  public static final int PREFIX = 12;

  public static final long TYPE_FRONTEND = 0;
  public static final long TYPE_MIGRATION = 1;

  public ConfigSpace {
    Fields.u32("config flags", flags);
    data = data.clone();
    if (offset < 0 || data.length == 0 || (long) offset + data.length > MAX_SIZE) {
      throw new IllegalArgumentException(
          "config access at offset "
              + offset
              + " of "
              + data.length
              + " bytes is not within 1 to "
              + MAX_SIZE
              + " bytes");
    }
  }

  /** A GET_CONFIG request for {@code length} bytes at {@code offset} (zero filler, as QEMU). */
  public static ConfigSpace read(int offset, int length) {
    return new ConfigSpace(offset, TYPE_FRONTEND, new byte[length]);
  }

  static ConfigSpace decode(ByteBuf in, int size) throws BadPayload {
    if (size < PREFIX) {
      throw BadPayload.size(
          "payload is " + Format.bytesCount(size) + ", shorter than offset, size and flags",
          size,
          PREFIX);
    }
    long offset = in.readUnsignedIntLE();
    long length = in.readUnsignedIntLE();
    long flags = in.readUnsignedIntLE();
    if (size != PREFIX + length) {
      throw BadPayload.size(
          "payload is "
              + Format.bytesCount(size)
              + ", expected "
              + (PREFIX + length)
              + " for "
              + length
              + " config bytes",
          size,
          PREFIX + length);
    }
    if (length == 0 || offset + length > MAX_SIZE) {
      throw BadPayload.value(
          "config access at offset "
              + offset
              + " of "
              + Format.bytesCount(length)
              + " is not within 1 to "
              + MAX_SIZE
              + " bytes");
    }
    byte[] data = new byte[(int) length];
    in.readBytes(data);
    return new ConfigSpace((int) offset, flags, data);
  }

  /** A copy of the config bytes. */
  @Override
  public byte[] data() {
    return data.clone();
  }

  /** The number of config bytes (the size field). */
  public int length() {
    return data.length;
  }

  @Override
  public int size() {
    return PREFIX + data.length;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeIntLE(offset);
    out.writeIntLE(data.length);
    out.writeIntLE((int) flags);
    out.writeBytes(data);
  }

  @Override
  public String describe() {
    return "offset="
        + offset
        + " size="
        + data.length
        + " flags="
        + Format.hex(flags)
        + " data="
        + Format.bytes(data);
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof ConfigSpace c
        && c.offset == offset
        && c.flags == flags
        && Arrays.equals(c.data, data);
  }

  @Override
  public int hashCode() {
    return (offset * 31 + Long.hashCode(flags)) * 31 + Arrays.hashCode(data);
  }

  @Override
  public String toString() {
    return "ConfigSpace[" + describe() + "]";
  }
}
