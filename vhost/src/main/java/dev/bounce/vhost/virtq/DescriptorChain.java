package dev.bounce.vhost.virtq;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;
import static dev.bounce.vhost.virtq.Virtq.DESCRIPTOR_SIZE;
import static dev.bounce.vhost.virtq.Virtq.DESC_ADDR;
import static dev.bounce.vhost.virtq.Virtq.DESC_FLAGS;
import static dev.bounce.vhost.virtq.Virtq.DESC_LEN;
import static dev.bounce.vhost.virtq.Virtq.DESC_NEXT;
import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_INDIRECT;
import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_NEXT;
import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_WRITE;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.GuestRegion;
import dev.bounce.pool.IoVectors;
import dev.bounce.vhost.virtq.VirtqueueException.Reason;
import java.lang.foreign.MemorySegment;

/**
 * One descriptor chain popped from a {@link SplitQueue}: a bounded iterator over its buffers,
 * direct and (when VIRTIO_F_INDIRECT_DESC was negotiated) from an indirect table. Reusable: {@link
 * SplitQueue#pop} refills it, so a queue needs one (or a few) for its whole life, and nothing here
 * allocates.
 *
 * <p>{@link #next} moves to the next descriptor and validates it; then {@link #address}, {@link
 * #length}, {@link #isWritable} describe it, and its bytes are {@link #segment()} from {@link
 * #offset()} for {@link #length()} bytes (the mapped guest region, not a slice, so that nothing is
 * allocated). {@link #read} and {@link #write} copy through the chain from a cursor instead.
 *
 * <p>Every rule of sections 2.7.4 and 2.7.5 is checked once per descriptor, as it is reached; a
 * broken one throws {@link VirtqueueException} and stops the queue. Each descriptor field is read
 * from guest memory exactly once, so a driver changing it meanwhile cannot slip past a check.
 */
public final class DescriptorChain {
  private static final long MAX_CHAIN_BYTES = 0xffff_ffffL;

  final SplitQueue queue;

  private int head;

  // The table being walked: the queue's descriptor table, or an indirect table.
  private MemorySegment table;
  private long tableOffset;
  private long tableAddress; // guest address of the indirect table (for messages)
  private int tableEntries;
  private boolean inIndirect;
  private int nextIndex;
  private boolean more;
  private int walked; // descriptors read from the current table

  private long totalLength;
  private boolean writableSeen;
  private long bytesWritten;

  // The current descriptor.
  private boolean positioned;
  private int index;
  private long address;
  private long length;
  private boolean writable;
  private MemorySegment segment;
  private long offset;
  private long consumed; // bytes of it read or written through the cursor

  DescriptorChain(SplitQueue queue) {
    this.queue = queue;
  }

  /** Starts over at {@code head} of a queue of {@code size}, before the first descriptor. */
  void start(int head, int size) {
    this.head = head;
    this.table = queue.descriptorTable;
    this.tableOffset = 0;
    this.tableEntries = size;
    this.inIndirect = false;
    this.nextIndex = head;
    this.more = true;
    this.walked = 0;
    this.totalLength = 0;
    this.writableSeen = false;
    this.bytesWritten = 0;
    this.positioned = false;
    this.segment = null;
    this.consumed = 0;
  }

  /**
   * Walks the chain again from its head (for example to measure it before writing): every
   * descriptor is read and checked again, and {@link #bytesWritten} restarts from 0.
   */
  public void rewind() {
    start(head, queue.size());
  }

