package dev.bounce.vhost.virtq;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.vhost.virtq.Virtq.AVAIL_FLAGS;
import static dev.bounce.vhost.virtq.Virtq.AVAIL_IDX;
import static dev.bounce.vhost.virtq.Virtq.AVAIL_RING;
import static dev.bounce.vhost.virtq.Virtq.USED_ELEM_SIZE;
import static dev.bounce.vhost.virtq.Virtq.USED_FLAGS;
import static dev.bounce.vhost.virtq.Virtq.USED_IDX;
import static dev.bounce.vhost.virtq.Virtq.USED_RING;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.GuestAccessException;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.GuestRegion;
import dev.bounce.pool.Ranges;
import dev.bounce.pool.UnmappedAddressException;
import dev.bounce.vhost.virtq.VirtqueueException.Reason;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.VarHandle;

/**
 * One split virtqueue as the device sees it (virtio 1.2 section 2.7): configured by the vhost-user
 * ring messages while stopped, then {@linkplain #attach attached} to a guest memory snapshot and
 * driven by ONE thread, the device's data loop. Not thread-safe; nothing is shared.
 *
 * <p>A batch on the data loop:
 *
 * <pre>{@code
 * queue.disableNotifications();
 * do {
 *   while (queue.pop(chain)) {
 *     ... chain.next() / chain.read(...) / chain.write(...) ...
 *     queue.addUsed(chain);
 *   }
 *   queue.publish();
 *   if (queue.needsNotification()) call.signal();
 * } while (queue.enableNotifications());
 * }</pre>
 *
 * A {@link VirtqueueException} from any of these is the guest's fault: the queue is then {@link
 * #isBroken broken}, pops nothing until {@link #reset}, and the caller signals the ring's error
 * eventfd and logs the exception's message (ARCHITECTURE.md, "Errors"). Nothing on the hot path
 * allocates: not {@link #pop}, {@link DescriptorChain#next}, {@link #addUsed}, {@link #publish},
 * {@link #needsNotification} nor {@link #enableNotifications}.
 *
 * <p>Memory ordering (section 2.7.13 and REAL-PEERS.md): the available index is read with acquire
 * semantics before the ring entries and descriptors it publishes; the used index is stored with
 * release semantics after the used elements and buffer writes; a full fence separates the used
 * index store from the used_event / flags load, and the avail_event / flags store from the re-check
 * of the available index.
 */
public final class SplitQueue {
  private final int index;
  private final int maxSize;

  // Configuration, set by the control side while the queue is stopped.
  private int size;
  private RingAddresses addresses;
  private int base;
  private boolean indirectDescriptors;
  private boolean eventIdx;
  private boolean notifyOnEmpty;
  private boolean positionsPending = true;

  // What attach resolved; null while detached.
  GuestAddressSpace memory;
  MemorySegment descriptorTable;
  private MemorySegment availableRing;
  private MemorySegment usedRing;
  private int mask;
  private long usedEventOffset;
  private long availEventOffset;

  // The region the last descriptor fell in: the next one usually does too (one memfd region, or
  // the pool's window). Its mapped part lies wholly inside memory and, with a restricted pool,
  // inside the pool (GuestRegion.mapped is clipped to the window), so containment in it is the
  // same answer regionAt would give.
  private GuestRegion cachedRegion;
  private long cachedStart;
  private long cachedSize;

  // Positions, free-running modulo 2^16.
  private int nextAvail; // last_avail_idx: the next available ring entry to pop
  private int shadowAvail; // avail.idx as last read
  private int nextUsed; // where the next used element goes
  private int publishedUsed; // used.idx as last stored
  private int signalledUsed; // used.idx at the last notification decision
  private boolean signalledValid;
  private boolean resumedFromUsedRing;

  // Pops left before pop() says there is nothing (limitPops); practically unlimited by default.
  private long popBudget = Long.MAX_VALUE;

  private boolean broken;
  private VirtqueueException error;

