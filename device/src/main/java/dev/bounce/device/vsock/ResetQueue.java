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
    ports[at] = ((long) guestPort << 32) | Integer.toUnsignedLong(hostPort);
    types[at] = (byte) type;
    count++;
    return true;
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
}
