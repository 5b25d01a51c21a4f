package dev.bounce.pool;

import static dev.bounce.pool.testing.TestSyscalls.dup;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.testing.NothingLeaked;
import dev.bounce.pool.testing.OpenFds;
import dev.bounce.pool.testing.ProcessMaps;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.function.Executable;

/**
 * The restricted pool: a window of guest-physical space over memory the frontend shares. Only the
 * window's pages are ever mapped, translation outside it fails with the numbers needed to report
 * it, and regions are clipped, remembered or released as the frontend adds and removes them.
 */
class RestrictedPoolTest {
  private static final long MIB = 1 << 20;

  // QEMU-style: all of a 64 MiB guest's RAM shared as one region of one memfd.
  private static final long RAM_GPA = 0x4000_0000L;
  private static final long RAM_SIZE = 64 * MIB;
  private static final long RAM_VA = 0x7f12_0000_0000L;
  private static final MemoryRegionDescription RAM =
      new MemoryRegionDescription(RAM_GPA, RAM_SIZE, RAM_VA, 0);

  // The DT restricted-dma-pool: 4 MiB, 32 MiB into RAM.
  private static final long POOL_GPA = 0x4200_0000L;
  private static final long POOL_SIZE = 4 * MIB;
  private static final long POOL_OFFSET = POOL_GPA - RAM_GPA;

  @RegisterExtension final NothingLeaked nothingLeaked = new NothingLeaked();
  private String name;

  @BeforeEach
  void name() {
    name = "bounce-pool-test-" + System.nanoTime();
  }

  @Test
  @DisplayName(
      "a region whose file offset is off the page grid where the pool lies is refused, unmapped")
  void offsetsOffThePageGridAreRefused() throws Exception {
    // Guest 0 at file offset 0x800: the pool's first byte is at file offset POOL + 0x800, and a
    // page-wise mapping would take the 2 KiB below the pool and above its end with it.
    for (long misalignment : new long[] {0x800, 0x1, 0xfff}) {
      MemoryRegionDescription skewed =
          new MemoryRegionDescription(RAM_GPA, RAM_SIZE - Mapping.PAGE_SIZE, RAM_VA, misalignment);
      try (Memfd ram = Memfd.create(name, RAM_SIZE)) {
        RestrictedPool empty = RestrictedPool.at(POOL_GPA, POOL_SIZE);
        IllegalArgumentException e =
            assertThrows(IllegalArgumentException.class, () -> empty.withRegion(skewed, dup(ram)));
        assertTrue(e.getMessage().contains("not whole pages"), e.getMessage());
        assertEquals(List.of(), ProcessMaps.ofMemfd(name), "nothing of the memfd mapped");
      }
    }
  }

