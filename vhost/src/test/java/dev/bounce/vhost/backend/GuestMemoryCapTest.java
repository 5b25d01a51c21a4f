package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestRegion;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.MemoryTable;
import dev.bounce.vhost.protocol.SingleMemoryRegion;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A frontend cannot make bounce map unbounded guest memory: memfds are sparse, so terabytes cost it
 * nothing, yet each mapped terabyte takes the daemon's address space, which every session and the
 * JVM itself share. A session maps at most its cap (BackendServer.Config#maxGuestMemory), all
 * sessions together at most GuestRegion.PROCESS_LIMIT; what would cross either is refused, the
 * memory in place stays and the session goes on. The large memfds here are sparse and never
 * touched, so they cost nothing either.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class GuestMemoryCapTest {
  private static final long TIB = 1L << 40;
  private static final Duration CLOSED = Duration.ofSeconds(20);

  /** A cap for the process-wide cases: each session may map more than half the process bound. */
  private static final long LARGE_CAP = 48 * TIB;

  @TempDir Path dir;
  private long mappedBefore;

  @BeforeEach
  void baseline() {
    // Terabyte memfds and the 64 TiB bound: an address space of 47 bits or more (not 39-bit arm64).
    assumeTrue(GuestRegion.PROCESS_LIMIT == 64 * TIB, "the process bound is 64 TiB here");
    mappedBefore = GuestRegion.mappedInProcess();
  }

  @AfterEach
  void everySessionReleasedItsMemory() {
    assertEquals(mappedBefore, GuestRegion.mappedInProcess(), "guest memory left counted");
  }

  @Test
  void aTableOverTheCapIsRefusedAndTheSessionGoesOn() throws Exception {
    try (BackendFixture backend = backend("cap", RestrictedDma.OFF, defaultCap());
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        Memfd big = Memfd.create("bounce-cap-big", TIB)) {
      frontend.handshake();
      frontend.echo(0);
      // The rings' 2 MiB and 1 TiB beside them: 2 MiB over the default cap.
      FrontendChannel.Refused refused =
          assertThrows(
              FrontendChannel.Refused.class, () -> shareTable(frontend, bigRegion(TIB), big));
      assertTrue(refused.status() != 0);
      String line = backend.warnings().getLast();
      for (String says :
          List.of(
              "SET_MEM_TABLE",
              "1099513724928 bytes",
              "cap of 1099511627776 bytes (1 TiB)",
              "the 2097152 bytes (2 MiB) mapped now stay",
              "--max-guest-memory SIZE")) {
        assertTrue(line.contains(says), "'" + says + "' not in: " + line);
      }
      // The old table serves on, and a table within the cap is taken.
      frontend.echo(0);
      frontend.echo(1);
      shareTable(frontend, bigRegion(TIB - TestFrontend.MEMORY_SIZE), big);
      frontend.echo(0);
      frontend.echo(1);
    }
  }

  @Test
  void anAddedRegionThatWouldCrossTheCapIsRefused() throws Exception {
    try (BackendFixture backend = backend("cap-add", RestrictedDma.OFF, defaultCap());
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        Memfd big = Memfd.create("bounce-cap-big", TIB);
        Memfd page = Memfd.create("bounce-cap-page", 4096)) {
      FrontendChannel channel = frontend.channel;
      frontend.negotiate(true);
      channel.ack(
          FrontendRequest.ADD_MEM_REG,
          new SingleMemoryRegion(frontend.memory.description(0)),
          frontend.memory.fd(0));
      MemoryRegionDescription upToTheCap = bigRegion(TIB - TestFrontend.MEMORY_SIZE);
      channel.ack(FrontendRequest.ADD_MEM_REG, new SingleMemoryRegion(upToTheCap), big.fd());
      MemoryRegionDescription onePage = new MemoryRegionDescription(1L << 50, 4096, 1L << 50, 0);
      assertThrows(
          FrontendChannel.Refused.class,
          () ->
              channel.ack(FrontendRequest.ADD_MEM_REG, new SingleMemoryRegion(onePage), page.fd()));
      assertTrue(
          backend.warnings().getLast().contains("adding " + onePage + " would map"),
          backend.warnings().toString());
      for (int i = 0; i < TestFrontend.QUEUES; i++) {
        frontend.setUpRing(i, TestFrontend.ringAddress(i));
        frontend.echo(i);
      }
      // A region removed makes room again.
      channel.ack(FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(upToTheCap));
      channel.ack(FrontendRequest.ADD_MEM_REG, new SingleMemoryRegion(onePage), page.fd());
      frontend.echo(0);
    }
  }

  /**
   * Only what is mapped counts: a restricted pool maps its window's part of each region, so a VMM
   * sharing terabytes of RAM beside a small pool is served; --pool-from-table maps its one region
   * whole, so that counts whole.
   */
  @Test
  void aRestrictedPoolCountsOnlyWhatItMaps() throws Exception {
    RestrictedDma window = TestFrontend.poolOverMemory(RestrictedDma.Policy.PREFERRED);
    try (BackendFixture backend = backend("cap-window", window, defaultCap());
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        Memfd big = Memfd.create("bounce-cap-big", 2 * TIB)) {
      frontend.negotiate(true);
      shareTable(frontend, bigRegion(2 * TIB), big);
      for (int i = 0; i < TestFrontend.QUEUES; i++) {
        frontend.setUpRing(i, TestFrontend.ringAddress(i));
        frontend.echo(i);
      }
    }
    RestrictedDma fromTable =
        new RestrictedDma(RestrictedDma.Policy.PREFERRED, new RestrictedDma.SharedRegion());
    try (BackendFixture backend = backend("cap-from-table", fromTable, defaultCap());
        FrontendChannel channel = FrontendChannel.connect(backend.path);
        Memfd big = Memfd.create("bounce-cap-big", 2 * TIB)) {
      assertThrows(
          FrontendChannel.Refused.class,
          () ->
              channel.ack(
                  FrontendRequest.SET_MEM_TABLE,
                  new MemoryTable(List.of(bigRegion(2 * TIB))),
                  big.fd()));
      assertEquals(TestFrontend.QUEUES, channel.getU64(FrontendRequest.GET_QUEUE_NUM));
    }
  }

  /**
   * Two sessions, each within its cap, cannot together pass the process's bound; the memory of a
   * session that ends is released, and the other may then map it.
   */
  @Test
  void theProcessBoundHoldsAcrossSessionsAndAnEndedSessionReleasesItsMemory() throws Exception {
    try (BackendFixture a = backend("cap-a", RestrictedDma.OFF, LARGE_CAP);
        BackendFixture b = backend("cap-b", RestrictedDma.OFF, LARGE_CAP);
        TestFrontend second = new TestFrontend(FrontendChannel.connect(b.path));
        Memfd forty = Memfd.create("bounce-cap-40t", 40 * TIB);
        Memfd thirty = Memfd.create("bounce-cap-30t", 30 * TIB)) {
      second.handshake();
      try (TestFrontend first = new TestFrontend(FrontendChannel.connect(a.path))) {
        first.handshake();
        shareTable(first, bigRegion(40 * TIB), forty);
        first.echo(0);
        // 40 TiB and 30 TiB: each session within its cap, the two over 64 TiB.
        assertThrows(
            FrontendChannel.Refused.class, () -> shareTable(second, bigRegion(30 * TIB), thirty));
        String line = b.warnings().getLast();
        assertTrue(line.contains("over its bound of 70368744177664 bytes (64 TiB)"), line);
        second.echo(0);
        first.echo(1);
      }
      a.awaitNoSession(CLOSED);
      shareTable(second, bigRegion(30 * TIB), thirty);
      second.echo(0);
      second.echo(1);
    }
  }

  /**
   * A table that replaces another is mapped before the old one is unmapped, so for that moment both
   * count; once it is in place, only it does.
   */
  @Test
  void aReplacedTableIsReleasedAndCountsUntilThen() throws Exception {
    try (BackendFixture backend = backend("cap-replace", RestrictedDma.OFF, LARGE_CAP);
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path));
        Memfd forty = Memfd.create("bounce-cap-40t", 40 * TIB);
        Memfd twenty = Memfd.create("bounce-cap-20t", 20 * TIB);
        Memfd large = Memfd.create("bounce-cap-45t", 45 * TIB)) {
      frontend.handshake();
      shareTable(frontend, bigRegion(40 * TIB), forty);
      shareTable(frontend, bigRegion(20 * TIB), twenty); // 60 TiB for a moment
      assertEquals(
          20 * TIB + TestFrontend.MEMORY_SIZE,
          GuestRegion.mappedInProcess() - mappedBefore,
          "the 40 TiB table is released");
      // 20 TiB in place and 45 TiB beside it would pass 64 TiB, though 45 TiB alone would not.
      assertThrows(
          FrontendChannel.Refused.class, () -> shareTable(frontend, bigRegion(45 * TIB), large));
      frontend.echo(0);
    }
  }

  // ---- helpers ----

  private BackendFixture backend(String name, RestrictedDma dma, long cap) throws IOException {
    return BackendFixture.listen(
        dir.resolve(name + ".sock"),
        new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE),
        dma,
        cap);
  }

  private static long defaultCap() {
    return BackendServer.Config.DEFAULT_MAX_GUEST_MEMORY;
  }

  /**
   * {@code size} bytes at offset 0 of a large memfd, far above the rings' memory in guest and
   * frontend space.
   */
  private static MemoryRegionDescription bigRegion(long size) {
    return new MemoryRegionDescription(1L << 48, size, 1L << 49, 0);
  }

  /** SET_MEM_TABLE: the frontend's rings' region and {@code big}, mapped from {@code memfd}. */
  private static void shareTable(TestFrontend frontend, MemoryRegionDescription big, Memfd memfd)
      throws IOException {
    frontend.channel.ack(
        FrontendRequest.SET_MEM_TABLE,
        new MemoryTable(List.of(frontend.memory.description(0), big)),
        new Fd[] {frontend.memory.fd(0), memfd.fd()});
  }
}
