package dev.bounce.pool;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * An owned file descriptor: closed exactly once, by whoever holds it last. Received fds
 * (SCM_RIGHTS) are wrapped at once so that no error path can leak them.
 */
public final class Fd implements AutoCloseable {
  private static final int CLOSED = -1;
  private static final System.Logger LOG = System.getLogger(Fd.class.getName());

  private final AtomicInteger value;

  private Fd(int value) {
    if (value < 0) throw new IllegalArgumentException("not an fd: " + value);
    this.value = new AtomicInteger(value);
  }

  /** Takes ownership of {@code fd}: closing this closes it. */
  public static Fd adopt(int fd) {
    return new Fd(fd);
  }

  /** Takes ownership of {@code fd} after checking that it is open in this process. */
  public static Fd adoptChecked(int fd) throws NativeException {
    Libc.fcntl(fd, Libc.F_GETFD, 0);
    return new Fd(fd);
  }

  /** The fd number; fails once closed, so a closed fd is never passed to a call by mistake. */
  public int value() {
    int fd = value.get();
    if (fd == CLOSED) throw new IllegalStateException("fd already closed");
    return fd;
  }

  public boolean isOpen() {
    return value.get() != CLOSED;
  }

  /**
   * Gives up ownership without closing, returning the number (for handing it on to another owner).
   */
  public int release() {
    int fd = value.getAndSet(CLOSED);
    if (fd == CLOSED) throw new IllegalStateException("fd already closed");
    return fd;
  }

  /**
   * Closes the fd the first time; later calls do nothing. A failing close(2) is logged, not thrown.
   */
  @Override
  public void close() {
    int fd = value.getAndSet(CLOSED);
    if (fd == CLOSED) return;
    try {
      Libc.close(fd);
    } catch (NativeException e) {
      LOG.log(System.Logger.Level.WARNING, e.getMessage());
    }
  }

  @Override
  public String toString() {
    int fd = value.get();
    return fd == CLOSED ? "fd(closed)" : "fd " + fd;
  }
}
