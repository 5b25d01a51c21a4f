package dev.bounce.vhost.virtq;

import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_INDIRECT;
import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_NEXT;
import static dev.bounce.vhost.virtq.Virtq.VIRTQ_DESC_F_WRITE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.IoVectors;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.PoolViolationException;
import dev.bounce.pool.UnmappedAddressException;
import dev.bounce.pool.testing.TestSyscalls;
import dev.bounce.vhost.virtq.DriverRings.Buf;
import dev.bounce.vhost.virtq.VirtqueueException.Reason;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** Walking and validating descriptor chains: every rule of sections 2.7.4 and 2.7.5. */
class DescriptorChainTest {
  static final long MIB = 1 << 20;
  static final long GUEST_BASE = 0x4000_0000L;
  static final long INDIRECT = 1L << Virtq.VIRTIO_F_INDIRECT_DESC;

  /** Pops the one posted chain and walks it to the end; the guest error it must raise. */
  private static VirtqueueException walkFails(SplitQueue queue) throws VirtqueueException {
    DescriptorChain chain = queue.newChain();
    assertTrue(queue.pop(chain));
    VirtqueueException e =
        assertThrows(
            VirtqueueException.class,
            () -> {
              while (chain.next()) {
                // walk
              }
            });
    assertTrue(queue.isBroken(), "a guest error stops the queue");
    assertEquals(e, queue.error());
    assertFalse(queue.pop(chain), "a broken queue pops nothing");
    return e;
  }

  /** Pops the one posted chain and walks it to the end; how many descriptors it had. */
  private static int walk(SplitQueue queue) throws VirtqueueException {
    DescriptorChain chain = queue.newChain();
    assertTrue(queue.pop(chain));
    int n = 0;
    while (chain.next()) n++;
    assertFalse(queue.isBroken());
    return n;
  }

  @Test
  void exposesEachDescriptorsAddressLengthFlagAndBytes() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      Buf a = driver.readable(new byte[] {1, 2, 3});
      Buf b = driver.writable(100);
      driver.fill(b.address(), new byte[] {9});
      int head = driver.postChain(a, b);
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      assertEquals(head, chain.headIndex());
      assertFalse(chain.isPositioned());

      assertTrue(chain.next());
      assertEquals(a.address(), chain.address());
      assertEquals(3, chain.length());
      assertFalse(chain.isWritable());
      assertFalse(chain.isIndirect());
      assertEquals(3, chain.segment().get(ValueLayout.JAVA_BYTE, chain.offset() + 2));

      assertTrue(chain.next());
      assertEquals(b.address(), chain.address());
      assertEquals(100, chain.length());
      assertTrue(chain.isWritable());
      assertEquals(9, chain.segment().get(ValueLayout.JAVA_BYTE, chain.offset()));
      assertEquals(103, chain.totalLength());

