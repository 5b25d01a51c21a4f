package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** scripts/bounce as a user runs it: the README's main command and the launcher's help. */
class LauncherTest {
  record Run(int status, String out, String err) {}

  /**
   * {@code scripts/bounce frontend --device vsock} with 64 MiB of guest RAM against the backend at
   * {@code socket} whose host side is {@code uds}, printing JSON; {@code extra} flags after.
   */
  static Run vsockFrontend(Path socket, Path uds, String... extra)
      throws IOException, InterruptedException {
    List<String> args =
        new java.util.ArrayList<>(
            List.of(
                "frontend",
                "--socket",
                socket.toString(),
                "--device",
                "vsock",
                "--uds-path",
                uds.toString(),
                "--memory",
                "64M",
                "--json"));
    args.addAll(List.of(extra));
    return launch(args.toArray(String[]::new));
  }

  /**
   * That {@code run} of {@link #vsockFrontend} succeeded: {@code connections} streams, each {@code
   * bytesEach} bytes both ways, no error; {@code context} goes into every failure message.
   */
  static Map<String, Object> assertVsockStreams(
      Run run, int connections, long bytesEach, String context) {
    String what = context + ": " + run.out() + run.err();
    assertEquals(0, run.status(), what);
    Map<String, Object> json = Json.object(run.out().strip());
    assertEquals((double) connections, json.get("connections"), what);
    for (String way : new String[] {"guest_to_host", "host_to_guest"}) {
      Map<?, ?> stats = (Map<?, ?>) json.get(way);
      assertEquals((double) connections * bytesEach, stats.get("bytes"), way + ": " + what);
      assertEquals(0.0, stats.get("errors"), way + ": " + what);
    }
    return json;
  }

  static Run launch(String... args) throws IOException, InterruptedException {
    return launch(Duration.ofSeconds(120), args);
  }

  /** {@link #launch} that fails when the command has not finished within {@code limit}. */
  static Run launch(Duration limit, String... args) throws IOException, InterruptedException {
    Path out = Files.createTempFile("bounce-out", ".txt");
    Path err = Files.createTempFile("bounce-err", ".txt");
    try {
      Process process =
          new ProcessBuilder(BounceDaemon.command(args))
              .directory(BounceDaemon.ROOT.toFile())
              .redirectOutput(out.toFile())
              .redirectError(err.toFile())
              .start();
      try {
        if (!process.waitFor(limit.toNanos(), TimeUnit.NANOSECONDS)) {
          throw new AssertionError(
              "scripts/bounce "
                  + String.join(" ", args)
                  + " did not finish within "
                  + limit.toSeconds()
                  + " s: "
                  + Files.readString(err, StandardCharsets.UTF_8));
        }
      } finally {
        process.destroyForcibly(); // also when the test timed out: no process outlives it
      }
      return new Run(
          process.exitValue(),
          Files.readString(out, StandardCharsets.UTF_8),
          Files.readString(err, StandardCharsets.UTF_8));
    } finally {
      Files.deleteIfExists(out);
      Files.deleteIfExists(err);
    }
  }

  /**
   * {@code scripts/bounce args} is refused as a usage error: status 2 and one line on stderr, with
   * no stack trace, that contains {@code says}.
   *
   * @return that line
   */
  static String assertUsageError(String says, String... args)
      throws IOException, InterruptedException {
    // A usage error comes at startup: a command that is still running after 30 s took the flags.
    Run run = launch(Duration.ofSeconds(30), args);
    String what = "scripts/bounce " + String.join(" ", args) + ": " + run.out() + run.err();
    assertEquals(2, run.status(), what);
    List<String> lines = run.err().strip().lines().toList();
    assertEquals(1, lines.size(), what);
    assertTrue(lines.getFirst().startsWith("bounce " + args[0] + ": "), what);
    assertTrue(lines.getFirst().contains(says), "'" + says + "' not in " + what);
    return lines.getFirst();
  }

  @Test
  void helpListsTheCommands() throws Exception {
    Run run = launch("--help");
    assertEquals(0, run.status(), run.err());
    assertTrue(run.out().contains("demo "), run.out());
    assertTrue(run.out().startsWith("usage: bounce <command>"), run.out());
  }

