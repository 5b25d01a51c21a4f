package dev.bounce.pool;

import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * The layouts of virtio's little-endian fields. Unaligned: rings and headers may sit at any host
 * address (regions are mapped from a page boundary plus the frontend's mmap offset).
 */
public final class LittleEndian {
  public static final ValueLayout.OfShort LE16 =
      ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  public static final ValueLayout.OfInt LE32 =
      ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  public static final ValueLayout.OfLong LE64 =
      ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

  private LittleEndian() {}
}
