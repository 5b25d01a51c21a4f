package dev.bounce.pool;

import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * Guest memory as a backend sees it: an immutable snapshot of the regions the frontend shared, with
 * translation of (address, length) to bytes. Changes return a new snapshot, so a data thread can
 * keep using the one it holds while the control thread builds the next; {@link #retire} then
 * releases what the old one had and the new one does not.
 */
public sealed interface GuestAddressSpace extends AutoCloseable
    permits GuestMemory, RestrictedPool {
  /** vhost-user backends commonly report 509 slots (GET_MAX_MEM_SLOTS); QEMU needs no more. */
  int MAX_REGIONS = 509;

  /** The bytes at guest-physical {@code [address, address + length)}. */
  MemorySegment translate(long address, long length) throws GuestAccessException;

  /**
   * The bytes at frontend-virtual {@code [address, address + length)} (SET_VRING_ADDR addresses).
   */
  MemorySegment translateUserAddress(long address, long length) throws GuestAccessException;

  /**
   * The region holding all of guest {@code [address, address + length)}, or null when {@link
   * #translate} would fail: the allocation-free form for hot paths. The bytes are {@link
   * GuestRegion#segment()} from offset {@code address - mapped().guestAddress()}.
   */
  GuestRegion regionAt(long address, long length);

  /**
   * A snapshot with one more region, mapped from {@code fd}. Takes ownership of {@code fd} whatever
   * happens.
   *
   * @throws IllegalArgumentException when the region overlaps one already present, there are
   *     already {@link #MAX_REGIONS}, or mapping it would take the process over {@link
   *     GuestRegion#PROCESS_LIMIT}
   */
  GuestAddressSpace withRegion(MemoryRegionDescription region, Fd fd) throws NativeException;

  /** The bytes of guest memory this snapshot maps: the sum of its regions' mapped parts. */
  long mappedBytes();

  /**
   * The bytes this snapshot would map with {@code regions} added ({@link #withRegion} each): what a
   * bound on a session's guest memory is checked against before anything is mapped. {@link
   * Long#MAX_VALUE} when the sum would overflow.
   */
  long mappedBytesWith(List<MemoryRegionDescription> regions);

  /**
   * A snapshot without the region REM_MEM_REG names (guest address, user address and size). The
   * removed region stays mapped until this snapshot is {@linkplain #retire retired}.
   *
   * @throws IllegalArgumentException when no such region is present
   */
  GuestAddressSpace withoutRegion(MemoryRegionDescription region);

  /**
   * How many regions the frontend has shared (the restricted pool counts those it did not map too).
   */
  int regionCount();

  /**
   * Unmaps and closes every region of this snapshot that {@code successor} does not hold. Call it
   * once no thread can still use this snapshot.
   */
  void retire(GuestAddressSpace successor);

  /** Unmaps and closes every region of this snapshot. */
  @Override
  void close();
}
