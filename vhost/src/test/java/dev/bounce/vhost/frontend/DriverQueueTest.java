package dev.bounce.vhost.frontend;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE64;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.GuestMemory;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.frontend.DriverQueue.BrokenRingException;
import dev.bounce.vhost.frontend.DriverQueue.Chain;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.RingAddresses;
import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.Virtq;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.management.ManagementFactory;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@link DriverQueue} against the device side, {@link SplitQueue}, on one real memfd: the driver
 * writes through its own mapping, the device reads through a {@link GuestAddressSpace} made from a
 * duplicate of the fd (as a backend maps what a VMM sends). Every chain shape, back-pressure, both
 * notification schemes each way, indices across 2^16, a device that breaks the ring, two threads at
 * full speed, and no allocation on the hot path.
 */
class DriverQueueTest {
  static final long MIB = 1 << 20;
  static final long GUEST_BASE = 0x4000_0000L;
  static final long USER_BASE = 0x7f55_0000_0000L;
  static final long EVENT_IDX = 1L << Virtq.VIRTIO_F_EVENT_IDX;
  static final long INDIRECT = 1L << Virtq.VIRTIO_F_INDIRECT_DESC;

  /** Rings at the start, an indirect area at 64 KiB, buffers from 1 MiB on. */
  static final long RINGS = GUEST_BASE;

  static final long INDIRECT_AREA = GUEST_BASE + 0x1_0000;
  static final long BUFFERS = GUEST_BASE + MIB;

  private final List<AutoCloseable> resources = new ArrayList<>();

  private Memfd memfd;
  private Mapping view;
  private GuestAddressSpace deviceMemory;

  @AfterEach
  void release() throws Exception {
    for (AutoCloseable r : resources.reversed()) r.close();
  }

  /** 4 MiB of guest memory at GUEST_BASE: the driver's mapping and the device's view of it. */
  private MemorySegment memory() throws NativeException {
    if (view == null) {
      memfd = track(Memfd.create("driver-queue-test", 4 * MIB));
      view = track(memfd.map(0, 4 * MIB));
      deviceMemory =
          track(
              GuestMemory.empty()
                  .withRegion(
                      new MemoryRegionDescription(GUEST_BASE, 4 * MIB, USER_BASE, 0),
                      Fd.adopt(Libc.fcntl(memfd.fd().value(), 1030, 0))));
    }
    return view.segment();
  }

  private <T extends AutoCloseable> T track(T resource) {
    resources.add(resource);
    return resource;
  }

  private DriverQueue driver(int size, long features) throws NativeException {
    return DriverQueue.builder(memory(), GUEST_BASE, USER_BASE)
        .index(1)
        .size(size)
        .features(features)
        .ringsAt(RINGS)
        .indirectTables(INDIRECT_AREA, 8)
        .build();
  }

  /** The device's queue on the driver's rings, at SET_VRING_ADDR's frontend addresses. */
  private SplitQueue device(DriverQueue driver, long features) throws VirtqueueException {
    SplitQueue queue = new SplitQueue(driver.index(), Math.max(driver.size(), 256));
    queue.setSize(driver.size());
    queue.setFeatures(features);
    queue.setAddresses(driver.userAddresses());
    queue.setBase(driver.availIndex());
    queue.attach(deviceMemory);
    return queue;
  }

  private long buffer(int n) {
    return BUFFERS + 4096L * n;
  }

  private MemorySegment at(long guestAddress, long length) {
    return view.segment().asSlice(guestAddress - GUEST_BASE, length);
  }

  private static int usedIdx(MemorySegment used) {
    return Short.toUnsignedInt(used.get(LE16, 2));
  }

  // ---- layout ----

  @Test
  void ringsAtLaysThePartsOutAlignedAndAddressesThemBothWays() throws Exception {
    DriverQueue q = driver(256, 0);
    RingAddresses guest = q.guestAddresses();
    assertEquals(RINGS, guest.descriptorTable());
    assertEquals(RINGS + 16 * 256, guest.availableRing());
    assertEquals(0, guest.usedRing() % 64, "the used ring starts a cache line");
    assertTrue(guest.usedRing() >= guest.availableRing() + 6 + 2 * 256);
    assertEquals(RINGS + DriverQueue.ringBytes(256), guest.usedRing() + 6 + 8 * 256);
    assertEquals(AddressKind.GUEST_PHYSICAL, guest.kind());
    RingAddresses user = q.userAddresses();
    assertEquals(USER_BASE + (guest.usedRing() - GUEST_BASE), user.usedRing());
    VringAddress message = q.vringAddress();
    assertEquals(1, message.index());
    assertEquals(user.descriptorTable(), message.descriptor());
    assertEquals(user.availableRing(), message.available());
    assertEquals(user.usedRing(), message.used());
    assertEquals(256, q.freeDescriptors());
    assertEquals(0, q.inFlight());
  }

