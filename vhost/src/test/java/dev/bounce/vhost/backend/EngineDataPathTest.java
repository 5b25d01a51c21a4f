package dev.bounce.vhost.backend;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.Ranges;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.protocol.ConfigSpace;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.MemoryTable;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.protocol.SingleMemoryRegion;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The engine's data path end to end: a real {@link BackendServer} serving an {@link EchoDevice} on
 * a real Unix socket, on its own control and data loops; the test is the frontend ({@link
 * FrontendChannel}, the jnr side) and the guest driver ({@link DriverQueue}) over real memfds, and
 * notifications travel through real eventfds: the test writes the kick eventfd and reads the call
 * and err eventfds.
 */
class EngineDataPathTest {
  static final long MIB = 1 << 20;
  static final long GUEST_BASE = 0x4000_0000L;
  static final long RAM_SIZE = 8 * MIB;

  /** A second and third region for memory-table changes, well apart from RAM. */
  static final long EXTRA_BASE = 0x8000_0000L;

  /** Larger than the engine's batch (DataPlane.BATCH): a ring's worth takes several rounds. */
  static final int QUEUE_SIZE = 256;

  static final int INDIRECT_ENTRIES = 4;
  static final long SLOT = 1024; // per chain: the request at +0, the echo at +SLOT / 2
  static final Duration TIMEOUT = Duration.ofSeconds(10);
  static final Duration QUIET = Duration.ofMillis(300);

