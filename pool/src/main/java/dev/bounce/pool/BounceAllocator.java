package dev.bounce.pool;

/**
 * The guest side of a restricted pool, modelled on Linux's swiotlb: the pool is cut into 2 KiB
 * slots, grouped in segments of 128; one mapping takes contiguous slots of one segment, so it is at
 * most 256 KiB and never crosses a segment boundary. A full pool answers {@link #NO_ROOM}
 * (back-pressure: the driver waits for completions and retries), never throws or blocks.
 *
 * <p>Each segment's free slots are a 128-bit mask (two longs). A run of n free slots is found with
 * log2(n) shift-and-and steps, and segments are tried from a start that {@link Placement} chooses.
 * Nothing is allocated per call.
 *
 * <p>Not thread-safe: one driver thread owns an allocator.
 */
public final class BounceAllocator {
  public static final int SLOT_SIZE = 2048;
  public static final int SLOTS_PER_SEGMENT = 128;
  public static final int MAX_MAPPING = SLOT_SIZE * SLOTS_PER_SEGMENT;

  /** What {@link #allocate} returns when no segment has room. */
  public static final long NO_ROOM = -1;

  /** Where the search for room starts. */
  public enum Placement {
    /**
     * Next-fit from where the last allocation succeeded, as swiotlb's index does: the mappings
     * rotate through the whole pool.
     */
    ROTATING,
    /**
     * From the lowest segment that room was freed in since: memory freed a moment ago, still in the
     * CPU's caches, is used again first, as the kernel's own allocators (slab, page_frag, the
     * per-CPU page lists) do. A rotating search would sweep the whole region through the caches.
     */
    LOWEST_FREED
  }

  /** alignLow[k], alignHigh[k]: the slots of a segment that start a 2^k-slot-aligned run. */
  private static final long[] ALIGN_LOW = new long[8];

  private static final long[] ALIGN_HIGH = new long[8];

  static {
    for (int k = 0; k < 8; k++) {
      for (int slot = 0; slot < SLOTS_PER_SEGMENT; slot += 1 << k) {
        if (slot < 64) ALIGN_LOW[k] |= 1L << slot;
        else ALIGN_HIGH[k] |= 1L << (slot - 64);
      }
    }
  }

  private final long[] free; // per segment: [low, high], bit set = slot free
  private final byte[] runLength; // per slot: the slot count of the allocation starting there
  private final int segments;
  private final long capacity;
  private final boolean lowestFreed;
  private int next;
  private long slotsInUse;
  private long peakSlotsInUse;

  /**
   * A {@link Placement#ROTATING} allocator, as swiotlb's: see {@link #BounceAllocator(long,
   * Placement)}.
   */
  public BounceAllocator(long poolSize) {
    this(poolSize, Placement.ROTATING);
  }

  /**
   * An allocator over a pool of {@code poolSize} bytes; slots that would not be whole are not used.
   *
   * @throws IllegalArgumentException when the pool holds less than one slot
   */
  public BounceAllocator(long poolSize, Placement placement) {
    long slots = poolSize / SLOT_SIZE;
    if (slots < 1) {
      throw new IllegalArgumentException(
          "a bounce pool of " + poolSize + " bytes holds no " + SLOT_SIZE + "-byte slot");
    }
    long segmentCount = (slots + SLOTS_PER_SEGMENT - 1) / SLOTS_PER_SEGMENT;
    if (segmentCount > Integer.MAX_VALUE / 2) {
      throw new IllegalArgumentException("a bounce pool of " + poolSize + " bytes is too large");
    }
    this.segments = (int) segmentCount;
    this.capacity = slots * SLOT_SIZE;
    this.lowestFreed = placement == Placement.LOWEST_FREED;
    this.free = new long[2 * segments];
    this.runLength = new byte[(int) slots];
    for (int s = 0; s < segments; s++) {
      long slotsHere = Math.min(SLOTS_PER_SEGMENT, slots - (long) s * SLOTS_PER_SEGMENT);
      free[2 * s] = slotsHere >= 64 ? -1L : (1L << slotsHere) - 1;
      free[2 * s + 1] = slotsHere >= 128 ? -1L : slotsHere <= 64 ? 0 : (1L << (slotsHere - 64)) - 1;
    }
  }

  /**
   * Reserves room for {@code size} bytes aligned to {@code alignment} bytes (from the pool's
   * start).
   *
   * @return the byte offset in the pool, or {@link #NO_ROOM}
   * @throws IllegalArgumentException when size is not in 1..{@link #MAX_MAPPING} or alignment is
   *     not a power of two up to {@link #MAX_MAPPING}: the caller's bug, not a full pool
   */
  public long allocate(int size, int alignment) {
    int n = slotsFor(size);
    int alignShift = alignmentShift(alignment);
    for (int tried = 0; tried < segments; tried++) {
      int segment = next;
      int slot = findRun(segment, n, alignShift);
      if (slot >= 0) {
        take(segment, slot, n);
        return ((long) segment * SLOTS_PER_SEGMENT + slot) * SLOT_SIZE;
      }
      next = segment + 1 == segments ? 0 : segment + 1;
    }
    return NO_ROOM;
  }

