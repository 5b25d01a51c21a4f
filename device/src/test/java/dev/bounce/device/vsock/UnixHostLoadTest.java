package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.bounce.pool.testing.OpenFds;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The hybrid-vsock host side under load, through the whole path: the fake frontend's guest driver,
 * the engine and {@link VsockDevice}, {@link UnixHost}'s Netty channels, and host applications on
 * real Unix sockets ({@link VsockWorkload}, which checksums every stream at both ends).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class UnixHostLoadTest {
  static final int BUFFER = 64 * 1024;
  static final Duration LIMIT = Duration.ofSeconds(60);

  @TempDir Path dir;

  private VsockRig rig;
  private VsockWorkload workload;

  private void start(int maxConnections) throws Exception {
    Path uds = dir.resolve("vm.vsock");
    rig = new VsockRig(dir, 256, BUFFER, maxConnections, loop -> UnixHost.listen(uds, loop));
    workload = new VsockWorkload(rig.driver, uds);
  }

  @AfterEach
  void tearDown() throws Exception {
    if (workload != null) workload.close();
    if (rig != null) rig.close();
  }

  private void assertClean(VsockWorkload.Result r, long connections) {
    assertEquals(
        0, r.errors(), r.guestToHost().firstError() + " / " + r.hostToGuest().firstError());
    assertEquals(connections, r.connections());
    assertEquals(0, rig.driver.badPackets(), rig.driver.firstProblem());
    assertEquals(0, rig.driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
    assertEquals(0, rig.device.connectionCount(), "connections the device still holds");
    assertEquals(0, rig.driver.socketCount(), "guest sockets not closed");
  }

  @Test
  void aGibibyteEachWayAtOnceArrivesWithTheChecksumItLeftWith() throws Exception {
    start(64);
    long gib = 1L << 30;
    VsockWorkload.Result r =
        workload.stream(VsockWorkload.Direction.BOTH, 1, 1, 64 * 1024, gib, false, LIMIT);
    assertClean(r, 1);
    assertEquals(gib, r.guestToHost().bytes());
    assertEquals(gib, r.hostToGuest().bytes());
  }

  @Test
  void tenThousandSequentialConnectionsCloseCleanlyAndLeakNoFd() throws Exception {
    start(64);
    // Warm up (lazily created Netty and JDK resources), then count.
    assertClean(workload.stream(VsockWorkload.Direction.BOTH, 10, 1, 64, 100, false, LIMIT), 10);
    int baseline = OpenFds.count();
    VsockWorkload.Result r =
        workload.stream(VsockWorkload.Direction.BOTH, 10_000, 1, 64, 100, false, LIMIT);
    assertClean(r, 10_000);
    assertEquals(10_000 * 100L, r.guestToHost().bytes());
    assertEquals(10_000 * 100L, r.hostToGuest().bytes());
    OpenFds.assertBackTo(baseline);
  }

  @Test
  void aThousandConnectionsOpenAtOnceEachCarryTheirBytesAndAllClose() throws Exception {
    start(1000);
    assertClean(workload.stream(VsockWorkload.Direction.BOTH, 10, 10, 64, 100, false, LIMIT), 10);
    int baseline = OpenFds.count();
    // Half guest-initiated, half host-initiated (through CONNECT), 16 KiB each way on each.
    VsockWorkload.Result r =
        workload.stream(VsockWorkload.Direction.BOTH, 1000, 1000, 4096, 16 * 1024, true, LIMIT);
    assertClean(r, 1000);
    assertEquals(1000, r.peakOpen(), "connections open at the same time");
    assertEquals(1000 * 16 * 1024L, r.guestToHost().bytes());
    OpenFds.assertBackTo(baseline);
  }
}
