package dev.bounce.vhost.virtq;

import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_INDIRECT;
import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_NEXT;
import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_WRITE;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.GuestMemory;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.RestrictedPool;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;

/**
 * The driver's side of one split virtqueue, for tests: guest memory is a real memfd that the
 * backend sees through a {@link GuestAddressSpace} (its own mapping, as a VMM would share it) and
 * the driver writes through a second mapping. Lays out the descriptor table, available ring and
 * used ring (aligned, as section 2.7 asks) and posts chains, direct and indirect.
 */
final class DriverRings implements AutoCloseable {
  static final ValueLayout.OfShort LE16 =
      ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  static final ValueLayout.OfInt LE32 =
      ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  static final ValueLayout.OfLong LE64 =
      ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

  /** Where the frontend (the VMM) has guest memory mapped: SET_VRING_ADDR addresses. */
  static final long USER_BASE = 0x7f12_3400_0000L;

  /** A buffer element: guest address, length, device-writable or not. */
  record Buf(long address, long length, boolean writable) {}

  final int size;
  final long guestBase;
  final long memorySize;
  final long desc;
  final long avail;
  final long used;

  private final Memfd memfd;
  private final Mapping view;
  private GuestAddressSpace memory;
  private long free;
  private int nextDescriptor;
  private int availIdx;

  private DriverRings(
      int size,
      long guestBase,
      long memorySize,
      long ringBase,
      Memfd memfd,
      Mapping view,
      GuestAddressSpace memory) {
    this.size = size;
    this.guestBase = guestBase;
    this.memorySize = memorySize;
    this.memfd = memfd;
    this.view = view;
    this.memory = memory;
    this.desc = ringBase;
    this.avail = align(desc + Virtq.descriptorTableSize(size), 2);
    this.used = align(avail + Virtq.availableRingSize(size), 4096);
    this.free = align(used + Virtq.usedRingSize(size), 4096);
  }

  /** Guest memory {@code [guestBase, guestBase + memorySize)}, all shared; rings at its start. */
  static DriverRings shared(int size, long guestBase, long memorySize) throws NativeException {
    return create(size, guestBase, memorySize, GuestMemory.empty(), guestBase);
  }

  /**
   * Guest memory {@code [0, memorySize)}, all shared by the frontend, of which the backend may use
   * only the restricted pool {@code [poolStart, poolStart + poolSize)}; rings at the pool's start.
   */
  static DriverRings pooled(int size, long memorySize, long poolStart, long poolSize)
      throws NativeException {
    return create(size, 0, memorySize, RestrictedPool.at(poolStart, poolSize), poolStart);
  }

  private static DriverRings create(
      int size, long guestBase, long memorySize, GuestAddressSpace empty, long ringBase)
      throws NativeException {
    Memfd memfd = Memfd.create("virtq-test", memorySize);
    Mapping view = memfd.map(0, memorySize);
    GuestAddressSpace memory =
        empty.withRegion(
            new MemoryRegionDescription(guestBase, memorySize, USER_BASE + guestBase, 0),
            duplicate(memfd.fd()));
    return new DriverRings(size, guestBase, memorySize, ringBase, memfd, view, memory);
  }

  /** What the backend sees. */
  GuestAddressSpace memory() {
    return memory;
  }

  /**
   * A new snapshot of the same memory with the region removed and added back: a fresh mapping, as
   * after REM_MEM_REG + ADD_MEM_REG. The old snapshot is retired (its mapping unmapped).
   */
  GuestAddressSpace remap() throws NativeException {
    MemoryRegionDescription region =
        new MemoryRegionDescription(guestBase, memorySize, USER_BASE + guestBase, 0);
    GuestAddressSpace next = memory.withoutRegion(region).withRegion(region, duplicate(memfd.fd()));
    memory.retire(next);
    memory = next;
    return next;
  }

  /** SET_VRING_ADDR as QEMU sends it: frontend-virtual addresses. */
  RingAddresses frontendAddresses() {
    return new RingAddresses(
        USER_BASE + desc, USER_BASE + avail, USER_BASE + used, AddressKind.FRONTEND_VIRTUAL);
  }

  /** The guest-physical addresses of the rings. */
  RingAddresses guestAddresses() {
    return new RingAddresses(desc, avail, used, AddressKind.GUEST_PHYSICAL);
  }

  /** A queue of this size set up on these rings with {@code features}, attached. */
  SplitQueue queue(int index, long features) throws VirtqueueException {
    SplitQueue queue = new SplitQueue(index, Math.max(size, 256));
    queue.setSize(size);
    queue.setFeatures(features);
    queue.setAddresses(frontendAddresses());
    queue.setBase(availIdx);
    queue.attach(memory);
    return queue;
  }

  // ---- raw memory ----

  MemorySegment at(long guestAddress, long length) {
    return view.segment().asSlice(guestAddress - guestBase, length);
  }

  /** Buffer space from the bump allocator, aligned to 16. */
  long alloc(long bytes) {
    long address = free;
    free = align(free + Math.max(bytes, 1), 16);
    if (free - guestBase > memorySize) throw new IllegalStateException("test memory exhausted");
    return address;
  }

  void fill(long guestAddress, byte[] data) {
    MemorySegment.copy(
        data, 0, at(guestAddress, data.length), ValueLayout.JAVA_BYTE, 0, data.length);
  }

