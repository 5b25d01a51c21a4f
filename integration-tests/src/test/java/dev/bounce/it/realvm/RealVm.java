package dev.bounce.it.realvm;

import dev.bounce.it.TestPmd;
import dev.bounce.pool.testing.ProcessMaps;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * One real-VM run: a QEMU guest whose scripts/realvm/init runs bounce-guest steps and prints result
 * lines, and the vhost-user backends of its devices: bounce as its own process ({@code bounce
 * vsock}, the command users run) with host applications on its host side, for a vsock device;
 * DPDK's vhost backend ({@link TestPmd}) for a net device. Every failure it reports carries the
 * guest console and the backends' logs. {@link #close} kills QEMU and the backends and removes the
 * run's folder, whatever happened.
 */
final class RealVm implements AutoCloseable {
  /**
   * The guest's CID unless given (QEMU's vhost-user-vsock reads it from the backend's config
   * space).
   */
  private static final int GUEST_CID = 3;

  private static final Duration BOUNCE_START = Duration.ofSeconds(30);

  private final Guest guest;
  private final int cid;
  private final Path dir;
  private final List<AutoCloseable> open = new ArrayList<>(); // closed last to first
  private ChildProcess bounce;
  private DropRepliesRelay relay;
  private TestPmd testpmd;
  private ChildProcess qemu;

  RealVm(Guest guest) throws IOException {
    this(guest, GUEST_CID);
  }

  /** A guest with CID {@code cid}, for runs of several guests on one bounce. */
  RealVm(Guest guest, int cid) throws IOException {
    this.guest = guest;
    this.cid = cid;
    // Short: Unix socket paths must stay under 108 bytes.
    this.dir = Files.createTempDirectory("bounce-realvm-");
  }

  /** Where bounce listens for the VMM. */
  Path vhostUserSocket() {
    return dir.resolve("vhost-user.sock");
  }

  /** bounce's host side: host applications connect here; guests reach {@code <this>_<port>}. */
  Path udsPath() {
    return dir.resolve("vsock.uds");
  }

  /**
   * Starts {@code bounce vsock} from device/target/bounce.jar with the test's own JDK; {@code
   * flags} go after the ones every run needs (the restricted-DMA flags, say).
   */
  void startBounce(String... flags) throws IOException, InterruptedException {
    List<String> args =
        new ArrayList<>(
            List.of(
                "--guest-cid",
                Integer.toString(cid),
                "--socket",
                vhostUserSocket().toString(),
                "--uds-path",
                udsPath().toString()));
    args.addAll(List.of(flags));
    startBounceProcess(args, List.of(this));
  }

  /**
   * Starts one {@code bounce vsock} for this guest and {@code sibling} (a {@code --vm} each, in the
   * default group: they reach each other's CIDs); this run owns the process, {@code sibling}'s
   * device uses it too.
   */
  void startBounceWith(RealVm sibling) throws IOException, InterruptedException {
    List<String> args = new ArrayList<>();
    for (RealVm vm : List.of(this, sibling)) {
      args.add("--vm");
      args.add(
          "guest-cid=" + vm.cid + ",socket=" + vm.vhostUserSocket() + ",uds-path=" + vm.udsPath());
    }
    startBounceProcess(args, List.of(this, sibling));
    sibling.bounce = bounce;
  }

