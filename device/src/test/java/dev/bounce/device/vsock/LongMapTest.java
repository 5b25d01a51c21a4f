package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

class LongMapTest {
  @Test
  void behavesLikeAHashMapUnderRandomPutsAndRemoves() {
    LongMap<String> map = new LongMap<>();
    Map<Long, String> model = new HashMap<>();
    Random random = new Random(42);
    // Few distinct keys, many operations: long probe runs, wrap-around and backward shifts.
    long[] pool = new long[300];
    for (int i = 0; i < pool.length; i++) {
      pool[i] = i % 3 == 0 ? random.nextLong() : VsockConnection.key(1 << 30, 49152 + i);
    }
    for (int step = 0; step < 200_000; step++) {
      long key = pool[random.nextInt(pool.length)];
      switch (random.nextInt(3)) {
        case 0 -> assertEquals(model.put(key, "v" + step), map.put(key, "v" + step));
        case 1 -> assertEquals(model.remove(key), map.remove(key));
        default -> assertEquals(model.get(key), map.get(key));
      }
      assertEquals(model.size(), map.size());
    }
    for (long key : pool) assertEquals(model.get(key), map.get(key), "key " + key);
    assertEquals(new HashSet<>(model.values()), new HashSet<>(map.values()));
  }

  @Test
  void growsPastManyEntriesAndClears() {
    LongMap<Long> map = new LongMap<>();
    for (long k = 0; k < 10_000; k++) map.put(k << 32 | 7, k);
    assertEquals(10_000, map.size());
    for (long k = 0; k < 10_000; k++) assertEquals(k, map.get(k << 32 | 7));
    assertNull(map.get(10_000L << 32 | 7));
    map.clear();
    assertEquals(0, map.size());
    assertNull(map.get(7));
    assertThrows(IllegalArgumentException.class, () -> map.put(1, null));
  }
}
