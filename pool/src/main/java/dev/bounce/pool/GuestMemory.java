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

  @Override
  public long mappedBytes() {
    return regions.stream().mapToLong(r -> r.mapped().size()).sum(); // at most PROCESS_LIMIT
  }

  @Override
  public long mappedBytesWith(List<MemoryRegionDescription> added) {
    long total = mappedBytes();
    for (MemoryRegionDescription region : added) total = Ranges.sizeSum(total, region.size());
    return total;
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
    RuntimeException failure = null;
    for (GuestRegion region : regions) {
      if (kept.stream().noneMatch(k -> k == region)) {
        try {
          region.close();
        } catch (RuntimeException e) {
          if (failure == null) failure = e;
          else failure.addSuppressed(e);
        }
      }
    }
    if (failure != null) throw failure;
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
   *
   * <p>With more than a few regions, a table of {@link #BUCKETS} equal slices of the covered span
   * narrows the binary search first: each bucket knows which regions can hold its first and its
   * last byte, so a lookup is one table load and usually no search step (509 regions: ~4 ns instead
   * of ~11 ns).
   */
  private static final class Index {
    private static final int BUCKETS = 1024;
    private static final int SEARCH_ONLY = 8;

    private final GuestRegion[] sorted;
    private final long[] starts;
    private final long[] biasedStarts;
    private final long[] sizes;
    private final long base;
    private final long span;
    private final int shift;
    private final int[] firstCandidate;
    private final int[] lastCandidate;

    Index(List<GuestRegion> regions, ToLongFunction<GuestRegion> start) {
      this.sorted =
          regions.stream()
              .sorted(Comparator.comparing(start::applyAsLong, Long::compareUnsigned))
              .toArray(GuestRegion[]::new);
      this.starts = Arrays.stream(sorted).mapToLong(start).toArray();
      this.biasedStarts = Arrays.stream(starts).map(s -> s ^ Long.MIN_VALUE).toArray();
      this.sizes = Arrays.stream(sorted).mapToLong(r -> r.mapped().size()).toArray();
      int n = sorted.length;
      this.base = n == 0 ? 0 : starts[0];
      // The span's last byte: no overflow, a region never wraps 2^64.
      long lastByte = n == 0 ? 0 : starts[n - 1] + (sizes[n - 1] - 1) - base;
      this.span = lastByte + 1; // 0 when the regions reach from 0 to 2^64 - 1
      this.shift = Math.max(0, (64 - Long.numberOfLeadingZeros(lastByte)) - 10);
      if (n <= SEARCH_ONLY) {
        this.firstCandidate = null;
        this.lastCandidate = null;
        return;
      }
      this.firstCandidate = new int[BUCKETS];
      this.lastCandidate = new int[BUCKETS];
      for (int b = 0; b < BUCKETS; b++) {
        long firstOffset = (long) b << shift;
        if (Long.compareUnsigned(firstOffset, lastByte) > 0)
          break; // past the span: never looked up
        long lastOffset = firstOffset + ((1L << shift) - 1);
        if (Long.compareUnsigned(lastOffset, lastByte) > 0) lastOffset = lastByte;
        firstCandidate[b] = floor(base + firstOffset, 0, n - 1);
        lastCandidate[b] = floor(base + lastOffset, 0, n - 1);
      }
    }

    /** The region holding all of {@code [address, address + length)}, or null. */
    GuestRegion find(long address, long length) {
      int candidate;
      if (firstCandidate == null) {
        candidate = floor(address, 0, biasedStarts.length - 1);
      } else {
        long offset = address - base;
        if (Long.compareUnsigned(address, base) < 0) return null;
        if (span != 0 && Long.compareUnsigned(offset, span) >= 0) {
          candidate =
              sorted.length - 1; // past the last byte: only a zero-length access at its end fits
        } else {
          int bucket = (int) (offset >>> shift);
          candidate = floor(address, firstCandidate[bucket], lastCandidate[bucket]);
        }
      }
      if (candidate < 0 || !Ranges.contains(starts[candidate], sizes[candidate], address, length)) {
        return null;
      }
      return sorted[candidate];
    }

    /** The last index in {@code [lo, hi]} whose start is at or below {@code address}, or lo - 1. */
    private int floor(long address, int lo, int hi) {
      long key = address ^ Long.MIN_VALUE;
      int found = lo - 1;
      while (lo <= hi) {
        int mid = (lo + hi) >>> 1;
        if (biasedStarts[mid] <= key) {
          found = mid;
          lo = mid + 1;
        } else {
          hi = mid - 1;
        }
      }
      return found;
    }
  }
}
