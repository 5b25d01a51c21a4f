package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * The log description of SET_LOG_BASE: the size of the dirty log and its offset in the fd that
 * comes with it (LOG_SHMFD). bounce does not offer LOG_SHMFD; this is decoded so the request can be
 * named and refused cleanly.
 */
public record LogDescription(long mmapSize, long mmapOffset) implements Payload {
  public static final int SIZE = 16;

  static LogDescription decode(ByteBuf in) {
    return new LogDescription(in.readLongLE(), in.readLongLE());
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeLongLE(mmapSize);
    out.writeLongLE(mmapOffset);
  }

  @Override
  public String describe() {
    return "mmap_size=" + Format.hex(mmapSize) + " mmap_offset=" + Format.hex(mmapOffset);
  }
}
