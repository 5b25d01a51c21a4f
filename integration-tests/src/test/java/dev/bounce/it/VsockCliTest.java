package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
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
  static BounceDaemon backend;

  @BeforeAll
  static void startBackend() throws Exception {
    socket = dir.resolve("vhost.sock");
    uds = dir.resolve("vm.vsock");
    backend =
        BounceDaemon.start(
            dir.resolve("vsock.log"),
            "vsock",
            "--socket",
            socket.toString(),
            "--uds-path",
            uds.toString());
    // The line comes once the sockets listen; their files appear a moment before (at bind).
    backend.awaitLine("bounce vsock: guest CID");
  }

  @AfterAll
  static void stopBackend() throws Exception {
    if (backend == null) return;
    backend.stop(Duration.ofSeconds(10));
    assertTrue(backend.log().contains("guest CID 3: 0 guest errors"), backend.log());
  }

  private static LauncherTest.Run frontend(String... extra) throws Exception {
    return LauncherTest.vsockFrontend(socket, uds, extra);
  }

  @Test
  void streamsBothWaysReportConnectionsBytesAndNoErrors() throws Exception {
    LauncherTest.Run run =
        frontend("--count", "20", "--parallel", "5", "--bytes", "256K", "--size", "16K");
    Map<String, Object> json =
        LauncherTest.assertVsockStreams(run, 20, 256 << 10, "backend: " + backend.log());
    for (String way : new String[] {"guest_to_host", "host_to_guest"}) {
      assertEquals(20 * 16.0, ((Map<?, ?>) json.get(way)).get("operations"), way);
    }
  }

  @Test
  void pingPongCountsRoundTrips() throws Exception {
    LauncherTest.Run run = frontend("--ping-pong", "--count", "2000", "--size", "64");
    String what = run.out() + run.err() + "\nbackend: " + backend.log();
    assertEquals(0, run.status(), what);
    Map<String, Object> json = Json.object(run.out().strip());
    assertEquals(2000.0, json.get("operations"), what);
    assertEquals(0.0, json.get("errors"), what);
  }

  /**
   * A guest connecting to host port 80 reaches {@code <uds-path>_80}: a vhost-user socket there
   * would be its own. Refused as with --vm, and --socket X --uds-path X is the same refusal (not
   * "another process is listening", which the second bind used to find).
   */
  @Test
  void aSocketAmongItsOwnHostSidePathsIsRefused() throws Exception {
    String uds = dir.resolve("own.vsock").toString();
    for (String socket : List.of(uds + "_80", uds, uds + ".seqpacket")) {
      LauncherTest.assertUsageError(
          "--socket " + socket + " is a path of --uds-path " + uds + "'s host side",
          "vsock",
          "--socket",
          socket,
          "--uds-path",
          uds);
    }
  }

  /**
   * With --vm or --config every guest is described there: a per-guest flag beside them, which would
   * be ignored even when invalid, is refused naming it. A flag given twice (but --vm) is refused
   * rather than the last one taken.
   */
  @Test
  void perGuestFlagsBesideVmOrConfigAndFlagsGivenTwiceAreRefused() throws Exception {
    String socket = dir.resolve("mixed.sock").toString();
    String uds = dir.resolve("mixed.vsock").toString();
    LauncherTest.assertUsageError(
        "--tx-buffer-size does not combine with --vm: give tx-buffer-size=... inside each --vm",
        "vsock",
        "--vm",
        "guest-cid=3,socket=" + socket + ",uds-path=" + uds,
        "--tx-buffer-size",
        "1");
    Path config =
        Files.writeString(
            dir.resolve("one.yaml"), "vms:\n  - {socket: " + socket + ", uds_path: " + uds + "}\n");
    LauncherTest.assertUsageError(
        "--guest-cid does not combine with --config: give guest_cid: in each entry of the file",
        "vsock",
        "--config",
        config.toString(),
        "--guest-cid",
        "2");
    LauncherTest.assertUsageError(
        "--guest-cid is given twice: give it once",
        "vsock",
        "--socket",
        socket,
        "--uds-path",
        uds,
        "--guest-cid",
        "3",
        "--guest-cid",
        "4");
  }

  /**
   * bounce creates its sockets, not their directories: a missing one is named, as a usage error.
   */
  @Test
  void aSocketWhoseDirectoryDoesNotExistIsRefusedNamingIt() throws Exception {
    String missing = dir.resolve("no-such-dir").toString();
    LauncherTest.assertUsageError(
        "--uds-path "
            + missing
            + "/a.vsock: its directory "
            + missing
            + " does not exist; create it first",
        "vsock",
        "--socket",
        dir.resolve("dir.sock").toString(),
        "--uds-path",
        missing + "/a.vsock");
    LauncherTest.assertUsageError(
        "--socket " + missing + "/a.sock: its directory " + missing + " does not exist",
        "vsock",
        "--socket",
        missing + "/a.sock",
        "--uds-path",
        dir.resolve("dir.vsock").toString());
  }

  /** The one guest of the flags is named in the flags' spelling, not as "the flags: key". */
  @Test
  void theFlagsFormSpellsItsMistakesAsFlags() throws Exception {
    String socket = dir.resolve("flags.sock").toString();
    String uds = dir.resolve("flags.vsock").toString();
    assertEquals(
        "bounce vsock: --uds-path is required",
        LauncherTest.assertUsageError("--uds-path", "vsock", "--socket", socket));
    assertEquals(
        "bounce vsock: --guest-cid 2 is not a guest CID (3 to 4294967294)",
        LauncherTest.assertUsageError(
            "--guest-cid", "vsock", "--socket", socket, "--uds-path", uds, "--guest-cid", "2"));
    LauncherTest.assertUsageError(
        "give exactly one of --socket (or --socket-path), a path, and --fd",
        "vsock",
        "--uds-path",
        uds);
  }

  /** vhost-device-vsock's flags bounce does not have get a line saying so, not "unknown flag". */
  @Test
  void vhostDeviceVsocksForwardingIsRefusedAsUnsupported() throws Exception {
    for (String flag : List.of("--forward-cid", "--forward-listen")) {
      LauncherTest.assertUsageError(
          "--forward-cid and --forward-listen (vhost-device-vsock's forwarding over the host's"
              + " vsock) are not supported by bounce",
          "vsock",
          flag,
          "1");
    }
  }

  @Test
  void vsockWithoutUdsPathIsAUsageError() throws Exception {
    LauncherTest.Run run =
        LauncherTest.launch("frontend", "--socket", socket.toString(), "--device", "vsock");
    assertEquals(2, run.status(), run.out() + run.err());
    assertTrue(run.err().contains("--uds-path is required"), run.err());
  }
}
