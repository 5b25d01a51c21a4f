package dev.bounce.pool;

import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * An eventfd(2): the kick and call notifications of a virtqueue. {@link #signal()} adds one; {@link
 * #drain()} reads and resets the counter. Neither blocks: bounce's own eventfds are created
 * non-blocking and adopted ones are made so.
 *
 * <p>Allocation-free: the 8-byte value travels through a per-thread buffer.
 */
public final class EventFd implements AutoCloseable {
  private static final ThreadLocal<MemorySegment> VALUE =
      ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(Long.BYTES));

  private final Fd fd;

  private EventFd(Fd fd) {
    this.fd = fd;
  }

  /** A new non-blocking, close-on-exec eventfd with counter 0. */
  public static EventFd create() throws NativeException {
    return new EventFd(Fd.adopt(Libc.eventfd(0, Libc.EFD_NONBLOCK | Libc.EFD_CLOEXEC)));
  }

  /**
   * Takes ownership of an eventfd received from a peer and makes it non-blocking. A blocking one
   * whose counter the peer filled would stall the thread that signals it, and with it every ring on
   * that loop; a socket or pipe in its place could stay readable forever and keep the loop
   * spinning.
   *
   * @throws IllegalArgumentException when {@code fd} is not an eventfd; it is closed then
   * @throws NativeException when it cannot be made non-blocking; it is closed then
   */
  public static EventFd adopt(Fd fd) throws NativeException {
    try {
      String kind = kind(fd.value());
      if (!kind.equals("anon_inode:[eventfd]")) {
        throw new IllegalArgumentException("fd " + fd.value() + " is " + kind + ", not an eventfd");
      }
      Libc.setNonBlocking(fd.value());
      return new EventFd(fd);
    } catch (NativeException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  /** What the fd is, as /proc names it: {@code anon_inode:[eventfd]}, {@code socket:[123]}... */
  private static String kind(int fd) {
    try {
      return Files.readSymbolicLink(Path.of("/proc/self/fd", Integer.toString(fd))).toString();
    } catch (IOException e) {
      return "unknown (" + e.getMessage() + ")";
    }
  }

  public Fd fd() {
    return fd;
  }

  /**
   * Adds one to the counter. A counter at its maximum (EAGAIN) is already signalled, so that is not
   * an error.
   */
  public void signal() throws NativeException {
    MemorySegment value = VALUE.get();
    value.set(JAVA_LONG_UNALIGNED, 0, 1L);
    Libc.write(fd.value(), value, Long.BYTES);
  }

  /** Reads and resets the counter; returns how many signals it held, 0 if none. */
  public long drain() throws NativeException {
    MemorySegment value = VALUE.get();
    long n = Libc.read(fd.value(), value, Long.BYTES);
    return n == Long.BYTES ? value.get(JAVA_LONG_UNALIGNED, 0) : 0;
  }

  /**
   * Waits until the counter is non-zero or {@code timeoutMillis} pass (-1: no limit), then drains
   * it.
   *
   * @return the signals it held, 0 on timeout
   */
  public long await(int timeoutMillis) throws NativeException {
    return Libc.pollIn(fd.value(), timeoutMillis) ? drain() : 0;
  }

  @Override
  public void close() {
    fd.close();
  }

  @Override
  public String toString() {
    return "eventfd(" + fd + ")";
  }
}