  // Bytes of buffers the device holds (RESTRICTED-DMA.md metrics): per head, the bytes of the
  // popped chain's descriptors walked so far (u32, as a chain is at most 2^32 - 1 bytes), until its
  // used element is added. Sized once: nothing is allocated per chain.
  private final int[] heldBytes;
  private long bytesInFlight;
  private long peakBytesInFlight;

  /**
   * A queue numbered {@code index} in its device (the vring index of vhost-user, named in every
   * error) that the device offers with at most {@code maxSize} entries.
   *
   * @throws IllegalArgumentException when maxSize is not a power of two in 1..32768
   */
  public SplitQueue(int index, int maxSize) {
    // Section 2.7: Queue Size is always a power of 2; the maximum is 32768.
    if (!Virtq.isQueueSize(maxSize)) {
      throw new IllegalArgumentException(
          "virtqueue "
              + index
              + ": maximum size "
              + maxSize
              + " is not a power of two in 1..32768");
    }
    this.index = index;
    this.maxSize = maxSize;
    this.size = maxSize;
    this.heldBytes = new int[maxSize];
  }

  /** A chain to {@link #pop} into; make one (or a few) per queue and reuse it for every pop. */
  public DescriptorChain newChain() {
    return new DescriptorChain(this);
  }

  // ---- configuration (vhost-user SET_VRING_*; the queue must be stopped) ----

  /**
   * SET_VRING_NUM: the queue size the driver chose. Detaches the queue.
   *
   * @throws IllegalArgumentException when size is not a power of two in 1..{@link #maxSize}
   */
  public void setSize(int size) {
    // Section 2.7: Queue Size is always a power of 2, and the device offers the maximum.
    if (!Virtq.isQueueSize(size) || size > maxSize) {
      throw new IllegalArgumentException(
          "virtqueue "
              + index
              + ": size "
              + Integer.toUnsignedString(size)
              + " is not a power of two in 1.."
              + maxSize);
    }
    this.size = size;
    detach();
  }

  /** SET_VRING_ADDR: where the three parts are. Checked by {@link #attach}. Detaches the queue. */
  public void setAddresses(RingAddresses addresses) {
    this.addresses = java.util.Objects.requireNonNull(addresses, "addresses");
    detach();
  }

  /**
   * SET_VRING_BASE: the next available index to consume (the low 16 bits of a split ring's base).
   * The next {@link #attach} compares it with the used index in memory. Detaches the queue.
   *
   * @throws IllegalArgumentException when base does not fit 16 bits
   */
  public void setBase(int base) {
    if ((base & ~0xffff) != 0) {
      throw new IllegalArgumentException(
          "virtqueue "
              + index
              + ": base "
              + Integer.toUnsignedString(base)
              + " does not fit a 16-bit ring index");
    }
    this.base = base;
    this.nextAvail = base;
    this.nextUsed = base;
    this.positionsPending = true;
    releaseAllHeld();
    detach();
  }

  /**
   * The negotiated feature bits (SET_FEATURES): this queue looks at {@link
   * Virtq#VIRTIO_F_INDIRECT_DESC}, {@link Virtq#VIRTIO_F_EVENT_IDX} and {@link
   * Virtq#VIRTIO_F_NOTIFY_ON_EMPTY}.
   */
  public void setFeatures(long features) {
    this.indirectDescriptors = (features & (1L << Virtq.VIRTIO_F_INDIRECT_DESC)) != 0;
    this.eventIdx = (features & (1L << Virtq.VIRTIO_F_EVENT_IDX)) != 0;
    this.notifyOnEmpty = (features & (1L << Virtq.VIRTIO_F_NOTIFY_ON_EMPTY)) != 0;
  }

