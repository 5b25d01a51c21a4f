package dev.bounce.it;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * {@code scripts/bounce <args>} running in the background as a daemon, its stdout and stderr going
 * to a log file (a file, not a pipe: a process that logs a lot is never slowed by a slow reader). A
 * test waits for a line in the log and ends it with SIGTERM, the daemon's way out.
 */
final class BounceDaemon implements AutoCloseable {
  /** The checkout: the integration tests run in its integration-tests folder. */
  static final Path ROOT = Path.of("..").toAbsolutePath().normalize();

  /** How long a line may take: generous, since the machine may be busy with other work. */
  private static final Duration PATIENCE = Duration.ofSeconds(90);

  /** How much of the log a failure message shows: its end, as it may be megabytes long. */
  private static final int TAIL = 8192;

  private final String name;
  private final Path log;
  private final Process process;

  private BounceDaemon(String name, Path log, Process process) {
    this.name = name;
    this.log = log;
    this.process = process;
  }

  /** Starts {@code scripts/bounce args} in the checkout, stdout and stderr going to {@code log}. */
  static BounceDaemon start(Path log, String... args) throws IOException {
    Process process =
        new ProcessBuilder(command(args))
            .directory(ROOT.toFile())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile())
            .start();
    return new BounceDaemon("bounce " + args[0], log, process);
  }

  /** The command line of {@code scripts/bounce args}. */
  static List<String> command(String... args) {
    List<String> command = new ArrayList<>(List.of(ROOT.resolve("scripts/bounce").toString()));
    command.addAll(List.of(args));
    return command;
  }

  Process process() {
    return process;
  }

  /** Everything it logged so far. */
  String log() {
    try {
      return Files.readString(log, StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "(no log: " + e.getMessage() + ")";
    }
  }

  /** The log's last few KiB, for messages: a process that logs as it spins may write megabytes. */
  String tail() {
    String all = log();
    return all.length() <= TAIL ? all : "..." + all.substring(all.length() - TAIL);
  }

  /** Returns once {@code text} is in the log; fails if the process exits first or after 90 s. */
  void awaitLine(String text) throws InterruptedException {
    awaitLine(text, PATIENCE);
  }

  /** Returns once {@code text} is in the log; fails if the process exits first or after that. */
  void awaitLine(String text, Duration patience) throws InterruptedException {
    long deadline = System.nanoTime() + patience.toNanos();
    while (!log().contains(text)) {
      if (!process.isAlive()) {
        throw new AssertionError(name + " exited without logging '" + text + "': " + tail());
      }
      if (System.nanoTime() > deadline) {
        throw new AssertionError(
            "no '" + text + "' logged after " + patience.toSeconds() + " s: " + tail());
      }
      Thread.sleep(20);
    }
  }

  /**
   * SIGTERM, the daemon's way out; fails (having killed it) if it has not exited after {@code
   * patience}.
   *
   * @return its exit status
   */
  int stop(Duration patience) throws InterruptedException {
    process.destroy();
    if (!process.waitFor(patience.toNanos(), TimeUnit.NANOSECONDS)) {
      process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
      throw new AssertionError(name + " did not exit on SIGTERM: " + tail());
    }
    return process.exitValue();
  }

  /** Ends it if it still runs, checking nothing: SIGTERM, then SIGKILL after 10 s. */
  @Override
  public void close() throws InterruptedException {
    if (!process.isAlive()) return;
    process.destroy();
    if (!process.waitFor(10, TimeUnit.SECONDS)) process.destroyForcibly().waitFor();
  }
}
