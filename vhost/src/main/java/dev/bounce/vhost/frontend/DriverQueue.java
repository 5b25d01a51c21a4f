package dev.bounce.vhost.frontend;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.EventFd;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.Ranges;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.virtq.RingAddresses;
import dev.bounce.vhost.virtq.Virtq;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.VarHandle;
import java.util.Objects;

/**
 * The driver's side of one split virtqueue (virtio 1.2 section 2.7), as a guest's virtio driver
 * runs it (Linux drivers/virtio/virtio_ring.c, the split ring): the fake frontend's guest. The
 * rings live in guest memory this process owns: a {@link MemorySegment} (a memfd mapping) holding
 * guest-physical {@code [guestBase, guestBase + memory.byteSize())}, which the frontend has at
 * frontend-virtual {@code userBase} (what SET_VRING_ADDR carries). The three parts go at guest
 * addresses the caller chooses, so that they can lie inside a restricted pool.
 *
 * <p>One batch of the driver:
 *
 * <pre>{@code
 * while ((head = queue.add(address, length, writable)) != DriverQueue.NO_SPACE) { ... }
 * if (queue.prepareKick()) kick.signal();      // avail.idx published (release), then decided
 * ...
 * queue.harvest((head, len) -> ...);          // used elements, descriptors back on the free list
 * if (!queue.enableUsedNotifications()) call.wait(); // re-check before sleeping
 * }</pre>
 *
 * <p>Descriptors come from a free list kept in this object (Linux's {@code free_head} and {@code
 * desc_extra[].next}), never read back from the table, so a device scribbling on the descriptor
 * table cannot corrupt the driver. A chain goes in as direct descriptors or, when {@link
 * Virtq#VIRTIO_F_INDIRECT_DESC} is negotiated, the caller asks for it and an indirect area was
 * given, as an indirect table (section 2.7.5.3) in a fixed slot per head: one descriptor of the
 * ring per chain.
 *
 * <p>Memory ordering (section 2.7.13 and Linux's barriers): descriptors and ring entries are
 * written before {@code avail.idx} is stored with release semantics; a full fence separates that
 * store from the read of {@code avail_event} / {@code used.flags} that decides the kick; {@code
 * used.idx} is read with acquire semantics before the used elements it publishes; and a full fence
 * separates the {@code used_event} / {@code avail.flags} store from the re-check of {@code
 * used.idx}, so that neither a kick nor a used buffer notification is lost.
 *
 * <p>Not thread-safe: one thread drives a queue at a time (Linux: the caller serialises). Nothing
 * on the hot path allocates: not {@link #add}, {@link #publish}, {@link #prepareKick}, {@link
 * #pollUsed}, {@link #harvest} nor the notification calls.
 *
 * <p>A device that breaks the ring (a used id that is not the head of a chain in flight, a used
 * index that runs ahead of what is in flight, a used length over the chain's writable bytes) makes
 * the queue {@linkplain #isBroken broken}: {@link BrokenRingException} then, and on every later
 * call that touches the ring, as Linux's BAD_RING does.
 */
public final class DriverQueue {
  /** What {@link #add} returns when there are not enough free descriptors (back-pressure). */
  public static final int NO_SPACE = -1;

  /** What {@link #pollUsed} returns when the device has used nothing more. */
  public static final long NO_USED = -1;

  // struct virtq_desc: le64 addr, le32 len, le16 flags, le16 next
  private static final long DESC_ADDR = 0;
  private static final long DESC_LEN = 8;
  private static final long DESC_FLAGS_NEXT = 12; // flags and next as one le32: flags | next << 16
  private static final int DESC_SIZE = Virtq.DESCRIPTOR_SIZE;

  // struct virtq_avail: le16 flags, le16 idx, le16 ring[size], le16 used_event
  private static final long AVAIL_FLAGS = 0;
  private static final long AVAIL_IDX = 2;
  private static final long AVAIL_RING = 4;

  // struct virtq_used: le16 flags, le16 idx, {le32 id, le32 len} ring[size], le16 avail_event
  private static final long USED_FLAGS = 0;
  private static final long USED_IDX = 2;
  private static final long USED_RING = 4;
  private static final int USED_ELEM_SIZE = 8;

  private static final long MAX_LENGTH = 0xffff_ffffL;

  /** Where {@link Builder#ringsAt} puts the used ring: the next cache line (SMP_CACHE_BYTES). */
  private static final long CACHE_LINE = 64;

  /** vring_need_event's window: kick at the latest after this many adds (Linux: num_added). */
  private static final int MAX_ADDED = 0xffff;

