package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * {@link ByteRing#read(ByteRing.Reader, int)}: bytes handed over where they are, in order; {@link
 * ByteRing#truncate}: what a short packet put in is taken back.
 */
class ByteRingTest {
  private static byte[] counting(int from, int n) {
    byte[] b = new byte[n];
    for (int i = 0; i < n; i++) b[i] = (byte) (from + i);
    return b;
  }

  /** Collects what a reader is handed, and in how many runs. */
  private static final class Collector implements ByteRing.Reader {
    final ByteArrayOutputStream got = new ByteArrayOutputStream();
    final List<Integer> runs = new ArrayList<>();

    @Override
    public void read(byte[] array, int offset, int length) {
      got.write(array, offset, length);
      runs.add(length);
    }
  }

  @Test
  void bytesAcrossTheRingsEndComeInTwoRunsInOrder() {
    ByteRing ring = new ByteRing(16);
    ring.write(MemorySegment.ofArray(counting(0, 10)), 0, 10);
    assertEquals(10, ring.read(MemorySegment.ofArray(new byte[10]), 0, 10));
    byte[] wrapped = counting(10, 12); // 6 bytes to the end of the ring, 6 from its start
    ring.write(MemorySegment.ofArray(wrapped), 0, 12);
    Collector reader = new Collector();
    assertEquals(12, ring.read(reader, 100));
    assertArrayEquals(wrapped, reader.got.toByteArray());
    assertEquals(List.of(6, 6), reader.runs);
    assertEquals(22, ring.consumed(), "counted as taken out");
    assertEquals(0, ring.size());
  }

  @Test
  void aReaderGetsNoMoreThanMaxAndNothingPastAMessageEnd() {
    ByteRing ring = new ByteRing(64);
    ring.write(MemorySegment.ofArray(counting(0, 5)), 0, 5);
    ring.markEnd();
    ring.write(MemorySegment.ofArray(counting(5, 20)), 0, 20);
    Collector reader = new Collector();
    assertEquals(3, ring.read(reader, 3));
    assertEquals(2, ring.read(reader, 100), "up to the message's end");
    assertTrue(ring.takeEnd());
    assertEquals(20, ring.read(reader, 100));
    assertArrayEquals(counting(0, 25), reader.got.toByteArray());
  }

  @Test
  void truncateTakesBackWhatWasPutInSinceAndNothingBefore() {
    ByteRing ring = new ByteRing(64);
    ring.write(MemorySegment.ofArray(counting(0, 8)), 0, 8);
    ring.markEnd();
    long mark = ring.produced();
    ring.write(MemorySegment.ofArray(counting(100, 20)), 0, 20);
    ring.truncate(mark);
    assertEquals(8, ring.size());
    assertEquals(64 - 8, ring.free());
    ring.write(MemorySegment.ofArray(counting(50, 4)), 0, 4);
    byte[] first = new byte[8];
    assertEquals(8, ring.read(MemorySegment.ofArray(first), 0, 100)); // stops at the end mark
    assertArrayEquals(counting(0, 8), first);
    assertTrue(ring.takeEnd());
    byte[] rest = new byte[4];
    assertEquals(4, ring.read(MemorySegment.ofArray(rest), 0, 100));
    assertArrayEquals(counting(50, 4), rest);
    assertThrows(IllegalArgumentException.class, () -> ring.truncate(ring.consumed() - 1));
  }
}
