package dev.bounce.device.cli;

import dev.bounce.vhost.backend.BackendServer;

/**
 * {@code --max-guest-memory SIZE}, which every device command takes: the cap on the guest memory
 * one VMM connection may have bounce map ({@link BackendServer.Config#maxGuestMemory}); more is
 * refused. Like the restricted-DMA flags it applies to every guest of the command.
 */
final class GuestMemoryFlag {
  static final String NAME = "max-guest-memory";

  static final Flags.Flag FLAG =
      new Flags.Flag(
          NAME,
          "SIZE",
          "the most guest memory one VMM connection may have bounce map (its memory table, or"
              + " its part in the pool); a table or region beyond it is refused (default 1T, or"
              + " bounce's bound for all guests together if lower; at most that bound, half the"
              + " address space: 64T on x86-64)");

  private GuestMemoryFlag() {}

  /**
   * The cap from parsed {@code flags}, or the default.
   *
   * @throws UsageException when it is not a size, or one a {@link BackendServer.Config} refuses
   */
  static long maxGuestMemory(Flags flags) throws UsageException {
    long size = flags.size(NAME, BackendServer.Config.DEFAULT_MAX_GUEST_MEMORY);
    try {
      BackendServer.Config.checkMaxGuestMemory(size);
    } catch (IllegalArgumentException e) {
      throw new UsageException("--" + NAME + " " + flags.get(NAME, "") + ": " + e.getMessage());
    }
    return size;
  }
}
