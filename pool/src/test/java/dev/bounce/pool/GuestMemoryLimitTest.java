package dev.bounce.pool;

import static dev.bounce.pool.testing.TestSyscalls.dup;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.bounce.pool.testing.NothingLeaked;
import java.util.List;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * What guest memory counts: the bytes a snapshot maps (a restricted pool: only its window's part),
 * checked before mapping; and the process's count of every session's mapped regions, bounded by
 * {@link GuestRegion#PROCESS_LIMIT}, from the mmap to the unmap. The terabyte memfds are sparse and
 * never touched: they cost nothing.
 */
class GuestMemoryLimitTest {
  private static final long TIB = 1L << 40;
  private static final long PAGE = Mapping.PAGE_SIZE;

  @RegisterExtension final NothingLeaked nothingLeaked = new NothingLeaked();

  private static MemoryRegionDescription region(long gpa, long size) {
    return new MemoryRegionDescription(gpa, size, gpa, 0);
  }

  @Test
  @DisplayName("the bytes a snapshot would map: all of each region, or its part in the pool")
  void mappedBytesWith() throws Exception {
    List<MemoryRegionDescription> two = List.of(region(0, 3 * PAGE), region(1L << 40, TIB));
    assertEquals(TIB + 3 * PAGE, GuestMemory.empty().mappedBytesWith(two));
    // A pool over [2 pages, 2 TiB) takes one page of the first region and all of the second.
    assertEquals(TIB + PAGE, RestrictedPool.at(2 * PAGE, 2 * TIB).mappedBytesWith(two));
    // Sizes a frontend gives that would overflow a long saturate instead of wrapping below a cap.
    long huge = Long.MAX_VALUE / 2 + 1;
    assertEquals(
        Long.MAX_VALUE,
        GuestMemory.empty().mappedBytesWith(List.of(region(0, huge), region(huge, huge))));
    try (Memfd memfd = Memfd.create("bounce-limit", 4 * PAGE)) {
      GuestMemory one = GuestMemory.empty().withRegion(region(0, 4 * PAGE), dup(memfd));
      assertEquals(4 * PAGE, one.mappedBytes());
      assertEquals(5 * PAGE, one.mappedBytesWith(List.of(region(1L << 30, PAGE))));
      one.close();
    }
  }

  @Test
  @DisplayName("the process bound: half the address space the stack ends in, at most 64 TiB")
  void processBoundFromTheAddressSpace() {
    assertEquals(64 * TIB, GuestRegion.processLimit(0x7ffd_3a2c_1000L), "x86-64, 47 bits");
    assertEquals(64 * TIB, GuestRegion.processLimit(0x8000_0000_0000L), "right at 2^47");
    assertEquals(64 * TIB, GuestRegion.processLimit(0xffff_e8f0_0000L), "arm64, 48 bits");
    assertEquals(TIB / 4, GuestRegion.processLimit(0x7f_f8a2_c000L), "arm64, 39 bits");
    assertEquals(64 * TIB, GuestRegion.processLimit(0), "unknown");
    long stackTop = GuestRegion.stackTop();
    assertEquals(GuestRegion.processLimit(stackTop), GuestRegion.PROCESS_LIMIT);
    if (System.getProperty("os.arch").equals("amd64")) {
      assertTrue(stackTop > 1L << 32 && stackTop <= 1L << 47, "[stack] ends at " + stackTop);
      assertEquals(64 * TIB, GuestRegion.PROCESS_LIMIT);
    }
  }

  @Test
  @DisplayName("over the process bound: refused before mapping, the fd closed; room again on unmap")
  void processBound() throws Exception {
    assumeTrue(
        GuestRegion.PROCESS_LIMIT == 64 * TIB, "terabyte memfds need a 47-bit address space");
    try (Memfd forty = Memfd.create("bounce-limit-40t", 40 * TIB);
        Memfd thirty = Memfd.create("bounce-limit-30t", 30 * TIB)) {
      GuestMemory first = GuestMemory.empty().withRegion(region(0, 40 * TIB), dup(forty));
      assertEquals(40 * TIB, GuestRegion.mappedInProcess() - nothingLeaked.mappedBefore());
      // Another session's snapshot: its own count is small, the process's is not.
      Fd fd = dup(thirty);
      long mappings = Mapping.liveCount();
      IllegalArgumentException e =
          assertThrows(
              IllegalArgumentException.class,
              () -> GuestMemory.empty().withRegion(region(0, 30 * TIB), fd));
      assertTrue(e.getMessage().contains("70368744177664 bytes (64 TiB)"), e.getMessage());
      assertFalse(fd.isOpen(), "the fd of a refused region is closed");
      assertEquals(mappings, Mapping.liveCount(), "nothing mapped");
      assertEquals(40 * TIB, GuestRegion.mappedInProcess() - nothingLeaked.mappedBefore());
      first.close();
      GuestMemory second = GuestMemory.empty().withRegion(region(0, 30 * TIB), dup(thirty));
      second.close();
    }
  }

  @Test
  @DisplayName("a region two snapshots share counts once, until the last of them unmaps it")
  void sharedRegionCountsOnce() throws Exception {
    assumeTrue(
        GuestRegion.PROCESS_LIMIT == 64 * TIB, "terabyte memfds need a 47-bit address space");
    try (Memfd memfd = Memfd.create("bounce-limit-shared", 2 * TIB)) {
      GuestMemory first = GuestMemory.empty().withRegion(region(0, TIB), dup(memfd));
      GuestMemory second =
          first.withRegion(new MemoryRegionDescription(TIB, TIB, TIB, TIB), dup(memfd));
      assertEquals(2 * TIB, GuestRegion.mappedInProcess() - nothingLeaked.mappedBefore());
      first.retire(second); // what ADD_MEM_REG does: the shared region stays
      assertEquals(2 * TIB, GuestRegion.mappedInProcess() - nothingLeaked.mappedBefore());
      GuestMemory third = second.withoutRegion(region(0, TIB));
      second.retire(third); // REM_MEM_REG: the removed region goes
      assertEquals(TIB, GuestRegion.mappedInProcess() - nothingLeaked.mappedBefore());
      third.close();
      third.close(); // a second close releases nothing more
    }
  }
}
