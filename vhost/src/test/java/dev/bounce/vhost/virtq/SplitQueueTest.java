package dev.bounce.vhost.virtq;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.IoVectors;
import dev.bounce.pool.PoolViolationException;
import dev.bounce.pool.UnmappedAddressException;
import dev.bounce.vhost.virtq.DriverRings.Buf;
import dev.bounce.vhost.virtq.VirtqueueException.Reason;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Configuration, attach, popping and the used ring of {@link SplitQueue}. */
class SplitQueueTest {
  static final long MIB = 1 << 20;
  static final long GUEST_BASE = 0x4000_0000L;

  @Test
  void maximumSizeMustBeAPowerOfTwoUpTo32768() {
    for (int bad : new int[] {0, -1, 3, 100, 65536}) {
      assertThrows(IllegalArgumentException.class, () -> new SplitQueue(0, bad));
    }
    new SplitQueue(0, 32768);
    new SplitQueue(0, 1);
  }

  @ParameterizedTest
  @ValueSource(ints = {0, -4, 3, 6, 100, 512, 1 << 16})
  void setSizeRefusesOtherSizesNamingTheValue(int bad) {
    SplitQueue queue = new SplitQueue(2, 256);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> queue.setSize(bad));
    assertTrue(e.getMessage().contains(Integer.toUnsignedString(bad)), e.getMessage());
    assertTrue(e.getMessage().contains("virtqueue 2"), e.getMessage());
  }

  @Test
  void setSizeTakesEveryPowerOfTwoUpToTheMaximum() {
    SplitQueue queue = new SplitQueue(0, 256);
    for (int size = 1; size <= 256; size <<= 1) {
      queue.setSize(size);
      assertEquals(size, queue.size());
    }
  }

  @Test
  void setBaseTakes16Bits() {
    SplitQueue queue = new SplitQueue(0, 256);
    queue.setBase(0xffff);
    assertEquals(0xffff, queue.lastAvailIndex());
    assertThrows(IllegalArgumentException.class, () -> queue.setBase(0x10000));
    assertThrows(IllegalArgumentException.class, () -> queue.setBase(-1));
  }

  @Test
  void popsChainsInOrderAndReturnsThemThroughTheUsedRing() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain chain = queue.newChain();
      assertFalse(queue.pop(chain));

      byte[] request = "hello, device".getBytes(StandardCharsets.US_ASCII);
      Buf reply = driver.writable(32);
      int first = driver.postChain(driver.readable(request), reply);
      int second = driver.postChain(driver.readable(new byte[] {7}));

      assertTrue(queue.pop(chain));
      assertEquals(first, chain.headIndex());
      byte[] got = new byte[64];
      assertEquals(request.length, chain.read(got, 0, got.length));
      assertEquals("hello, device", new String(got, 0, request.length, StandardCharsets.US_ASCII));
      byte[] answer = "ok".getBytes(StandardCharsets.US_ASCII);
      assertEquals(2, chain.write(answer, 0, answer.length));
      assertFalse(chain.next());
      queue.addUsed(chain);

      assertTrue(queue.pop(chain));
      assertEquals(second, chain.headIndex());
      assertTrue(chain.next());
      assertEquals(1, chain.length());
      assertEquals(7, chain.segment().get(java.lang.foreign.ValueLayout.JAVA_BYTE, chain.offset()));
      queue.addUsed(chain.headIndex(), 0);
      assertFalse(queue.pop(chain));

      assertEquals(0, driver.usedIndex(), "nothing visible before publish");
      queue.publish();
      assertEquals(2, driver.usedIndex());
      assertEquals(first, driver.usedId(0));
      assertEquals(2, driver.usedLen(0));
      assertEquals(second, driver.usedId(1));
      assertEquals(0, driver.usedLen(1));
      assertArrayEquals(answer, driver.bytes(reply.address(), 2));
      assertEquals(2, queue.lastAvailIndex());
      assertEquals(2, queue.nextUsedIndex());
    }
  }

  @Test
  void indicesWrapAt65536() throws Exception {
    try (DriverRings driver = DriverRings.shared(4, GUEST_BASE, MIB)) {
      driver.startAt(0xfffe);
      SplitQueue queue = driver.queue(0, 0);
      assertFalse(queue.resumedFromUsedRing());
      DescriptorChain chain = queue.newChain();
      for (int round = 0; round < 6; round++) {
        int head = driver.postChain(driver.writable(8));
        assertTrue(queue.pop(chain));
        assertEquals(head, chain.headIndex());
        queue.addUsed(chain.headIndex(), round);
        queue.publish();
        assertEquals((0xfffe + round + 1) & 0xffff, driver.usedIndex());
        assertEquals(round, driver.usedLen(0xfffe + round));
      }
      assertEquals(4, queue.lastAvailIndex());
    }
  }

  @Test
  void aDriverPublishingExactlyTheQueueSizeIsServed() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      int[] heads = new int[8];
      for (int k = 0; k < 8; k++) heads[k] = driver.chain(driver.writable(4));
      driver.post(heads);
      DescriptorChain chain = queue.newChain();
      for (int k = 0; k < 8; k++) {
        assertTrue(queue.pop(chain));
        assertEquals(heads[k], chain.headIndex());
      }
      assertFalse(queue.pop(chain));
    }
  }

  @Test
  void anAvailableIndexMoreThanTheSizeAheadIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(3, 0);
      DescriptorChain chain = queue.newChain();
      driver.chain(driver.writable(4));
      driver.setAvailIndex(9); // 9 entries in an 8-entry ring: DPDK's backend consumed these
      VirtqueueException e = assertThrows(VirtqueueException.class, () -> queue.pop(chain));
      assertEquals(Reason.AVAIL_INDEX_TOO_FAR, e.reason());
      assertEquals(3, e.queueIndex());
      assertTrue(e.getMessage().contains("virtqueue 3"), e.getMessage());
      assertTrue(queue.isBroken());
      assertFalse(queue.pop(chain));
      assertEquals(0, queue.lastAvailIndex());
    }
  }

  @Test
  void anAvailableIndexRacingAheadMidBatchIsCaughtAtTheNextRead() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain chain = queue.newChain();
      driver.postChain(driver.writable(4));
      assertTrue(queue.pop(chain));
      driver.setAvailIndex(1 + 9); // a decrement or a jump both look like a huge advance
      assertThrows(VirtqueueException.class, () -> queue.pop(chain));
      assertTrue(queue.isBroken());
      // a driver that decrements idx is refused the same way
      try (DriverRings other = DriverRings.shared(8, GUEST_BASE, MIB)) {
        SplitQueue q = other.queue(0, 0);
        other.postChain(other.writable(4));
        assertTrue(q.pop(q.newChain()));
        other.setAvailIndex(0);
        VirtqueueException e = assertThrows(VirtqueueException.class, () -> q.pop(q.newChain()));
        assertEquals(Reason.AVAIL_INDEX_TOO_FAR, e.reason());
      }
    }
  }

  @Test
  void hasAvailableLooksWithoutPopping() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain chain = queue.newChain();
      assertFalse(queue.hasAvailable());
      driver.postChain(driver.writable(4));
      driver.postChain(driver.writable(4));
      assertTrue(queue.hasAvailable());
      assertTrue(queue.hasAvailable(), "looking takes nothing");
      assertEquals(0, queue.lastAvailIndex());
      assertTrue(queue.pop(chain));
      assertTrue(queue.hasAvailable());
      assertTrue(queue.pop(chain));
      assertFalse(queue.hasAvailable());
      driver.setAvailIndex(2 + 9); // more than the size ahead: a guest error, as for pop
      VirtqueueException e = assertThrows(VirtqueueException.class, queue::hasAvailable);
      assertEquals(Reason.AVAIL_INDEX_TOO_FAR, e.reason());
      assertTrue(queue.isBroken());
      assertFalse(queue.hasAvailable(), "a broken queue has nothing");
      assertThrows(IllegalStateException.class, new SplitQueue(1, 8)::hasAvailable);
    }
  }

  @Test
  void limitPopsEndsABatchEarlyAndTheRestStaysAvailable() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain chain = queue.newChain();
      int[] heads = new int[5];
      for (int k = 0; k < 5; k++) heads[k] = driver.postChain(driver.writable(4));
      queue.limitPops(2);
      assertTrue(queue.pop(chain));
      assertEquals(heads[0], chain.headIndex());
      assertTrue(queue.pop(chain));
      assertFalse(queue.pop(chain), "the limit");
      assertTrue(queue.hasAvailable(), "the rest is still there");
      queue.limitPops(0);
      assertFalse(queue.pop(chain));
      queue.limitPops(10);
      for (int k = 2; k < 5; k++) {
        assertTrue(queue.pop(chain));
        assertEquals(heads[k], chain.headIndex());
      }
      assertFalse(queue.pop(chain), "the ring is empty");
      assertEquals(5, queue.lastAvailIndex());
      assertThrows(IllegalArgumentException.class, () -> queue.limitPops(-1));
      queue.limitPops(0);
      queue.reset(); // back to no limit
      queue.setSize(8);
      queue.setAddresses(driver.frontendAddresses());
      queue.attach(driver.memory());
      assertTrue(queue.pop(chain));
    }
  }

  @Test
  void aHeadIndexOutsideTheTableIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(1, 0);
      DescriptorChain chain = queue.newChain();
      driver.post(8);
      VirtqueueException e = assertThrows(VirtqueueException.class, () -> queue.pop(chain));
      assertEquals(Reason.HEAD_OUT_OF_RANGE, e.reason());
      assertTrue(e.getMessage().contains("descriptor 8"), e.getMessage());
      assertTrue(queue.isBroken());
      assertEquals(e, queue.error());
      assertFalse(queue.pop(chain));
    }
  }

  @Test
  void resetClearsABrokenQueue() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(1, 0);
      DescriptorChain chain = queue.newChain();
      driver.post(9);
      assertThrows(VirtqueueException.class, () -> queue.pop(chain));
      queue.reset();
      assertFalse(queue.isBroken());
      assertFalse(queue.isAttached());
      assertThrows(IllegalStateException.class, () -> queue.pop(chain));
      assertEquals(256, queue.size());
    }
  }

  @Test
  void aChainOfAnotherQueueIsRefused() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      SplitQueue other = new SplitQueue(1, 8);
      assertThrows(IllegalArgumentException.class, () -> queue.pop(other.newChain()));
    }
  }

  /**
   * REAL-PEERS.md: a reconnecting DPDK frontend sends SET_VRING_BASE 0 over a used ring at 22066.
   */
  @Test
  void aDpdkReconnectResumesFromTheUsedIndexInMemory() throws Exception {
    try (DriverRings driver = DriverRings.shared(256, GUEST_BASE, MIB)) {
      driver.startAt(22066);
      SplitQueue queue = new SplitQueue(1, 256);
      queue.setSize(256);
      queue.setFeatures(0);
      queue.setAddresses(driver.frontendAddresses());
      queue.setBase(0);
      assertTrue(queue.attach(driver.memory()));
      assertTrue(queue.resumedFromUsedRing());
      assertEquals(0, queue.requestedBase());
      assertEquals(22066, queue.lastAvailIndex());
      assertEquals(22066, queue.nextUsedIndex());

      DescriptorChain chain = queue.newChain();
      assertFalse(queue.pop(chain), "nothing new: the old entries are not consumed again");
      int head = driver.postChain(driver.writable(16));
      assertTrue(queue.pop(chain));
      assertEquals(head, chain.headIndex());
      queue.addUsed(chain.headIndex(), 5);
      queue.publish();
      assertEquals(22067, driver.usedIndex());
      assertEquals(head, driver.usedId(22066));
      assertEquals(5, driver.usedLen(22066));
      assertEquals(22067, queue.lastAvailIndex());

      // re-attaching the same configuration keeps the positions
      assertFalse(queue.attach(driver.memory()));
      assertEquals(22067, queue.lastAvailIndex());
    }
  }

  @Test
  void aBaseMatchingTheUsedIndexIsTakenAsGiven() throws Exception {
    try (DriverRings driver = DriverRings.shared(256, GUEST_BASE, MIB)) {
      driver.startAt(1234);
      SplitQueue queue = new SplitQueue(0, 256);
      queue.setAddresses(driver.frontendAddresses());
      queue.setBase(1234);
      assertFalse(queue.attach(driver.memory()));
      assertFalse(queue.resumedFromUsedRing());
      assertEquals(1234, queue.lastAvailIndex());
    }
  }

  @Test
  void ringsOutsideMemoryAreRefusedAtAttach() throws Exception {
    try (DriverRings driver = DriverRings.shared(256, GUEST_BASE, MIB)) {
      SplitQueue queue = new SplitQueue(4, 256);
      RingAddresses good = driver.frontendAddresses();
      long end = DriverRings.USER_BASE + GUEST_BASE + MIB;
      // the used ring (2054 bytes) straddles the end of memory
      queue.setAddresses(
          new RingAddresses(
              good.descriptorTable(),
              good.availableRing(),
              end - 2048,
              AddressKind.FRONTEND_VIRTUAL));
      VirtqueueException e =
          assertThrows(VirtqueueException.class, () -> queue.attach(driver.memory()));
      assertEquals(Reason.RING_OUTSIDE_MEMORY, e.reason());
      assertEquals(4, e.queueIndex());
      assertInstanceOf(UnmappedAddressException.class, e.accessFailure());
      assertEquals(end - 2048, e.address());
      assertEquals(Virtq.usedRingSize(256), e.length());
      assertEquals(AddressKind.FRONTEND_VIRTUAL, e.accessFailure().kind());
      assertTrue(e.getMessage().contains("used ring"), e.getMessage());
      assertFalse(queue.isAttached());
      assertTrue(queue.isBroken());

      // a guest-physical descriptor table address is not a frontend address
      SplitQueue q2 = new SplitQueue(0, 256);
      q2.setAddresses(
          new RingAddresses(
              driver.desc, good.availableRing(), good.usedRing(), AddressKind.FRONTEND_VIRTUAL));
      assertEquals(
          Reason.RING_OUTSIDE_MEMORY,
          assertThrows(VirtqueueException.class, () -> q2.attach(driver.memory())).reason());

      // but resolves as one
      SplitQueue q3 = new SplitQueue(0, 256);
      q3.setAddresses(driver.guestAddresses());
      q3.attach(driver.memory());
      assertTrue(q3.isAttached());
    }
  }

  @Test
  void ringsOutsideTheRestrictedPoolAreRefusedWithItsBounds() throws Exception {
    long poolStart = 2 * MIB;
    try (DriverRings driver = DriverRings.pooled(64, 4 * MIB, poolStart, MIB)) {
      SplitQueue queue = new SplitQueue(0, 64);
      queue.setSize(64);
      queue.setAddresses(
          new RingAddresses(driver.desc, driver.avail, 3 * MIB + 4096, AddressKind.GUEST_PHYSICAL));
      VirtqueueException e =
          assertThrows(VirtqueueException.class, () -> queue.attach(driver.memory()));
      assertEquals(Reason.RING_OUTSIDE_MEMORY, e.reason());
      PoolViolationException pool = e.poolViolation();
      assertNotNull(pool);
      assertEquals(poolStart, pool.poolStart());
      assertEquals(MIB, pool.poolSize());
      assertTrue(e.getMessage().contains("[0x200000, 0x300000)"), e.getMessage());
    }
  }

  @Test
  void misalignedRingsAreRefusedAtAttach() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      RingAddresses good = driver.frontendAddresses();
      RingAddresses[] bad = {
        new RingAddresses(
            good.descriptorTable() + 8,
            good.availableRing(),
            good.usedRing(),
            AddressKind.FRONTEND_VIRTUAL),
        new RingAddresses(
            good.descriptorTable(),
            good.availableRing() + 1,
            good.usedRing(),
            AddressKind.FRONTEND_VIRTUAL),
        new RingAddresses(
            good.descriptorTable(),
            good.availableRing(),
            good.usedRing() + 2,
            AddressKind.FRONTEND_VIRTUAL),
      };
      for (RingAddresses addresses : bad) {
        SplitQueue queue = new SplitQueue(0, 16);
        queue.setAddresses(addresses);
        VirtqueueException e =
            assertThrows(VirtqueueException.class, () -> queue.attach(driver.memory()));
        assertEquals(Reason.RING_MISALIGNED, e.reason());
        assertTrue(e.hasAddress());
        assertTrue(queue.isBroken());
      }
    }
  }

  @Test
  void attachWithoutAddressesIsAProgrammingError() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      assertThrows(
          IllegalStateException.class, () -> new SplitQueue(0, 16).attach(driver.memory()));
    }
  }

  @Test
  void reattachingANewMemorySnapshotKeepsWorking() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain chain = queue.newChain();
      for (int round = 0; round < 3; round++) {
        driver.postChain(driver.readable(new byte[] {(byte) round}));
        assertTrue(queue.pop(chain));
        assertTrue(chain.next());
        assertEquals(
            round, chain.segment().get(java.lang.foreign.ValueLayout.JAVA_BYTE, chain.offset()));
        queue.addUsed(chain.headIndex(), 0);
        queue.publish();

        // stopped between batches: a new memory table (the old mapping is unmapped)
        queue.detach();
        GuestAddressSpace next = driver.remap();
        assertFalse(queue.attach(next));
        assertEquals(round + 1, queue.lastAvailIndex());
        assertEquals(round + 1, driver.usedIndex());
      }
    }
  }

  @Test
  void setSizeDetaches() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      queue.setSize(4);
      assertFalse(queue.isAttached());
      assertThrows(IllegalStateException.class, () -> queue.pop(queue.newChain()));
    }
  }

  /**
   * The restricted-DMA metric: bytes of popped chains not yet returned, as far as they were walked;
   * a rewind walks again without counting twice; the peak stays.
   */
  @Test
  void bytesInFlightFollowPopsAndUsedElementsAndThePeakStays() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain a = queue.newChain();
      DescriptorChain b = queue.newChain();
      driver.postChain(driver.readable(new byte[100]), driver.writable(300));
      driver.postChain(driver.writable(1000));
      assertTrue(queue.pop(a));
      assertTrue(queue.pop(b));
      assertEquals(0, queue.bytesInFlight(), "nothing walked yet");
      while (a.next()) {}
      assertEquals(400, queue.bytesInFlight());
      a.rewind();
      while (a.next()) {}
      assertEquals(400, queue.bytesInFlight(), "walking again counts nothing twice");
      while (b.next()) {}
      assertEquals(1400, queue.bytesInFlight());
      queue.addUsed(a);
      assertEquals(1000, queue.bytesInFlight());
      queue.addUsed(b);
      assertEquals(0, queue.bytesInFlight());
      assertEquals(1400, queue.peakBytesInFlight());
      queue.reset();
      assertEquals(1400, queue.peakBytesInFlight(), "the peak outlives a reset");
    }
  }

  // ---- unpop: buffers popped and not filled go back ----

  @Test
  void anUnpoppedChainIsTheNextPop() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      int first = driver.postChain(driver.writable(16));
      int second = driver.postChain(driver.writable(16));
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      assertEquals(first, chain.headIndex());
      queue.unpop(chain);
      assertEquals(0, queue.lastAvailIndex(), "GET_VRING_BASE would hand it back too");
      assertTrue(queue.hasAvailable());
      assertTrue(queue.pop(chain));
      assertEquals(first, chain.headIndex());
      assertTrue(queue.pop(chain));
      assertEquals(second, chain.headIndex());
      assertFalse(queue.pop(chain));
    }
  }

  @Test
  void severalChainsGoBackLastPoppedFirstAndComeAgainInOrder() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      int[] heads = new int[4];
      for (int k = 0; k < 4; k++) heads[k] = driver.postChain(driver.writable(16));
      DescriptorChain[] chains = new DescriptorChain[4];
      for (int k = 0; k < 4; k++) {
        chains[k] = queue.newChain();
        assertTrue(queue.pop(chains[k]));
      }
      // The first one filled, the other three given back.
      queue.addUsed(chains[0].headIndex(), 0);
      for (int k = 3; k >= 1; k--) queue.unpop(chains[k]);
      assertEquals(1, queue.lastAvailIndex());
      DescriptorChain chain = queue.newChain();
      for (int k = 1; k < 4; k++) {
        assertTrue(queue.pop(chain));
        assertEquals(heads[k], chain.headIndex());
      }
      assertFalse(queue.pop(chain));
      queue.publish();
      assertEquals(1, driver.usedIndex(), "given back is not used");
    }
  }

  @Test
  void unpopGoesBackAcrossTheWrapOf16BitIndices() throws Exception {
    try (DriverRings driver = DriverRings.shared(4, GUEST_BASE, MIB)) {
      driver.startAt(0xffff);
      SplitQueue queue = driver.queue(0, 0);
      int head = driver.postChain(driver.writable(8));
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      assertEquals(0, queue.lastAvailIndex());
      queue.unpop(chain);
      assertEquals(0xffff, queue.lastAvailIndex());
      assertTrue(queue.pop(chain));
      assertEquals(head, chain.headIndex());
      assertFalse(queue.pop(chain));
    }
  }

  @Test
  void unpopGivesBackTheBytesInFlightTheChainHeld() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.postChain(driver.writable(300));
      driver.postChain(driver.writable(1000), driver.writable(24));
      DescriptorChain held = queue.newChain();
      DescriptorChain back = queue.newChain();
      assertTrue(queue.pop(held));
      while (held.next()) {}
      assertEquals(300, queue.bytesInFlight());
      assertTrue(queue.pop(back));
      assertEquals(1000, back.gatherWritable(new IoVectors(4), 1000));
      assertEquals(1300, queue.bytesInFlight());
      queue.unpop(back);
      assertEquals(300, queue.bytesInFlight(), "back to before the pop");
      // Popped and walked again, then used: counted once, and nothing is left over.
      assertTrue(queue.pop(back));
      while (back.next()) {}
      assertEquals(1324, queue.bytesInFlight());
      queue.addUsed(back.headIndex(), 0);
      queue.addUsed(held.headIndex(), 0);
      assertEquals(0, queue.bytesInFlight());
    }
  }

  @Test
  void unpopGivesBackTheLimitPopsBudget() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      int first = driver.postChain(driver.writable(16));
      int second = driver.postChain(driver.writable(16));
      queue.limitPops(2);
      DescriptorChain a = queue.newChain();
      DescriptorChain b = queue.newChain();
      assertTrue(queue.pop(a));
      assertTrue(queue.pop(b));
      assertFalse(queue.pop(queue.newChain()), "the budget is spent");
      queue.unpop(b);
      queue.unpop(a);
      assertTrue(queue.pop(a), "given back with the budget");
      assertEquals(first, a.headIndex());
      assertTrue(queue.pop(b));
      assertEquals(second, b.headIndex());
      assertFalse(queue.pop(queue.newChain()));
    }
  }

  @Test
  void aChainOfAnotherQueueCannotBeGivenBack() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(1, 0);
      driver.postChain(driver.writable(16));
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      SplitQueue other = new SplitQueue(2, 8);
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> other.unpop(chain));
      assertTrue(e.getMessage().contains("virtqueue 2"), e.getMessage());
      assertEquals(1, queue.lastAvailIndex(), "the right queue is untouched");
    }
  }
}
