package dev.bounce.bench;

import static dev.bounce.pool.LittleEndian.LE64;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.backend.RingPolling;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.MemoryTable;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.testdevice.EchoDevice;
import io.netty.channel.IoEventLoop;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.AuxCounters;
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
 * Descriptors per second through the whole engine, scored per descriptor: a real {@link
 * BackendServer} serving an {@link EchoDevice} on its own data loop thread (Netty epoll, {@link
 * EventLoops}), set up over a real Unix socket by {@link FrontendChannel}; the benchmark thread is
 * the guest driver ({@link DriverQueue}) on rings in a memfd. The driver keeps the ring full of
 * single-descriptor chains ({@code bytes} device-readable bytes each, which the echo device copies
 * out), publishes, and writes the kick eventfd when the engine asks for it (EVENT_IDX avail_event,
 * or VIRTQ_USED_F_NO_NOTIFY); the engine pops, adds used elements, publishes once per batch and
 * signals the call eventfd when the driver asks for it; the driver harvests. The engine polls a
 * ring that ran dry for a while before re-arming kicks ({@code ringPoll}, as the device commands'
 * --ring-poll: 50 us at first, adapting up to 200 us; 0 turns it off).
 *
 * <ul>
 *   <li>{@code driver=notify}: an interrupt-driven driver (Linux NAPI style): harvests while there
 *       is something, then re-enables used buffer notifications for the next used buffer ({@link
 *       DriverQueue#enableUsedNotifications()}) and sleeps in poll(2) on the call eventfd;
 *   <li>{@code driver=delayed} (not run by default): the same with {@link
 *       DriverQueue#enableUsedNotificationsDelayed()}, Linux's choice for transmit queues:
 *       used_event at 3/4 of what is in flight, fewer calls, but the driver refills later;
 *   <li>{@code driver=poll}: a polling driver (DPDK virtio-user style): never sleeps, used buffer
 *       notifications off.
 * </ul>
 *
 * The secondary scores count, per second like the descriptors, the kicks the driver wrote ({@code
 * kicks}) and its sleeps on the call eventfd ({@code sleeps}, each one a call the engine
 * signalled); each iteration also prints the CPU time the engine's data thread used per descriptor.
 * One data thread: on a two-core machine the driver and the engine each need a core, and other load
 * on the machine shows in the rate (not in the CPU per descriptor).
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@State(Scope.Thread)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class EngineBenchmark {
  private static final long MIB = 1024 * 1024;
  private static final long GUEST_BASE = 0x4000_0000L;
  private static final long RAM_SIZE = 16 * MIB;
  private static final long BUFFERS = GUEST_BASE + MIB;
  private static final long SLOT = 256;
  private static final int MAX_QUEUE_SIZE = 1024;

  /** Descriptors per benchmark invocation (the score is per descriptor). */
  private static final int BATCH = 4096;

  @Param({"true", "false"})
  public boolean eventIdx;

  @Param({"notify", "poll"})
  public String driver;

  @Param({"256", "1024"})
  public int queueSize;

  @Param({"64"})
  public int bytes;

  @Param({"50:200"})
  public String ringPoll;

  private EventLoops loops;
  private EchoDevice echo;
  private BackendServer server;
  private Path directory;
  private FrontendChannel channel;
  private Memfd ram;
  private Mapping view;
  private EventFd kick;
  private EventFd call;
  private DriverQueue queue;
  private int callFd;
  private int mask;
  private boolean notify;
  private boolean delayed;
  private long harvestedBytes;
  private final DriverQueue.UsedConsumer consumer = (head, len) -> harvestedBytes += len;
  private long engineThread;
  private long cpuAtStart;
  private long servedAtStart;
  private long wallAtStart;

  /** Kicks written and driver sleeps on the call eventfd, per second like the descriptors. */
  @State(Scope.Thread)
  @AuxCounters(AuxCounters.Type.OPERATIONS)
  public static class Notifications {
    public long kicks;
    public long sleeps;

    @Setup(Level.Iteration)
    public void clear() {
      kicks = 0;
      sleeps = 0;
    }
  }

  @Setup(Level.Iteration)
  public void startIteration() {
    cpuAtStart = engineCpuNanos();
    servedAtStart = echo.served();
    wallAtStart = System.nanoTime();
  }

  /**
   * Prints the CPU time the engine's data loop thread used per descriptor, and how busy it was: on
   * a loaded machine the rate falls while the CPU per descriptor stays.
   */
  @TearDown(Level.Iteration)
  public void endIteration() {
    long cpu = engineCpuNanos() - cpuAtStart;
    long served = echo.served() - servedAtStart;
    long wall = System.nanoTime() - wallAtStart;
    System.out.printf(
        "  [engine: %.1f ns CPU per descriptor, data thread %d%% busy]%n",
        served == 0 ? 0.0 : (double) cpu / served, 100 * cpu / Math.max(1, wall));
  }

  @Setup(Level.Trial)
  public void setUp() throws IOException, NativeException {
    if (Integer.bitCount(queueSize) != 1 || queueSize > MAX_QUEUE_SIZE) {
      throw new IllegalArgumentException("queueSize must be a power of two up to 1024");
    }
    notify = !driver.equals("poll");
    delayed = driver.equals("delayed");
    if (!List.of("notify", "delayed", "poll").contains(driver)) {
      throw new IllegalArgumentException("driver is notify, delayed or poll, not " + driver);
    }
    java.util.logging.Logger.getLogger("dev.bounce").setLevel(java.util.logging.Level.WARNING);
    loops = new EventLoops(2, "bench-engine");
    echo = new EchoDevice(1, MAX_QUEUE_SIZE);
    directory = Files.createTempDirectory("bounce-bench-engine");
    IoEventLoop controlLoop = loops.next();
    IoEventLoop dataLoop = loops.next();
    try {
      engineThread = dataLoop.submit(() -> Thread.currentThread().threadId()).get();
    } catch (InterruptedException | ExecutionException e) {
      throw new IOException("the data loop did not start", e);
    }
    server =
        BackendServer.listen(
            directory.resolve("echo.sock"),
            new BackendServer.Config(
                "echo",
                echo,
                controlLoop,
                dataLoop,
                RestrictedDma.OFF,
                BackendServer.Config.DEFAULT_MAX_GUEST_MEMORY,
                RingPolling.parse(ringPoll)));
    channel = FrontendChannel.connect(server.path());
    ram = Memfd.create("bench-engine-ram", RAM_SIZE);
    view = ram.map(0, RAM_SIZE);
    kick = EventFd.create();
    call = EventFd.create();
    callFd = call.fd().value();
    mask = queueSize - 1;

    long features =
        VirtioFeatures.bit(VirtioFeatures.VERSION_1)
            | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES)
            | (eventIdx ? VirtioFeatures.bit(VirtioFeatures.EVENT_IDX) : 0);
    channel.getU64(FrontendRequest.GET_FEATURES);
    long protocol = channel.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
    channel.send(
        FrontendRequest.SET_PROTOCOL_FEATURES,
        new U64(protocol & ProtocolFeature.maskOf(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ)),
        false);
    channel.ack(FrontendRequest.SET_OWNER);
    channel.ack(FrontendRequest.SET_FEATURES, new U64(features));
    MemorySegment memory = view.segment();
    channel.ack(
        FrontendRequest.SET_MEM_TABLE,
        new MemoryTable(
            List.of(new MemoryRegionDescription(GUEST_BASE, RAM_SIZE, memory.address(), 0))),
        ram.fd());
    queue =
        DriverQueue.builder(memory, GUEST_BASE, memory.address())
            .size(queueSize)
            .features(features)
            .ringsAt(GUEST_BASE)
            .build();
    for (int i = 0; i < queueSize; i++) {
      memory.set(LE64, BUFFERS - GUEST_BASE + SLOT * i, i); // something for the echo to read
    }
    channel.ack(FrontendRequest.SET_VRING_NUM, new VringState(0, queueSize));
    channel.ack(FrontendRequest.SET_VRING_BASE, new VringState(0, 0));
    channel.ack(FrontendRequest.SET_VRING_ADDR, queue.vringAddress());
    channel.ack(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), kick.fd());
    channel.ack(FrontendRequest.SET_VRING_CALL, new VringFdIndex(0, false), call.fd());
    channel.ack(FrontendRequest.SET_VRING_ENABLE, new VringState(0, 1));
    queue.disableUsedNotifications();
  }

  /** CPU time the engine's data loop thread has used so far. */
  private long engineCpuNanos() {
    return ManagementFactory.getThreadMXBean().getThreadCpuTime(engineThread);
  }

  @TearDown(Level.Trial)
  public void tearDown() throws IOException {
    long served = echo.served();
    channel.close();
    server.close();
    loops.close();
    kick.close();
    call.close();
    view.close();
    ram.close();
    Files.deleteIfExists(directory.resolve("echo.sock"));
    Files.deleteIfExists(directory);
    if (queue.isBroken()) throw new IllegalStateException("the ring broke", queue.error());
    if (served == 0) throw new IllegalStateException("the engine served nothing");
  }

  @Benchmark
  @OperationsPerInvocation(BATCH)
  public long descriptors(Notifications counters) throws NativeException {
    DriverQueue q = queue;
    long buffers = BUFFERS;
    int length = bytes;
    int done = 0;
    while (done < BATCH) {
      // Fill the ring: buffers by avail position (completion is in order, so it is free).
      while (q.add(buffers + SLOT * (q.availIndex() & mask), length, false)
          != DriverQueue.NO_SPACE) {}
      if (q.kick(kick)) counters.kicks++;
      int n = q.harvest(consumer);
      if (n > 0) {
        done += n;
        continue;
      }
      if (!notify || (delayed ? q.enableUsedNotificationsDelayed() : q.enableUsedNotifications())) {
        q.disableUsedNotifications();
        continue;
      }
      if (!Libc.pollIn(callFd, 10_000)) {
        throw new IllegalStateException("no call in 10 s: " + q);
      }
      call.drain();
      counters.sleeps++;
      q.disableUsedNotifications();
    }
    return done + harvestedBytes;
  }
}
