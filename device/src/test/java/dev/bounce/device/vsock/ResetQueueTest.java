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
