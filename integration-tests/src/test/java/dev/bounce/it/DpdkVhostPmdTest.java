package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.NetDriver;
import dev.bounce.vhost.frontend.Stats;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Issue 4's check that the fake frontend runs against other backends: DPDK 22.11's vhost PMD
 * ({@code net_vhost0} in dpdk-testpmd, ../shared/reference/REAL-PEERS.md) is the backend, the fake
 * frontend's virtio-net driver the guest.
 *
 * <p>rxonly: testpmd counts what it dequeues and frees it. Its vhost dequeue never drops a chain it
 * takes (with no mbuf free it leaves the chain in the ring, which is back-pressure for the driver),
 * and nothing else sends on this port, so its RX-packets must equal the frames the driver saw
 * completed, exactly, and RX-bytes their bytes (the virtio_net_hdr is not counted).
 *
 * <p>io: testpmd sends every frame back on the same port; the driver never has more frames in the
 * loop than its posted receive buffers hold, so none may be dropped, and every one must come back
 * intact and in order through DPDK's mergeable-rx enqueue (gathered from several buffers when they
 * are small).
 *
 * <p>scripts/test installs dpdk-dev (which has dpdk-testpmd) when it is missing; without it, or
 * when testpmd cannot start here, the tests are skipped with the reason.
 */
@Timeout(value = 2, unit = TimeUnit.MINUTES)
class DpdkVhostPmdTest {
  private static final Path TESTPMD = Path.of("/usr/bin/dpdk-testpmd");
  private static final AtomicInteger RUNS = new AtomicInteger();
  private static final long RAM_START = 0x4000_0000L;
  private static final long RAM_SIZE = 64L << 20;
  private static final long POOL_START = 0x5c00_0000L;
  private static final long POOL_SIZE = 4L << 20;
  private static final Duration TRAFFIC_LIMIT = Duration.ofSeconds(30);

  @TempDir Path dir;

  // Each test starts its own testpmd (about 1.5 s with its shutdown) and sends well under a second
  // of traffic; 100000 frames run the 16-bit ring indexes through a wrap.

  @ParameterizedTest(name = "{0} memory, {1} handshake, {2} frames of {3} bytes")
  @CsvSource({"shared, dpdk, 100000, 64", "pool, dpdk, 20000, 1514", "shared, qemu, 20000, 60"})
  void rxonlyCountsEveryFrameTheDriverSent(
      String memory, String handshake, long count, int frameSize) throws Exception {
    MemoryMode mode = MemoryMode.ofFlag(memory);
    try (TestPmd testpmd = TestPmd.start(dir, "rxonly");
        GuestRam ram = guestRam(mode);
        FrontendSession session = testpmd.connect(ram, Handshake.ofFlag(handshake))) {
      NetDriver driver = new NetDriver(session);
      Stats stats = driver.transmit(count, frameSize, TRAFFIC_LIMIT);
      session.stop();
      report("rxonly " + memory + "/" + handshake, driver, stats);
      assertEquals(0, stats.errors(), stats.text());
      assertEquals(count, stats.operations(), stats.text());
      assertEquals(0, driver.framesReceived() + driver.foreignFrames());

      TestPmd.Result result = testpmd.finish();
      assertEquals(count, result.nicRxPackets(), result.tail());
      assertEquals(count * frameSize, result.nicRxBytes(), result.tail());
      assertEquals(0, result.forwardRxDropped(), result.tail());
      assertEquals(0, result.nicTxPackets(), result.tail());
      assertSharedRegions(result, mode);
    }
  }