  byte[] bytes(long guestAddress, int length) {
    return at(guestAddress, length).toArray(ValueLayout.JAVA_BYTE);
  }

  Buf readable(byte[] data) {
    long address = alloc(data.length);
    fill(address, data);
    return new Buf(address, data.length, false);
  }

  Buf writable(int length) {
    return new Buf(alloc(length), length, true);
  }

  // ---- descriptors ----

  /** Writes descriptor {@code i} of the queue's descriptor table. */
  void descriptor(int i, long address, long length, int flags, int next) {
    writeDescriptor(desc + 16L * i, address, length, flags, next);
  }

  /** Writes entry {@code i} of the indirect table at {@code table}. */
  void indirectDescriptor(long table, int i, long address, long length, int flags, int next) {
    writeDescriptor(table + 16L * i, address, length, flags, next);
  }

  private void writeDescriptor(long at, long address, long length, int flags, int next) {
    MemorySegment d = at(at, 16);
    d.set(LE64, 0, address);
    d.set(LE32, 8, (int) length);
    d.set(LE16, 12, (short) flags);
    d.set(LE16, 14, (short) next);
  }

  /** Lays out {@code bufs} in free descriptors of the table, chained by NEXT; the head. */
  int chain(Buf... bufs) {
    int head = nextDescriptor;
    for (int k = 0; k < bufs.length; k++) {
      int i = (head + k) % size;
      boolean last = k == bufs.length - 1;
      descriptor(
          i,
          bufs[k].address(),
          bufs[k].length(),
          (bufs[k].writable() ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          last ? 0 : (i + 1) % size);
    }
    nextDescriptor = (head + bufs.length) % size;
    return head;
  }

  /** Lays out {@code bufs} in a new indirect table and one descriptor pointing at it; the head. */
  int indirectChain(Buf... bufs) {
    long table = alloc(16L * bufs.length);
    for (int k = 0; k < bufs.length; k++) {
      boolean last = k == bufs.length - 1;
      indirectDescriptor(
          table,
          k,
          bufs[k].address(),
          bufs[k].length(),
          (bufs[k].writable() ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          last ? 0 : k + 1);
    }
    int head = nextDescriptor;
    descriptor(head, table, 16L * bufs.length, VIRTQ_DESC_F_INDIRECT, 0);
    nextDescriptor = (head + 1) % size;
    return head;
  }

  /** Makes {@code heads} available and publishes them with one idx store (release). */
  void post(int... heads) {
    MemorySegment a = at(avail, Virtq.availableRingSize(size));
    for (int head : heads) {
      a.set(LE16, 4 + 2L * (availIdx % size), (short) head);
      availIdx = (availIdx + 1) & 0xffff;
    }
    VarHandle.releaseFence();
    a.set(LE16, 2, (short) availIdx);
    VarHandle.fullFence();
  }

  /** Posts a direct chain of {@code bufs}; its head. */
  int postChain(Buf... bufs) {
    int head = chain(bufs);
    post(head);
    return head;
  }

  /** Posts an indirect chain of {@code bufs}; its head. */
  int postIndirect(Buf... bufs) {
    int head = indirectChain(bufs);
    post(head);
    return head;
  }

  // ---- ring fields ----

  int availIndex() {
    return availIdx;
  }

  /** Stores avail.idx as a (possibly misbehaving) driver would. */
  void setAvailIndex(int idx) {
    availIdx = idx & 0xffff;
    at(avail, 4).set(LE16, 2, (short) idx);
    VarHandle.fullFence();
  }

  /** Starts the driver's own count at {@code idx}, as if that many entries had gone by. */
  void startAt(int idx) {
    availIdx = idx & 0xffff;
    at(avail, 4).set(LE16, 2, (short) idx);
    at(used, 4).set(LE16, 2, (short) idx);
  }

  void setAvailFlags(int flags) {
    at(avail, 2).set(LE16, 0, (short) flags);
  }

  void setUsedEvent(int usedEvent) {
    at(avail, Virtq.availableRingSize(size)).set(LE16, 4 + 2L * size, (short) usedEvent);
    VarHandle.fullFence();
  }

  void setUsedIndex(int idx) {
    at(used, 4).set(LE16, 2, (short) idx);
  }

  int usedIndex() {
    VarHandle.fullFence();
    return Short.toUnsignedInt(at(used, 4).get(LE16, 2));
  }

  int usedFlags() {
    return Short.toUnsignedInt(at(used, 2).get(LE16, 0));
  }

  int availEvent() {
    return Short.toUnsignedInt(at(used, Virtq.usedRingSize(size)).get(LE16, 4 + 8L * size));
  }

  /** The used element for used ring position {@code position} (taken modulo the size). */
  int usedId(int position) {
    return at(used, Virtq.usedRingSize(size)).get(LE32, 4 + 8L * (position % size));
  }

  int usedLen(int position) {
    return at(used, Virtq.usedRingSize(size)).get(LE32, 4 + 8L * (position % size) + 4);
  }

  @Override
  public void close() {
    memory.close();
    view.close();
    memfd.close();
  }

  private static long align(long value, long alignment) {
    return (value + alignment - 1) & -alignment;
  }

  private static Fd duplicate(Fd fd) throws NativeException {
    return Libc.dup(fd.value());
  }
}
