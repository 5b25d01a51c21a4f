package dev.bounce.device.vsock;

/**
 * RSTs waiting for rx buffers (of connections the device ended, or for packets it has no connection
 * for): a bounded FIFO over preallocated arrays, so a guest that provokes one per packet costs no
 * allocation. Not thread-safe: the data loop owns it.
 */
final class ResetQueue {
  private final long[] ports; // guest port << 32 | host port
  private final byte[] types;
  private int head;
  private int count;

  ResetQueue(int capacity) {
    ports = new long[capacity];
    types = new byte[capacity];
  }

  boolean isFull() {
    return count == ports.length;
  }

  boolean isEmpty() {
    return count == 0;
  }

  int size() {
    return count;
  }

  /** Adds one unless full. */
  boolean add(int guestPort, int hostPort, int type) {
    if (isFull()) return false;
    int at = (head + count) % ports.length;
    ports[at] = pair(guestPort, hostPort);
    types[at] = (byte) type;
    count++;
    return true;
  }

  /** Drops every RST for this pair, keeping the others in order. */
  void remove(int guestPort, int hostPort) {
    long pair = pair(guestPort, hostPort);
    int kept = 0;
    for (int i = 0; i < count; i++) {
      int from = (head + i) % ports.length;
      if (ports[from] == pair) continue;
      int to = (head + kept) % ports.length; // never ahead of from: compacting in place is safe
      ports[to] = ports[from];
      types[to] = types[from];
      kept++;
    }
    count = kept;
  }

  int firstGuestPort() {
    return (int) (ports[head] >>> 32);
  }

  int firstHostPort() {
    return (int) ports[head];
  }

  int firstType() {
    return types[head];
  }

  void removeFirst() {
    head = (head + 1) % ports.length;
    count--;
  }

  void clear() {
    head = 0;
    count = 0;
  }

  private static long pair(int guestPort, int hostPort) {
    return ((long) guestPort << 32) | Integer.toUnsignedLong(hostPort);
  }
}