  static final long EVENT_IDX = VirtioFeatures.bit(VirtioFeatures.EVENT_IDX);
  static final long INDIRECT = VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC);
  static final long BASE_FEATURES =
      VirtioFeatures.bit(VirtioFeatures.VERSION_1)
          | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES);
  static final long PROTOCOL_FEATURES =
      ProtocolFeature.maskOf(
          ProtocolFeature.MQ,
          ProtocolFeature.REPLY_ACK,
          ProtocolFeature.CONFIG,
          ProtocolFeature.RESET_DEVICE,
          ProtocolFeature.CONFIGURE_MEM_SLOTS);

  /** How the frontend hands memory over (REAL-PEERS.md). */
  enum MemoryStyle {
    /** QEMU 7.2: one SET_MEM_TABLE. */
    SET_MEM_TABLE,
    /** QEMU 7.2 with CONFIGURE_MEM_SLOTS: GET_MAX_MEM_SLOTS, then ADD_MEM_REG per region. */
    ADD_MEM_REG
  }

  @TempDir Path dir;

  private final List<AutoCloseable> resources = new ArrayList<>();
  private final LogCapture log = new LogCapture();
  private EventLoops loops;
  private EchoDevice echo;
  private BackendServer server;

  @AfterEach
  void tearDown() throws Exception {
    for (AutoCloseable r : resources.reversed()) r.close();
    if (server != null) server.close();
    if (loops != null) loops.close();
    log.close();
  }

  private void serve(int queues) throws IOException {
    serve(queues, RingPolling.DEFAULT);
  }

  private void serve(int queues, RingPolling polling) throws IOException {
    loops = new EventLoops(2, "engine-test");
    echo = new EchoDevice(queues, 256);
    server =
        BackendServer.listen(
            dir.resolve("echo.sock"),
            new BackendServer.Config(
                "echo",
                echo,
                loops.next(),
                loops.next(),
                RestrictedDma.OFF,
                BackendServer.Config.DEFAULT_MAX_GUEST_MEMORY,
                polling));
  }

  private Frontend connect(int queues) throws IOException, NativeException {
    Frontend frontend = new Frontend(FrontendChannel.connect(server.path()), queues);
    resources.add(frontend);
    return frontend;
  }

  // ---- the handshake and echoes ----

  @ParameterizedTest(name = "{0}, EVENT_IDX {1}, indirect {2}")
  @CsvSource({
    "SET_MEM_TABLE, false, false",
    "SET_MEM_TABLE, true, false",
    "SET_MEM_TABLE, false, true",
    "SET_MEM_TABLE, true, true",
    "ADD_MEM_REG, false, false",
    "ADD_MEM_REG, true, true"
  })
  void chainsEchoThroughRealKicksAndCalls(MemoryStyle style, boolean eventIdx, boolean indirect)
      throws Exception {
    serve(2);
    Frontend f = connect(2);
    long features = BASE_FEATURES | (eventIdx ? EVENT_IDX : 0) | (indirect ? INDIRECT : 0);
    f.handshake(style, features);
    assertEquals(eventIdx, f.ring(0).queue.eventIdx());
    assertEquals(indirect, f.ring(0).queue.indirectDescriptors());

    // One at a time: every chain needs a kick, and the device must call for every one.
    for (int k = 0; k < 20; k++) f.ring(k % 2).echoOne(k * 37 % 300, indirect);
    // Then a stream with back-pressure through the rings, where a lost kick or call would stall it.
    // How many kicks and calls are suppressed here is up to timing (a device that keeps up re-arms
    // before every post): NotificationTest and ConcurrentDriverTest check suppression.
    Ring ring = f.ring(0);
    ring.stream(5000, f.ram, ring.bufferBase, indirect);
    assertEquals(0, ring.queue.inFlight());
    assertEquals(5020, echo.served());
    assertEquals(5020, f.configServed());
    assertEquals(0, f.errSignals(), "no ring reported a guest error");
    assertEquals(List.of(), log.warnings());
  }

  @Test
  void theFeaturesOfferedIncludeWhatTheEngineServes() throws Exception {
    serve(1);
    Frontend f = connect(1);
    long offered = f.channel.getU64(FrontendRequest.GET_FEATURES);
    for (int bit :
        new int[] {
          VirtioFeatures.VERSION_1,
          VirtioFeatures.PROTOCOL_FEATURES,
          VirtioFeatures.EVENT_IDX,
          VirtioFeatures.INDIRECT_DESC
        }) {
      assertTrue(VirtioFeatures.has(offered, bit), "bit " + bit);
    }
    long protocol = f.channel.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
    assertEquals(PROTOCOL_FEATURES, protocol & PROTOCOL_FEATURES);
    assertEquals(1, f.channel.getU64(FrontendRequest.GET_QUEUE_NUM));
  }

  // ---- memory changes under traffic ----

  /**
   * ADD_MEM_REG of a new region, traffic through it, ADD_MEM_REG + REM_MEM_REG of one never used,
   * REM_MEM_REG of the new one once unused, all while a driver thread keeps echoing; REM_MEM_REG of
   * the region the rings are in is refused. With SET_MEM_TABLE: whole new tables (RAM + the new
   * region, then RAM alone), each one remapping RAM under the running rings.
   */
  @ParameterizedTest
  @EnumSource(MemoryStyle.class)
  void theMemoryTableChangesWhileTheRingRunsAndTrafficContinues(MemoryStyle style)
      throws Exception {
    serve(1);
    Frontend f = connect(1);
    f.handshake(style, BASE_FEATURES | EVENT_IDX | INDIRECT);
    Ring ring = f.ring(0);
    Region extra = f.region(EXTRA_BASE, MIB);
    Region unused = f.region(EXTRA_BASE + 4 * MIB, MIB);

    AtomicReference<Region> target = new AtomicReference<>(f.ram);
    AtomicLong inExtra = new AtomicLong();
    AtomicBoolean stop = new AtomicBoolean();
    AtomicLong idle = new AtomicLong(); // increments whenever nothing is in flight
    try (ExecutorService traffic = Executors.newSingleThreadExecutor()) {
      Future<Long> driver =
          traffic.submit(
              () -> {
                long done = 0;
                while (!stop.get()) {
                  Region where = target.get();
                  int n =
                      ring.stream(64, where, where == f.ram ? ring.bufferBase : where.base, true);
                  if (where == extra) inExtra.addAndGet(n);
                  done += n;
                  idle.incrementAndGet();
                }
                return done;
              });
      awaitProgress(idle, driver);

      int liveBefore = (int) Mapping.liveCount();
      if (style == MemoryStyle.ADD_MEM_REG) {
        f.channel.ack(
            FrontendRequest.ADD_MEM_REG,
            new SingleMemoryRegion(extra.description()),
            extra.memfd.fd());
      } else {
        f.channel.ack(
            FrontendRequest.SET_MEM_TABLE,
            new MemoryTable(List.of(f.ram.description(), extra.description())),
            f.ram.memfd.fd(),
            extra.memfd.fd());
      }
      assertEquals(liveBefore + 1, Mapping.liveCount(), "the backend mapped the new region");
      target.set(extra);
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (inExtra.get() < 2000) {
        if (System.nanoTime() > deadline || driver.isDone())
          fail("no traffic through the new region");
        Thread.sleep(1);
      }

      if (style == MemoryStyle.ADD_MEM_REG) {
        f.channel.ack(
            FrontendRequest.ADD_MEM_REG,
            new SingleMemoryRegion(unused.description()),
            unused.memfd.fd());
        assertEquals(liveBefore + 2, Mapping.liveCount());
        f.channel.ack(FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(unused.description()));
        assertEquals(liveBefore + 1, Mapping.liveCount(), "REM_MEM_REG unmapped it at once");
      }
      awaitProgress(idle, driver);

      // back to RAM only; once the driver has been idle (nothing in flight) the extra is unused
      target.set(f.ram);
      awaitProgress(idle, driver);
      awaitProgress(idle, driver);
      if (style == MemoryStyle.ADD_MEM_REG) {
        f.channel.ack(FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(extra.description()));
        FrontendChannel.Refused refused =
            assertThrows(
                FrontendChannel.Refused.class,
                () ->
                    f.channel.ack(
                        FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(f.ram.description())));
        assertEquals(FrontendRequest.REM_MEM_REG, refused.request());
      } else {
        f.channel.ack(
            FrontendRequest.SET_MEM_TABLE,
            new MemoryTable(List.of(f.ram.description())),
            f.ram.memfd.fd());
      }
      assertEquals(liveBefore, Mapping.liveCount(), "the old mappings are gone");
      awaitProgress(idle, driver);
      stop.set(true);
      long done = driver.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
      assertTrue(done > inExtra.get() && inExtra.get() >= 2000, done + " " + inExtra);
      assertEquals(done, echo.served());
    }
    assertEquals(0, f.errSignals());
    List<String> warnings = log.warnings();
    if (style == MemoryStyle.ADD_MEM_REG) {
      assertEquals(1, warnings.size(), warnings.toString());
      assertTrue(warnings.getFirst().contains("a running ring lies in it"), warnings.toString());
    } else {
      assertEquals(List.of(), warnings);
    }
  }

  /** Waits until the driver thread has finished a few more batches. */
  private static void awaitProgress(AtomicLong batches, Future<?> driver) throws Exception {
    long target = batches.get() + 3;
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (batches.get() < target) {
      if (driver.isDone()) driver.get(); // throws what it failed with
      if (System.nanoTime() > deadline) fail("the driver thread made no progress");
      Thread.sleep(1);
    }
  }

  // ---- polling a ring that ran dry ----

  @ParameterizedTest(name = "EVENT_IDX {0}")
  @ValueSource(booleans = {false, true})
  void whileARingIsPolledItsDriverNeedNotKick(boolean eventIdx) throws Exception {
    Ring ring = polledForASecond(eventIdx);
    Frontend f = ring.frontend;
    for (int k = 0; k < 10; k++) {
      ring.call.drain();
      assertFalse(ring.queue.enableUsedNotifications(), "nothing pending before");
      assertEquals(1, ring.post(1, f.ram, ring.bufferBase, false));
      int chain = k;
      assertFalse(
          ring.queue.prepareKick(),
          () ->
              "chain " + chain + ": a kick asked for while the ring is polled: " + ring.describe());
      ring.awaitCompleted(ring.completed + 1); // served without one
    }
    assertEquals(11, echo.served());
    assertEquals(List.of(), log.warnings());
  }

  @ParameterizedTest(name = "EVENT_IDX {0}")
  @ValueSource(booleans = {false, true})
  void aRingStoppedWhilePolledIsHandedBackWithKicksRearmed(boolean eventIdx) throws Exception {
    Ring ring = polledForASecond(eventIdx);
    Frontend f = ring.frontend;
    assertEquals(1, f.getVringBase(0));
    // Whoever drives the ring next (a migration target, another backend) waits for kicks: the
    // guest must be told to send them, in its memory, which the stop is the last chance to touch.
    assertEquals(0, usedFlags(ring) & 1, "VIRTQ_USED_F_NO_NOTIFY cleared: " + ring.describe());
    assertEquals(1, ring.post(1, f.ram, ring.bufferBase, false));
    assertTrue(ring.queue.prepareKick(), "the next chain asks for a kick: " + ring.describe());
  }

  /**
   * A ring that served one chain and is now polled, kicks suppressed, for a second: without
   * EVENT_IDX once VIRTQ_USED_F_NO_NOTIFY is seen (the engine signals the call before it starts
   * polling); with it, avail_event stays behind from the start.
   */
  private Ring polledForASecond(boolean eventIdx) throws Exception {
    long second = RingPolling.LIMIT_MICROS;
    serve(1, new RingPolling(second, second));
    Frontend f = connect(1);
    f.handshake(MemoryStyle.SET_MEM_TABLE, BASE_FEATURES | (eventIdx ? EVENT_IDX : 0));
    Ring ring = f.ring(0);
    ring.echoOne(0, false);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!eventIdx && (usedFlags(ring) & 1) == 0) {
      if (System.nanoTime() > deadline) fail("the ring was never polled: " + ring.describe());
      Thread.onSpinWait();
    }
    if (eventIdx) {
      // Re-armed kicks would move avail_event to 1 right after the chain: give an engine that
      // does not poll time to, then see it still at 0.
      Thread.sleep(50);
      assertEquals(0, availEvent(ring), "the ring was never polled: " + ring.describe());
    }
    return ring;
  }

  /** The used ring's avail_event (EVENT_IDX): after its flags, idx and ring of 8-byte entries. */
  private static int availEvent(Ring ring) {
    VarHandle.fullFence();
    long at = ring.queue.guestAddresses().usedRing() + 4 + 8L * ring.queue.size();
    return Short.toUnsignedInt(ring.frontend.ram.at(at, 2).get(LE16, 0));
  }

  @Test
  void theWindowGrowsToCoverADriversPauses() throws Exception {
    // 1 ms at first, up to 400 ms; the driver works every 150 ms. Each pause outlasts the window
    // and ends in a kick within 400 ms of the ring's last work, so the window doubles (1, 2, 4 and
    // so on) until it covers the pause, and the driver no longer needs to kick.
    serve(1, new RingPolling(1_000, 400_000));
    Frontend f = connect(1);
    f.handshake(MemoryStyle.SET_MEM_TABLE, BASE_FEATURES); // no EVENT_IDX: used.flags tells
    int kicks = kicksUntilAPauseIsPolled(f, f.ring(0));
    // The first kick teaches nothing (no window had closed); then 1 ms doubles 8 times to 256 ms.
    assertTrue(kicks >= 9, kicks + " kicks before the window covered 150 ms, from 1 ms");
  }

  @Test
  void aStoppedRingStartsAgainWithTheBaseWindow() throws Exception {
    serve(1, new RingPolling(1_000, 400_000));
    Frontend f = connect(1);
    f.handshake(MemoryStyle.SET_MEM_TABLE, BASE_FEATURES);
    Ring ring = f.ring(0);
    kicksUntilAPauseIsPolled(f, ring); // grown to cover 150 ms
    // Stopped and started again where it stopped (a new owner, with pauses of its own).
    int base = f.getVringBase(0);
    f.channel.ack(FrontendRequest.SET_VRING_BASE, new VringState(0, base));
    EventFd kick = ring.replaceKick();
    f.channel.ack(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), kick.fd());
    ring.echoOne(0, false);
    Thread.sleep(150);
    ring.call.drain();
    assertEquals(1, ring.post(1, f.ram, ring.bufferBase, false));
    assertTrue(ring.queue.prepareKick(), "150 ms later the 1 ms window is long over");
  }

  /**
   * Posts a chain every 150 ms, kicking when the engine asks, until one needs no kick (the window
   * covers the pause); fails after 20.
   *
   * @return the kicks sent
   */
  private static int kicksUntilAPauseIsPolled(Frontend f, Ring ring) throws Exception {
    int kicks = 0;
    for (int k = 0; k < 20; k++) {
      Thread.sleep(150);
      ring.call.drain();
      assertFalse(ring.queue.enableUsedNotifications(), "nothing pending before");
      assertEquals(1, ring.post(1, f.ram, ring.bufferBase, false));
      boolean kickNeeded = ring.queue.prepareKick();
      if (kickNeeded) {
        ring.kick.signal();
        kicks++;
      }
      ring.awaitCompleted(ring.completed + 1);
      if (!kickNeeded) return kicks;
    }
    throw new AssertionError("after 20 pauses of 150 ms each chain still needed a kick");
  }

  private static int usedFlags(Ring ring) {
    VarHandle.fullFence();
    return Short.toUnsignedInt(
        ring.frontend.ram.at(ring.queue.guestAddresses().usedRing(), 2).get(LE16, 0));
  }

  // ---- stopping and gating rings ----

  @Test
  void getVringBaseStopsTheRingAndAnswersTheChainsConsumed() throws Exception {
    serve(1);
    Frontend f = connect(1);
    f.handshake(MemoryStyle.SET_MEM_TABLE, BASE_FEATURES | EVENT_IDX);
    Ring ring = f.ring(0);
    for (int k = 0; k < 7; k++) ring.echoOne(64, false);
    ring.stream(300, f.ram, ring.bufferBase, false);

    ring.call.drain();
    int base = f.getVringBase(0);
    assertEquals(307, base, "GET_VRING_BASE answers the next avail index to consume");
    assertEquals(307, ring.queue.lastUsedIndex());

    // stopped: kicks are no longer heard, nothing is used
    ring.post(3, f.ram, ring.bufferBase, false);
    ring.queue.publish();
    ring.kick.signal();
    ring.kick.signal();
    Thread.sleep(QUIET.toMillis());
    assertFalse(ring.queue.hasUsed(), "a stopped ring used nothing");
    assertFalse(Libc.pollIn(ring.call.fd().value(), 0), "nor called");
    assertEquals(307, echo.served());

    // started again where it stopped (QEMU after a stop/cont): the three waiting chains run
    f.channel.ack(FrontendRequest.SET_VRING_BASE, new VringState(0, base));
    EventFd kick = ring.replaceKick();
    f.channel.ack(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), kick.fd());
    ring.awaitCompleted(ring.completed + 3);
    ring.echoOne(10, false);
    assertEquals(311, echo.served());
    assertEquals(311, f.getVringBase(0));
    assertEquals(List.of(), log.warnings());
  }

  @Test
  void setVringEnableGatesProcessing() throws Exception {
    serve(2);
    Frontend f = connect(2);
    f.handshake(MemoryStyle.SET_MEM_TABLE, BASE_FEATURES);
    Ring ring = f.ring(1);
    ring.echoOne(100, false);

    f.channel.ack(FrontendRequest.SET_VRING_ENABLE, new VringState(1, 0));
    ring.queue.enableUsedNotifications();
    ring.post(5, f.ram, ring.bufferBase, false);
    ring.queue.publish();
    ring.kick.signal();
    Thread.sleep(QUIET.toMillis());
    assertFalse(ring.queue.hasUsed(), "a disabled ring is not processed");
    f.ring(0).echoOne(10, false); // the other ring is not affected
    assertFalse(ring.queue.hasUsed());

    f.channel.ack(FrontendRequest.SET_VRING_ENABLE, new VringState(1, 1));
    ring.awaitCompleted(ring.completed + 5); // enabling serves what waited, without a kick
    ring.echoOne(100, false);
    assertEquals(8, echo.served());
    assertEquals(List.of(), log.warnings());
  }

  // ---- guest errors ----

  @Test
  void aLoopingChainStopsOnlyItsRingAndSignalsItsErrEventfd() throws Exception {
    serve(2);
    Frontend f = connect(2);
    f.handshake(MemoryStyle.SET_MEM_TABLE, BASE_FEATURES | EVENT_IDX);
    Ring bad = f.ring(0);
    Ring good = f.ring(1);
    bad.echoOne(50, false);
    good.echoOne(50, false);

    // Two descriptors that chain to each other, posted behind DriverQueue's back.
    long desc = bad.queue.guestAddresses().descriptorTable();
    long avail = bad.queue.guestAddresses().availableRing();
    int entry = bad.queue.availIndex();
    MemorySegment table = f.ram.at(desc, 32);
    for (int i = 0; i < 2; i++) {
      table.set(LE64, 16L * i, bad.bufferBase);
      table.set(LE32, 16L * i + 8, 16);
      table.set(LE32, 16L * i + 12, 1 | ((1 - i) << 16)); // NEXT, next = the other one
    }
    MemorySegment availRing = f.ram.at(avail, 4 + 2 * QUEUE_SIZE);
    availRing.set(LE16, 4 + 2L * (entry % QUEUE_SIZE), (short) 0);
    VarHandle.releaseFence();
    availRing.set(LE16, 2, (short) (entry + 1));
    VarHandle.fullFence();
    bad.kick.signal();

    awaitSignal(bad.err, "ring 0's err eventfd");
    assertFalse(Libc.pollIn(good.err.fd().value(), 0), "ring 1 reported nothing");
    good.stream(2000, f.ram, good.bufferBase, false);
    for (int k = 0; k < 5; k++) good.echoOne(k, false);
    bad.kick.signal();
    Thread.sleep(QUIET.toMillis());
    assertEquals(1, (int) f.usedIndex(bad), "the stopped ring used nothing more");
    assertEquals(2007, echo.served());
    List<String> warnings = log.warnings();
    assertEquals(1, warnings.size(), warnings.toString());
    assertTrue(
        warnings.getFirst().contains("ring 0 stopped by a guest error"), warnings.toString());
    assertTrue(warnings.getFirst().contains("chain"), warnings.toString());

    // The guest resets the device and sets everything up again: ring 0 works again.
    f.channel.ack(FrontendRequest.RESET_DEVICE);
    f.setUp(BASE_FEATURES | EVENT_IDX, null);
    bad.echoOne(20, false);
    good.echoOne(20, false);
  }

  // ---- reset and reconnect ----

  @Test
  void resetDeviceThenDisconnectAndANewFrontendOnTheSameServer() throws Exception {
    serve(2);
    Frontend first = connect(2);
    first.handshake(MemoryStyle.ADD_MEM_REG, BASE_FEATURES | EVENT_IDX | INDIRECT);
    for (int k = 0; k < 10; k++) first.ring(k % 2).echoOne(k, k % 3 == 0);
    assertEquals(10, first.configServed());

    // RESET_DEVICE: the device forgets, the rings stop, their eventfds are let go
    first.channel.ack(FrontendRequest.RESET_DEVICE);
    assertEquals(0, first.configServed(), "the device state is reset");
    Ring ring = first.ring(0);
    ring.post(1, first.ram, ring.bufferBase, false);
    ring.queue.publish();
    ring.kick.signal();
    Thread.sleep(QUIET.toMillis());
    assertFalse(ring.queue.hasUsed(), "a reset ring is not served");

    // the same connection sets the device up again (the memory stays)
    first.setUp(BASE_FEATURES | EVENT_IDX, null);
    first.ring(0).echoOne(30, false);
    first.ring(1).echoOne(30, false);
    assertEquals(2, first.configServed());

    // a second frontend while one is served is turned away
    try (FrontendChannel intruder = FrontendChannel.connect(server.path())) {
      assertTrue(intruder.isClosedByPeer(TIMEOUT), "the backend closed the second connection");
    }
    first.ring(0).echoOne(30, false);

    // the frontend goes away: the session ends and everything it gave is released
    BackendSession session = server.session();
    assertNotNull(session);
    int mappingsWhileServed = (int) Mapping.liveCount();
    first.channel.close();
    awaitNoSession();
    assertEquals(mappingsWhileServed - 1, Mapping.liveCount(), "the backend unmapped guest RAM");
    assertEquals(0, echo.served(), "the device was reset when the frontend left");

    // a new frontend (a new guest boot) on the same server works from scratch
    Frontend second = connect(2);
    second.handshake(MemoryStyle.SET_MEM_TABLE, BASE_FEATURES | INDIRECT);
    for (int k = 0; k < 6; k++) second.ring(k % 2).echoOne(100 + k, true);
    second.ring(1).stream(1000, second.ram, second.ring(1).bufferBase, true);
    assertEquals(1006, second.configServed());
    assertTrue(server.session() != session);
    assertEquals(
        List.of(
            BackendServer.class.getName()
                + ": echo: a second frontend connected while one is being served; closing it"),
        log.warnings());
  }

  private void awaitNoSession() throws InterruptedException {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (server.session() != null) {
      if (System.nanoTime() > deadline) fail("the session did not end");
      Thread.sleep(1);
    }
  }

  static void awaitSignal(EventFd fd, String what) throws NativeException {
    if (!Libc.pollIn(fd.fd().value(), (int) TIMEOUT.toMillis())) {
      fail(what + " was not signalled within " + TIMEOUT);
    }
    assertTrue(fd.drain() > 0);
  }

  // ---- the test's frontend and guest ----

  /** A piece of guest memory: a memfd of its own, mapped here (its frontend address). */
  static final class Region implements AutoCloseable {
    final long base;
    final long size;
    final Memfd memfd;
    final Mapping view;

    Region(long base, long size) throws NativeException {
      this.base = base;
      this.size = size;
      this.memfd = Memfd.create("engine-test", size);
      this.view = memfd.map(0, size);
    }

    MemoryRegionDescription description() {
      return new MemoryRegionDescription(base, size, view.segment().address(), 0);
    }

    MemorySegment at(long guestAddress, long length) {
      if (!Ranges.contains(base, size, guestAddress, length)) {
        throw new IllegalArgumentException(Ranges.describe(guestAddress, length) + " not here");
      }
      return view.segment().asSlice(guestAddress - base, length);
    }

    @Override
    public void close() {
      view.close();
      memfd.close();
    }
  }

  /** The VMM and the guest: the socket, guest RAM, and a driver per ring. */
  final class Frontend implements AutoCloseable {
    final FrontendChannel channel;
    final Region ram;
    final List<Region> regions = new ArrayList<>();
    final Ring[] rings;

    Frontend(FrontendChannel channel, int queues) throws NativeException {
      this.channel = channel;
      this.ram = new Region(GUEST_BASE, RAM_SIZE);
      this.rings = new Ring[queues];
      for (int i = 0; i < queues; i++) rings[i] = new Ring(this, i);
    }

    Ring ring(int i) {
      return rings[i];
    }

    Region region(long base, long size) throws NativeException {
      Region r = new Region(base, size);
      regions.add(r);
      return r;
    }

    /** The negotiation as QEMU 7.2 does it, each step acknowledged, then the rings. */
    void handshake(MemoryStyle style, long features) throws IOException, NativeException {
      long offered = channel.getU64(FrontendRequest.GET_FEATURES);
      assertEquals(features, features & offered, "every feature wanted is offered");
      long protocol = channel.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
      channel.send(
          FrontendRequest.SET_PROTOCOL_FEATURES, new U64(protocol & PROTOCOL_FEATURES), false);
      assertEquals(rings.length, channel.getU64(FrontendRequest.GET_QUEUE_NUM));
      channel.ack(FrontendRequest.SET_OWNER);
      // REAL-PEERS.md: QEMU sends SET_VRING_CALL before SET_FEATURES and SET_MEM_TABLE
      for (Ring r : rings) {
        channel.ack(FrontendRequest.SET_VRING_CALL, new VringFdIndex(r.index, false), r.call.fd());
      }
      setUp(features, style);
    }

    /** SET_FEATURES, the memory (unless style is null), then every ring from its start. */
    void setUp(long features, MemoryStyle style) throws IOException, NativeException {
      channel.ack(FrontendRequest.SET_FEATURES, new U64(features));
      if (style == MemoryStyle.SET_MEM_TABLE) {
        channel.ack(
            FrontendRequest.SET_MEM_TABLE,
            new MemoryTable(List.of(ram.description())),
            ram.memfd.fd());
      } else if (style == MemoryStyle.ADD_MEM_REG) {
        assertTrue(channel.getU64(FrontendRequest.GET_MAX_MEM_SLOTS) >= 8);
        channel.ack(
            FrontendRequest.ADD_MEM_REG, new SingleMemoryRegion(ram.description()), ram.memfd.fd());
      }
      for (Ring r : rings) r.setUp(features);
      for (Ring r : rings) {
        channel.ack(FrontendRequest.SET_VRING_ENABLE, new VringState(r.index, 1));
      }
    }

    int getVringBase(int index) throws IOException {
      try (Message<FrontendRequest> reply =
          channel.call(FrontendRequest.GET_VRING_BASE, new VringState(index, 0))) {
        VringState state = reply.payload(VringState.class);
        assertEquals(index, state.index());
        return (int) state.num();
      }
    }

    /** The echo device's config: chains served since its last reset. */
    long configServed() throws IOException {
      try (Message<FrontendRequest> reply =
          channel.call(FrontendRequest.GET_CONFIG, ConfigSpace.read(0, 8))) {
        byte[] data = reply.payload(ConfigSpace.class).data();
        return ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).getLong();
      }
    }

    long errSignals() throws NativeException {
      long n = 0;
      for (Ring r : rings) n += r.err.drain();
      return n;
    }

    int usedIndex(Ring r) {
      VarHandle.fullFence();
      return Short.toUnsignedInt(ram.at(r.queue.guestAddresses().usedRing(), 4).get(LE16, 2));
    }

    @Override
    public void close() {
      channel.close();
      for (Ring r : rings) r.close();
      for (Region r : regions) r.close();
      ram.close();
    }
  }

  /**
   * One ring as the guest drives it: a {@link DriverQueue} in guest RAM, its three eventfds, and
   * echo chains whose every byte is checked when they come back.
   */
  final class Ring implements AutoCloseable {
    final Frontend frontend;
    final int index;
    final long ringBase;
    final long bufferBase;
    EventFd kick;
    final EventFd call;
    final EventFd err;
    DriverQueue queue;
    final long[] seqOf = new long[QUEUE_SIZE];
    final int[] lengthOf = new int[QUEUE_SIZE];
    final long[] requestOf = new long[QUEUE_SIZE];
    final Region[] regionOf = new Region[QUEUE_SIZE];
    long posted;
    long completed;
    private final DriverQueue.UsedConsumer check = this::check;

    Ring(Frontend frontend, int index) throws NativeException {
      this.frontend = frontend;
      this.index = index;
      this.ringBase = GUEST_BASE + 64 * 1024L * index;
      this.bufferBase = GUEST_BASE + MIB + MIB * index;
      this.kick = EventFd.create();
      this.call = EventFd.create();
      this.err = EventFd.create();
    }

    /** The ring from scratch (a new queue, as a guest driver after reset), started and enabled. */
    void setUp(long features) throws IOException {
      queue =
          DriverQueue.builder(
                  frontend.ram.view.segment(), GUEST_BASE, frontend.ram.view.segment().address())
              .index(index)
              .size(QUEUE_SIZE)
              .features(features)
              .ringsAt(ringBase)
              .indirectTables(ringBase + 32 * 1024, INDIRECT_ENTRIES)
              .build();
      posted = 0;
      completed = 0;
      FrontendChannel c = frontend.channel;
      c.ack(FrontendRequest.SET_VRING_NUM, new VringState(index, QUEUE_SIZE));
      c.ack(FrontendRequest.SET_VRING_BASE, new VringState(index, 0));
      c.ack(FrontendRequest.SET_VRING_ADDR, queue.vringAddress());
      c.ack(FrontendRequest.SET_VRING_KICK, new VringFdIndex(index, false), kick.fd());
      c.ack(FrontendRequest.SET_VRING_CALL, new VringFdIndex(index, false), call.fd());
      c.ack(FrontendRequest.SET_VRING_ERR, new VringFdIndex(index, false), err.fd());
    }

    EventFd replaceKick() throws NativeException {
      kick.close();
      kick = EventFd.create();
      return kick;
    }

    /**
     * Posts up to {@code count} echo chains with their buffers in {@code region} from {@code base}
     * (a request of 8 + seq % 300 bytes, room for its echo), as many as fit; how many.
     */
    int post(int count, Region region, long base, boolean indirect) {
      int n = 0;
      while (n < count) {
        long seq = posted;
        int length = 8 + (int) (seq % 300);
        if (queue.freeDescriptors() < (indirect && queue.indirectDescriptors() ? 1 : 2)) break;
        // Completion is in order and at most QUEUE_SIZE chains are in flight, so the chain that
        // had this slot QUEUE_SIZE sequence numbers ago is done.
        long request = base + SLOT * (seq % QUEUE_SIZE);
        MemorySegment out = region.at(request, length);
        for (int k = 0; k < length; k += 8) {
          out.set(LE64, Math.min(k, length - 8), seq * 31 + k);
        }
        region.at(request + SLOT / 2, length + 16).fill((byte) 0xee);
        int head = queue.add(request, length, request + SLOT / 2, length + 16, indirect);
        assertTrue(head >= 0, "room was checked");
        seqOf[head] = seq;
        lengthOf[head] = length;
        requestOf[head] = request;
        regionOf[head] = region;
        posted++;
        n++;
      }
      return n;
    }

    private void check(int head, int length) {
      assertEquals(
          lengthOf[head], length, "ring " + index + ": used length of chain " + seqOf[head]);
      Region region = regionOf[head];
      long request = requestOf[head];
      assertArrayEquals(
          region.at(request, length).toArray(ValueLayout.JAVA_BYTE),
          region.at(request + SLOT / 2, length).toArray(ValueLayout.JAVA_BYTE),
          "ring " + index + ": the echo of chain " + seqOf[head]);
      assertEquals(
          (byte) 0xee,
          region.at(request + SLOT / 2 + length, 1).get(ValueLayout.JAVA_BYTE, 0),
          "nothing past the echo");
      completed++;
    }

    String describe() {
      MemorySegment used = frontend.ram.at(queue.guestAddresses().usedRing(), 6 + 8L * QUEUE_SIZE);
      return queue
          + ", free "
          + queue.freeDescriptors()
          + ", used.flags "
          + used.get(LE16, 0)
          + ", used.idx "
          + used.get(LE16, 2)
          + ", avail_event "
          + used.get(LE16, 4 + 8L * QUEUE_SIZE);
    }

    /** Publishes and kicks when the device asks for it. */
    void kickIfNeeded() throws NativeException {
      queue.kick(kick);
    }

    /**
     * One chain end to end: used buffer notifications on, the chain posted, a kick where the device
     * asks for one (an idle device does; one still finishing its last batch may pick the chain up
     * on its own re-check), the device's call read from the call eventfd, then the echo checked.
     * The call is awaited before anything is harvested: it was asked for, so it must come. (With
     * EVENT_IDX, a driver that harvested first would have moved used_event past the chain, and a
     * device that read it after that would rightly stay silent.)
     */
    void echoOne(int extra, boolean indirect) throws NativeException {
      call.drain();
      assertFalse(queue.enableUsedNotifications(), "nothing pending before");
      posted += extra; // vary the length
      assertEquals(1, post(1, frontend.ram, bufferBase, indirect), () -> describe());
      kickIfNeeded();
      awaitSignal(call, "ring " + index + "'s call eventfd");
      awaitCompleted(completed + 1);
      assertEquals(0, queue.inFlight());
      assertFalse(queue.hasUsed());
    }

    /**
     * Streams {@code count} chains through the ring, refilling as completions come and sleeping on
     * the call eventfd whenever nothing is used; how many completed.
     */
    int stream(int count, Region region, long base, boolean indirect) throws NativeException {
      long target = completed + count;
      long toPost = count;
      while (completed < target) {
        int n = post((int) Math.min(toPost, QUEUE_SIZE), region, base, indirect);
        toPost -= n;
        kickIfNeeded();
        if (queue.harvest(check) > 0) continue;
        if (queue.enableUsedNotificationsDelayed()) continue;
        if (!Libc.pollIn(call.fd().value(), (int) TIMEOUT.toMillis())) {
          fail(
              "ring "
                  + index
                  + ": no call within "
                  + TIMEOUT
                  + " with "
                  + queue.inFlight()
                  + " chains in flight ("
                  + queue
                  + ")");
        }
        call.drain();
      }
      return count;
    }

    /** Waits (on the call eventfd) until {@code target} chains have completed. */
    void awaitCompleted(long target) throws NativeException {
      while (completed < target) {
        if (queue.harvest(check) > 0) continue;
        if (queue.enableUsedNotifications()) continue;
        if (!Libc.pollIn(call.fd().value(), (int) TIMEOUT.toMillis())) {
          fail("ring " + index + ": " + completed + " of " + target + " completed, then no call");
        }
        call.drain();
      }
    }

    @Override
    public void close() {
      kick.close();
      call.close();
      err.close();
    }
  }

  /** The engine's log lines (System.Logger goes to java.util.logging). */
  static final class LogCapture extends Handler implements AutoCloseable {
    private final Logger logger = Logger.getLogger("dev.bounce.vhost");
    private final List<LogRecord> records = new CopyOnWriteArrayList<>();
    private final SimpleFormatter formatter = new SimpleFormatter();

    LogCapture() {
      logger.addHandler(this);
    }

    List<String> warnings() {
      return records.stream()
          .filter(r -> r.getLevel().intValue() >= Level.WARNING.intValue())
          .map(r -> r.getLoggerName() + ": " + formatter.formatMessage(r))
          .toList();
    }

    @Override
    public void publish(LogRecord record) {
      records.add(record);
    }

    @Override
    public void flush() {}

    @Override
    public void close() {
      logger.removeHandler(this);
    }
  }
}