  /** Starts bounce vsock with {@code args}; returns once it serves each of {@code guests}. */
  private void startBounceProcess(List<String> args, List<RealVm> guests)
      throws IOException, InterruptedException {
    Path jar = GuestImages.ROOT.resolve("device/target/bounce.jar");
    if (!Files.isRegularFile(jar)) {
      throw new AssertionError(
          jar + " is missing: build it first (./mvnw -B verify -pl integration-tests -am)");
    }
    List<String> command =
        new ArrayList<>(
            List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--enable-native-access=ALL-UNNAMED",
                "-jar",
                jar.toString(),
                "vsock"));
    command.addAll(args);
    bounce = started(ChildProcess.start("bounce", command));
    for (RealVm guest : guests) {
      Pattern serving = Pattern.compile("bounce vsock: guest CID " + guest.cid + ": ");
      if (bounce.await(serving, BOUNCE_START).isEmpty()) {
        throw failure(
            "bounce did not start serving guest CID "
                + guest.cid
                + " within "
                + BOUNCE_START.toSeconds()
                + " s");
      }
    }
  }

  /** Puts a relay that drops every reply between QEMU and bounce: a broken backend to QEMU. */
  void dropRepliesFromBounce() throws IOException {
    relay = started(DropRepliesRelay.start(dir.resolve("relay.sock"), vhostUserSocket()));
  }

  /**
   * Starts dpdk-testpmd as the backend of a net device for the guest, forwarding in {@code
   * forwardMode} ({@code io}: every frame back to the guest; {@code rxonly}: counted and freed).
   */
  void startTestPmd(String forwardMode) throws IOException, InterruptedException {
    GuestImages.prepared(); // it installs DPDK where it is missing, as it fails when it cannot
    testpmd = started(TestPmd.start(dir, forwardMode));
    testpmd.awaitListening();
  }

  /**
   * Stops testpmd and returns its port statistics: call it once the guest is done.
   *
   * @throws AssertionError with the evidence when testpmd does not report them
   */
  TestPmd.Result finishTestPmd() throws IOException, InterruptedException {
    try {
      return testpmd.finish();
    } catch (AssertionError e) {
      throw failure(e.getMessage());
    }
  }

  /** A host application echoing what guests send to host {@code port}. */
  HostEcho hostEcho(int port) throws IOException {
    return started(new HostEcho(Path.of(udsPath() + "_" + port)));
  }

  /**
   * Boots the guest with a device for each backend started (vsock on bounce, net on testpmd); its
   * init runs {@code steps} (see scripts/realvm/init) and powers off.
   */
  void boot(String steps) throws IOException, InterruptedException {
    List<VhostUserDevice> devices = new ArrayList<>();
    if (bounce != null) {
      devices.add(VhostUserDevice.vsock(relay != null ? relay.path() : vhostUserSocket()));
    }
    if (testpmd != null) devices.add(VhostUserDevice.net(testpmd.socket()));
    List<String> command = guest.command(GuestImages.prepared(), devices, steps, dir);
    qemu = started(ChildProcess.start("qemu", command));
  }

  /** Waits for the guest's READY line of a listen step on {@code port}. */
  void awaitListening(int port, Duration timeout) throws InterruptedException {
    String ready = "BOUNCE-READY mode=listen port=" + port;
    if (qemu.await(Pattern.compile(Pattern.quote(ready)), timeout).isEmpty()) {
      throw failure(noLine("'" + ready + "'", timeout));
    }
  }

  /**
   * Waits for the result line of the guest's {@code mode} step and returns its fields.
   *
   * @throws AssertionError with the evidence when there is none in time or it reports an error
   */
  Map<String, String> awaitResult(String mode, Duration timeout) throws InterruptedException {
    Map<String, String> fields = awaitOutcome(mode, timeout);
    if (fields.containsKey("error")) {
      throw failure("the guest's " + mode + " step failed: error=" + fields.get("error"));
    }
    return fields;
  }

  /**
   * {@link #awaitResult} for a step that may fail: its fields, with {@code error} (what failed and
   * the errno's text, spaces and all) when it did.
   */
  Map<String, String> awaitOutcome(String mode, Duration timeout) throws InterruptedException {
    Optional<Matcher> found =
        qemu.await(
            Pattern.compile("BOUNCE-RESULT mode=" + Pattern.quote(mode) + " (.*)$"), timeout);
    if (found.isEmpty()) throw failure(noLine("result line for its " + mode + " step", timeout));
    String line = found.get().group(1);
    int error = line.indexOf(" error=");
    Map<String, String> fields = new LinkedHashMap<>();
    for (String field : (error < 0 ? line : line.substring(0, error)).split(" ")) {
      int eq = field.indexOf('=');
      if (eq > 0) fields.put(field.substring(0, eq), field.substring(eq + 1));
    }
    if (error >= 0) fields.put("error", line.substring(error + " error=".length()));
    return fields;
  }

  /** Waits for the guest's init to finish its steps (it powers the guest off next). */
  void awaitPoweroff(Duration timeout) throws InterruptedException {
    if (qemu.await(Pattern.compile("^BOUNCE-DONE$"), timeout).isEmpty()) {
      throw failure(noLine("BOUNCE-DONE", timeout));
    }
  }

  /**
   * Waits for a line of bounce's log in which {@code pattern} is found.
   *
   * @throws AssertionError with the evidence, naming {@code what} the line would have shown
   */
  Matcher awaitBounceLog(Pattern pattern, String what, Duration timeout)
      throws InterruptedException {
    return bounce
        .await(pattern, timeout)
        .orElseThrow(
            () ->
                failure(
                    "bounce logged no line showing "
                        + what
                        + " within "
                        + timeout.toSeconds()
                        + " s (bounce "
                        + bounce.state()
                        + "; looked for /"
                        + pattern
                        + "/)"));
  }

  /** Whether bounce's process still runs (it serves one frontend after another until stopped). */
  boolean bounceRuns() {
    return bounce.isAlive();
  }

  /**
   * What bounce has mapped of the guest RAM QEMU shares with it (QEMU's memfd is named after its
   * memory backend), from bounce's /proc/PID/maps: while a guest runs, the only evidence of which
   * guest pages bounce could touch.
   */
  List<ProcessMaps.Entry> bounceMappingsOfGuestRam() {
    return ProcessMaps.ofMemfd(bounce.pid(), Guest.RAM_MEMFD);
  }

  /** Whether the guest console has a line containing {@code text} (so far). */
  boolean consoleHas(String text) throws InterruptedException {
    return qemu.await(Pattern.compile(Pattern.quote(text)), Duration.ZERO).isPresent();
  }

  private String noLine(String what, Duration timeout) {
    String why =
        "the guest printed no "
            + what
            + " within "
            + timeout.toSeconds()
            + " s (QEMU "
            + qemu.state()
            + ")";
    if (qemu.printedNothing()) {
      why +=
          "; QEMU printed nothing, so it never started the guest: that is what it does when a"
              + " vhost-user backend does not answer its requests (see the backends' logs)";
    }
    return why;
  }

  /** An assertion failure naming {@code what} went wrong, with everything needed to see why. */
  AssertionError failure(String what) {
    StringBuilder message = new StringBuilder(what).append("\n(").append(guest).append(")");
    if (relay != null) message.append("\n--- relay ---\n").append(relay.summary());
    if (qemu != null) {
      message.append("\n--- guest console (QEMU output) ---\n").append(qemu.output());
    }
    if (bounce != null) message.append("\n--- bounce's log ---\n").append(bounce.output());
    if (testpmd != null) message.append("\n--- dpdk-testpmd's output ---\n").append(testpmdLog());
    return new AssertionError(message.toString());
  }

  private String testpmdLog() {
    try {
      return testpmd.output();
    } catch (IOException e) {
      return "(unreadable: " + e + ")";
    }
  }

  /** Fails with the evidence unless {@code expected} equals {@code actual}. */
  void assertSame(Transfer expected, Transfer actual, String what) {
    if (!expected.equals(actual)) {
      throw failure(what + ": expected " + expected + ", got " + actual);
    }
  }

  private <T extends AutoCloseable> T started(T resource) {
    open.add(resource);
    return resource;
  }

  @Override
  public void close() throws Exception {
    Exception first = null;
    for (AutoCloseable resource : open.reversed()) {
      try {
        resource.close();
      } catch (Exception e) {
        if (first == null) first = e;
      }
    }
    try (Stream<Path> files = Files.walk(dir)) {
      files.sorted(Comparator.reverseOrder()).forEach(RealVm::delete);
    }
    if (first != null) throw first;
  }

  private static void delete(Path path) {
    try {
      Files.deleteIfExists(path);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
