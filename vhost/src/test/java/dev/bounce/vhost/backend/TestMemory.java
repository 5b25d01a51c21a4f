package dev.bounce.vhost.backend;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.protocol.MemoryTable;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Guest memory as a test frontend shares it: one fresh memfd per region (large enough for the
 * region's mmap offset plus its size; memfds are sparse, so 512 MiB costs nothing until touched),
 * with the guest addresses, sizes and frontend addresses a recording or a test gives. The frontend
 * reaches the bytes through its own mapping of each memfd, by frontend (user) address, as a VMM
 * does.
 */
final class TestMemory implements AutoCloseable {
  private record Region(MemoryRegionDescription description, Memfd memfd, Mapping view) {
    boolean holdsUser(long address, long length) {
      long offset = address - description.userAddress();
      return Long.compareUnsigned(offset, description.size()) < 0
          && length <= description.size() - offset;
    }
  }

  private final List<Region> regions;

  /** Per region, the lowest byte handed out by {@link #allocate} (it hands out from the top). */
  private final long[] allocated;

  private TestMemory(List<Region> regions) {
    this.regions = regions;
    this.allocated = new long[regions.size()];
    for (int i = 0; i < allocated.length; i++) allocated[i] = regions.get(i).description().size();
  }

  static TestMemory of(List<MemoryRegionDescription> descriptions) throws NativeException {
    List<Region> regions = new ArrayList<>();
    try {
      for (MemoryRegionDescription d : descriptions) {
        long end = d.mmapOffset() + d.size();
        long fileSize = (end + Mapping.PAGE_SIZE - 1) & -Mapping.PAGE_SIZE;
        Memfd memfd = Memfd.create("test-guest-ram", fileSize);
        try {
          long mapStart = d.mmapOffset() & -Mapping.PAGE_SIZE;
          Mapping view = memfd.map(mapStart, fileSize - mapStart);
          regions.add(new Region(d, memfd, view));
        } catch (NativeException | RuntimeException e) {
          memfd.close();
          throw e;
        }
      }
      return new TestMemory(List.copyOf(regions));
    } catch (NativeException | RuntimeException e) {
      regions.forEach(TestMemory::closeRegion);
      throw e;
    }
  }

  /**
   * One region of {@code size} bytes at guest address {@code guest}, frontend address {@code user}.
   */
  static TestMemory single(long guest, long size, long user) throws NativeException {
    return of(List.of(new MemoryRegionDescription(guest, size, user, 0)));
  }

  List<MemoryRegionDescription> descriptions() {
    return regions.stream().map(Region::description).toList();
  }

  MemoryTable table() {
    return new MemoryTable(descriptions());
  }

  /** The memfds' fds, in region order: what SET_MEM_TABLE carries (they stay ours). */
  Fd[] fds() {
    return regions.stream().map(r -> r.memfd().fd()).toArray(Fd[]::new);
  }

  Fd fd(int region) {
    return regions.get(region).memfd().fd();
  }

  MemoryRegionDescription description(int region) {
    return regions.get(region).description();
  }

  /** The bytes at frontend address {@code [user, user + length)}. */
  MemorySegment user(long user, long length) {
    Region r = regionOf(user, length);
    long offset = r.description().mmapOffset() + (user - r.description().userAddress());
    return r.view().segment().asSlice(offset - r.view().offset(), length);
  }

  /** The guest-physical address of frontend address {@code user} (what descriptors carry). */
  long guestAddress(long user) {
    Region r = regionOf(user, 1);
    return r.description().guestAddress() + (user - r.description().userAddress());
  }

  /**
   * {@code length} bytes for buffers in the region that holds frontend address {@code near}, handed
   * out from the region's top down (rings sit well below in every recording); the frontend address,
   * 64-byte aligned.
   */
  long allocate(long near, long length) {
    Region r = regionOf(near, 1);
    int i = regions.indexOf(r);
    long offset = (allocated[i] - length) & -64L;
    long ringOffset = near - r.description().userAddress();
    if (offset <= ringOffset + 0x1_0000) {
      throw new IllegalStateException("no room for buffers above the rings in " + r.description());
    }
    allocated[i] = offset;
    return r.description().userAddress() + offset;
  }

  private Region regionOf(long user, long length) {
    for (Region r : regions) if (r.holdsUser(user, length)) return r;
    throw new IllegalArgumentException(
        "frontend address 0x" + Long.toHexString(user) + " (+" + length + ") is in no region");
  }

  @Override
  public void close() {
    regions.forEach(TestMemory::closeRegion);
  }

  private static void closeRegion(Region r) {
    r.view().close();
    r.memfd().close();
  }
}
