package dev.bounce.vhost.virtq;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Notification suppression both ways: sections 2.7.7 and 2.7.10, with and without EVENT_IDX. */
class NotificationTest {
  static final long MIB = 1 << 20;
  static final long GUEST_BASE = 0x4000_0000L;
  static final long EVENT_IDX = 1L << Virtq.VIRTIO_F_EVENT_IDX;
  static final long NOTIFY_ON_EMPTY = 1L << Virtq.VIRTIO_F_NOTIFY_ON_EMPTY;

  /**
   * Section 2.7.7.2 in words: notify when the used index, moving from old to new, passed the entry
   * used_event, i.e. used_event lies in [old, new) modulo 2^16.
   */
  private static boolean passed(int usedEvent, int newIdx, int oldIdx) {
    return ((usedEvent - oldIdx) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
  }

  @Test
  void needEventIsVringNeedEvent() {
    SplittableRandom random = new SplittableRandom(7);
    int[] edges = {0, 1, 2, 0x7fff, 0x8000, 0xfffe, 0xffff};
    for (int e : edges) {
      for (int n : edges) {
        for (int o : edges)
          assertEquals(passed(e, n, o), Virtq.needEvent(e, n, o), e + " " + n + " " + o);
      }
    }
    for (int i = 0; i < 200_000; i++) {
      int o = random.nextInt(0x10000);
      int n = (o + random.nextInt(300)) & 0xffff;
      int e = (o + random.nextInt(-50, 350)) & 0xffff;
      assertEquals(passed(e, n, o), Virtq.needEvent(e, n, o), e + " " + n + " " + o);
    }
  }

  @Test
  void eventIdxDecisionsFollowUsedEventAcrossTheWrap() throws Exception {
    SplittableRandom random = new SplittableRandom(42);
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      driver.startAt(0xffd0);
      SplitQueue queue = driver.queue(0, EVENT_IDX);
      DescriptorChain chain = queue.newChain();
      int old = 0xffd0;
      boolean first = true;
      int notified = 0;
      for (int batch = 0; batch < 200; batch++) {
        int count = 1 + random.nextInt(16);
        int[] heads = new int[count];
        for (int k = 0; k < count; k++) heads[k] = driver.chain(driver.writable(1));
        driver.post(heads);
        for (int k = 0; k < count; k++) {
          assertTrue(queue.pop(chain));
          queue.addUsed(chain.headIndex(), 1);
        }
        int usedEvent = (old + random.nextInt(-4, 24)) & 0xffff;
        driver.setUsedEvent(usedEvent);
        queue.publish();
        int now = driver.usedIndex();
        assertEquals((old + count) & 0xffff, now);
        boolean expected = first || passed(usedEvent, now, old);
        assertEquals(expected, queue.needsNotification(), "batch " + batch);
        if (expected) notified++;
        assertFalse(queue.needsNotification(), "nothing new since the last decision");
        first = false;
        old = now;
      }
      assertTrue(notified > 10 && notified < 190, "both decisions happen: " + notified);
    }
  }

