package dev.bounce.device.vsock;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE64;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.frontend.Stats;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Guests of one process reaching each other ({@link Siblings}): each guest a device served by the
 * real engine on event loops of its own, with a fake frontend and driver, as {@code bounce vsock}
 * serves several {@code --vm}s.
 */
class SiblingsTest {
  private static final Duration TIMEOUT = Duration.ofSeconds(20);
  private static final int PORT = 6000;
  private static final int ECHO_PORT = 7000;

  @TempDir Path dir;
  private final Siblings siblings = new Siblings();
  private final List<VsockRig> rigs = new ArrayList<>();

  @AfterEach
  void tearDown() {
    rigs.forEach(VsockRig::close);
  }

  /** A guest in the default group. */
  private VsockRig guest(long cid) throws Exception {
    return guest(cid, Siblings.DEFAULT_GROUP);
  }

  private VsockRig guest(long cid, String... groups) throws Exception {
    LoopbackHost host = new LoopbackHost().echo(ECHO_PORT);
    VsockRig rig =
        new VsockRig(
            dir,
            256,
            VsockDriver.LINUX_BUFFER_SIZE,
            64,
            loop -> host,
            VsockRig.Memory.SHARED,
            siblings.join(cid, Set.of(groups)));
    rigs.add(rig);
    return rig;
  }

  /** Pumps every guest's driver until {@code done}, failing after {@link #TIMEOUT}. */
  private void pumpUntil(VsockDriver.Condition done, String what) throws IOException {
    VsockDriver.pumpUntil(rigs.stream().map(r -> r.driver).toList(), done, TIMEOUT, what);
  }

  /** {@code from} connects to {@code to}'s listener on {@link #PORT}: both ends. */
  private VsockDriver.Socket[] connect(VsockRig from, VsockRig to, int type) throws IOException {
    to.driver.listen(PORT);
    VsockDriver.Socket client = from.driver.startConnect(to.device.guestCid(), PORT, type);
    VsockDriver.Socket[] server = new VsockDriver.Socket[1];
    pumpUntil(
        () ->
            (server[0] = server[0] != null ? server[0] : to.driver.accepted(PORT)) != null
                && !client.isConnecting(),
        "connected");
    assertTrue(client.isOpen(), "the connection was refused");
    return new VsockDriver.Socket[] {client, server[0]};
  }

