package dev.bounce.it.realvm;

import java.util.Map;

/** One direction's count and CRC-32, as bounce-guest prints them and as the host side saw them. */
record Transfer(long bytes, long crc) {
  /** What sending {@code bytes} of the {@link TestPattern} amounts to. */
  static Transfer ofPattern(long bytes) {
    return new Transfer(bytes, TestPattern.crc(bytes));
  }

  /** The "sent" or "received" side of a guest result line's fields. */
  static Transfer of(Map<String, String> fields, String side) {
    return new Transfer(
        Long.parseLong(fields.get(side)), Long.parseLong(fields.get(side + "_crc"), 16));
  }

  @Override
  public String toString() {
    return bytes + " bytes, crc " + String.format("%08x", crc);
  }
}