  /** Receives used elements from {@link #harvest}: the chain's head and the used length. */
  @FunctionalInterface
  public interface UsedConsumer {
    /**
     * The device is done with the chain at {@code head}; its descriptors are free again (the
     * consumer may {@link #add} at once).
     *
     * @param length the used element's len: bytes the device wrote, unsigned 32-bit
     */
    void used(int head, int length);
  }

  private final int index;
  private final int size;
  private final int mask;
  private final boolean eventIdx;
  private final boolean indirectNegotiated;
  private final long guestBase;
  private final long userBase;
  private final long descriptorTable;
  private final long availableRing;
  private final long usedRing;
  private final MemorySegment desc;
  private final MemorySegment avail;
  private final MemorySegment used;
  private final long usedEventOffset;
  private final long availEventOffset;

  // Indirect tables: one slot of indirectEntries descriptors per head, or none.
  private final MemorySegment indirectTables;
  private final long indirectAddress;
  private final int indirectEntries;

  // The free list and what each chain in flight holds, indexed by head (Linux desc_extra / data).
  private final int[] next;
  private final int[] chainDescriptors; // descriptors of the table a head holds; 0 = free
  private final long[] writableBytes; // bytes the device may write into the chain at a head
  private int freeHead;
  private int numFree;
  private int inFlight;

  // Positions, free-running modulo 2^16 (Linux: avail_idx_shadow, num_added, last_used_idx).
  private int availIdx; // the next available ring entry to fill
  private int publishedAvail; // avail.idx as last stored
  private int numAdded; // entries added since the last kick decision
  private int lastUsed; // the next used ring entry to read
  private int shadowUsed; // used.idx as last read
  private boolean usedNotifications = true; // whether the driver wants used notifications

  private BrokenRingException error;

  private DriverQueue(Builder b) {
    this.index = b.index;
    this.size = b.size;
    this.mask = b.size - 1;
    this.eventIdx = (b.features & (1L << Virtq.VIRTIO_F_EVENT_IDX)) != 0;
    this.indirectNegotiated = (b.features & (1L << Virtq.VIRTIO_F_INDIRECT_DESC)) != 0;
    this.guestBase = b.guestBase;
    this.userBase = b.userBase;
    this.descriptorTable = b.descriptorTable;
    this.availableRing = b.availableRing;
    this.usedRing = b.usedRing;
    this.desc = b.slice(descriptorTable, Virtq.descriptorTableSize(size));
    this.avail = b.slice(availableRing, Virtq.availableRingSize(size));
    this.used = b.slice(usedRing, Virtq.usedRingSize(size));
    this.usedEventOffset = AVAIL_RING + 2L * size;
    this.availEventOffset = USED_RING + (long) USED_ELEM_SIZE * size;
    if (b.indirectEntries > 0) {
      this.indirectAddress = b.indirectAddress;
      this.indirectEntries = b.indirectEntries;
      this.indirectTables = b.slice(indirectAddress, indirectBytes(size, indirectEntries));
    } else {
      this.indirectAddress = 0;
      this.indirectEntries = 0;
      this.indirectTables = null;
    }
    this.next = new int[size];
    this.chainDescriptors = new int[size];
    this.writableBytes = new long[size];
    reset();
  }

  /**
   * Starts a queue over guest memory {@code memory}, which holds guest-physical {@code [guestBase,
   * guestBase + memory.byteSize())} and which the frontend has mapped at frontend-virtual {@code
   * userBase}.
   */
  public static Builder builder(MemorySegment memory, long guestBase, long userBase) {
    return new Builder(memory, guestBase, userBase);
  }

  /**
   * Bytes of the three parts of a queue of {@code size} laid out back to back by {@link
   * Builder#ringsAt}: the descriptor table, the available ring, and the used ring at the next cache
   * line (section 2.7 asks 16, 2 and 4; Linux's modern virtio-pci aligns the used ring to
   * SMP_CACHE_BYTES, so that the device's used ring stores do not share a line with the driver's
   * available ring).
   */
  public static long ringBytes(int size) {
    return usedOffset(size) + Virtq.usedRingSize(size);
  }

  /** Bytes of the indirect area for {@code size} heads of {@code entries} descriptors each. */
  public static long indirectBytes(int size, int entries) {
    return (long) size * entries * DESC_SIZE;
  }

  private static long usedOffset(int size) {
    long availEnd = Virtq.descriptorTableSize(size) + Virtq.availableRingSize(size);
    return (availEnd + CACHE_LINE - 1) & -CACHE_LINE;
  }

  // ---- adding buffers ----

