package dev.bounce.device.cli;

import dev.bounce.device.vsock.VsockDriver;
import dev.bounce.device.vsock.VsockWorkload;
import dev.bounce.vhost.frontend.EchoDriver;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.NetDriver;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.frontend.hostile.Hostile;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code bounce frontend}: the built-in fake frontend (a VMM and a guest driver in one) drives any
 * vhost-user backend over its socket and reports what happened.
 */
final class FrontendCommand {
  static final long DEFAULT_RAM_START = 0x4000_0000L;

  private static final Flags FLAGS =
      new Flags(
          "bounce frontend --socket PATH --device TYPE [flags]",
          List.of(
              new Flags.Flag("socket", "PATH", "the backend's vhost-user socket (required)"),
              new Flags.Flag(
                  "device",
                  "TYPE",
                  "the device the backend serves: echo (the engine's test device), net"
                      + " (virtio-net, 2 queues: transmits test frames, ethertype 0x88b5), vsock"
                      + " (virtio-vsock with a hybrid-vsock host side at --uds-path: streams"
                      + " between guest and host applications, checksummed)"),
              new Flags.Flag(
                  "mode",
                  "MODE",
                  "shared (all guest memory sent, like QEMU share=on; default), pool (only the pool"
                      + " memfd is sent, like Firecracker's swiotlb), device-pool (nothing is sent:"
                      + " the backend hands over its pool, backends run with --device-pool SIZE;"
                      + " addresses are offsets into it)"),
              new Flags.Flag("memory", "SIZE", "guest RAM, at guest 0x40000000 (default 256M)"),
              new Flags.Flag(
                  "pool",
                  "GPA:SIZE",
                  "a restricted pool: rings and every buffer bounce through it (required in pool"
                      + " mode; inside RAM in shared mode)"),
              new Flags.Flag("queue-size", "N", "entries per queue (default 256)"),
              new Flags.Flag(
                  "handshake",
                  "STYLE",
                  "negotiate like qemu (SET_MEM_TABLE; default), qemu-slots (ADD_MEM_REG), dpdk"),
              new Flags.Flag("listen", null, "listen at --socket for a backend in client mode"),
              new Flags.Flag(
                  "count",
                  "N",
                  "operations to run (default 100000); for vsock the connections (default 1), or"
                      + " the round trips with --ping-pong"),
              new Flags.Flag(
                  "size",
                  "BYTES",
                  "bytes per operation (default 4096); for net the frame size, 60..1514"
                      + " (default 64); for vsock the bytes per write (or per message with"
                      + " --ping-pong)"),
              new Flags.Flag(
                  "uds-path",
                  "PATH",
                  "vsock: the backend's host side (its --uds-path): host applications connect"
                      + " there with 'CONNECT "
                      + VsockWorkload.GUEST_PORT
                      + "', and the guest connects to host port "
                      + VsockWorkload.HOST_PORT
                      + ", which this workload listens for at PATH_"
                      + VsockWorkload.HOST_PORT
                      + " (required for vsock)"),
              new Flags.Flag(
                  "direction",
                  "WAY",
                  "vsock: guest-to-host (guest-initiated connections), host-to-guest"
                      + " (host-initiated), or both (every connection carries --bytes each way;"
                      + " initiators alternate; default)"),
              new Flags.Flag(
                  "bytes", "SIZE", "vsock: bytes per connection and direction (default 1M)"),
              new Flags.Flag(
                  "parallel", "N", "vsock: connections open at the same time (default 1)"),
              new Flags.Flag(
                  "open-first",
                  null,
                  "vsock: the first --parallel connections are all established before any moves"
                      + " a byte (a connection storm, then traffic)"),
              new Flags.Flag(
                  "ping-pong",
                  null,
                  "vsock: instead of streams, --count round trips of --size bytes over one"
                      + " connection (the guest sends, the host application sends them back)"),
              new Flags.Flag(
                  "duration",
                  "TIME",
                  "stop after this long at most: seconds, or with a unit, like 500ms, 10s, 2m"
                      + " (default 60)"),
              new Flags.Flag("json", null, "print the result as one JSON object"),
              new Flags.Flag(
                  "hostile",
                  "SCENARIO",
                  "instead of a workload, act as a broken or malicious VMM/guest: run one scenario,"
                      + " or all, and check after each that the backend survived (a fresh session"
                      + " echoes "
                      + Hostile.SURVIVAL_CHAINS
                      + " chains) and reported the error (err eventfd, failure reply or closed"
                      + " connection); prints PASS/FAIL per scenario, exits 0 only if all pass;"
                      + " --hostile list names them. Uses --mode, --memory, --pool, --handshake,"
                      + " --queue-size")));

  private FrontendCommand() {}

