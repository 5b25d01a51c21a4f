package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * vhost-user.rst's "Backend program conventions" for {@code scripts/bounce vsock}, as a management
 * layer uses them: {@code --print-capabilities}, and {@code --fd} with the socket systemd's own
 * socket activation passes ({@code systemd-socket-activate}): a listening socket that serves one
 * frontend after another until SIGTERM, and (with {@code --accept}) a connected one per frontend,
 * after which bounce exits by itself.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class BackendConventionsTest {
  private static final String ACTIVATE = "/usr/bin/systemd-socket-activate";

  @TempDir Path dir;
  private Path socket;
  private Path uds;
  private Path log;
  private Process activator;

  @AfterEach
  void stop() throws Exception {
    if (activator != null && activator.isAlive()) {
      activator.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
    }
  }

  @Test
  void printCapabilitiesPrintsTheVsockTypeAndIgnoresEverythingElse() throws Exception {
    LauncherTest.Run run = LauncherTest.launch("vsock", "--print-capabilities", "--no-such-flag");
    assertEquals(0, run.status(), run.out() + run.err());
    assertEquals(Map.of("type", "vsock"), Json.object(run.out().strip()), run.out());
  }

  @Test
  void aListeningSocketFromSystemdServesOneFrontendAfterAnotherUntilSigterm() throws Exception {
    activate(false);
    for (int boot = 1; boot <= 2; boot++) assertTrafficFlows("frontend " + boot);
    activator.destroy(); // systemd-socket-activate exec'd bounce: this is bounce's SIGTERM
    assertTrue(activator.waitFor(20, TimeUnit.SECONDS), "no exit on SIGTERM: " + log());
    assertEquals(143, activator.exitValue(), "the status the unit counts as success: " + log());
    assertTrue(log().contains("guest CID 3: 0 guest errors"), log());
    assertCleanClose();
  }

  @Test
  void aConnectedSocketIsServedUntilItsFrontendLeavesThenBounceExits() throws Exception {
    activate(true);
    assertTrafficFlows("the one frontend");
    awaitLog("guest CID 3: 0 guest errors", "bounce did not exit after its frontend");
    assertTrue(log().contains("the frontend on inherited fd 3 went away"), log());
    assertCleanClose();
  }

  @Test
  void aConnectedSocketWhoseFrontendBreaksTheProtocolEndsBounceWithAnError() throws Exception {
    activate(true);
    try (SocketChannel frontend = SocketChannel.open(UnixDomainSocketAddress.of(socket))) {
      // GET_FEATURES without the version bit in its flags, and no reply asked for.
      frontend.write(
          ByteBuffer.allocate(12)
              .order(ByteOrder.LITTLE_ENDIAN)
              .putInt(1)
              .putInt(0)
              .putInt(0)
              .flip());
      awaitLog("ended on an error", "bounce did not end on the error");
    }
    assertTrue(log().contains("inherited fd 3: ended on an error: GET_FEATURES"), log());
    assertCleanClose();
  }

  private void awaitLog(String text, String otherwise) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (!log().contains(text)) {
      assertTrue(System.nanoTime() < deadline, otherwise + ": " + log());
      Thread.sleep(50);
    }
  }

  /** Everything closed while bounce's event loops still ran. */
  private void assertCleanClose() {
    assertTrue(!log().contains("bounce vsock: closing"), "a close failed: " + log());
  }

  /**
   * scripts/systemd's units pass {@code systemd-analyze verify}, and the service's ExecStart, run
   * with the socket unit's socket as systemd would, serves a frontend.
   */
  @Test
  void theShippedSystemdUnitsVerifyAndTheirCommandServes() throws Exception {
    Path units = Files.createDirectories(dir.resolve("units"));
    for (String unit : List.of("bounce-vsock@.socket", "bounce-vsock@.service")) {
      String text = Files.readString(BounceDaemon.ROOT.resolve("scripts/systemd").resolve(unit));
      Files.writeString(units.resolve(unit), instance(text, "%i"));
    }
    Process verify =
        new ProcessBuilder(
                "systemd-analyze",
                "verify",
                "--man=no",
                units.resolve("bounce-vsock@3.socket").toString(),
                units.resolve("bounce-vsock@3.service").toString())
            .redirectErrorStream(true)
            .start();
    String said = new String(verify.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertEquals(0, verify.waitFor(), said);
    assertEquals("", said.strip());
    String listen = setting(units.resolve("bounce-vsock@.socket"), "ListenStream");
    List<String> command =
        List.of(setting(units.resolve("bounce-vsock@.service"), "ExecStart").split(" "));
    activate(
        Path.of(instance(listen, "3")),
        Path.of(command.get(command.indexOf("--uds-path") + 1).replace("%i", "3")),
        false,
        command.stream().map(word -> word.replace("%i", "3")).toList());
    assertTrafficFlows("the unit's command");
  }

  /** A unit's text with this checkout for /opt/bounce and the test's directory for /run/bounce. */
  private String instance(String text, String instance) {
    return text.replace("/opt/bounce", BounceDaemon.ROOT.toString())
        .replace("/run/bounce", dir.toString())
        .replace("%i", instance);
  }

  private static String setting(Path unit, String key) throws IOException {
    return Files.readAllLines(unit).stream()
        .filter(line -> line.startsWith(key + "="))
        .map(line -> line.substring(key.length() + 1))
        .findFirst()
        .orElseThrow(() -> new AssertionError(unit + " has no " + key));
  }

  @Test
  void anFdThatIsNoSocketIsRefusedNamingIt() throws Exception {
    // fd 5 is /dev/null, opened by the shell that then becomes bounce (fds 0-2 are refused sooner).
    List<String> command =
        new ArrayList<>(List.of("bash", "-c", "exec 5</dev/null; exec \"$@\"", "-"));
    command.addAll(
        BounceDaemon.command("vsock", "--fd", "5", "--uds-path", dir.resolve("u").toString()));
    Process process =
        new ProcessBuilder(command)
            .directory(BounceDaemon.ROOT.toFile())
            .redirectErrorStream(true)
            .start();
    String said = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertTrue(process.waitFor(120, TimeUnit.SECONDS), "bounce vsock --fd 5 did not finish");
    assertEquals(1, process.exitValue(), said);
    assertEquals("bounce vsock: fd 5 is not a socket", said.strip());
  }

  @Test
  void standardInputOutputAndErrorAreNoFdToServe() throws Exception {
    LauncherTest.Run run =
        LauncherTest.launch("vsock", "--fd", "2", "--uds-path", dir.resolve("u").toString());
    assertEquals(2, run.status(), run.out() + run.err());
    assertTrue(run.err().contains("fd 2 is standard input, output or error"), run.err());
  }

  /** systemd-socket-activate listening at a socket, starting bounce with it as fd 3. */
  private void activate(boolean acceptEach) throws Exception {
    Path vsock = dir.resolve("vm.vsock");
    activate(
        dir.resolve("vhost.sock"),
        vsock,
        acceptEach,
        BounceDaemon.command("vsock", "--fd", "3", "--uds-path", vsock.toString()));
  }

  private void activate(Path socket, Path uds, boolean acceptEach, List<String> bounce)
      throws Exception {
    assertTrue(
        Files.isExecutable(Path.of(ACTIVATE)),
        ACTIVATE + " is missing: install the systemd package (scripts/test does)");
    this.socket = socket;
    this.uds = uds;
    log = dir.resolve("bounce.log");
    List<String> command = new ArrayList<>(List.of(ACTIVATE, "--listen", socket.toString()));
    if (acceptEach) command.add(1, "--accept");
    command.addAll(bounce);
    activator =
        new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (!Files.exists(socket)) {
      assertTrue(activator.isAlive(), "systemd-socket-activate exited: " + log());
      assertTrue(System.nanoTime() < deadline, "no socket at " + socket + ": " + log());
      Thread.sleep(20);
    }
  }

  /** The fake frontend connects (bounce starts on that connection) and streams both ways. */
  private void assertTrafficFlows(String who) throws Exception {
    LauncherTest.Run run =
        LauncherTest.vsockFrontend(socket, uds, "--count", "4", "--bytes", "64K");
    LauncherTest.assertVsockStreams(run, 4, 64 << 10, who + ", bounce: " + log());
  }

  private String log() {
    try {
      return Files.readString(log, StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "(no log: " + e.getMessage() + ")";
    }
  }
}
