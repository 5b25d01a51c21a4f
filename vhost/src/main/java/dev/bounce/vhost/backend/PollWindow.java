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
  private long lastWork; // the ring's last work, when the window last opened
  private boolean closed; // that window closed with nothing to do: the next kick teaches

  PollWindow(RingPolling bounds) {
    this.baseNanos = TimeUnit.MICROSECONDS.toNanos(bounds.baseMicros());
    this.maxNanos = TimeUnit.MICROSECONDS.toNanos(bounds.maxMicros());
    this.nanos = baseNanos;
  }

  /** How long the ring is polled now after its last work, in nanoseconds; 0: not at all. */
  long nanos() {
    return nanos;
  }

  /** A window opens after the ring's work at {@code now}: a kick during it teaches nothing. */
  void opened(long now) {
    lastWork = now;
    closed = false;
  }

  /** Whether the window opened last still runs at {@code now}. */
  boolean isOpen(long now) {
    return now - lastWork < nanos;
  }

  /** The window closed with nothing to do: kicks are re-armed. */
  void closed() {
    closed = true;
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