  @Test
  void helpWithACommandPrintsThatCommandsHelp() throws Exception {
    Run run = launch("help", "vsock");
    assertEquals(0, run.status(), run.err());
    assertTrue(run.out().startsWith("usage: bounce vsock "), run.out());
    assertTrue(run.out().contains("--uds-path PATH"), run.out());
    assertUsageError("unknown command 'nope'", "help", "nope");
  }

  @Test
  void unknownCommandIsAUsageError() throws Exception {
    Run run = launch("no-such-command");
    assertEquals(2, run.status());
    assertTrue(run.err().contains("unknown command 'no-such-command'"), run.err());
  }

  @Test
  void unknownFlagIsAUsageError() throws Exception {
    Run run = launch("demo", "--frobnicate");
    assertEquals(2, run.status());
    assertTrue(run.err().contains("unknown flag --frobnicate"), run.err());
  }

  @Test
  void demoStreamsBothWaysThroughASecondBackendProcessAndCleansUp() throws Exception {
    Run run = launch("demo");
    assertEquals(0, run.status(), run.out() + run.err());
    String out = run.out();
    assertTrue(out.contains("[demo    ] backend process "), out);
    assertTrue(out.contains("connections:   4 (4 open at once"), out);
    assertTrue(out.contains("guest -> host: 16.0 MiB in "), out);
    assertTrue(out.contains("host -> guest: 16.0 MiB in "), out);
    assertTrue(out.contains("checksums:     OK"), out);
    assertTrue(out.contains("bit 27, VIRTIO_F_RESTRICTED_DMA, accepted"), out);
    assertTrue(
        out.contains("DMA pool:      16 MiB, enforced by the backend; at most ")
            && out.contains("addresses outside it per queue: 0, 0, 0"),
        out);
    assertTrue(out.contains("backend:       0 guest errors, exited on SIGTERM"), out);
    assertTrue(out.contains("result:        OK"), out);
    Path dir = demoDir(out);
    assertFalse(Files.exists(dir), dir + ", the demo's directory, is left: " + out);
  }

  /**
   * Two launchers started at once while the jar is stale (the README's {@code scripts/bounce
   * echo-backend ... &} then {@code scripts/bounce frontend ...}) build it once: the second waits
   * for the first's build, says so, and then runs the jar it made. Run on a copy of the launcher in
   * a checkout of fakes: a Maven wrapper that takes 3 s to "build" and counts its builds, and a JDK
   * whose java prints its arguments.
   */
  @Test
  void twoLaunchersOfAStaleJarBuildItOnceAndTheSecondWaitsForIt(@TempDir Path root)
      throws Exception {
    Path jdk = fakeCheckout(root);
    Path first = root.resolve("first.err");
    Path second = root.resolve("second.err");
    Process a = fakeLaunch(root, jdk, first);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (!Files.exists(root.resolve("building"))) {
      assertTrue(a.isAlive() && System.nanoTime() < deadline, "the first never built");
      Thread.sleep(20);
    }
    Process b = fakeLaunch(root, jdk, second);
    for (Process p : List.of(a, b)) {
      assertTrue(p.waitFor(60, TimeUnit.SECONDS), "a launcher did not finish");
    }
    String said = Files.readString(first) + "---\n" + Files.readString(second);
    assertEquals(0, a.exitValue(), said);
    assertEquals(0, b.exitValue(), said);
    assertEquals(List.of("build"), Files.readAllLines(root.resolve("builds")), said);
    assertTrue(Files.readString(second).contains("waiting for it to finish"), said);
    for (Process p : List.of(a, b)) {
      String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      assertTrue(out.contains("-jar " + root.resolve("device/target/bounce.jar") + " --help"), out);
    }
  }

  /**
   * The launcher keeps the fds it was given: one that builds a stale jar takes its lock on an fd of
   * bash's choosing, so `--fd 9` (or a socket activation passing seven fds) still finds its socket,
   * and the build does not hold it.
   */
  @Test
  void aLauncherThatBuildsKeepsTheFdsItWasGiven(@TempDir Path root) throws Exception {
    Path jdk = fakeCheckout(root);
    Path given = Files.writeString(root.resolve("given"), "the caller's fd 9");
    ProcessBuilder builder =
        new ProcessBuilder(
                "bash",
                "-c",
                "exec 9<\"$1\"; exec scripts/bounce --help",
                "launch",
                given.toString())
            .directory(root.toFile())
            .redirectError(root.resolve("launch.err").toFile());
    builder.environment().put("JAVA_HOME", jdk.toString());
    Process p = builder.start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the launcher did not finish");
    assertEquals(List.of("build"), Files.readAllLines(root.resolve("builds")), out);
    assertTrue(out.contains("fd 9: " + given), out);
  }

