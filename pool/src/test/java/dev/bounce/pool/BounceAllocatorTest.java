package dev.bounce.pool;

import static dev.bounce.pool.BounceAllocator.MAX_MAPPING;
import static dev.bounce.pool.BounceAllocator.NO_ROOM;
import static dev.bounce.pool.BounceAllocator.SLOTS_PER_SEGMENT;
import static dev.bounce.pool.BounceAllocator.SLOT_SIZE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.BounceAllocator.Placement;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;

/**
 * The guest-side swiotlb-style slot allocator, checked against a plain model (one boolean per
 * slot): random sequences of allocations and frees never overlap, never cross a 128-slot segment,
 * honour alignment, stay within capacity, and answer {@link BounceAllocator#NO_ROOM} exactly when
 * the model has no fitting run. Seeds are printed in every failure; rerun one with -Dbounce.seed=N.
 */
class BounceAllocatorTest {
  private static final int KIB = 1024;

  /** The seed for a run: -Dbounce.seed reproduces a failure. */
  private static long baseSeed() {
    String fixed = System.getProperty("bounce.seed");
    return fixed != null ? Long.parseLong(fixed) : System.nanoTime();
  }

  /** What the allocator should hold: which slots are taken and by which allocation. */
  private static final class Model {
    final long slots;
    final boolean[] used;
    final List<long[]> live = new ArrayList<>(); // {offset, size}
    long usedSlots;
    long peakSlots;

    Model(long poolSize) {
      slots = poolSize / SLOT_SIZE;
      used = new boolean[(int) slots];
    }

    static int slotsFor(int size) {
      return (size + SLOT_SIZE - 1) / SLOT_SIZE;
    }

    /** Whether some run of n free slots in one segment starts at a multiple of alignSlots. */
    boolean hasRoom(int n, int alignSlots) {
      for (long start = 0; start + n <= slots; start += alignSlots) {
        if (start % SLOTS_PER_SEGMENT + n > SLOTS_PER_SEGMENT) continue;
        boolean free = true;
        for (long s = start; s < start + n && free; s++) free = !used[(int) s];
        if (free) return true;
      }
      return false;
    }

    /** Checks a successful allocation and records it. */
    void allocated(long offset, int size, int alignment, String context) {
      int n = slotsFor(size);
      String what = context + ": allocate(" + size + ", " + alignment + ") = " + offset;
      assertTrue(offset >= 0, what);
      assertEquals(0, offset % SLOT_SIZE, what + " is not on a slot");
      assertEquals(0, offset % alignment, what + " does not honour the alignment");
      long first = offset / SLOT_SIZE;
      assertTrue(first + n <= slots, what + " runs past the capacity of " + slots + " slots");
      assertTrue(
          first % SLOTS_PER_SEGMENT + n <= SLOTS_PER_SEGMENT, what + " crosses a segment boundary");
      for (long s = first; s < first + n; s++) {
        assertTrue(!used[(int) s], what + " overlaps a live allocation at slot " + s);
        used[(int) s] = true;
      }
      live.add(new long[] {offset, size});
      usedSlots += n;
      peakSlots = Math.max(peakSlots, usedSlots);
    }

    long[] freeOne(int index) {
      long[] a = live.remove(index);
      long first = a[0] / SLOT_SIZE;
      int n = slotsFor((int) a[1]);
      for (long s = first; s < first + n; s++) used[(int) s] = false;
      usedSlots -= n;
      return a;
    }
  }

  /** A size of 1..256 KiB: a slot count first (small ones likelier), then a size within it. */
  private static int randomSize(Random random) {
    int n =
        switch (random.nextInt(4)) {
          case 0 -> 1;
          case 1 -> 1 + random.nextInt(4);
          case 2 -> 1 + random.nextInt(32);
          default -> 1 + random.nextInt(SLOTS_PER_SEGMENT);
        };
    return (n - 1) * SLOT_SIZE + 1 + random.nextInt(SLOT_SIZE);
  }

  /** A power of two from 1 byte to 256 KiB, mostly at most one slot. */
  private static int randomAlignment(Random random) {
    return random.nextInt(3) == 0 ? 1 << random.nextInt(19) : 1 << random.nextInt(12);
  }