  /**
   * A backend that published entry 101 and died before signalling, the driver asleep with
   * used_event 100: its successor's first notification decision cannot trust the index it attached
   * at, so it notifies, even when a round that published nothing came first (the data loop serves a
   * ring as soon as it starts).
   */
  @Test
  void withEventIdxTheFirstPublishAfterAttachNotifiesEvenAfterAnEmptyRound() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      driver.startAt(101);
      driver.setUsedEvent(100);
      SplitQueue queue = driver.queue(0, EVENT_IDX);
      assertFalse(queue.needsNotification(), "nothing published yet");
      driver.post(driver.chain(driver.writable(1)));
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      queue.addUsed(chain.headIndex(), 1);
      queue.publish();
      assertEquals(102, driver.usedIndex());
      assertTrue(queue.needsNotification(), "the driver never heard of entry 101");
    }
  }

  @Test
  void withEventIdxTheNoInterruptFlagIsIgnored() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, EVENT_IDX);
      DescriptorChain chain = queue.newChain();
      driver.setAvailFlags(Virtq.VIRTQ_AVAIL_F_NO_INTERRUPT);
      for (int round = 0; round < 3; round++) {
        driver.postChain(driver.writable(1));
        assertTrue(queue.pop(chain));
        queue.addUsed(chain.headIndex(), 0);
        driver.setUsedEvent(round); // the entry just used
        queue.publish();
        assertTrue(queue.needsNotification(), "round " + round);
      }
    }
  }

  @Test
  void withoutEventIdxTheNoInterruptFlagDecides() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain chain = queue.newChain();
      driver.setUsedEvent(1000); // ignored without EVENT_IDX
      for (int flags : new int[] {0, Virtq.VIRTQ_AVAIL_F_NO_INTERRUPT, 0}) {
        driver.setAvailFlags(flags);
        driver.postChain(driver.writable(1));
        assertTrue(queue.pop(chain));
        queue.addUsed(chain.headIndex(), 0);
        queue.publish();
        assertEquals(flags == 0, queue.needsNotification());
        assertFalse(queue.needsNotification(), "nothing published since");
      }
      driver.setAvailFlags(0);
      queue.publish();
      assertFalse(queue.needsNotification(), "an empty batch needs no notification");
    }
  }

  @Test
  void notifyOnEmptyOverridesSuppressionWhenTheRingRunsDry() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, NOTIFY_ON_EMPTY);
      DescriptorChain chain = queue.newChain();
      driver.setAvailFlags(Virtq.VIRTQ_AVAIL_F_NO_INTERRUPT);
      driver.postChain(driver.writable(1));
      driver.postChain(driver.writable(1));
      assertTrue(queue.pop(chain));
      queue.addUsed(chain.headIndex(), 0);
      queue.publish();
      assertFalse(queue.needsNotification(), "one entry still available");
      assertTrue(queue.pop(chain));
      queue.addUsed(chain.headIndex(), 0);
      queue.publish();
      assertTrue(queue.needsNotification(), "the ring ran dry");
    }
  }

  @Test
  void withEventIdxEnableWritesAvailEventAndRechecks() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      driver.startAt(0xfffe);
      SplitQueue queue = driver.queue(0, EVENT_IDX);
      DescriptorChain chain = queue.newChain();
      queue.disableNotifications();
      assertEquals(0, driver.usedFlags(), "with EVENT_IDX the device keeps flags 0");

      driver.postChain(driver.writable(1));
      driver.postChain(driver.writable(1));
      while (queue.pop(chain)) queue.addUsed(chain.headIndex(), 0);
      queue.publish();
      assertEquals(0, queue.lastAvailIndex());

      // idle: avail_event = last_avail, and nothing new
      assertFalse(queue.enableNotifications());
      assertEquals(0, driver.availEvent());
      // the driver's next post passes avail_event: it kicks (vring_need_event on its side)
      int before = driver.availIndex();
      driver.postChain(driver.writable(1));
      assertTrue(Virtq.needEvent(driver.availEvent(), driver.availIndex(), before));

      // work that arrives between draining and enabling is seen by the re-check, not lost
      assertTrue(queue.enableNotifications());
      assertTrue(queue.pop(chain));
      assertFalse(queue.pop(chain));
      assertFalse(queue.enableNotifications());
      assertEquals(1, driver.availEvent());
      assertEquals(0, driver.usedFlags());
    }
  }

  @Test
  void withoutEventIdxTheNoNotifyFlagIsSetAndCleared() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      DescriptorChain chain = queue.newChain();
      queue.disableNotifications();
      assertEquals(Virtq.VIRTQ_USED_F_NO_NOTIFY, driver.usedFlags());
      driver.postChain(driver.writable(1));
      assertTrue(queue.enableNotifications(), "posted while notifications were off");
      assertEquals(0, driver.usedFlags());
      assertTrue(queue.pop(chain));
      assertFalse(queue.enableNotifications());
      assertEquals(0, driver.availEvent(), "avail_event untouched without EVENT_IDX");
    }
  }

  @Test
  void aBrokenQueueHasNoMoreWork() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.post(99); // a head past the 16 descriptors: popping it breaks the queue
      assertThrows(VirtqueueException.class, () -> queue.pop(queue.newChain()));
      assertTrue(queue.isBroken());
      assertFalse(queue.enableNotifications());
    }
  }
}
