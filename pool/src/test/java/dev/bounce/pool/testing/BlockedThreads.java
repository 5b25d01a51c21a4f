package dev.bounce.pool.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;

/**
 * Threads that a test waits to see blocked in a syscall, for cases that only exist while a call is
 * under way (a mapping closed during a read(2) into it, a receiver woken by shutdown(2)). A sleep
 * only makes that likely, and a thread not there yet turns such a test into a pass without the
 * case. The kernel tells, in /proc/self/task/TID/syscall: the syscall and its arguments while the
 * thread sleeps in one, "running" while it runs.
 */
public final class BlockedThreads {
  /** The syscalls tests wait in: their numbers on x86-64, and in the generic table (aarch64). */
  public enum Syscall {
    READ(0, 63),
    SENDMSG(46, 211),
    RECVMSG(47, 212);

    private final int number;

    Syscall(int x86, int generic) {
      this.number = "amd64".equals(System.getProperty("os.arch")) ? x86 : generic;
    }
  }

  /** Thread names stay within the 15 characters the kernel keeps of them (TASK_COMM_LEN). */
  private static final AtomicInteger NAMES = new AtomicInteger();

  private BlockedThreads() {}

  /**
   * Starts {@code task} on a new platform thread named uniquely in this process, as {@link
   * #awaitBlocked} finds it by name; a daemon, so that one left blocked by a failed test does not
   * keep the JVM.
   */
  public static Thread start(Runnable task) {
    return Thread.ofPlatform().name("blocked-" + NAMES.incrementAndGet()).daemon(true).start(task);
  }

  /**
   * Waits until {@code thread} (from {@link #start}) sleeps in {@code syscall} with {@code fd} as
   * its first argument.
   *
   * @throws AssertionError when it does not within {@code timeout}, saying where it was
   */
  public static void awaitBlocked(Thread thread, Syscall syscall, int fd, Duration timeout)
      throws InterruptedException {
    await(thread, syscall, fd, timeout);
  }

  /**
   * {@link #awaitBlocked(Thread, Syscall, int, Duration)} on whichever fd: for a thread that makes
   * that call on one fd only, whose number the test cannot get.
   */
  public static void awaitBlocked(Thread thread, Syscall syscall, Duration timeout)
      throws InterruptedException {
    await(thread, syscall, null, timeout);
  }

  private static void await(Thread thread, Syscall syscall, Integer fd, Duration timeout)
      throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    String last = "not found in /proc/self/task";
    while (true) {
      Path task = task(thread.getName());
      if (task != null) {
        String[] fields = read(task.resolve("syscall")).split(" ");
        if (fields.length > 1
            && fields[0].equals(Integer.toString(syscall.number))
            && (fd == null || Long.decode(fields[1]) == fd.longValue())) {
          return;
        }
        last = "in " + String.join(" ", fields);
      }
      if (System.nanoTime() > deadline) {
        throw new AssertionError(
            thread.getName()
                + " not blocked in "
                + syscall
                + (fd == null ? "" : " on fd " + fd)
                + ": "
                + last);
      }
      Thread.sleep(1);
    }
  }

  /** The /proc/self/task directory of the thread named {@code name}, or null. */
  private static Path task(String name) {
    try (Stream<Path> tasks = Files.list(Path.of("/proc/self/task"))) {
      return tasks.filter(t -> read(t.resolve("comm")).equals(name)).findFirst().orElse(null);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** One line of a /proc file; empty when the thread ended meanwhile. */
  private static String read(Path file) {
    try {
      return Files.readString(file).strip();
    } catch (NoSuchFileException e) {
      return "";
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