  /**
   * Makes one buffer available as a chain of one descriptor: {@code length} bytes at guest {@code
   * address}, device-writable or device-readable. Visible to the device after {@link #publish} (or
   * {@link #prepareKick}).
   *
   * @return the chain's head (the id the used element will carry), or {@link #NO_SPACE} when no
   *     descriptor is free: harvest used buffers first
   * @throws IllegalArgumentException when length is not an unsigned 32-bit value
   * @throws BrokenRingException when the device broke the ring earlier
   */
  public int add(long address, long length, boolean writable) {
    checkNotBroken();
    checkLength(length);
    if (numFree == 0) return NO_SPACE;
    int head = freeHead;
    freeHead = next[head];
    numFree--;
    writeDescriptor(
        desc, (long) DESC_SIZE * head, address, length, writable ? Virtq.VIRTQ_DESC_F_WRITE : 0, 0);
    chainDescriptors[head] = 1;
    writableBytes[head] = writable ? length : 0;
    return makeAvailable(head);
  }

  /**
   * Makes a request/response pair available: {@code outLength} device-readable bytes at {@code
   * out}, then {@code inLength} device-writable bytes at {@code in}; as an indirect table when
   * {@code indirect} is asked for and possible (see {@link #add(Chain, boolean)}).
   *
   * @return the head, or {@link #NO_SPACE}
   */
  public int add(long out, long outLength, long in, long inLength, boolean indirect) {
    checkNotBroken();
    checkLength(outLength);
    checkLength(inLength);
    if (indirect && canUseIndirect(2)) {
      if (numFree == 0) return NO_SPACE;
      int head = takeDescriptor();
      MemorySegment table = indirectTables;
      long at = indirectSlot(head);
      writeDescriptor(table, at, out, outLength, Virtq.VIRTQ_DESC_F_NEXT, 1);
      writeDescriptor(table, at + DESC_SIZE, in, inLength, Virtq.VIRTQ_DESC_F_WRITE, 0);
      writeIndirectHead(head, 2);
      chainDescriptors[head] = 1;
      writableBytes[head] = inLength;
      return makeAvailable(head);
    }
    if (numFree < 2) {
      if (size < 2) throw new IllegalArgumentException(tooLong(2));
      return NO_SPACE;
    }
    int head = takeDescriptor();
    int second = takeDescriptor();
    writeDescriptor(desc, (long) DESC_SIZE * head, out, outLength, Virtq.VIRTQ_DESC_F_NEXT, second);
    writeDescriptor(desc, (long) DESC_SIZE * second, in, inLength, Virtq.VIRTQ_DESC_F_WRITE, 0);
    chainDescriptors[head] = 2;
    writableBytes[head] = inLength;
    return makeAvailable(head);
  }

  /**
   * Makes the buffers of {@code chain} available as one descriptor chain: as an indirect table (one
   * descriptor of the ring) when {@code indirect} is asked for, {@link
   * Virtq#VIRTIO_F_INDIRECT_DESC} was negotiated, an indirect area was given and the chain fits its
   * slot; otherwise as direct descriptors linked by NEXT. {@code chain} is copied: reuse it.
   *
   * @return the head, or {@link #NO_SPACE} when too few descriptors are free now
   * @throws IllegalArgumentException when the chain is empty, or longer than the queue size (as
   *     direct descriptors it could never fit, section 2.7.5.2)
   * @throws BrokenRingException when the device broke the ring earlier
   */
  public int add(Chain chain, boolean indirect) {
    checkNotBroken();
    int count = chain.count;
    if (count == 0) throw new IllegalArgumentException("a descriptor chain needs a buffer");
    if (indirect && canUseIndirect(count)) {
      if (numFree == 0) return NO_SPACE;
      int head = takeDescriptor();
      MemorySegment table = indirectTables;
      long at = indirectSlot(head);
      long writable = 0;
      for (int k = 0; k < count; k++) {
        boolean last = k == count - 1;
        int flags = chain.flags(k) | (last ? 0 : Virtq.VIRTQ_DESC_F_NEXT);
        writeDescriptor(
            table,
            at + (long) DESC_SIZE * k,
            chain.addresses[k],
            chain.lengths[k],
            flags,
            last ? 0 : k + 1);
        if (chain.writable[k]) writable += chain.lengths[k];
      }
      writeIndirectHead(head, count);
      chainDescriptors[head] = 1;
      writableBytes[head] = writable;
      return makeAvailable(head);
    }
    if (count > size) throw new IllegalArgumentException(tooLong(count));
    if (numFree < count) return NO_SPACE;
    int head = freeHead;
    int i = head;
    long writable = 0;
    for (int k = 0; k < count; k++) {
      boolean last = k == count - 1;
      int following = next[i];
      int flags = chain.flags(k) | (last ? 0 : Virtq.VIRTQ_DESC_F_NEXT);
      writeDescriptor(
          desc,
          (long) DESC_SIZE * i,
          chain.addresses[k],
          chain.lengths[k],
          flags,
          last ? 0 : following);
      if (chain.writable[k]) writable += chain.lengths[k];
      if (last) {
        freeHead = following;
      } else {
        i = following;
      }
    }
    numFree -= count;
    chainDescriptors[head] = count;
    writableBytes[head] = writable;
    return makeAvailable(head);
  }

