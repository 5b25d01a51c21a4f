package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

class ResetQueueTest {
  /**
   * The patience of the tests below, which tell O(1) from a scan per operation: a scan makes them
   * billions of steps (minutes), O(1) a fraction of a second, so even a loaded machine stays far
   * from this.
   */
  private static final Duration QUADRATIC_WOULD_TAKE_LONGER = Duration.ofSeconds(60);

  @Test
  void keepsOrderAndEveryPortBitAcrossWrapAround() {
    ResetQueue queue = new ResetQueue(7);
    ArrayDeque<int[]> model = new ArrayDeque<>();
    Random random = new Random(7);
    for (int step = 0; step < 10_000; step++) {
      if (random.nextBoolean()) {
        // Ports are u32 on the wire: the high ones (negative as int) must come back unchanged.
        int[] r = {random.nextInt(), random.nextInt(), 1 + random.nextInt(2)};
        assertEquals(model.size() < 7, queue.add(r[0], r[1], r[2]));
        if (model.size() < 7) model.addLast(r);
      } else if (!model.isEmpty()) {
        int[] r = model.pollFirst();
        assertEquals(r[0], queue.firstGuestPort());
        assertEquals(r[1], queue.firstHostPort());
        assertEquals(r[2], queue.firstType());
        queue.removeFirst();
      }
      assertEquals(model.isEmpty(), queue.isEmpty());
      assertEquals(model.size() == 7, queue.isFull());
    }
  }

  @Test
  void removeDropsEveryRstOfAPairAndKeepsTheRestInOrderAcrossWrapAround() {
    ResetQueue queue = new ResetQueue(5);
    ArrayDeque<int[]> model = new ArrayDeque<>();
    Random random = new Random(11);
    for (int step = 0; step < 10_000; step++) {
      // Few distinct pairs, one with a high (negative as int) port, so that removals hit.
      int guestPort = random.nextInt(3) == 0 ? 0x8000_0001 : random.nextInt(2);
      int hostPort = random.nextInt(2);
      switch (random.nextInt(3)) {
        case 0 -> {
          // A pair that already waits keeps its one entry.
          if (queue.add(guestPort, hostPort, 1)
              && model.stream().noneMatch(r -> r[0] == guestPort && r[1] == hostPort)) {
            model.addLast(new int[] {guestPort, hostPort});
          }
        }
        case 1 -> {
          if (!model.isEmpty()) {
            queue.removeFirst();
            model.pollFirst();
          }
        }
        default -> {
          queue.remove(guestPort, hostPort);
          model.removeIf(r -> r[0] == guestPort && r[1] == hostPort);
        }
      }
      assertEquals(model.size(), queue.size());
      if (!model.isEmpty()) {
        assertEquals(model.peekFirst()[0], queue.firstGuestPort());
        assertEquals(model.peekFirst()[1], queue.firstHostPort());
      }
    }
  }

  @Test
  void refusesWhenFullAndEmptiesOnClear() {
    ResetQueue queue = new ResetQueue(2);
    assertTrue(queue.add(0xffff_ffff, 1, 1));
    assertTrue(queue.add(2, 0x8000_0000, 2));
    assertFalse(queue.add(3, 3, 1));
    queue.clear();
    assertTrue(queue.isEmpty());
    assertTrue(queue.add(4, 4, 1));
    assertEquals(4, queue.firstGuestPort());
  }

  @Test
  void aSecondAddOfAWaitingPairIsTheSameOneEntry() {
    ResetQueue queue = new ResetQueue(2);
    assertTrue(queue.add(1, 0x8000_0002, 1));
    assertTrue(queue.add(1, 0x8000_0002, 2), "the pair's RST waits");
    assertEquals(1, queue.size());
    assertTrue(queue.add(3, 4, 1));
    // Full, but a pair that waits still reports its RST waiting; a new pair is refused.
    assertTrue(queue.isFull());
    assertTrue(queue.add(3, 4, 2));
    assertTrue(queue.add(1, 0x8000_0002, 1));
    assertFalse(queue.add(5, 6, 1));
    assertEquals(2, queue.size());
    // The first RST keeps its place and its type.
    assertEquals(1, queue.firstGuestPort());
    assertEquals(0x8000_0002, queue.firstHostPort());
    assertEquals(1, queue.firstType());
    queue.removeFirst();
    assertEquals(3, queue.firstGuestPort());
    assertEquals(1, queue.firstType());
    queue.removeFirst();
    assertTrue(queue.isEmpty());
    // Once sent, the pair may wait again.
    assertTrue(queue.add(1, 0x8000_0002, 2));
    assertEquals(1, queue.size());
    assertEquals(2, queue.firstType());
  }

