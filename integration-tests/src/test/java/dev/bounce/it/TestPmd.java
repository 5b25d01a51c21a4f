package dev.bounce.it;

import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.NetDriver;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;

/**
 * One dpdk-testpmd with a net_vhost0 port as a vhost-user server, driven on stdin: DPDK 22.11's
 * vhost backend ({@code --vdev net_vhost0}, ../shared/reference/REAL-PEERS.md) for the fake
 * frontend (DpdkVhostPmdTest) and for real QEMU guests (the realvm net tests). In {@code io}
 * forward mode it sends every frame back on the port it came from; in {@code rxonly} it counts and
 * frees them.
 *
 * <p>scripts/test installs dpdk-dev (which has dpdk-testpmd) when it is missing; without it the
 * test is skipped with the reason. A testpmd that is installed but exits before it listens fails
 * the test with its output: a skip would pass a broken setup off as a machine without DPDK.
 */
public final class TestPmd implements AutoCloseable {
  private static final Path TESTPMD = Path.of("/usr/bin/dpdk-testpmd");
  private static final AtomicInteger RUNS = new AtomicInteger();

  /** The flags of a Unix socket in the listening state, as /proc/net/unix shows them. */
  private static final String LISTENING = "00010000";

  private final Process process;
  private final OutputStream stdin;
  private final Path socket;
  private final Path out;
  private final List<String> command;

  private TestPmd(Process process, Path socket, Path out, List<String> command) {
    this.process = process;
    this.stdin = process.getOutputStream();
    this.socket = socket;
    this.out = out;
    this.command = command;
  }

  /**
   * Starts testpmd interactively (so that the test decides when to read its statistics) with {@code
   * forwardMode} and forwarding started; its socket, runtime folder and output go to {@code dir}.
   * REAL-PEERS.md's recipe: no hugepages, no PCI, no telemetry, lcores 0-1 with the main one on 1,
   * a unique file prefix, RUNTIME_DIRECTORY in scratch space.
   */
  public static TestPmd start(Path dir, String forwardMode) throws IOException {
    Assumptions.assumeTrue(
        Files.isExecutable(TESTPMD),
        TESTPMD + " is not installed (Debian: apt-get install dpdk dpdk-dev; scripts/test does)");
    Path runtime = Files.createDirectories(dir.resolve("run"));
    Path socket = dir.resolve("vhost-net.sock");
    Path out = dir.resolve("testpmd.out");
    String prefix = "bounce-it-" + ProcessHandle.current().pid() + "-" + RUNS.incrementAndGet();
    List<String> command =
        List.of(
            TESTPMD.toString(),
            "-l",
            "0-1",
            "--main-lcore",
            "1",
            "--no-huge",
            "-m",
            "512",
            "--no-pci",
            "--no-telemetry",
            "--file-prefix=" + prefix,
            "--vdev",
            "net_vhost0,iface=" + socket + ",queues=1",
            "--",
            "-i",
            "--no-mlockall",
            "--total-num-mbufs=32768",
            "--stats-period=1",
            "--forward-mode=" + forwardMode);
    ProcessBuilder builder =
        new ProcessBuilder(command)
            .directory(dir.toFile())
            .redirectErrorStream(true)
            .redirectOutput(out.toFile());
    builder.environment().put("RUNTIME_DIRECTORY", runtime.toString());
    TestPmd testpmd = new TestPmd(builder.start(), socket, out, command);
    try {
      testpmd.command("start");
    } catch (IOException e) {
      // It exited already: awaitListening says why.
    }
    return testpmd;
  }

  public Path socket() {
    return socket;
  }

  private void command(String line) throws IOException {
    stdin.write((line + "\n").getBytes(StandardCharsets.US_ASCII));
    stdin.flush();
  }