  /**
   * Resolves the three ring parts in {@code memory} from the stored addresses; call it before the
   * first pop, and again with each new memory snapshot while stopped between batches (positions
   * carry over; chains popped before must not be used after).
   *
   * <p>The first attach after {@link #setBase} (or {@link #reset}) picks the start position: when
   * the used index in memory differs from the base given, both the available and the used position
   * are taken from the used index in memory, as DPDK's backend does for a reconnecting DPDK
   * frontend that sends SET_VRING_BASE 0 over a ring it has used (REAL-PEERS.md).
   *
   * @return whether this attach took the positions from the used index in memory instead of the
   *     base (log it: {@link #requestedBase()} and {@link #lastAvailIndex()} give the numbers)
   * @throws VirtqueueException when a part is misaligned or not wholly inside memory (or the
   *     restricted pool); the queue is then broken
   * @throws IllegalStateException when no addresses were set
   */
  public boolean attach(GuestAddressSpace memory) throws VirtqueueException {
    java.util.Objects.requireNonNull(memory, "memory");
    if (addresses == null) {
      throw new IllegalStateException("virtqueue " + index + ": no ring addresses set");
    }
    detach();
    // Section 2.7 table: 16 * size, 6 + 2 * size and 6 + 8 * size bytes, event fields included.
    long descSize = Virtq.descriptorTableSize(size);
    long availSize = Virtq.availableRingSize(size);
    long usedSize = Virtq.usedRingSize(size);
    // Section 2.7 table and 2.7.1 Driver Requirements: Virtqueues: each part aligned.
    checkAligned(
        "descriptor table",
        addresses.descriptorTable(),
        descSize,
        Virtq.DESCRIPTOR_TABLE_ALIGNMENT);
    checkAligned(
        "available ring", addresses.availableRing(), availSize, Virtq.AVAILABLE_RING_ALIGNMENT);
    checkAligned("used ring", addresses.usedRing(), usedSize, Virtq.USED_RING_ALIGNMENT);
    MemorySegment desc = resolve(memory, "descriptor table", addresses.descriptorTable(), descSize);
    MemorySegment avail = resolve(memory, "available ring", addresses.availableRing(), availSize);
    MemorySegment used = resolve(memory, "used ring", addresses.usedRing(), usedSize);

    boolean resumed = false;
    if (positionsPending) {
      int inMemory = Short.toUnsignedInt(used.get(LE16, USED_IDX));
      resumed = inMemory != base;
      int start = resumed ? inMemory : base;
      nextAvail = start;
      nextUsed = start;
      publishedUsed = start;
      signalledUsed = start;
      signalledValid = false;
      resumedFromUsedRing = resumed;
      positionsPending = false;
    }
    this.memory = memory;
    this.descriptorTable = desc;
    this.availableRing = avail;
    this.usedRing = used;
    this.mask = size - 1;
    this.usedEventOffset = Virtq.usedEventOffset(size);
    this.availEventOffset = Virtq.availEventOffset(size);
    this.shadowAvail = nextAvail;
    return resumed;
  }

  /** Drops the memory snapshot (before it is retired); the queue pops nothing until reattached. */
  public void detach() {
    memory = null;
    cachedRegion = null;
    descriptorTable = null;
    availableRing = null;
    usedRing = null;
  }

  /**
   * Back to the state of a new queue: maximum size, no addresses, base 0, no features, detached,
   * not broken (RESET_DEVICE, or a ring the frontend sets up afresh after an error).
   */
  public void reset() {
    detach();
    size = maxSize;
    addresses = null;
    base = 0;
    nextAvail = 0;
    nextUsed = 0;
    publishedUsed = 0;
    shadowAvail = 0;
    signalledUsed = 0;
    signalledValid = false;
    resumedFromUsedRing = false;
    positionsPending = true;
    indirectDescriptors = false;
    eventIdx = false;
    notifyOnEmpty = false;
    broken = false;
    error = null;
    popBudget = Long.MAX_VALUE;
    releaseAllHeld();
  }

  /** Chains popped before a new base or a reset are never returned: they hold nothing more. */
  private void releaseAllHeld() {
    java.util.Arrays.fill(heldBytes, 0);
    bytesInFlight = 0;
  }