  /**
   * Removing a waiting pair from a full queue costs no scan: a guest holding the queue full makes
   * the device drop a pair on every REQUEST. With a scan per removal (O(n) each, here about 10^10
   * steps in all) this takes minutes; in O(1) milliseconds.
   */
  @Test
  void removalIsConstantTimeSkippedByFirstAndNotCounted() {
    int n = 1 << 17;
    ResetQueue queue = new ResetQueue(n);
    for (int i = 0; i < n; i++) assertTrue(queue.add(i, ~i, 1 + (i & 1)));
    assertTimeoutPreemptively(
        QUADRATIC_WOULD_TAKE_LONGER, // a complexity guard, not a speed measure: O(1) takes well
        // under 1 s
        () -> {
          // Every entry but each fourth, the head first: first* and removeFirst never see them.
          for (int i = 0; i < n; i++) {
            if (i % 4 != 3) queue.remove(i, ~i);
          }
          queue.remove(n + 1, 0); // not waiting: nothing changes
        });
    assertEquals(n / 4, queue.size());
    assertFalse(queue.isFull());
    for (int i = 3; i < n; i += 4) {
      assertFalse(queue.isEmpty());
      assertEquals(i, queue.firstGuestPort());
      assertEquals(~i, queue.firstHostPort());
      assertEquals(1 + (i & 1), queue.firstType());
      queue.removeFirst();
    }
    assertTrue(queue.isEmpty());
    assertEquals(0, queue.size());
  }

  /**
   * A full queue whose entries were removed takes new ones at once, and a queue kept full while one
   * pair in the middle goes and a new one comes stays O(1) per step: no compaction when full.
   */
  @Test
  void aFullQueueWhoseEntriesWereRemovedTakesNewOnesInConstantTime() {
    ResetQueue small = new ResetQueue(3);
    for (int i = 0; i < 3; i++) assertTrue(small.add(i, i, 1));
    for (int i = 0; i < 3; i++) small.remove(i, i);
    assertTrue(small.isEmpty());
    for (int i = 10; i < 13; i++) assertTrue(small.add(i, i, 2), "slot of a removed entry");
    assertFalse(small.add(13, 13, 1));
    for (int i = 10; i < 13; i++) {
      assertEquals(i, small.firstGuestPort());
      small.removeFirst();
    }

    int n = 1 << 17;
    ResetQueue queue = new ResetQueue(n);
    for (int i = 0; i < n; i++) assertTrue(queue.add(i, 0, 1));
    assertTimeoutPreemptively(
        QUADRATIC_WOULD_TAKE_LONGER, // a complexity guard, not a speed measure: O(1) takes well
        // under 1 s
        () -> {
          // Odd entries go, one at a time from the middle; each leaves room for exactly one.
          for (int i = 1; i < n; i += 2) {
            queue.remove(i, 0);
            assertTrue(queue.add(n + i, 0, 1));
            assertTrue(queue.isFull());
          }
        });
    for (int i = 0; i < n; i += 2) {
      assertEquals(i, queue.firstGuestPort());
      queue.removeFirst();
    }
    for (int i = 1; i < n; i += 2) {
      assertEquals(n + i, queue.firstGuestPort());
      queue.removeFirst();
    }
    assertTrue(queue.isEmpty());
  }

  /** add, remove, removeFirst and clear against a list: live entries stay in FIFO order. */
  @Test
  void interleavedOperationsKeepTheLiveEntriesInOrder() {
    int capacity = 8;
    ResetQueue queue = new ResetQueue(capacity);
    List<int[]> model = new ArrayList<>();
    Random random = new Random(2024);
    for (int step = 0; step < 200_000; step++) {
      // Few pairs, one with high ports, so that duplicates and removals hit.
      int guestPort = random.nextInt(4) == 0 ? 0xffff_fff0 + random.nextInt(2) : random.nextInt(4);
      int hostPort = random.nextInt(3) == 0 ? 0x8000_0000 : random.nextInt(3);
      int type = 1 + random.nextInt(2);
      int waits = -1;
      for (int i = 0; i < model.size(); i++) {
        if (model.get(i)[0] == guestPort && model.get(i)[1] == hostPort) waits = i;
      }
      int op = random.nextInt(100);
      if (op < 45) {
        boolean room = waits >= 0 || model.size() < capacity;
        assertEquals(room, queue.add(guestPort, hostPort, type));
        if (waits < 0 && room) model.add(new int[] {guestPort, hostPort, type});
      } else if (op < 75) {
        queue.remove(guestPort, hostPort);
        if (waits >= 0) model.remove(waits);
      } else if (op < 99) {
        if (!model.isEmpty()) {
          queue.removeFirst();
          model.remove(0);
        }
      } else {
        queue.clear();
        model.clear();
      }
      assertEquals(model.size(), queue.size());
      assertEquals(model.isEmpty(), queue.isEmpty());
      assertEquals(model.size() == capacity, queue.isFull());
      if (!model.isEmpty()) {
        assertEquals(model.get(0)[0], queue.firstGuestPort());
        assertEquals(model.get(0)[1], queue.firstHostPort());
        assertEquals(model.get(0)[2], queue.firstType());
      }
    }
  }
}
