package dev.bounce.vhost.frontend;

/**
 * What guest memory the fake frontend shares with the backend (ARCHITECTURE.md, "Address modes").
 */
public enum MemoryMode {
  /**
   * All guest RAM, like QEMU with memory-backend-memfd,share=on. With a pool, the guest still uses
   * it.
   */
  SHARED,
  /**
   * Only the pool, its own memfd, like Firecracker's swiotlb mode; addresses are GPAs inside it.
   */
  POOL,
  /**
   * The backend owns the pool and hands it over (SHMEM: GET_SHMEM_CONFIG, BACKEND_SHMEM_MAP); no
   * guest memory is shared, and addresses, the ring addresses of SET_VRING_ADDR included, are
   * offsets into the pool (see GuestRam).
   */
  DEVICE_POOL;

  /** The flag spelling: shared, pool, device-pool. */
  public String flag() {
    return name().toLowerCase(java.util.Locale.ROOT).replace('_', '-');
  }

  public static MemoryMode ofFlag(String flag) {
    for (MemoryMode mode : values()) if (mode.flag().equals(flag)) return mode;
    throw new IllegalArgumentException(
        "memory mode '" + flag + "' is not one of shared, pool, device-pool");
  }
}