  @ParameterizedTest(name = "{0} memory: {1} frames of {2} bytes into {3}-byte receive buffers")
  @CsvSource({"shared, 100000, 64, 2048", "pool, 20000, 1514, 2048", "shared, 20000, 1514, 512"})
  void ioForwardingSendsEveryFrameBackIntact(
      String memory, long count, int frameSize, int rxBufferSize) throws Exception {
    MemoryMode mode = MemoryMode.ofFlag(memory);
    try (TestPmd testpmd = TestPmd.start(dir, "io");
        GuestRam ram = guestRam(mode);
        FrontendSession session = testpmd.connect(ram, Handshake.DPDK)) {
      NetDriver driver = new NetDriver(session, rxBufferSize);
      assertTrue(driver.mergeableRxBuffers(), "DPDK 22.11 offers VIRTIO_NET_F_MRG_RXBUF");
      Stats stats = driver.loopback(count, frameSize, TRAFFIC_LIMIT);
      session.stop();
      report("io " + memory + " rx buffers " + rxBufferSize, driver, stats);
      assertEquals(0, stats.errors(), stats.text());
      assertEquals(count, stats.operations(), stats.text());
      assertEquals(count, driver.framesReceived());
      assertEquals(0, driver.badFrames() + driver.lostFrames() + driver.foreignFrames());
      // DPDK fills each mergeable buffer before it takes the next one.
      int buffersPerFrame = (NetDriver.HEADER_SIZE + frameSize + rxBufferSize - 1) / rxBufferSize;
      assertEquals(count * buffersPerFrame, driver.receiveBuffersUsed());

      TestPmd.Result result = testpmd.finish();
      assertEquals(count, result.nicRxPackets(), result.tail());
      assertEquals(count, result.nicTxPackets(), result.tail());
      assertEquals(0, result.forwardTxDropped(), result.tail());
      assertSharedRegions(result, mode);
    }
  }

  @Test
  void theFrontendCommandDrivesTestpmd() throws Exception {
    try (TestPmd testpmd = TestPmd.start(dir, "rxonly")) {
      testpmd.awaitListening();
      LauncherTest.Run run =
          LauncherTest.launch(
              "frontend",
              "--socket",
              testpmd.socket().toString(),
              "--device",
              "net",
              "--handshake",
              "dpdk",
              "--memory",
              "64M",
              "--count",
              "20000",
              "--duration",
              "30",
              "--json");
      assertEquals(0, run.status(), run.out() + run.err());
      assertTrue(run.out().startsWith("{\"operations\":20000,"), run.out());
      assertTrue(run.out().contains("\"errors\":0,"), run.out());
      TestPmd.Result result = testpmd.finish();
      assertEquals(20000, result.nicRxPackets(), result.tail());
      assertEquals(20000 * 64, result.nicRxBytes(), result.tail());
    }
  }

  @Test
  void netFrameSizesOutsideEthernetAreUsageErrors() throws Exception {
    LauncherTest.Run run =
        LauncherTest.launch(
            "frontend",
            "--socket",
            dir.resolve("none.sock").toString(),
            "--device",
            "net",
            "--size",
            "59");
    assertEquals(2, run.status(), run.out() + run.err());
    assertTrue(
        run.err()
            .contains(
                "net frame sizes are 60..1514 bytes (an Ethernet frame without FCS; no GSO), not"
                    + " 59"),
        run.err());
  }

  private static GuestRam guestRam(MemoryMode mode) throws Exception {
    return mode == MemoryMode.POOL
        ? GuestRam.create(mode, RAM_START, RAM_SIZE, POOL_START, POOL_SIZE)
        : GuestRam.create(mode, RAM_START, RAM_SIZE, 0, 0);
  }

  /** DPDK logs each region it mapped: all of RAM in shared mode, only the pool in pool mode. */
  private static void assertSharedRegions(TestPmd.Result result, MemoryMode mode) {
    Matcher m = Pattern.compile("guest memory region size: 0x([0-9a-f]+)").matcher(result.out());
    List<Long> sizes = new ArrayList<>();
    while (m.find()) sizes.add(Long.parseUnsignedLong(m.group(1), 16));
    long expected = mode == MemoryMode.POOL ? POOL_SIZE : RAM_SIZE;
    assertEquals(List.of(expected), sizes, result.tail());
    if (mode == MemoryMode.POOL) {
      assertTrue(
          result.out().contains("guest physical addr: 0x" + Long.toHexString(POOL_START)),
          result.tail());
    }
  }