  /**
   * Waits until the vhost-user socket accepts connections (testpmd binds it a moment before it
   * listens, and QEMU gives up at once on a refused connection); fails with testpmd's output when
   * it exits first.
   */
  public void awaitListening() throws IOException, InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    while (!listening()) {
      if (!process.isAlive()) {
        throw new AssertionError(
            "dpdk-testpmd exited with status "
                + process.exitValue()
                + " before listening on its vhost-user socket; command: "
                + String.join(" ", command)
                + "\n"
                + lastLines(output(), 15));
      }
      if (System.nanoTime() > deadline) {
        throw new AssertionError(
            "dpdk-testpmd did not listen on " + socket + " in 20 s\n" + lastLines(output(), 15));
      }
      Thread.sleep(20);
    }
  }

  /**
   * Whether /proc/net/unix lists the socket as listening (fields: ... Flags Type St Inode Path).
   */
  private boolean listening() throws IOException {
    String path = socket.toString();
    for (String line : Files.readAllLines(Path.of("/proc/net/unix"))) {
      String[] fields = line.trim().split("\\s+");
      if (fields.length == 8 && fields[7].equals(path) && fields[3].equals(LISTENING)) {
        return true;
      }
    }
    return false;
  }

  /** Connects a fake frontend once the socket listens. */
  public FrontendSession connect(GuestRam ram, Handshake handshake) throws Exception {
    awaitListening();
    FrontendSession.Options options =
        new FrontendSession.Options(
            handshake, NetDriver.DRIVER_FEATURES, 2, 256, NetDriver.INDIRECT_ENTRIES);
    try {
      return FrontendSession.connect(socket, ram, options);
    } catch (IOException e) {
      throw new AssertionError(
          "connecting to dpdk-testpmd failed: " + e + "\n" + lastLines(output(), 20), e);
    }
  }

  /** What testpmd printed, and its port 0 statistics. */
  public record Result(
      String out,
      long nicRxPackets,
      long nicRxBytes,
      long nicTxPackets,
      long forwardRxDropped,
      long forwardTxDropped) {
    public String tail() {
      return lastLines(out, 40);
    }
  }

  /**
   * Stops forwarding (testpmd waits for its forwarding lcore, so the counters are final), reads the
   * port statistics and quits; parses what testpmd printed.
   */
  public Result finish() throws IOException, InterruptedException {
    command("stop");
    command("show port stats all");
    command("quit");
    stdin.close();
    if (!process.waitFor(30, TimeUnit.SECONDS)) {
      throw new AssertionError("dpdk-testpmd did not quit in 30 s\n" + lastLines(output(), 20));
    }
    String text = output();
    if (process.exitValue() != 0) {
      throw new AssertionError(
          "dpdk-testpmd exited with " + process.exitValue() + "\n" + lastLines(text, 40));
    }
    Matcher nic =
        Pattern.compile(
                "NIC statistics for port 0\\s+#+\\s+RX-packets:\\s+(\\d+)\\s+RX-missed:\\s+\\d+"
                    + "\\s+RX-bytes:\\s+(\\d+)[\\s\\S]*?TX-packets:\\s+(\\d+)")
            .matcher(text);
    Matcher forward =
        Pattern.compile(
                "Forward statistics for port 0\\s+-+\\s+RX-packets:\\s+\\d+\\s+RX-dropped:\\s+"
                    + "(\\d+)\\s+RX-total:\\s+\\d+\\s+TX-packets:\\s+\\d+\\s+TX-dropped:\\s+(\\d+)")
            .matcher(text);
    if (!nic.find() || !forward.find()) {
      throw new AssertionError("no port statistics in testpmd's output:\n" + lastLines(text, 60));
    }
    return new Result(
        text,
        Long.parseLong(nic.group(1)),
        Long.parseLong(nic.group(2)),
        Long.parseLong(nic.group(3)),
        Long.parseLong(forward.group(1)),
        Long.parseLong(forward.group(2)));
  }

  /** Everything testpmd printed so far (its log, for failure messages). */
  public String output() throws IOException {
    return Files.readString(out, StandardCharsets.UTF_8);
  }

  @Override
  public void close() throws InterruptedException {
    if (!process.isAlive()) return;
    process.destroy();
    if (!process.waitFor(10, TimeUnit.SECONDS)) {
      process.destroyForcibly();
      process.waitFor(10, TimeUnit.SECONDS);
    }
  }

  static String lastLines(String text, int lines) {
    String[] all = text.split("\n", -1);
    int from = Math.max(0, all.length - lines);
    return String.join("\n", Arrays.asList(all).subList(from, all.length));
  }
}
