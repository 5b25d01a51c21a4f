package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayDeque;
import java.util.Random;
import org.junit.jupiter.api.Test;

class ResetQueueTest {
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
          if (queue.add(guestPort, hostPort, 1)) model.addLast(new int[] {guestPort, hostPort});
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
}
