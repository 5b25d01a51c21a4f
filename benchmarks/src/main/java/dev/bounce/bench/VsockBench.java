package dev.bounce.bench;

import dev.bounce.device.cli.Main;
import dev.bounce.device.vsock.VsockDriver;
import dev.bounce.device.vsock.VsockWorkload;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.Stats;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import java.util.zip.CRC32C;

/**
 * scripts/bench-vsock: bounce's vsock path against raw Unix sockets, in one run, on one machine.
 *
 * <ul>
 *   <li>bounce: {@code bounce vsock} in a second process; this process is the fake frontend (guest
 *       driver) and the host application, driven by {@link VsockWorkload} (one thread, spinning
 *       while work is in flight). Guest-to-host and host-to-guest streams, and ping-pong.
 *   <li>raw: {@link UdsPeer} in a second process; this process writes to it (raw stream), writes
 *       and reads back what it echoes (raw relay: like bounce's path, one process is both ends and
 *       the second relays), or ping-pongs, over one Unix socket with the same loop, the same write
 *       sizes and the same checksums.
 * </ul>
 *
 * Both second processes get this JVM's flags. After a warm-up round, every case runs once per
 * round, the rounds interleave bounce and raw, and the medians are compared as ratios.
 */
public final class VsockBench {
  // Many short rounds, as in VsockDmaBench: with 5 rounds the same cell read 0.67 and 0.84 in two
  // runs a minute apart; only the median of many per-round ratios steadies.
  private static final long STREAM_BYTES = Long.getLong("bench.streamBytes", 128L << 20);
  private static final long ROUND_TRIPS = Long.getLong("bench.roundTrips", 20_000);
  private static final int ROUNDS = Integer.getInteger("bench.rounds", 21);

  /** More flags for {@code bounce vsock}, for example {@code --tx-buffer-size 64K}. */
  private static final String BACKEND_ARGS = System.getProperty("bench.backendArgs", "");

  private static final int MESSAGE = 64;
  private static final int[] SIZES = {4096, 65536};
  private static final Duration LIMIT = Duration.ofSeconds(120);

  private final Samples samples = new Samples();
  private final byte[] pattern = new byte[VsockWorkload.MAX_SIZE + 251];
  private final ByteBuffer rawPattern;
  private final Path rawPath;
  private VsockWorkload workload;
  private VsockDriver sibling; // guest 4's

  private ProcessCpu bounceCpu;
  private ProcessCpu peerCpu;
  private final ProcessCpu selfCpu = new ProcessCpu(ProcessHandle.current().pid());

  private VsockBench(Path rawPath) {
    new Random(1).nextBytes(pattern);
    this.rawPattern = ByteBuffer.allocateDirect(pattern.length).put(pattern).flip();
    this.rawPath = rawPath;
  }

  public static void main(String[] args) throws Exception {
    Path dir = Files.createTempDirectory("bench-vsock");
    Path vhost = dir.resolve("vhost.sock");
    Path uds = dir.resolve("vm.vsock");
    Path raw = dir.resolve("raw.sock");
    List<Process> children = new ArrayList<>();
    try {
      log(
          "%d cores, load average %s; %d rounds after a warm-up; streams of %d MiB, %d round"
              + " trips of %d bytes",
          Runtime.getRuntime().availableProcessors(),
          Files.readString(Path.of("/proc/loadavg")).trim(),
          ROUNDS,
          STREAM_BYTES >> 20,
          ROUND_TRIPS,
          MESSAGE);
      // Two guests of one bounce: 3 for the host streams, 4 as guest 3's sibling.
      Path vhost4 = dir.resolve("vhost4.sock");
      List<String> vsock =
          new ArrayList<>(
              List.of(
                  "vsock",
                  "--vm",
                  "guest-cid=3,socket=" + vhost + ",uds-path=" + uds,
                  "--vm",
                  "guest-cid=4,socket=" + vhost4 + ",uds-path=" + dir.resolve("vm4.vsock")));
      if (!BACKEND_ARGS.isBlank()) vsock.addAll(List.of(BACKEND_ARGS.trim().split("\\s+")));
      children.add(child(dir, "bounce-vsock", Main.class.getName(), vsock.toArray(String[]::new)));
      children.add(child(dir, "uds-peer", UdsPeer.class.getName(), "" + raw));
      for (Path p : List.of(vhost, vhost4, uds, raw)) awaitFile(p, children);
      try (GuestRam ram = GuestRam.create(MemoryMode.SHARED, 0x4000_0000L, 256L << 20, 0, 0);
          FrontendSession session =
              FrontendSession.connect(vhost, ram, VsockDriver.options(Handshake.QEMU, 256));
          GuestRam ram4 = GuestRam.create(MemoryMode.SHARED, 0x4000_0000L, 256L << 20, 0, 0);
          FrontendSession session4 =
              FrontendSession.connect(vhost4, ram4, VsockDriver.options(Handshake.QEMU, 256))) {
        VsockDriver driver =
            new VsockDriver(session, VsockDriver.guestCid(session), VsockDriver.LINUX_BUFFER_SIZE);
        VsockBench bench = new VsockBench(raw);
        bench.sibling =
            new VsockDriver(
                session4, VsockDriver.guestCid(session4), VsockDriver.LINUX_BUFFER_SIZE);
        bench.bounceCpu = new ProcessCpu(children.get(0).pid());
        bench.peerCpu = new ProcessCpu(children.get(1).pid());
        try (VsockWorkload w = new VsockWorkload(driver, uds)) {
          bench.workload = w;
          bench.round("warm-up", false, false);
          for (int r = 1; r <= ROUNDS; r++) {
            bench.round("round " + r + "/" + ROUNDS, true, r % 2 == 0);
          }
        }
        checkDriver(driver, "bounce");
        checkDriver(bench.sibling, "bounce, guest 4");
        session.stop();
        session4.stop();
        bench.report();
      }
    } finally {
      for (Process p : children) {
        p.destroy();
        if (!p.waitFor(10, TimeUnit.SECONDS)) p.destroyForcibly();
      }
      try (Stream<Path> paths = Files.walk(dir)) {
        for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
      }
    }
  }