  private static void report(String what, NetDriver driver, Stats stats) {
    System.out.printf(
        "DpdkVhostPmdTest %s: %s%n%s%s%n",
        what, driver.describe(), stats.text(), driver.receiveSummary());
  }

  /** One dpdk-testpmd with a net_vhost0 port as a vhost-user server, driven on stdin. */
  static final class TestPmd implements AutoCloseable {
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
     * Starts testpmd interactively (so that the test decides when to read its statistics) with
     * {@code forwardMode} and forwarding started. REAL-PEERS.md's recipe: no hugepages, no PCI, no
     * telemetry, lcores 0-1 with the main one on 1, a unique file prefix, RUNTIME_DIRECTORY in
     * scratch space.
     */
    static TestPmd start(Path dir, String forwardMode) throws IOException {
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

    Path socket() {
      return socket;
    }

    private void command(String line) throws IOException {
      stdin.write((line + "\n").getBytes(StandardCharsets.US_ASCII));
      stdin.flush();
    }

    /** Waits for the vhost-user socket; skips the test when testpmd cannot run here. */
    void awaitListening() throws IOException, InterruptedException {
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
      while (!Files.exists(socket)) {
        if (!process.isAlive()) {
          Assumptions.abort(
              "dpdk-testpmd cannot run here: it exited with status "
                  + process.exitValue()
                  + " before creating its vhost-user socket; command: "
                  + String.join(" ", command)
                  + "\n"
                  + lastLines(Files.readString(out), 15));
        }
        if (System.nanoTime() > deadline) {
          throw new AssertionError(
              "dpdk-testpmd did not create " + socket + " in 20 s\n" + lastLines(output(), 15));
        }
        Thread.sleep(20);
      }
    }

    /**
     * Connects a fake frontend when the socket listens (testpmd binds it a moment before it
     * listens: refused connections are retried for 10 s).
     */
    FrontendSession connect(GuestRam ram, Handshake handshake) throws Exception {
      awaitListening();
      FrontendSession.Options options =
          new FrontendSession.Options(
              handshake, NetDriver.DRIVER_FEATURES, 2, 256, NetDriver.INDIRECT_ENTRIES);
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
      while (true) {
        try {
          return FrontendSession.connect(socket, ram, options);
        } catch (IOException e) {
          boolean refused =
              e.getMessage() != null && e.getMessage().startsWith("cannot connect to");
          if (!refused || System.nanoTime() > deadline || !process.isAlive()) {
            throw new AssertionError(
                "connecting to dpdk-testpmd failed: " + e + "\n" + lastLines(output(), 20), e);
          }
          Thread.sleep(20);
        }
      }
    }

    /** What testpmd printed, and its port 0 statistics. */
    record Result(
        String out,
        long nicRxPackets,
        long nicRxBytes,
        long nicTxPackets,
        long forwardRxDropped,
        long forwardTxDropped) {
      String tail() {
        return lastLines(out, 40);
      }
    }

    /**
     * Stops forwarding (testpmd waits for its forwarding lcore, so the counters are final), reads
     * the port statistics and quits; parses what testpmd printed.
     */
    Result finish() throws IOException, InterruptedException {
      command("stop");
      command("show port stats all");
      command("quit");
      stdin.close();
      if (!process.waitFor(30, TimeUnit.SECONDS)) {
        throw new AssertionError("dpdk-testpmd did not quit in 30 s\n" + lastLines(output(), 20));
      }
      String text = output();
      assertEquals(0, process.exitValue(), lastLines(text, 40));
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

    private String output() throws IOException {
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
  }

  static String lastLines(String text, int lines) {
    String[] all = text.split("\n", -1);
    int from = Math.max(0, all.length - lines);
    return String.join("\n", java.util.Arrays.asList(all).subList(from, all.length));
  }
}
