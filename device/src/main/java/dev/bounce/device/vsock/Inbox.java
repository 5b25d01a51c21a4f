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
  }

  synchronized boolean hasPackets() {
    return remaining >= 0 || !packets.isEmpty();
  }

  /**
   * Takes the packet from guest {@code sender} whose {@code header} was read from {@code chain},
   * with {@code len} payload bytes from the chain's cursor on. A packet that does not fit makes an
   * RST to this guest's end of its connection instead (an RST that does not fit is dropped).
   */
  Siblings.Forwarded offer(long sender, MemorySegment header, DescriptorChain chain, int len)
      throws VirtqueueException {
    Runnable toWake;
    synchronized (this) {
      if (wake == null) return Siblings.Forwarded.NOT_RUNNING;
      int type = VsockHeader.type(header, 0);
      if (type == VsockHeader.TYPE_SEQPACKET && !seqpacket) return Siblings.Forwarded.NO_SEQPACKET;
      int need = OWNER + VsockHeader.SIZE + len;
      long[] share = shareOf(sender);
      boolean isReset = VsockHeader.op(header, 0) == Op.RST;
      if (share[0] + need > perSender || packets.free() - (isReset ? 0 : reserve) < need) {
        if (!isReset) {
          int srcPort = VsockHeader.srcPort(header, 0);
          int dstPort = VsockHeader.dstPort(header, 0);
          toWake = putReset(sender, srcPort, VsockHeader.dstCid(header, 0), dstPort, type);
          wake(toWake);
        }
        return Siblings.Forwarded.FULL;
      }
      toWake = hasPackets() ? null : wake;
      long start = packets.produced();
      try {
        owner.set(LE64, 0, sender);
        packets.write(owner, 0, OWNER);
        packets.write(header, 0, VsockHeader.SIZE);
        if (!packets.writeFrom(chain, len)) {
          packets.truncate(start);
          return Siblings.Forwarded.SHORT;
        }
      } catch (VirtqueueException | RuntimeException | Error e) {
        packets.truncate(start); // a descriptor outside the pool, say: no half packet stays
        throw e;
      }
      packets.markEnd();
      share[0] += need;
    }
    wake(toWake);
    return Siblings.Forwarded.SENT;
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
      if (wake == null || packets.free() < OWNER + VsockHeader.SIZE) return false;
      toWake = putReset(srcCid, srcPort, dstCid, dstPort, type);
    }
    wake(toWake);
    return true;
  }

  /** Appends an RST if it fits; the wake to run if the inbox was empty. Holding the lock. */
  private Runnable putReset(long srcCid, int srcPort, long dstCid, int dstPort, int type) {
    if (wake == null || packets.free() < OWNER + VsockHeader.SIZE) return null;
    Runnable toWake = hasPackets() ? null : wake;
    owner.set(LE64, 0, NO_SENDER);
    packets.write(owner, 0, OWNER);
    VsockHeader.write(piece, 0, srcCid, dstCid, srcPort, dstPort, 0, type, Op.RST, 0, 0, 0);
    packets.write(piece, 0, VsockHeader.SIZE);
    packets.markEnd();
    return toWake;
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
   * See {@link Siblings.Member#deliver}; false, and nothing written, when {@code room} holds a
   * header but none of the payload still to go, or the chain took less than {@code room} (the guest
   * changed its descriptors meanwhile).
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
    if (chain.write(piece, 0, VsockHeader.SIZE) < VsockHeader.SIZE) return false;
    int put = packets.readInto(chain, n);
    remaining -= put;
    if (remaining == 0) {
      packets.takeEnd();
      long sender = current.get(LE64, 0);
      if (sender != NO_SENDER) {
        shareOf(sender)[0] -= OWNER + VsockHeader.SIZE + VsockHeader.len(current, OWNER);
      }
      remaining = -1;
    }
    return put == n;
  }
}