  @Test
  @DisplayName("random allocate/free sequences agree with a slot model (seeded)")
  void randomSequencesAgreeWithTheModel() {
    long base = baseSeed();
    int successes = 0;
    int exhausted = 0;
    for (int run = 0; run < 40; run++) {
      long seed = base + run;
      Random random = new Random(seed);
      // 1 to 24 segments, often with a partial last one, sometimes a partial slot at the end.
      long poolSize =
          (long) (1 + random.nextInt(24 * SLOTS_PER_SEGMENT)) * SLOT_SIZE
              + (random.nextBoolean() ? random.nextInt(SLOT_SIZE) : 0);
      Placement placement = Placement.values()[run % Placement.values().length];
      BounceAllocator allocator = new BounceAllocator(poolSize, placement);
      Model model = new Model(poolSize);
      String context =
          "seed " + seed + " (-Dbounce.seed=" + seed + "), pool " + poolSize + ", " + placement;
      assertEquals(model.slots * SLOT_SIZE, allocator.capacity(), context);
      for (int op = 0; op < 3_000; op++) {
        String at = context + ", op " + op;
        if (model.live.isEmpty() || random.nextInt(100) < 60) {
          int size = randomSize(random);
          int alignment = randomAlignment(random);
          int alignSlots = Math.max(1, alignment / SLOT_SIZE);
          boolean room = model.hasRoom(Model.slotsFor(size), alignSlots);
          long offset = allocator.allocate(size, alignment);
          if (offset == NO_ROOM) {
            assertTrue(
                !room,
                at
                    + ": allocate("
                    + size
                    + ", "
                    + alignment
                    + ") = NO_ROOM, but the model has room");
            exhausted++;
          } else {
            assertTrue(room, at + ": allocated where the model has no room");
            model.allocated(offset, size, alignment, at);
            successes++;
          }
        } else {
          long[] a = model.freeOne(random.nextInt(model.live.size()));
          allocator.free(a[0], (int) a[1]);
        }
        assertEquals(model.usedSlots * SLOT_SIZE, allocator.bytesInUse(), at);
        assertEquals(model.peakSlots * SLOT_SIZE, allocator.peakBytesInUse(), at);
      }
      // Free everything: the whole capacity is there again, one slot at a time.
      while (!model.live.isEmpty()) {
        long[] a = model.freeOne(model.live.size() - 1);
        allocator.free(a[0], (int) a[1]);
      }
      assertEquals(0, allocator.bytesInUse(), context);
      assertEquals(model.slots, fillWithSingleSlots(allocator), context);
      assertEquals(NO_ROOM, allocator.allocate(1), context);
    }
    assertTrue(successes > 10_000, "few allocations succeeded: " + successes);
    assertTrue(exhausted > 1_000, "the pools rarely ran full: " + exhausted);
  }

  /** Allocates single slots until NO_ROOM; checks each is new and within capacity. */
  private static long fillWithSingleSlots(BounceAllocator allocator) {
    Set<Long> seen = new HashSet<>();
    long offset;
    while ((offset = allocator.allocate(1)) != NO_ROOM) {
      assertTrue(seen.add(offset), "offset " + offset + " handed out twice");
      assertTrue(offset + SLOT_SIZE <= allocator.capacity(), "offset " + offset + " past capacity");
      assertTrue(seen.size() <= allocator.capacity() / SLOT_SIZE, "more slots than capacity");
    }
    return seen.size();
  }

  @Test
  @DisplayName(
      "a 16 MiB pool: capacity/2048 single slots fit, then NO_ROOM; after freeing all, again")
  void fullCapacityAgain() {
    BounceAllocator allocator = new BounceAllocator(16 << 20);
    long slots = allocator.capacity() / SLOT_SIZE;
    assertEquals(8192, slots);
    assertEquals(slots, fillWithSingleSlots(allocator));
    assertEquals(NO_ROOM, allocator.allocate(1));
    assertEquals(NO_ROOM, allocator.allocate(MAX_MAPPING));
    assertEquals(allocator.capacity(), allocator.bytesInUse());
    for (long s = 0; s < slots; s++) allocator.free(s * SLOT_SIZE, 1);
    assertEquals(0, allocator.bytesInUse());
    // Whole segments again: 64 maximum-size mappings.
    for (int i = 0; i < 64; i++) {
      assertNotEquals(NO_ROOM, allocator.allocate(MAX_MAPPING), "segment " + i);
    }
    assertEquals(NO_ROOM, allocator.allocate(1));
    assertEquals(allocator.capacity(), allocator.peakBytesInUse());
  }