  /**
   * Moves to the next descriptor; false at the end of the chain. The descriptor is validated first:
   * inside its table, no loop, the 2^32-byte limit, readable before writable, indirect rules, and
   * the buffer wholly inside memory (or the pool).
   *
   * @throws VirtqueueException when the guest broke a rule; the queue is then broken
   */
  public boolean next() throws VirtqueueException {
    while (more) {
      int i = nextIndex;
      long at = tableOffset + (long) DESCRIPTOR_SIZE * i;
      long addr = table.get(LE64, at + DESC_ADDR);
      long len = Integer.toUnsignedLong(table.get(LE32, at + DESC_LEN));
      int flags = Short.toUnsignedInt(table.get(LE16, at + DESC_FLAGS));
      int next = Short.toUnsignedInt(table.get(LE16, at + DESC_NEXT));
      walked++;

      if ((flags & VIRTQ_DESC_F_INDIRECT) != 0) {
        enterIndirect(i, addr, len, flags);
        continue;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) != 0) {
        // Section 2.7.5: the table has Queue Size entries (an indirect one len / 16, 2.7.5.3);
        // next must name one of them.
        if (next >= tableEntries) {
          throw fail(
              Reason.NEXT_OUT_OF_RANGE,
              describe(i) + " chains to " + next + " in a table of " + tableEntries);
        }
        // Section 2.7.5.2: no loops; 2.7.5.3.1: a chain is no longer than the Queue Size (a
        // table's chain can visit each entry once, so a longer one loops).
        if (walked >= tableEntries) {
          throw fail(
              Reason.CHAIN_TOO_LONG,
              describe(i) + " continues a chain already " + walked + " long, the table size");
        }
        nextIndex = next;
      } else {
        more = false;
      }

      boolean w = (flags & VIRTQ_DESC_F_WRITE) != 0;
      // Section 2.7.4.2: device-writable descriptors come after all device-readable ones.
      if (!w && writableSeen) {
        throw failAt(
            Reason.READABLE_AFTER_WRITABLE,
            describe(i) + " is readable after a writable",
            addr,
            len);
      }
      // Section 2.7.5.2: a chain is at most 2^32 bytes in total (len is u32 in used elements).
      long total = totalLength + len;
      if (total > MAX_CHAIN_BYTES) {
        throw failAt(
            Reason.CHAIN_LENGTH_OVERFLOW,
            describe(i) + " brings the chain to " + total + " bytes",
            addr,
            len);
      }
      // Section 2.7.5: addr and len name guest memory; the pool allows only its window
      // (RESTRICTED-DMA.md). A zero-length buffer touches nothing, but its address is checked.
      GuestRegion region = queue.regionAt(addr, len);
      if (region == null) {
        throw queue.fail(
            VirtqueueException.refused(
                Reason.DESCRIPTOR_OUTSIDE_MEMORY,
                queue.index(),
                describe(i),
                queue.accessFailure(addr, len)));
      }

      writableSeen |= w;
      totalLength = total;
      queue.hold(head, total);
      positioned = true;
      index = i;
      address = addr;
      length = len;
      writable = w;
      segment = region.segment();
      offset = addr - region.mapped().guestAddress();
      consumed = 0;
      return true;
    }
    positioned = false;
    segment = null;
    return false;
  }

  /** Switches the walk to the indirect table that descriptor {@code i} points at. */
  private void enterIndirect(int i, long addr, long len, int flags) throws VirtqueueException {
    // Section 2.7.5.3.1: INDIRECT only when VIRTIO_F_INDIRECT_DESC was negotiated.
    if (!queue.indirectDescriptors()) {
      throw failAt(
          Reason.INDIRECT_NOT_NEGOTIATED, describe(i) + " points at an indirect table", addr, len);
    }
    // Section 2.7.5.3.1: no INDIRECT within an indirect table (one table per descriptor).
    if (inIndirect) {
      throw failAt(Reason.NESTED_INDIRECT, describe(i) + " is INDIRECT", addr, len);
    }
    // Section 2.7.5.3.1: not both INDIRECT and NEXT (the table ends the chain, 2.7.5.3.2).
    if ((flags & VIRTQ_DESC_F_NEXT) != 0) {
      throw failAt(Reason.INDIRECT_WITH_NEXT, describe(i) + " has flags " + flags, addr, len);
    }
    // Section 2.7.5.3: the table is struct virtq_desc desc[len / 16]; an empty one has no head.
    if (len == 0 || len % DESCRIPTOR_SIZE != 0) {
      throw failAt(
          Reason.INDIRECT_TABLE_LENGTH,
          describe(i) + " has a table of " + len + " bytes",
          addr,
          len);
    }
    // Section 2.7.5.3.1: no chain is longer than the Queue Size, so neither is a table (as DPDK
    // refuses one): a longer one would let each chain cost up to 65536 descriptor reads, each
    // time the device walks it.
    if (len / DESCRIPTOR_SIZE > queue.size()) {
      throw failAt(
          Reason.INDIRECT_TABLE_LENGTH,
          describe(i)
              + " has a table of "
              + len / DESCRIPTOR_SIZE
              + " descriptors, more than the queue's "
              + queue.size(),
          addr,
          len);
    }
    // The whole table inside memory (or the pool), checked once. Its address need not be aligned.
    // Section 2.7.5.3.2: the WRITE flag of this descriptor is ignored.
    GuestRegion region = queue.regionAt(addr, len);
    if (region == null) {
      throw queue.fail(
          VirtqueueException.refused(
              Reason.INDIRECT_TABLE_OUTSIDE_MEMORY,
              queue.index(),
              describe(i) + " points at an indirect table",
              queue.accessFailure(addr, len)));
    }
    table = region.segment();
    tableOffset = addr - region.mapped().guestAddress();
    tableAddress = addr;
    tableEntries = (int) (len / DESCRIPTOR_SIZE);
    inIndirect = true;
    nextIndex = 0; // Section 2.7.5.3: the first indirect descriptor is at index 0.
    walked = 0;
    more = true;
  }

  // ---- the current descriptor ----

  /** The head of this chain: what goes into the used ring. */
  public int headIndex() {
    return head;
  }

  /** Whether {@link #next} stopped on a descriptor (false before the first and after the last). */
  public boolean isPositioned() {
    return positioned;
  }

  /** The current descriptor's index in its table (the queue's, or the indirect one). */
  public int index() {
    return index;
  }

  /** Whether the current descriptor comes from an indirect table. */
  public boolean isIndirect() {
    return inIndirect;
  }

  /** The current descriptor's guest-physical address. */
  public long address() {
    return address;
  }

  /** The current descriptor's length in bytes (u32, so up to 2^32 - 1). */
  public long length() {
    return length;
  }

  /** Whether the current descriptor is device-writable (VIRTQ_DESC_F_WRITE). */
  public boolean isWritable() {
    return writable;
  }

  /**
   * The mapped guest region holding the current descriptor's bytes; they are at {@link #offset()}
   * for {@link #length()} bytes. Valid while the queue's memory snapshot is.
   */
  public MemorySegment segment() {
    return segment;
  }

  /** Where the current descriptor's bytes start in {@link #segment()}. */
  public long offset() {
    return offset;
  }

  /** Bytes in the descriptors walked so far (at most 2^32 - 1). */
  public long totalLength() {
    return totalLength;
  }

  /** Bytes {@link #write} has put into the chain: the used element's len. */
  public long bytesWritten() {
    return bytesWritten;
  }

  // ---- copying through the cursor ----

  /**
   * Copies up to {@code count} bytes of device-readable data, from the cursor on, into {@code dst}
   * at {@code dstOffset}. Stops early at the first writable descriptor or the end of the chain.
   *
   * @return the bytes copied
   * @throws VirtqueueException when a descriptor reached is invalid
   */
  public long read(MemorySegment dst, long dstOffset, long count) throws VirtqueueException {
    long done = 0;
    while (done < count && readable()) {
      long n = Math.min(length - consumed, count - done);
      MemorySegment.copy(segment, offset + consumed, dst, dstOffset + done, n);
      consumed += n;
      done += n;
    }
    return done;
  }

  /** {@link #read(MemorySegment, long, long)} into {@code dst[dstIndex, dstIndex + count)}. */
  public int read(byte[] dst, int dstIndex, int count) throws VirtqueueException {
    java.util.Objects.checkFromIndexSize(dstIndex, count, dst.length);
    return (int) read(MemorySegment.ofArray(dst), dstIndex, count);
  }

  /**
   * Copies up to {@code count} bytes from {@code src} at {@code srcOffset} into the chain's
   * device-writable descriptors from the cursor on, skipping any readable ones still ahead (section
   * 2.7.5.1: a device MUST NOT write to a device-readable buffer). Stops early at the end of the
   * chain. Adds to {@link #bytesWritten}.
   *
   * @return the bytes copied
   * @throws VirtqueueException when a descriptor reached is invalid
   */
  public long write(MemorySegment src, long srcOffset, long count) throws VirtqueueException {
    long done = 0;
    while (done < count && writableRoom()) {
      long n = Math.min(length - consumed, count - done);
      MemorySegment.copy(src, srcOffset + done, segment, offset + consumed, n);
      consumed += n;
      done += n;
    }
    bytesWritten += done;
    return done;
  }

  /** {@link #write(MemorySegment, long, long)} from {@code src[srcIndex, srcIndex + count)}. */
  public int write(byte[] src, int srcIndex, int count) throws VirtqueueException {
    java.util.Objects.checkFromIndexSize(srcIndex, count, src.length);
    return (int) write(MemorySegment.ofArray(src), srcIndex, count);
  }

  /**
   * Adds up to {@code max} bytes of the chain's device-writable room, from the cursor on, to {@code
   * into} (one piece per descriptor, as far as {@code into} has room), and moves the cursor past
   * them, so that one {@code readv(2)} can fill them straight from a file descriptor (vm-memory's
   * read_volatile_from). They are not counted in {@link #bytesWritten}: only the caller knows how
   * many the read filled. Readable descriptors still ahead are skipped (section 2.7.5.1).
   *
   * @return the bytes added
   * @throws VirtqueueException when a descriptor reached is invalid
   */
  public long gatherWritable(IoVectors into, long max) throws VirtqueueException {
    return advance(into, max, true);
  }

  /**
   * Adds up to {@code max} bytes of device-readable data, from the cursor on, to {@code into} (one
   * piece per descriptor, as far as {@code into} has room) and moves the cursor past them, so that
   * one {@code writev(2)} can send them straight from guest memory (vm-memory's write_volatile_to).
   * Stops at the first writable descriptor or the end of the chain.
   *
   * @return the bytes added
   * @throws VirtqueueException when a descriptor reached is invalid
   */
  public long gatherReadable(IoVectors into, long max) throws VirtqueueException {
    return advance(into, max, false);
  }

  /**
   * Moves the cursor past up to {@code count} bytes of device-readable data without reading them
   * (after a {@link #rewind}, back to where a partial {@code writev(2)} stopped).
   *
   * @return the bytes skipped (fewer at the first writable descriptor or the end of the chain)
   * @throws VirtqueueException when a descriptor reached is invalid
   */
  public long skipReadable(long count) throws VirtqueueException {
    return advance(null, count, false);
  }

  /**
   * Moves the cursor past up to {@code count} bytes of device-writable room without writing them
   * (room for a header the device writes after the payload, once it knows the payload's length).
   * Not counted in {@link #bytesWritten}.
   *
   * @return the bytes skipped (fewer at the end of the chain)
   * @throws VirtqueueException when a descriptor reached is invalid
   */
  public long skipWritable(long count) throws VirtqueueException {
    return advance(null, count, true);
  }

  /**
   * Moves the cursor past up to {@code count} bytes of the readable data or (with {@code writable})
   * the writable room ahead, adding them to {@code into} unless it is null.
   */
  private long advance(IoVectors into, long count, boolean writable) throws VirtqueueException {
    long done = 0;
    while (done < count
        && (into == null || into.hasRoom())
        && (writable ? writableRoom() : readable())) {
      long n = Math.min(length - consumed, count - done);
      if (into != null) into.add(segment, offset + consumed, n);
      consumed += n;
      done += n;
    }
    return done;
  }

  /** Positions the cursor on unread bytes of a readable descriptor; false if there are none. */
  private boolean readable() throws VirtqueueException {
    while (!positioned || consumed == length) {
      if (!next()) return false;
    }
    return !writable;
  }

  /** Positions the cursor on room in a writable descriptor; false at the end of the chain. */
  private boolean writableRoom() throws VirtqueueException {
    while (!positioned || consumed == length || !writable) {
      if (!next()) return false;
    }
    return true;
  }

  // ---- errors ----

  private VirtqueueException fail(Reason reason, String detail) {
    return queue.fail(VirtqueueException.of(reason, queue.index(), detail));
  }

  private VirtqueueException failAt(Reason reason, String detail, long addr, long len) {
    return queue.fail(
        VirtqueueException.at(
            reason, queue.index(), detail, AddressKind.GUEST_PHYSICAL, addr, len));
  }

  /** Names descriptor {@code i} of this chain for a message. */
  private String describe(int i) {
    return inIndirect
        ? "chain "
            + head
            + ": descriptor "
            + i
            + " of the indirect table at guest address 0x"
            + Long.toHexString(tableAddress)
        : "chain " + head + ": descriptor " + i;
  }

  @Override
  public String toString() {
    return "descriptor chain " + head + " of virtqueue " + queue.index();
  }
}
