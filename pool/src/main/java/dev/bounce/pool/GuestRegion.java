package dev.bounce.pool;

import java.lang.foreign.MemorySegment;

/**
 * A region the frontend shared, mapped into this process: the description the frontend sent ({@code
 * shared}), the part of it that is mapped ({@code mapped}: all of it, or only what lies in a
 * restricted pool), the fd that carries it, and the mapping. Closing unmaps and closes the fd,
 * once.
 */
public final class GuestRegion implements AutoCloseable {
  private final MemoryRegionDescription shared;
  private final MemoryRegionDescription mapped;
  private final Fd fd;
  private final Mapping mapping;
  private final MemorySegment segment;

  private GuestRegion(
      MemoryRegionDescription shared,
      MemoryRegionDescription mapped,
      Fd fd,
      Mapping mapping,
      MemorySegment segment) {
    this.shared = shared;
    this.mapped = mapped;
    this.fd = fd;
    this.mapping = mapping;
    this.segment = segment;
  }

  /**
   * Maps the {@code mapped} part of {@code fd}. Takes ownership of {@code fd}: it is closed when
   * the region is, or at once if mapping fails. An mmap offset that is not page-aligned is served
   * by mapping from the page below and slicing.
   */
  static GuestRegion map(MemoryRegionDescription shared, MemoryRegionDescription mapped, Fd fd)
      throws NativeException {
    try {
      long slack = mapped.mmapOffset() % Mapping.PAGE_SIZE;
      Mapping mapping = Mapping.map(fd, mapped.mmapOffset() - slack, mapped.size() + slack);
      return new GuestRegion(
          shared, mapped, fd, mapping, mapping.segment().asSlice(slack, mapped.size()));
    } catch (NativeException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  /** The region as the frontend described it. */
  public MemoryRegionDescription shared() {
    return shared;
  }

  /** The part of the region this process mapped. */
  public MemoryRegionDescription mapped() {
    return mapped;
  }

  /** The mapped bytes: offset 0 is guest address {@code mapped().guestAddress()}. */
  public MemorySegment segment() {
    return segment;
  }

  public Fd fd() {
    return fd;
  }

  @Override
  public void close() {
    try {
      mapping.close();
    } finally {
      fd.close();
    }
  }

  @Override
  public String toString() {
    return mapped.equals(shared) ? shared.toString() : shared + ", mapped " + mapped;
  }
}
