package dev.bounce.vhost.protocol;

import java.util.HexFormat;

/** The few formatting rules every {@code describe()} shares, so log lines read the same. */
final class Format {
  private static final HexFormat BYTES = HexFormat.of();

  private Format() {}

  /** Unsigned hex with a 0x prefix: addresses and masks are unsigned on the wire. */
  static String hex(long value) {
    return "0x" + Long.toHexString(value);
  }

  /** Bytes as plain lowercase hex, as the recorded sequences print config space. */
  static String bytes(byte[] data) {
    return BYTES.formatHex(data);
  }

  /** "1 fd" / "2 fds": error messages are read by people. */
  static String fds(long count) {
    return count == 1 ? "1 fd" : count + " fds";
  }

  /** "1 byte" / "40 bytes". */
  static String bytesCount(long count) {
    return count == 1 ? "1 byte" : count + " bytes";
  }
}
