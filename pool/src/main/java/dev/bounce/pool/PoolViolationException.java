package dev.bounce.pool;

/**
 * The range is not wholly inside the restricted pool: the guest broke the restricted-DMA contract.
 */
public final class PoolViolationException extends GuestAccessException {
  private final long poolStart;
  private final long poolSize;

  public PoolViolationException(
      AddressKind kind, long address, long length, long poolStart, long poolSize) {
    super(
        range(kind, address, length)
            // A frontend address (a ring's, from SET_VRING_ADDR) is in another address space than
            // the pool's guest-physical bounds: say which mapping it missed.
            + (kind == AddressKind.FRONTEND_VIRTUAL
                ? " is not in the frontend's mapping of the restricted pool "
                : " is outside the restricted pool ")
            + Ranges.describe(poolStart, poolSize),
        kind,
        address,
        length);
    this.poolStart = poolStart;
    this.poolSize = poolSize;
  }

  /** The pool's first guest-physical address. */
  public long poolStart() {
    return poolStart;
  }

  public long poolSize() {
    return poolSize;
  }
}
