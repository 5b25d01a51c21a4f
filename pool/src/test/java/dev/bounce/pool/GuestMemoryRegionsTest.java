package dev.bounce.pool;

import static dev.bounce.pool.testing.TestSyscalls.dup;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.testing.NothingLeaked;
import dev.bounce.pool.testing.OpenFds;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * What regions a frontend may share and how snapshots hand them over: overlap and wrap checks, the
 * 509-region limit, removal, and retire/close releasing exactly the right fds and mappings.
 */
class GuestMemoryRegionsTest {
  private static final long PAGE = Mapping.PAGE_SIZE;

  @RegisterExtension final NothingLeaked nothingLeaked = new NothingLeaked();

  private static MemoryRegionDescription region(long gpa, long size, long va, long offset) {
    return new MemoryRegionDescription(gpa, size, va, offset);
  }

  @Test
  @DisplayName(
      "region descriptions: size 0 or negative, wrapping 2^64, negative offset are refused")
  void descriptionValidation() {
    assertThrows(IllegalArgumentException.class, () -> region(0x1000, 0, 0x1000, 0));
    assertThrows(IllegalArgumentException.class, () -> region(0x1000, -4096, 0x1000, 0));
    assertThrows(IllegalArgumentException.class, () -> region(0x1000, Long.MIN_VALUE, 0x1000, 0));
    assertThrows(IllegalArgumentException.class, () -> region(-4096, 8192, 0x1000, 0));
    assertThrows(IllegalArgumentException.class, () -> region(-1, 2, 0x1000, 0));
    assertThrows(IllegalArgumentException.class, () -> region(0x1000, 8192, -4096, 0));
    assertThrows(IllegalArgumentException.class, () -> region(0x1000, Long.MAX_VALUE, -4096, 0));
    assertThrows(IllegalArgumentException.class, () -> region(0x1000, 4096, 0x1000, -4096));
    assertThrows(
        IllegalArgumentException.class, () -> region(0x1000, 8192, 0x1000, Long.MAX_VALUE - 4096));
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> region(-4096, 8192, 0x1000, 0));
    assertTrue(e.getMessage().contains("wraps 2^64"), e.getMessage());
    // Ending exactly at 2^64 is fine, in both spaces.
    MemoryRegionDescription top = region(-4096, 4096, -4096, 0);
    assertEquals(4096, top.size());
  }

  @Test
  @DisplayName("a region overlapping another in guest or frontend space is refused, its fd closed")
  void overlapsRefused() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-overlap", 16 * PAGE)) {
      MemoryRegionDescription base = region(0x10_0000, 4 * PAGE, 0x7f00_0010_0000L, 0);
      GuestMemory memory = GuestMemory.empty().withRegion(base, dup(memfd));
      long mappings = Mapping.liveCount();
      List<MemoryRegionDescription> overlapping =
          List.of(
              base, // the same
              region(0x10_0000, 4 * PAGE, 0x7f00_0090_0000L, 0), // same guest range
              region(0x90_0000, 4 * PAGE, 0x7f00_0010_0000L, 0), // same frontend range
              region(0x10_0000 + 3 * PAGE, 2 * PAGE, 0x7f00_0090_0000L, 0), // guest tail
              region(0x10_0000 - PAGE, 2 * PAGE, 0x7f00_0090_0000L, 0), // guest head
              region(0x10_0000 + PAGE, PAGE, 0x7f00_0090_0000L, 0), // guest, inside
              region(0x0f_0000, 0x10_0000, 0x7f00_0090_0000L, 0), // guest, around
              region(0x90_0000, 2 * PAGE, 0x7f00_0010_0000L + 3 * PAGE, 0), // frontend tail
              region(0x90_0000, 2 * PAGE, 0x7f00_0010_0000L - PAGE, 0), // frontend head
              region(0x90_0000, PAGE, 0x7f00_0010_0000L + PAGE, 0)); // frontend, inside
      for (MemoryRegionDescription r : overlapping) {
        Fd fd = dup(memfd);
        IllegalArgumentException e =
            assertThrows(
                IllegalArgumentException.class, () -> memory.withRegion(r, fd), r::toString);
        assertTrue(e.getMessage().contains("overlaps"), e.getMessage());
        assertFalse(fd.isOpen(), "the fd of a refused region is closed");
      }
      assertEquals(mappings, Mapping.liveCount());
      // Adjacent on both sides, in both spaces: no overlap.
      GuestMemory adjacent =
          memory
              .withRegion(
                  region(0x10_0000 + 4 * PAGE, PAGE, 0x7f00_0010_0000L + 4 * PAGE, 0), dup(memfd))
              .withRegion(region(0x10_0000 - PAGE, PAGE, 0x7f00_0010_0000L - PAGE, 0), dup(memfd));
      assertEquals(3, adjacent.regionCount());
      assertThrows(
          UnmappedAddressException.class, () -> adjacent.translate(0x10_0000 - PAGE, 6 * PAGE));
      adjacent.close();
    }
  }

  @Test
  @DisplayName("509 regions are accepted and each found; the 510th is refused; gaps are refused")
  void maxRegions() throws Exception {
    int max = GuestAddressSpace.MAX_REGIONS;
    assertEquals(509, max);
    long seed = System.nanoTime();
    Random random = new Random(seed);
    List<Integer> order = new ArrayList<>();
    for (int i = 0; i < max; i++) order.add(i);
    Collections.shuffle(order, random); // sorting is the index's job
    try (Memfd memfd = Memfd.create("bounce-509", (max + 1) * PAGE);
        Mapping whole = memfd.map(0, (max + 1) * PAGE)) {
      for (int i = 0; i <= max; i++) whole.segment().set(JAVA_INT, i * PAGE, 1000 + i);
      GuestMemory memory = GuestMemory.empty();
      for (int i : order) memory = memory.withRegion(page(i), dup(memfd));
      GuestMemory full = memory;
      try {
        assertEquals(max, full.regionCount());
        assertEquals(nothingLeaked.mappingsBefore() + 1 + max, Mapping.liveCount());

        Fd extra = dup(memfd);
        IllegalArgumentException e =
            assertThrows(IllegalArgumentException.class, () -> full.withRegion(page(max), extra));
        assertTrue(e.getMessage().contains("509"), e.getMessage());
        assertFalse(extra.isOpen());

        for (int i = 0; i < max; i++) {
          MemoryRegionDescription r = page(i);
          String seedText = "seed " + seed + ", region " + i;
          MemorySegment byGuest = full.translate(r.guestAddress(), PAGE);
          assertEquals(1000 + i, byGuest.get(JAVA_INT, 0), seedText);
          assertEquals(1000 + i, full.translateUserAddress(r.userAddress(), PAGE).get(JAVA_INT, 0));
          assertSame(
              full.regionAt(r.guestAddress() + PAGE - 1, 1), full.regionAt(r.guestAddress(), 1));
          // The page after each region is a gap in both spaces (frontend gaps are two pages).
          assertThrows(
              UnmappedAddressException.class, () -> full.translate(r.guestAddress() + PAGE, 1));
          assertThrows(
              UnmappedAddressException.class, () -> full.translate(r.guestAddress() - 1, 2));
          assertThrows(
              UnmappedAddressException.class,
              () -> full.translateUserAddress(r.userAddress() + PAGE, 1));
          assertThrows(
              UnmappedAddressException.class,
              () -> full.translateUserAddress(r.userAddress() + PAGE + PAGE, 1));
          assertNull(full.regionAt(r.guestAddress() + PAGE, 1));
        }
        assertThrows(
            UnmappedAddressException.class, () -> full.translate(page(0).guestAddress() - 1, 1));
        assertThrows(
            UnmappedAddressException.class, () -> full.translate(page(max).guestAddress(), 1));

        // Removing one makes room for one.
        GuestMemory fewer = full.withoutRegion(page(17));
        GuestMemory again = fewer.withRegion(page(max), dup(memfd));
        assertEquals(1000 + max, again.translate(page(max).guestAddress(), 4).get(JAVA_INT, 0));
        assertThrows(
            UnmappedAddressException.class, () -> again.translate(page(17).guestAddress(), 1));
        full.retire(again); // closes page 17 only
        assertEquals(nothingLeaked.mappingsBefore() + 1 + max, Mapping.liveCount());
        memory = again;
      } finally {
        memory.close();
      }
    }
  }

  /** Region i: page i of the memfd, guest pages apart by one, frontend pages apart by two. */
  private static MemoryRegionDescription page(int i) {
    return region(0x1_0000_0000L + 2 * i * PAGE, PAGE, 0x7e00_0000_0000L + 3 * i * PAGE, i * PAGE);
  }

  @Test
  @DisplayName("withoutRegion: unknown regions are refused; the mmap offset does not matter")
  void withoutRegion() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-remove", 4 * PAGE)) {
      MemoryRegionDescription r = region(0x10_0000, 2 * PAGE, 0x7f00_0000_0000L, 0);
      GuestMemory memory = GuestMemory.empty().withRegion(r, dup(memfd));
      try {
        for (MemoryRegionDescription unknown :
            List.of(
                region(0x10_0000, PAGE, 0x7f00_0000_0000L, 0), // other size
                region(0x10_1000, 2 * PAGE, 0x7f00_0000_0000L, 0), // other guest address
                region(0x10_0000, 2 * PAGE, 0x7f00_0000_1000L, 0))) { // other frontend address
          IllegalArgumentException e =
              assertThrows(IllegalArgumentException.class, () -> memory.withoutRegion(unknown));
          assertTrue(e.getMessage().contains("no such region"), e.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> GuestMemory.empty().withoutRegion(r));
        GuestMemory without =
            memory.withoutRegion(region(0x10_0000, 2 * PAGE, 0x7f00_0000_0000L, PAGE));
        assertEquals(0, without.regionCount());
        assertEquals(1, memory.regionCount(), "snapshots are immutable");
      } finally {
        memory.close();
      }
    }
  }

  @Test
  @DisplayName("retire(successor) closes exactly the regions the successor does not hold")
  void retireClosesExactlyTheDroppedRegions() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-retire", 8 * PAGE)) {
      MemoryRegionDescription r1 = region(0x1_0000, PAGE, 0x7f00_0000_0000L, 0);
      MemoryRegionDescription r2 = region(0x2_0000, PAGE, 0x7f00_0001_0000L, PAGE);
      MemoryRegionDescription r3 = region(0x3_0000, PAGE, 0x7f00_0002_0000L, 2 * PAGE);
      MemoryRegionDescription r4 = region(0x4_0000, PAGE, 0x7f00_0003_0000L, 3 * PAGE);
      GuestMemory old =
          GuestMemory.empty()
              .withRegion(r1, dup(memfd))
              .withRegion(r2, dup(memfd))
              .withRegion(r3, dup(memfd));
      GuestRegion g1 = old.regionAt(0x1_0000, 1);
      GuestRegion g2 = old.regionAt(0x2_0000, 1);
      GuestRegion g3 = old.regionAt(0x3_0000, 1);
      int[] numbers = {g1.fd().value(), g2.fd().value(), g3.fd().value()};
      MemorySegment bytes2 = old.translate(0x2_0000, PAGE);

      GuestMemory next = old.withoutRegion(r2).withRegion(r4, dup(memfd));
      GuestRegion g4 = next.regionAt(0x4_0000, 1);
      assertTrue(g2.fd().isOpen(), "removed, but not yet retired");
      bytes2.set(JAVA_INT, 0, 7); // a data thread may still use the old snapshot
      long mappings = Mapping.liveCount();
      int fds = OpenFds.count();

      old.retire(next);
      assertFalse(g2.fd().isOpen());
      assertNull(OpenFds.target(numbers[1]));
      assertTrue(g1.fd().isOpen() && g3.fd().isOpen() && g4.fd().isOpen());
      assertEquals(fds - 1, OpenFds.count());
      assertEquals(mappings - 1, Mapping.liveCount());
      assertThrows(IllegalStateException.class, () -> bytes2.get(JAVA_INT, 0));
      assertEquals(0, next.translate(0x1_0000, PAGE).get(JAVA_INT, 0));
      assertSame(g1, next.regionAt(0x1_0000, 1), "kept regions are carried over, not remapped");

      old.retire(next); // twice: nothing more
      assertEquals(mappings - 1, Mapping.liveCount());

      next.close();
      for (GuestRegion g : List.of(g1, g3, g4)) assertFalse(g.fd().isOpen(), g::toString);
      assertEquals(nothingLeaked.mappingsBefore(), Mapping.liveCount());
      old.close(); // closes what it still had: already closed, nothing breaks
      assertEquals(nothingLeaked.mappingsBefore(), Mapping.liveCount());
    }
  }

  @Test
  @DisplayName("a region whose fd cannot be mapped is refused and its fd closed")
  void unmappableRegion() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-short", 2 * PAGE)) {
      Fd fd = dup(memfd);
      // The description says 4 pages; the file has 2.
      assertThrows(
          IllegalArgumentException.class,
          () ->
              GuestMemory.empty().withRegion(region(0x1_0000, 4 * PAGE, 0x7f00_0000_0000L, 0), fd));
      assertFalse(fd.isOpen());
    }
  }

  @Test
  @DisplayName("an mmap offset that is not page-aligned is served by mapping from the page below")
  void unalignedMmapOffset() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-unaligned", 4 * PAGE);
        Mapping whole = memfd.map(0, 4 * PAGE)) {
      whole.segment().set(JAVA_INT, PAGE + 0x100, 0x1234_5678);
      try (GuestMemory memory =
          GuestMemory.empty()
              .withRegion(
                  region(0x10_0000, 2 * PAGE, 0x7f00_0000_0000L, PAGE + 0x100), dup(memfd))) {
        assertEquals(0x1234_5678, memory.translate(0x10_0000, 4).get(JAVA_INT, 0));
        assertEquals(2 * PAGE, memory.regionAt(0x10_0000, 1).segment().byteSize());
      }
    }
  }
}