  /** The chain at {@code head} has {@code walked} bytes so far (called as it is walked). */
  void hold(int head, long walked) {
    long before = Integer.toUnsignedLong(heldBytes[head]);
    if (walked <= before) return; // walked again after rewind
    heldBytes[head] = (int) walked;
    bytesInFlight += walked - before;
    if (bytesInFlight > peakBytesInFlight) peakBytesInFlight = bytesInFlight;
  }

  /**
   * Bytes in the buffers of chains popped and not yet added to the used ring (as far as they were
   * walked): the pool memory the device holds now.
   */
  public long bytesInFlight() {
    return bytesInFlight;
  }

  /** The most {@link #bytesInFlight()} ever was, since this queue was created. */
  public long peakBytesInFlight() {
    return peakBytesInFlight;
  }

  // ---- the data loop ----

  /**
   * Fills {@code chain} with the next available descriptor chain, positioned before its first
   * descriptor; false when the driver has made none available (or the queue is broken). The chain's
   * descriptors are validated as it is walked.
   *
   * @throws VirtqueueException when the driver published an available index more than the queue
   *     size ahead, or a head index outside the table; the queue is then broken
   * @throws IllegalArgumentException when the chain belongs to another queue
   * @throws IllegalStateException when the queue is not attached
   */
  public boolean pop(DescriptorChain chain) throws VirtqueueException {
    if (chain.queue != this) {
      throw new IllegalArgumentException("chain of another queue given to virtqueue " + index);
    }
    if (broken || popBudget == 0) return false;
    MemorySegment avail = availableRing;
    if (avail == null) throw notAttached();
    int next = nextAvail;
    if (next == shadowAvail && !refreshAvailIndex(avail)) return false;
    // Section 2.7.6: ring[idx % size] holds the head of a descriptor chain, an index into the
    // descriptor table, whose size is the queue size (2.7.5).
    int head = Short.toUnsignedInt(avail.get(LE16, AVAIL_RING + 2L * (next & mask)));
    if (head >= size) {
      throw fail(
          VirtqueueException.of(
              Reason.HEAD_OUT_OF_RANGE,
              index,
              "available ring entry "
                  + next
                  + " names descriptor "
                  + head
                  + " in a table of "
                  + size));
    }
    nextAvail = (next + 1) & 0xffff;
    popBudget--;
    chain.start(head, size);
    return true;
  }

  /**
   * Gives back {@code chain}, the chain {@link #pop} returned last, unused: the next pop returns
   * the same available ring entry again (virtio-queue's go_to_previous_position). For a device that
   * pops several buffers before it knows how many it fills; give them back last popped first.
   *
   * @throws IllegalArgumentException when the chain belongs to another queue
   */
  public void unpop(DescriptorChain chain) {
    if (chain.queue != this) {
      throw new IllegalArgumentException("chain of another queue given to virtqueue " + index);
    }
    nextAvail = (nextAvail - 1) & 0xffff;
    if (popBudget != Long.MAX_VALUE) popBudget++;
    int head = chain.headIndex();
    bytesInFlight -= Integer.toUnsignedLong(heldBytes[head]);
    heldBytes[head] = 0;
  }

  /** Reads avail.idx (acquire) into the shadow; whether there is anything new. */
  private boolean refreshAvailIndex(MemorySegment avail) throws VirtqueueException {
    int availIdx = Short.toUnsignedInt(avail.get(LE16, AVAIL_IDX));
    // Section 2.7.13.3.1: the driver's barrier before its idx store pairs with this acquire, so
    // ring entries and descriptors read after it are the ones idx published.
    VarHandle.acquireFence();
    int pending = (availIdx - nextAvail) & 0xffff;
    // Section 2.7.13: the ring is as large as the table, so a driver never has more than size
    // entries outstanding; 2.7.6.1: idx never decreases (which would look like a huge advance).
    if (pending > size) {
      throw fail(
          VirtqueueException.of(
              Reason.AVAIL_INDEX_TOO_FAR,
              index,
              "available index "
                  + availIdx
                  + " is "
                  + pending
                  + " entries past the last consumed "
                  + nextAvail
                  + " in a queue of "
                  + size));
    }
    shadowAvail = availIdx;
    return pending != 0;
  }

