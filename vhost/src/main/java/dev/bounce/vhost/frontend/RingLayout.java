package dev.bounce.vhost.frontend;

/**
 * Where one split virtqueue of {@code size} entries lies in guest-physical memory: the descriptor
 * table, then the available ring, then the used ring, each aligned as virtio 1.2 section 2.7
 * requires, the whole block a whole number of pages (as a Linux guest allocates it).
 */
public record RingLayout(long descriptorTable, long availableRing, long usedRing, long end) {
  private static final long PAGE = 4096;

  /** The layout of a queue of {@code size} entries starting at page-aligned {@code start}. */
  public static RingLayout at(long start, int size) {
    long avail = start + 16L * size;
    long used = align(avail + 6 + 2L * size, 4);
    long end = align(used + 6 + 8L * size, PAGE);
    return new RingLayout(start, avail, used, end);
  }

  /** Bytes the block takes. */
  public long bytes() {
    return end - descriptorTable;
  }

  static long align(long value, long alignment) {
    return (value + alignment - 1) & -alignment;
  }
}
