package dev.bounce.device.cli;

import dev.bounce.pool.NativeException;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.backend.RestrictedDma.Policy;
import java.util.ArrayList;
import java.util.List;

/**
 * The restricted-DMA flags every device command takes (../shared/design/RESTRICTED-DMA.md): add
 * {@link #FLAGS} to a command's flags, then turn what was parsed into the engine's configuration
 * with {@link #restrictedDma} and hand it to {@code BackendServer.Config}.
 */
final class DmaFlags {
  static final String POOL = "pool";
  static final String POOL_FROM_TABLE = "pool-from-table";
  static final String DEVICE_POOL = "device-pool";
  static final String POLICY = "restricted-dma";

  /** The flags, for a command's flag list. */
  static final List<Flags.Flag> FLAGS =
      List.of(
          new Flags.Flag(
              POOL,
              "GPA:SIZE",
              "the restricted DMA pool in guest-physical space (like 0x5c000000:16M, the DT"
                  + " restricted-dma-pool node): only its pages are mapped, every ring and buffer"
                  + " must lie in it; works whether the VMM shares all RAM or only the pool"),
          new Flags.Flag(
              POOL_FROM_TABLE,
              null,
              "the pool is the one memory region the VMM shares, wherever it lies (Firecracker's"
                  + " swiotlb mode); a memory table of more regions is refused"),
          new Flags.Flag(
              DEVICE_POOL,
              "SIZE",
              "bounce creates a pool of SIZE and hands it to the VMM (vhost-user SHMEM:"
                  + " GET_SHMEM_CONFIG, BACKEND_SHMEM_MAP); ring and buffer addresses are offsets"
                  + " into it"),
          new Flags.Flag(
              POLICY,
              "POLICY",
              "required (refuse a driver that does not accept VIRTIO_F_RESTRICTED_DMA, bit 27),"
                  + " preferred (serve it, the pool still enforced) or off; default preferred with"
                  + " a pool, off without"));

  private DmaFlags() {}

  /**
   * The engine's restricted-DMA configuration from parsed {@code flags}.
   *
   * @throws UsageException when the flags contradict each other or a value is malformed
   */
  static RestrictedDma restrictedDma(Flags flags) throws UsageException {
    List<String> given = new ArrayList<>();
    for (String name : List.of(POOL, POOL_FROM_TABLE, DEVICE_POOL)) {
      if (flags.has(name)) given.add("--" + name);
    }
    if (given.size() > 1) {
      throw new UsageException(String.join(" and ", given) + " exclude each other: give one pool");
    }
    RestrictedDma.Pool pool = null;
    try {
      if (flags.has(POOL)) {
        long[] window = window(flags.get(POOL, ""));
        pool = new RestrictedDma.Window(window[0], window[1]);
      } else if (flags.has(POOL_FROM_TABLE)) {
        pool = new RestrictedDma.SharedRegion();
      } else if (flags.has(DEVICE_POOL)) {
        pool = devicePool(flags);
      }
      Policy policy =
          flags.has(POLICY)
              ? Policy.ofFlag(flags.get(POLICY, ""))
              : pool == null ? Policy.OFF : Policy.PREFERRED;
      if (policy != Policy.OFF && pool == null) {
        throw new UsageException(
            "--restricted-dma "
                + policy.flag()
                + " needs a pool: give --pool GPA:SIZE, --pool-from-table or --device-pool SIZE");
      }
      if (policy == Policy.OFF && pool != null) {
        throw new UsageException(
            "--restricted-dma off contradicts " + given.getFirst() + ": drop one of them");
      }
      return new RestrictedDma(policy, pool);
    } catch (IllegalArgumentException e) {
      throw new UsageException(e.getMessage());
    }
  }

  /**
   * --device-pool SIZE, created and mapped once here, as each session will: a size the system
   * cannot give is refused now, not at every connection.
   */
  private static RestrictedDma.DeviceOwned devicePool(Flags flags) throws UsageException {
    String text = "--" + DEVICE_POOL + " " + flags.get(DEVICE_POOL, "");
    RestrictedDma.DeviceOwned pool;
    try {
      pool = new RestrictedDma.DeviceOwned(flags.size(DEVICE_POOL, 0));
    } catch (IllegalArgumentException e) {
      throw new UsageException(text + ": " + e.getMessage());
    }
    try {
      pool.probe();
    } catch (IllegalArgumentException e) { // over the bound on guest memory mapped
      throw new UsageException(text + ": " + e.getMessage());
    } catch (NativeException e) {
      throw new UsageException(
          text
              + ": this system cannot give a pool of "
              + pool.size()
              + " bytes ("
              + e.getMessage()
              + "); give a smaller size");
    }
    return pool;
  }

  /** GPA:SIZE, for example 0x5c000000:16M: {start, size}. */
  static long[] window(String text) throws UsageException {
    int colon = text.indexOf(':');
    if (colon < 0) {
      throw new UsageException("--pool takes GPA:SIZE (like 0x5c000000:16M), not " + text);
    }
    try {
      long start = Flags.parseNumber(text.substring(0, colon));
      return new long[] {start, Flags.parseSize("--pool", text.substring(colon + 1))};
    } catch (NumberFormatException e) {
      throw new UsageException("--pool: '" + text.substring(0, colon) + "' is not an address");
    }
  }
}