  /**
   * Puts a used element (section 2.7.8: the chain's head and the bytes written into it) into the
   * used ring; the driver sees it after {@link #publish}.
   *
   * @param bytesWritten bytes the device wrote, unsigned 32-bit (section 2.7.8.2: at least this
   *     many were written, from the first device-writable descriptor on)
   * @throws IllegalArgumentException when head is not a descriptor index of this queue
   */
  public void addUsed(int head, int bytesWritten) {
    MemorySegment used = usedRing;
    if (used == null) throw notAttached();
    if (head < 0 || head >= size) {
      throw new IllegalArgumentException(
          "virtqueue " + index + ": used head " + head + " is not below the size " + size);
    }
    long at = USED_RING + (long) USED_ELEM_SIZE * (nextUsed & mask);
    used.set(LE32, at, head);
    // Section 2.7.8.2: len is set before the used idx update (publish orders it).
    used.set(LE32, at + 4, bytesWritten);
    nextUsed = (nextUsed + 1) & 0xffff;
    bytesInFlight -= Integer.toUnsignedLong(heldBytes[head]);
    heldBytes[head] = 0;
  }

  /** {@link #addUsed(int, int)} with the chain's head and {@link DescriptorChain#bytesWritten}. */
  public void addUsed(DescriptorChain chain) {
    addUsed(chain.headIndex(), (int) chain.bytesWritten());
  }

  /**
   * Stores the used index (release) so the driver sees every element added since the last publish.
   * Once per batch.
   */
  public void publish() {
    MemorySegment used = usedRing;
    if (used == null) throw notAttached();
    int now = nextUsed;
    if (now == publishedUsed) return;
    // Section 2.7.8.2: the device sets len and writes the buffers before updating the used idx.
    VarHandle.releaseFence();
    used.set(LE16, USED_IDX, (short) now);
    publishedUsed = now;
  }

  /**
   * Whether the driver wants a used buffer notification for what was published since the last call
   * (signal the call eventfd at most once per batch, after {@link #publish}): with
   * VIRTIO_F_EVENT_IDX when the used index passed used_event (vring_need_event), otherwise unless
   * the driver set VIRTQ_AVAIL_F_NO_INTERRUPT; with VIRTIO_F_NOTIFY_ON_EMPTY also whenever the
   * available ring has run empty.
   */
  public boolean needsNotification() {
    MemorySegment avail = availableRing;
    if (avail == null) throw notAttached();
    int now = publishedUsed;
    int old = signalledUsed;
    // Nothing new: no decision made, so the first one after attach is still to come.
    if (now == old) return false;
    boolean valid = signalledValid;
    signalledUsed = now;
    signalledValid = true;
    // Section 2.7.7 and REAL-PEERS.md: the used idx store must be visible before the driver's
    // used_event / flags are read, or an interrupt the driver waits for is lost.
    VarHandle.fullFence();
    // Section 6.3 Legacy Interface: Reserved Feature Bits, VIRTIO_F_NOTIFY_ON_EMPTY: notify when
    // the device runs out of available descriptors even if notifications are suppressed.
    if (notifyOnEmpty && shadowAvail == nextAvail) return true;
    if (eventIdx) {
      // The first decision after attach has no trustworthy old index: notify (spurious
      // notifications are allowed, section 2.7.7.1: the driver MUST handle them).
      if (!valid) return true;
      // Section 2.7.7.2: with EVENT_IDX, notify when the used idx moved past used_event (the
      // driver's flags are ignored).
      int usedEvent = Short.toUnsignedInt(avail.get(LE16, usedEventOffset));
      return Virtq.needEvent(usedEvent, now, old);
    }
    // Section 2.7.7.2: without EVENT_IDX, flags 1 means no notification, 0 means notify.
    return (avail.get(LE16, AVAIL_FLAGS) & Virtq.VIRTQ_AVAIL_F_NO_INTERRUPT) == 0;
  }

