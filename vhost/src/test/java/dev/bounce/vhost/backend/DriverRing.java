package dev.bounce.vhost.backend;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.protocol.VringAddress;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;
import java.time.Duration;

/**
 * The guest driver's side of one split ring in {@link TestMemory}, at the frontend addresses
 * SET_VRING_ADDR gives: posts echo chains (a readable descriptor with the data, a writable one for
 * the echo), kicks, and checks the used ring the backend fills and the call it signals.
 */
final class DriverRing {

  private static final int F_NEXT = 1;
  private static final int F_WRITE = 2;

  final int index;
  final int size;
  private final TestMemory memory;
  private final long descUser;
  private final MemorySegment desc;
  private final MemorySegment avail;
  private final MemorySegment used;
  private int availIdx;
  private int nextDescriptor;

  DriverRing(TestMemory memory, int index, int size, long descUser, long availUser, long usedUser) {
    this.memory = memory;
    this.index = index;
    this.size = size;
    this.descUser = descUser;
    this.desc = memory.user(descUser, 16L * size);
    this.avail = memory.user(availUser, 6 + 2L * size);
    this.used = memory.user(usedUser, 6 + 8L * size);
  }

  DriverRing(TestMemory memory, int size, VringAddress address) {
    this(
        memory,
        (int) address.index(),
        size,
        address.descriptor(),
        address.available(),
        address.used());
  }

  /**
   * Puts the driver where a previous backend left it: used.idx and avail.idx both at {@code idx}
   * (every buffer made available was used), as after a DPDK backend that ran and went away.
   */
  void resumeAt(int idx) {
    availIdx = idx & 0xffff;
    used.set(LE16, 2, (short) idx);
    avail.set(LE16, 2, (short) idx);
    VarHandle.fullFence();
  }

  /** The driver's next avail index is {@code idx} (the ring's memory stays as it is). */
  void startAt(int idx) {
    availIdx = idx & 0xffff;
  }

  int availIndex() {
    return availIdx;
  }

  int usedIndex() {
    VarHandle.acquireFence();
    int idx = Short.toUnsignedInt(used.get(LE16, 2));
    VarHandle.acquireFence();
    return idx;
  }

  /** Posts a chain of {@code data} (readable) then {@code room} writable bytes; its head. */
  int postEcho(byte[] data, int room) {
    long in = memory.allocate(descUser, data.length);
    long out = memory.allocate(descUser, room);
    MemorySegment.copy(
        data, 0, memory.user(in, data.length), ValueLayout.JAVA_BYTE, 0, data.length);
    memory.user(out, room).fill((byte) 0);
    int head = nextDescriptor;
    int second = (head + 1) % size;
    descriptor(head, memory.guestAddress(in), data.length, F_NEXT, second);
    descriptor(second, memory.guestAddress(out), room, F_WRITE, 0);
    nextDescriptor = (head + 2) % size;
    lastOut = out;
    avail.set(LE16, 4 + 2L * (availIdx % size), (short) head);
    availIdx = (availIdx + 1) & 0xffff;
    VarHandle.releaseFence();
    avail.set(LE16, 2, (short) availIdx);
    VarHandle.fullFence();
    return head;
  }

  private long lastOut;

  private void descriptor(int i, long address, int length, int flags, int next) {
    long at = 16L * i;
    desc.set(LE64, at, address);
    desc.set(LE32, at + 8, length);
    desc.set(LE16, at + 12, (short) flags);
    desc.set(LE16, at + 14, (short) next);
  }

  /**
   * Posts an echo chain of {@code data}, kicks, and checks that the backend used it: the used
   * element lands at {@code expectedUsedIdx}, names the head, says how many bytes came back, the
   * echo is there, and the call eventfd (if any) was signalled.
   */
  void echo(byte[] data, EventFd kick, EventFd call, int expectedUsedIdx, Duration timeout)
      throws NativeException, InterruptedException {
    if (call != null) call.drain();
    int head = postEcho(data, data.length + 16);
    kick.signal();
    awaitEcho(head, data, expectedUsedIdx, timeout);
    if (call != null) awaitSignal(call, timeout, "ring " + index + ": call eventfd");
  }

  /**
   * Waits for the echo of the chain {@link #postEcho} posted last ({@code head}, {@code data}) to
   * be used at {@code expectedUsedIdx}, and checks it.
   */
  void awaitEcho(int head, byte[] data, int expectedUsedIdx, Duration timeout)
      throws InterruptedException {
    int want = (expectedUsedIdx + 1) & 0xffff;
    long deadline = System.nanoTime() + timeout.toNanos();
    while (usedIndex() != want) {
      if (System.nanoTime() - deadline > 0) {
        fail(
            "ring "
                + index
                + ": used.idx is "
                + usedIndex()
                + ", expected "
                + want
                + " after posting a chain at avail "
                + ((availIdx - 1) & 0xffff));
      }
      Thread.sleep(1);
    }
    long element = 4 + 8L * (expectedUsedIdx % size);
    assertEquals(head, used.get(LE32, element), "ring " + index + ": used element id");
    assertEquals(data.length, used.get(LE32, element + 4), "ring " + index + ": used element len");
    assertArrayEquals(
        data,
        memory.user(lastOut, data.length).toArray(ValueLayout.JAVA_BYTE),
        "ring " + index + ": the echo");
  }

  /** Waits for {@code fd} to be signalled (and resets it). */
  static void awaitSignal(EventFd fd, Duration timeout, String what)
      throws NativeException, InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (fd.drain() == 0) {
      if (System.nanoTime() - deadline > 0) fail(what + " was not signalled within " + timeout);
      Thread.sleep(1);
    }
  }
}
