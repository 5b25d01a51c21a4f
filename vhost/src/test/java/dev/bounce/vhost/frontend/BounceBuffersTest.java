package dev.bounce.vhost.frontend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Ranges;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
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

  private GuestRam guest;
  private BounceBuffers dma;

  @BeforeEach
  void pool() throws Exception {
    guest = GuestRam.create(MemoryMode.POOL, RAM, 4 * MIB, POOL, MIB);
    dma = new BounceBuffers(guest, POOL, MIB);
  }

  @AfterEach
  void allReturned() {
    try {
      assertEquals(0, dma.bytesInUse(), "every slot freed");
    } finally {
      guest.close();
    }
  }

  /** {@code length} bytes of guest RAM at {@code offset} into it, filled with {@code value}. */
  private MemorySegment buffer(long offset, int length, int value) {
    MemorySegment bytes = guest.at(RAM + offset, length);
    bytes.fill((byte) value);
    return bytes;
  }

  @Test
  void aBufferForTheDeviceToWriteIsCopiedInAndBackWhole() {
    MemorySegment bytes = buffer(8192, 64, 0x5a);
    long mapped = dma.mapFromDevice(RAM + 8192, 64);
    assertTrue(Ranges.contains(POOL, MIB, mapped, 64), "the device gets a pool address");
    MemorySegment slot = guest.at(mapped, 64);
    assertEquals(-1, slot.mismatch(bytes), "the buffer's bytes are in the slot before the device");

    slot.asSlice(0, 10).fill((byte) 0x11); // the device writes 10 bytes
    bytes.fill((byte) 0); // what the guest's buffer held meanwhile does not matter
    dma.unmapFromDevice(mapped, RAM + 8192, 64);
    assertEquals((byte) 0x11, bytes.get(ValueLayout.JAVA_BYTE, 9));
    assertEquals((byte) 0x5a, bytes.get(ValueLayout.JAVA_BYTE, 10), "the rest came back too");
  }

  @Test
  void aBufferForTheDeviceToReadIsCopiedInAndNotBack() {
    MemorySegment bytes = buffer(4096, 32, 0x33);
    long mapped = dma.mapToDevice(RAM + 4096, 32);
    assertEquals(-1, guest.at(mapped, 32).mismatch(bytes));
    guest.at(mapped, 32).fill((byte) 0x44);
    dma.unmapToDevice(mapped, 32);
    assertEquals((byte) 0x33, bytes.get(ValueLayout.JAVA_BYTE, 0));
  }
}
