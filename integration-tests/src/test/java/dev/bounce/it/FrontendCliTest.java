package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.frontend.hostile.Hostile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code scripts/bounce frontend} as a user runs it: its help documents every flag it reads, and
 * against {@code scripts/bounce echo-backend} in another process it prints valid JSON for a
 * workload and passes every hostile scenario.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FrontendCliTest {
  private static final Path SOURCE =
      BounceDaemon.ROOT.resolve("device/src/main/java/dev/bounce/device/cli/FrontendCommand.java");

  @TempDir static Path dir;
  static Path socket;
  static BounceDaemon backend;

  @BeforeAll
  static void startBackend() throws Exception {
    socket = dir.resolve("echo.sock");
    backend =
        BounceDaemon.start(
            dir.resolve("echo-backend.log"), "echo-backend", "--socket", socket.toString());
    // The line comes once the sockets listen; their files appear a moment before (at bind).
    backend.awaitLine("bounce echo-backend: serving");
  }

  @AfterAll
  static void stopBackend() throws Exception {
    if (backend == null) return;
    backend.stop(Duration.ofSeconds(10));
  }

  @Test
  void helpDocumentsEveryFlagTheCommandReads() throws Exception {
    LauncherTest.Run run = LauncherTest.launch("frontend", "--help");
    assertEquals(0, run.status(), run.err());
    // Every flag the command reads (FLAGS.get/has/size/require("name")) must be in --help: a flag
    // the code reads but did not declare could never be given (the parser refuses it).
    Matcher m =
        Pattern.compile(
                "FLAGS\\.(?:get|has|size|require|number|duration|all)\\(\\s*\"([a-z0-9-]+)\"")
            .matcher(Files.readString(SOURCE));
    TreeSet<String> read = new TreeSet<>();
    while (m.find()) read.add(m.group(1));
    assertTrue(
        read.containsAll(List.of("socket", "device", "hostile", "json", "listen")), "" + read);
    for (String flag : read) {
      assertTrue(
          Pattern.compile("(?m)^\\s+--" + Pattern.quote(flag) + "\\b").matcher(run.out()).find(),
          "--" + flag + " is read by FrontendCommand but not in --help:\n" + run.out());
    }
    assertTrue(run.out().contains("--hostile SCENARIO"), run.out());
  }

  /** What the workload will do is checked before connecting: no backend needed to hear of it. */
  @Test
  void aCountOrSizeItCannotRunIsRefusedBeforeConnecting() throws Exception {
    String nowhere = dir.resolve("nobody-listens.sock").toString();
    LauncherTest.assertUsageError(
        "--count -5 is not at least 1", "frontend", "--socket", nowhere, "--count", "-5");
    LauncherTest.assertUsageError(
        "--count 0 is not at least 1", "frontend", "--socket", nowhere, "--count", "0");
    LauncherTest.assertUsageError(
        "--size 0 is not 1..65536 for --device echo",
        "frontend",
        "--socket",
        nowhere,
        "--size",
        "0");
    LauncherTest.assertUsageError(
        "--size 4294967296 is not 1..1048576 for --device vsock",
        "frontend",
        "--socket",
        nowhere,
        "--device",
        "vsock",
        "--uds-path",
        nowhere,
        "--size",
        "4G");
  }

  /** --duration is seconds, or a number with a unit; anything else says what one looks like. */
  @Test
  void aDurationIsSecondsOrTakesAUnit() throws Exception {
    LauncherTest.Run run =
        LauncherTest.launch(
            "frontend",
            "--socket",
            socket.toString(),
            "--memory",
            "64M",
            "--count",
            "100",
            "--duration",
            "10s",
            "--json");
    assertEquals(0, run.status(), run.out() + run.err());
    assertEquals(100.0, Json.object(run.out().strip()).get("operations"), run.out());
    String nowhere = dir.resolve("nobody-listens.sock").toString();
    for (String bad : List.of("10x", "s", "-1", "0")) {
      LauncherTest.assertUsageError(
          "--duration: '" + bad + "' is not a duration (like 60, 10s, 500ms, 2m)",
          "frontend",
          "--socket",
          nowhere,
          "--duration",
          bad);
    }
  }

  @Test
  void hostileListNamesEveryScenario() throws Exception {
    LauncherTest.Run run = LauncherTest.launch("frontend", "--hostile", "list");
    assertEquals(0, run.status(), run.err());
    for (Hostile.Scenario s : Hostile.scenarios()) {
      assertTrue(run.out().contains(s.name() + " "), s.name() + " missing:\n" + run.out());
    }
  }

  @Test
  void anUnknownScenarioIsAUsageError() throws Exception {
    LauncherTest.Run run =
        LauncherTest.launch(
            "frontend", "--socket", socket.toString(), "--device", "echo", "--hostile", "nope");
    assertEquals(2, run.status(), run.out() + run.err());
    assertTrue(run.err().contains("--hostile nope is not a scenario"), run.err());
  }

  @Test
  void jsonRunsAgainstTheEchoBackendProcess() throws Exception {
    List<List<String>> runs =
        List.of(
            List.of(),
            List.of("--mode", "pool", "--pool", "0x80000000:16M", "--handshake", "dpdk"));
    for (List<String> extra : runs) {
      List<String> args =
          new java.util.ArrayList<>(
              List.of(
                  "frontend",
                  "--socket",
                  socket.toString(),
                  "--device",
                  "echo",
                  "--json",
                  "--memory",
                  "128M",
                  "--count",
                  "3000"));
      args.addAll(extra);
      LauncherTest.Run run = LauncherTest.launch(args.toArray(String[]::new));
      String what = extra + ": " + run.out() + run.err() + "\nbackend: " + backend.tail();
      assertEquals(0, run.status(), what);
      Map<String, Object> json = Json.object(run.out().strip());
      assertEquals(3000.0, json.get("operations"), what);
      assertEquals(0.0, json.get("errors"), what);
      assertEquals(null, json.get("first_error"), what);
      assertTrue(json.get("latency_ns") instanceof Map<?, ?>, what);
    }
  }

  @Test
  void everyHostileScenarioPassesAgainstTheEchoBackendProcess() throws Exception {
    LauncherTest.Run run =
        LauncherTest.launch(
            "frontend",
            "--socket",
            socket.toString(),
            "--device",
            "echo",
            "--memory",
            "64M",
            "--hostile",
            "all",
            "--json");
    String what = run.out() + run.err() + "\nbackend: " + backend.tail();
    assertEquals(0, run.status(), what);
    Map<String, Object> json = Json.object(run.out().strip());
    assertEquals((double) Hostile.names().size(), json.get("passed"), what);
    assertEquals(0.0, json.get("failed"), what);
    List<?> scenarios = (List<?>) json.get("scenarios");
    assertEquals(Hostile.names().size(), scenarios.size(), what);
    for (Object s : scenarios) {
      Map<?, ?> scenario = (Map<?, ?>) s;
      assertEquals(Boolean.TRUE, scenario.get("survived"), what);
      assertEquals(Boolean.TRUE, scenario.get("reported"), what);
    }
    // The text form: one PASS line per scenario, then the count.
    LauncherTest.Run text =
        LauncherTest.launch(
            "frontend",
            "--socket",
            socket.toString(),
            "--device",
            "echo",
            "--memory",
            "64M",
            "--hostile",
            "vanish-mid-traffic",
            "--mode",
            "pool",
            "--pool",
            "0x80000000:8M");
    assertEquals(0, text.status(), text.out() + text.err());
    List<String> lines = text.out().strip().lines().toList();
    assertEquals(2, lines.size(), text.out());
    assertTrue(lines.get(0).startsWith("PASS vanish-mid-traffic: "), text.out());
    assertEquals("1 of 1 scenarios passed", lines.get(1));
  }
}