  @Test
  void theBuilderRefusesMisalignedOutsideAndOverlappingParts() throws Exception {
    MemorySegment m = memory();
    var base = DriverQueue.builder(m, GUEST_BASE, USER_BASE).size(16);
    assertThrows(IllegalStateException.class, base::build); // no addresses
    long d = GUEST_BASE;
    long a = GUEST_BASE + 0x1000;
    long u = GUEST_BASE + 0x2000;
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> base.rings(d + 8, a, u).build());
    assertTrue(e.getMessage().contains("16-byte aligned"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> base.rings(d, a + 1, u).build());
    assertThrows(IllegalArgumentException.class, () -> base.rings(d, a, u + 2).build());
    e =
        assertThrows(
            IllegalArgumentException.class, () -> base.rings(GUEST_BASE - 4096, a, u).build());
    assertTrue(e.getMessage().contains("not inside the memory"), e.getMessage());
    assertThrows(
        IllegalArgumentException.class,
        () -> base.rings(d, a, GUEST_BASE + 4 * MIB - 8).build()); // runs off the end
    e = assertThrows(IllegalArgumentException.class, () -> base.rings(d, d + 64, u).build());
    assertTrue(e.getMessage().contains("overlaps"), e.getMessage());
    assertThrows(
        IllegalArgumentException.class,
        () -> base.rings(d, a, u).indirectTables(a, 4).build()); // indirect area over avail
    assertThrows(IllegalArgumentException.class, () -> base.size(3));
    assertThrows(IllegalArgumentException.class, () -> base.size(65536));
    assertThrows(IllegalArgumentException.class, () -> base.indirectTables(u, 0));
    base.rings(d, a, u).indirectTables(GUEST_BASE + 0x3000, 4).build();
  }

  // ---- chains through the device ----

  @Test
  void directChainsReachTheDeviceAsGivenAndComeBackThroughTheUsedRing() throws Exception {
    DriverQueue driver = driver(8, 0);
    SplitQueue device = device(driver, 0);
    DescriptorChain chain = device.newChain();

    int single = driver.add(buffer(0), 100, false);
    int pair = driver.add(buffer(1), 10, buffer(2), 20, false);
    Chain three = new Chain(4).readable(buffer(3), 1).readable(buffer(4), 2).writable(buffer(5), 3);
    int triple = driver.add(three, false);
    assertEquals(8 - 6, driver.freeDescriptors());
    assertEquals(3, driver.inFlight());
    assertFalse(device.pop(chain), "nothing is visible before publish");
    driver.publish();

    long[][] expected = {
      {buffer(0), 100, 0},
      {buffer(1), 10, 0, buffer(2), 20, 1},
      {buffer(3), 1, 0, buffer(4), 2, 0, buffer(5), 3, 1}
    };
    int[] heads = {single, pair, triple};
    for (int c = 0; c < 3; c++) {
      assertTrue(device.pop(chain));
      assertEquals(heads[c], chain.headIndex());
      for (int k = 0; k < expected[c].length; k += 3) {
        assertTrue(chain.next());
        assertEquals(expected[c][k], chain.address());
        assertEquals(expected[c][k + 1], chain.length());
        assertEquals(expected[c][k + 2] == 1, chain.isWritable());
        assertFalse(chain.isIndirect());
      }
      assertFalse(chain.next());
    }
    assertFalse(device.pop(chain));
    // complete out of order: the used ring decides, not the avail ring
    device.addUsed(triple, 3);
    device.addUsed(single, 0);
    device.addUsed(pair, 17);
    device.publish();

    long[] got = new long[3];
    for (int k = 0; k < 3; k++) got[k] = driver.pollUsed();
    assertEquals(DriverQueue.NO_USED, driver.pollUsed());
    assertEquals(triple, DriverQueue.usedHead(got[0]));
    assertEquals(3, DriverQueue.usedLength(got[0]));
    assertEquals(single, DriverQueue.usedHead(got[1]));
    assertEquals(0, DriverQueue.usedLength(got[1]));
    assertEquals(pair, DriverQueue.usedHead(got[2]));
    assertEquals(17, DriverQueue.usedLength(got[2]));
    assertEquals(8, driver.freeDescriptors());
    assertEquals(0, driver.inFlight());
    assertEquals(3, driver.lastUsedIndex());
  }

