package dev.bounce.pool;

/**
 * An address (and length) from a guest or frontend that bounce will not touch. Carries the numbers
 * so the caller can count, log and report them. No stack trace: it describes input, not a bug, and
 * a hostile guest must not make bounce spend time building traces.
 */
public abstract sealed class GuestAccessException extends Exception
    permits UnmappedAddressException, PoolViolationException {
  private final AddressKind kind;
  private final long address;
  private final long length;

  GuestAccessException(String message, AddressKind kind, long address, long length) {
    super(message, null, false, false);
    this.kind = kind;
    this.address = address;
    this.length = length;
  }

  public AddressKind kind() {
    return kind;
  }

  public long address() {
    return address;
  }

  public long length() {
    return length;
  }

  static String range(AddressKind kind, long address, long length) {
    return kind.label() + " " + Ranges.hex(address) + " length " + Long.toUnsignedString(length);
  }
}
