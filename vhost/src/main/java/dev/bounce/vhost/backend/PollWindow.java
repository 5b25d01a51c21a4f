package dev.bounce.vhost.backend;

/**
 * How long one ring is polled after it ran dry before its kicks are re-armed, adapted to its driver
 * the way KVM adapts halt polling (Documentation/virt/kvm/halt-polling.rst). A kick that comes soon
 * after the window closed, sooner than the longest window allowed, would have been caught by a
 * longer one, which spares the driver its eventfd write and this loop its wake-up (tens of
 * microseconds each on a VM's vCPUs): the window doubles, up to its maximum. A kick that comes
 * later than that finds a window that only kept the core busy: it halves, down to its base. So a
 * steady stream whose driver pauses between bursts (a guest copying a credit window's worth of
 * bytes) is polled across the pauses, and a driver that kicks now and then costs no more than the
 * base window. Only the data loop touches it.
 */
final class PollWindow {
  private final long baseNanos;
  private final long maxNanos;
  private long nanos;
  private boolean rearmed; // the last window closed with nothing to do, at rearmedAt
  private long rearmedAt;

  /**
   * @param baseNanos the window a ring starts with and never goes below; 0 turns polling off
   * @param maxNanos the longest it grows to; at least {@code baseNanos}
   */
  PollWindow(long baseNanos, long maxNanos) {
    if (baseNanos < 0 || maxNanos < baseNanos) {
      throw new IllegalArgumentException(
          "poll window base " + baseNanos + " ns, maximum " + maxNanos + " ns");
    }
    this.baseNanos = baseNanos;
    this.maxNanos = maxNanos;
    this.nanos = baseNanos;
  }

  /** How long the ring is polled now after its last work, in nanoseconds. */
  long nanos() {
    return nanos;
  }

  /** The window closed at {@code now} with nothing to do: kicks are re-armed. */
  void rearmed(long now) {
    rearmed = true;
    rearmedAt = now;
  }

  /** The driver kicked at {@code now}; learns from it if kicks had been re-armed by a window. */
  void kicked(long now) {
    if (!rearmed) return;
    rearmed = false;
    long sinceLastWork = nanos + (now - rearmedAt);
    nanos =
        sinceLastWork <= maxNanos ? Math.min(maxNanos, nanos * 2) : Math.max(baseNanos, nanos / 2);
  }

  /** Back to the base window: the ring starts over (stopped, reset). */
  void reset() {
    nanos = baseNanos;
    rearmed = false;
  }
}