  @Test
  void noIndirectTableIsLongerThanTheQueue() throws Exception {
    // Section 2.7.5.3.1: a driver MUST NOT create a chain longer than the Queue Size, indirect or
    // not; the device refuses such a table (DescriptorChain).
    DriverQueue driver = driver(2, INDIRECT);
    Chain three = new Chain(8);
    for (int b = 0; b < 3; b++) three.readable(buffer(b), 1);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> driver.add(three, true));
    assertTrue(e.getMessage().contains("cannot fit"), e.getMessage());
    Chain two = new Chain(8).readable(buffer(0), 1).readable(buffer(1), 1);
    assertTrue(driver.add(two, true) >= 0);
    assertEquals(1, driver.freeDescriptors(), "as an indirect table: one descriptor");
  }

  @Test
  void indirectTablesTakeOneDescriptorWhenNegotiatedAndAskedFor() throws Exception {
    DriverQueue driver = driver(4, INDIRECT);
    assertTrue(driver.indirectDescriptors());
    SplitQueue device = device(driver, INDIRECT);
    DescriptorChain chain = device.newChain();
    // 4 buffers each (a table no longer than the queue, virtio 1.2 2.7.5.3.1), 4 slots
    Chain four =
        new Chain(8)
            .readable(buffer(0), 11)
            .readable(buffer(1), 12)
            .readable(buffer(2), 13)
            .writable(buffer(3), 14);
    int[] heads = new int[4];
    for (int k = 0; k < 4; k++) heads[k] = driver.add(four, true);
    assertEquals(0, driver.freeDescriptors());
    assertEquals(DriverQueue.NO_SPACE, driver.add(four, true));
    assertEquals(DriverQueue.NO_SPACE, driver.add(buffer(9), 1, false));
    driver.publish();
    for (int k = 0; k < 4; k++) {
      assertTrue(device.pop(chain));
      assertEquals(heads[k], chain.headIndex());
      for (int b = 0; b < 4; b++) {
        assertTrue(chain.next());
        assertTrue(chain.isIndirect());
        assertEquals(b, chain.index());
        assertEquals(buffer(b), chain.address());
        assertEquals(11 + b, chain.length());
        assertEquals(b >= 3, chain.isWritable());
      }
      assertFalse(chain.next());
      device.addUsed(chain.headIndex(), 14);
    }
    device.publish();
    assertEquals(4, driver.harvest((head, len) -> assertEquals(14, len)));
    assertEquals(4, driver.freeDescriptors());

    // a chain over the slot's 8 entries, or a request without asking, goes direct
    Chain nine = new Chain(9);
    for (int b = 0; b < 3; b++) nine.readable(buffer(b), 1);
    int direct = driver.add(nine, false);
    driver.publish();
    assertTrue(device.pop(chain));
    assertEquals(direct, chain.headIndex());
    assertTrue(chain.next());
    assertFalse(chain.isIndirect());
    assertEquals(1, driver.freeDescriptors());
    // the two-buffer form makes an indirect table too
    DriverQueue pairs = driver(4, INDIRECT);
    SplitQueue pairDevice = device(pairs, INDIRECT);
    int head = pairs.add(buffer(0), 8, buffer(1), 16, true);
    assertEquals(3, pairs.freeDescriptors());
    pairs.publish();
    DescriptorChain c = pairDevice.newChain();
    assertTrue(pairDevice.pop(c));
    assertEquals(head, c.headIndex());
    assertTrue(c.next());
    assertTrue(c.isIndirect());
    assertFalse(c.isWritable());
    assertTrue(c.next());
    assertTrue(c.isWritable());
    assertEquals(16, c.length());
    assertFalse(c.next());
  }

  @Test
  void withoutIndirectNegotiatedAChainAskingForItGoesDirect() throws Exception {
    DriverQueue driver = driver(8, 0);
    assertFalse(driver.indirectDescriptors());
    SplitQueue device = device(driver, 0);
    int head = driver.add(buffer(0), 8, buffer(1), 8, true);
    assertEquals(6, driver.freeDescriptors());
    driver.publish();
    DescriptorChain chain = device.newChain();
    assertTrue(device.pop(chain));
    assertEquals(head, chain.headIndex());
    assertTrue(chain.next());
    assertFalse(chain.isIndirect());
    assertTrue(chain.next());
    assertFalse(chain.next());
  }

  @Test
  void backPressureWhenFullAndRoomAgainAfterHarvest() throws Exception {
    DriverQueue driver = driver(8, 0);
    SplitQueue device = device(driver, 0);
    Chain three = new Chain(3).readable(buffer(0), 1).readable(buffer(1), 1).writable(buffer(2), 1);
    assertNotEquals(DriverQueue.NO_SPACE, driver.add(three, false));
    assertNotEquals(DriverQueue.NO_SPACE, driver.add(three, false));
    assertEquals(2, driver.freeDescriptors());
    assertEquals(DriverQueue.NO_SPACE, driver.add(three, false), "3 descriptors, 2 free");
    assertNotEquals(DriverQueue.NO_SPACE, driver.add(buffer(3), 1, buffer(4), 1, false));
    assertEquals(DriverQueue.NO_SPACE, driver.add(buffer(5), 1, true));
    driver.publish();
    DescriptorChain chain = device.newChain();
    assertTrue(device.pop(chain));
    device.addUsed(chain.headIndex(), 1);
    device.publish();
    assertEquals(1, driver.harvest((h, l) -> {}));
    assertEquals(3, driver.freeDescriptors());
    assertNotEquals(DriverQueue.NO_SPACE, driver.add(three, false));
    // never fits, so not back-pressure: an error
    Chain nine = new Chain(9);
    for (int k = 0; k < 9; k++) nine.writable(buffer(k), 1);
    assertThrows(IllegalArgumentException.class, () -> driver.add(nine, false));
    assertThrows(IllegalArgumentException.class, () -> driver.add(new Chain(1), false));
    assertThrows(IllegalArgumentException.class, () -> driver.add(buffer(0), -1, false));
    assertThrows(IllegalArgumentException.class, () -> driver.add(buffer(0), 1L << 32, false));
    assertThrows(
        IllegalStateException.class,
        () -> new Chain(2).writable(buffer(0), 1).readable(buffer(1), 1));
    assertThrows(IllegalStateException.class, () -> new Chain(1).writable(0, 1).writable(0, 1));
  }

  @Test
  void theFreeListSurvivesRandomChainsCompletedOutOfOrderAcrossTheIndexWrap() throws Exception {
    SplittableRandom random = new SplittableRandom(5);
    DriverQueue driver = driver(16, INDIRECT);
    SplitQueue device = device(driver, INDIRECT);
    DescriptorChain chain = device.newChain();
    Chain staging = new Chain(16);
    ArrayDeque<int[]> popped = new ArrayDeque<>();
    long[] expectedLen = new long[16];
    long completed = 0;
    long added = 0;
    while (completed < 70_000) {
      // add random chains until back-pressure
      while (true) {
        staging.clear();
        int n = 1 + random.nextInt(random.nextInt(10) == 0 ? 16 : 4);
        int readable = random.nextInt(n + 1);
        long writable = 0;
        for (int k = 0; k < n; k++) {
          int len = random.nextInt(64);
          if (k < readable) {
            staging.readable(buffer(k), len);
          } else {
            staging.writable(buffer(k), len);
            writable += len;
          }
        }
        int head = driver.add(staging, random.nextBoolean());
        if (head == DriverQueue.NO_SPACE) break;
        expectedLen[head] = writable;
        added++;
      }
      driver.publish();
      // the device pops everything and completes a random part, in random order
      while (device.pop(chain)) {
        int count = 0;
        while (chain.next()) count++;
        popped.add(new int[] {chain.headIndex(), count});
      }
      int complete = random.nextInt(popped.size() + 1);
      List<int[]> done = new ArrayList<>();
      for (int k = 0; k < complete; k++) done.add(popped.poll());
      java.util.Collections.shuffle(done, new java.util.Random(random.nextLong()));
      for (int[] d : done) device.addUsed(d[0], (int) expectedLen[d[0]]);
      device.publish();
      int before = driver.inFlight();
      int harvested =
          driver.harvest(
              (head, len) -> assertEquals(expectedLen[head], Integer.toUnsignedLong(len)));
      assertEquals(complete, harvested);
      assertEquals(before - complete, driver.inFlight());
      completed += harvested;
    }
    assertEquals(added - completed, driver.inFlight());
    assertEquals(added & 0xffff, driver.availIndex());
    assertEquals(completed & 0xffff, driver.lastUsedIndex());
    assertFalse(device.isBroken());
  }

  @Test
  void dataWrittenByTheDriverIsWhatTheDeviceReadsAndTheReverse() throws Exception {
    DriverQueue driver = driver(8, INDIRECT);
    SplitQueue device = device(driver, INDIRECT);
    byte[] request = "ping through the ring".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    MemorySegment.copy(
        request, 0, at(buffer(0), request.length), ValueLayout.JAVA_BYTE, 0, request.length);
    driver.add(buffer(0), request.length, buffer(1), 64, true);
    driver.publish();
    DescriptorChain chain = device.newChain();
    assertTrue(device.pop(chain));
    byte[] got = new byte[64];
    int n = chain.read(got, 0, got.length);
    assertEquals(request.length, n);
    byte[] reversed = new byte[n];
    for (int k = 0; k < n; k++) reversed[k] = got[n - 1 - k];
    chain.write(reversed, 0, n);
    device.addUsed(chain);
    device.publish();
    long e = driver.pollUsed();
    assertEquals(n, DriverQueue.usedLength(e));
    assertArrayEquals(reversed, at(buffer(1), n).toArray(ValueLayout.JAVA_BYTE));
  }

  // ---- notifications ----

  @Test
  void withoutEventIdxTheDriverKicksUnlessTheDeviceSetNoNotify() throws Exception {
    DriverQueue driver = driver(8, 0);
    SplitQueue device = device(driver, 0);
    assertFalse(driver.prepareKick(), "nothing added: nothing to kick for");
    driver.add(buffer(0), 1, true);
    assertTrue(driver.prepareKick());
    assertFalse(driver.prepareKick(), "already decided");
    device.disableNotifications();
    driver.add(buffer(0), 1, true);
    assertFalse(driver.prepareKick(), "VIRTQ_USED_F_NO_NOTIFY");
    assertTrue(device.enableNotifications(), "the device sees the two entries on re-check");
    driver.add(buffer(0), 1, true);
    assertTrue(driver.prepareKick());
    DescriptorChain chain = device.newChain();
    int popped = 0;
    while (device.pop(chain)) popped++;
    assertEquals(3, popped, "prepareKick published every entry");
  }

  @Test
  void withEventIdxTheDriverKicksWhenAvailIdxPassesAvailEvent() throws Exception {
    DriverQueue driver = driver(16, EVENT_IDX);
    SplitQueue device = device(driver, EVENT_IDX);
    DescriptorChain chain = device.newChain();
    // avail_event is 0 after reset: the first entry (idx 0 -> 1) passes it
    driver.add(buffer(0), 1, true);
    assertTrue(driver.prepareKick());
    // the device has not moved avail_event: more entries need no kick
    driver.add(buffer(0), 1, true);
    driver.add(buffer(0), 1, true);
    assertFalse(driver.prepareKick());
    device.disableNotifications(); // nothing to do with EVENT_IDX
    while (device.pop(chain)) device.addUsed(chain.headIndex(), 1);
    assertFalse(device.enableNotifications(), "avail_event = 3, nothing new");
    driver.add(buffer(0), 1, true);
    driver.add(buffer(0), 1, true);
    assertTrue(driver.prepareKick(), "idx 3 -> 5 passed avail_event 3");
    // the device flags are ignored with EVENT_IDX
    assertTrue(device.enableNotifications());
    while (device.pop(chain)) device.addUsed(chain.headIndex(), 1);
    device.enableNotifications(); // avail_event = 5
    driver.add(buffer(0), 1, true);
    assertTrue(driver.prepareKick());
  }

  @Test
  void withoutEventIdxUsedNotificationsFollowTheNoInterruptFlag() throws Exception {
    DriverQueue driver = driver(8, 0);
    SplitQueue device = device(driver, 0);
    DescriptorChain chain = device.newChain();
    driver.disableUsedNotifications();
    driver.add(buffer(0), 1, true);
    driver.publish();
    assertTrue(device.pop(chain));
    device.addUsed(chain.headIndex(), 1);
    device.publish();
    assertFalse(device.needsNotification(), "VIRTQ_AVAIL_F_NO_INTERRUPT");
    assertTrue(driver.enableUsedNotifications(), "the re-check sees the used element");
    assertEquals(1, driver.harvest((h, l) -> {}));
    assertFalse(driver.enableUsedNotifications(), "nothing pending: safe to wait");
    driver.add(buffer(0), 1, true);
    driver.publish();
    assertTrue(device.pop(chain));
    device.addUsed(chain.headIndex(), 1);
    device.publish();
    assertTrue(device.needsNotification());
  }

  @Test
  void withEventIdxUsedEventFollowsWhatWasHarvested() throws Exception {
    DriverQueue driver = driver(16, EVENT_IDX);
    SplitQueue device = device(driver, EVENT_IDX);
    DescriptorChain chain = device.newChain();
    MemorySegment avail = at(driver.guestAddresses().availableRing(), 6 + 2 * 16);
    for (int k = 0; k < 6; k++) driver.add(buffer(0), 1, true);
    driver.publish();
    for (int k = 0; k < 2; k++) {
      assertTrue(device.pop(chain));
      device.addUsed(chain.headIndex(), 1);
    }
    device.publish();
    assertTrue(device.needsNotification(), "the first decision after attach notifies");
    assertEquals(2, driver.harvest((h, l) -> {}));
    assertEquals(2, Short.toUnsignedInt(avail.get(LE16, 4 + 2 * 16)), "used_event = last used");
    // one more used: used idx 2 -> 3 passes used_event 2
    assertTrue(device.pop(chain));
    device.addUsed(chain.headIndex(), 1);
    device.publish();
    assertTrue(device.needsNotification());
    // not harvested: used_event still 2, so 3 -> 4 does not pass it
    assertTrue(device.pop(chain));
    device.addUsed(chain.headIndex(), 1);
    device.publish();
    assertFalse(device.needsNotification());
    // disabled: no notification; re-enabling finds the two pending
    driver.disableUsedNotifications();
    assertEquals(2, driver.harvest((h, l) -> {}));
    assertTrue(device.pop(chain));
    device.addUsed(chain.headIndex(), 1);
    device.publish();
    assertFalse(device.needsNotification());
    assertTrue(driver.enableUsedNotifications());
    assertEquals(1, driver.harvest((h, l) -> {}));
    assertFalse(driver.enableUsedNotifications());
    assertEquals(5, Short.toUnsignedInt(avail.get(LE16, 4 + 2 * 16)));
    assertTrue(device.pop(chain));
    device.addUsed(chain.headIndex(), 1);
    device.publish();
    assertTrue(device.needsNotification(), "5 -> 6 passes used_event 5");
  }

  @Test
  void delayedUsedNotificationsWaitForThreeQuartersOfWhatIsInFlight() throws Exception {
    DriverQueue driver = driver(16, EVENT_IDX);
    SplitQueue device = device(driver, EVENT_IDX);
    DescriptorChain chain = device.newChain();
    for (int k = 0; k < 16; k++) driver.add(buffer(0), 1, true);
    driver.publish();
    assertFalse(driver.enableUsedNotificationsDelayed()); // used_event = 0 + 12
    List<Integer> notifiedAt = new ArrayList<>();
    for (int k = 1; k <= 16; k++) {
      assertTrue(device.pop(chain));
      device.addUsed(chain.headIndex(), 1);
      device.publish();
      if (device.needsNotification()) notifiedAt.add(k);
    }
    // The device's first decision after attach notifies whatever used_event says; then when the
    // used idx passed 12.
    assertEquals(List.of(1, 13), notifiedAt);
    assertTrue(driver.enableUsedNotificationsDelayed(), "all 16 used: more than 12 pending");
  }

  // ---- a device that breaks the ring ----

  @Test
  void aUsedIdThatIsNotAHeadInFlightBreaksTheQueue() throws Exception {
    DriverQueue driver = driver(8, 0);
    SplitQueue device = device(driver, 0);
    driver.add(buffer(0), 1, buffer(1), 4, false); // head 0, descriptor 1 is its tail
    driver.publish();
    device.addUsed(1, 0); // not a head
    device.publish();
    BrokenRingException e = assertThrows(BrokenRingException.class, driver::pollUsed);
    assertTrue(e.getMessage().contains("not the head of a chain in flight"), e.getMessage());
    assertTrue(e.getMessage().contains("virtqueue 1"), e.getMessage());
    assertTrue(driver.isBroken());
    assertSame(e, driver.error());
    assertThrows(BrokenRingException.class, () -> driver.add(buffer(0), 1, true));
    assertThrows(BrokenRingException.class, () -> driver.harvest((h, l) -> {}));
    driver.reset();
    assertFalse(driver.isBroken());
    assertEquals(8, driver.freeDescriptors());
    assertEquals(0, usedIdx(at(driver.guestAddresses().usedRing(), 4)), "reset zeroes the rings");
  }

  @Test
  void anIdOutOfRangeALengthOverTheWritablePartAndAUsedIndexRunningAheadBreakIt() throws Exception {
    DriverQueue a = driver(8, 0);
    MemorySegment used = at(a.guestAddresses().usedRing(), 6 + 8 * 8);
    a.add(buffer(0), 1, true);
    a.publish();
    used.set(ValueLayout.JAVA_INT_UNALIGNED, 4, 9); // id 9 in a table of 8
    used.set(LE16, 2, (short) 1);
    assertTrue(
        assertThrows(BrokenRingException.class, a::pollUsed).getMessage().contains("names id 9"));

    a.reset();
    a.add(buffer(0), 1, buffer(1), 4, false);
    used.set(ValueLayout.JAVA_INT_UNALIGNED, 4, 0);
    used.set(ValueLayout.JAVA_INT_UNALIGNED, 8, 5); // 5 bytes into 4 writable ones
    used.set(LE16, 2, (short) 1);
    assertTrue(
        assertThrows(BrokenRingException.class, () -> a.harvest((h, l) -> {}))
            .getMessage()
            .contains("4 writable bytes"));

    a.reset();
    a.add(buffer(0), 1, true);
    used.set(LE16, 2, (short) 2); // two used, one in flight
    assertTrue(
        assertThrows(BrokenRingException.class, a::hasUsed)
            .getMessage()
            .contains("only 1 chains in flight"));
  }

  // ---- two threads ----

  /**
   * A driver thread with DriverQueue and a device thread with SplitQueue at full speed, each
   * sleeping whenever it has nothing to do; kicks and calls are semaphores standing in for
   * eventfds. A lost notification shows as a side waiting out its timeout; a missing
   * acquire/release as a buffer seen before it was written.
   */
  @ParameterizedTest(name = "EVENT_IDX {0}")
  @ValueSource(booleans = {true, false})
  void noNotificationIsLostEitherWay(boolean eventIdx) throws Exception {
    final int chains = 400_000;
    final long timeoutSeconds = 20;
    long features = eventIdx ? EVENT_IDX : 0;
    DriverQueue driver = driver(64, features);
    SplitQueue device = device(driver, features);
    MemorySegment m = memory();
    Semaphore kick = new Semaphore(0);
    Semaphore call = new Semaphore(0);
    AtomicLong kicks = new AtomicLong();
    AtomicLong calls = new AtomicLong();
    try (ExecutorService threads = Executors.newFixedThreadPool(2)) {
      Future<Void> deviceThread =
          threads.submit(
              () -> {
                DescriptorChain chain = device.newChain();
                long expected = 0;
                while (expected < chains) {
                  device.disableNotifications();
                  while (device.pop(chain)) {
                    assertTrue(chain.next());
                    long seq = chain.segment().get(LE64, chain.offset());
                    assertEquals(expected, seq, "buffers arrive in order, fully written");
                    chain.segment().set(LE64, chain.offset() + 8, ~seq);
                    device.addUsed(chain.headIndex(), 16);
                    expected++;
                  }
                  device.publish();
                  if (device.needsNotification()) {
                    calls.incrementAndGet();
                    call.release();
                  }
                  if (expected < chains && !device.enableNotifications()) {
                    if (!kick.tryAcquire(timeoutSeconds, TimeUnit.SECONDS)) {
                      throw new AssertionError("device: a kick was lost after " + expected);
                    }
                    kick.drainPermits();
                  }
                }
                return null;
              });
      Future<Void> driverThread =
          threads.submit(
              () -> {
                long[] seqOf = new long[64];
                long[] slotOf = new long[64];
                long[] harvested = {0};
                DriverQueue.UsedConsumer check =
                    (head, len) -> {
                      long at = slotOf[head] - GUEST_BASE;
                      assertEquals(seqOf[head], m.get(LE64, at));
                      assertEquals(~seqOf[head], m.get(LE64, at + 8), "written back");
                      assertEquals(16, len);
                      harvested[0]++;
                    };
                long seq = 0;
                while (harvested[0] < chains) {
                  while (seq < chains && driver.freeDescriptors() > 0) {
                    // The device completes in order and at most 64 are in flight, so the chain
                    // that had this slot 64 sequence numbers ago is done.
                    long slot = BUFFERS + 64L * (seq % 64);
                    m.set(LE64, slot - GUEST_BASE, seq);
                    m.set(LE64, slot - GUEST_BASE + 8, 0);
                    int head = driver.add(slot, 16, true);
                    seqOf[head] = seq++;
                    slotOf[head] = slot;
                  }
                  if (driver.prepareKick()) {
                    kicks.incrementAndGet();
                    kick.release();
                  }
                  if (driver.harvest(check) > 0) continue;
                  if (harvested[0] < chains && !driver.enableUsedNotifications()) {
                    if (!call.tryAcquire(timeoutSeconds, TimeUnit.SECONDS)) {
                      throw new AssertionError("driver: a call was lost at " + harvested[0]);
                    }
                    call.drainPermits();
                  }
                }
                return null;
              });
      try {
        driverThread.get(3 * timeoutSeconds, TimeUnit.SECONDS);
        deviceThread.get(3 * timeoutSeconds, TimeUnit.SECONDS);
      } catch (ExecutionException e) {
        deviceThread.cancel(true);
        driverThread.cancel(true);
        throw e;
      }
    }
    assertFalse(device.isBroken());
    assertFalse(driver.isBroken());
    assertEquals(0, driver.inFlight());
    assertEquals(chains & 0xffff, driver.lastUsedIndex());
    assertTrue(kicks.get() < chains, "kicks were suppressed some of the time: " + kicks);
    assertTrue(calls.get() < chains, "calls were suppressed some of the time: " + calls);
  }

  // ---- allocation ----

  @Test
  void theHotPathAllocatesNothing() throws Exception {
    DriverQueue driver = driver(256, EVENT_IDX | INDIRECT);
    SplitQueue device = device(driver, EVENT_IDX | INDIRECT);
    DescriptorChain chain = device.newChain();
    Chain staging = new Chain(4);
    long[] sum = {0};
    DriverQueue.UsedConsumer consumer = (head, len) -> sum[0] += len;
    Runnable round =
        () -> {
          try {
            for (int k = 0; k < 40; k++) { // at most 5 descriptors each: 200 of 256
              driver.add(buffer(0), 8, true);
              driver.add(buffer(1), 8, buffer(2), 8, k % 2 == 0);
              staging.clear().readable(buffer(3), 1).writable(buffer(4), 4);
              driver.add(staging, k % 3 == 0);
            }
            driver.prepareKick();
            driver.disableUsedNotifications();
            while (device.pop(chain)) device.addUsed(chain.headIndex(), 1);
            device.publish();
            device.needsNotification();
            driver.harvest(consumer);
            driver.enableUsedNotifications();
            driver.enableUsedNotificationsDelayed();
            long e;
            while ((e = driver.pollUsed()) != DriverQueue.NO_USED) sum[0] += e;
          } catch (VirtqueueException e) {
            throw new AssertionError(e);
          }
        };
    for (int i = 0; i < 20_000; i++) round.run(); // warm up and compile
    var threads = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
    long id = Thread.currentThread().threadId();
    long before = threads.getThreadAllocatedBytes(id);
    for (int i = 0; i < 20_000; i++) round.run();
    long allocated = threads.getThreadAllocatedBytes(id) - before;
    assertTrue(sum[0] > 0);
    // 20,000 rounds of 120 chains: a single allocation per chain would be over 30 MB
    assertTrue(allocated < 64 * 1024, "allocated " + allocated + " bytes");
  }
}
