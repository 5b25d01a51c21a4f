package dev.bounce.pool.testing;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A child JVM running a main class on this JVM's classpath, with native access enabled, its stdout
 * and stderr captured. {@link #close()} always destroys it, so a test that fails half-way leaves no
 * process behind: use it in try-with-resources.
 */
public final class ChildJvm implements AutoCloseable {
  /** JVM options every child gets. */
  public static final List<String> BASE_OPTIONS = List.of("--enable-native-access=ALL-UNNAMED");

  private final Process process;
  private final String mainClass;
  private final Capture stdout;
  private final Capture stderr;

  private ChildJvm(Process process, String mainClass) {
    this.process = process;
    this.mainClass = mainClass;
    this.stdout = new Capture(process.getInputStream(), mainClass + "-stdout");
    this.stderr = new Capture(process.getErrorStream(), mainClass + "-stderr");
  }

  /** Starts {@code mainClass} with {@code args}. */
  public static ChildJvm start(Class<?> mainClass, String... args) throws IOException {
    return start(List.of(), mainClass.getName(), List.of(args));
  }

  /** Starts {@code mainClass} with extra JVM options (after {@link #BASE_OPTIONS}) and args. */
  public static ChildJvm start(List<String> jvmOptions, String mainClass, List<String> args)
      throws IOException {
    List<String> command = new ArrayList<>();
    command.add(javaCommand());
    command.addAll(BASE_OPTIONS);
    command.addAll(jvmOptions);
    command.add("-cp");
    command.add(System.getProperty("java.class.path"));
    command.add(mainClass);
    command.addAll(args);
    ProcessBuilder builder = new ProcessBuilder(command);
    builder.redirectInput(ProcessBuilder.Redirect.PIPE);
    ChildJvm child = new ChildJvm(builder.start(), mainClass);
    child.process.getOutputStream().close(); // the child reads nothing from stdin
    return child;
  }

  /** The java launcher this JVM was started with (or java.home's). */
  public static String javaCommand() {
    return ProcessHandle.current()
        .info()
        .command()
        .orElseGet(() -> Path.of(System.getProperty("java.home"), "bin", "java").toString());
  }

  public Process process() {
    return process;
  }

  public long pid() {
    return process.pid();
  }

  public boolean isAlive() {
    return process.isAlive();
  }

  /**
   * Waits for the child to exit and for its output to be read to the end.
   *
   * @return the exit code
   * @throws TimeoutException when it is still running after {@code timeout} (it is left running;
   *     {@link #close()} destroys it)
   */
  public int waitFor(Duration timeout) throws InterruptedException, TimeoutException {
    if (!process.waitFor(timeout.toNanos(), TimeUnit.NANOSECONDS)) {
      throw new TimeoutException(
          mainClass + " still running after " + timeout.toMillis() + " ms; " + describe());
    }
    // The child has exited: its output ends, and the readers are done once they get the CPU.
    stdout.join(Duration.ofSeconds(20));
    stderr.join(Duration.ofSeconds(20));
    return process.exitValue();
  }

  /** What the child has written to stdout so far. */
  public String stdout() {
    return stdout.text();
  }

  /** What the child has written to stderr so far. */
  public String stderr() {
    return stderr.text();
  }

  /** State and output, for assertion messages. */
  public String describe() {
    String state = process.isAlive() ? "running" : "exit code " + process.exitValue();
    return mainClass
        + " (pid "
        + process.pid()
        + ", "
        + state
        + ")\n--- stdout ---\n"
        + stdout()
        + "--- stderr ---\n"
        + stderr();
  }

  /** Destroys the child if it still runs and waits for it. */
  @Override
  public void close() {
    if (process.isAlive()) {
      process.destroyForcibly();
    }
    try {
      process.waitFor(10, TimeUnit.SECONDS);
      stdout.join(Duration.ofSeconds(2));
      stderr.join(Duration.ofSeconds(2));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** Reads one stream of the child to its end on a daemon thread. */
  private static final class Capture {
    private final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    private final Thread thread;

    Capture(InputStream in, String name) {
      thread =
          Thread.ofPlatform()
              .daemon()
              .name(name)
              .start(
                  () -> {
                    byte[] buffer = new byte[8192];
                    try (in) {
                      int n;
                      while ((n = in.read(buffer)) > 0) {
                        synchronized (bytes) {
                          bytes.write(buffer, 0, n);
                        }
                      }
                    } catch (IOException e) {
                      synchronized (bytes) {
                        bytes.writeBytes(
                            ("\n[reading output failed: " + e + "]\n")
                                .getBytes(StandardCharsets.UTF_8));
                      }
                    }
                  });
    }

    String text() {
      synchronized (bytes) {
        return bytes.toString(StandardCharsets.UTF_8);
      }
    }

    /** Waits for the end of the stream; gives up quietly (output read so far stays). */
    void join(Duration timeout) throws InterruptedException {
      thread.join(timeout);
    }
  }
}
