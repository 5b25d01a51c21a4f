package dev.bounce.it.realvm;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A process the harness starts (QEMU, bounce) with its stdout and stderr collected line by line, so
 * a test can wait for a line and a failure can show everything it printed. {@link #close} always
 * ends it: SIGTERM, then SIGKILL after a few seconds.
 */
final class ChildProcess implements AutoCloseable {
  private static final Duration GRACE = Duration.ofSeconds(5);

  /**
   * Children not yet closed; a JVM that ends early (surefire's timeout, Ctrl-C) still kills them.
   */
  private static final Set<Process> RUNNING = ConcurrentHashMap.newKeySet();

  static {
    Runtime.getRuntime()
        .addShutdownHook(new Thread(() -> RUNNING.forEach(Process::destroyForcibly)));
  }

  private final Process process;
  private final List<String> lines = new ArrayList<>();
  private boolean ended; // its output reached end of file: no more lines will come

  private ChildProcess(String name, Process process) {
    this.process = process;
    RUNNING.add(process);
    Thread.ofVirtual().name(name + "-output").start(this::collect);
  }

  static ChildProcess start(String name, List<String> command) throws IOException {
    try {
      return new ChildProcess(name, new ProcessBuilder(command).redirectErrorStream(true).start());
    } catch (IOException e) {
      throw new IOException("cannot start " + name + " (" + command.getFirst() + "): " + e, e);
    }
  }

  private void collect() {
    try (BufferedReader in =
        new BufferedReader(
            new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
      for (String line; (line = in.readLine()) != null; ) {
        synchronized (this) {
          lines.add(line.replace("\r", ""));
          notifyAll();
        }
      }
    } catch (IOException e) {
      // the process is gone and its pipe with it: what was read is kept
    }
    synchronized (this) {
      ended = true;
      notifyAll();
    }
  }

  /**
   * Waits for a line in which {@code pattern} is found.
   *
   * @return the match, or empty when the time is up or the process ended without printing one
   */
  synchronized Optional<Matcher> await(Pattern pattern, Duration timeout)
      throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    int next = 0;
    while (true) {
      for (; next < lines.size(); next++) {
        Matcher m = pattern.matcher(lines.get(next));
        if (m.find()) return Optional.of(m);
      }
      long left = deadline - System.nanoTime();
      if (left <= 0 || ended) {
        return Optional.empty();
      }
      TimeUnit.NANOSECONDS.timedWait(this, Math.min(left, TimeUnit.MILLISECONDS.toNanos(200)));
    }
  }

  long pid() {
    return process.pid();
  }

  boolean isAlive() {
    return process.isAlive();
  }

  /** How it ended, for messages: "still running" or "exited with N". */
  String state() {
    return process.isAlive() ? "still running" : "exited with " + process.exitValue();
  }

  synchronized boolean printedNothing() {
    return lines.isEmpty();
  }

  /** Everything it printed so far. */
  synchronized String output() {
    return lines.isEmpty() ? "(nothing)" : String.join("\n", lines);
  }

  @Override
  public void close() throws InterruptedException {
    process.destroy();
    if (!process.waitFor(GRACE.toSeconds(), TimeUnit.SECONDS)) {
      process.destroyForcibly().waitFor();
    }
    RUNNING.remove(process);
  }
}
