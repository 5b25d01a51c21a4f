package dev.bounce.vhost.backend;

import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.GuestMemory;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.Ranges;
import dev.bounce.pool.RestrictedPool;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.util.Locale;
import java.util.Objects;

/**
 * How a server restricts device DMA to a bounce pool (../shared/design/RESTRICTED-DMA.md): the
 * policy toward drivers that do or do not accept VIRTIO_F_RESTRICTED_DMA (bit 27, the RFC's
 * VIRTIO_F_SWIOTLB), and where the pool is. With a pool, every ring and buffer address must lie in
 * it and only its pages are ever mapped, whatever the driver accepted.
 *
 * @param policy what to do with a driver that does not accept bit 27
 * @param pool where the pool is; null exactly when the policy is {@link Policy#OFF}
 */
public record RestrictedDma(Policy policy, Pool pool) {
  /** No pool, nothing offered: an ordinary vhost-user backend. */
  public static final RestrictedDma OFF = new RestrictedDma(Policy.OFF, null);

  /** {@code --restricted-dma=required|preferred|off}. */
  public enum Policy {
    /** A driver that does not accept bit 27 is refused; its rings never start. */
    REQUIRED,
    /** Offered; a driver that does not accept it is served, the pool still enforced. */
    PREFERRED,
    /** Not offered, no pool. */
    OFF;

    /** The flag spelling. */
    public String flag() {
      return name().toLowerCase(Locale.ROOT);
    }

    public static Policy ofFlag(String flag) {
      for (Policy p : values()) if (p.flag().equals(flag)) return p;
      throw new IllegalArgumentException(
          "restricted DMA policy '" + flag + "' is not one of required, preferred, off");
    }
  }

  /** Where the pool lies (ARCHITECTURE.md, "Address modes"). */
  public sealed interface Pool {}

  /**
   * A guest-physical window (the DT restricted-dma-pool node, {@code --pool GPA:SIZE}). The
   * frontend may share all RAM (only the window's pages are mapped) or only the pool (Firecracker's
   * swiotlb mode, whose memory table is exactly the window).
   */
  public record Window(long start, long size) implements Pool {
    /** Checks what {@link RestrictedPool#at} would refuse, so that a bad flag fails at start. */
    public Window {
      RestrictedPool.at(start, size).close();
    }

    @Override
    public String toString() {
      return "guest " + Ranges.describe(start, size);
    }
  }

  /**
   * The pool is the single region the frontend shares, wherever it lies ({@code
   * --pool-from-table}): for a Firecracker-style frontend whose swiotlb address the operator does
   * not know. A memory table of more than one region is refused.
   */
  public record SharedRegion() implements Pool {
    @Override
    public String toString() {
      return "the one region the frontend shares";
    }
  }

  /**
   * A pool bounce creates and hands to the frontend (VHOST_USER_PROTOCOL_F_SHMEM, {@code
   * --device-pool SIZE}; virtio-spec #248 VIRTIO_F_DMB). Ring addresses (SET_VRING_ADDR) and
   * descriptor addresses are offsets into it; the frontend's memory table is never mapped.
   */
  public record DeviceOwned(long size) implements Pool {
    public DeviceOwned {
      if (size <= 0 || size % Mapping.PAGE_SIZE != 0) {
        throw new IllegalArgumentException(
            "device pool of "
                + size
                + " bytes is not a positive multiple of the page size, "
                + Ranges.describeSize(Mapping.PAGE_SIZE));
      }
    }

    /**
     * Creates, seals and maps a pool of this size once, then frees it: what every session does, so
     * that a size the system cannot give (an mmap of too many terabytes) fails at startup and not
     * at each connection. Costs no memory: nothing is touched.
     *
     * @throws NativeException naming the call that failed
     */
    public void probe() throws NativeException {
      try (DevicePool pool = DevicePool.create(size)) {
        pool.memory().close();
      }
    }

    @Override
    public String toString() {
      return "device-owned, " + size + " bytes, addresses are offsets";
    }
  }

  public RestrictedDma {
    Objects.requireNonNull(policy, "policy");
    if ((policy == Policy.OFF) != (pool == null)) {
      throw new IllegalArgumentException(
          policy == Policy.OFF
              ? "restricted DMA off takes no pool (" + pool + ")"
              : "restricted DMA "
                  + policy.flag()
                  + " needs a pool (--pool, --pool-from-table or --device-pool)");
    }
  }

  public boolean enabled() {
    return pool != null;
  }

  /**
   * Feature bits offered with a pool: RESTRICTED_DMA, and ACCESS_PLATFORM beside it ("use the IOMMU
   * if you have one, otherwise the pool"; QEMU's iommu_platform=on and Firecracker's swiotlb mode
   * need it).
   */
  public long offeredFeatures() {
    return enabled()
        ? VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA)
            | VirtioFeatures.bit(VirtioFeatures.ACCESS_PLATFORM)
        : 0;
  }

  /** Protocol features a pool adds: SHMEM to hand a device-owned pool over. */
  public long offeredProtocolFeatures() {
    return pool instanceof DeviceOwned ? ProtocolFeature.SHMEM.mask() : 0;
  }

  /**
   * Why the driver's {@code accepted} features are refused, in words for a VMM operator; null when
   * they are served. Only bit 27 matters: QEMU with iommu_platform=on removes bit 33 from the
   * features it sends (REAL-PEERS.md), so it is never required back.
   */
  public String refusal(long accepted) {
    if (policy != Policy.REQUIRED || VirtioFeatures.has(accepted, VirtioFeatures.RESTRICTED_DMA)) {
      return null;
    }
    return "refusing the driver: it did not accept VIRTIO_F_RESTRICTED_DMA (bit 27, also called"
        + " VIRTIO_F_SWIOTLB) and --restricted-dma is required; the guest kernel lacks restricted-DMA"
        + " support for virtio, so run bounce with --restricted-dma preferred (the pool stays"
        + " enforced) or boot a guest kernel that negotiates bit 27";
  }

  /** The memory a session starts with, before the frontend shares any. */
  GuestAddressSpace emptyMemory() {
    return pool instanceof Window(long start, long size)
        ? RestrictedPool.at(start, size)
        : GuestMemory.empty();
  }

  @Override
  public String toString() {
    return enabled() ? "restricted DMA " + policy.flag() + ", pool " + pool : "restricted DMA off";
  }
}
