package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The restricted-DMA flags as an operator uses them: {@code scripts/bounce echo-backend} with a
 * device-owned pool and policy required, driven by {@code scripts/bounce frontend --mode
 * device-pool} in another process; the metrics it logs on SIGTERM; contradictory flags refused.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class RestrictedDmaCliTest {
  @TempDir Path dir;

  @Test
  void devicePoolBackendAndDevicePoolFrontendInTwoProcesses() throws Exception {
    Path socket = dir.resolve("echo.sock");
    Path log = dir.resolve("echo-backend.log");
    BounceDaemon backend =
        BounceDaemon.start(
            log,
            "echo-backend",
            "--socket",
            socket.toString(),
            "--device-pool",
            "8M",
            "--restricted-dma",
            "required");
    try {
      // The line comes once the sockets listen; their files appear a moment before (at bind).
      backend.awaitLine("bounce echo-backend: serving");
      LauncherTest.Run run =
          LauncherTest.launch(
              "frontend",
              "--socket",
              socket.toString(),
              "--device",
              "echo",
              "--mode",
              "device-pool",
              "--memory",
              "64M",
              "--count",
              "2000",
              "--json");
      String what = run.out() + run.err() + "\nbackend: " + backend.log();
      assertEquals(0, run.status(), what);
      Map<String, Object> json = Json.object(run.out().strip());
      assertEquals(2000.0, json.get("operations"), what);
      assertEquals(0.0, json.get("errors"), what);
    } finally {
      backend.stop(Duration.ofSeconds(10));
    }
    String text = Files.readString(log, StandardCharsets.UTF_8);
    assertTrue(text.contains("BACKEND_SHMEM_MAP"), text);
    assertTrue(
        text.contains("restricted DMA: pool 8388608 bytes, peak ")
            && text.contains("pool violations per queue [0]"),
        "the metrics are logged when the session ends:\n" + text);
  }

  @Test
  void helpListsTheRestrictedDmaFlagsAndContradictionsAreUsageErrors() throws Exception {
    LauncherTest.Run help = LauncherTest.launch("echo-backend", "--help");
    assertEquals(0, help.status(), help.err());
    for (String flag : List.of("--pool GPA:SIZE", "--pool-from-table", "--device-pool SIZE")) {
      assertTrue(help.out().contains(flag), flag + " missing:\n" + help.out());
    }
    assertTrue(help.out().contains("--restricted-dma POLICY"), help.out());
    List<List<String>> contradictions =
        List.of(
            List.of("--pool", "0x80000000:16M", "--device-pool", "16M"),
            List.of("--pool", "0x80000000:16M", "--restricted-dma", "off"),
            List.of("--restricted-dma", "required"),
            List.of("--pool", "0x80000001:16M"),
            List.of("--restricted-dma", "maybe", "--pool-from-table"));
    assertEquals(
        "bounce echo-backend: --restricted-dma required needs a pool: give --pool GPA:SIZE,"
            + " --pool-from-table or --device-pool SIZE",
        LauncherTest.assertUsageError(
            "needs a pool", "echo-backend", "--socket", "x", "--restricted-dma", "required"));
    for (List<String> flags : contradictions) {
      List<String> args = new java.util.ArrayList<>(List.of("echo-backend", "--socket", "x"));
      args.addAll(flags);
      LauncherTest.Run run = LauncherTest.launch(args.toArray(String[]::new));
      assertEquals(2, run.status(), flags + ": " + run.out() + run.err());
    }
  }
}