  private boolean canUseIndirect(int count) {
    // Section 2.7.5.3.1: no chain, and so no table, longer than the Queue Size.
    return indirectNegotiated && indirectTables != null && count <= Math.min(indirectEntries, size);
  }

  private int takeDescriptor() {
    int head = freeHead;
    freeHead = next[head];
    numFree--;
    return head;
  }

  private long indirectSlot(int head) {
    return (long) head * indirectEntries * DESC_SIZE;
  }

  private void writeIndirectHead(int head, int count) {
    writeDescriptor(
        desc,
        (long) DESC_SIZE * head,
        indirectAddress + indirectSlot(head),
        (long) count * DESC_SIZE,
        Virtq.VIRTQ_DESC_F_INDIRECT,
        0);
  }

  private static void writeDescriptor(
      MemorySegment table, long at, long address, long length, int flags, int next) {
    table.set(LE64, at + DESC_ADDR, address);
    table.set(LE32, at + DESC_LEN, (int) length);
    table.set(LE32, at + DESC_FLAGS_NEXT, flags | (next << 16));
  }

  /** Section 2.7.13.2: the head goes into the next available ring entry (not yet published). */
  private int makeAvailable(int head) {
    avail.set(LE16, AVAIL_RING + 2L * (availIdx & mask), (short) head);
    availIdx = (availIdx + 1) & 0xffff;
    if (numAdded < MAX_ADDED) numAdded++;
    inFlight++;
    return head;
  }

  /**
   * Section 2.7.13.3: stores {@code avail.idx} (release) so the device sees every chain added since
   * the last publish, descriptors and ring entries included. Once per batch.
   */
  public void publish() {
    int now = availIdx;
    if (now == publishedAvail) return;
    // Section 2.7.13.3.1: the driver performs a suitable memory barrier before the idx update.
    VarHandle.releaseFence();
    avail.set(LE16, AVAIL_IDX, (short) now);
    publishedAvail = now;
  }

  /**
   * Publishes what was added and decides whether the device wants an available buffer notification
   * for it (Linux virtqueue_kick_prepare): with {@link Virtq#VIRTIO_F_EVENT_IDX} when {@code
   * avail.idx} passed {@code avail_event} (vring_need_event), otherwise unless the device set
   * VIRTQ_USED_F_NO_NOTIFY. False when nothing was added since the last decision. Signal the ring's
   * kick eventfd when true.
   */
  public boolean prepareKick() {
    checkNotBroken();
    publish();
    int added = numAdded;
    numAdded = 0;
    if (added == 0) return false;
    // Section 2.7.13.4.1 (Linux virtio_mb before reading the event): the idx store must be visible
    // before avail_event / flags are read, or the device sleeps on an entry it never saw kicked.
    VarHandle.fullFence();
    if (added >= MAX_ADDED) return true; // vring_need_event cannot tell 2^16 adds from none
    if (eventIdx) {
      int newIdx = availIdx;
      int oldIdx = (newIdx - added) & 0xffff;
      int availEvent = Short.toUnsignedInt(used.get(LE16, availEventOffset));
      return Virtq.needEvent(availEvent, newIdx, oldIdx);
    }
    return (used.get(LE16, USED_FLAGS) & Virtq.VIRTQ_USED_F_NO_NOTIFY) == 0;
  }

  /** {@link #prepareKick} and, when it says so, a signal on {@code kick}; whether it kicked. */
  public boolean kick(EventFd kick) throws NativeException {
    if (!prepareKick()) return false;
    kick.signal();
    return true;
  }

  // ---- used buffers ----

  /**
   * The next used element, its chain's descriptors back on the free list: {@link #usedHead} and
   * {@link #usedLength} of the value, or {@link #NO_USED}. Allocation-free.
   *
   * @throws BrokenRingException when the device broke the ring
   */
  public long pollUsed() {
    checkNotBroken();
    int last = lastUsed;
    if (last == shadowUsed && !refreshUsedIndex()) return NO_USED;
    long at = USED_RING + (long) USED_ELEM_SIZE * (last & mask);
    int id = used.get(LE32, at);
    int len = used.get(LE32, at + 4);
    lastUsed = (last + 1) & 0xffff;
    detach(id, len, last);
    return ((long) id << 32) | Integer.toUnsignedLong(len);
  }

