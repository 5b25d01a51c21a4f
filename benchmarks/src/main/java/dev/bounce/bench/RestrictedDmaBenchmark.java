package dev.bounce.bench;

import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.frontend.EchoDriver;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Echo chains per second through the whole stack, restricted versus shared (issue 7's benchmark):
 * the fake frontend's {@link EchoDriver} (a chain of one {@code bytes}-byte readable and one
 * writable buffer) against a real {@link BackendServer} with the echo device, over a real socket,
 * memfds and eventfds. {@code mode=shared}: all RAM shared, no pool, buffers used in place; {@code
 * pool}: Firecracker's layout, only the pool shared, the engine enforcing it (--pool) and the guest
 * bouncing every buffer into it and back; {@code device-pool}: the backend's own pool, offsets, the
 * same bounce. The guest-side bounce copy is part of the cost, as it is in a real guest. {@link
 * RestrictedDmaRatio} runs all modes and prints each restricted mode's rate over shared.
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@State(Scope.Thread)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class RestrictedDmaBenchmark {
  private static final long RAM_START = 0x4000_0000L;
  private static final long RAM_SIZE = 64L << 20;
  private static final long POOL_START = 0x8000_0000L;
  private static final long POOL_SIZE = 16L << 20;

  /** Chains per benchmark invocation (the score is per chain). */
  private static final int CHAINS = 2048;

  @Param({"shared", "pool", "device-pool"})
  public String mode;

  @Param({"4096"})
  public int bytes;

  private EventLoops loops;
  private BackendServer server;
  private Path directory;
  private GuestRam ram;
  private FrontendSession session;
  private EchoDriver driver;

  @Setup(Level.Trial)
  public void setUp() throws Exception {
    java.util.logging.Logger.getLogger("dev.bounce").setLevel(java.util.logging.Level.WARNING);
    MemoryMode memory = MemoryMode.ofFlag(mode);
    RestrictedDma dma =
        switch (memory) {
          case SHARED -> RestrictedDma.OFF;
          case POOL ->
              new RestrictedDma(
                  RestrictedDma.Policy.REQUIRED, new RestrictedDma.Window(POOL_START, POOL_SIZE));
          case DEVICE_POOL ->
              new RestrictedDma(
                  RestrictedDma.Policy.REQUIRED, new RestrictedDma.DeviceOwned(POOL_SIZE));
        };
    loops = new EventLoops(2, "bench-dma");
    directory = Files.createTempDirectory("bounce-bench-dma");
    server =
        BackendServer.listen(
            directory.resolve("echo.sock"),
            new BackendServer.Config(
                "echo", new EchoDevice(1, 1024), loops.next(), loops.next(), dma));
    ram =
        GuestRam.create(
            memory,
            RAM_START,
            RAM_SIZE,
            memory == MemoryMode.POOL ? POOL_START : 0,
            memory == MemoryMode.POOL ? POOL_SIZE : 0);
    long features =
        VirtioFeatures.bit(VirtioFeatures.EVENT_IDX)
            | (memory == MemoryMode.SHARED ? 0 : VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA));
    session =
        FrontendSession.connect(
            server.path(), ram, new FrontendSession.Options(Handshake.QEMU, features, 1, 256, 0));
    driver = new EchoDriver(session);
  }

  @Benchmark
  @OperationsPerInvocation(CHAINS)
  public long echo() throws IOException {
    Stats stats = driver.run(CHAINS, bytes, Duration.ofSeconds(30));
    if (stats.errors() != 0 || stats.operations() != CHAINS) {
      throw new IOException("echo failed: " + stats.firstError());
    }
    return stats.bytes();
  }

  @TearDown(Level.Trial)
  public void tearDown() throws IOException {
    if (session != null) session.close();
    if (ram != null) ram.close();
    if (server != null) server.close();
    if (loops != null) loops.close();
    Files.deleteIfExists(directory.resolve("echo.sock"));
    Files.deleteIfExists(directory);
  }
}
