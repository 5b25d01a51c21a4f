package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.NetDriver;
import dev.bounce.vhost.frontend.Stats;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
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
 * <p>{@link TestPmd} says when the tests are skipped.
 */
@Timeout(value = 2, unit = TimeUnit.MINUTES)
class DpdkVhostPmdTest {
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
}