  /**
   * Every case once, bounce's and raw's; bounce's first in every other round, so that neither is
   * always measured first (the paired per-round ratios cancel drift, not effects of position).
   */
  private void round(String name, boolean keep, boolean bounceFirst) throws IOException {
    log("%s", name);
    for (int size : SIZES) {
      if (!bounceFirst) rawStreams(size, keep);
      bounceStreams(size, keep);
      startCpu();
      measure(keep, "guest-to-guest " + size, "MiB/s", guestToGuest(size), bounceCpu);
      if (bounceFirst) rawStreams(size, keep);
    }
    if (!bounceFirst) rawRtt(keep);
    bounceRtt(keep);
    if (bounceFirst) rawRtt(keep);
  }

  private void rawStreams(int size, boolean keep) throws IOException {
    startCpu();
    measure(keep, "raw stream " + size, "MiB/s", rawStream(size), peerCpu);
    startCpu();
    measure(keep, "raw relay " + size, "MiB/s", rawRelay(size), peerCpu);
  }

  private void bounceStreams(int size, boolean keep) throws IOException {
    for (VsockWorkload.Direction d :
        List.of(VsockWorkload.Direction.GUEST_TO_HOST, VsockWorkload.Direction.HOST_TO_GUEST)) {
      startCpu();
      VsockWorkload.Result r = workload.stream(d, 1, 1, size, STREAM_BYTES, false, LIMIT);
      check(r.errors(), r.guestToHost().firstError() + " " + r.hostToGuest().firstError());
      Stats s = d == VsockWorkload.Direction.GUEST_TO_HOST ? r.guestToHost() : r.hostToGuest();
      double rate = s.bytes() / s.seconds() / (1 << 20);
      measure(keep, d.flag() + " " + size, "MiB/s", rate, bounceCpu);
    }
  }

  /**
   * Guest 3 streams {@link #STREAM_BYTES} to guest 4 in writes of {@code size}, through bounce's
   * sibling routing ({@link VsockWorkload#toSibling}); MiB/s.
   */
  private double guestToGuest(int size) throws IOException {
    Stats s = workload.toSibling(sibling, size, STREAM_BYTES, LIMIT);
    check(s.errors(), s.firstError());
    return s.bytes() / s.seconds() / (1 << 20);
  }

  private void rawRtt(boolean keep) throws IOException {
    startCpu();
    measure(keep, "raw rtt", "us", rawRoundTrips(), peerCpu);
  }

  private void bounceRtt(boolean keep) throws IOException {
    startCpu();
    Stats rtt = workload.pingPong(ROUND_TRIPS, MESSAGE, LIMIT);
    check(rtt.errors(), rtt.firstError());
    check(
        rtt.operations() == ROUND_TRIPS ? 0 : 1,
        rtt.operations() + " of " + ROUND_TRIPS + " round trips within " + LIMIT);
    measure(keep, "bounce rtt", "us", rtt.percentileNanos(0.5) / 1e3, bounceCpu);
  }