  /** The head of a {@link #pollUsed} value. */
  public static int usedHead(long element) {
    return (int) (element >>> 32);
  }

  /** The used length of a {@link #pollUsed} value (unsigned 32-bit). */
  public static int usedLength(long element) {
    return (int) element;
  }

  /** {@link #harvest(UsedConsumer, int)} without a limit. */
  public int harvest(UsedConsumer consumer) {
    return harvest(consumer, Integer.MAX_VALUE);
  }

  /**
   * Hands up to {@code max} used elements to {@code consumer}, in used ring order, each chain's
   * descriptors freed before the call. Then, while used buffer notifications are enabled and {@link
   * Virtq#VIRTIO_F_EVENT_IDX} was negotiated, moves {@code used_event} to the new position (Linux
   * virtqueue_get_buf) so that the next used buffer is notified.
   *
   * @return how many elements were handed over
   * @throws BrokenRingException when the device broke the ring
   */
  public int harvest(UsedConsumer consumer, int max) {
    checkNotBroken();
    int count = 0;
    while (count < max) {
      int last = lastUsed;
      if (last == shadowUsed && !refreshUsedIndex()) break;
      long at = USED_RING + (long) USED_ELEM_SIZE * (last & mask);
      int id = used.get(LE32, at);
      int len = used.get(LE32, at + 4);
      lastUsed = (last + 1) & 0xffff;
      detach(id, len, last);
      count++;
      consumer.used(id, len);
    }
    if (count > 0 && eventIdx && usedNotifications) {
      // Linux virtqueue_get_buf: virtio_store_mb(used_event = last_used_idx), so that the store is
      // visible before the next read of used.idx.
      avail.set(LE16, usedEventOffset, (short) lastUsed);
      VarHandle.fullFence();
    }
    return count;
  }

  /**
   * Whether the device has used more than was harvested (Linux virtqueue_poll / more_used). Reads
   * {@code used.idx} (acquire) when everything seen so far was harvested.
   */
  public boolean hasUsed() {
    checkNotBroken();
    return lastUsed != shadowUsed || refreshUsedIndex();
  }

  /** Reads used.idx (acquire) into the shadow; whether there is anything new. */
  private boolean refreshUsedIndex() {
    int usedIdx = Short.toUnsignedInt(used.get(LE16, USED_IDX));
    // Section 2.7.13 (Linux virtio_rmb after reading used->idx): the device's release before its
    // idx store pairs with this acquire, so the elements read after it are the ones idx published.
    VarHandle.acquireFence();
    int pending = (usedIdx - lastUsed) & 0xffff;
    if (pending > inFlight) {
      throw broken(
          "used index "
              + usedIdx
              + " is "
              + pending
              + " entries past the last harvested "
              + lastUsed
              + " with only "
              + inFlight
              + " chains in flight");
    }
    shadowUsed = usedIdx;
    return pending != 0;
  }

  /** Linux detach_buf_split: the chain at {@code id} goes back on the free list. */
  private void detach(int id, int len, int position) {
    if (id < 0 || id >= size) {
      throw broken(
          "used ring entry "
              + position
              + " names id "
              + Integer.toUnsignedString(id)
              + " in a table of "
              + size);
    }
    int descriptors = chainDescriptors[id];
    if (descriptors == 0) {
      throw broken(
          "used ring entry "
              + position
              + " names id "
              + id
              + ", which is not the head of a chain in flight");
    }
    // Section 2.7.8.2: len counts bytes written into the device-writable part; more than it holds
    // cannot have been written.
    if (Integer.toUnsignedLong(len) > writableBytes[id]) {
      throw broken(
          "used ring entry "
              + position
              + " says "
              + Integer.toUnsignedString(len)
              + " bytes were written into chain "
              + id
              + ", which has "
              + writableBytes[id]
              + " writable bytes");
    }
    int tail = id;
    for (int k = 1; k < descriptors; k++) tail = next[tail];
    next[tail] = freeHead;
    freeHead = id;
    numFree += descriptors;
    chainDescriptors[id] = 0;
    inFlight--;
  }

  // ---- used buffer notifications (section 2.7.7) ----

