package dev.bounce.vhost.frontend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Ranges;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;

/**
 * The fake guest's bounce copies are Linux's (swiotlb since 5.18, restricted-dma-pool included): a
 * buffer goes into the pool at map time whichever way the device will use it, and a buffer the
 * device writes comes back whole at unmap, not only the bytes the device wrote.
 */
class BounceBuffersTest {
  private static final long RAM = 0x4000_0000L;
  private static final long POOL = 0x8000_0000L;
  private static final long MIB = 1 << 20;

  @Test
  void aBufferForTheDeviceToWriteIsCopiedInAndBackWhole() throws Exception {
    try (GuestRam guest = GuestRam.create(MemoryMode.POOL, RAM, 4 * MIB, POOL, MIB)) {
      BounceBuffers dma = new BounceBuffers(guest, POOL, MIB);
      long buffer = RAM + 8192;
      MemorySegment bytes = guest.at(buffer, 64);
      bytes.fill((byte) 0x5a);

      long mapped = dma.mapFromDevice(buffer, 64);
      assertTrue(Ranges.contains(POOL, MIB, mapped, 64), "the device gets a pool address");
      MemorySegment slot = guest.at(mapped, 64);
      assertEquals(
          -1, slot.mismatch(bytes), "the buffer's bytes are in the slot before the device");

      slot.asSlice(0, 10).fill((byte) 0x11); // the device writes 10 bytes
      bytes.fill((byte) 0); // what the guest's buffer held meanwhile does not matter
      dma.unmapFromDevice(mapped, buffer, 64);
      assertEquals((byte) 0x11, bytes.get(ValueLayout.JAVA_BYTE, 9));
      assertEquals((byte) 0x5a, bytes.get(ValueLayout.JAVA_BYTE, 10), "the rest came back too");
      assertEquals(0, dma.bytesInUse());
    }
  }

  @Test
  void aBufferForTheDeviceToReadIsCopiedInAndNotBack() throws Exception {
    try (GuestRam guest = GuestRam.create(MemoryMode.POOL, RAM, 4 * MIB, POOL, MIB)) {
      BounceBuffers dma = new BounceBuffers(guest, POOL, MIB);
      long buffer = RAM + 4096;
      MemorySegment bytes = guest.at(buffer, 32);
      bytes.fill((byte) 0x33);
      long mapped = dma.mapToDevice(buffer, 32);
      assertEquals(-1, guest.at(mapped, 32).mismatch(bytes));
      guest.at(mapped, 32).fill((byte) 0x44);
      dma.unmapToDevice(mapped, 32);
      assertEquals((byte) 0x33, bytes.get(ValueLayout.JAVA_BYTE, 0));
      assertEquals(0, dma.bytesInUse());
    }
  }
}