  @Test
  @DisplayName(
      "pools with a partial last segment (and partial last slot) never hand out slots past capacity")
  void partialLastSegment() {
    List<Long> slotCounts = new ArrayList<>();
    for (long s = 1; s <= 260; s++) slotCounts.add(s);
    slotCounts.addAll(List.of(383L, 384L, 385L, 447L, 448L, 449L));
    for (long slots : slotCounts) {
      for (int extra : new int[] {0, 1, SLOT_SIZE - 1}) {
        long poolSize = slots * SLOT_SIZE + extra;
        String context = "pool of " + slots + " slots + " + extra + " bytes";
        for (int n : new int[] {1, 3, 64, 65, 127, 128}) {
          BounceAllocator allocator = new BounceAllocator(poolSize);
          assertEquals(slots * SLOT_SIZE, allocator.capacity(), context);
          long expected = 0;
          for (long seg = 0; seg * SLOTS_PER_SEGMENT < slots; seg++) {
            expected += Math.min(SLOTS_PER_SEGMENT, slots - seg * SLOTS_PER_SEGMENT) / n;
          }
          long count = 0;
          long offset;
          while ((offset = allocator.allocate(n * SLOT_SIZE)) != NO_ROOM) {
            long first = offset / SLOT_SIZE;
            assertTrue(first + n <= slots, context + ": " + n + " slots at slot " + first);
            assertTrue(first % SLOTS_PER_SEGMENT + n <= SLOTS_PER_SEGMENT, context + ": crosses");
            count++;
            assertTrue(count <= expected, context + ": more " + n + "-slot runs than fit");
          }
          assertEquals(expected, count, context + ", " + n + "-slot allocations");
          assertEquals(count * n * SLOT_SIZE, allocator.bytesInUse(), context);
        }
      }
    }
  }

  @Test
  @DisplayName("alignment: 256 KiB-aligned allocations take slot 0 of a segment, one per segment")
  void largestAlignment() {
    BounceAllocator allocator = new BounceAllocator(5 * MAX_MAPPING + 7 * SLOT_SIZE);
    Set<Long> offsets = new HashSet<>();
    long offset;
    while ((offset = allocator.allocate(1, MAX_MAPPING)) != NO_ROOM) {
      assertEquals(0, offset % MAX_MAPPING);
      assertTrue(offsets.add(offset));
    }
    assertEquals(6, offsets.size(), "one per segment, the partial one included");
    // The rest is still there for smaller alignments.
    assertNotEquals(NO_ROOM, allocator.allocate(4 * KIB, 4 * KIB));
    assertEquals(6 * SLOT_SIZE + 2 * SLOT_SIZE, allocator.bytesInUse());
  }

  @Test
  @DisplayName("exhaustion answers NO_ROOM, never throws; a freed run is found again")
  void exhaustionIsBackPressure() {
    BounceAllocator allocator = new BounceAllocator(2 * MAX_MAPPING);
    long a = allocator.allocate(MAX_MAPPING);
    long b = allocator.allocate(MAX_MAPPING);
    assertNotEquals(NO_ROOM, a);
    assertNotEquals(NO_ROOM, b);
    for (int i = 0; i < 1000; i++) assertEquals(NO_ROOM, allocator.allocate(1 + i % MAX_MAPPING));
    allocator.free(a, MAX_MAPPING);
    long again = allocator.allocate(MAX_MAPPING);
    assertEquals(a, again);
  }

