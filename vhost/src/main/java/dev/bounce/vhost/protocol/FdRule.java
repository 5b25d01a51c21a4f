package dev.bounce.vhost.protocol;

/**
 * How many fds a message carries in its ancillary data (vhost-user.rst, "Communication" and each
 * request's text). Checked on every decode: an fd where none belongs would otherwise leak or be
 * mistaken for another.
 */
public enum FdRule {
  /** No fd. */
  NONE,
  /** Exactly one (SET_LOG_FD, SET_BACKEND_REQ_FD, ADD_MEM_REG, SET_INFLIGHT_FD, ...). */
  ONE,
  /**
   * None or one: SET_LOG_BASE carries one only with LOG_SHMFD; REM_MEM_REG "SHOULD" carry none but
   * back-ends "MAY accept" one from older front-ends and must close it.
   */
  ZERO_OR_ONE,
  /**
   * One, unless the payload's no-fd bit (bit 8 of the u64, VHOST_USER_VRING_NOFD_MASK) is set, then
   * none: SET_VRING_KICK/CALL/ERR and BACKEND_VRING_HOST_NOTIFIER_MSG.
   */
  ONE_UNLESS_NOFD,
  /** One per region of the memory table, in region order (SET_MEM_TABLE). */
  ONE_PER_REGION;

  /**
   * The most fds one message may carry: SET_MEM_TABLE's 8 regions (VHOST_MEMORY_BASELINE_NREGIONS),
   * and the spec's "at most 8 descriptors in each message" on the back-end channel.
   */
  public static final int MAX_FDS = 8;

  /** The fewest fds a message with this payload must carry. */
  public int min(Payload payload) {
    return switch (this) {
      case NONE, ZERO_OR_ONE -> 0;
      case ONE -> 1;
      case ONE_UNLESS_NOFD -> noFd(payload) ? 0 : 1;
      case ONE_PER_REGION -> regions(payload);
    };
  }

  /** The most fds a message with this payload may carry. */
  public int max(Payload payload) {
    return switch (this) {
      case NONE -> 0;
      case ONE, ZERO_OR_ONE -> 1;
      case ONE_UNLESS_NOFD -> noFd(payload) ? 0 : 1;
      case ONE_PER_REGION -> regions(payload);
    };
  }

  private static boolean noFd(Payload payload) {
    return switch (payload) {
      case VringFdIndex v -> v.noFd();
      case VringArea a -> a.noFd();
      default -> false;
    };
  }

  private static int regions(Payload payload) {
    return payload instanceof MemoryTable table ? table.regions().size() : 0;
  }
}