  static int run(List<String> args) throws Exception {
    if (!FLAGS.parse(args)) return 0;
    if (FLAGS.get("hostile", "").equals("list")) return listScenarios();
    Path socket = Path.of(FLAGS.require("socket"));
    String device = FLAGS.get("device", "echo");
    if (!List.of("echo", "net", "vsock").contains(device)) {
      throw new UsageException("--device " + device + " is not known; echo, net and vsock are");
    }
    boolean net = device.equals("net");
    boolean vsock = device.equals("vsock");
    MemoryMode mode = parse(() -> MemoryMode.ofFlag(FLAGS.get("mode", "shared")));
    Handshake handshake = parse(() -> Handshake.ofFlag(FLAGS.get("handshake", "qemu")));
    long memory = FLAGS.size("memory", 256L << 20);
    long[] pool = FLAGS.has("pool") ? DmaFlags.window(FLAGS.get("pool", "")) : new long[] {0, 0};
    int queueSize = (int) FLAGS.size("queue-size", 256);
    // Checked before connecting: a backend need not be there to hear of a workload that cannot run.
    long count = FLAGS.size("count", vsock && !FLAGS.has("ping-pong") ? 1 : 100_000);
    if (count < 1) throw new UsageException("--count " + count + " is not at least 1");
    long sizeFlag = FLAGS.size("size", net ? 64 : 4096);
    if (!net) {
      int most = vsock ? VsockWorkload.MAX_SIZE : EchoDriver.MAX_SIZE;
      if (sizeFlag < 1 || sizeFlag > most) {
        throw new UsageException(
            "--size " + sizeFlag + " is not 1.." + most + " for --device " + device);
      }
    }
    int size = (int) Math.clamp(sizeFlag, Integer.MIN_VALUE, Integer.MAX_VALUE);
    if (net) parse(() -> checkFrameSize(size));
    Duration duration = FLAGS.duration("duration", Duration.ofSeconds(60));
    boolean json = FLAGS.has("json");
    if (FLAGS.has("hostile")) {
      if (!device.equals("echo")) {
        throw new UsageException("--hostile works with --device echo only");
      }
      if (mode == MemoryMode.DEVICE_POOL) {
        throw new UsageException("--hostile works with --mode shared or pool, not device-pool");
      }
      return hostile(socket, mode, handshake, memory, pool, queueSize, json);
    }

    // A guest with a pool bounces every buffer through it, so it keeps the restricted-DMA
    // contract and accepts VIRTIO_F_RESTRICTED_DMA when offered (RESTRICTED-DMA.md).
    long restrictedDma =
        mode != MemoryMode.SHARED || pool[1] != 0
            ? VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA)
            : 0;
    if (vsock) {
      FrontendSession.Options options =
          VsockDriver.options(handshake, queueSize).withDriverFeatures(restrictedDma);
      return vsock(socket, mode, options, memory, pool, count, size, json);
    }

