package dev.bounce.device.vsock;

import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.lang.foreign.MemorySegment;
import java.util.Set;

/**
 * The guests of one bounce process that may reach each other, as vhost-device-vsock's sibling VM
 * communication has them: a guest's packet to another guest's CID (not the host's) goes to that
 * guest as it is, header and payload, when the two share at least one group ({@link #DEFAULT_GROUP}
 * unless configured). bounce keeps no connection state for such packets: the two guests run their
 * connection, credit included, end to end, and the device only carries packets.
 *
 * <p>Each guest ({@link Member}) has an {@link Inbox} of packets from other CIDs waiting for its rx
 * buffers, bounded by {@link #INBOX_BYTES}, {@link #SENDER_BYTES} of them from any one guest: a
 * guest that stops taking them does not grow bounce's memory, and one sender cannot crowd out the
 * others. A packet that cannot go resets its connection at both ends (vhost-device-vsock's queue is
 * unbounded, and what it cannot route it drops with only a log line, no RST). Thread-safe: the
 * guests' devices run on several data loops.
 */
public final class Siblings {
  /** The group of a guest configured with none (vhost-device-vsock's default). */
  public static final String DEFAULT_GROUP = "default";

  /**
   * The most bytes (headers included) of other guests' packets that wait for one guest's rx
   * buffers: sixteen Linux credit windows (256 KiB each).
   */
  public static final int INBOX_BYTES = 4 << 20;

  /**
   * The most of them from any one guest: four credit windows. Credit counts payload only, so a
   * sender of tiny packets (or of many connections) can reach it within its credit while the
   * receiving guest is slow to post rx buffers; its connection is then reset at both ends.
   */
  public static final int SENDER_BYTES = 1 << 20;

  /** The inbox's last bytes, kept for the RSTs of connections whose packet did not fit. */
  static final int RESET_RESERVE = 64 << 10;

  // Copied on each join (all of them at start-up), read without a lock and without boxing a CID.
  private volatile LongMap<Member> members = new LongMap<>();

  /**
   * Adds the guest with CID {@code cid}, in {@code groups}; it receives packets from the others
   * only while its device {@link Member#attach}es it.
   *
   * @throws IllegalArgumentException when the CID is taken or {@code groups} is empty
   */
  public synchronized Member join(long cid, Set<String> groups) {
    if (groups.isEmpty()) throw new IllegalArgumentException("CID " + cid + " has no group");
    if (members.containsKey(cid)) {
      throw new IllegalArgumentException("guest CID " + cid + " is taken");
    }
    Member m = new Member(cid, groups.toArray(String[]::new));
    LongMap<Member> more = new LongMap<>();
    for (Member other : members.values()) more.put(other.cid, other);
    more.put(cid, m);
    members = more;
    return m;
  }

  /** A guest of its own, reaching no other: what a device without siblings has. */
  static Member alone(long cid) {
    return new Siblings().join(cid, Set.of(DEFAULT_GROUP));
  }

  /** What became of a packet for another guest. */
  enum Forwarded {
    SENT,
    /** No guest of this process has the CID. */
    NO_SUCH_GUEST,
    /** The guest shares no group with the sender. */
    NO_COMMON_GROUP,
    /** The guest has no driver now (its VMM is gone, or has not started the device). */
    NOT_RUNNING,
    /** A SEQPACKET packet for a guest whose driver did not negotiate SEQPACKET. */
    NO_SEQPACKET,
    /** The guest has not taken the packets waiting for it (from this sender, or from all). */
    FULL,
    /** The packet's chain held fewer payload bytes than its header's len. */
    SHORT
  }

  /** One guest: its CID, its groups, and the packets other guests sent it. */
  public final class Member {
    private final long cid;
    private final String[] groups;
    private final Inbox inbox = new Inbox(INBOX_BYTES, SENDER_BYTES, RESET_RESERVE);

    private Member(long cid, String[] groups) {
      this.cid = cid;
      this.groups = groups;
    }

    long cid() {
      return cid;
    }

    /** Whether this guest and {@code other} share a group (allocates nothing: once a packet). */
    private boolean sharesGroupWith(Member other) {
      for (String mine : groups) {
        for (String theirs : other.groups) {
          if (mine.equals(theirs)) return true;
        }
      }
      return false;
    }

    /**
     * A driver is served, which negotiated SEQPACKET or not: packets for this guest are taken from
     * now on, and {@code wake} (safe from any thread) is run when the inbox had been empty.
     */
    void attach(Runnable wake, boolean seqpacket) {
      inbox.open(wake, seqpacket);
    }

    /** The driver went away: what waits is dropped, and packets are refused until the next. */
    void detach() {
      inbox.close();
    }

    /**
     * Forwards the packet whose {@code header} was read from {@code chain}, with {@code len}
     * payload bytes from the chain's cursor on, to the guest {@code dstCid}. On the sender's loop.
     */
    Forwarded forward(long dstCid, MemorySegment header, DescriptorChain chain, int len)
        throws VirtqueueException {
      Member to = members.get(dstCid);
      if (to == null) return Forwarded.NO_SUCH_GUEST;
      if (!sharesGroupWith(to)) return Forwarded.NO_COMMON_GROUP;
      return to.inbox.offer(cid, header, chain, len);
    }

    /**
     * Puts an RST for this guest's port {@code guestPort}, from {@code peerCid}:{@code peerPort},
     * into its own inbox: the answer to a packet that could not be forwarded.
     *
     * @return false when the inbox is full or closed (the RST is lost)
     */
    boolean resetFrom(long peerCid, int peerPort, int guestPort, int type) {
      return inbox.offerReset(peerCid, peerPort, cid, guestPort, type);
    }

    /**
     * Whether packets from other guests wait; on this guest's loop, the only one that takes them, a
     * yes holds until they are delivered.
     */
    boolean hasPackets() {
      return inbox.hasPackets();
    }

    /**
     * Writes the next waiting packet (one must wait: {@link #hasPackets}), or as much of its
     * payload as fits after the header, into {@code chain}, whose writable room is {@code room}: a
     * packet larger than the guest's rx buffer goes in pieces, each with the packet's header and
     * its own len, a SEQPACKET message's EOM and EOR on the last piece only (as Linux's vhost-vsock
     * splits them). On this guest's loop, the only one that delivers.
     *
     * @return false, and nothing written, when {@code room} holds no more than a header and payload
     *     is still to go (the buffer is unusable)
     */
    boolean deliver(DescriptorChain chain, long room) throws VirtqueueException {
      return inbox.deliver(chain, room);
    }
  }
}