      assertFalse(chain.next());
      assertFalse(chain.isPositioned());
      assertFalse(chain.next());
    }
  }

  @Test
  void readAndWriteCopyAcrossDescriptorsAndSkipReadablesWhenWriting() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB);
        Arena arena = Arena.ofConfined()) {
      SplitQueue queue = driver.queue(0, 0);
      Buf w1 = driver.writable(3);
      Buf w2 = driver.writable(5);
      driver.postChain(
          driver.readable(new byte[] {1, 2}),
          driver.readable(new byte[0]),
          driver.readable(new byte[] {3, 4, 5}),
          w1,
          w2);
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      MemorySegment header = arena.allocate(4);
      assertEquals(4, chain.read(header, 0, 4));
      assertArrayEquals(new byte[] {1, 2, 3, 4}, header.toArray(ValueLayout.JAVA_BYTE));
      // writing skips the unread readable byte (5): a device never writes readable buffers
      MemorySegment payload = arena.allocate(10);
      for (int i = 0; i < 10; i++) payload.set(ValueLayout.JAVA_BYTE, i, (byte) (10 + i));
      assertEquals(8, chain.write(payload, 0, 10), "only 8 writable bytes");
      assertEquals(8, chain.bytesWritten());
      assertArrayEquals(new byte[] {10, 11, 12}, driver.bytes(w1.address(), 3));
      assertArrayEquals(new byte[] {13, 14, 15, 16, 17}, driver.bytes(w2.address(), 5));
      assertEquals(0, chain.read(new byte[4], 0, 4));
      queue.addUsed(chain);
      queue.publish();
      assertEquals(8, driver.usedLen(0));

      // rewind walks it again
      chain.rewind();
      byte[] again = new byte[5];
      assertEquals(5, chain.read(again, 0, 5));
      assertArrayEquals(new byte[] {1, 2, 3, 4, 5}, again);
      assertEquals(0, chain.bytesWritten());
    }
  }

  @Test
  void readStopsAtTheFirstWritableDescriptor() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.postChain(driver.readable(new byte[] {1, 2}), driver.writable(4));
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      byte[] buffer = new byte[10];
      assertEquals(2, chain.read(buffer, 0, 10));
      assertEquals(4, chain.write(new byte[] {5, 6, 7, 8, 9}, 0, 5));
    }
  }

  @Test
  void aChainSpanningExactlyTheQueueSizeIsFine() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      Buf[] bufs = new Buf[16];
      for (int i = 0; i < 16; i++) bufs[i] = driver.readable(new byte[] {(byte) i});
      driver.postChain(bufs);
      assertEquals(16, walk(queue));
    }
  }

  @Test
  void oneDescriptorMoreIsALoop() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(5, 0);
      long buf = driver.alloc(1);
      // 0 -> 1 -> ... -> 15 -> 0: every index in range, the 17th read would repeat one
      for (int i = 0; i < 16; i++) driver.descriptor(i, buf, 1, VIRTQ_DESC_F_NEXT, (i + 1) % 16);
      driver.post(0);
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.CHAIN_TOO_LONG, e.reason());
      assertEquals(5, e.queueIndex());
      assertTrue(e.getMessage().contains("virtqueue 5"), e.getMessage());
      assertTrue(e.getMessage().contains("2.7.5.2"), e.getMessage());
    }
  }

  @Test
  void aSelfLoopIsCaught() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.descriptor(3, driver.alloc(1), 1, VIRTQ_DESC_F_NEXT, 3);
      driver.post(3);
      assertEquals(Reason.CHAIN_TOO_LONG, walkFails(queue).reason());
    }
  }

  @Test
  void aNextIndexOutsideTheTableIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(16, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.descriptor(0, driver.alloc(1), 1, VIRTQ_DESC_F_NEXT, 16);
      driver.post(0);
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.NEXT_OUT_OF_RANGE, e.reason());
      assertTrue(e.getMessage().contains("chains to 16"), e.getMessage());
    }
  }

  @Test
  void indirectChainsAreWalkedWhenNegotiated() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, INDIRECT);
      Buf out = driver.readable(new byte[] {1, 2, 3});
      Buf in = driver.writable(4);
      driver.postIndirect(out, driver.readable(new byte[] {4}), in);
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      byte[] got = new byte[4];
      assertEquals(4, chain.read(got, 0, 4));
      assertArrayEquals(new byte[] {1, 2, 3, 4}, got);
      assertTrue(chain.isIndirect());
      assertEquals(4, chain.write(new byte[] {8, 8, 8, 8}, 0, 4));
      assertEquals(2, chain.index());
      assertFalse(chain.next());
      assertArrayEquals(new byte[] {8, 8, 8, 8}, driver.bytes(in.address(), 4));
    }
  }

  @Test
  void directDescriptorsMayPrecedeTheIndirectOne() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, INDIRECT);
      long table = driver.alloc(32);
      Buf a = driver.readable(new byte[] {1});
      Buf b = driver.readable(new byte[] {2});
      Buf c = driver.writable(1);
      driver.indirectDescriptor(table, 0, b.address(), 1, VIRTQ_DESC_F_NEXT, 1);
      driver.indirectDescriptor(table, 1, c.address(), 1, VIRTQ_DESC_F_WRITE, 0);
      driver.descriptor(4, a.address(), 1, VIRTQ_DESC_F_NEXT, 6);
      // WRITE on the descriptor that refers to a table is ignored (section 2.7.5.3.2)
      driver.descriptor(6, table, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
      driver.post(4);
      assertEquals(3, walk(queue));
    }
  }

  @Test
  void indirectWithoutTheFeatureIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.postIndirect(driver.writable(4));
      assertEquals(Reason.INDIRECT_NOT_NEGOTIATED, walkFails(queue).reason());
    }
  }

  @Test
  void indirectTogetherWithNextIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, INDIRECT);
      long table = driver.alloc(16);
      driver.indirectDescriptor(table, 0, driver.alloc(4), 4, 0, 0);
      driver.descriptor(0, table, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
      driver.descriptor(1, driver.alloc(4), 4, 0, 0);
      driver.post(0);
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.INDIRECT_WITH_NEXT, e.reason());
      assertEquals(table, e.address());
      assertEquals(16, e.length());
    }
  }

  @Test
  void nestedIndirectIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, INDIRECT);
      long inner = driver.alloc(16);
      driver.indirectDescriptor(inner, 0, driver.alloc(4), 4, 0, 0);
      long outer = driver.alloc(32);
      driver.indirectDescriptor(outer, 0, driver.alloc(4), 4, VIRTQ_DESC_F_NEXT, 1);
      driver.indirectDescriptor(outer, 1, inner, 16, VIRTQ_DESC_F_INDIRECT, 0);
      driver.descriptor(0, outer, 32, VIRTQ_DESC_F_INDIRECT, 0);
      driver.post(0);
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.NESTED_INDIRECT, e.reason());
      assertTrue(e.getMessage().contains("indirect table at guest address"), e.getMessage());
    }
  }

  @Test
  void indirectTablesOfZeroOrAPartialEntryAreGuestErrors() throws Exception {
    for (long length : new long[] {0, 8, 17, 31}) {
      try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
        SplitQueue queue = driver.queue(0, INDIRECT);
        driver.descriptor(0, driver.alloc(32), length, VIRTQ_DESC_F_INDIRECT, 0);
        driver.post(0);
        VirtqueueException e = walkFails(queue);
        assertEquals(Reason.INDIRECT_TABLE_LENGTH, e.reason(), "length " + length);
        assertEquals(length, e.length());
      }
    }
  }

  @Test
  void anIndirectTableOfMoreDescriptorsThanTheQueueHasIsAGuestError() throws Exception {
    // Section 2.7.5.3.1: no chain longer than the Queue Size (8 here); a table of 8 is fine.
    for (int entries : new int[] {8, 9, 4096}) {
      try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
        SplitQueue queue = driver.queue(0, INDIRECT);
        long table = driver.alloc(16L * entries);
        long buf = driver.alloc(1);
        for (int k = 0; k < entries; k++) {
          boolean last = k == entries - 1;
          driver.indirectDescriptor(table, k, buf, 1, last ? 0 : VIRTQ_DESC_F_NEXT, k + 1);
        }
        driver.descriptor(0, table, 16L * entries, VIRTQ_DESC_F_INDIRECT, 0);
        driver.post(0);
        if (entries <= 8) {
          DescriptorChain chain = queue.newChain();
          assertTrue(queue.pop(chain));
          int walked = 0;
          while (chain.next()) walked++;
          assertEquals(entries, walked);
        } else {
          VirtqueueException e = walkFails(queue);
          assertEquals(Reason.INDIRECT_TABLE_LENGTH, e.reason(), entries + " entries");
          assertTrue(e.getMessage().contains("more than the queue's 8"), e.getMessage());
        }
      }
    }
  }

  @Test
  void anIndirectChainLongerThanItsTableIsALoop() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, INDIRECT);
      long table = driver.alloc(16 * 3);
      long buf = driver.alloc(1);
      driver.indirectDescriptor(table, 0, buf, 1, VIRTQ_DESC_F_NEXT, 1);
      driver.indirectDescriptor(table, 1, buf, 1, VIRTQ_DESC_F_NEXT, 2);
      driver.indirectDescriptor(table, 2, buf, 1, VIRTQ_DESC_F_NEXT, 0);
      driver.descriptor(0, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
      driver.post(0);
      assertEquals(Reason.CHAIN_TOO_LONG, walkFails(queue).reason());
    }
  }

  @Test
  void anIndirectNextOutsideTheTableIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, INDIRECT);
      long table = driver.alloc(32);
      driver.indirectDescriptor(table, 0, driver.alloc(1), 1, VIRTQ_DESC_F_NEXT, 2);
      driver.descriptor(0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
      driver.post(0);
      assertEquals(Reason.NEXT_OUT_OF_RANGE, walkFails(queue).reason());
    }
  }

  @Test
  void aReadableDescriptorAfterAWritableOneIsAGuestError() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      Buf late = driver.readable(new byte[] {1});
      driver.postChain(driver.writable(4), late);
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.READABLE_AFTER_WRITABLE, e.reason());
      assertEquals(late.address(), e.address());
      assertTrue(e.getMessage().contains("2.7.4.2"), e.getMessage());
    }
  }

  @Test
  void theWritableRuleSpansTheDirectAndIndirectParts() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, INDIRECT);
      long table = driver.alloc(16);
      driver.indirectDescriptor(table, 0, driver.alloc(1), 1, 0, 0); // readable
      driver.descriptor(0, driver.alloc(4), 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
      driver.descriptor(1, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
      driver.post(0);
      assertEquals(Reason.READABLE_AFTER_WRITABLE, walkFails(queue).reason());
    }
  }

  @Test
  void readablesThenWritablesAreFine() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.postChain(
          driver.readable(new byte[1]),
          driver.readable(new byte[2]),
          driver.writable(1),
          driver.writable(2));
      assertEquals(4, walk(queue));
    }
  }

  @Test
  void zeroLengthDescriptorsAreAcceptedButTheirAddressIsChecked() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      long end = GUEST_BASE + MIB;
      // at a buffer, and exactly at the end of memory: touch nothing, accepted
      driver.postChain(
          new Buf(driver.alloc(1), 0, false),
          new Buf(end, 0, false),
          new Buf(driver.alloc(1), 0, true));
      DescriptorChain chain = queue.newChain();
      assertTrue(queue.pop(chain));
      int n = 0;
      while (chain.next()) {
        assertEquals(0, chain.length());
        n++;
      }
      assertEquals(3, n);
      assertEquals(0, chain.totalLength());

      // one byte past the end is outside memory even with no length
      driver.postChain(new Buf(end + 1, 0, false));
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.DESCRIPTOR_OUTSIDE_MEMORY, e.reason());
      assertEquals(end + 1, e.address());
      assertEquals(0, e.length());
    }
  }

  @Test
  void aDescriptorOutsideMemoryIsAGuestErrorWithAddressAndLength() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(2, 0);
      long end = GUEST_BASE + MIB;
      driver.postChain(driver.readable(new byte[4]), new Buf(end - 100, 101, true));
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.DESCRIPTOR_OUTSIDE_MEMORY, e.reason());
      assertEquals(end - 100, e.address());
      assertEquals(101, e.length());
      UnmappedAddressException cause =
          assertInstanceOf(UnmappedAddressException.class, e.accessFailure());
      assertEquals(AddressKind.GUEST_PHYSICAL, cause.kind());
      assertNull(e.poolViolation());
      assertTrue(e.getMessage().contains("0x400fff9c"), e.getMessage());
    }
  }

  @Test
  void addressesThatWouldWrapAreRefused() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.postChain(new Buf(-16L, 0xffff_ffffL, false));
      assertEquals(Reason.DESCRIPTOR_OUTSIDE_MEMORY, walkFails(queue).reason());
    }
  }

  @Test
  void buffersAndIndirectTablesOutsideThePoolAreRefusedWithThePoolBounds() throws Exception {
    long poolStart = 2 * MIB;
    long poolSize = MIB;
    long outside = 3 * MIB + 4096; // shared by the frontend, but outside the pool
    for (boolean indirectTable : new boolean[] {false, true}) {
      try (DriverRings driver = DriverRings.pooled(16, 4 * MIB, poolStart, poolSize)) {
        SplitQueue queue = driver.queue(7, INDIRECT);
        if (indirectTable) {
          driver.indirectDescriptor(outside, 0, driver.alloc(4), 4, 0, 0);
          driver.descriptor(0, outside, 16, VIRTQ_DESC_F_INDIRECT, 0);
          driver.post(0);
        } else {
          driver.postChain(new Buf(outside, 64, false));
        }
        VirtqueueException e = walkFails(queue);
        assertEquals(
            indirectTable ? Reason.INDIRECT_TABLE_OUTSIDE_MEMORY : Reason.DESCRIPTOR_OUTSIDE_MEMORY,
            e.reason());
        assertEquals(outside, e.address());
        assertEquals(indirectTable ? 16 : 64, e.length());
        PoolViolationException pool = e.poolViolation();
        assertNotNull(pool);
        assertEquals(poolStart, pool.poolStart());
        assertEquals(poolSize, pool.poolSize());
        assertTrue(e.getMessage().contains("virtqueue 7"), e.getMessage());
        assertTrue(e.getMessage().contains("0x301000"), e.getMessage());
        assertTrue(e.getMessage().contains("[0x200000, 0x300000)"), e.getMessage());
      }
    }
  }

  @Test
  void aBufferStraddlingThePoolEndIsRefused() throws Exception {
    long poolStart = 2 * MIB;
    try (DriverRings driver = DriverRings.pooled(16, 4 * MIB, poolStart, MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.postChain(new Buf(3 * MIB - 8, 16, true));
      VirtqueueException e = walkFails(queue);
      assertNotNull(e.poolViolation());
    }
  }

  @Test
  void chainsOfMoreThan2To32BytesAreGuestErrors() throws Exception {
    // 1 GiB of sparse memfd: four 1 GiB descriptors over the same bytes add up to 2^32
    long gib = 1L << 30;
    try (DriverRings driver = DriverRings.shared(8, 0, gib + MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      long buf = driver.alloc(16);
      Buf big = new Buf(buf, gib, false);
      Buf almost = new Buf(buf, gib - 1, false);
      driver.postChain(big, big, big, almost); // 2^32 - 1: the most there may be
      assertEquals(4, walk(queue));
      driver.postChain(big, big, big, big);
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.CHAIN_LENGTH_OVERFLOW, e.reason());
      assertTrue(e.getMessage().contains("4294967296"), e.getMessage());
    }
  }

  @Test
  void aDescriptorOf4GibMinusOneIsAChainOnItsOwn() throws Exception {
    long gib = 1L << 30;
    try (DriverRings driver = DriverRings.shared(8, 0, gib + MIB)) {
      SplitQueue queue = driver.queue(0, 0);
      driver.postChain(new Buf(driver.alloc(16), 0xffff_ffffL, false), driver.writable(1));
      // the length is legal, the range is not in memory: checked in that order
      VirtqueueException e = walkFails(queue);
      assertEquals(Reason.DESCRIPTOR_OUTSIDE_MEMORY, e.reason());
      assertEquals(0xffff_ffffL, e.length());
    }
  }

  // ---- handing writable room to readv(2) (gatherWritable, skipWritable) ----

  /** {@code n} bytes 1, 2, 3, ... (wrapping), so that a byte's value says where it was read. */
  private static byte[] counting(int n) {
    byte[] b = new byte[n];
    for (int i = 0; i < n; i++) b[i] = (byte) (i + 1);
    return b;
  }

  /**
   * Fills {@code pieces} with one readv(2) from a pipe holding {@code data}, as a device reads a
   * socket into the pieces a chain gathered; the bytes read.
   */
  private static long readvFromPipe(IoVectors pieces, byte[] data) throws NativeException {
    try (TestSyscalls.Pipe pipe = TestSyscalls.pipe();
        Arena arena = Arena.ofConfined()) {
      MemorySegment from = arena.allocate(Math.max(1, data.length));
      MemorySegment.copy(data, 0, from, ValueLayout.JAVA_BYTE, 0, data.length);
      assertEquals(data.length, Libc.write(pipe.writeEnd().value(), from, data.length));
      pipe.writeEnd().close();
      return Libc.readv(pipe.readEnd().value(), pieces);
    }
  }

  private static byte[] slice(byte[] b, int from, int to) {
    return Arrays.copyOfRange(b, from, to);
  }

  /** Posts one chain of {@code buffers} on a queue of {@code driver}'s rings and pops it. */
  private static DescriptorChain popped(DriverRings driver, Buf... buffers) throws Exception {
    SplitQueue queue = driver.queue(0, 0);
    driver.postChain(buffers);
    DescriptorChain chain = queue.newChain();
    assertTrue(queue.pop(chain));
    return chain;
  }

  @Test
  void gatherWritableAddsRoomUpToMaxAcrossDescriptorsAndMovesTheCursor() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      Buf w1 = driver.writable(100);
      Buf w2 = driver.writable(200);
      DescriptorChain chain = popped(driver, w1, w2);
      IoVectors pieces = new IoVectors(8);

      assertEquals(150, chain.gatherWritable(pieces, 150));
      assertEquals(2, pieces.count(), "one piece per descriptor");
      assertEquals(150, pieces.bytes());
      byte[] data = counting(150);
      assertEquals(150, readvFromPipe(pieces, data));
      assertArrayEquals(slice(data, 0, 100), driver.bytes(w1.address(), 100));
      assertArrayEquals(slice(data, 100, 150), driver.bytes(w2.address(), 50));
      assertArrayEquals(new byte[150], driver.bytes(w2.address() + 50, 150), "past max");

      // The cursor moved past them: the next gather starts where this one stopped.
      pieces.clear();
      assertEquals(150, chain.gatherWritable(pieces, 1000));
      assertEquals(1, pieces.count());
      byte[] more = counting(150);
      assertEquals(150, readvFromPipe(pieces, more));
      assertArrayEquals(slice(data, 100, 150), driver.bytes(w2.address(), 50), "not overwritten");
      assertArrayEquals(more, driver.bytes(w2.address() + 50, 150));
      pieces.clear();
      assertEquals(0, chain.gatherWritable(pieces, 1000), "the chain's room is used up");
      assertEquals(0, pieces.count());
    }
  }

  @Test
  void gatherWritableSkipsReadableDescriptorsAhead() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      byte[] request = {9, 8, 7, 6};
      Buf r = driver.readable(request);
      Buf w = driver.writable(40);
      DescriptorChain chain = popped(driver, r, driver.readable(new byte[] {5}), w);
      IoVectors pieces = new IoVectors(4);
      assertEquals(40, chain.gatherWritable(pieces, 100));
      assertEquals(1, pieces.count(), "only the writable descriptor");
      byte[] data = counting(40);
      assertEquals(40, readvFromPipe(pieces, data));
      assertArrayEquals(data, driver.bytes(w.address(), 40));
      assertArrayEquals(request, driver.bytes(r.address(), 4), "a device never writes readables");
    }
  }

  @Test
  void gatherWritableStopsWhenTheIoVectorsAreFull() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      Buf w1 = driver.writable(10);
      Buf w2 = driver.writable(10);
      Buf w3 = driver.writable(10);
      DescriptorChain chain = popped(driver, w1, w2, w3);
      IoVectors two = new IoVectors(2);
      assertEquals(20, chain.gatherWritable(two, 1000));
      assertEquals(2, two.count());
      assertFalse(two.hasRoom());
      // Nothing was skipped: the third descriptor is still ahead of the cursor.
      IoVectors next = new IoVectors(2);
      assertEquals(10, chain.gatherWritable(next, 1000));
      byte[] data = counting(10);
      assertEquals(10, readvFromPipe(next, data));
      assertArrayEquals(data, driver.bytes(w3.address(), 10));
      assertArrayEquals(new byte[10], driver.bytes(w1.address(), 10));
    }
  }

  @Test
  void gatheredAndSkippedRoomIsNotCountedInBytesWritten() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      DescriptorChain chain = popped(driver, driver.writable(64), driver.writable(64));
      assertEquals(3, chain.write(new byte[] {1, 2, 3}, 0, 3));
      assertEquals(10, chain.skipWritable(10));
      IoVectors pieces = new IoVectors(4);
      assertEquals(100, chain.gatherWritable(pieces, 100));
      assertEquals(3, chain.bytesWritten(), "only what write() wrote: the caller knows the rest");
      assertEquals(2, chain.write(new byte[] {4, 5}, 0, 2), "the cursor is past the gathered room");
      assertEquals(5, chain.bytesWritten());
      // 128 bytes of room: 3 + 10 + 100 + 2 written, skipped or gathered, 13 left.
      assertEquals(13, chain.skipWritable(1000));
    }
  }

  @Test
  void skipWritableLeavesRoomForAHeaderWrittenAfterThePayload() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      // The header room spans two descriptors, as a driver may split a buffer anywhere.
      Buf w1 = driver.writable(30);
      Buf w2 = driver.writable(100);
      DescriptorChain chain = popped(driver, w1, w2);
      assertEquals(44, chain.skipWritable(44));
      assertEquals(0, chain.bytesWritten());
      IoVectors pieces = new IoVectors(4);
      assertEquals(86, chain.gatherWritable(pieces, 1000));
      byte[] payload = counting(86);
      assertEquals(86, readvFromPipe(pieces, payload));
      assertArrayEquals(new byte[30], driver.bytes(w1.address(), 30), "skipped, not written");
      assertArrayEquals(new byte[14], driver.bytes(w2.address(), 14));
      assertArrayEquals(payload, driver.bytes(w2.address() + 14, 86));

      // The header goes in front once the payload's length is known.
      chain.rewind();
      byte[] header = new byte[44];
      Arrays.fill(header, (byte) -1);
      assertEquals(44, chain.write(header, 0, 44));
      chain.queue.addUsed(chain.headIndex(), 44 + 86);
      chain.queue.publish();
      assertEquals(130, driver.usedLen(0));
      assertArrayEquals(slice(header, 0, 30), driver.bytes(w1.address(), 30));
      assertArrayEquals(slice(header, 30, 44), driver.bytes(w2.address(), 14));
      assertArrayEquals(payload, driver.bytes(w2.address() + 14, 86), "the payload stays");
    }
  }

  @Test
  void skipWritableStopsAtTheEndOfTheChainAndSkipsReadables() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      DescriptorChain chain = popped(driver, driver.readable(new byte[50]), driver.writable(20));
      assertEquals(20, chain.skipWritable(44), "a buffer too small for a header: fewer");
      assertEquals(0, chain.skipWritable(1));
      assertEquals(0, chain.gatherWritable(new IoVectors(1), 10));
      assertEquals(0, chain.bytesWritten());
    }
  }

  // ---- handing readable data to writev(2) (gatherReadable, skipReadable) ----

  /**
   * Sends {@code pieces} with one writev(2) into a pipe and returns what the pipe got, as a device
   * writes a chain's payload to a host socket straight from guest memory.
   */
  private static byte[] writevThroughPipe(IoVectors pieces) throws NativeException {
    try (TestSyscalls.Pipe pipe = TestSyscalls.pipe();
        Arena arena = Arena.ofConfined()) {
      long n = Libc.writev(pipe.writeEnd().value(), pieces);
      assertEquals(pieces.bytes(), n, "a pipe takes a small write whole");
      pipe.writeEnd().close();
      MemorySegment into = arena.allocate(Math.max(1, n) + 1);
      long got = 0;
      for (long r; (r = Libc.read(pipe.readEnd().value(), into.asSlice(got), n + 1 - got)) > 0; ) {
        got += r;
      }
      return into.asSlice(0, got).toArray(ValueLayout.JAVA_BYTE);
    }
  }

  private static byte[] readRest(DescriptorChain chain) throws VirtqueueException {
    byte[] b = new byte[4096];
    int n = chain.read(b, 0, b.length);
    return slice(b, 0, n);
  }

  @Test
  void gatherReadableAddsDataUpToMaxAcrossDescriptorsAndMovesTheCursor() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      byte[] a = counting(100);
      byte[] b = slice(counting(250), 50, 250); // 51, 52, ...: tells the two apart
      DescriptorChain chain =
          popped(driver, driver.readable(a), driver.readable(b), driver.writable(16));
      IoVectors pieces = new IoVectors(8);

      assertEquals(150, chain.gatherReadable(pieces, 150));
      assertEquals(2, pieces.count(), "one piece per descriptor");
      assertEquals(150, pieces.bytes());
      byte[] sent = writevThroughPipe(pieces);
      assertArrayEquals(a, slice(sent, 0, 100));
      assertArrayEquals(slice(b, 0, 50), slice(sent, 100, 150));

      // The cursor moved past them: a read goes on with the first byte not gathered.
      assertArrayEquals(slice(b, 50, 200), readRest(chain));
      pieces.clear();
      assertEquals(0, chain.gatherReadable(pieces, 1000), "the readable data is used up");
      assertEquals(0, pieces.count());
    }
  }

  @Test
  void gatherReadableGoesOnWhereTheLastGatherStopped() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      byte[] data = counting(120);
      DescriptorChain chain = popped(driver, driver.readable(data));
      IoVectors pieces = new IoVectors(4);
      assertEquals(50, chain.gatherReadable(pieces, 50));
      assertEquals(50, chain.gatherReadable(pieces, 50));
      assertEquals(20, chain.gatherReadable(pieces, 50), "the end of the chain");
      assertEquals(3, pieces.count());
      assertArrayEquals(data, writevThroughPipe(pieces));
    }
  }

  @Test
  void gatherReadableStopsAtTheFirstWritableDescriptor() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      byte[] request = counting(40);
      Buf w = driver.writable(40);
      DescriptorChain chain = popped(driver, driver.readable(request), w);
      IoVectors pieces = new IoVectors(4);
      assertEquals(40, chain.gatherReadable(pieces, 1000), "not the writable room");
      assertEquals(1, pieces.count());
      assertArrayEquals(request, writevThroughPipe(pieces));
      assertEquals(0, chain.gatherReadable(pieces, 1000));
      assertEquals(1, pieces.count());
      // The writable descriptor is untouched and still whole for the device.
      assertEquals(3, chain.write(new byte[] {7, 8, 9}, 0, 3));
      assertArrayEquals(new byte[] {7, 8, 9}, driver.bytes(w.address(), 3));
    }
  }

  @Test
  void gatherReadableStopsWhenTheIoVectorsAreFull() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      byte[] all = counting(30);
      DescriptorChain chain =
          popped(
              driver,
              driver.readable(slice(all, 0, 10)),
              driver.readable(slice(all, 10, 20)),
              driver.readable(slice(all, 20, 30)));
      IoVectors two = new IoVectors(2);
      assertEquals(20, chain.gatherReadable(two, 1000));
      assertEquals(2, two.count());
      assertFalse(two.hasRoom());
      assertArrayEquals(slice(all, 0, 20), writevThroughPipe(two));
      // Nothing was skipped: the third descriptor is still ahead of the cursor.
      assertArrayEquals(slice(all, 20, 30), readRest(chain));
    }
  }

  @Test
  void skipReadableAfterARewindPositionsTheCursorWhereAPartialWriteStopped() throws Exception {
    try (DriverRings driver = DriverRings.shared(8, GUEST_BASE, MIB)) {
      // A 44-byte header split over two descriptors, then the payload over two more.
      byte[] packet = counting(44 + 300);
      DescriptorChain chain =
          popped(
              driver,
              driver.readable(slice(packet, 0, 30)),
              driver.readable(slice(packet, 30, 100)),
              driver.readable(slice(packet, 100, 344)),
              driver.writable(8));
      byte[] header = new byte[44];
      assertEquals(44, chain.read(header, 0, 44));
      IoVectors pieces = new IoVectors(8);
      assertEquals(300, chain.gatherReadable(pieces, 300));
      // The socket took 90 of them: back to the first byte it did not take, in the third one.
      chain.rewind();
      assertEquals(44 + 90, chain.skipReadable(44 + 90));
      assertArrayEquals(slice(packet, 134, 344), readRest(chain));

      chain.rewind();
      assertEquals(10, chain.skipReadable(10));
      assertArrayEquals(slice(packet, 10, 20), slice(readRest(chain), 0, 10), "mid-descriptor");
      chain.rewind();
      assertEquals(344, chain.skipReadable(1000), "at most to the first writable descriptor");
      assertEquals(0, chain.skipReadable(1));
      assertEquals(0, chain.read(new byte[1], 0, 1));
    }
  }
}