    FrontendSession.Options options =
        new FrontendSession.Options(
            handshake,
            restrictedDma
                | (net
                    ? NetDriver.DRIVER_FEATURES
                    : VirtioFeatures.bit(VirtioFeatures.EVENT_IDX)
                        | VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC)),
            net ? 2 : 1,
            queueSize,
            net ? NetDriver.INDIRECT_ENTRIES : 0);
    try (GuestRam ram = guestRam(mode, memory, pool);
        FrontendSession session = open(socket, ram, options)) {
      if (!json) {
        System.err.printf(
            "bounce frontend: %s; connected to %s; features 0x%x; running %d x %d bytes%n",
            ram, socket, session.features(), count, size);
      }
      Stats stats;
      if (net) {
        NetDriver driver = new NetDriver(session);
        if (!json) System.err.println("bounce frontend: " + driver.describe());
        stats = driver.transmit(count, size, duration);
        if (!json) System.err.println("bounce frontend: " + driver.receiveSummary());
      } else {
        stats = new EchoDriver(session).run(count, size, duration);
      }
      session.stop();
      System.out.print(json ? stats.json() + "\n" : stats.text());
      return stats.errors() == 0 ? 0 : 1;
    }
  }

  /** --device vsock: streams or ping-pong between the guest and host applications. */
  private static int vsock(
      Path socket,
      MemoryMode mode,
      FrontendSession.Options options,
      long memory,
      long[] pool,
      long count,
      int size,
      boolean json)
      throws Exception {
    Path udsPath = Path.of(FLAGS.require("uds-path"));
    VsockWorkload.Direction direction =
        parse(() -> VsockWorkload.Direction.ofFlag(FLAGS.get("direction", "both")));
    long bytes = FLAGS.size("bytes", 1L << 20);
    int parallel = (int) FLAGS.size("parallel", 1);
    boolean pingPong = FLAGS.has("ping-pong");
    if (parallel < 1) throw new UsageException("--parallel must be at least 1");
    Duration duration = FLAGS.duration("duration", Duration.ofSeconds(60));
    try (GuestRam ram = guestRam(mode, memory, pool);
        FrontendSession session = open(socket, ram, options)) {
      long cid = VsockDriver.guestCid(session);
      VsockDriver driver = new VsockDriver(session, cid, VsockDriver.LINUX_BUFFER_SIZE);
      if (!json) {
        System.err.printf(
            "bounce frontend: %s; connected to %s; guest CID %d; host side %s; %s%n",
            ram,
            socket,
            cid,
            udsPath,
            pingPong
                ? count + " round trips of " + size + " bytes"
                : count
                    + " connections ("
                    + parallel
                    + " at a time), "
                    + bytes
                    + " bytes "
                    + direction.flag()
                    + " each, in writes of "
                    + size);
      }
      long errors;
      try (VsockWorkload workload = new VsockWorkload(driver, udsPath)) {
        if (pingPong) {
          Stats stats = workload.pingPong(count, size, duration);
          System.out.print(json ? stats.json() + "\n" : stats.text());
          errors = stats.errors();
        } else {
          VsockWorkload.Result r =
              workload.stream(
                  direction, count, parallel, size, bytes, FLAGS.has("open-first"), duration);
          System.out.print(
              json
                  ? "{\"connections\":"
                      + r.connections()
                      + ",\"peak_open\":"
                      + r.peakOpen()
                      + ",\"guest_to_host\":"
                      + r.guestToHost().json()
                      + ",\"host_to_guest\":"
                      + r.hostToGuest().json()
                      + "}\n"
                  : "connections: "
                      + r.connections()
                      + " ("
                      + r.peakOpen()
                      + " open at once at most)"
                      + "\nguest to host:\n"
                      + r.guestToHost().text().indent(2)
                      + "host to guest:\n"
                      + r.hostToGuest().text().indent(2));
          errors = r.errors();
        }
      }
      if (driver.badPackets() > 0) {
        System.err.println(
            "bounce frontend: "
                + driver.badPackets()
                + " packets from the device broke a rule; the first: "
                + driver.firstProblem());
      }
      session.stop();
      return errors == 0 && driver.badPackets() == 0 ? 0 : 1;
    }
  }

  /** --hostile: the scenarios against the backend, one line each (or one JSON object). */
  private static int hostile(
      Path socket,
      MemoryMode mode,
      Handshake handshake,
      long memory,
      long[] pool,
      int queueSize,
      boolean json)
      throws Exception {
    String which = FLAGS.get("hostile", "");
    if (FLAGS.has("listen")) {
      throw new UsageException(
          "--hostile connects to the backend; it does not combine with --listen");
    }
    if (!which.equals("all") && !Hostile.names().contains(which)) {
      throw new UsageException(
          "--hostile " + which + " is not a scenario; use all, list, or one of " + Hostile.names());
    }
    // Checked here, so that a bad --mode/--pool is a usage error and not a failed scenario.
    guestRam(mode, memory, pool).close();
    Hostile.Config config =
        Hostile.Config.of(socket)
            .withHandshake(handshake)
            .withGuest(new Hostile.Guest(mode, DEFAULT_RAM_START, memory, pool[0], pool[1]))
            .withQueueSize(queueSize);
    Hostile hostile = new Hostile(config);
    List<String> names = which.equals("all") ? Hostile.names() : List.of(which);
    List<Hostile.Result> results = new ArrayList<>();
    for (String name : names) {
      Hostile.Result result = hostile.run(name);
      results.add(result);
      if (!json) System.out.println(result.line());
    }
    long passed = results.stream().filter(Hostile.Result::passed).count();
    long died = results.stream().filter(r -> !r.survived()).count();
    if (json) {
      System.out.println(
          "{\"passed\":"
              + passed
              + ",\"failed\":"
              + (results.size() - passed)
              + ",\"not_survived\":"
              + died
              + ",\"scenarios\":["
              + String.join(",", results.stream().map(Hostile.Result::json).toList())
              + "]}");
    } else {
      System.out.printf(
          "%d of %d scenarios passed%s%n",
          passed, results.size(), died == 0 ? "" : "; the backend did not survive " + died);
    }
    return passed == results.size() ? 0 : 1;
  }

  /** --hostile list: every scenario and what it does. */
  private static int listScenarios() {
    for (Hostile.Scenario s : Hostile.scenarios()) {
      System.out.printf("%-26s %s%n", s.name(), s.description());
    }
    return 0;
  }

  private static FrontendSession open(Path socket, GuestRam ram, FrontendSession.Options options)
      throws Exception {
    return FLAGS.has("listen")
        ? FrontendSession.accept(socket, Duration.ofSeconds(60), ram, options)
        : FrontendSession.connect(socket, ram, options);
  }

  private static GuestRam guestRam(MemoryMode mode, long memory, long[] pool) throws Exception {
    try {
      return GuestRam.create(mode, DEFAULT_RAM_START, memory, pool[0], pool[1]);
    } catch (IllegalArgumentException | UnsupportedOperationException e) {
      throw new UsageException(e.getMessage());
    }
  }

  private static boolean checkFrameSize(int size) {
    NetDriver.checkFrameSize(size);
    return true;
  }

  private interface Parse<T> {
    T get();
  }

  private static <T> T parse(Parse<T> parse) throws UsageException {
    try {
      return parse.get();
    } catch (IllegalArgumentException e) {
      throw new UsageException(e.getMessage());
    }
  }
}
