package dev.bounce.vhost.backend;

import java.util.List;

/**
 * The restricted-DMA figures of one session (RESTRICTED-DMA.md), logged when it ends.
 *
 * @param poolSize bytes in the pool (0 while a pool-from-table session has no memory table yet)
 * @param peakBytesInFlight the most bytes of pool buffers the device held at once: chains popped
 *     and not yet returned in the used ring, summed over all queues, peaks per queue added (an
 *     upper bound of the true simultaneous peak)
 * @param violations per queue, how many times an address outside the pool stopped it
 */
public record DmaMetrics(long poolSize, long peakBytesInFlight, List<Long> violations) {
  public DmaMetrics {
    violations = List.copyOf(violations);
  }

  @Override
  public String toString() {
    return "restricted DMA: pool "
        + poolSize
        + " bytes, peak "
        + peakBytesInFlight
        + " bytes in flight, pool violations per queue "
        + violations;
  }
}
