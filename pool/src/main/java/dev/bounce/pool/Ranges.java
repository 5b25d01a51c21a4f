package dev.bounce.pool;

import java.util.Locale;

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

  /**
   * {@code a + b} for sizes (non-negative), or {@link Long#MAX_VALUE} where that would overflow: a
   * sum of sizes a frontend gives, compared with a bound, must not wrap below it.
   */
  static long sizeSum(long a, long b) {
    return b > Long.MAX_VALUE - a ? Long.MAX_VALUE : a + b;
  }

  /** A byte count for messages: exact, and in the largest binary unit it reaches (2 TiB). */
  public static String describeSize(long bytes) {
    int unit = bytes < 1024 ? 0 : (63 - Long.numberOfLeadingZeros(bytes)) / 10;
    if (unit == 0) return bytes + " bytes";
    double scaled = bytes / (double) (1L << (10 * unit));
    String number =
        scaled == Math.rint(scaled)
            ? String.valueOf((long) scaled)
            : String.format(Locale.ROOT, "%.1f", scaled);
    return bytes + " bytes (" + number + " " + "KMGTPE".charAt(unit - 1) + "iB)";
  }

  public static String hex(long value) {
    return "0x" + Long.toHexString(value);
  }

  /** {@code [start, end)} in hex, for messages. */
  public static String describe(long start, long size) {
    return "[" + hex(start) + ", " + hex(start + size) + ")";
  }
}
