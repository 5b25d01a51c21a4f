package dev.bounce.pool;

/**
 * Overflow-safe range arithmetic on unsigned 64-bit addresses, in one place. Guest and frontend
 * input reach these as raw u64: no sum here can wrap.
 */
public final class Ranges {
  private Ranges() {}

  /**
   * Whether {@code [address, address + length)} lies within {@code [start, start + size)}. A
   * zero-length range is inside when its address is inside or exactly one past the end (it touches
   * no byte). Every argument is unsigned; {@code start + size} must not wrap (checked where ranges
   * are created).
   */
  public static boolean contains(long start, long size, long address, long length) {
    long offset = address - start;
    return Long.compareUnsigned(address, start) >= 0
        && Long.compareUnsigned(offset, size) <= 0
        && Long.compareUnsigned(length, size - offset) <= 0;
  }

  /** Whether {@code [a, a + aSize)} and {@code [b, b + bSize)} share a byte; sizes are positive. */
  public static boolean overlap(long a, long aSize, long b, long bSize) {
    return Long.compareUnsigned(a - b, bSize) < 0 || Long.compareUnsigned(b - a, aSize) < 0;
  }

  /** Whether {@code start + size} stays within 2^64 (the last byte is {@code start + size - 1}). */
  public static boolean fits(long start, long size) {
    return size != 0 && Long.compareUnsigned(start + (size - 1), start) >= 0;
  }

  public static String hex(long value) {
    return "0x" + Long.toHexString(value);
  }

  /** {@code [start, end)} in hex, for messages. */
  public static String describe(long start, long size) {
    return "[" + hex(start) + ", " + hex(start + size) + ")";
  }
}
