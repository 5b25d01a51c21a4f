package dev.bounce.pool;

import static dev.bounce.pool.testing.TestSyscalls.dup;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.bounce.pool.testing.OpenFds;
import dev.bounce.pool.testing.TestSyscalls;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * Thousands of create/close cycles leave the process with exactly the fds and mappings it had: a
 * leak of one per cycle would show as thousands.
 */
class LeakTest {
  private static final int CYCLES = 10_000;
  private static final long PAGE = Mapping.PAGE_SIZE;

  private int fdsBefore;
  private long mappingsBefore;

  @BeforeEach
  void baseline() throws Exception {
    // Warm up once, so that lazily opened files (class loading) are not counted as leaks.
    try (Memfd memfd = Memfd.create("bounce-warmup", PAGE);
        Mapping mapping = memfd.map(0, PAGE);
        EventFd eventFd = EventFd.create()) {
      mapping.segment().set(JAVA_INT, 0, 1);
      eventFd.signal();
      eventFd.drain();
    }
    fdsBefore = OpenFds.count();
    mappingsBefore = Mapping.liveCount();
  }

  @AfterEach
  void backToBaseline() {
    OpenFds.assertBackTo(fdsBefore);
    assertEquals(mappingsBefore, Mapping.liveCount());
  }

  @Test
  @DisplayName("10,000 map/unmap cycles: mappings and fds back to baseline")
  void mapUnmapCycles() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-leak-map", 4 * PAGE)) {
      int fds = OpenFds.count();
      for (int i = 0; i < CYCLES; i++) {
        try (Mapping mapping = memfd.map((i % 4) * PAGE, PAGE)) {
          mapping.segment().set(JAVA_INT, 0, i);
        }
      }
      assertEquals(mappingsBefore, Mapping.liveCount());
      OpenFds.assertBackTo(fds);
    }
  }

  @Test
  @DisplayName("10,000 memfd create/close cycles: fds back to baseline")
  void memfdCycles() throws Exception {
    for (int i = 0; i < CYCLES; i++) {
      Memfd.create("bounce-leak-memfd", PAGE).close();
    }
  }

  @Test
  @DisplayName("10,000 eventfd create/signal/close cycles: fds back to baseline")
  void eventFdCycles() throws Exception {
    for (int i = 0; i < CYCLES; i++) {
      try (EventFd eventFd = EventFd.create()) {
        eventFd.signal();
      }
    }
  }

  @Test
  @DisplayName("1,000 refused mappings of each kind: nothing left behind")
  void refusedMappingCycles() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-leak-bad", PAGE);
        EventFd eventFd = EventFd.create();
        TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      int fds = OpenFds.count();
      for (int i = 0; i < 1_000; i++) {
        assertThrows(IllegalArgumentException.class, () -> memfd.map(0, 2 * PAGE));
        assertThrows(IllegalArgumentException.class, () -> memfd.map(1, PAGE));
        assertThrows(IllegalArgumentException.class, () -> Mapping.map(eventFd.fd(), 0, PAGE));
        assertThrows(IllegalArgumentException.class, () -> Mapping.map(pipe.readEnd(), 0, PAGE));
        assertThrows(NativeException.class, () -> Memfd.create("n".repeat(300), PAGE));
        assertThrows(IllegalArgumentException.class, () -> Memfd.create("n", 0));
      }
      assertEquals(mappingsBefore, Mapping.liveCount());
      OpenFds.assertBackTo(fds);
    }
  }

  @Test
  @DisplayName(
      "1,000 memory-table changes (add, remove, retire), plain and restricted: nothing left")
  void memoryTableCycles() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-leak-table", 8 * PAGE)) {
      int fds = OpenFds.count();
      MemoryRegionDescription low = new MemoryRegionDescription(0, 4 * PAGE, 0x7f00_0000_0000L, 0);
      MemoryRegionDescription high =
          new MemoryRegionDescription(0x10_0000, 4 * PAGE, 0x7f00_0010_0000L, 4 * PAGE);
      GuestAddressSpace memory = GuestMemory.empty().withRegion(low, dup(memfd));
      GuestAddressSpace pool = RestrictedPool.at(PAGE, 2 * PAGE).withRegion(low, dup(memfd));
      for (int i = 0; i < 1_000; i++) {
        memory = swap(memory, high, memfd);
        memory = swap(memory, low, memfd);
        pool = swap(pool, high, memfd); // outside the window: fd closed at once
        // A refused region (overlap) closes the fd it was given.
        GuestAddressSpace current = pool;
        Fd refused = dup(memfd);
        assertThrows(IllegalArgumentException.class, () -> current.withRegion(low, refused));
      }
      memory.close();
      pool.close();
      assertEquals(mappingsBefore, Mapping.liveCount());
      OpenFds.assertBackTo(fds);
    }
  }

  /** Adds {@code region} (or removes it if present) and retires the old snapshot. */
  private static GuestAddressSpace swap(
      GuestAddressSpace space, MemoryRegionDescription region, Memfd memfd) throws Exception {
    GuestAddressSpace next;
    try {
      next = space.withoutRegion(region);
    } catch (IllegalArgumentException absent) {
      next = space.withRegion(region, dup(memfd));
    }
    space.retire(next);
    return next;
  }
}
