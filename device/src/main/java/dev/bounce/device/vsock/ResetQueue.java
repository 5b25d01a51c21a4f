package dev.bounce.device.vsock;

/**
 * RSTs waiting for rx buffers (of connections the device ended, or for packets it has no connection
 * for): a bounded FIFO, at most one RST per port pair, over preallocated arrays, so a guest that
 * provokes one per packet costs no allocation. Not thread-safe: the data loop owns it.
 *
 * <p>Every operation is O(1): the device drops a pair's waiting RST on every REQUEST, and a guest
 * that keeps the queue full must not make that a scan of thousands of entries on a data loop other
 * guests share. So the entries are slots of fixed arrays linked into a doubly linked FIFO, unused
 * slots on a free list, and a {@link LongMap} finds a pair's slot. A removed entry's slot is free
 * at once: a queue whose entries were all removed takes {@code capacity} new ones.
 */
final class ResetQueue {
  private static final int NONE = -1;

  private final long[] keys; // VsockConnection.key(host port, guest port)
  private final byte[] types;
  private final int[] next; // toward the tail; for a free slot, the next free one
  private final int[] prev; // toward the head
  private final Integer[] slots; // boxed slot numbers, made once: the map's values
  private final LongMap<Integer> waiting = new LongMap<>(); // key: its slot
  private int head = NONE;
  private int tail = NONE;
  private int free;
  private int count;

  ResetQueue(int capacity) {
    keys = new long[capacity];
    types = new byte[capacity];
    next = new int[capacity];
    prev = new int[capacity];
    slots = new Integer[capacity];
    for (int i = 0; i < capacity; i++) slots[i] = i; // boxed once: add never allocates
    clear();
  }

  boolean isFull() {
    return count == keys.length;
  }

  boolean isEmpty() {
    return count == 0;
  }

  int size() {
    return count;
  }

  /**
   * Adds one at the tail unless full. A pair that already waits keeps its one RST where it is: a
   * second one tells the guest nothing the first does not.
   *
   * @return whether an RST for the pair waits now
   */
  boolean add(int guestPort, int hostPort, int type) {
    long key = VsockConnection.key(hostPort, guestPort);
    if (waiting.containsKey(key)) return true;
    if (isFull()) return false;
    int at = free;
    free = next[at];
    keys[at] = key;
    types[at] = (byte) type;
    next[at] = NONE;
    prev[at] = tail;
    if (tail == NONE) {
      head = at;
    } else {
      next[tail] = at;
    }
    tail = at;
    waiting.put(key, slots[at]);
    count++;
    return true;
  }

  /** Drops the RST for this pair if one waits, keeping the others in order. */
  void remove(int guestPort, int hostPort) {
    Integer at = waiting.remove(VsockConnection.key(hostPort, guestPort));
    if (at != null) unlink(at);
  }

  int firstGuestPort() {
    return (int) keys[head];
  }

  int firstHostPort() {
    return (int) (keys[head] >>> 32);
  }

  int firstType() {
    return types[head];
  }

  void removeFirst() {
    waiting.remove(keys[head]);
    unlink(head);
  }

  void clear() {
    waiting.clear();
    for (int i = 0; i < next.length; i++) next[i] = i + 1 < next.length ? i + 1 : NONE;
    free = next.length > 0 ? 0 : NONE;
    head = NONE;
    tail = NONE;
    count = 0;
  }

  private void unlink(int at) {
    int before = prev[at];
    int after = next[at];
    if (before == NONE) {
      head = after;
    } else {
      next[before] = after;
    }
    if (after == NONE) {
      tail = before;
    } else {
      prev[after] = before;
    }
    next[at] = free;
    free = at;
    count--;
  }
}
