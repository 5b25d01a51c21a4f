package dev.bounce.vhost.frontend;

import dev.bounce.pool.BounceAllocator;
import dev.bounce.pool.Ranges;
import java.lang.foreign.MemorySegment;

/**
 * The guest driver's buffers: a slot allocator over guest RAM that the rings do not use (the model
 * of the kernel's own buffers, so it reuses the memory freed last, still in the caches, as the
 * kernel's allocators do), and the {@link Dma} layer that hands them to the device: directly when
 * all memory is shared, through {@link BounceBuffers} in the pool otherwise. Not thread-safe: one
 * driver thread owns it.
 */
public final class GuestBuffers {
  /** What {@link #allocate} returns when the heap is full now. */
  public static final long NO_ROOM = BounceAllocator.NO_ROOM;

  private final long start;
  private final MemorySegment bytes;
  private final BounceAllocator heap;
  private final Dma dma;

  private GuestBuffers(GuestRam ram, long start, long size, Dma dma) {
    this.start = start;
    this.bytes = ram.at(start, size);
    this.heap = new BounceAllocator(size, BounceAllocator.Placement.LOWEST_FREED);
    this.dma = dma;
  }

  /**
   * Buffers for a driver on {@code session}: without a pool, guest RAM after the rings, used
   * directly; with one, the rest of the pool becomes bounce slots and the buffers live in RAM
   * outside the pool.
   */
  public static GuestBuffers of(FrontendSession session) {
    GuestRam ram = session.ram();
    long ramEnd = ram.ramStart() + ram.ramSize();
    if (!ram.hasPool()) {
      long start = session.ringAreaEnd();
      return new GuestBuffers(ram, start, ramEnd - start, new Dma.Direct());
    }
    long poolEnd = ram.poolStart() + ram.poolSize();
    long slots = poolEnd - session.ringAreaEnd();
    if (slots < BounceAllocator.SLOT_SIZE) {
      throw new IllegalArgumentException(
          "the pool "
              + Ranges.describe(ram.poolStart(), ram.poolSize())
              + " has no room for bounce buffers after the rings; make it larger");
    }
    Dma bounce = new BounceBuffers(ram, session.ringAreaEnd(), slots);
    if (ram.mode() != MemoryMode.SHARED) { // the pool is memory of its own: all RAM is the heap
      return new GuestBuffers(ram, ram.ramStart(), ram.ramSize(), bounce);
    }
    long below = ram.poolStart() - ram.ramStart();
    long above = ramEnd - poolEnd;
    return below >= above
        ? new GuestBuffers(ram, ram.ramStart(), below, bounce)
        : new GuestBuffers(ram, poolEnd, above, bounce);
  }

  /** A guest buffer of {@code length} bytes: its guest address, or {@link #NO_ROOM}. */
  public long allocate(int length) {
    long offset = heap.allocate(length);
    return offset == NO_ROOM ? NO_ROOM : start + offset;
  }

  public void free(long address, int length) {
    heap.free(address - start, length);
  }

  /** The heap's bytes: guest address {@code a} is at offset {@code a - }{@link #start()}. */
  public MemorySegment bytes() {
    return bytes;
  }

  public long start() {
    return start;
  }

  public Dma dma() {
    return dma;
  }
}
