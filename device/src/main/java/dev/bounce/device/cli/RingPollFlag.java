package dev.bounce.device.cli;

import dev.bounce.vhost.backend.RingPolling;

/**
 * {@code --ring-poll US[:MAX]}, which every device command takes: how long the data loop polls a
 * ring that ran dry before it re-arms the guest's kicks ({@link RingPolling}), for every guest of
 * the command.
 */
final class RingPollFlag {
  static final String NAME = "ring-poll";

  static final Flags.Flag FLAG =
      new Flags.Flag(
          NAME,
          "US[:MAX]",
          "microseconds a ring that ran dry is polled before the guest's kicks are re-armed: US at"
              + " first, adapting up to MAX to the guest's pauses (default 50:200). Polling spares"
              + " the guest a kick and bounce a wake-up per burst, and keeps a core busy meanwhile;"
              + " 0 turns it off, one number fixes the window");

  private RingPollFlag() {}

  /**
   * The bounds from parsed {@code flags}, or the default.
   *
   * @throws UsageException when they are not bounds {@link RingPolling} takes
   */
  static RingPolling ringPolling(Flags flags) throws UsageException {
    if (!flags.has(NAME)) return RingPolling.DEFAULT;
    String text = flags.get(NAME, "");
    try {
      return RingPolling.parse(text);
    } catch (IllegalArgumentException e) {
      throw new UsageException("--" + NAME + " " + text + ": " + e.getMessage());
    }
  }
}
