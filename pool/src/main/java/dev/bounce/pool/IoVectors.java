package dev.bounce.pool;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * A reusable array of {@code struct iovec} in native memory, for one {@link Libc#readv} into or
 * {@link Libc#writev} from several pieces of mapped memory at once (guest buffers, so that bytes
 * move between a socket and the driver's buffers without a copy in between). Filling it allocates
 * nothing; it is not thread-safe.
 */
public final class IoVectors {
  private static final long IOVEC_SIZE = 16; // struct iovec { void *iov_base; size_t iov_len; }

  private final MemorySegment array;
  private final int capacity;
  private int count;
  private long bytes;

  /**
   * @param capacity the most pieces one call takes (Linux's IOV_MAX is 1024)
   */
  public IoVectors(int capacity) {
    if (capacity < 1 || capacity > 1024) {
      throw new IllegalArgumentException("iovec capacity " + capacity + " is not in 1..1024");
    }
    this.capacity = capacity;
    this.array = Arena.ofAuto().allocate(IOVEC_SIZE * capacity, 8);
  }

  /** Empties it for the next call. */
  public void clear() {
    count = 0;
    bytes = 0;
  }

  /** Whether another piece fits. */
  public boolean hasRoom() {
    return count < capacity;
  }

  /**
   * Adds {@code length} bytes of native {@code segment} from {@code offset} on.
   *
   * @throws IllegalStateException when it is full ({@link #hasRoom})
   * @throws IllegalArgumentException when the segment is not native or the range is outside it
   */
  public void add(MemorySegment segment, long offset, long length) {
    if (count == capacity) throw new IllegalStateException("iovec array of " + capacity + " full");
    if (!segment.isNative()) throw new IllegalArgumentException("not native memory: " + segment);
    // What the contract says (an IllegalArgumentException), not Objects.checkFromIndexSize's
    // IndexOutOfBoundsException, which a caller catching the documented exception would miss.
    if (offset < 0 || length < 0 || offset > segment.byteSize() - length) {
      throw new IllegalArgumentException(
          "bytes [" + offset + ", +" + length + ") are outside a segment of " + segment.byteSize());
    }
    long at = IOVEC_SIZE * count;
    array.set(ValueLayout.JAVA_LONG, at, segment.address() + offset);
    array.set(ValueLayout.JAVA_LONG, at + 8, length);
    count++;
    bytes += length;
  }

  /** Pieces added since {@link #clear}. */
  public int count() {
    return count;
  }

  /** Bytes in all pieces. */
  public long bytes() {
    return bytes;
  }

  MemorySegment array() {
    return array;
  }
}
