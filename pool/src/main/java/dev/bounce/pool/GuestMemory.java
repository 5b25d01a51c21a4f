package dev.bounce.pool;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.function.ToLongFunction;

/**
 * All the memory the frontend shared, region by region. Lookup is a binary search over the regions
 * sorted by guest-physical address (and a second index by frontend address): O(log n) over up to
 * {@link #MAX_REGIONS}, nothing allocated but the slice returned.
 */
public final class GuestMemory implements GuestAddressSpace {
  private static final GuestMemory EMPTY = new GuestMemory(List.of());

  private final List<GuestRegion> regions;
  private final Index byGuest;
  private final Index byUser;

  private GuestMemory(List<GuestRegion> regions) {
    this.regions = List.copyOf(regions);
    this.byGuest = new Index(regions, r -> r.mapped().guestAddress());
    this.byUser = new Index(regions, r -> r.mapped().userAddress());
  }

  public static GuestMemory empty() {
    return EMPTY;
  }

  @Override
  public MemorySegment translate(long address, long length) throws UnmappedAddressException {
    GuestRegion region = byGuest.find(address, length);
    if (region == null)
      throw new UnmappedAddressException(AddressKind.GUEST_PHYSICAL, address, length);
    return region.segment().asSlice(address - region.mapped().guestAddress(), length);
  }

  @Override
  public MemorySegment translateUserAddress(long address, long length)
      throws UnmappedAddressException {
    GuestRegion region = byUser.find(address, length);
    if (region == null) {
      throw new UnmappedAddressException(AddressKind.FRONTEND_VIRTUAL, address, length);
    }
    return region.segment().asSlice(address - region.mapped().userAddress(), length);
  }

  @Override
  public GuestRegion regionAt(long address, long length) {
    return byGuest.find(address, length);
  }

  @Override
  public GuestMemory withRegion(MemoryRegionDescription region, Fd fd) throws NativeException {
    return withRegion(region, region, fd);
  }

  /**
   * Adds {@code shared}, of which only {@code mapped} is mapped (the restricted pool's clipping).
   */
  GuestMemory withRegion(MemoryRegionDescription shared, MemoryRegionDescription mapped, Fd fd)
      throws NativeException {
    try {
      checkRoom(shared, regions.stream().map(GuestRegion::shared).toList());
    } catch (RuntimeException e) {
      fd.close();
      throw e;
    }
    List<GuestRegion> next = new ArrayList<>(regions);
    next.add(GuestRegion.map(shared, mapped, fd));
    return new GuestMemory(next);
  }

  /** Refuses a region that would overlap {@code present} or exceed {@link #MAX_REGIONS}. */
  static void checkRoom(MemoryRegionDescription region, List<MemoryRegionDescription> present) {
    if (present.size() >= MAX_REGIONS) {
      throw new IllegalArgumentException(
          "cannot add " + region + ": already " + MAX_REGIONS + " regions (the maximum)");
    }
    for (MemoryRegionDescription other : present) {
      if (region.overlaps(other)) {
        throw new IllegalArgumentException("cannot add " + region + ": it overlaps " + other);
      }
    }
  }

  @Override
  public GuestMemory withoutRegion(MemoryRegionDescription region) {
    List<GuestRegion> next = new ArrayList<>(regions);
    if (!next.removeIf(r -> r.shared().sameRegion(region))) {
      throw new IllegalArgumentException("cannot remove " + region + ": no such region");
    }
    return next.isEmpty() ? EMPTY : new GuestMemory(next);
  }

  /** Whether some region's shared description is the one REM_MEM_REG names. */
  boolean holds(MemoryRegionDescription region) {
    return regions.stream().anyMatch(r -> r.shared().sameRegion(region));
  }

  @Override
  public int regionCount() {
    return regions.size();
  }

  public List<GuestRegion> regions() {
    return regions;
  }

  @Override
  public void retire(GuestAddressSpace successor) {
    List<GuestRegion> kept =
        switch (successor) {
          case GuestMemory memory -> memory.regions;
          case RestrictedPool pool -> pool.mapped().regions;
        };
    for (GuestRegion region : regions) {
      if (kept.stream().noneMatch(k -> k == region)) region.close();
    }
  }

  @Override
  public void close() {
    retire(EMPTY);
  }

  @Override
  public String toString() {
    return "guest memory " + regions;
  }

  /**
   * Regions sorted by start address in one address space. Starts are also stored with the sign bit
   * flipped, so that signed comparison orders them as the unsigned addresses they are.
   */
  private static final class Index {
    private final GuestRegion[] sorted;
    private final long[] starts;
    private final long[] biasedStarts;
    private final long[] sizes;

    Index(List<GuestRegion> regions, ToLongFunction<GuestRegion> start) {
      this.sorted =
          regions.stream()
              .sorted(Comparator.comparing(start::applyAsLong, Long::compareUnsigned))
              .toArray(GuestRegion[]::new);
      this.starts = Arrays.stream(sorted).mapToLong(start).toArray();
      this.biasedStarts = Arrays.stream(starts).map(s -> s ^ Long.MIN_VALUE).toArray();
      this.sizes = Arrays.stream(sorted).mapToLong(r -> r.mapped().size()).toArray();
    }

    /** The region holding all of {@code [address, address + length)}, or null. */
    GuestRegion find(long address, long length) {
      long key = address ^ Long.MIN_VALUE;
      int lo = 0;
      int hi = biasedStarts.length - 1;
      int floor = -1;
      while (lo <= hi) {
        int mid = (lo + hi) >>> 1;
        if (biasedStarts[mid] <= key) {
          floor = mid;
          lo = mid + 1;
        } else {
          hi = mid - 1;
        }
      }
      if (floor < 0 || !Ranges.contains(starts[floor], sizes[floor], address, length)) return null;
      return sorted[floor];
    }
  }
}