  /**
   * A checkout of fakes around a copy of the launcher: a Maven wrapper that takes 3 s to "build"
   * and counts its builds, and a JDK whose java prints its arguments and what its fd 9 is.
   *
   * @return the fake JDK's home
   */
  private static Path fakeCheckout(Path root) throws IOException {
    for (String script : List.of("scripts/bounce", "scripts/lib/jdk.sh")) {
      Path copy = root.resolve(script);
      Files.createDirectories(copy.getParent());
      Files.copy(BounceDaemon.ROOT.resolve(script), copy);
    }
    executable(
        root.resolve("mvnw"),
        "echo build >> builds; touch building; sleep 3; mkdir -p device/target;"
            + " echo jar > device/target/bounce.jar");
    Path jdk = root.resolve("jdk");
    executable(jdk.resolve("bin/javac"), "exit 0");
    executable(
        jdk.resolve("bin/java"),
        "case \"$1\" in -XshowSettings*) echo ' java.specification.version = 25' >&2; exit 0;; esac;"
            + " echo \"java $*\"; echo \"fd 9: $(readlink /proc/$$/fd/9)\"");
    return jdk;
  }

  private static void executable(Path file, String script) throws IOException {
    Files.createDirectories(file.getParent());
    Files.writeString(file, "#!/bin/sh\n" + script + "\n");
    assertTrue(file.toFile().setExecutable(true));
  }

  private static Process fakeLaunch(Path root, Path jdk, Path err) throws IOException {
    ProcessBuilder builder =
        new ProcessBuilder(root.resolve("scripts/bounce").toString(), "--help")
            .directory(root.toFile())
            .redirectError(err.toFile());
    builder.environment().put("JAVA_HOME", jdk.toString());
    return builder.start();
  }

  /**
   * A demo ended by SIGTERM (or Ctrl-C) mid-run stops its backend process and removes its
   * directory, sockets and backend.log alike: nothing of it is left running or lying around.
   */
  @Test
  void aDemoEndedBySigtermStopsItsBackendAndRemovesItsDirectory(@TempDir Path tmp)
      throws Exception {
    Path out = tmp.resolve("demo.out");
    Process demo =
        new ProcessBuilder(BounceDaemon.command("demo"))
            .directory(BounceDaemon.ROOT.toFile())
            .redirectErrorStream(true)
            .redirectOutput(out.toFile())
            .start();
    ProcessHandle backend = null;
    try {
      // The moment its backend process exists, well before the demo is done (it takes seconds).
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
      while (backend == null) {
        assertTrue(demo.isAlive(), "the demo ended first: " + Files.readString(out));
        assertTrue(System.nanoTime() < deadline, "no backend: " + Files.readString(out));
        backend =
            demo.toHandle()
                .children()
                .filter(c -> c.info().commandLine().orElse("").contains("cli.Main vsock "))
                .findFirst()
                .orElse(null);
        Thread.sleep(5);
      }
      Path dir = demoDir(Files.readString(out));
      demo.destroy(); // SIGTERM: scripts/bounce exec'd the demo's JVM
      assertTrue(demo.waitFor(30, TimeUnit.SECONDS), "the demo did not exit on SIGTERM");
      try {
        backend.onExit().get(15, TimeUnit.SECONDS);
      } catch (TimeoutException e) {
        fail("the backend process " + backend.pid() + " outlived the demo");
      }
      assertFalse(Files.exists(dir), dir + " is left: " + Files.readString(out));
      assertFalse(Files.readString(out).contains("summary:"), "not ended early enough");
    } finally {
      demo.destroyForcibly();
      if (backend != null) backend.destroyForcibly();
    }
  }

  /**
   * The demo's own directory, from the backend command it prints ({@code --socket DIR/vhost.sock}):
   * not a count of bounce-demo* in the shared temporary directory, which other runs change.
   */
  private static Path demoDir(String out) {
    Matcher socket = Pattern.compile("--socket (\\S+)/vhost.sock").matcher(out);
    assertTrue(socket.find(), out);
    Path dir = Path.of(socket.group(1));
    assertTrue(dir.getFileName().toString().startsWith("bounce-demo"), dir + ": " + out);
    return dir;
  }
}