  private void startCpu() {
    bounceCpu.start();
    peerCpu.start();
    selfCpu.start();
  }

  /**
   * Records a measurement and the cores this process and {@code second} (bounce or the raw peer)
   * used meanwhile: with both near one, the two-core machine, not either process, set the pace.
   */
  private void measure(boolean keep, String name, String unit, double value, ProcessCpu second) {
    double secondCores = second.cores();
    double selfCores = selfCpu.cores();
    log(
        "  %-20s %10.1f %-5s (cores used: %s %.2f, this process %.2f)",
        name, value, unit, second == bounceCpu ? "bounce" : "raw peer", secondCores, selfCores);
    if (keep) samples.add(name, value, secondCores, selfCores);
  }

  /** Medians over the rounds, and ratios as {@link Samples#ratio}. */
  private void report() {
    System.out.println();
    System.out.printf(
        "medians of %d rounds; ratio = bounce / raw, per round. raw stream: this process writes,"
            + " the peer reads. raw relay: this process writes and reads back what the peer"
            + " echoes (the shape of bounce's path: one process is both ends, the second one"
            + " relays)%n",
        ROUNDS);
    for (int size : SIZES) {
      for (String way : List.of("guest-to-host", "host-to-guest", "guest-to-guest")) {
        String bounce = way + " " + size;
        double stream = samples.ratio(bounce, "raw stream " + size);
        System.out.printf(
            Locale.ROOT,
            "  %-15s %2d KiB writes: %7.1f MiB/s; raw stream %7.1f MiB/s, ratio %.2f%s;"
                + " raw relay %7.1f MiB/s, ratio %.2f; cores used: bounce %.2f + this process"
                + " %.2f, raw stream's peer %.2f + this process %.2f%n",
            way,
            size / 1024,
            samples.median(bounce),
            samples.median("raw stream " + size),
            stream,
            size != 65536 || way.equals("guest-to-guest")
                ? ""
                : stream >= 0.8 ? " (goal >= 0.8: met)" : " (goal >= 0.8: MISSED)",
            samples.median("raw relay " + size),
            samples.ratio(bounce, "raw relay " + size),
            samples.secondCores(bounce),
            samples.selfCores(bounce),
            samples.secondCores("raw stream " + size),
            samples.selfCores("raw stream " + size));
      }
    }
    double rtt = samples.ratio("bounce rtt", "raw rtt");
    System.out.printf(
        Locale.ROOT,
        "  round trip, %d B:       %7.1f us;    raw %7.1f us, ratio %.2f (goal <= 2: %s)%n",
        MESSAGE,
        samples.median("bounce rtt"),
        samples.median("raw rtt"),
        rtt,
        rtt <= 2 ? "met" : "MISSED");
  }

