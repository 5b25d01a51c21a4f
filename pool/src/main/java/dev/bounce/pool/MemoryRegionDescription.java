package dev.bounce.pool;

import static dev.bounce.pool.Ranges.describe;
import static dev.bounce.pool.Ranges.hex;

/**
 * One memory region as vhost-user describes it (VhostUserMemoryRegion in vhost-user.rst): where it
 * lies in guest-physical space, its size, where the frontend has it mapped, and where it starts in
 * the fd that carries it. Validated on creation: a frontend cannot describe a region that wraps
 * 2^64.
 */
public record MemoryRegionDescription(
    long guestAddress, long size, long userAddress, long mmapOffset) {

  public MemoryRegionDescription {
    if (size <= 0) throw new IllegalArgumentException("region size must be positive: " + size);
    if (mmapOffset < 0) {
      throw new IllegalArgumentException("region mmap offset is negative: " + hex(mmapOffset));
    }
    if (!Ranges.fits(guestAddress, size)) {
      throw new IllegalArgumentException(
          "region at guest address " + hex(guestAddress) + " of " + size + " bytes wraps 2^64");
    }
    if (!Ranges.fits(userAddress, size)) {
      throw new IllegalArgumentException(
          "region at frontend address " + hex(userAddress) + " of " + size + " bytes wraps 2^64");
    }
    if (!Ranges.fits(mmapOffset, size) || mmapOffset + size < 0) {
      throw new IllegalArgumentException(
          "region at mmap offset "
              + hex(mmapOffset)
              + " of "
              + size
              + " bytes is past any file end");
    }
  }

  /** Whether this and {@code other} share a guest-physical or a frontend-virtual byte. */
  public boolean overlaps(MemoryRegionDescription other) {
    return Ranges.overlap(guestAddress, size, other.guestAddress, other.size)
        || Ranges.overlap(userAddress, size, other.userAddress, other.size);
  }

  /**
   * REM_MEM_REG identifies a region by guest address, user address and size; the mmap offset is
   * ignored (vhost-user.rst, VHOST_USER_REM_MEM_REG).
   */
  public boolean sameRegion(MemoryRegionDescription other) {
    return guestAddress == other.guestAddress
        && userAddress == other.userAddress
        && size == other.size;
  }

  /**
   * The part of this region inside guest-physical {@code [start, start + size)}, with its user
   * address and mmap offset moved along; null when they do not meet.
   */
  MemoryRegionDescription clip(long start, long windowSize) {
    if (!Ranges.overlap(guestAddress, size, start, windowSize)) return null;
    long from = Long.compareUnsigned(guestAddress, start) >= 0 ? guestAddress : start;
    long end = guestAddress + size;
    long windowEnd = start + windowSize;
    long to = Long.compareUnsigned(end - 1, windowEnd - 1) <= 0 ? end : windowEnd;
    long skip = from - guestAddress;
    return new MemoryRegionDescription(from, to - from, userAddress + skip, mmapOffset + skip);
  }

  @Override
  public String toString() {
    return "region guest "
        + describe(guestAddress, size)
        + " frontend "
        + hex(userAddress)
        + " mmap offset "
        + hex(mmapOffset);
  }
}
