package dev.bounce.it.realvm;

import java.util.zip.CRC32;

/**
 * The bytes every real-VM stream carries: byte i is {@code i * 31 + (i >> 8) + 7}, as pattern() in
 * integration-tests/src/test/c/bounce-guest.c, so host and guest can each check what arrived.
 */
final class TestPattern {
  private TestPattern() {}

  /** Fills {@code into} with the pattern from stream offset {@code offset} on. */
  static void fill(byte[] into, int length, long offset) {
    for (int i = 0; i < length; i++) {
      long at = offset + i;
      into[i] = (byte) (at * 31 + (at >>> 8) + 7);
    }
  }

  /** CRC-32 of the first {@code length} pattern bytes (what bounce-guest prints as sent_crc). */
  static long crc(long length) {
    CRC32 crc = new CRC32();
    byte[] chunk = new byte[64 * 1024];
    for (long at = 0; at < length; at += chunk.length) {
      int n = (int) Math.min(chunk.length, length - at);
      fill(chunk, n, at);
      crc.update(chunk, 0, n);
    }
    return crc.getValue();
  }
}
