package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code scripts/bounce frontend --device vsock} against {@code scripts/bounce vsock} in another
 * process, as in a deployment: the JSON of a stream workload both ways and of ping-pong.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class VsockCliTest {
  @TempDir static Path dir;
  static Path socket;
  static Path uds;
  static Path backendLog;
  static Process backend;

  @BeforeAll
  static void startBackend() throws Exception {
    socket = dir.resolve("vhost.sock");
    uds = dir.resolve("vm.vsock");
    backendLog = dir.resolve("vsock.log");
    backend =
        new ProcessBuilder(
                Path.of("..").toAbsolutePath().normalize().resolve("scripts/bounce").toString(),
                "vsock",
                "--socket",
                socket.toString(),
                "--uds-path",
                uds.toString())
            .redirectErrorStream(true)
            .redirectOutput(backendLog.toFile())
            .start();
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
    // The line comes once the sockets listen; their files appear a moment before (at bind).
    while (!Files.readString(backendLog, StandardCharsets.UTF_8)
        .contains("bounce vsock: guest CID")) {
      if (!backend.isAlive()) throw new AssertionError("bounce vsock exited: " + log());
      if (System.nanoTime() > deadline) throw new AssertionError("no sockets: " + log());
      Thread.sleep(20);
    }
  }

  @AfterAll
  static void stopBackend() throws Exception {
    if (backend == null) return;
    backend.destroy();
    if (!backend.waitFor(10, TimeUnit.SECONDS)) {
      backend.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
      throw new AssertionError("bounce vsock did not exit on SIGTERM: " + log());
    }
    assertTrue(log().contains("guest CID 3: 0 guest errors"), log());
  }

  private static String log() {
    try {
      return Files.readString(backendLog, StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "(no log: " + e.getMessage() + ")";
    }
  }

  private static LauncherTest.Run frontend(String... extra) throws Exception {
    return LauncherTest.vsockFrontend(socket, uds, extra);
  }

  @Test
  void streamsBothWaysReportConnectionsBytesAndNoErrors() throws Exception {
    LauncherTest.Run run =
        frontend("--count", "20", "--parallel", "5", "--bytes", "256K", "--size", "16K");
    Map<String, Object> json =
        LauncherTest.assertVsockStreams(run, 20, 256 << 10, "backend: " + log());
    for (String way : new String[] {"guest_to_host", "host_to_guest"}) {
      assertEquals(20 * 16.0, ((Map<?, ?>) json.get(way)).get("operations"), way);
    }
  }

  @Test
  void pingPongCountsRoundTrips() throws Exception {
    LauncherTest.Run run = frontend("--ping-pong", "--count", "2000", "--size", "64");
    String what = run.out() + run.err() + "\nbackend: " + log();
    assertEquals(0, run.status(), what);
    Map<String, Object> json = Json.object(run.out().strip());
    assertEquals(2000.0, json.get("operations"), what);
    assertEquals(0.0, json.get("errors"), what);
  }

  @Test
  void vsockWithoutUdsPathIsAUsageError() throws Exception {
    LauncherTest.Run run =
        LauncherTest.launch("frontend", "--socket", socket.toString(), "--device", "vsock");
    assertEquals(2, run.status(), run.out() + run.err());
    assertTrue(run.err().contains("--uds-path is required"), run.err());
  }
}