  private static byte[] random(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  @Test
  void guestsSharingAGroupStreamToEachOtherBothWaysAtOnce() throws Exception {
    VsockRig a = guest(3);
    VsockRig b = guest(4, Siblings.DEFAULT_GROUP, "more");
    VsockDriver.Socket[] ends = connect(a, b, VsockHeader.TYPE_STREAM);
    assertEquals(3, ends[1].peerCid());
    assertEquals(ends[0].localPort(), ends[1].peerPort());
    // 64 KiB packets (Linux's largest) go into 3776-byte rx buffers in pieces; credit runs end
    // to end between the guests.
    byte[] toB = random(1 << 20, 1);
    byte[] toA = random(1 << 20, 2);
    ByteArrayOutputStream atA = new ByteArrayOutputStream();
    ByteArrayOutputStream atB = new ByteArrayOutputStream();
    int[] sent = new int[2];
    byte[] chunk = new byte[64 * 1024];
    pumpUntil(
        () -> {
          sent[0] += ends[0].trySend(toB, sent[0], Math.min(65536, toB.length - sent[0]), false);
          sent[1] += ends[1].trySend(toA, sent[1], Math.min(65536, toA.length - sent[1]), false);
          atB.write(chunk, 0, ends[1].read(chunk, 0, chunk.length));
          atA.write(chunk, 0, ends[0].read(chunk, 0, chunk.length));
          return atA.size() == toA.length && atB.size() == toB.length;
        },
        "1 MiB went each way");
    assertArrayEquals(toB, atB.toByteArray());
    assertArrayEquals(toA, atA.toByteArray());
    for (VsockRig r : rigs) {
      assertEquals(0, r.driver.badPackets(), r.driver.firstProblem());
      assertEquals(0, r.driver.creditViolations());
      assertEquals(0, r.device.guestErrors());
    }
    // The connection ends as between host and guest: the RST reaches the other guest.
    ends[0].reset();
    pumpUntil(ends[1]::wasReset, "b saw a's RST");
  }

  @Test
  void theWorkloadStreamsToASiblingWithChecksumsAndSaysWhenItCannot() throws Exception {
    VsockRig a = guest(3);
    VsockRig b = guest(4);
    VsockRig c = guest(5, "elsewhere");
    try (VsockWorkload w = new VsockWorkload(a.driver, dir.resolve("vm3.vsock"))) {
      Stats s = w.toSibling(b.driver, 65536, 2 << 20, TIMEOUT);
      assertEquals(0, s.errors(), s.firstError());
      assertEquals(2 << 20, s.bytes());
      Stats refused = w.toSibling(c.driver, 4096, 1 << 20, Duration.ofSeconds(2));
      assertEquals(1, refused.errors());
      assertTrue(refused.firstError().contains("did not accept"), refused.firstError());
    }
  }

  @Test
  void seqpacketMessagesLargerThanAnRxBufferKeepTheirBoundaries() throws Exception {
    VsockRig a = guest(3);
    VsockRig b = guest(4);
    VsockDriver.Socket[] ends = connect(a, b, VsockHeader.TYPE_SEQPACKET);
    for (int size : new int[] {1, 3776 - VsockHeader.SIZE, 3776, 50_000, 65536, 1}) {
      byte[] message = random(size, size);
      int[] sent = {0};
      byte[][] got = new byte[1][];
      pumpUntil(
          () -> {
            if (sent[0] < size) {
              sent[0] += ends[0].trySend(message, sent[0], size - sent[0], true);
            }
            if (ends[1].available() >= size) got[0] = ends[1].readMessage(TIMEOUT);
            return got[0] != null;
          },
          "a " + size + "-byte message arrived");
      assertArrayEquals(message, got[0], size + "-byte message");
    }
    assertEquals(0, b.driver.badPackets(), b.driver.firstProblem());
  }

  @Test
  void guestsWithNoGroupInCommonAreResetAndNeverSeeTheRequest() throws Exception {
    VsockRig a = guest(3, "red");
    VsockRig c = guest(5, "blue");
    c.driver.listen(PORT);
    VsockDriver.Socket s = a.driver.startConnect(5, PORT, VsockHeader.TYPE_STREAM);
    pumpUntil(s::wasReset, "a's connect was reset");
    assertNull(c.driver.accepted(PORT));
    assertEquals(0, c.driver.socketCount());
    // The RST came from CID 5: the driver keys sockets by peer CID, and one from elsewhere would
    // have been a stray.
    assertEquals(0, a.driver.resetsForNoSocket());
  }

  @Test
  void aCidNoGuestHasIsResetFromThatCid() throws Exception {
    VsockRig a = guest(3);
    VsockDriver.Socket s = a.driver.startConnect(99, PORT, VsockHeader.TYPE_STREAM);
    pumpUntil(s::wasReset, "the connect to CID 99 was reset");
    assertEquals(0, a.driver.resetsForNoSocket()); // it reached the socket: from CID 99
    assertEquals(0, a.device.guestErrors());
  }

  @Test
  void aSenderOfMoreThanItsShareIsResetAtBothEndsAndOtherSendersStillGetThrough() throws Exception {
    VsockRig a = guest(3);
    VsockRig b = guest(4);
    VsockRig c = guest(5);
    VsockDriver.Socket[] ab = connect(a, b, VsockHeader.TYPE_STREAM);
    VsockDriver.Socket[] cb = connect(c, b, VsockHeader.TYPE_STREAM);
    b.driver.postRxBuffers(false);
    // b takes nothing more than the rx buffers it has posted; a floods its connection with 64 KiB
    // packets past b's credit (raw packets on its ports), so only its share of b's inbox stops it.
    int packet = VsockDevice.MAX_PACKET_PAYLOAD;
    byte[] payload = random(packet, 3);
    long inRing = 256L * (VsockDriver.RX_BUFFER_SIZE - VsockHeader.SIZE) / packet + 1;
    long inInbox = Siblings.SENDER_BYTES / (8 + VsockHeader.SIZE + packet);
    long sent = 0;
    while (!ab[0].wasReset()) {
      assertTrue(sent <= inRing + inInbox + 8, "sent " + sent + " packets and no RST");
      a.driver.sendRaw(
          4, ab[0].localPort(), PORT, packet, VsockHeader.TYPE_STREAM, Op.RW, 0, payload);
      sent++;
      VsockRig.awaitTxTaken(a.driver, TIMEOUT);
      a.driver.pump(1);
    }
    assertTrue(sent > inInbox, "reset after only " + sent + " packets");
    // c's packets have a share of their own: they wait in b's inbox, not reset.
    byte[] fromC = random(10_000, 6);
    assertEquals(fromC.length, cb[0].trySend(fromC, 0, fromC.length, false));
    VsockRig.awaitTxTaken(c.driver, TIMEOUT);
    c.driver.pump(10);
    assertTrue(cb[0].isOpen());
    // b takes its packets again: its end of a's connection was reset too, and c's bytes arrive.
    b.driver.postRxBuffers(true);
    ByteArrayOutputStream atB = new ByteArrayOutputStream();
    byte[] chunk = new byte[4096];
    pumpUntil(
        () -> {
          atB.write(chunk, 0, cb[1].read(chunk, 0, chunk.length));
          return ab[1].wasReset() && atB.size() == fromC.length;
        },
        "b's end of a's connection was reset and c's bytes arrived");
    assertArrayEquals(fromC, atB.toByteArray());
    // a is still served: its host connections work.
    VsockDriver.Socket t = a.driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    byte[] data = random(30_000, 4);
    assertArrayEquals(data, VsockRig.echo(a.driver, t, data, TIMEOUT));
  }

  @Test
  void aPacketShorterThanItsLenResetsItsConnectionAtBothEnds() throws Exception {
    VsockRig a = guest(3);
    VsockRig b = guest(4);
    VsockDriver.Socket[] ab = connect(a, b, VsockHeader.TYPE_STREAM);
    // len says 100, the chain holds 10 bytes of payload.
    a.driver.sendRaw(
        4, ab[0].localPort(), PORT, 100, VsockHeader.TYPE_STREAM, Op.RW, 0, new byte[10]);
    pumpUntil(() -> ab[0].wasReset() && ab[1].wasReset(), "both ends were reset");
    assertEquals(1, a.device.guestErrors());
    assertResetWithNothingOfThePacket(b, ab[1]);
  }

  /** The receiver's end of a packet that could not go was reset, and got none of it. */
  private static void assertResetWithNothingOfThePacket(VsockRig receiver, VsockDriver.Socket end) {
    assertTrue(end.wasReset(), "the receiver's end was not reset");
    assertEquals(0, end.available(), "the receiver got some of the packet");
    assertEquals(0, receiver.driver.badPackets(), receiver.driver.firstProblem());
  }

  /**
   * A sender's payload faults halfway through bounce's copy into the receiver's inbox (its VMM cut
   * the memory under it): the sender's tx ring stops, and nothing of the packet stays in the inbox,
   * whose next packet (another guest's REQUEST) reaches the receiver whole.
   */
  @Test
  void aPacketWhoseCopyFaultsHalfwayLeavesNothingOfItInTheInbox() throws Exception {
    VsockRig a = guest(3);
    VsockRig b = guest(4);
    VsockDriver.Socket[] ab = connect(a, b, VsockHeader.TYPE_STREAM);
    VsockRig.awaitTxTaken(a.driver, TIMEOUT);
    int base = a.stopRing(VsockDriver.TX_QUEUE);
    byte[] payload = random(VsockDevice.MAX_PACKET_PAYLOAD, 7);
    assertEquals(payload.length, ab[0].trySend(payload, 0, payload.length, false));
    // The packet's header descriptor, then its payload's: cut the memory mid-payload.
    MemorySegment header =
        a.descriptor(VsockDriver.TX_QUEUE, a.availableHead(VsockDriver.TX_QUEUE, 0));
    MemorySegment data = a.descriptor(VsockDriver.TX_QUEUE, header.get(LE16, 14));
    long headerAt = header.get(LE64, 0);
    long cut = (data.get(LE64, 0) + payload.length / 2 + 4095) & ~4095L;
    assertTrue(headerAt + VsockHeader.SIZE <= cut, "the header lies above the payload");
    a.truncateRamAt(cut);
    a.startRing(VsockDriver.TX_QUEUE, base);
    a.awaitRingError(VsockDriver.TX_QUEUE, TIMEOUT);
    a.truncateRamAt(VsockRig.RAM_START + VsockRig.RAM_SIZE);
    VsockRig c = guest(5); // its REQUEST is the next packet b gets
    VsockDriver.Socket[] cb = connect(c, b, VsockHeader.TYPE_STREAM);
    byte[] bytes = random(5000, 8);
    assertEquals(bytes.length, cb[0].trySend(bytes, 0, bytes.length, false));
    pumpUntil(() -> cb[1].available() == bytes.length, "c's bytes reached b");
    assertArrayEquals(bytes, cb[1].readFully(bytes.length, TIMEOUT));
    assertResetWithNothingOfThePacket(b, ab[1]);
  }

  @Test
  void aGuestWhoseDriverWentAwayIsNoLongerReached() throws Exception {
    VsockRig a = guest(3);
    VsockRig b = guest(4);
    VsockDriver.Socket[] ends = connect(a, b, VsockHeader.TYPE_STREAM);
    rigs.remove(b);
    b.close(); // the VMM of guest 4 is gone: its device is reset
    byte[] data = random(100, 5);
    pumpUntil(
        () -> {
          if (!ends[0].wasReset()) ends[0].trySend(data, 0, data.length, false);
          return ends[0].wasReset();
        },
        "a's connection to the gone guest was reset");
    assertEquals(0, a.device.guestErrors());
  }

  @Test
  void aCidIsOneGuestsAndAGuestHasAGroup() {
    siblings.join(3, Set.of("a"));
    assertThrows(IllegalArgumentException.class, () -> siblings.join(3, Set.of("b")));
    assertThrows(IllegalArgumentException.class, () -> siblings.join(4, Set.of()));
  }
}
