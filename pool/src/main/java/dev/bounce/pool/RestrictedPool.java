package dev.bounce.pool;

import static dev.bounce.pool.Ranges.describe;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.stream.Stream;

/**
 * A window of guest-physical space, the restricted-DMA pool, on top of whatever memory the frontend
 * shares. Only the window's pages of the frontend's fds are ever mapped, so no bug here can reach
 * guest memory outside it; every translation outside the window fails with a {@link
 * PoolViolationException} that carries the address, the length and the window's bounds.
 *
 * <p>Regions the frontend shares are clipped to the window; those that miss it entirely are
 * remembered (so REM_MEM_REG still finds them) but never mapped, and their fds are closed at once.
 */
public final class RestrictedPool implements GuestAddressSpace {
  private final long start;
  private final long size;
  private final GuestMemory mapped;
  private final List<MemoryRegionDescription> unmapped;

  private RestrictedPool(
      long start, long size, GuestMemory mapped, List<MemoryRegionDescription> unmapped) {
    this.start = start;
    this.size = size;
    this.mapped = mapped;
    this.unmapped = List.copyOf(unmapped);
  }

  /**
   * A pool at guest-physical {@code [start, start + size)} with no memory shared yet.
   *
   * @throws IllegalArgumentException when the window is empty, wraps 2^64, or is not page-aligned
   *     (only whole pages can be mapped, and a restricted-dma-pool is always page-aligned)
   */
  public static RestrictedPool at(long start, long size) {
    if (size <= 0 || !Ranges.fits(start, size)) {
      throw new IllegalArgumentException(
          "restricted pool at "
              + Ranges.hex(start)
              + " of "
              + size
              + " bytes is empty or wraps 2^64");
    }
    if (start % Mapping.PAGE_SIZE != 0 || size % Mapping.PAGE_SIZE != 0) {
      throw new IllegalArgumentException(
          "restricted pool "
              + describe(start, size)
              + " is not page-aligned ("
              + Ranges.describeSize(Mapping.PAGE_SIZE)
              + " pages)");
    }
    return new RestrictedPool(start, size, GuestMemory.empty(), List.of());
  }

  public long start() {
    return start;
  }

  public long size() {
    return size;
  }

  /** Whether all of guest {@code [address, address + length)} is inside the window. */
  public boolean contains(long address, long length) {
    return Ranges.contains(start, size, address, length);
  }

  @Override
  public MemorySegment translate(long address, long length) throws GuestAccessException {
    if (!contains(address, length)) {
      throw new PoolViolationException(AddressKind.GUEST_PHYSICAL, address, length, start, size);
    }
    return mapped.translate(address, length);
  }

  /**
   * Frontend addresses (SET_VRING_ADDR) resolve only through the mapped part of each region, so
   * anything that does not land inside the window is refused.
   */
  @Override
  public MemorySegment translateUserAddress(long address, long length)
      throws PoolViolationException {
    try {
      return mapped.translateUserAddress(address, length);
    } catch (UnmappedAddressException e) {
      throw new PoolViolationException(AddressKind.FRONTEND_VIRTUAL, address, length, start, size);
    }
  }

  @Override
  public GuestRegion regionAt(long address, long length) {
    return contains(address, length) ? mapped.regionAt(address, length) : null;
  }

  @Override
  public RestrictedPool withRegion(MemoryRegionDescription region, Fd fd) throws NativeException {
    MemoryRegionDescription inside;
    try {
      GuestMemory.checkRoom(region, shared());
      inside = region.clip(start, size);
      if (inside != null) requirePageAligned(inside, region);
    } catch (RuntimeException e) {
      fd.close();
      throw e;
    }
    if (inside == null) {
      fd.close();
      List<MemoryRegionDescription> next = new ArrayList<>(unmapped);
      next.add(region);
      return new RestrictedPool(start, size, mapped, next);
    }
    return new RestrictedPool(start, size, mapped.withRegion(region, inside, fd), unmapped);
  }

  /**
   * mmap(2) maps whole pages: the pool's part of a region whose file offset is not on a page
   * boundary where its guest address is would bring the fd's bytes next to the pool (guest memory
   * outside it) into this process. Without a pool {@link GuestRegion#map} serves such offsets; here
   * they are refused.
   */
  private static void requirePageAligned(
      MemoryRegionDescription inside, MemoryRegionDescription region) {
    if (inside.mmapOffset() % Mapping.PAGE_SIZE != 0
        || inside.guestAddress() % Mapping.PAGE_SIZE != 0
        || inside.size() % Mapping.PAGE_SIZE != 0) {
      throw new IllegalArgumentException(
          region
              + ": its part in the restricted pool, "
              + inside
              + ", is not whole pages of its file, so mapping it would map memory outside the"
              + " pool; align the region's mmap offset with its guest address");
    }
  }

  @Override
  public RestrictedPool withoutRegion(MemoryRegionDescription region) {
    if (mapped.holds(region)) {
      return new RestrictedPool(start, size, mapped.withoutRegion(region), unmapped);
    }
    List<MemoryRegionDescription> next = new ArrayList<>(unmapped);
    if (!next.removeIf(r -> r.sameRegion(region))) {
      throw new IllegalArgumentException("cannot remove " + region + ": no such region");
    }
    return new RestrictedPool(start, size, mapped, next);
  }

  @Override
  public long mappedBytes() {
    return mapped.mappedBytes();
  }

  /** Only each region's part in the window counts: only that is ever mapped. */
  @Override
  public long mappedBytesWith(List<MemoryRegionDescription> added) {
    return mapped.mappedBytesWith(
        added.stream().map(r -> r.clip(start, size)).filter(Objects::nonNull).toList());
  }

  private List<MemoryRegionDescription> shared() {
    return Stream.concat(mapped.regions().stream().map(GuestRegion::shared), unmapped.stream())
        .toList();
  }

  @Override
  public int regionCount() {
    return mapped.regionCount() + unmapped.size();
  }

  /** The mapped parts: each region's intersection with the window. */
  public GuestMemory mapped() {
    return mapped;
  }

  /**
   * Whether the frontend has shared every byte of the window. A pool with holes is a configuration
   * mismatch (the DT pool and the memory the VMM shares disagree); callers report it before
   * starting rings.
   */
  public boolean isFullyShared() {
    return mapped.mappedBytes() == size;
  }

  @Override
  public void retire(GuestAddressSpace successor) {
    mapped.retire(successor);
  }

  @Override
  public void close() {
    mapped.close();
  }

  @Override
  public String toString() {
    return "restricted pool "
        + describe(start, size)
        + " over "
        + mapped.regions()
        + (unmapped.isEmpty() ? "" : ", outside it " + unmapped);
  }
}