  /**
   * Asks the device not to notify used buffers (Linux virtqueue_disable_cb): without {@link
   * Virtq#VIRTIO_F_EVENT_IDX} sets VIRTQ_AVAIL_F_NO_INTERRUPT; with it (where the device ignores
   * the flags) moves {@code used_event} out of the way as Linux does, to 0. Notifications may still
   * come (section 2.7.7.1: they are only a hint).
   */
  public void disableUsedNotifications() {
    if (!usedNotifications) return;
    usedNotifications = false;
    if (eventIdx) {
      avail.set(LE16, usedEventOffset, (short) 0);
    } else {
      avail.set(LE16, AVAIL_FLAGS, (short) Virtq.VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
  }

  /**
   * Asks for a used buffer notification for the next used buffer, then re-checks {@code used.idx}
   * (Linux virtqueue_enable_cb: enable_cb_prepare then poll); call it before waiting on the call
   * eventfd. True means used buffers are already there: harvest instead of waiting, or a
   * notification is lost. With {@link Virtq#VIRTIO_F_EVENT_IDX} writes {@code used_event} = the
   * next used index to read, otherwise clears VIRTQ_AVAIL_F_NO_INTERRUPT.
   */
  public boolean enableUsedNotifications() {
    checkNotBroken();
    usedNotifications = true;
    if (eventIdx) {
      avail.set(LE16, usedEventOffset, (short) lastUsed);
    } else {
      avail.set(LE16, AVAIL_FLAGS, (short) 0);
    }
    // Linux virtqueue_poll's virtio_mb: the event store and the used.idx load must not be
    // reordered, or the device decides on the old event while we decide on the old index.
    VarHandle.fullFence();
    return hasUsed();
  }

  /**
   * Like {@link #enableUsedNotifications} but, with {@link Virtq#VIRTIO_F_EVENT_IDX}, asks to be
   * notified only once about three quarters of the chains in flight are used (Linux
   * virtqueue_enable_cb_delayed): fewer notifications for a driver that has a lot outstanding. True
   * when that many are already used: harvest instead of waiting.
   */
  public boolean enableUsedNotificationsDelayed() {
    if (!eventIdx) return enableUsedNotifications();
    checkNotBroken();
    usedNotifications = true;
    int pending = (availIdx - lastUsed) & 0xffff;
    int bufs = pending * 3 / 4;
    avail.set(LE16, usedEventOffset, (short) (lastUsed + bufs));
    VarHandle.fullFence();
    int usedIdx = Short.toUnsignedInt(used.get(LE16, USED_IDX));
    VarHandle.acquireFence();
    return ((usedIdx - lastUsed) & 0xffff) > bufs;
  }

  // ---- the queue's life ----

  /**
   * Back to a new queue (the driver re-initialising it after a device reset): the three parts
   * zeroed, every descriptor free, every position 0, used buffer notifications enabled, not broken.
   * Chains in flight are forgotten.
   */
  public void reset() {
    desc.fill((byte) 0);
    avail.fill((byte) 0);
    used.fill((byte) 0);
    for (int i = 0; i < size; i++) {
      next[i] = i + 1; // the last one's (size) is never followed: numFree is 0 then
      chainDescriptors[i] = 0;
      writableBytes[i] = 0;
    }
    freeHead = 0;
    numFree = size;
    inFlight = 0;
    availIdx = 0;
    publishedAvail = 0;
    numAdded = 0;
    lastUsed = 0;
    shadowUsed = 0;
    usedNotifications = true;
    error = null;
    VarHandle.fullFence();
  }

  // ---- state ----

  /** The vring index (its number in the device). */
  public int index() {
    return index;
  }

  /** Queue Size: descriptors in the table, entries in each ring. */
  public int size() {
    return size;
  }

  /** Descriptors free for {@link #add} now. */
  public int freeDescriptors() {
    return numFree;
  }

  /** Chains added and not yet harvested. */
  public int inFlight() {
    return inFlight;
  }

  /** The driver's next available index (avail.idx once published), modulo 2^16. */
  public int availIndex() {
    return availIdx;
  }

  /** The next used index to harvest (last_used_idx), modulo 2^16. */
  public int lastUsedIndex() {
    return lastUsed;
  }

  public boolean eventIdx() {
    return eventIdx;
  }

  /** Whether {@code add(..., true)} can make indirect tables (negotiated, and an area given). */
  public boolean indirectDescriptors() {
    return indirectNegotiated && indirectTables != null;
  }

  /** Whether the device broke the ring (until {@link #reset}). */
  public boolean isBroken() {
    return error != null;
  }

  /** How the device broke the ring, or null. */
  public BrokenRingException error() {
    return error;
  }

  /** The guest-physical addresses of the three parts. */
  public RingAddresses guestAddresses() {
    return new RingAddresses(descriptorTable, availableRing, usedRing, AddressKind.GUEST_PHYSICAL);
  }

  /** The frontend-virtual addresses of the three parts (what QEMU puts in SET_VRING_ADDR). */
  public RingAddresses userAddresses() {
    return new RingAddresses(
        userAddress(descriptorTable),
        userAddress(availableRing),
        userAddress(usedRing),
        AddressKind.FRONTEND_VIRTUAL);
  }

  /** SET_VRING_ADDR for this queue as QEMU sends it: frontend-virtual addresses, no logging. */
  public VringAddress vringAddress() {
    return new VringAddress(
        index,
        0,
        userAddress(descriptorTable),
        userAddress(usedRing),
        userAddress(availableRing),
        0);
  }

  /** The frontend-virtual address of guest {@code address} in this queue's memory. */
  public long userAddress(long guestAddress) {
    return userBase + (guestAddress - guestBase);
  }

  // ---- internals ----

  private void checkNotBroken() {
    BrokenRingException e = error;
    if (e != null) throw e;
  }

  private BrokenRingException broken(String why) {
    BrokenRingException e =
        new BrokenRingException("virtqueue " + index + ": the device broke the ring: " + why);
    error = e;
    return e;
  }

  private static void checkLength(long length) {
    if (length < 0 || length > MAX_LENGTH) {
      throw new IllegalArgumentException("a descriptor's length is unsigned 32-bit, not " + length);
    }
  }

  private String tooLong(int count) {
    return "a chain of "
        + count
        + " descriptors cannot fit virtqueue "
        + index
        + " of size "
        + size
        + " (section 2.7.5.2)";
  }

  @Override
  public String toString() {
    return "driver virtqueue "
        + index
        + " (size "
        + size
        + ", avail "
        + availIdx
        + ", last used "
        + lastUsed
        + ", "
        + inFlight
        + " in flight"
        + (error != null ? ", broken" : "")
        + ")";
  }

  /**
   * The buffers of one chain to {@link #add(Chain, boolean)}: device-readable ones first, then
   * device-writable ones (section 2.7.4.2). Reusable: {@link #clear} and fill again; nothing
   * allocates after construction.
   */
  public static final class Chain {
    private final long[] addresses;
    private final long[] lengths;
    private final boolean[] writable;
    private int count;

    /** A chain of at most {@code capacity} buffers. */
    public Chain(int capacity) {
      if (capacity < 1 || capacity > Virtq.MAX_QUEUE_SIZE) {
        throw new IllegalArgumentException(
            "a chain holds 1 to " + Virtq.MAX_QUEUE_SIZE + " buffers, not " + capacity);
      }
      this.addresses = new long[capacity];
      this.lengths = new long[capacity];
      this.writable = new boolean[capacity];
    }

    /** Empties the chain for reuse. */
    public Chain clear() {
      count = 0;
      return this;
    }

    /** Adds {@code length} device-readable bytes at guest {@code address}. */
    public Chain readable(long address, long length) {
      if (count > 0 && writable[count - 1]) {
        throw new IllegalStateException(
            "a device-readable buffer cannot follow a device-writable one (section 2.7.4.2)");
      }
      return put(address, length, false);
    }

    /** Adds {@code length} device-writable bytes at guest {@code address}. */
    public Chain writable(long address, long length) {
      return put(address, length, true);
    }

    private Chain put(long address, long length, boolean deviceWritable) {
      checkLength(length);
      if (count == addresses.length) {
        throw new IllegalStateException("the chain is full (" + count + " buffers)");
      }
      addresses[count] = address;
      lengths[count] = length;
      writable[count] = deviceWritable;
      count++;
      return this;
    }

    /** Buffers in the chain. */
    public int count() {
      return count;
    }

    private int flags(int k) {
      return writable[k] ? Virtq.VIRTQ_DESC_F_WRITE : 0;
    }
  }

  /**
   * Where the queue goes and what was negotiated; {@link #build} checks that each part is aligned
   * (section 2.7, table), inside the memory and apart from the others, and zeroes the rings.
   */
  public static final class Builder {
    private final MemorySegment memory;
    private final long guestBase;
    private final long userBase;
    private int index;
    private int size = 256;
    private long features;
    private long descriptorTable = -1;
    private long availableRing = -1;
    private long usedRing = -1;
    private long indirectAddress;
    private int indirectEntries;

    private Builder(MemorySegment memory, long guestBase, long userBase) {
      this.memory = Objects.requireNonNull(memory, "memory");
      this.guestBase = guestBase;
      this.userBase = userBase;
    }

    /** The vring index (default 0). */
    public Builder index(int index) {
      if (index < 0 || index > 0xff) {
        throw new IllegalArgumentException("vring index " + index + " is not in 0..255");
      }
      this.index = index;
      return this;
    }

    /** Queue Size: a power of two up to 32768 (default 256). */
    public Builder size(int size) {
      if (size <= 0 || (size & (size - 1)) != 0 || size > Virtq.MAX_QUEUE_SIZE) {
        throw new IllegalArgumentException(
            "queue size " + size + " is not a power of two in 1..32768");
      }
      this.size = size;
      return this;
    }

    /**
     * The negotiated feature bits; the queue looks at {@link Virtq#VIRTIO_F_EVENT_IDX} and {@link
     * Virtq#VIRTIO_F_INDIRECT_DESC}.
     */
    public Builder features(long features) {
      this.features = features;
      return this;
    }

    /** The guest-physical addresses of the descriptor table, available ring and used ring. */
    public Builder rings(long descriptorTable, long availableRing, long usedRing) {
      this.descriptorTable = descriptorTable;
      this.availableRing = availableRing;
      this.usedRing = usedRing;
      return this;
    }

    /**
     * The three parts back to back from guest {@code start} ({@link #ringBytes} bytes; the size
     * must be set first).
     */
    public Builder ringsAt(long start) {
      long avail = start + Virtq.descriptorTableSize(size);
      return rings(start, avail, start + usedOffset(size));
    }

    /**
     * Room for indirect tables of up to {@code entriesPerTable} descriptors, one per head, from
     * guest {@code address} ({@link #indirectBytes} bytes; the size must be set first).
     */
    public Builder indirectTables(long address, int entriesPerTable) {
      if (entriesPerTable < 1 || entriesPerTable > 0xffff) {
        throw new IllegalArgumentException(
            "an indirect table holds 1 to 65535 descriptors, not " + entriesPerTable);
      }
      this.indirectAddress = address;
      this.indirectEntries = entriesPerTable;
      return this;
    }

    /**
     * The queue, its rings zeroed.
     *
     * @throws IllegalArgumentException when a part is misaligned, outside the memory, or overlaps
     *     another
     * @throws IllegalStateException when no ring addresses were given
     */
    public DriverQueue build() {
      if (descriptorTable == -1 || availableRing == -1 || usedRing == -1) {
        throw new IllegalStateException("no ring addresses: call rings() or ringsAt() first");
      }
      check(
          "descriptor table",
          descriptorTable,
          Virtq.descriptorTableSize(size),
          Virtq.DESCRIPTOR_TABLE_ALIGNMENT);
      check(
          "available ring",
          availableRing,
          Virtq.availableRingSize(size),
          Virtq.AVAILABLE_RING_ALIGNMENT);
      check("used ring", usedRing, Virtq.usedRingSize(size), Virtq.USED_RING_ALIGNMENT);
      long[][] parts = {
        {descriptorTable, Virtq.descriptorTableSize(size)},
        {availableRing, Virtq.availableRingSize(size)},
        {usedRing, Virtq.usedRingSize(size)},
        {indirectAddress, indirectEntries > 0 ? indirectBytes(size, indirectEntries) : 0}
      };
      if (indirectEntries > 0) {
        check("indirect area", indirectAddress, parts[3][1], Virtq.DESCRIPTOR_TABLE_ALIGNMENT);
      }
      String[] names = {"descriptor table", "available ring", "used ring", "indirect area"};
      for (int a = 0; a < parts.length; a++) {
        for (int b = a + 1; b < parts.length; b++) {
          if (parts[a][1] > 0
              && parts[b][1] > 0
              && Ranges.overlap(parts[a][0], parts[a][1], parts[b][0], parts[b][1])) {
            throw new IllegalArgumentException(
                "the "
                    + names[a]
                    + " "
                    + Ranges.describe(parts[a][0], parts[a][1])
                    + " overlaps the "
                    + names[b]
                    + " "
                    + Ranges.describe(parts[b][0], parts[b][1]));
          }
        }
      }
      return new DriverQueue(this);
    }

    private void check(String part, long address, long length, int alignment) {
      if ((address & (alignment - 1)) != 0) {
        throw new IllegalArgumentException(
            "the "
                + part
                + " at "
                + Ranges.hex(address)
                + " is not "
                + alignment
                + "-byte aligned (section 2.7)");
      }
      if (!Ranges.contains(guestBase, memory.byteSize(), address, length)) {
        throw new IllegalArgumentException(
            "the "
                + part
                + " "
                + Ranges.describe(address, length)
                + " is not inside the memory "
                + Ranges.describe(guestBase, memory.byteSize()));
      }
    }

    private MemorySegment slice(long address, long length) {
      return memory.asSlice(address - guestBase, length);
    }
  }

  /**
   * The device broke the ring's rules (Linux: BAD_RING): the queue stops and every later call that
   * touches the ring throws this again, until {@link #reset}.
   */
  public static final class BrokenRingException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    BrokenRingException(String message) {
      super(message);
    }
  }
}
