package dev.bounce.vhost.virtq;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.invoke.VarHandle;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A driver thread and the device's thread on one queue at full speed, each sleeping whenever the
 * other side has suppressed nothing it needs: kicks and calls are semaphores standing in for the
 * eventfds. A lost notification shows as a side waiting out its timeout (REAL-PEERS.md: a guest
 * that hangs); a missing acquire/release as a buffer read before the driver wrote it.
 */
class ConcurrentDriverTest {
  static final long MIB = 1 << 20;
  static final long GUEST_BASE = 0x4000_0000L;
  static final int CHAINS = 300_000;
  static final int SIZE = 64;
  static final long TIMEOUT_SECONDS = 20;

  @ParameterizedTest(name = "EVENT_IDX {0}")
  @ValueSource(booleans = {true, false})
  void noNotificationIsLostAndEveryBufferIsSeenWhole(boolean eventIdx) throws Exception {
    try (DriverRings driver = DriverRings.shared(SIZE, GUEST_BASE, MIB);
        ExecutorService threads = Executors.newFixedThreadPool(2)) {
      SplitQueue queue = driver.queue(0, eventIdx ? 1L << Virtq.VIRTIO_F_EVENT_IDX : 0);
      long[] buffers = new long[SIZE];
      for (int i = 0; i < SIZE; i++) buffers[i] = driver.alloc(16);
      Semaphore kick = new Semaphore(0);
      Semaphore call = new Semaphore(0);
      AtomicLong kicks = new AtomicLong();
      AtomicLong calls = new AtomicLong();

      Future<Void> device =
          threads.submit(
              () -> {
                DescriptorChain chain = queue.newChain();
                long expected = 0;
                while (expected < CHAINS) {
                  queue.disableNotifications();
                  while (queue.pop(chain)) {
                    assertTrue(chain.next());
                    long seq = chain.segment().get(DriverRings.LE64, chain.offset());
                    long check = chain.segment().get(DriverRings.LE64, chain.offset() + 8);
                    assertEquals(expected, seq, "buffers arrive in order, fully written");
                    assertEquals(~expected, check);
                    assertFalse(chain.next());
                    queue.addUsed(chain.headIndex(), 0);
                    expected++;
                  }
                  queue.publish();
                  if (queue.needsNotification()) {
                    calls.incrementAndGet();
                    call.release();
                  }
                  if (expected < CHAINS && !queue.enableNotifications()) {
                    if (!kick.tryAcquire(TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                      throw new AssertionError("device: a kick was lost after " + expected);
                    }
                    kick.drainPermits();
                  }
                }
                return null;
              });

      Future<Void> guest =
          threads.submit(
              () -> {
                int seenUsed = 0;
                for (long seq = 0; seq < CHAINS; seq++) {
                  // reclaim: wait for room, re-enabling calls and re-checking before sleeping
                  while (((driver.availIndex() - seenUsed) & 0xffff) == SIZE) {
                    int used = driver.usedIndex();
                    if (used != seenUsed) {
                      seenUsed = used;
                      continue;
                    }
                    driver.setUsedEvent(seenUsed); // setUsedEvent and usedIndex fence fully
                    if (driver.usedIndex() != seenUsed) continue;
                    if (!call.tryAcquire(TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                      throw new AssertionError("driver: a call was lost at " + seq);
                    }
                    call.drainPermits();
                  }
                  int head = driver.availIndex() % SIZE;
                  long buffer = buffers[head];
                  driver.at(buffer, 16).set(DriverRings.LE64, 0, seq);
                  driver.at(buffer, 16).set(DriverRings.LE64, 8, ~seq);
                  driver.descriptor(head, buffer, 16, 0, 0);
                  int old = driver.availIndex();
                  driver.post(head); // release store of idx, then a full fence
                  boolean needKick =
                      eventIdx
                          ? Virtq.needEvent(driver.availEvent(), driver.availIndex(), old)
                          : (driver.usedFlags() & Virtq.VIRTQ_USED_F_NO_NOTIFY) == 0;
                  if (needKick) {
                    kicks.incrementAndGet();
                    kick.release();
                  }
                }
                VarHandle.fullFence();
                return null;
              });

      try {
        guest.get(2 * TIMEOUT_SECONDS, TimeUnit.SECONDS);
        device.get(2 * TIMEOUT_SECONDS, TimeUnit.SECONDS);
      } catch (ExecutionException e) {
        device.cancel(true);
        guest.cancel(true);
        throw e;
      }
      assertFalse(queue.isBroken());
      assertEquals(CHAINS & 0xffff, driver.usedIndex());
      assertTrue(kicks.get() < CHAINS, "kicks were suppressed some of the time: " + kicks);
      assertTrue(calls.get() > 0);
    }
  }
}