  @Test
  @DisplayName(
      "of a 64 MiB memfd shared as one region, only the 4 MiB window is mapped, at its offset")
  void mapsOnlyTheWindow() throws Exception {
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        RestrictedPool pool = RestrictedPool.at(POOL_GPA, POOL_SIZE).withRegion(RAM, dup(ram))) {
      List<ProcessMaps.Entry> maps = ProcessMaps.ofMemfd(name);
      assertEquals(1, maps.size(), () -> "mappings of the memfd: " + maps);
      ProcessMaps.Entry window = maps.getFirst();
      assertAll(
          () -> assertEquals(POOL_SIZE, window.size(), "mapped bytes"),
          () -> assertEquals(POOL_OFFSET, window.offset(), "mapped from memfd offset"),
          () -> assertTrue(window.permissions().startsWith("rw-s"), window.permissions()));
      assertTrue(
          maps.stream().allMatch(e -> e.size() <= POOL_SIZE),
          () -> "a mapping larger than the window: " + maps);

      assertEquals(1, pool.regionCount());
      assertTrue(pool.isFullyShared());
      GuestRegion region = pool.mapped().regions().getFirst();
      assertEquals(RAM, region.shared());
      assertEquals(
          new MemoryRegionDescription(POOL_GPA, POOL_SIZE, RAM_VA + POOL_OFFSET, POOL_OFFSET),
          region.mapped());
      assertEquals(POOL_SIZE, region.segment().byteSize());
    }
    assertEquals(List.of(), ProcessMaps.ofMemfd(name), "unmapped on close");
  }

  @Test
  @DisplayName(
      "bytes written through the pool land at the window's offset of the memfd, nowhere else")
  void writesLandAtTheRightOffsetOfTheMemfd() throws Exception {
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        RestrictedPool pool = RestrictedPool.at(POOL_GPA, POOL_SIZE).withRegion(RAM, dup(ram))) {
      // Every byte of the window through one translation, then a few marks at chosen places.
      pool.translate(POOL_GPA, POOL_SIZE).fill((byte) 0x5a);
      long[] marks = {0, 1, 0x1234, POOL_SIZE / 2 + 7, POOL_SIZE - 1};
      for (int i = 0; i < marks.length; i++) {
        pool.translate(POOL_GPA + marks[i], 1).set(JAVA_BYTE, 0, (byte) (0x10 + i));
      }

      try (Mapping all = ram.map(0, RAM_SIZE)) {
        MemorySegment memfd = all.segment();
        for (int i = 0; i < marks.length; i++) {
          assertEquals(
              (byte) (0x10 + i), memfd.get(JAVA_BYTE, POOL_OFFSET + marks[i]), "mark " + i);
        }
        assertEquals((byte) 0x5a, memfd.get(JAVA_BYTE, POOL_OFFSET + 2));
        assertEquals(0, memfd.get(JAVA_BYTE, POOL_OFFSET - 1), "byte before the window touched");
        assertEquals(0, memfd.get(JAVA_BYTE, POOL_OFFSET + POOL_SIZE), "byte after the window");
        assertEquals(0, memfd.get(JAVA_BYTE, 0));
        assertEquals(0, memfd.get(JAVA_BYTE, RAM_SIZE - 1));

        // The other way: the frontend writes, the pool reads, by guest and by frontend address.
        memfd.set(JAVA_BYTE, POOL_OFFSET + 0x3000, (byte) 0x77);
        assertEquals((byte) 0x77, pool.translate(POOL_GPA + 0x3000, 1).get(JAVA_BYTE, 0));
        assertEquals(
            (byte) 0x77,
            pool.translateUserAddress(RAM_VA + POOL_OFFSET + 0x3000, 1).get(JAVA_BYTE, 0));
      }
      GuestRegion region = pool.regionAt(POOL_GPA + 0x3000, 16);
      assertNotNull(region);
      assertEquals(
          (byte) 0x77,
          region.segment().get(JAVA_BYTE, POOL_GPA + 0x3000 - region.mapped().guestAddress()));
    }
  }

  @Test
  @DisplayName("guest addresses outside the window fail with address, length and pool bounds")
  void guestAddressesOutsideTheWindowAreViolations() throws Exception {
    long end = POOL_GPA + POOL_SIZE;
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        RestrictedPool pool = RestrictedPool.at(POOL_GPA, POOL_SIZE).withRegion(RAM, dup(ram))) {
      long[][] outside = {
        {RAM_GPA, 1}, // shared by the frontend, but not pool
        {POOL_GPA - 1, 1},
        {POOL_GPA - 1, 2}, // straddles the start
        {end - 1, 2}, // straddles the end
        {end, 1},
        {end + 1, 0},
        {POOL_GPA, POOL_SIZE + 1},
        {POOL_GPA, -1}, // unsigned 2^64 - 1
        {-1, 1},
        {POOL_GPA + 0x1000, -0x1000}, // wraps back exactly to the window's start
      };
      for (long[] access : outside) {
        long address = access[0];
        long length = access[1];
        PoolViolationException e =
            assertThrows(
                PoolViolationException.class,
                () -> pool.translate(address, length),
                () -> Ranges.hex(address) + " length " + Long.toUnsignedString(length));
        assertViolation(e, AddressKind.GUEST_PHYSICAL, address, length);
        assertNull(pool.regionAt(address, length), () -> Ranges.hex(address));
        assertFalse(pool.contains(address, length));
      }
      // The edges that are inside.
      assertEquals(1, pool.translate(POOL_GPA, 1).byteSize());
      assertEquals(1, pool.translate(end - 1, 1).byteSize());
      assertEquals(0, pool.translate(end, 0).byteSize());
      assertEquals(POOL_SIZE, pool.translate(POOL_GPA, POOL_SIZE).byteSize());
    }
  }

  @Test
  @DisplayName("frontend addresses that do not land inside the window are refused too")
  void frontendAddressesOutsideTheWindowAreViolations() throws Exception {
    long windowVa = RAM_VA + POOL_OFFSET;
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        RestrictedPool pool = RestrictedPool.at(POOL_GPA, POOL_SIZE).withRegion(RAM, dup(ram))) {
      long[][] outside = {
        {RAM_VA, 1}, // the frontend's own mapping of RAM, outside the pool
        {windowVa - 1, 1},
        {windowVa - 1, 2},
        {windowVa + POOL_SIZE - 1, 2},
        {windowVa + POOL_SIZE, 1},
        {windowVa, POOL_SIZE + 1},
        {windowVa, -1},
        {POOL_GPA, 1}, // a guest address is not a frontend address
      };
      for (long[] access : outside) {
        long address = access[0];
        long length = access[1];
        PoolViolationException e =
            assertThrows(
                PoolViolationException.class,
                () -> pool.translateUserAddress(address, length),
                () -> Ranges.hex(address) + " length " + Long.toUnsignedString(length));
        assertViolation(e, AddressKind.FRONTEND_VIRTUAL, address, length);
        assertTrue(
            e.getMessage().contains("is not in the frontend's mapping of the restricted pool"),
            e.getMessage());
      }
      assertEquals(POOL_SIZE, pool.translateUserAddress(windowVa, POOL_SIZE).byteSize());
      assertEquals(1, pool.translateUserAddress(windowVa + POOL_SIZE - 1, 1).byteSize());
    }
  }

  /**
   * That the memfd's mappings in this process add up to {@code bytes} and cover exactly the file
   * ranges {@code [from, to)} given (the kernel merges mappings adjacent in memory and in the file,
   * so the number of /proc/self/maps lines is not fixed).
   */
  private void assertMemfdMapped(long bytes, List<long[]> fileRanges) {
    List<ProcessMaps.Entry> maps =
        ProcessMaps.ofMemfd(name).stream()
            .sorted(Comparator.comparingLong(ProcessMaps.Entry::offset))
            .toList();
    assertEquals(bytes, maps.stream().mapToLong(ProcessMaps.Entry::size).sum(), maps::toString);
    List<long[]> covered = new ArrayList<>();
    for (ProcessMaps.Entry e : maps) {
      long[] last = covered.isEmpty() ? null : covered.getLast();
      if (last != null && last[1] >= e.offset()) {
        last[1] = Math.max(last[1], e.offset() + e.size());
      } else {
        covered.add(new long[] {e.offset(), e.offset() + e.size()});
      }
    }
    assertEquals(
        fileRanges.stream().map(Arrays::toString).toList(),
        covered.stream().map(Arrays::toString).toList(),
        () -> "file ranges mapped: " + maps);
  }

  private static void assertViolation(
      PoolViolationException e, AddressKind kind, long address, long length) {
    assertAll(
        () -> assertEquals(kind, e.kind()),
        () -> assertEquals(address, e.address()),
        () -> assertEquals(length, e.length()),
        () -> assertEquals(POOL_GPA, e.poolStart()),
        () -> assertEquals(POOL_SIZE, e.poolSize()),
        () -> assertTrue(e.getMessage().contains(Ranges.hex(address)), e.getMessage()),
        () -> assertTrue(e.getMessage().contains(Long.toUnsignedString(length)), e.getMessage()),
        () -> assertTrue(e.getMessage().contains("0x42000000"), e.getMessage()),
        () -> assertTrue(e.getMessage().contains("0x42400000"), e.getMessage()),
        () -> assertTrue(e.getMessage().contains(kind.label()), e.getMessage()));
  }

  @Test
  @DisplayName(
      "a region that misses the window: fd closed at once, nothing mapped, still removable")
  void regionMissingTheWindowIsRememberedButNotMapped() throws Exception {
    // Firecracker-like extra region above 4 GiB, wholly outside the pool.
    MemoryRegionDescription high =
        new MemoryRegionDescription(0x1_0000_0000L, 2 * MIB, 0x7f20_0000_0000L, 0);
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        Memfd other = Memfd.create(name + "-high", 2 * MIB)) {
      RestrictedPool empty = RestrictedPool.at(POOL_GPA, POOL_SIZE);
      RestrictedPool pool = empty.withRegion(RAM, dup(ram));
      long mappings = Mapping.liveCount();
      Fd highFd = dup(other);
      int highNumber = highFd.value();

      RestrictedPool withHigh = pool.withRegion(high, highFd);
      assertFalse(highFd.isOpen(), "the fd of a region outside the pool is closed at once");
      assertNull(OpenFds.target(highNumber), "fd " + highNumber + " still open");
      assertEquals(mappings, Mapping.liveCount(), "nothing mapped for it");
      assertEquals(List.of(), ProcessMaps.ofMemfd(name + "-high"));
      assertEquals(2, withHigh.regionCount());
      assertEquals(1, withHigh.mapped().regionCount());
      assertThrows(PoolViolationException.class, () -> withHigh.translate(0x1_0000_0000L, 1));
      assertThrows(
          PoolViolationException.class, () -> withHigh.translateUserAddress(0x7f20_0000_0000L, 1));

      // It still occupies its place: an overlapping region is refused (and its fd closed).
      Fd overlapping = dup(other);
      MemoryRegionDescription overlap =
          new MemoryRegionDescription(0x1_0010_0000L, 2 * MIB, 0x7f30_0000_0000L, 0);
      assertThrows(IllegalArgumentException.class, () -> withHigh.withRegion(overlap, overlapping));
      assertFalse(overlapping.isOpen());

      // REM_MEM_REG finds it by guest address, frontend address and size (offset ignored).
      RestrictedPool removed =
          withHigh.withoutRegion(
              new MemoryRegionDescription(0x1_0000_0000L, 2 * MIB, 0x7f20_0000_0000L, 0x5000));
      assertEquals(1, removed.regionCount());
      assertThrows(IllegalArgumentException.class, () -> removed.withoutRegion(high));
      assertSame(
          pool.mapped().regions().getFirst(),
          removed.mapped().regions().getFirst(),
          "the mapped region is carried over, not remapped");
      withHigh.retire(removed);
      assertTrue(pool.mapped().regions().getFirst().fd().isOpen(), "retire closed a kept region");
      removed.close();
    }
  }

  @Test
  @DisplayName("a region that only partly overlaps the window is clipped to it")
  void regionPartlyInsideIsClipped() throws Exception {
    // The pool runs past the end of shared RAM: only the shared part is mapped, the rest is a hole.
    long poolGpa = RAM_GPA + RAM_SIZE - MIB;
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        RestrictedPool pool = RestrictedPool.at(poolGpa, 4 * MIB).withRegion(RAM, dup(ram))) {
      List<ProcessMaps.Entry> maps = ProcessMaps.ofMemfd(name);
      assertEquals(1, maps.size(), maps::toString);
      assertEquals(MIB, maps.getFirst().size());
      assertEquals(RAM_SIZE - MIB, maps.getFirst().offset());
      assertFalse(pool.isFullyShared());
      assertEquals(MIB, pool.translate(poolGpa, MIB).byteSize());
      // Inside the window, but not shared: unmapped, not a pool violation.
      UnmappedAddressException hole =
          assertThrows(UnmappedAddressException.class, () -> pool.translate(poolGpa + MIB, 1));
      assertEquals(poolGpa + MIB, hole.address());
      assertThrows(UnmappedAddressException.class, () -> pool.translate(poolGpa + MIB - 1, 2));
      assertNull(pool.regionAt(poolGpa + MIB, 1));
    }
  }

  @Test
  @DisplayName(
      "a window spanning two regions of one memfd (QEMU q35 below/above 4 GiB) maps both parts")
  void windowSpanningTwoRegionsOfOneMemfd() throws Exception {
    // One 64 MiB memfd shared as two regions with a hole between them in guest-physical space, as
    // QEMU does for RAM below and above the PCI hole; the frontend has it mapped contiguously.
    long lowSize = 48 * MIB;
    long highSize = 16 * MIB;
    MemoryRegionDescription low = new MemoryRegionDescription(0, lowSize, RAM_VA, 0);
    MemoryRegionDescription high =
        new MemoryRegionDescription(0x1_0000_0000L, highSize, RAM_VA + lowSize, lowSize);
    long poolGpa = 32 * MIB; // 16 MiB of low RAM ...
    long poolEnd = 0x1_0000_0000L + 8 * MIB; // ... the hole, and 8 MiB of high RAM
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        RestrictedPool pool =
            RestrictedPool.at(poolGpa, poolEnd - poolGpa)
                .withRegion(low, dup(ram))
                .withRegion(high, dup(ram))) {
      // 16 MiB from offset 32 MiB and 8 MiB from offset 48 MiB: file range [32, 56) MiB.
      assertMemfdMapped(24 * MIB, List.of(new long[] {32 * MIB, 56 * MIB}));
      assertEquals(2, pool.regionCount());
      assertFalse(pool.isFullyShared(), "the hole is in the window but not shared");

      pool.translate(poolGpa, 1).set(JAVA_BYTE, 0, (byte) 1);
      pool.translate(lowSize - 1, 1).set(JAVA_BYTE, 0, (byte) 2);
      pool.translate(0x1_0000_0000L, 1).set(JAVA_BYTE, 0, (byte) 3);
      pool.translate(poolEnd - 1, 1).set(JAVA_BYTE, 0, (byte) 4);
      try (Mapping all = ram.map(0, RAM_SIZE)) {
        MemorySegment memfd = all.segment();
        assertEquals(1, memfd.get(JAVA_BYTE, poolGpa));
        assertEquals(2, memfd.get(JAVA_BYTE, lowSize - 1));
        assertEquals(3, memfd.get(JAVA_BYTE, lowSize));
        assertEquals(4, memfd.get(JAVA_BYTE, lowSize + 8 * MIB - 1));
      }
      assertEquals(
          3,
          pool.translateUserAddress(RAM_VA + lowSize, 1).get(JAVA_BYTE, 0),
          "by frontend address");
      assertThrows(UnmappedAddressException.class, () -> pool.translate(lowSize, 1), "the hole");
      assertThrows(UnmappedAddressException.class, () -> pool.translate(lowSize - 1, 2));
      assertThrows(PoolViolationException.class, () -> pool.translate(poolGpa - 1, 1));
      assertThrows(PoolViolationException.class, () -> pool.translate(poolEnd, 1));
      // Contiguous in the frontend's address space, but the window ends 8 MiB into the high part.
      assertThrows(
          PoolViolationException.class,
          () -> pool.translateUserAddress(RAM_VA + lowSize + 8 * MIB, 1));
      assertThrows(
          PoolViolationException.class, () -> pool.translateUserAddress(RAM_VA + poolGpa - 1, 1));
      // Across the two regions in frontend space: two regions, so no single segment.
      assertThrows(
          PoolViolationException.class, () -> pool.translateUserAddress(RAM_VA + lowSize - 1, 2));
    }
  }

  @Test
  @DisplayName(
      "a window across two adjacent regions of one memfd: each side maps, a span across is refused")
  void windowAcrossAdjacentRegions() throws Exception {
    MemoryRegionDescription first = new MemoryRegionDescription(RAM_GPA, 32 * MIB, RAM_VA, 0);
    MemoryRegionDescription second =
        new MemoryRegionDescription(RAM_GPA + 32 * MIB, 32 * MIB, RAM_VA + 32 * MIB, 32 * MIB);
    long boundary = RAM_GPA + 32 * MIB;
    try (Memfd ram = Memfd.create(name, RAM_SIZE);
        RestrictedPool pool =
            RestrictedPool.at(boundary - MIB, 2 * MIB)
                .withRegion(second, dup(ram))
                .withRegion(first, dup(ram))) {
      assertMemfdMapped(2 * MIB, List.of(new long[] {31 * MIB, 33 * MIB}));
      assertTrue(pool.isFullyShared());
      pool.translate(boundary - 1, 1).set(JAVA_BYTE, 0, (byte) 0x41);
      pool.translate(boundary, 1).set(JAVA_BYTE, 0, (byte) 0x42);
      try (Mapping all = ram.map(0, RAM_SIZE)) {
        assertEquals(0x41, all.segment().get(JAVA_BYTE, 32 * MIB - 1));
        assertEquals(0x42, all.segment().get(JAVA_BYTE, 32 * MIB));
      }
      // A translation is one segment of one region: a range across the boundary is not served.
      assertThrows(UnmappedAddressException.class, () -> pool.translate(boundary - 1, 2));
      assertNull(pool.regionAt(boundary - 1, 2));
      assertEquals(0, pool.translate(boundary, 0).byteSize());
    }
  }

  @Test
  @DisplayName("retire closes exactly the regions the successor dropped")
  void retireReleasesRemovedRegions() throws Exception {
    try (Memfd ram = Memfd.create(name, RAM_SIZE)) {
      RestrictedPool pool = RestrictedPool.at(POOL_GPA, POOL_SIZE).withRegion(RAM, dup(ram));
      GuestRegion region = pool.mapped().regions().getFirst();
      MemorySegment bytes = pool.translate(POOL_GPA, 8);
      RestrictedPool next = pool.withoutRegion(RAM);
      assertEquals(0, next.regionCount());
      assertTrue(region.fd().isOpen(), "a removed region stays mapped until retired");
      bytes.set(JAVA_BYTE, 0, (byte) 1);
      long mappings = Mapping.liveCount();
      pool.retire(next);
      assertFalse(region.fd().isOpen());
      assertEquals(mappings - 1, Mapping.liveCount());
      assertThrows(IllegalStateException.class, () -> bytes.get(JAVA_BYTE, 0));
      assertEquals(List.of(), ProcessMaps.ofMemfd(name));
      assertThrows(PoolViolationException.class, () -> next.translate(POOL_GPA - 1, 1));
      assertThrows(UnmappedAddressException.class, () -> next.translate(POOL_GPA, 1));
      next.close();
    }
  }

  @Test
  @DisplayName("a pool window must be non-empty, page-aligned and not wrap 2^64")
  void windowValidation() {
    Executable[] bad = {
      () -> RestrictedPool.at(POOL_GPA, 0),
      () -> RestrictedPool.at(POOL_GPA, -4096),
      () -> RestrictedPool.at(-4096, 8192), // wraps
      () -> RestrictedPool.at(POOL_GPA + 1, 4096),
      () -> RestrictedPool.at(POOL_GPA, 4097),
    };
    for (Executable e : bad) assertThrows(IllegalArgumentException.class, e);
    RestrictedPool top = RestrictedPool.at(-4096, 4096); // ends exactly at 2^64
    assertTrue(top.contains(-1, 1));
    assertTrue(top.contains(-4096, 4096));
    assertFalse(top.contains(-4096, 4097));
    assertFalse(top.contains(-1, 2));
  }
}
