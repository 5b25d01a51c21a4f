package dev.bounce.vhost.frontend;

import dev.bounce.pool.BounceAllocator;
import dev.bounce.pool.Ranges;
import java.lang.foreign.MemorySegment;

/**
 * The guest's bounce layer over a restricted pool, as Linux's restricted-dma-pool does it (swiotlb,
 * Linux 5.18 and later): a buffer for the device is copied into pool slots before it is posted,
 * whichever way it goes, and one the device writes is copied back whole after completion. The slots
 * rotate through the pool, as swiotlb's do. A full pool answers {@link Dma#NO_ROOM}: the driver
 * waits for completions.
 *
 * <p>Not thread-safe: one driver thread owns it (as it owns its queues). Allocates nothing per
 * buffer.
 */
public final class BounceBuffers implements Dma {
  private final long start;
  private final MemorySegment slots;
  private final MemorySegment ram;
  private final long ramStart;
  private final BounceAllocator allocator;

  /** Bounce slots over guest {@code [start, start + size)}, which must be pool memory. */
  public BounceBuffers(GuestRam guest, long start, long size) {
    if (!guest.hasPool() || !Ranges.contains(guest.poolStart(), guest.poolSize(), start, size)) {
      throw new IllegalArgumentException(
          "bounce slots " + Ranges.describe(start, size) + " are not inside the pool of " + guest);
    }
    this.start = start;
    this.slots = guest.at(start, size);
    this.ramStart = guest.ramStart();
    this.ram = guest.at(ramStart, guest.ramSize());
    this.allocator = new BounceAllocator(size);
  }

  @Override
  public long mapToDevice(long address, int length) {
    long slot = allocator.allocate(length);
    if (slot == NO_ROOM) return NO_ROOM;
    MemorySegment.copy(ram, address - ramStart, slots, slot, length);
    return start + slot;
  }

  @Override
  public long mapFromDevice(long address, int length) {
    return mapToDevice(address, length); // swiotlb_tbl_map_single copies in whatever the direction
  }

  @Override
  public void unmapToDevice(long deviceAddress, int length) {
    allocator.free(deviceAddress - start, length);
  }

  @Override
  public void unmapFromDevice(long deviceAddress, long address, int length) {
    MemorySegment.copy(slots, deviceAddress - start, ram, address - ramStart, length);
    allocator.free(deviceAddress - start, length);
  }

  /** Bytes in flight now, and at most so far (the restricted-DMA metrics). */
  public long bytesInUse() {
    return allocator.bytesInUse();
  }

  public long peakBytesInUse() {
    return allocator.peakBytesInUse();
  }
}
