package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.device.vsock.VsockDriver;
import dev.bounce.pool.testing.ProcessMaps;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.frontend.EchoDriver;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The fake frontend against the engine's test device over a real socket, with real memfds and
 * eventfds: every memory layout with every handshake echoes every chain, and the engine maps what
 * it should and nothing more (read from /proc/self/maps: both ends live in this process).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class FrontendEngineTest {
  static final long RAM_START = 0x4000_0000L;
  static final long RAM_SIZE = 64L << 20;
  static final long POOL_SIZE = 8L << 20;

  /** A pool inside RAM (shared mode: QEMU shares all RAM, the DT pool is a window of it). */
  static final long POOL_IN_RAM = RAM_START + (32L << 20);

  /** A pool in a memory slot of its own (pool mode: Firecracker's swiotlb region). */
  static final long POOL_SLOT = 0x8000_0000L;

  static final int CHAINS = 3000;
  static final int CHAIN_BYTES = 2048;

  @TempDir Path dir;

  /** How guest memory is laid out and shared, and what the engine is told. */
  enum Layout {
    /** All RAM shared, no pool; the engine maps all of it. */
    SHARED,
    /** Only the pool's memfd shared; the engine maps it, and never sees RAM. */
    POOL,
    /** All RAM shared with a pool inside it; the engine has the pool and maps only its window. */
    SHARED_WITH_POOL,
    /** Nothing shared: the engine owns the pool and hands it over; addresses are offsets. */
    DEVICE_POOL;

    GuestRam create() throws Exception {
      return switch (this) {
        case SHARED -> GuestRam.create(MemoryMode.SHARED, RAM_START, RAM_SIZE, 0, 0);
        case POOL -> GuestRam.create(MemoryMode.POOL, RAM_START, RAM_SIZE, POOL_SLOT, POOL_SIZE);
        case SHARED_WITH_POOL ->
            GuestRam.create(MemoryMode.SHARED, RAM_START, RAM_SIZE, POOL_IN_RAM, POOL_SIZE);
        case DEVICE_POOL -> GuestRam.create(MemoryMode.DEVICE_POOL, RAM_START, RAM_SIZE, 0, 0);
      };
    }

    RestrictedDma engineMemory() {
      return switch (this) {
        case SHARED, POOL -> EchoEngine.anyMemory();
        case SHARED_WITH_POOL -> EchoEngine.pool(POOL_IN_RAM, POOL_SIZE);
        case DEVICE_POOL ->
            new RestrictedDma(
                RestrictedDma.Policy.PREFERRED, new RestrictedDma.DeviceOwned(POOL_SIZE));
      };
    }
  }

  static Stream<Arguments> layoutsAndHandshakes() {
    List<Arguments> all = new ArrayList<>();
    for (Layout layout : Layout.values()) {
      for (Handshake handshake : Handshake.values()) all.add(Arguments.of(layout, handshake));
    }
    return all.stream();
  }

  static FrontendSession.Options options(Handshake handshake) {
    return new FrontendSession.Options(
        handshake,
        VirtioFeatures.bit(VirtioFeatures.EVENT_IDX)
            | VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC),
        1,
        256,
        0);
  }

  @ParameterizedTest(name = "{0} memory, {1} handshake")
  @MethodSource("layoutsAndHandshakes")
  void everyChainComesBackAndTheEngineMapsOnlyWhatItShould(Layout layout, Handshake handshake)
      throws Exception {
    Path socket = dir.resolve("engine.sock");
    try (EchoEngine engine = EchoEngine.listen(socket, layout.engineMemory());
        GuestRam ram = layout.create();
        FrontendSession session = FrontendSession.connect(socket, ram, options(handshake))) {
      Stats stats = new EchoDriver(session).run(CHAINS, CHAIN_BYTES, Duration.ofSeconds(30));
      assertEquals(0, stats.errors(), "errors; first: " + stats.firstError());
      assertEquals(CHAINS, stats.operations());
      assertEquals((long) CHAINS * CHAIN_BYTES, stats.bytes());
      // The engine's view: it served exactly the chains the driver saw come back.
      assertEquals(CHAINS, engine.device.served(), "chains the echo device served");
      assertMappings(layout);
      // GET_VRING_BASE: the engine stopped where the driver's available index is.
      assertEquals(CHAINS & 0xffff, session.stop()[0], "ring 0 stopped at");
    }
  }

  @Test
  void aDriverNeedingMoreQueuesThanTheBackendHasFailsAtOnceSayingSo() throws Exception {
    Path socket = dir.resolve("engine.sock");
    try (EchoEngine engine = EchoEngine.listen(socket, EchoEngine.anyMemory());
        GuestRam ram = Layout.SHARED.create()) {
      FrontendSession.Options threeQueues =
          new FrontendSession.Options(Handshake.QEMU, 0, EchoEngine.QUEUES + 2, 256, 0);
      IOException e =
          assertThrows(IOException.class, () -> FrontendSession.connect(socket, ram, threeQueues));
      assertTrue(
          e.getMessage().contains("queue count is 1 and this driver needs 3"), e.getMessage());
    }
  }

  @Test
  void aVsockDriverAgainstABackendOfAnotherKindSaysSo() throws Exception {
    // Three queues like vsock, but the echo device's config space starts with a zero counter.
    Path socket = dir.resolve("engine.sock");
    try (EchoEngine engine = EchoEngine.listen(socket, EchoEngine.anyMemory(), 3);
        GuestRam ram = Layout.SHARED.create();
        FrontendSession session =
            FrontendSession.connect(socket, ram, VsockDriver.options(Handshake.QEMU, 256))) {
      IOException e = assertThrows(IOException.class, () -> VsockDriver.guestCid(session));
      assertTrue(e.getMessage().contains("guest CID 0, which no vsock device has"), e.getMessage());
    }
  }

  @Test
  void aRestartedBackendResumesTheRingsWhereTheyStood() throws Exception {
    Path socket = dir.resolve("engine.sock");
    try (GuestRam ram = Layout.SHARED.create()) {
      EchoEngine first = EchoEngine.listen(socket, EchoEngine.anyMemory());
      try (FrontendSession session =
          FrontendSession.connect(socket, ram, options(Handshake.QEMU))) {
        EchoDriver driver = new EchoDriver(session);
        assertEquals(0, driver.run(1000, CHAIN_BYTES, Duration.ofSeconds(30)).errors());
        first.close(); // the backend dies under the running guest
        try (EchoEngine second = EchoEngine.listen(socket, EchoEngine.anyMemory())) {
          session.reconnect(socket);
          Stats stats = driver.run(1000, CHAIN_BYTES, Duration.ofSeconds(30));
          assertEquals(0, stats.errors(), "errors; first: " + stats.firstError());
          assertEquals(1000, second.device.served(), "chains the new backend served");
          // It took up the ring at the used index the first one left, not at 0.
          assertEquals(2000, session.stop()[0], "ring 0 stopped at");
        }
      }
    }
  }

  /**
   * What /proc/self/maps shows while the session runs: the frontend maps all of its guest memory;
   * the engine maps what it was given (all of RAM; only the pool memfd; only the pool's window of
   * RAM; its own pool, which the frontend maps too).
   */
  private static void assertMappings(Layout layout) {
    List<ProcessMaps.Entry> ram = ProcessMaps.ofMemfd("bounce-guest-ram");
    List<ProcessMaps.Entry> pool = ProcessMaps.ofMemfd("bounce-guest-pool");
    List<ProcessMaps.Entry> devicePool = ProcessMaps.ofMemfd("bounce-device-pool");
    String seen =
        "guest RAM mappings " + ram + ", pool mappings " + pool + ", device pool " + devicePool;
    switch (layout) {
      case SHARED -> {
        assertEquals(
            List.of(RAM_SIZE, RAM_SIZE), sizes(ram), "frontend and engine map RAM: " + seen);
        assertEquals(List.of(), pool, seen);
      }
      case POOL -> {
        assertEquals(
            List.of(RAM_SIZE), sizes(ram), "only the frontend maps RAM (never shared): " + seen);
        assertEquals(List.of(POOL_SIZE, POOL_SIZE), sizes(pool), "both map the pool: " + seen);
      }
      case SHARED_WITH_POOL -> {
        assertEquals(List.of(), pool, seen);
        assertEquals(2, ram.size(), seen);
        assertTrue(
            ram.stream().anyMatch(e -> e.size() == RAM_SIZE && e.offset() == 0),
            "the frontend maps all of RAM: " + seen);
        assertTrue(
            ram.stream()
                .anyMatch(e -> e.size() == POOL_SIZE && e.offset() == POOL_IN_RAM - RAM_START),
            "the engine maps only the pool's pages of the RAM memfd: " + seen);
      }
      case DEVICE_POOL -> {
        assertEquals(List.of(RAM_SIZE), sizes(ram), "RAM is never shared: " + seen);
        assertEquals(List.of(), pool, seen);
        assertEquals(
            List.of(POOL_SIZE, POOL_SIZE), sizes(devicePool), "both map the pool: " + seen);
      }
    }
  }

  private static List<Long> sizes(List<ProcessMaps.Entry> entries) {
    return entries.stream().map(ProcessMaps.Entry::size).toList();
  }

  /**
   * DPDK virtio-user with server=1: the frontend listens, the engine connects (client mode); and
   * when that frontend goes away and a new one listens, the engine connects again.
   */
  @Test
  void frontendListensAndTheEngineConnectsAgainAfterItLeft() throws Exception {
    Path socket = dir.resolve("listen.sock");
    try (EchoEngine engine = EchoEngine.connect(socket)) {
      for (int round = 1; round <= 2; round++) {
        try (GuestRam ram = Layout.SHARED.create();
            FrontendSession session =
                FrontendSession.accept(
                    socket, Duration.ofSeconds(20), ram, options(Handshake.DPDK))) {
          Stats stats = new EchoDriver(session).run(CHAINS, CHAIN_BYTES, Duration.ofSeconds(30));
          assertEquals(0, stats.errors(), "round " + round + ": first: " + stats.firstError());
          assertEquals(CHAINS, stats.operations(), "round " + round);
          assertEquals(CHAINS, engine.device.served(), "round " + round);
          session.stop();
        }
        engine.awaitNoSession(Duration.ofSeconds(20));
      }
    }
  }
}
