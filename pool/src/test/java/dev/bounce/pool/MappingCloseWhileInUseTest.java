package dev.bounce.pool;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.testing.BlockedThreads;
import dev.bounce.pool.testing.BlockedThreads.Syscall;
import dev.bounce.pool.testing.ProcessMaps;
import dev.bounce.pool.testing.TestSyscalls;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * A mapping closed while a syscall on another thread still reads into it (a data thread doing
 * read(2) into a guest buffer while the control thread retires the memory table). The arena cannot
 * be closed during the call; what matters is that the mapping is not lost: once the call is done,
 * closing it unmaps it, and from then on access fails.
 */
class MappingCloseWhileInUseTest {
  private static final long PAGE = Mapping.PAGE_SIZE;
  private static final Duration TIMEOUT = Duration.ofSeconds(10);

  @Test
  @DisplayName("close during a syscall into the segment: once the call returns, close unmaps it")
  void closeDuringASyscallIsNotLost() throws Exception {
    String name = "bounce-busy-" + System.nanoTime();
    long mappingsBefore = Mapping.liveCount();
    try (Memfd memfd = Memfd.create(name, PAGE);
        TestSyscalls.Pipe pipe = TestSyscalls.pipe();
        Arena arena = Arena.ofConfined()) {
      Mapping mapping = memfd.map(0, PAGE);
      MemorySegment segment = mapping.segment();
      AtomicReference<Object> readResult = new AtomicReference<>();
      Thread reader = blockedReader(pipe, segment, readResult);

      // The memory is in use by a syscall right now: the arena cannot close. It must not be
      // forgotten.
      assertThrows(IllegalStateException.class, mapping::close);

      MemorySegment data = arena.allocate(8);
      data.set(JAVA_LONG, 0, 0x4242_4242_4242_4242L);
      assertEquals(8, Libc.write(pipe.writeEnd().value(), data, 8));
      assertTrue(reader.join(TIMEOUT), "the reader did not finish");
      assertEquals(8L, readResult.get());
      assertEquals(0x4242_4242_4242_4242L, segment.get(JAVA_LONG, 0), "read into the mapping");

      mapping.close(); // the call is over: this must unmap
      assertEquals(
          mappingsBefore,
          Mapping.liveCount(),
          "the mapping is still live after close; the read returned " + readResult.get());
      assertEquals(List.of(), ProcessMaps.ofMemfd(name), "still in /proc/self/maps");
      assertThrows(IllegalStateException.class, () -> segment.get(JAVA_LONG, 0));
    }
  }

  @Test
  @DisplayName("retire while a syscall uses one region: the other regions are still released")
  void retireDuringASyscallReleasesTheOthers() throws Exception {
    long mappingsBefore = Mapping.liveCount();
    try (Memfd memfd = Memfd.create("bounce-busy-retire", 3 * PAGE);
        TestSyscalls.Pipe pipe = TestSyscalls.pipe();
        Arena arena = Arena.ofConfined()) {
      GuestMemory memory = GuestMemory.empty();
      for (int i = 0; i < 3; i++) {
        memory =
            memory.withRegion(
                new MemoryRegionDescription(
                    0x10_0000 + i * 0x10_0000L, PAGE, 0x7f00_0000_0000L + i * 0x10_0000L, i * PAGE),
                TestSyscalls.dup(memfd));
      }
      GuestMemory old = memory;
      List<GuestRegion> regions = old.regions();
      MemorySegment busy = old.translate(regions.getFirst().mapped().guestAddress(), 8);
      AtomicReference<Object> readResult = new AtomicReference<>();
      Thread reader = blockedReader(pipe, busy, readResult);

      MemorySegment data = arena.allocate(8);
      try {
        // The busy region cannot be unmapped now; not a reason to keep the others.
        assertThrows(IllegalStateException.class, () -> old.retire(GuestMemory.empty()));
        for (GuestRegion region : regions.subList(1, regions.size())) {
          assertTrue(!region.fd().isOpen(), () -> region + " was not released");
        }
      } finally {
        assertEquals(8, Libc.write(pipe.writeEnd().value(), data, 8));
        assertTrue(reader.join(TIMEOUT));
        old.close();
      }
      assertEquals(8L, readResult.get());
      assertTrue(!regions.getFirst().fd().isOpen(), "the busy region's fd was never closed");
      assertEquals(mappingsBefore, Mapping.liveCount(), "mappings still live");
    }
  }

  /**
   * A thread asleep in read(2) on {@code pipe}'s empty read end with {@code into} as its buffer,
   * once this returns; what the read returned (or threw) goes to {@code result}.
   */
  private static Thread blockedReader(
      TestSyscalls.Pipe pipe, MemorySegment into, AtomicReference<Object> result) throws Exception {
    Thread reader =
        BlockedThreads.start(
            () -> {
              try {
                result.set(Libc.read(pipe.readEnd().value(), into, 8));
              } catch (Throwable t) {
                result.set(t);
              }
            });
    BlockedThreads.awaitBlocked(reader, Syscall.READ, pipe.readEnd().value(), TIMEOUT);
    return reader;
  }
}
