package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.testing.OpenFds;
import dev.bounce.pool.testing.ProcessMaps;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.hostile.Hostile;
import dev.bounce.vhost.loop.EventLoops;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every hostile scenario against the engine in this process: the engine survives (a fresh session
 * echoes afterwards), reports each error as ARCHITECTURE.md says (err eventfd for guest errors; a
 * failure reply or the end of the connection for frontend errors), lets no exception escape into
 * its event loops, and leaks nothing: after each scenario the process has exactly the fds it had
 * before and no guest memory mapped, and after the server is closed the fds it had before the
 * server existed.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class HostileEngineTest {
  private static final long RAM_START = 0x4000_0000L;
  private static final long RAM_SIZE = 16L << 20;
  private static final long POOL_SIZE = 4L << 20;
  private static final long POOL_IN_RAM = RAM_START + (8L << 20);

  /**
   * How long to wait for a session's end and the fds' closes that must come: each wait ends when
   * they do, so this only bounds how long a leak takes to fail.
   */
  private static final Duration SETTLE = Duration.ofSeconds(20);

  /** Memfd names of the frontend's guest memory and of the hostile probes' fds. */
  private static final List<String> MEMFDS =
      List.of("bounce-guest-ram", "bounce-guest-pool", "bounce-hostile");

  @TempDir static Path dir;
  static EventLoops loops;
  static EchoEngine engine;
  static int withoutServer;
  static int baseline;
  static final LoopFailures loopFailures = new LoopFailures();

  /** Where escaped exceptions land: Netty's loop, or FdWatch's guard around bounce's callbacks. */
  static final List<Logger> loopLoggers =
      List.of(Logger.getLogger("io.netty"), Logger.getLogger("dev.bounce.vhost.loop.FdWatch"));

  @BeforeAll
  static void start() throws Exception {
    loopLoggers.forEach(l -> l.addHandler(loopFailures));
    loops = new EventLoops(2, "it-hostile");
    // Warm up on a throwaway server on the same loops: classes load, jars and native libraries
    // open (fds that stay), so that what is counted afterwards is what the scenarios leave.
    try (EchoEngine warm =
        EchoEngine.listen(loops, dir.resolve("warm.sock"), EchoEngine.anyMemory())) {
      Hostile hostile = new Hostile(config(dir.resolve("warm.sock")));
      for (String name :
          List.of("stray-fds", "desc-past-memory", "vanish-with-fds", "memfd-shrunk")) {
        hostile.run(name);
      }
      warm.awaitNoSession(SETTLE);
    }
    withoutServer = OpenFds.count();
    engine = EchoEngine.listen(loops, dir.resolve("engine.sock"), EchoEngine.anyMemory());
    baseline = OpenFds.count();
  }

  @AfterAll
  static void stop() {
    try {
      if (engine != null) {
        engine.close();
        OpenFds.assertBackTo(withoutServer, SETTLE);
      }
    } finally {
      if (loops != null) loops.close();
      loopLoggers.forEach(l -> l.removeHandler(loopFailures));
    }
  }

  @AfterEach
  void nothingEscapedIntoALoop() {
    assertEquals(List.of(), loopFailures.take(), "exceptions that escaped into an event loop");
  }

  static Hostile.Config config(Path socket) {
    return Hostile.Config.of(socket).withGuest(Hostile.Guest.shared(RAM_START, RAM_SIZE));
  }

  static Stream<String> scenarios() {
    return Hostile.names().stream();
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("scenarios")
  void survivesReportsAndLeaksNothing(String scenario) throws Exception {
    Hostile.Result result = new Hostile(config(engine.server.path())).run(scenario);
    assertTrue(result.survived(), result.line());
    assertTrue(result.reported(), result.line());
    assertReleasedEverything();
  }

  /**
   * A frontend whose memory does not match the engine's pool (every ring outside it): no chain is
   * ever served, and each attack's session, which could not even be primed, is closed before the
   * next one connects (left open, it turned every later session away as a second frontend).
   */
  @Test
  void aVictimThatCannotBePrimedIsClosed() throws Exception {
    Path socket = dir.resolve("mismatch.sock");
    try (EchoEngine mismatched =
        EchoEngine.listen(loops, socket, EchoEngine.pool(RAM_START + RAM_SIZE, POOL_SIZE))) {
      Hostile.Result result =
          new Hostile(config(socket).withTimeout(Duration.ofSeconds(2))).run("chain-loop");
      assertFalse(result.passed(), result.line());
      assertFalse(result.line().contains("instead of sending the reply"), result.line());
      assertEquals(3, result.happened().split("did not echo", -1).length - 1, result.happened());
      mismatched.awaitNoSession(SETTLE);
    }
  }

  /** Firecracker's layout (only the pool shared) with DPDK's handshake, every scenario. */
  @Test
  void everyScenarioInPoolModeWithTheDpdkHandshake() throws Exception {
    Hostile.Config config =
        config(engine.server.path())
            .withHandshake(Handshake.DPDK)
            .withGuest(
                new Hostile.Guest(MemoryMode.POOL, RAM_START, RAM_SIZE, 0x8000_0000L, POOL_SIZE));
    assertAllPassed(new Hostile(config).runAll());
    assertReleasedEverything();
  }

  /**
   * QEMU's layout (all RAM shared, with QEMU-slots' ADD_MEM_REG) against an engine that knows the
   * pool inside it: the engine maps only the pool's window, so buffers in RAM outside the pool are
   * refused like any address outside memory.
   */
  @Test
  void everyScenarioAgainstAnEngineWithARestrictedPool() throws Exception {
    Path socket = dir.resolve("pool.sock");
    try (EchoEngine pooled =
        EchoEngine.listen(loops, socket, EchoEngine.pool(POOL_IN_RAM, POOL_SIZE))) {
      Hostile.Config config =
          config(socket)
              .withHandshake(Handshake.QEMU_SLOTS)
              .withGuest(
                  new Hostile.Guest(
                      MemoryMode.SHARED, RAM_START, RAM_SIZE, POOL_IN_RAM, POOL_SIZE));
      List<Hostile.Result> results = new Hostile(config).runAll();
      assertAllPassed(results);
      Hostile.Result outside =
          results.stream().filter(r -> r.scenario().equals("desc-outside-pool")).findFirst().get();
      assertTrue(
          outside.happened().startsWith("guest RAM outside the pool"),
          "the pool scenarios ran on the guest given (shared mode): " + outside.happened());
      pooled.awaitNoSession(SETTLE);
    }
    assertReleasedEverything();
  }

  private static void assertAllPassed(List<Hostile.Result> results) {
    List<String> failed =
        results.stream().filter(r -> !r.passed()).map(Hostile.Result::line).toList();
    assertEquals(List.of(), failed, "scenarios that failed");
    assertEquals(Hostile.names().size(), results.size());
  }

  /** The last session ended, and with it every fd and mapping of the scenario, on both ends. */
  private static void assertReleasedEverything() throws InterruptedException {
    engine.awaitNoSession(SETTLE);
    OpenFds.assertBackTo(baseline, SETTLE);
    for (String memfd : MEMFDS) {
      assertEquals(List.of(), ProcessMaps.ofMemfd(memfd), "mappings of " + memfd + " left over");
    }
  }

  /** Netty's warnings: an exception that escaped the engine into an event loop. */
  private static final class LoopFailures extends Handler {
    private final List<String> lines = new ArrayList<>();

    @Override
    public synchronized void publish(LogRecord record) {
      if (record.getLevel().intValue() >= Level.WARNING.intValue()) {
        lines.add(
            record.getLoggerName()
                + ": "
                + record.getMessage()
                + (record.getThrown() == null ? "" : " " + record.getThrown()));
      }
    }

    synchronized List<String> take() {
      List<String> taken = List.copyOf(lines);
      lines.clear();
      return taken;
    }

    @Override
    public void flush() {}

    @Override
    public void close() {}
  }
}
