package dev.bounce.vhost.backend;

import java.util.concurrent.TimeUnit;

/**
 * How long one ring is polled after it ran dry before its kicks are re-armed, adapted to its driver
 * the way KVM adapts halt polling (Documentation/virt/kvm/halt-polling.rst). A kick that comes soon
 * after the window closed, within the longest window allowed of the ring's last work, would have
 * been caught by a longer one, which spares the driver its eventfd write and this loop its wake-up
 * (tens of microseconds each on a VM's vCPUs): the window doubles, up to its maximum. A kick that
 * comes later than that finds a window that only kept the core busy: it halves, down to its base.
 * So a steady stream whose driver pauses between bursts (a guest copying a credit window's worth of
 * bytes) is polled across the pauses, and a driver that kicks now and then costs no more than the
 * base window. Only the data loop touches it.
 */
final class PollWindow {
  private final long baseNanos;
  private final long maxNanos;
  private long nanos;
  private boolean closed; // the last window closed with nothing to do, after work at lastWork
  private long lastWork;

  PollWindow(RingPolling bounds) {
    this.baseNanos = TimeUnit.MICROSECONDS.toNanos(bounds.baseMicros());
    this.maxNanos = TimeUnit.MICROSECONDS.toNanos(bounds.maxMicros());
    this.nanos = baseNanos;
  }

  /** How long the ring is polled now after its last work, in nanoseconds; 0: not at all. */
  long nanos() {
    return nanos;
  }

  /** A window opens: what a kick during it says is not about the last one. */
  void opened() {
    closed = false;
  }

  /**
   * The window closed with nothing to do (kicks are re-armed); the ring last worked at {@code
   * lastWork}.
   */
  void closed(long lastWork) {
    this.closed = true;
    this.lastWork = lastWork;
  }

  /** The driver kicked at {@code now}; learns from it if a window closed before it. */
  void kicked(long now) {
    if (!closed) return;
    closed = false;
    nanos =
        now - lastWork <= maxNanos ? Math.min(maxNanos, nanos * 2) : Math.max(baseNanos, nanos / 2);
  }

  /** Back to the base window: the ring starts over (stopped, reset, a new driver). */
  void reset() {
    nanos = baseNanos;
    closed = false;
  }
}
