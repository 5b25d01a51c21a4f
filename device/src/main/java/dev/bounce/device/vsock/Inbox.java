package dev.bounce.device.vsock;

import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;

import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.RejectedExecutionException;

/**
 * One guest's packets from other guests ({@link Siblings}), waiting for its rx buffers: whole
 * packets in a {@link ByteRing} (one message per packet: the CID whose share it counts against,
 * then header and payload), which starts small and grows as packets wait. Any loop may offer; the
 * receiving guest's loop delivers. Synchronized: offers come from other guests' data loops.
 *
 * <p>Three bounds: {@code capacity} bytes in all; at most {@code perSender} of them from any one
 * guest, so that one sender cannot crowd out the others; and the last {@code reserve} bytes only
 * for RSTs, so that a connection whose packet did not fit can still be reset at this end too rather
 * than go on with a hole in it.
 */
final class Inbox {
  /** What a packet's first 8 bytes hold when bounce made it (an RST): no sender's share. */
  private static final long NO_SENDER = -1;

  private static final int OWNER = 8;

  /** Where the rest of a packet that cannot be delivered whole goes. */
  private static final ByteRing.Reader DISCARD = (array, offset, length) -> {};

  private final ByteRing packets;
  private final int perSender;
  private final int reserve;
  private final LongMap<long[]> bytesBySender = new LongMap<>(); // each a long[1], made once

  /** The owner and header of the packet being delivered, as it came, and of the piece going out. */
  private final MemorySegment current = Arena.ofAuto().allocate(OWNER + VsockHeader.SIZE);

  private final MemorySegment piece = Arena.ofAuto().allocate(VsockHeader.SIZE);
  private final MemorySegment owner = Arena.ofAuto().allocate(OWNER);
  private long remaining = -1; // payload bytes of the current packet not delivered; -1: none taken
  private Runnable wake; // null while closed
  // Whether a packet waits: read by the receiving guest's loop on every rx pass without the lock,
  // which an offer holds while it copies up to 64 KiB.
  private volatile boolean waiting;
  private boolean seqpacket; // whether this guest's driver negotiated SEQPACKET

  Inbox(int capacity, int perSender, int reserve) {
    if (perSender + reserve > capacity) {
      throw new IllegalArgumentException(perSender + " + " + reserve + " > " + capacity);
    }
    packets = new ByteRing(capacity);
    this.perSender = perSender;
    this.reserve = reserve;
  }

  synchronized void open(Runnable wake, boolean seqpacket) {
    this.wake = wake;
    this.seqpacket = seqpacket;
  }

  synchronized void close() {
    wake = null;
    packets.clear();
    bytesBySender.clear();
    remaining = -1;
    waiting = false;
  }

  boolean hasPackets() {
    return waiting;
  }

  /**
   * Takes the packet from guest {@code sender} whose {@code header} was read from {@code chain},
   * with {@code len} payload bytes from the chain's cursor on. A packet that does not go (no room,
   * fewer payload bytes than len, a fault while copying them) leaves nothing of itself and makes an
   * RST to this guest's end of its connection instead (an RST that does not fit is lost).
   */
  Siblings.Forwarded offer(long sender, MemorySegment header, DescriptorChain chain, int len)
      throws VirtqueueException {
    Runnable toWake;
    Siblings.Forwarded result;
    Throwable fault = null;
    synchronized (this) {
      if (wake == null) return Siblings.Forwarded.NOT_RUNNING;
      int type = VsockHeader.type(header, 0);
      if (type == VsockHeader.TYPE_SEQPACKET && !seqpacket) return Siblings.Forwarded.NO_SEQPACKET;
      boolean wasWaiting = waiting;
      int need = OWNER + VsockHeader.SIZE + len;
      long[] share = shareOf(sender);
      boolean isReset = VsockHeader.op(header, 0) == Op.RST;
      if (share[0] + need > perSender || packets.free() - (isReset ? 0 : reserve) < need) {
        result = Siblings.Forwarded.FULL;
      } else {
        long start = packets.produced();
        try {
          result = copy(sender, header, chain, len);
        } catch (VirtqueueException | RuntimeException | Error e) {
          fault = e; // a descriptor outside the pool, memory cut under it
          result = Siblings.Forwarded.SHORT;
        }
        if (result == Siblings.Forwarded.SENT) {
          packets.markEnd();
          share[0] += need;
          waiting = true;
        } else {
          packets.truncate(start);
        }
      }
      if (result != Siblings.Forwarded.SENT) {
        int srcPort = VsockHeader.srcPort(header, 0);
        putReset(
            sender, srcPort, VsockHeader.dstCid(header, 0), VsockHeader.dstPort(header, 0), type);
      }
      toWake = !wasWaiting && waiting ? wake : null;
    }
    wake(toWake);
    if (fault instanceof VirtqueueException e) throw e;
    if (fault instanceof RuntimeException e) throw e;
    if (fault instanceof Error e) throw e;
    return result;
  }