  /**
   * Asks the driver not to send available buffer notifications (kicks) while the device is busy
   * anyway: without VIRTIO_F_EVENT_IDX sets VIRTQ_USED_F_NO_NOTIFY; with it, nothing is needed,
   * since the driver kicks only when its index passes avail_event, which stays behind.
   */
  public void disableNotifications() {
    MemorySegment used = usedRing;
    if (used == null) throw notAttached();
    // Section 2.7.10.2: with EVENT_IDX the device MUST keep flags 0.
    if (!eventIdx) used.set(LE16, USED_FLAGS, (short) Virtq.VIRTQ_USED_F_NO_NOTIFY);
  }

  /**
   * Asks for a kick when the driver makes more buffers available, then re-checks the available
   * index; call it before going idle. True means more work arrived in between (or was left): keep
   * popping instead of sleeping, or a kick is lost and the guest hangs (REAL-PEERS.md). With
   * VIRTIO_F_EVENT_IDX writes avail_event = {@link #lastAvailIndex()}, otherwise clears
   * VIRTQ_USED_F_NO_NOTIFY. A broken queue has no more work: false.
   */
  public boolean enableNotifications() {
    if (broken) return false;
    MemorySegment used = usedRing;
    if (used == null) throw notAttached();
    if (eventIdx) {
      // Section 2.7.10.2: the driver must kick once avail idx reaches avail_event + 1, i.e. as
      // soon as it publishes the entry after the last one consumed.
      used.set(LE16, availEventOffset, (short) nextAvail);
    } else {
      // Section 2.7.10.2: flags 0, the driver MUST notify.
      used.set(LE16, USED_FLAGS, (short) 0);
    }
    // REAL-PEERS.md and section 2.7.13.4.1 (the driver's barrier before it reads our event
    // fields): the store above and the load below must not be reordered, or both sides sleep.
    VarHandle.fullFence();
    int availIdx = Short.toUnsignedInt(availableRing.get(LE16, AVAIL_IDX));
    VarHandle.acquireFence();
    return availIdx != nextAvail;
  }

  /**
   * Lets at most {@code max} more {@link #pop}s succeed, until the next call: then pop answers
   * false although chains may be available ({@link #hasAvailable} still tells). The data loop
   * bounds each batch this way (Linux vhost-net's VHOST_NET_BATCH, NAPI's budget), so that used
   * elements are published, and the driver can reuse their descriptors, while the device goes on
   * with the rest instead of after the whole ring.
   */
  public void limitPops(int max) {
    if (max < 0) throw new IllegalArgumentException("pop limit " + max + " is negative");
    popBudget = max;
  }

  /**
   * Whether the driver has made chains available that were not popped yet, reading avail.idx
   * (acquire) when everything seen so far was popped; for a device that polls the ring instead of
   * waiting for a kick. A broken queue has none. Allocation-free.
   *
   * @throws VirtqueueException when the driver published an available index more than the queue
   *     size ahead; the queue is then broken
   * @throws IllegalStateException when the queue is not attached
   */
  public boolean hasAvailable() throws VirtqueueException {
    if (broken) return false;
    MemorySegment avail = availableRing;
    if (avail == null) throw notAttached();
    return nextAvail != shadowAvail || refreshAvailIndex(avail);
  }

  // ---- state for the control side ----

  /** GET_VRING_BASE: the next available ring index the device will consume. */
  public int lastAvailIndex() {
    return nextAvail;
  }

  /** Where the next used element goes: the used index once everything added is published. */
  public int nextUsedIndex() {
    return nextUsed;
  }

