package dev.bounce.pool.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.TreeMap;

/**
 * The file descriptors this process has open, from /proc/self/fd: a leak shows as a count that does
 * not return to where it was.
 *
 * <p>Typical use: take {@link #count()} before the code under test, run it, close what it returned,
 * then {@link #assertBackTo(int)}. The assertion waits for closes that happen on another thread
 * (returning as soon as the count is back), but allows no slack in the number: one fd too many (or
 * too few) fails, and the failure lists every open fd with what it points to.
 */
public final class OpenFds {
  private static final Path FD_DIR = Path.of("/proc/self/fd");

  /**
   * How long {@link #assertBackTo(int)} waits for asynchronous closes: it returns as soon as the
   * count is back, so this only bounds how long a leak takes to fail, and must not be what a loop
   * thread descheduled on a busy machine runs into.
   */
  public static final Duration DEFAULT_SETTLE = Duration.ofSeconds(20);

  private OpenFds() {}

  /**
   * How many fds this process has open. The directory stream used to list /proc/self/fd is itself
   * an fd while the listing runs; it is not counted.
   */
  public static int count() {
    int entries = 0;
    try (DirectoryStream<Path> fds = Files.newDirectoryStream(FD_DIR)) {
      for (Path ignored : fds) entries++;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return entries - 1;
  }

  /**
   * Every open fd and what it points to (for example {@code /memfd:name (deleted)} or {@code
   * anon_inode:[eventfd]}), for failure messages. Includes the fd of the listing itself.
   */
  public static Map<Integer, String> list() {
    Map<Integer, String> open = new TreeMap<>();
    try (DirectoryStream<Path> fds = Files.newDirectoryStream(FD_DIR)) {
      for (Path fd : fds) {
        String target;
        try {
          target = Files.readSymbolicLink(fd).toString();
        } catch (NoSuchFileException e) {
          continue; // closed while we looked (the listing's own fd, or another thread's)
        } catch (IOException e) {
          target = "? (" + e.getMessage() + ")";
        }
        open.put(Integer.parseInt(fd.getFileName().toString()), target);
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return open;
  }

  /**
   * The open fds for a failure message: what they point to with how many point there (most first),
   * then the highest-numbered fds, which are usually the newest.
   */
  public static String summary() {
    Map<Integer, String> open = list();
    Map<String, Long> byTarget = new TreeMap<>();
    for (String target : open.values()) {
      String kind =
          target.startsWith("pipe:") || target.startsWith("socket:")
              ? target.replaceAll("\\[.*", "")
              : target;
      byTarget.merge(kind, 1L, Long::sum);
    }
    StringBuilder text = new StringBuilder(open.size() + " fds; by target: ");
    byTarget.entrySet().stream()
        .sorted(Map.Entry.<String, Long>comparingByValue().reversed())
        .limit(15)
        .forEach(e -> text.append(e.getKey()).append(" x").append(e.getValue()).append(", "));
    text.append("newest: ");
    open.entrySet().stream()
        .skip(Math.max(0, open.size() - 15))
        .forEach(e -> text.append(e.getKey()).append('=').append(e.getValue()).append(' '));
    return text.toString().strip();
  }

  /** What fd {@code fd} points to, or null when it is not open. */
  public static String target(int fd) {
    try {
      return Files.readSymbolicLink(FD_DIR.resolve(Integer.toString(fd))).toString();
    } catch (NoSuchFileException e) {
      return null;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** {@link #assertBackTo(int, Duration)} with {@link #DEFAULT_SETTLE}. */
  public static void assertBackTo(int baseline) {
    assertBackTo(baseline, DEFAULT_SETTLE);
  }

  /**
   * Waits up to {@code settle} for exactly {@code baseline} fds to be open; fails with the list of
   * open fds otherwise.
   */
  public static void assertBackTo(int baseline, Duration settle) {
    long deadline = System.nanoTime() + settle.toNanos();
    int now = count();
    while (now != baseline && System.nanoTime() - deadline < 0) {
      try {
        Thread.sleep(10);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
      now = count();
    }
    if (now != baseline) {
      throw new AssertionError(
          "expected "
              + baseline
              + " open fds, found "
              + now
              + " ("
              + (now > baseline
                  ? "leaked " + (now - baseline)
                  : "closed " + (baseline - now) + " too many")
              + ") after waiting "
              + settle.toMillis()
              + " ms; open now: "
              + summary());
    }
  }
}
