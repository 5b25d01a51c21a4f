package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import org.junit.jupiter.api.Test;

class VsockHeaderTest {
  @Test
  void fieldsAreLittleEndianAtTheirSpecOffsets() {
    MemorySegment s = MemorySegment.ofArray(new byte[VsockHeader.SIZE + 4]);
    VsockHeader.write(s, 4, 3, 2, 0x11223344, -2, 0x1000, 2, Op.RW, 1, 65536, 0x7fff_ffff);
    byte[] b = s.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
    assertEquals(3, b[4]); // src_cid
    assertEquals(2, b[12]); // dst_cid
    assertArrayEquals(new byte[] {0x44, 0x33, 0x22, 0x11}, java.util.Arrays.copyOfRange(b, 20, 24));
    assertEquals(Op.RW, b[4 + 30]);
    assertEquals(44, VsockHeader.SIZE);
    assertEquals(3, VsockHeader.srcCid(s, 4));
    assertEquals(2, VsockHeader.dstCid(s, 4));
    assertEquals(0x11223344, VsockHeader.srcPort(s, 4));
    assertEquals(0xffff_fffeL, Integer.toUnsignedLong(VsockHeader.dstPort(s, 4)));
    assertEquals(0x1000, VsockHeader.len(s, 4));
    assertEquals(2, VsockHeader.type(s, 4));
    assertEquals(Op.RW, VsockHeader.op(s, 4));
    assertEquals(1, VsockHeader.flags(s, 4));
    assertEquals(65536, VsockHeader.bufAlloc(s, 4));
    assertEquals(0x7fff_ffff, VsockHeader.fwdCnt(s, 4));
  }

  @Test
  void opsMatchTheSpec() {
    assertEquals(1, Op.REQUEST);
    assertEquals(7, Op.CREDIT_REQUEST);
    assertFalse(Op.isKnown(0));
    assertFalse(Op.isKnown(8));
    assertTrue(Op.isKnown(Op.SHUTDOWN));
    assertEquals("op 42", Op.name(42));
  }

  @Test
  void theRingGrowsWrapsAndKeepsMessageEnds() {
    ByteRing r = new ByteRing(10_000);
    byte[] data = new byte[9_000];
    for (int i = 0; i < data.length; i++) data[i] = (byte) i;
    byte[] out = new byte[9_000];
    for (int round = 0; round < 5; round++) {
      r.write(MemorySegment.ofArray(data), 0, 6_000);
      assertTrue(r.markEnd());
      r.write(MemorySegment.ofArray(data), 6_000, 3_000);
      assertTrue(r.markEnd());
      assertEquals(1_000, r.free());
      assertEquals(6_000, r.read(MemorySegment.ofArray(out), 0, 9_000)); // stops at the end
      assertTrue(r.takeEnd());
      assertEquals(3_000, r.read(MemorySegment.ofArray(out), 6_000, 9_000));
      assertTrue(r.takeEnd());
      assertArrayEquals(data, out);
      assertTrue(r.isEmpty());
    }
    assertEquals(45_000, r.consumed());
  }
}