  /** Raw throughput: {@link #STREAM_BYTES} in writes of {@code size} to the sink, MiB/s. */
  private double rawStream(int size) throws IOException {
    try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
      ch.connect(UnixDomainSocketAddress.of(rawPath));
      ch.write(ByteBuffer.wrap(new byte[] {'S'}));
      ch.configureBlocking(false);
      UdsPeer.Idle idle = new UdsPeer.Idle();
      CRC32C crc = new CRC32C();
      long start = System.nanoTime();
      long sent = 0;
      while (sent < STREAM_BYTES) {
        int off = (int) ((sent / size) % 251) + (int) (sent % size);
        int len = (int) Math.min(size - sent % size, STREAM_BYTES - sent);
        int n = ch.write(rawPattern.slice(off, len));
        if (n > 0) crc.update(rawPattern.slice(off, n));
        sent += n;
        idle.after(n > 0);
      }
      ch.shutdownOutput();
      ByteBuffer answer = ByteBuffer.allocate(8);
      while (answer.hasRemaining()) {
        int n = ch.read(answer);
        if (n < 0) throw new IOException("the raw peer closed before answering");
        idle.after(n > 0);
      }
      double seconds = (System.nanoTime() - start) / 1e9;
      check(answer.getLong(0) == crc.getValue() ? 0 : 1, "the raw peer's checksum differs");
      return STREAM_BYTES / seconds / (1 << 20);
    }
  }

  /**
   * Raw relay throughput: {@link #STREAM_BYTES} in writes of {@code size} to the echoing peer, read
   * back at the same time, MiB/s.
   */
  private double rawRelay(int size) throws IOException {
    try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
      ch.connect(UnixDomainSocketAddress.of(rawPath));
      ch.write(ByteBuffer.wrap(new byte[] {'E'}));
      ch.configureBlocking(false);
      UdsPeer.Idle idle = new UdsPeer.Idle();
      CRC32C sentCrc = new CRC32C();
      CRC32C backCrc = new CRC32C();
      ByteBuffer in = ByteBuffer.allocateDirect(256 * 1024);
      long start = System.nanoTime();
      long sent = 0;
      long back = 0;
      while (back < STREAM_BYTES) {
        int n = 0;
        if (sent < STREAM_BYTES) {
          int off = (int) ((sent / size) % 251) + (int) (sent % size);
          int len = (int) Math.min(size - sent % size, STREAM_BYTES - sent);
          n = ch.write(rawPattern.slice(off, len));
          if (n > 0) sentCrc.update(rawPattern.slice(off, n));
          sent += n;
        }
        int m = ch.read(in.clear());
        if (m < 0) throw new IOException("the raw peer closed mid-relay");
        if (m > 0) backCrc.update(in.flip());
        back += Math.max(m, 0);
        idle.after(n > 0 || m > 0);
      }
      double seconds = (System.nanoTime() - start) / 1e9;
      check(sentCrc.getValue() == backCrc.getValue() ? 0 : 1, "the relayed bytes differ");
      return STREAM_BYTES / seconds / (1 << 20);
    }
  }

  /** Raw ping-pong: the median round trip of {@link #MESSAGE} bytes, microseconds. */
  private double rawRoundTrips() throws IOException {
    try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
      ch.connect(UnixDomainSocketAddress.of(rawPath));
      ch.write(ByteBuffer.wrap(new byte[] {'E'}));
      ch.configureBlocking(false);
      UdsPeer.Idle idle = new UdsPeer.Idle();
      Stats stats = new Stats();
      ByteBuffer back = ByteBuffer.allocateDirect(MESSAGE);
      for (long k = 0; k < ROUND_TRIPS; k++) {
        long start = System.nanoTime();
        ByteBuffer out = rawPattern.slice((int) (k % 251), MESSAGE);
        back.clear();
        while (out.hasRemaining() || back.hasRemaining()) {
          int n = out.hasRemaining() ? ch.write(out) : 0;
          int m = ch.read(back);
          if (m < 0) throw new IOException("the raw peer closed mid-ping-pong");
          idle.after(n > 0 || m > 0);
        }
        check(back.flip().equals(rawPattern.slice((int) (k % 251), MESSAGE)) ? 0 : 1, "echo");
        stats.record(MESSAGE, System.nanoTime() - start);
      }
      return stats.percentileNanos(0.5) / 1e3;
    }
  }

  /**
   * Packets the fake guest found malformed, or that came past the credit it gave, lose no stream
   * bytes (the checksums pass) but are the device's errors all the same: the run fails.
   */
  static void checkDriver(VsockDriver driver, String which) throws IOException {
    check(
        driver.badPackets(),
        which + ": the fake guest's first bad packet: " + driver.firstProblem());
    check(driver.creditViolations(), which + ": the device sent past the guest's credit");
  }

  private static void check(long errors, String what) throws IOException {
    if (errors != 0) throw new IOException("a measurement failed: " + what);
  }

  /** A second JVM with this one's flags, running {@code mainClass}; its output goes to a log. */
  static Process child(Path dir, String name, String mainClass, String... args) throws IOException {
    List<String> command = new ArrayList<>();
    command.add(ProcessHandle.current().info().command().orElse("java"));
    command.addAll(ManagementFactory.getRuntimeMXBean().getInputArguments());
    command.addAll(List.of("-cp", System.getProperty("java.class.path"), mainClass));
    command.addAll(Arrays.asList(args));
    log("starting %s: %s", name, String.join(" ", command));
    return new ProcessBuilder(command)
        .redirectErrorStream(true)
        .redirectOutput(dir.resolve(name + ".log").toFile())
        .start();
  }

  static void awaitFile(Path path, List<Process> children)
      throws IOException, InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (!Files.exists(path)) {
      for (Process p : children) {
        if (!p.isAlive()) throw new IOException("a second process exited: " + p.info());
      }
      if (System.nanoTime() > deadline) throw new IOException(path + " did not appear in 30 s");
      Thread.sleep(20);
    }
  }

  static void log(String format, Object... args) {
    System.out.println("bench-vsock: " + String.format(Locale.ROOT, format, args));
    System.out.flush();
  }
}
