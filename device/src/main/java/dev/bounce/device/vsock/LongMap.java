package dev.bounce.device.vsock;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A map from {@code long} keys to objects without boxing: open addressing with linear probing and
 * backward-shift deletion (no tombstones, so lookups stay short however many connections came and
 * went). A lookup allocates nothing; the table grows at half full and never shrinks. For the
 * connection tables keyed by a port pair, looked up on every packet. Not thread-safe.
 */
final class LongMap<V> {
  private static final int MIN_CAPACITY = 16;

  private long[] keys;
  private Object[] values; // null: a free slot
  private int mask;
  private int shift;
  private int size;

  LongMap() {
    allocate(MIN_CAPACITY);
  }

  int size() {
    return size;
  }

  /** The value for {@code key}, or null. */
  @SuppressWarnings("unchecked")
  V get(long key) {
    for (int i = slot(key); ; i = (i + 1) & mask) {
      Object v = values[i];
      if (v == null) return null;
      if (keys[i] == key) return (V) v;
    }
  }

  boolean containsKey(long key) {
    return get(key) != null;
  }

  /**
   * Maps {@code key} to {@code value} (not null).
   *
   * @return the value it replaced, or null
   */
  @SuppressWarnings("unchecked")
  V put(long key, V value) {
    if (value == null) throw new IllegalArgumentException("null value for key " + key);
    int i = slot(key);
    for (; values[i] != null; i = (i + 1) & mask) {
      if (keys[i] == key) {
        V old = (V) values[i];
        values[i] = value;
        return old;
      }
    }
    keys[i] = key;
    values[i] = value;
    if (++size > (mask + 1) / 2) allocate((mask + 1) * 2);
    return null;
  }

  /**
   * Removes {@code key}.
   *
   * @return the value it had, or null
   */
  @SuppressWarnings("unchecked")
  V remove(long key) {
    int i = slot(key);
    while (values[i] != null && keys[i] != key) i = (i + 1) & mask;
    V old = (V) values[i];
    if (old == null) return null;
    size--;
    // Backward shift: move later entries of the same probe run into the hole, so that no lookup
    // stops early at it.
    int hole = i;
    for (int j = (i + 1) & mask; values[j] != null; j = (j + 1) & mask) {
      int home = slot(keys[j]);
      // j's entry may move to the hole when its home is not cyclically in (hole, j].
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        keys[hole] = keys[j];
        values[hole] = values[j];
        hole = j;
      }
    }
    values[hole] = null;
    return old;
  }

  /** Every value, in no particular order, as a new list (for closing all; not a hot path). */
  @SuppressWarnings("unchecked")
  List<V> values() {
    List<V> all = new ArrayList<>(size);
    for (Object v : values) {
      if (v != null) all.add((V) v);
    }
    return all;
  }

  void clear() {
    Arrays.fill(values, null);
    size = 0;
  }

  private int slot(long key) {
    // Fibonacci hashing: port pairs differ in few bits; the multiply spreads them over the top.
    return (int) ((key * 0x9E37_79B9_7F4A_7C15L) >>> shift);
  }

  private void allocate(int capacity) {
    long[] oldKeys = keys;
    Object[] oldValues = values;
    keys = new long[capacity];
    values = new Object[capacity];
    mask = capacity - 1;
    shift = Long.numberOfLeadingZeros(mask);
    if (oldValues == null) return;
    for (int i = 0; i < oldValues.length; i++) {
      if (oldValues[i] == null) continue;
      int j = slot(oldKeys[i]);
      while (values[j] != null) j = (j + 1) & mask;
      keys[j] = oldKeys[i];
      values[j] = oldValues[i];
    }
  }
}
