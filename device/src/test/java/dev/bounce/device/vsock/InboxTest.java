package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * {@link Inbox}'s bounds and refusals, with header-only packets (which read nothing from a chain);
 * splitting into rx buffers and faults mid-copy are in {@link SiblingsTest}.
 */
class InboxTest {
  /** A packet's share of the inbox: the sender's CID, then its header. */
  private static final int RECORD = 8 + VsockHeader.SIZE;

  private static final long RECEIVER = 4;

  private final AtomicInteger wakes = new AtomicInteger();

  /** A header-only packet of its own. */
  private static MemorySegment packet(long from, int type, int op) {
    MemorySegment header = Arena.ofAuto().allocate(VsockHeader.SIZE);
    VsockHeader.write(header, 0, from, RECEIVER, 1024, 5000, 0, type, op, 0, 65536, 0);
    return header;
  }

  private static Siblings.Forwarded offer(Inbox inbox, long from, MemorySegment header)
      throws Exception {
    return inbox.offer(from, header, null, 0);
  }

  @Test
  void aClosedInboxTakesNothingAndAnOpenOneWakesItsGuestOnceWhenPacketsStartToWait()
      throws Exception {
    Inbox inbox = new Inbox(10 * RECORD, 4 * RECORD, RECORD);
    MemorySegment request = packet(3, VsockHeader.TYPE_STREAM, Op.REQUEST);
    assertEquals(Siblings.Forwarded.NOT_RUNNING, offer(inbox, 3, request));
    assertFalse(inbox.offerReset(3, 1024, RECEIVER, 5000, VsockHeader.TYPE_STREAM));
    inbox.open(wakes::incrementAndGet, true);
    assertEquals(Siblings.Forwarded.SENT, offer(inbox, 3, request));
    assertEquals(Siblings.Forwarded.SENT, offer(inbox, 3, request));
    assertEquals(1, wakes.get());
    assertTrue(inbox.hasPackets());
    inbox.close();
    assertFalse(inbox.hasPackets());
    assertEquals(Siblings.Forwarded.NOT_RUNNING, offer(inbox, 3, request));
  }

  @Test
  void seqpacketGoesOnlyToAGuestWhoseDriverNegotiatedIt() throws Exception {
    Inbox inbox = new Inbox(10 * RECORD, 4 * RECORD, RECORD);
    inbox.open(wakes::incrementAndGet, false);
    assertEquals(
        Siblings.Forwarded.NO_SEQPACKET,
        offer(inbox, 3, packet(3, VsockHeader.TYPE_SEQPACKET, Op.REQUEST)));
    assertFalse(inbox.hasPackets());
    assertEquals(
        Siblings.Forwarded.SENT, offer(inbox, 3, packet(3, VsockHeader.TYPE_STREAM, Op.REQUEST)));
  }

  @Test
  void aSenderPastItsShareIsRefusedAndItsConnectionResetHereWhileOthersStillGetIn()
      throws Exception {
    Inbox inbox = new Inbox(10 * RECORD, 4 * RECORD, RECORD);
    inbox.open(wakes::incrementAndGet, true);
    MemorySegment update = packet(3, VsockHeader.TYPE_STREAM, Op.CREDIT_UPDATE);
    for (int i = 0; i < 4; i++) assertEquals(Siblings.Forwarded.SENT, offer(inbox, 3, update));
    // The fifth is past sender 3's share: refused, and an RST for the receiver's end queued.
    assertEquals(Siblings.Forwarded.FULL, offer(inbox, 3, update));
    // Sender 5 has a share of its own.
    MemorySegment fromFive = packet(5, VsockHeader.TYPE_STREAM, Op.CREDIT_UPDATE);
    for (int i = 0; i < 4; i++) assertEquals(Siblings.Forwarded.SENT, offer(inbox, 5, fromFive));
    // 9 records in, 1 left: the reserve, for RSTs only. Sender 6's packet does not get it; the RST
    // of its connection does, and then nothing more fits.
    MemorySegment fromSix = packet(6, VsockHeader.TYPE_STREAM, Op.CREDIT_UPDATE);
    assertEquals(Siblings.Forwarded.FULL, offer(inbox, 6, fromSix));
    assertFalse(inbox.offerReset(6, 1024, RECEIVER, 5000, VsockHeader.TYPE_STREAM), "no room");
  }
}
