package dev.bounce.vhost.protocol;

import dev.bounce.pool.MemoryRegionDescription;
import io.netty.buffer.ByteBuf;

/**
 * The memory region description (guest address, size, user address, mmap offset; u64 each), shared
 * by SET_MEM_TABLE and ADD/REM_MEM_REG.
 */
final class Regions {
  /** Bytes of one region without XEN_MMAP's two extra fields (bounce never offers XEN_MMAP). */
  static final int REGION_SIZE = 32;

  private Regions() {}

  /**
   * Reads one region; a region {@link MemoryRegionDescription} refuses (zero size, wrapping 2^64, a
   * negative mmap offset) is the peer's error.
   */
  static MemoryRegionDescription read(ByteBuf in, String which) throws BadPayload {
    long guest = in.readLongLE();
    long size = in.readLongLE();
    long user = in.readLongLE();
    long offset = in.readLongLE();
    try {
      return new MemoryRegionDescription(guest, size, user, offset);
    } catch (IllegalArgumentException e) {
      throw BadPayload.value(which + ": " + e.getMessage());
    }
  }

  static void write(ByteBuf out, MemoryRegionDescription region) {
    out.writeLongLE(region.guestAddress());
    out.writeLongLE(region.size());
    out.writeLongLE(region.userAddress());
    out.writeLongLE(region.mmapOffset());
  }

  /** The recorded sequences' spelling of a region. */
  static String describe(MemoryRegionDescription region) {
    return "guest_phys_addr="
        + Format.hex(region.guestAddress())
        + " size="
        + Format.hex(region.size())
        + " userspace_addr="
        + Format.hex(region.userAddress())
        + " mmap_offset="
        + Format.hex(region.mmapOffset());
  }
}