  /** {@link #allocate(int, int)} with slot alignment. */
  public long allocate(int size) {
    return allocate(size, 1);
  }

  /**
   * Returns what {@link #allocate} gave for {@code size} bytes at {@code offset}.
   *
   * @throws IllegalArgumentException when offset is not one allocate returned
   * @throws IllegalStateException when some of those slots are already free (a double free, or the
   *     wrong size)
   */
  public void free(long offset, int size) {
    int n = slotsFor(size);
    if (offset < 0 || offset % SLOT_SIZE != 0 || offset > capacity - (long) n * SLOT_SIZE) {
      throw new IllegalArgumentException(
          "offset " + offset + " (" + size + " bytes) is not an allocation of this pool");
    }
    long firstSlot = offset / SLOT_SIZE;
    int segment = (int) (firstSlot / SLOTS_PER_SEGMENT);
    int slot = (int) (firstSlot % SLOTS_PER_SEGMENT);
    if (slot + n > SLOTS_PER_SEGMENT) {
      throw new IllegalArgumentException(
          "offset " + offset + " (" + size + " bytes) crosses a segment: not an allocation");
    }
    long maskLow = runLow(slot, n);
    long maskHigh = runHigh(slot, n);
    if ((free[2 * segment] & maskLow) != 0 || (free[2 * segment + 1] & maskHigh) != 0) {
      throw new IllegalStateException(
          "freeing offset " + offset + " (" + size + " bytes): some of it is already free");
    }
    int start = (int) firstSlot;
    if (runLength[start] == 0) {
      throw new IllegalArgumentException(
          "offset " + offset + " is inside an allocation, not its start");
    }
    if ((runLength[start] & 0xff) != n) {
      throw new IllegalStateException(
          "freeing offset "
              + offset
              + " as "
              + n
              + " slots; it was allocated as "
              + (runLength[start] & 0xff));
    }
    runLength[start] = 0;
    free[2 * segment] |= maskLow;
    free[2 * segment + 1] |= maskHigh;
    slotsInUse -= n;
    if (lowestFreed && segment < next) next = segment;
  }

  /** Bytes the pool can hand out in all. */
  public long capacity() {
    return capacity;
  }

  /** Bytes reserved now (whole slots). */
  public long bytesInUse() {
    return slotsInUse * SLOT_SIZE;
  }

  /** The most bytes ever reserved at once. */
  public long peakBytesInUse() {
    return peakSlotsInUse * SLOT_SIZE;
  }

  private static int slotsFor(int size) {
    if (size <= 0 || size > MAX_MAPPING) {
      throw new IllegalArgumentException(
          "a bounce mapping is 1.." + MAX_MAPPING + " bytes, not " + size);
    }
    return (size + SLOT_SIZE - 1) / SLOT_SIZE;
  }

  private static int alignmentShift(int alignment) {
    if (alignment <= 0 || Integer.bitCount(alignment) != 1 || alignment > MAX_MAPPING) {
      throw new IllegalArgumentException(
          "alignment must be a power of two up to " + MAX_MAPPING + ", not " + alignment);
    }
    return alignment <= SLOT_SIZE ? 0 : Integer.numberOfTrailingZeros(alignment / SLOT_SIZE);
  }

  /** The first slot of {@code segment} that starts n free slots at the alignment, or -1. */
  private int findRun(int segment, int n, int alignShift) {
    long low = free[2 * segment];
    long high = free[2 * segment + 1];
    // Invariant: bit i set iff slots i .. i+len-1 are all free. Doubling len keeps it in log2(n)
    // steps.
    for (int len = 1; len < n; ) {
      int shift = Math.min(len, n - len);
      long shiftedLow =
          shift < 64 ? (low >>> shift) | (high << (64 - shift)) : high >>> (shift - 64);
      long shiftedHigh = shift < 64 ? high >>> shift : 0;
      low &= shiftedLow;
      high &= shiftedHigh;
      len += shift;
    }
    low &= ALIGN_LOW[alignShift];
    high &= ALIGN_HIGH[alignShift];
    if (low != 0) return Long.numberOfTrailingZeros(low);
    if (high != 0) return 64 + Long.numberOfTrailingZeros(high);
    return -1;
  }

  private void take(int segment, int slot, int n) {
    free[2 * segment] &= ~runLow(slot, n);
    free[2 * segment + 1] &= ~runHigh(slot, n);
    runLength[segment * SLOTS_PER_SEGMENT + slot] = (byte) n;
    slotsInUse += n;
    if (slotsInUse > peakSlotsInUse) peakSlotsInUse = slotsInUse;
  }

  /** The low word of a mask with slots slot .. slot+n-1 set (n >= 1, slot + n <= 128). */
  private static long runLow(int slot, int n) {
    if (slot >= 64) return 0;
    int end = Math.min(64, slot + n);
    return ones(end - slot) << slot;
  }

  private static long runHigh(int slot, int n) {
    int end = slot + n;
    if (end <= 64) return 0;
    int from = Math.max(64, slot);
    return ones(end - from) << (from - 64);
  }

  private static long ones(int count) {
    return count == 64 ? -1L : (1L << count) - 1;
  }
}
