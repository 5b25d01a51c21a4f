package dev.bounce.vhost.protocol;

/** Range checks shared by the payload records' constructors. */
final class Fields {
  static final long U32_MAX = 0xFFFF_FFFFL;

  private Fields() {}

  /** Checks that {@code value} fits an unsigned 32-bit field. */
  static long u32(String name, long value) {
    if (value < 0 || value > U32_MAX) {
      throw new IllegalArgumentException(name + " does not fit 32 bits: " + value);
    }
    return value;
  }

  /** Checks that {@code value} fits an 8-bit field. */
  static int u8(String name, int value) {
    if (value < 0 || value > 0xFF) {
      throw new IllegalArgumentException(name + " does not fit 8 bits: " + value);
    }
    return value;
  }

  /** Whether {@code [start, start + length)} stays below 2^64 (both unsigned). */
  static boolean fits(long start, long length) {
    return Long.compareUnsigned(start + length, start) >= 0;
  }
}
