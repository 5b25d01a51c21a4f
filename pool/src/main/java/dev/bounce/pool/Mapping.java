package dev.bounce.pool;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A page-aligned range of an fd mapped shared and read-write, seen as a {@link MemorySegment}.
 *
 * <p>The segment belongs to a shared arena: {@link #close()} unmaps exactly once, and from then on
 * any access through the segment, from any thread, fails with {@link IllegalStateException} instead
 * of touching unmapped memory. That is what lets a new memory table replace the old one under
 * running rings.
 */
public final class Mapping implements AutoCloseable {
  /** The kernel's page size, which mmap(2) offsets are multiples of. */
  public static final long PAGE_SIZE = Libc.pageSize();

  private static final System.Logger LOG = System.getLogger(Mapping.class.getName());
  private static final AtomicLong LIVE = new AtomicLong();

  private final Arena arena;
  private final MemorySegment segment;
  private final long offset;
  private final AtomicBoolean closed = new AtomicBoolean();

  private Mapping(Arena arena, MemorySegment segment, long offset) {
    this.arena = arena;
    this.segment = segment;
    this.offset = offset;
  }

  /**
   * Maps {@code size} bytes of {@code fd} starting at {@code offset}.
   *
   * @throws IllegalArgumentException when size is not positive, offset is negative or not a
   *     multiple of {@link #PAGE_SIZE}, fd is not a regular file, or the range runs past the end of
   *     the file (an access there would be SIGBUS)
   * @throws NativeException when fd is closed or foreign, or the kernel refuses the mapping
   */
  public static Mapping map(Fd fd, long offset, long size) throws NativeException {
    checkRange(offset, size);
    int number = fd.value();
    Libc.FileStatus status = Libc.fstat(number);
    if (!status.isRegularFile()) {
      throw new IllegalArgumentException(
          "fd "
              + number
              + " is not a memory file (mode 0"
              + Integer.toOctalString(status.mode())
              + ")");
    }
    if (size > status.size() || offset > status.size() - size) {
      throw new IllegalArgumentException(
          "cannot map "
              + size
              + " bytes at offset 0x"
              + Long.toHexString(offset)
              + " of fd "
              + number
              + ": the file is only "
              + status.size()
              + " bytes");
    }
    MemorySegment address =
        Libc.mmap(size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, number, offset);
    LIVE.incrementAndGet();
    Arena arena = Arena.ofShared();
    MemorySegment segment = address.reinterpret(size, arena, Mapping::unmap);
    return new Mapping(arena, segment, offset);
  }

  private static void checkRange(long offset, long size) {
    if (size <= 0) throw new IllegalArgumentException("mapping size must be positive: " + size);
    if (offset < 0) throw new IllegalArgumentException("mapping offset is negative: " + offset);
    if (offset % PAGE_SIZE != 0) {
      throw new IllegalArgumentException(
          "mapping offset 0x" + Long.toHexString(offset) + " is not a multiple of the page size");
    }
  }

  private static void unmap(MemorySegment segment) {
    try {
      Libc.munmap(segment, segment.byteSize());
      LIVE.decrementAndGet();
    } catch (NativeException e) {
      LOG.log(System.Logger.Level.ERROR, e.getMessage());
    }
  }

  /** The mapped bytes; invalid once this mapping is closed. */
  public MemorySegment segment() {
    return segment;
  }

  /** The offset in the fd where the mapping starts. */
  public long offset() {
    return offset;
  }

  public long size() {
    return segment.byteSize();
  }

  /** How many mappings this process holds now: a leak shows as a number that only grows. */
  public static long liveCount() {
    return LIVE.get();
  }

  /** Unmaps the first time; later calls do nothing. */
  @Override
  public void close() {
    if (closed.get()) return;
    synchronized (this) {
      if (closed.get()) return;
      arena.close(); // IllegalStateException while a downcall holds the segment: stays open
      closed.set(true);
    }
  }

  @Override
  public String toString() {
    return "mapping(0x" + Long.toHexString(segment.address()) + ", " + size() + " bytes)";
  }
}
