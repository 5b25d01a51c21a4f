package dev.bounce.it;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Libc;
import dev.bounce.pool.testing.ProcessMaps;
import dev.bounce.vhost.backend.DmaMetrics;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.backend.RestrictedDma.Policy;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.EchoDriver;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.virtq.Virtq;
import java.lang.foreign.MemorySegment;
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
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Restricted DMA end to end (issue 7): the fake frontend drives the engine's echo device over a
 * real socket with real memfds and eventfds, in every address mode, through the policy matrix, and
 * with hostile descriptors; /proc/self/maps shows what the engine mapped (both ends live here).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RestrictedDmaTest {
  static final long RAM_START = 0x4000_0000L;
  static final long RAM_SIZE = 64L << 20;
  static final long POOL_SIZE = 8L << 20;
  static final long POOL_IN_RAM = RAM_START + (32L << 20);
  static final long POOL_SLOT = 0x8000_0000L;
  static final int CHAINS = 2000;
  static final int CHAIN_BYTES = 2048;
  static final Duration WAIT = Duration.ofSeconds(20);

  static final long ECHO_FEATURES =
      VirtioFeatures.bit(VirtioFeatures.EVENT_IDX)
          | VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC);
  static final long RESTRICTED_DMA = VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA);

  @TempDir Path dir;

  static RestrictedDma dma(Policy policy, RestrictedDma.Pool pool) {
    return new RestrictedDma(policy, pool);
  }

  static FrontendSession.Options options(Handshake handshake, long driverFeatures, int queues) {
    return new FrontendSession.Options(handshake, driverFeatures, queues, 256, 0);
  }

  // ---- every address mode ----

  /** An address mode: the guest's memory, and what bounce is told. */
  enum Mode {
    /** QEMU share=on, no pool: the engine maps all RAM. */
    SHARED,
    /** QEMU share=on with a DT pool inside RAM: the engine maps only the window. */
    POOL_IN_SHARED_RAM,
    /** Firecracker's swiotlb: only the pool's memfd is shared; --pool names it. */
    POOL_ONLY_TABLE,
    /** The same, with --pool-from-table instead of the address. */
    POOL_FROM_TABLE,
    /** The backend owns the pool: nothing is shared, addresses are offsets (SHMEM). */
    DEVICE_POOL;

    GuestRam guest() throws Exception {
      return switch (this) {
        case SHARED -> GuestRam.create(MemoryMode.SHARED, RAM_START, RAM_SIZE, 0, 0);
        case POOL_IN_SHARED_RAM ->
            GuestRam.create(MemoryMode.SHARED, RAM_START, RAM_SIZE, POOL_IN_RAM, POOL_SIZE);
        case POOL_ONLY_TABLE, POOL_FROM_TABLE ->
            GuestRam.create(MemoryMode.POOL, RAM_START, RAM_SIZE, POOL_SLOT, POOL_SIZE);
        case DEVICE_POOL -> GuestRam.create(MemoryMode.DEVICE_POOL, RAM_START, RAM_SIZE, 0, 0);
      };
    }

    RestrictedDma engine() {
      return switch (this) {
        case SHARED -> RestrictedDma.OFF;
        case POOL_IN_SHARED_RAM ->
            dma(Policy.REQUIRED, new RestrictedDma.Window(POOL_IN_RAM, POOL_SIZE));
        case POOL_ONLY_TABLE ->
            dma(Policy.REQUIRED, new RestrictedDma.Window(POOL_SLOT, POOL_SIZE));
        case POOL_FROM_TABLE -> dma(Policy.REQUIRED, new RestrictedDma.SharedRegion());
        case DEVICE_POOL -> dma(Policy.REQUIRED, new RestrictedDma.DeviceOwned(POOL_SIZE));
      };
    }
  }

  @ParameterizedTest(name = "{0}")
  @EnumSource(Mode.class)
  void everyModeEchoesEveryChainAndMapsOnlyThePool(Mode mode) throws Exception {
    Path socket = dir.resolve("engine.sock");
    long driver = ECHO_FEATURES | (mode == Mode.SHARED ? 0 : RESTRICTED_DMA);
    try (EchoEngine engine = EchoEngine.listen(socket, mode.engine(), 1);
        GuestRam ram = mode.guest();
        FrontendSession session =
            FrontendSession.connect(socket, ram, options(Handshake.QEMU, driver, 1))) {
      boolean pooled = mode != Mode.SHARED;
      assertEquals(
          pooled,
          VirtioFeatures.has(session.features(), VirtioFeatures.RESTRICTED_DMA),
          "bit 27 negotiated");
      assertEquals(
          pooled,
          VirtioFeatures.has(session.offeredFeatures(), VirtioFeatures.ACCESS_PLATFORM),
          "bit 33 offered beside it");
      Stats stats = new EchoDriver(session).run(CHAINS, CHAIN_BYTES, WAIT);
      assertEquals(0, stats.errors(), "errors; first: " + stats.firstError());
      assertEquals(CHAINS, stats.operations());
      assertEquals(CHAINS, engine.device.served());
      assertMappings(mode);
      DmaMetrics metrics = engine.server.session().dmaMetrics();
      if (pooled) {
        assertEquals(POOL_SIZE, metrics.poolSize(), metrics.toString());
        assertEquals(List.of(0L), metrics.violations(), metrics.toString());
        assertTrue(metrics.peakBytesInFlight() >= 2L * CHAIN_BYTES, metrics.toString());
        assertTrue(metrics.peakBytesInFlight() <= 256L * 2 * CHAIN_BYTES, metrics.toString());
      } else {
        assertEquals(null, metrics, "no metrics without a pool");
      }
      assertEquals(CHAINS & 0xffff, session.stop()[0]);
    }
  }

  /**
   * What /proc/self/maps shows: the engine maps the pool's length of the memfd that carries it and
   * nothing else of guest memory.
   */
  private static void assertMappings(Mode mode) {
    List<ProcessMaps.Entry> ram = ProcessMaps.ofMemfd("bounce-guest-ram");
    List<ProcessMaps.Entry> pool = ProcessMaps.ofMemfd("bounce-guest-pool");
    List<ProcessMaps.Entry> device = ProcessMaps.ofMemfd("bounce-device-pool");
    String seen = "RAM " + ram + ", pool " + pool + ", device pool " + device;
    switch (mode) {
      case SHARED -> assertEquals(List.of(RAM_SIZE, RAM_SIZE), sizes(ram), seen);
      case POOL_IN_SHARED_RAM -> {
        assertEquals(2, ram.size(), seen);
        assertTrue(
            ram.stream()
                .anyMatch(e -> e.size() == POOL_SIZE && e.offset() == POOL_IN_RAM - RAM_START),
            "the engine maps only the pool's pages of RAM: " + seen);
      }
      case POOL_ONLY_TABLE, POOL_FROM_TABLE -> {
        assertEquals(List.of(RAM_SIZE), sizes(ram), "RAM is the frontend's alone: " + seen);
        assertEquals(List.of(POOL_SIZE, POOL_SIZE), sizes(pool), seen);
      }
      case DEVICE_POOL -> {
        assertEquals(List.of(RAM_SIZE), sizes(ram), "RAM is never shared: " + seen);
        assertEquals(List.of(), pool, seen);
        assertEquals(List.of(POOL_SIZE, POOL_SIZE), sizes(device), "both map the pool: " + seen);
      }
    }
  }

  private static List<Long> sizes(List<ProcessMaps.Entry> entries) {
    return entries.stream().map(ProcessMaps.Entry::size).toList();
  }

  @Test
  void poolFromTableRefusesATableOfTwoRegions() throws Exception {
    Path socket = dir.resolve("engine.sock");
    // QEMU's q35 table has two regions; the fake guest shares one, so share a pool-mode guest
    // through the slots handshake twice: the second ADD_MEM_REG is refused.
    try (EchoEngine engine = EchoEngine.listen(socket, Mode.POOL_FROM_TABLE.engine(), 1);
        GuestRam ram = Mode.POOL_FROM_TABLE.guest();
        FrontendChannel channel = FrontendChannel.connect(socket)) {
      channel.getU64(FrontendRequest.GET_FEATURES);
      channel.send(
          FrontendRequest.SET_PROTOCOL_FEATURES,
          new U64(ProtocolFeature.maskOf(ProtocolFeature.REPLY_ACK)),
          false);
      GuestRam.SharedRegion pool = ram.sharedRegions().getFirst();
      try {
        channel.ack(
            FrontendRequest.ADD_MEM_REG,
            new dev.bounce.vhost.protocol.SingleMemoryRegion(pool.description()),
            pool.fd());
        var other =
            new dev.bounce.pool.MemoryRegionDescription(
                RAM_START, 4096, pool.description().userAddress() + POOL_SIZE, 0);
        assertThrows(
            FrontendChannel.Refused.class,
            () ->
                channel.ack(
                    FrontendRequest.ADD_MEM_REG,
                    new dev.bounce.vhost.protocol.SingleMemoryRegion(other),
                    pool.fd()));
      } finally {
        pool.fd().close();
      }
    }
  }

  /** A frontend that cannot take a device-owned pool (no SHMEM) is refused at SET_FEATURES. */
  @Test
  void aFrontendWithoutShmemIsRefusedByADevicePoolBackend() throws Exception {
    Path socket = dir.resolve("engine.sock");
    try (EchoEngine engine = EchoEngine.listen(socket, Mode.DEVICE_POOL.engine(), 1);
        GuestRam ram = Mode.SHARED.guest()) {
      FrontendChannel.Refused refused =
          assertThrows(
              FrontendChannel.Refused.class,
              () ->
                  FrontendSession.connect(
                      socket, ram, options(Handshake.QEMU, ECHO_FEATURES | RESTRICTED_DMA, 1)));
      assertEquals(FrontendRequest.SET_FEATURES, refused.request());
    }
  }

  /**
   * A frontend that negotiates SHMEM but never gives a backend channel cannot have received the
   * pool: its SET_FEATURES is refused instead of starting rings whose offsets point nowhere.
   */
  @Test
  void aFrontendThatNeverTookTheDevicePoolIsRefused() throws Exception {
    Path socket = dir.resolve("engine.sock");
    try (EchoEngine engine = EchoEngine.listen(socket, Mode.DEVICE_POOL.engine(), 1);
        FrontendChannel channel = FrontendChannel.connect(socket)) {
      long offered = channel.getU64(FrontendRequest.GET_FEATURES);
      channel.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
      channel.send(
          FrontendRequest.SET_PROTOCOL_FEATURES,
          new U64(ProtocolFeature.maskOf(ProtocolFeature.REPLY_ACK, ProtocolFeature.SHMEM)),
          false);
      long features =
          offered
              & (ECHO_FEATURES
                  | RESTRICTED_DMA
                  | VirtioFeatures.bit(VirtioFeatures.VERSION_1)
                  | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES));
      FrontendChannel.Refused refused =
          assertThrows(
              FrontendChannel.Refused.class,
              () -> channel.ack(FrontendRequest.SET_FEATURES, new U64(features)));
      assertEquals(FrontendRequest.SET_FEATURES, refused.request());
    }
  }

  // ---- the policy matrix ----

  static Stream<Arguments> policyMatrix() {
    List<Arguments> all = new ArrayList<>();
    for (Policy policy : Policy.values()) {
      for (boolean accepts : new boolean[] {true, false}) all.add(Arguments.of(policy, accepts));
    }
    return all.stream();
  }

  /**
   * REPLY_ACK path (the fake frontend asks for acknowledgements when REPLY_ACK is negotiated): a
   * refused SET_FEATURES fails the handshake; otherwise the echo works and the pool is enforced.
   */
  @ParameterizedTest(name = "{0}, driver accepts bit 27: {1}")
  @MethodSource("policyMatrix")
  void policyWithReplyAck(Policy policy, boolean accepts) throws Exception {
    RestrictedDma dma =
        policy == Policy.OFF
            ? RestrictedDma.OFF
            : dma(policy, new RestrictedDma.Window(POOL_IN_RAM, POOL_SIZE));
    long driver = ECHO_FEATURES | (accepts ? RESTRICTED_DMA : 0);
    Path socket = dir.resolve("policy.sock");
    try (EchoEngine engine = EchoEngine.listen(socket, dma, 1);
        GuestRam ram =
            GuestRam.create(MemoryMode.SHARED, RAM_START, RAM_SIZE, POOL_IN_RAM, POOL_SIZE)) {
      if (policy == Policy.REQUIRED && !accepts) {
        List<String> warnings = new java.util.concurrent.CopyOnWriteArrayList<>();
        java.util.logging.Logger log = java.util.logging.Logger.getLogger("dev.bounce.vhost");
        java.util.logging.Handler capture =
            new java.util.logging.Handler() {
              @Override
              public void publish(java.util.logging.LogRecord r) {
                if (r.getLevel().intValue() >= java.util.logging.Level.WARNING.intValue()) {
                  warnings.add(new java.util.logging.SimpleFormatter().formatMessage(r));
                }
              }

              @Override
              public void flush() {}

              @Override
              public void close() {}
            };
        log.addHandler(capture);
        try {
          FrontendChannel.Refused refused =
              assertThrows(
                  FrontendChannel.Refused.class,
                  () -> FrontendSession.connect(socket, ram, options(Handshake.QEMU, driver, 1)));
          assertEquals(FrontendRequest.SET_FEATURES, refused.request());
        } finally {
          log.removeHandler(capture);
        }
        assertEquals(0, engine.device.served());
        assertEquals(1, warnings.size(), "one log line: " + warnings);
        assertTrue(
            warnings.getFirst().contains("bit 27")
                && warnings.getFirst().contains("--restricted-dma preferred"),
            warnings.getFirst());
        return;
      }
      try (FrontendSession session =
          FrontendSession.connect(socket, ram, options(Handshake.QEMU, driver, 1))) {
        assertEquals(
            policy != Policy.OFF,
            VirtioFeatures.has(session.offeredFeatures(), VirtioFeatures.RESTRICTED_DMA),
            "bit 27 offered");
        Stats stats = new EchoDriver(session).run(200, CHAIN_BYTES, WAIT);
        assertEquals(0, stats.errors(), "first: " + stats.firstError());
        assertEquals(200, engine.device.served());
        if (policy != Policy.OFF)
          assertTrue(
              ProcessMaps.ofMemfd("bounce-guest-ram").stream().anyMatch(e -> e.size() == POOL_SIZE),
              "pool enforced: only its window mapped");
      }
    }
  }

  /**
   * STATUS path without REPLY_ACK: SET_FEATURES is sent plainly (it cannot fail visibly), the
   * driver sets FEATURES_OK and reads the status back: bounce has cleared it, and no ring starts.
   */
  @ParameterizedTest(name = "{0}, driver accepts bit 27: {1}")
  @MethodSource("policyMatrix")
  void policyWithStatus(Policy policy, boolean accepts) throws Exception {
    RestrictedDma dma =
        policy == Policy.OFF
            ? RestrictedDma.OFF
            : dma(policy, new RestrictedDma.Window(POOL_IN_RAM, POOL_SIZE));
    Path socket = dir.resolve("status.sock");
    try (EchoEngine engine = EchoEngine.listen(socket, dma, 1);
        FrontendChannel channel = FrontendChannel.connect(socket)) {
      long offered = channel.getU64(FrontendRequest.GET_FEATURES);
      channel.send(
          FrontendRequest.SET_PROTOCOL_FEATURES,
          new U64(ProtocolFeature.maskOf(ProtocolFeature.STATUS)),
          false);
      long wanted =
          VirtioFeatures.bit(VirtioFeatures.VERSION_1)
              | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES)
              | (accepts ? RESTRICTED_DMA : 0);
      channel.send(FrontendRequest.SET_FEATURES, new U64(offered & wanted), false);
      channel.send(FrontendRequest.SET_STATUS, new U64(0xb), false); // ACK|DRIVER|FEATURES_OK
      long status = channel.getU64(FrontendRequest.GET_STATUS);
      boolean refused = policy == Policy.REQUIRED && !accepts;
      assertEquals(refused ? 0x3 : 0xb, status, "status read back");
    }
  }

  // ---- hostile descriptors ----

  /** One attack on queue 0 of a two-queue echo device behind a pool inside shared RAM. */
  enum Attack {
    JUST_BEFORE_THE_POOL(true),
    JUST_OUTSIDE_THE_POOL(true),
    SPANNING_THE_POOL_END(true),
    WRAPPING_2_64(true),
    INDIRECT_TABLE_OUTSIDE(true),
    RINGS_OUTSIDE(true),
    AVAIL_INDEX_RACING_PAST_THE_RING(false);

    final boolean poolViolation;

    Attack(boolean poolViolation) {
      this.poolViolation = poolViolation;
    }
  }

  @ParameterizedTest(name = "{0}")
  @EnumSource(Attack.class)
  void hostileDescriptorsStopOnlyTheirRingAndAreReported(Attack attack) throws Exception {
    Path socket = dir.resolve("hostile.sock");
    RestrictedDma dma = dma(Policy.PREFERRED, new RestrictedDma.Window(POOL_IN_RAM, POOL_SIZE));
    try (EchoEngine engine = EchoEngine.listen(socket, dma, 2);
        GuestRam ram =
            GuestRam.create(MemoryMode.SHARED, RAM_START, RAM_SIZE, POOL_IN_RAM, POOL_SIZE);
        FrontendSession session =
            FrontendSession.connect(
                socket, ram, options(Handshake.QEMU, ECHO_FEATURES | RESTRICTED_DMA, 2))) {
      FrontendSession.Queue victim = session.queue(0);
      attack(attack, session, victim);
      assertTrue(
          Libc.pollIn(victim.err().fd().value(), (int) WAIT.toMillis()),
          "the error eventfd of ring 0 signalled");
      DmaMetrics metrics = engine.server.session().dmaMetrics();
      assertEquals(
          List.of(attack.poolViolation ? 1L : 0L, 0L), metrics.violations(), metrics.toString());
      // The other ring goes on.
      Stats stats = new EchoDriver(session, 1).run(100, CHAIN_BYTES, WAIT);
      assertEquals(0, stats.errors(), "ring 1 after the attack: " + stats.firstError());
      assertEquals(100, stats.operations());
      assertFalse(
          ProcessMaps.ofMemfd("bounce-guest-ram").stream()
              .anyMatch(e -> e.size() != POOL_SIZE && e.size() != RAM_SIZE),
          "only the frontend's RAM and the engine's pool window are mapped");
    }
  }

  private static void attack(Attack attack, FrontendSession session, FrontendSession.Queue q)
      throws Exception {
    DriverQueue ring = q.ring();
    long poolEnd = POOL_IN_RAM + POOL_SIZE;
    switch (attack) {
      case JUST_BEFORE_THE_POOL -> ring.add(POOL_IN_RAM - 64, 64, false);
      case JUST_OUTSIDE_THE_POOL -> ring.add(poolEnd, 64, false);
      case SPANNING_THE_POOL_END -> ring.add(poolEnd - 32, 64, false);
      case WRAPPING_2_64 -> ring.add(-4096L, 8192, false);
      case INDIRECT_TABLE_OUTSIDE -> {
        int head = ring.add(POOL_IN_RAM + POOL_SIZE / 2, 64, false);
        MemorySegment descriptor =
            session.ram().at(ring.guestAddresses().descriptorTable() + 16L * head, 16);
        descriptor.set(LE64, 0, poolEnd);
        descriptor.set(LE32, 8, 32);
        descriptor.set(LE16, 12, (short) Virtq.VIRTQ_DESC_F_INDIRECT);
      }
      case AVAIL_INDEX_RACING_PAST_THE_RING -> {
        MemorySegment avail = session.ram().at(ring.guestAddresses().availableRing(), 4);
        avail.set(LE16, 2, (short) (ring.size() + 1));
        q.kick().signal();
        return;
      }
      case RINGS_OUTSIDE -> {
        FrontendChannel channel = session.channel();
        try (var reply = channel.call(FrontendRequest.GET_VRING_BASE, new VringState(0, 0))) {}
        long outside = session.ram().userAddress(RAM_START + 4096);
        channel.send(
            FrontendRequest.SET_VRING_ADDR,
            new VringAddress(0, 0, outside, outside + 8192, outside + 4096, 0),
            false);
        channel.send(
            FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), false, q.kick().fd());
        return;
      }
    }
    ring.publish();
    q.kick().signal();
  }
}
