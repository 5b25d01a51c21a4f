package dev.bounce.vhost.frontend;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.Ranges;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * The fake frontend's guest memory: RAM as a memfd mapped in this process (the frontend-virtual
 * address of a region is where this process maps it, as with QEMU), and optionally a restricted
 * pool at a guest-physical window. The frontend sees all of it; what the backend gets depends on
 * the {@link MemoryMode}: all of RAM (the pool, if any, lies inside it), or only the pool, as its
 * own memfd.
 *
 * <p>In {@link MemoryMode#DEVICE_POOL} the backend owns the pool: it arrives later ({@link
 * #attachDevicePool}) and is placed at guest address 0 with frontend address 0 as well, so that the
 * guest's addresses in it, and the ring addresses of SET_VRING_ADDR, are offsets into the pool (the
 * convention of dev.bounce.vhost.backend.DevicePool). RAM is never shared in that mode and must lie
 * above the pool.
 */
public final class GuestRam implements AutoCloseable {
  /**
   * One piece of guest-physical memory this process holds: where it is, its bytes, and the address
   * the frontend names it by (where it is mapped here; 0 for a device-owned pool).
   */
  private record Piece(long guestAddress, Memfd memfd, Mapping mapping, long userBase) {
    Piece(long guestAddress, Memfd memfd, Mapping mapping) {
      this(guestAddress, memfd, mapping, mapping.segment().address());
    }
  }

  private final MemoryMode mode;
  private final List<Piece> pieces;
  private long poolStart;
  private long poolSize;

  private GuestRam(MemoryMode mode, List<Piece> pieces, long poolStart, long poolSize) {
    this.mode = mode;
    this.pieces = new ArrayList<>(pieces);
    this.poolStart = poolStart;
    this.poolSize = poolSize;
  }

  /**
   * Guest RAM of {@code ramSize} bytes at {@code ramStart}, with a pool at {@code poolStart} of
   * {@code poolSize} bytes (0: none). In {@link MemoryMode#SHARED} the pool must lie inside RAM; in
   * {@link MemoryMode#POOL} it is a separate memfd and must not overlap RAM; in {@link
   * MemoryMode#DEVICE_POOL} there is none yet (the backend hands it over).
   */
  public static GuestRam create(
      MemoryMode mode, long ramStart, long ramSize, long poolStart, long poolSize)
      throws NativeException {
    if (mode == MemoryMode.DEVICE_POOL && poolSize != 0) {
      throw new IllegalArgumentException(
          "device-pool mode takes no --pool: the backend owns the pool and says how large it is");
    }
    if (mode == MemoryMode.POOL && poolSize == 0) {
      throw new IllegalArgumentException("pool mode needs a pool (--pool GPA:SIZE)");
    }
    if (poolSize != 0) checkPool(mode, ramStart, ramSize, poolStart, poolSize);
    List<Piece> pieces = new ArrayList<>();
    try {
      pieces.add(piece("bounce-guest-ram", ramStart, ramSize));
      if (mode == MemoryMode.POOL) pieces.add(piece("bounce-guest-pool", poolStart, poolSize));
      return new GuestRam(mode, List.copyOf(pieces), poolStart, poolSize);
    } catch (NativeException | RuntimeException e) {
      pieces.forEach(GuestRam::closePiece);
      throw e;
    }
  }

  private static void checkPool(
      MemoryMode mode, long ramStart, long ramSize, long poolStart, long poolSize) {
    boolean inside = Ranges.contains(ramStart, ramSize, poolStart, poolSize);
    if (mode == MemoryMode.SHARED && !inside) {
      throw new IllegalArgumentException(
          "the pool "
              + Ranges.describe(poolStart, poolSize)
              + " must lie inside guest RAM "
              + Ranges.describe(ramStart, ramSize)
              + " in shared mode");
    }
    if (mode == MemoryMode.POOL && Ranges.overlap(ramStart, ramSize, poolStart, poolSize)) {
      throw new IllegalArgumentException(
          "the pool "
              + Ranges.describe(poolStart, poolSize)
              + " must not overlap guest RAM "
              + Ranges.describe(ramStart, ramSize)
              + " in pool mode (it is its own memory slot)");
    }
  }

  private static Piece piece(String name, long guestAddress, long size) throws NativeException {
    Memfd memfd = Memfd.create(name, size);
    try {
      return new Piece(guestAddress, memfd, memfd.map(0, size));
    } catch (NativeException | RuntimeException e) {
      memfd.close();
      throw e;
    }
  }