  @Test
  @DisplayName(
      "ROTATING goes on from the last allocation, as swiotlb; LOWEST_FREED reuses freed room")
  void whereTheSearchStarts() {
    for (Placement placement : Placement.values()) {
      BounceAllocator allocator = new BounceAllocator(4 * MAX_MAPPING, placement);
      for (int i = 0; i <= SLOTS_PER_SEGMENT; i++) allocator.allocate(1); // segment 0 and one more
      allocator.free(5 * SLOT_SIZE, 1);
      long expected =
          placement == Placement.ROTATING ? (SLOTS_PER_SEGMENT + 1) * SLOT_SIZE : 5 * SLOT_SIZE;
      assertEquals(expected, allocator.allocate(1), placement.toString());
    }
  }

  @Test
  @DisplayName(
      "a steady stream of buffers: LOWEST_FREED stays in the first segments, ROTATING sweeps all")
  void workingSet() {
    for (Placement placement : Placement.values()) {
      BounceAllocator allocator = new BounceAllocator(64 * MAX_MAPPING, placement);
      ArrayDeque<Long> inFlight = new ArrayDeque<>();
      long highest = 0;
      for (int i = 0; i < 20_000; i++) {
        long offset = allocator.allocate(2 * SLOT_SIZE);
        highest = Math.max(highest, offset);
        inFlight.addLast(offset);
        if (inFlight.size() > 100) allocator.free(inFlight.pollFirst(), 2 * SLOT_SIZE);
      }
      // 100 buffers of 2 slots fill a little over 1.5 segments.
      if (placement == Placement.LOWEST_FREED) {
        assertTrue(highest < 3 * MAX_MAPPING, "reached offset " + highest);
      } else {
        assertTrue(highest >= 63 * MAX_MAPPING, "reached only offset " + highest);
      }
    }
  }

  @Test
  @DisplayName("bytesInUse counts whole slots; peakBytesInUse the most at once")
  void accounting() {
    BounceAllocator allocator = new BounceAllocator(1 << 20);
    assertEquals(0, allocator.bytesInUse());
    assertEquals(0, allocator.peakBytesInUse());
    long a = allocator.allocate(3000); // 2 slots
    assertEquals(2 * SLOT_SIZE, allocator.bytesInUse());
    long b = allocator.allocate(1); // 1 slot
    assertEquals(3 * SLOT_SIZE, allocator.bytesInUse());
    allocator.free(a, 3000);
    assertEquals(SLOT_SIZE, allocator.bytesInUse());
    assertEquals(3 * SLOT_SIZE, allocator.peakBytesInUse());
    long c = allocator.allocate(SLOT_SIZE);
    assertEquals(2 * SLOT_SIZE, allocator.bytesInUse());
    assertEquals(3 * SLOT_SIZE, allocator.peakBytesInUse());
    allocator.free(b, 1);
    allocator.free(c, SLOT_SIZE);
    assertEquals(0, allocator.bytesInUse());
    assertEquals(3 * SLOT_SIZE, allocator.peakBytesInUse());
  }

  @Nested
  @DisplayName("caller bugs")
  class CallerBugs {
    private final BounceAllocator allocator = new BounceAllocator(4 * MAX_MAPPING + 10 * SLOT_SIZE);

    @Test
    @DisplayName("bad sizes and alignments: IllegalArgumentException")
    void badSizesAndAlignments() {
      for (int size : new int[] {0, -1, MAX_MAPPING + 1, Integer.MIN_VALUE, Integer.MAX_VALUE}) {
        assertThrows(
            IllegalArgumentException.class, () -> allocator.allocate(size), "size " + size);
        assertThrows(IllegalArgumentException.class, () -> allocator.free(0, size), "size " + size);
      }
      for (int alignment :
          new int[] {0, -1, 3, 6 * KIB, 2 * MAX_MAPPING, Integer.MIN_VALUE, Integer.MAX_VALUE}) {
        assertThrows(
            IllegalArgumentException.class,
            () -> allocator.allocate(1, alignment),
            "alignment " + alignment);
      }
      assertEquals(0, allocator.bytesInUse());
    }

    @Test
    @DisplayName("pools too small or too large for the allocator are refused")
    void badPoolSizes() {
      for (long size : new long[] {0, -1, SLOT_SIZE - 1, Long.MIN_VALUE, Long.MAX_VALUE}) {
        assertThrows(
            IllegalArgumentException.class, () -> new BounceAllocator(size), "size " + size);
      }
      assertEquals(SLOT_SIZE, new BounceAllocator(SLOT_SIZE).capacity());
    }

