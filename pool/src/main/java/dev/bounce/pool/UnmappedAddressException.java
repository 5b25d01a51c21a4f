package dev.bounce.pool;

/** The range is not wholly inside memory the frontend shared. */
public final class UnmappedAddressException extends GuestAccessException {
  public UnmappedAddressException(AddressKind kind, long address, long length) {
    super(range(kind, address, length) + " is not inside shared memory", kind, address, length);
  }
}
