package dev.bounce.vhost.backend;

/**
 * How long the data loop polls a ring that ran dry before it re-arms the driver's kicks and may
 * sleep ({@link PollWindow}): {@code baseMicros} at first, adapting up to {@code maxMicros} as the
 * driver's pauses ask. A base of 0 turns polling off (every burst after a pause costs the driver a
 * kick and the loop a wake-up); a maximum equal to the base keeps the window fixed. While a ring is
 * polled the loop's thread does not sleep, so the maximum is also what a driver that works once per
 * window can keep a core busy for: the loop serves every VM assigned to it.
 */
public record RingPolling(long baseMicros, long maxMicros) {
  /**
   * 50 us at first, 200 us at most: KVM's default halt_poll_ns on x86 is 200 us, for the same trade
   * of a core's idle time against the wake-ups of a driver that pauses between bursts.
   */
  public static final RingPolling DEFAULT = new RingPolling(50, 200);

  /** No polling: kicks are re-armed as soon as a ring runs dry. */
  public static final RingPolling OFF = new RingPolling(0, 0);

  /** One second: longer windows would keep a loop busy for a driver that has gone quiet. */
  public static final long LIMIT_MICROS = 1_000_000;

  public RingPolling {
    if (baseMicros < 0 || maxMicros < baseMicros || maxMicros > LIMIT_MICROS) {
      throw new IllegalArgumentException(
          "ring polling of "
              + baseMicros
              + " us at first and "
              + maxMicros
              + " us at most: each is 0.."
              + LIMIT_MICROS
              + " us, the first no more than the second");
    }
    if (baseMicros == 0 && maxMicros > 0) {
      // A window grows by doubling: from 0 it never would.
      throw new IllegalArgumentException(
          "ring polling of 0 us at first cannot grow to "
              + maxMicros
              + " us: 0 alone turns polling off");
    }
  }

  /**
   * Parses {@code US[:MAX]} in microseconds; {@code US} alone is a fixed window.
   *
   * @throws IllegalArgumentException when it is not that, or out of range
   */
  public static RingPolling parse(String text) {
    int colon = text.indexOf(':');
    try {
      long base = Long.parseLong(colon < 0 ? text : text.substring(0, colon));
      long max = colon < 0 ? base : Long.parseLong(text.substring(colon + 1));
      return new RingPolling(base, max);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "'" + text + "' is not US[:MAX] in microseconds (like 50:200, or 0 for no polling)");
    }
  }
}