    @Test
    @DisplayName("double free: IllegalStateException, and nothing changes")
    void doubleFree() {
      long a = allocator.allocate(5000);
      long b = allocator.allocate(5000);
      allocator.free(a, 5000);
      long inUse = allocator.bytesInUse();
      assertThrows(IllegalStateException.class, () -> allocator.free(a, 5000));
      assertEquals(inUse, allocator.bytesInUse());
      allocator.free(b, 5000);
      assertThrows(IllegalStateException.class, () -> allocator.free(b, 5000));
      assertEquals(0, allocator.bytesInUse());
    }

    @Test
    @DisplayName("free of more slots than allocated, into free slots: IllegalStateException")
    void freeTooLargeIntoFreeSlots() {
      long a = allocator.allocate(2 * SLOT_SIZE);
      assertThrows(IllegalStateException.class, () -> allocator.free(a, 3 * SLOT_SIZE));
      assertEquals(2 * SLOT_SIZE, allocator.bytesInUse(), "a refused free changed the state");
      allocator.free(a, 2 * SLOT_SIZE);
    }

    @Test
    @DisplayName(
        "free of more slots than allocated, into a neighbour's allocation: IllegalStateException")
    void freeTooLargeIntoNeighbour() {
      long a = allocator.allocate(SLOT_SIZE);
      long b = allocator.allocate(SLOT_SIZE);
      assertEquals(a + SLOT_SIZE, b, "next-fit puts b right after a");
      // Freeing a with b's slot too would hand b's memory to the next caller while b uses it.
      assertThrows(IllegalStateException.class, () -> allocator.free(a, 2 * SLOT_SIZE));
      assertEquals(2 * SLOT_SIZE, allocator.bytesInUse());
    }

    @Test
    @DisplayName("free of fewer slots than allocated: IllegalStateException")
    void freeTooSmall() {
      long a = allocator.allocate(4 * SLOT_SIZE);
      assertThrows(IllegalStateException.class, () -> allocator.free(a, SLOT_SIZE));
      assertEquals(4 * SLOT_SIZE, allocator.bytesInUse());
    }

    @Test
    @DisplayName("free of an offset inside an allocation, not its start: IllegalArgumentException")
    void freeInsideAnAllocation() {
      long a = allocator.allocate(4 * SLOT_SIZE);
      assertThrows(IllegalArgumentException.class, () -> allocator.free(a + SLOT_SIZE, SLOT_SIZE));
      assertEquals(4 * SLOT_SIZE, allocator.bytesInUse());
    }

    @Test
    @DisplayName("free of offsets allocate never returns: IllegalArgumentException")
    void freeOfForeignOffsets() {
      long capacity = allocator.capacity();
      long[] offsets = {
        -SLOT_SIZE, -1, 1, SLOT_SIZE + 1, capacity, capacity + SLOT_SIZE, Long.MIN_VALUE,
      };
      for (long offset : offsets) {
        assertThrows(
            IllegalArgumentException.class, () -> allocator.free(offset, 1), "offset " + offset);
      }
      // Two slots from the last slot of a segment: crosses into the next.
      assertThrows(
          IllegalArgumentException.class,
          () -> allocator.free((SLOTS_PER_SEGMENT - 1) * SLOT_SIZE, 2 * SLOT_SIZE));
      // Past capacity by the size, not the offset.
      assertThrows(
          IllegalArgumentException.class,
          () -> allocator.free(capacity - SLOT_SIZE, 2 * SLOT_SIZE));
      assertEquals(0, allocator.bytesInUse());
    }

    @Test
    @DisplayName("free of a huge offset whose end overflows a long: IllegalArgumentException")
    void freeOfHugeOffset() {
      long nearTop = Long.MAX_VALUE - (SLOT_SIZE - 1); // a multiple of the slot size
      assertEquals(0, nearTop % SLOT_SIZE);
      assertThrows(IllegalArgumentException.class, () -> allocator.free(nearTop, 1));
      assertThrows(IllegalArgumentException.class, () -> allocator.free(nearTop, MAX_MAPPING));
    }
  }
}
