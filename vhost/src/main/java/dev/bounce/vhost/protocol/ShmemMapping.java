package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * The MMAP request of BACKEND_SHMEM_MAP (with the fd to map) and BACKEND_SHMEM_UNMAP (VIRTIO Shared
 * Memory series): u8 shmid, 7 bytes of padding, u64 fd offset, shared memory offset, length, flags
 * (bit 0: read-write, else read-only). A zero length or a range wrapping 2^64 is refused.
 */
public record ShmemMapping(int shmid, long fdOffset, long shmOffset, long length, long flags)
    implements Payload {
  public static final int SIZE = 40;

  /** The mapping is read-write; without it, read-only. */
  public static final long FLAG_WRITABLE = 0x1;

  public ShmemMapping {
    Fields.u8("shmid", shmid);
    String problem = problem(fdOffset, shmOffset, length, flags);
    if (problem != null) throw new IllegalArgumentException(problem);
  }

  private static String problem(long fdOffset, long shmOffset, long length, long flags) {
    if ((flags & ~FLAG_WRITABLE) != 0) return "mmap flags " + Format.hex(flags) + " undefined";
    if (length == 0) return "mmap length is 0";
    if (!Fields.fits(fdOffset, length) || !Fields.fits(shmOffset, length)) {
      return "mmap of "
          + Format.hex(length)
          + " bytes at fd offset "
          + Format.hex(fdOffset)
          + ", shm offset "
          + Format.hex(shmOffset)
          + " wraps 2^64";
    }
    return null;
  }

  public boolean writable() {
    return (flags & FLAG_WRITABLE) != 0;
  }

  static ShmemMapping decode(ByteBuf in) throws BadPayload {
    int shmid = in.readUnsignedByte();
    in.skipBytes(7);
    long fdOffset = in.readLongLE();
    long shmOffset = in.readLongLE();
    long length = in.readLongLE();
    long flags = in.readLongLE();
    String problem = problem(fdOffset, shmOffset, length, flags);
    if (problem != null) throw BadPayload.value(problem);
    return new ShmemMapping(shmid, fdOffset, shmOffset, length, flags);
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeByte(shmid);
    out.writeZero(7);
    out.writeLongLE(fdOffset);
    out.writeLongLE(shmOffset);
    out.writeLongLE(length);
    out.writeLongLE(flags);
  }

  @Override
  public String describe() {
    return "shmid="
        + shmid
        + " fd_offset="
        + Format.hex(fdOffset)
        + " shm_offset="
        + Format.hex(shmOffset)
        + " len="
        + Format.hex(length)
        + " flags="
        + Format.hex(flags);
  }
}
