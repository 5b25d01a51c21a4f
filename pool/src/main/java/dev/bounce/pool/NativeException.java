package dev.bounce.pool;

import java.io.IOException;

/**
 * A system call failed. The message names the call, what it was called on, and the error, for
 * example {@code mmap(fd 7, offset 0x1000, 4096 bytes) failed: EBADF (Bad file descriptor)}.
 */
public final class NativeException extends IOException {
  private final String call;
  private final int errno;

  public NativeException(String call, String what, int errno) {
    super(
        call
            + "("
            + what
            + ") failed: "
            + Libc.errnoName(errno)
            + " ("
            + Libc.strerror(errno)
            + ")");
    this.call = call;
    this.errno = errno;
  }

  /** The name of the system call that failed, for example {@code "mmap"}. */
  public String call() {
    return call;
  }

  /** The errno value the call left. */
  public int errno() {
    return errno;
  }
}
