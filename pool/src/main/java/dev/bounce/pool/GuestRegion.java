package dev.bounce.pool;

import static dev.bounce.pool.Ranges.describeSize;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

/**
 * A region the frontend shared, mapped into this process: the description the frontend sent ({@code
 * shared}), the part of it that is mapped ({@code mapped}: all of it, or only what lies in a
 * restricted pool), the fd that carries it, and the mapping. Closing unmaps and closes the fd,
 * once.
 *
 * <p>Every region of every session is mapped here, so the bytes they hold together are counted
 * here, against {@link #PROCESS_LIMIT}: from the mmap until the unmap, whichever snapshots share
 * the region (a table that replaces another counts, while both are mapped, as much as both).
 */
public final class GuestRegion implements AutoCloseable {
  /**
   * The guest memory all sessions together may have mapped: half of the process's address space, at
   * most 64 TiB (x86-64's 47 bits give 128 TiB; arm64 kernels give 256 TiB with 48 bits, but 512
   * GiB with the 39 bits of Android's, where the bound is 256 GiB). A frontend's memfds cost the
   * host nothing until touched (VM_NORESERVE), so without this bound frontends could take the whole
   * address space, and the JVM's own mappings (malloc, thread stacks, direct buffers, metaspace)
   * would fail in every session at once. Not configurable: raising it gives that room away.
   */
  public static final long PROCESS_LIMIT = processLimit(stackTop());

  private static final long MOST = 64L << 40;

  /**
   * Half the address space that ends at the power of two above {@code stackTop} (the end of the
   * main thread's stack, which Linux places just below the top of the user address space), at most
   * 64 TiB. 64 TiB when it is unknown (0) or not one Linux gives (under 4 GiB, or past 2^56).
   */
  static long processLimit(long stackTop) {
    if (stackTop <= 1L << 32 || stackTop > 1L << 56) return MOST;
    long addressSpace = Long.highestOneBit(stackTop - 1) << 1;
    return Math.min(MOST, addressSpace / 2);
  }

  /**
   * The end of the main thread's stack from /proc/self/maps (read as bytes: file names in it need
   * not be UTF-8); 0, logged, when it cannot be read.
   */
  static long stackTop() {
    try (Stream<String> maps =
        Files.lines(Path.of("/proc/self/maps"), StandardCharsets.ISO_8859_1)) {
      return maps.filter(GuestRegion::isStack)
          .mapToLong(
              line ->
                  Long.parseUnsignedLong(
                      line.substring(line.indexOf('-') + 1, line.indexOf(' ')), 16))
          .findFirst()
          .orElseThrow(() -> new IllegalStateException("no [stack] line"));
    } catch (IOException | RuntimeException e) {
      System.getLogger(GuestRegion.class.getName())
          .log(
              System.Logger.Level.WARNING,
              "cannot tell the address space from /proc/self/maps ({0}); guest memory of all"
                  + " sessions is bounded at "
                  + describeSize(MOST),
              e.toString());
      return 0;
    }
  }

  /** A maps line whose path field is "[stack]" (a mapped file's name may end in it too). */
  private static boolean isStack(String line) {
    String[] fields = line.trim().split("\\s+", 6);
    return fields.length == 6 && fields[5].equals("[stack]");
  }

  private static final AtomicLong MAPPED = new AtomicLong();

  private final MemoryRegionDescription shared;
  private final MemoryRegionDescription mapped;
  private final Fd fd;
  private final Mapping mapping;
  private final MemorySegment segment;
  private final AtomicBoolean released = new AtomicBoolean();

  private GuestRegion(
      MemoryRegionDescription shared,
      MemoryRegionDescription mapped,
      Fd fd,
      Mapping mapping,
      MemorySegment segment) {
    this.shared = shared;
    this.mapped = mapped;
    this.fd = fd;
    this.mapping = mapping;
    this.segment = segment;
  }

  /**
   * Maps the {@code mapped} part of {@code fd}. Takes ownership of {@code fd}: it is closed when
   * the region is, or at once if mapping fails. An mmap offset that is not page-aligned is served
   * by mapping from the page below and slicing.
   *
   * @throws IllegalArgumentException when the mapping would take the guest memory of all sessions
   *     over {@link #PROCESS_LIMIT} (nothing is mapped)
   */
  static GuestRegion map(MemoryRegionDescription shared, MemoryRegionDescription mapped, Fd fd)
      throws NativeException {
    try {
      long slack = mapped.mmapOffset() % Mapping.PAGE_SIZE;
      long length = mapped.size() + slack; // no overflow: the description's offset + size fits
      reserve(length);
      try {
        Mapping mapping = Mapping.map(fd, mapped.mmapOffset() - slack, length);
        return new GuestRegion(
            shared, mapped, fd, mapping, mapping.segment().asSlice(slack, mapped.size()));
      } catch (NativeException | RuntimeException e) {
        MAPPED.addAndGet(-length);
        throw e;
      }
    } catch (NativeException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  /** Counts {@code length} more bytes mapped, or refuses them when over {@link #PROCESS_LIMIT}. */
  private static void reserve(long length) {
    long now;
    do {
      now = MAPPED.get();
      if (length > PROCESS_LIMIT - now) {
        throw new IllegalArgumentException(
            "mapping "
                + describeSize(length)
                + " more would take the guest memory this process maps for all its sessions from "
                + describeSize(now)
                + " over its bound of "
                + describeSize(PROCESS_LIMIT)
                + ": half the address space, kept for the JVM's own mappings, is not"
                + " configurable");
      }
    } while (!MAPPED.compareAndSet(now, now + length));
  }

  /** The bytes of guest memory all sessions have mapped now: what {@link #PROCESS_LIMIT} bounds. */
  public static long mappedInProcess() {
    return MAPPED.get();
  }

  /** The region as the frontend described it. */
  public MemoryRegionDescription shared() {
    return shared;
  }

  /** The part of the region this process mapped. */
  public MemoryRegionDescription mapped() {
    return mapped;
  }

  /** The mapped bytes: offset 0 is guest address {@code mapped().guestAddress()}. */
  public MemorySegment segment() {
    return segment;
  }

  public Fd fd() {
    return fd;
  }

  /**
   * Unmaps and closes the fd. The bytes leave the process's count once they are unmapped: a close
   * that fails while a system call still uses the mapping (it stays mapped) releases nothing, and
   * the close that then unmaps it does.
   */
  @Override
  public void close() {
    try {
      mapping.close();
      if (!released.getAndSet(true)) MAPPED.addAndGet(-mapping.size());
    } finally {
      fd.close();
    }
  }

  @Override
  public String toString() {
    return mapped.equals(shared) ? shared.toString() : shared + ", mapped " + mapped;
  }
}