  /**
   * Maps the pool the backend handed over ({@code fd}, {@code size} bytes; BACKEND_SHMEM_MAP) at
   * guest and frontend address 0. Takes ownership of {@code fd} whatever happens.
   *
   * @throws IllegalStateException when this is not device-pool memory, or it has its pool already
   * @throws IllegalArgumentException when the pool would overlap RAM, or the file is smaller
   */
  public void attachDevicePool(Fd fd, long size) throws NativeException {
    if (mode != MemoryMode.DEVICE_POOL || hasPool()) {
      fd.close();
      throw new IllegalStateException("a device pool arrived for " + this);
    }
    if (Ranges.overlap(0, size, ramStart(), ramSize())) {
      fd.close();
      throw new IllegalArgumentException(
          "the device pool of "
              + size
              + " bytes (offsets from guest 0) overlaps guest RAM "
              + Ranges.describe(ramStart(), ramSize())
              + "; start RAM above it");
    }
    Memfd memfd = Memfd.adopt(fd, size);
    try {
      pieces.add(new Piece(0, memfd, memfd.map(0, size), 0));
    } catch (NativeException | RuntimeException e) {
      memfd.close();
      throw e;
    }
    poolStart = 0;
    poolSize = size;
  }

  private static void closePiece(Piece piece) {
    piece.mapping().close();
    piece.memfd().close();
  }

  public MemoryMode mode() {
    return mode;
  }

  /** Where guest RAM starts (guest-physical) and how big it is. */
  public long ramStart() {
    return pieces.getFirst().guestAddress();
  }

  public long ramSize() {
    return pieces.getFirst().mapping().size();
  }

  public boolean hasPool() {
    return poolSize != 0;
  }

  public long poolStart() {
    return poolStart;
  }

  public long poolSize() {
    return poolSize;
  }

  /** A region the frontend shares and a fresh fd for it, which the caller sends and then closes. */
  public record SharedRegion(MemoryRegionDescription description, Fd fd) {}

  /**
   * The regions the backend gets, in the order a VMM sends them, each with its own duplicate fd:
   * all of RAM in shared mode, only the pool in pool mode.
   */
  public List<SharedRegion> sharedRegions() throws NativeException {
    List<SharedRegion> shared = new ArrayList<>();
    try {
      for (Piece piece : pieces) {
        if (mode == MemoryMode.DEVICE_POOL) break; // the guest's RAM stays private
        if (mode == MemoryMode.POOL && piece.guestAddress() != poolStart) continue;
        MemoryRegionDescription description =
            new MemoryRegionDescription(
                piece.guestAddress(),
                piece.mapping().size(),
                piece.mapping().segment().address(),
                0);
        shared.add(new SharedRegion(description, piece.memfd().duplicate()));
      }
      return shared;
    } catch (NativeException | RuntimeException e) {
      shared.forEach(s -> s.fd().close());
      throw e;
    }
  }

  /** The bytes at guest-physical {@code [address, address + length)}, as the guest sees them. */
  public MemorySegment at(long address, long length) {
    for (Piece piece : pieces) {
      if (Ranges.contains(piece.guestAddress(), piece.mapping().size(), address, length)) {
        return piece.mapping().segment().asSlice(address - piece.guestAddress(), length);
      }
    }
    throw new IllegalArgumentException(
        "guest address " + Ranges.hex(address) + " length " + length + " is not guest memory");
  }

  /**
   * The memory holding guest {@code address}: its bytes, and the guest-physical and
   * frontend-virtual addresses of its first byte (what a {@link DriverQueue} is built over).
   */
  public record Area(MemorySegment bytes, long guestBase, long userBase) {}

  public Area areaOf(long address) {
    for (Piece piece : pieces) {
      if (Ranges.contains(piece.guestAddress(), piece.mapping().size(), address, 1)) {
        return new Area(piece.mapping().segment(), piece.guestAddress(), piece.userBase());
      }
    }
    throw new IllegalArgumentException(
        "guest address " + Ranges.hex(address) + " is not guest memory");
  }

  /** The frontend address of guest {@code address} (what SET_VRING_ADDR carries). */
  public long userAddress(long address) {
    Area area = areaOf(address);
    return area.userBase() + (address - area.guestBase());
  }

  @Override
  public void close() {
    pieces.forEach(GuestRam::closePiece);
  }

  @Override
  public String toString() {
    return "guest RAM "
        + pieces.stream().map(p -> Ranges.describe(p.guestAddress(), p.mapping().size())).toList()
        + (hasPool() ? ", pool " + Ranges.describe(poolStart, poolSize) : "")
        + ", "
        + mode.flag()
        + " mode";
  }
}