  /** The base SET_VRING_BASE gave (0 until then). */
  public int requestedBase() {
    return base;
  }

  /**
   * Whether the attach that started the queue took the positions from the used index in memory
   * instead of {@link #requestedBase()} (the DPDK reconnect case).
   */
  public boolean resumedFromUsedRing() {
    return resumedFromUsedRing;
  }

  public int index() {
    return index;
  }

  public int size() {
    return size;
  }

  public RingAddresses addresses() {
    return addresses;
  }

  public boolean isAttached() {
    return availableRing != null;
  }

  public boolean indirectDescriptors() {
    return indirectDescriptors;
  }

  public boolean eventIdx() {
    return eventIdx;
  }

  /** Whether a guest error stopped this queue (until {@link #reset}). */
  public boolean isBroken() {
    return broken;
  }

  /** The guest error that broke this queue, or null. */
  public VirtqueueException error() {
    return error;
  }

  /**
   * Marks the queue broken because an access to its memory faulted ({@code fault}: the JVM's
   * InternalError for SIGBUS on a mapping whose file the frontend truncated) and returns the error
   * to report. The queue pops nothing more until {@link #reset}; nothing it holds is touched.
   */
  public VirtqueueException memoryFault(Throwable fault) {
    return fail(
        VirtqueueException.of(Reason.MEMORY_FAULT, index, String.valueOf(fault.getMessage())));
  }

  // ---- internals ----

  /** Marks the queue broken by {@code e} and returns it to throw. */
  VirtqueueException fail(VirtqueueException e) {
    broken = true;
    if (error == null) error = e;
    return e;
  }

  /**
   * The region holding all of guest {@code [address, address + length)}, or null when it is not
   * wholly inside memory (or the pool): {@link GuestAddressSpace#regionAt} with a one-entry cache.
   * Overflow-safe (Ranges.contains).
   */
  GuestRegion regionAt(long address, long length) {
    GuestRegion region = cachedRegion;
    if (region != null && Ranges.contains(cachedStart, cachedSize, address, length)) return region;
    region = memory.regionAt(address, length);
    if (region != null) {
      cachedRegion = region;
      cachedStart = region.mapped().guestAddress();
      cachedSize = region.mapped().size();
    }
    return region;
  }

  /**
   * Why guest {@code [address, address + length)} is refused: the typed failure of translate, with
   * address, length and pool bounds. Only on error paths.
   */
  GuestAccessException accessFailure(long address, long length) {
    try {
      memory.translate(address, length);
    } catch (GuestAccessException e) {
      return e;
    }
    // regionAt and translate agree on immutable snapshots; keep a typed answer regardless.
    return new UnmappedAddressException(AddressKind.GUEST_PHYSICAL, address, length);
  }

  private void checkAligned(String part, long address, long length, int alignment)
      throws VirtqueueException {
    if ((address & (alignment - 1)) != 0) {
      throw fail(
          VirtqueueException.at(
              Reason.RING_MISALIGNED,
              index,
              part + " is not " + alignment + "-byte aligned",
              addresses.kind(),
              address,
              length));
    }
  }

  private MemorySegment resolve(GuestAddressSpace memory, String part, long address, long length)
      throws VirtqueueException {
    try {
      return addresses.kind() == AddressKind.GUEST_PHYSICAL
          ? memory.translate(address, length)
          : memory.translateUserAddress(address, length);
    } catch (GuestAccessException e) {
      throw fail(VirtqueueException.refused(Reason.RING_OUTSIDE_MEMORY, index, part, e));
    }
  }

  private IllegalStateException notAttached() {
    return new IllegalStateException("virtqueue " + index + " is not attached to guest memory");
  }

  @Override
  public String toString() {
    return "virtqueue "
        + index
        + " (size "
        + size
        + ", last avail "
        + nextAvail
        + ", used "
        + nextUsed
        + (broken ? ", broken" : "")
        + ")";
  }
}