  /** Appends the packet, its payload from {@code chain}: SENT, or SHORT when the chain ran out. */
  private Siblings.Forwarded copy(long sender, MemorySegment header, DescriptorChain chain, int len)
      throws VirtqueueException {
    owner.set(LE64, 0, sender);
    packets.write(owner, 0, OWNER);
    packets.write(header, 0, VsockHeader.SIZE);
    return packets.writeFrom(chain, len) ? Siblings.Forwarded.SENT : Siblings.Forwarded.SHORT;
  }

  /**
   * Takes an RST from {@code srcCid}:{@code srcPort} to {@code dstCid}:{@code dstPort} (the answer
   * to a packet that could not go), in the room kept for RSTs.
   *
   * @return false when even that is full, or the guest has no driver (the RST is lost)
   */
  boolean offerReset(long srcCid, int srcPort, long dstCid, int dstPort, int type) {
    Runnable toWake;
    synchronized (this) {
      boolean wasWaiting = waiting;
      if (!putReset(srcCid, srcPort, dstCid, dstPort, type)) return false;
      toWake = wasWaiting ? null : wake;
    }
    wake(toWake);
    return true;
  }

  /** Appends an RST if it fits and a driver is served; whether it did. Holding the lock. */
  private boolean putReset(long srcCid, int srcPort, long dstCid, int dstPort, int type) {
    if (wake == null || packets.free() < OWNER + VsockHeader.SIZE) return false;
    owner.set(LE64, 0, NO_SENDER);
    packets.write(owner, 0, OWNER);
    VsockHeader.write(piece, 0, srcCid, dstCid, srcPort, dstPort, 0, type, Op.RST, 0, 0, 0);
    packets.write(piece, 0, VsockHeader.SIZE);
    packets.markEnd();
    waiting = true;
    return true;
  }

  private long[] shareOf(long sender) {
    long[] share = bytesBySender.get(sender);
    if (share == null) {
      share = new long[1];
      bytesBySender.put(sender, share);
    }
    return share;
  }

  /** Runs {@code toWake} if not null, outside the lock (it hands work to another loop). */
  private static void wake(Runnable toWake) {
    if (toWake == null) return;
    try {
      toWake.run();
    } catch (RejectedExecutionException e) {
      // The receiving guest's loop is shutting down (bounce is exiting): nothing to deliver to.
    }
  }

  /**
   * See {@link Siblings.Member#deliver}: false when {@code room} holds a header but none of the
   * payload still to go (nothing written), or the chain took less than {@code room} (the guest
   * changed its descriptors meanwhile: the rest of that packet is dropped and the guest's end of
   * its connection reset).
   */
  synchronized boolean deliver(DescriptorChain chain, long room) throws VirtqueueException {
    if (remaining < 0) {
      if (packets.isEmpty()) throw new IllegalStateException("no packet waits");
      packets.read(current, 0, OWNER + VsockHeader.SIZE);
      remaining = packets.readable(Integer.MAX_VALUE);
    }
    int n = (int) Math.min(remaining, room - VsockHeader.SIZE);
    if (n <= 0 && remaining > 0) return false;
    MemorySegment.copy(current, OWNER, piece, 0, VsockHeader.SIZE);
    piece.set(LE32, VsockHeader.LEN, n);
    if (n < remaining) {
      int flags = VsockHeader.flags(piece, 0);
      piece.set(LE32, VsockHeader.FLAGS, flags & ~(VsockHeader.SEQ_EOM | VsockHeader.SEQ_EOR));
    }
    boolean whole =
        chain.write(piece, 0, VsockHeader.SIZE) == VsockHeader.SIZE
            && packets.readInto(chain, n) == n;
    remaining -= whole ? n : 0;
    if (!whole) dropCurrent();
    if (remaining == 0) finishCurrent();
    return whole;
  }

  /** The current packet cannot be delivered whole: the rest goes, and an RST in its place. */
  private void dropCurrent() {
    packets.read(DISCARD, Integer.MAX_VALUE);
    finishCurrent();
    putReset(
        VsockHeader.srcCid(current, OWNER),
        VsockHeader.srcPort(current, OWNER),
        VsockHeader.dstCid(current, OWNER),
        VsockHeader.dstPort(current, OWNER),
        VsockHeader.type(current, OWNER));
  }

  /** The current packet is done with: its share is freed, and the next one comes. */
  private void finishCurrent() {
    packets.takeEnd();
    long sender = current.get(LE64, 0);
    if (sender != NO_SENDER) {
      shareOf(sender)[0] -= OWNER + VsockHeader.SIZE + VsockHeader.len(current, OWNER);
    }
    remaining = -1;
    waiting = !packets.isEmpty();
  }
}
