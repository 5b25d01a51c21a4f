package dev.bounce.device.cli;

import dev.bounce.device.vsock.VsockDriver;
import dev.bounce.device.vsock.VsockWorkload;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * {@code bounce demo}: {@code bounce vsock} runs as a second process, as it would beside a VMM,
 * with the guest's DMA pool enforced ({@code --pool}, {@code --restricted-dma required}); the fake
 * frontend (a VMM and a Linux-like guest driver in this process) connects to it, accepts
 * VIRTIO_F_RESTRICTED_DMA, shares only the pool of guest memory (every buffer bounces through it,
 * as a guest with a restricted DMA pool does), and streams checksummed bytes both ways between
 * guest sockets and host applications on the backend's hybrid-vsock Unix sockets. Prints a summary
 * with the backend's pool figures; exits non-zero if anything failed.
 */
final class VsockDemo {
  private static final long GUEST_CID = 3;
  private static final long RAM_START = 0x4000_0000L;
  private static final long RAM_SIZE = 64L << 20;
  private static final long POOL_START = 0x8000_0000L;
  private static final long POOL_SIZE = 16L << 20;
  private static final int CONNECTIONS = 4;
  private static final long BYTES = 4L << 20;
  private static final int WRITE_SIZE = 64 * 1024;
  private static final Duration LIMIT = Duration.ofSeconds(30);
  private static final Pattern GUEST_ERRORS =
      Pattern.compile("guest CID \\d+: (\\d+) guest errors");
  private static final Pattern POOL_FIGURES =
      Pattern.compile(
          "restricted DMA: pool (\\d+) bytes, peak (\\d+) bytes in flight, pool violations per"
              + " queue \\[([^]]*)]");

  private VsockDemo() {}

  static int run(List<String> args) throws Exception {
    Flags flags = new Flags("bounce demo", List.of());
    if (!flags.parse(args)) return 0;
    Path dir = Files.createTempDirectory("bounce-demo");
    Path socket = dir.resolve("vhost.sock");
    Path uds = dir.resolve("vm.vsock");
    Path log = dir.resolve("backend.log");
    // SIGTERM or Ctrl-C skip the finally below: the hook stops the backend and removes the
    // directory then, which would otherwise be left (the backend running forever, after SIGTERM).
    CleanUp cleanUp = new CleanUp(dir);
    Thread hook = new Thread(cleanUp::run, "bounce-demo-cleanup");
    Runtime.getRuntime().addShutdownHook(hook);
    Process backend = null;
    try {
      List<String> command = backendCommand(socket, uds);
      say("demo", "starting the backend: bounce " + String.join(" ", command));
      backend = startBackend(command, log);
      cleanUp.backend(backend);
      awaitListening(backend, log);
      say("demo", "backend process " + backend.pid() + " listening");
      VsockWorkload.Result result = traffic(socket, uds);
      backend.destroy(); // SIGTERM: the daemon's way out; it reports its guest errors
      boolean exited = backend.waitFor(10, TimeUnit.SECONDS);
      String backendLog = Files.readString(log, StandardCharsets.UTF_8);
      backendLog.lines().forEach(line -> say("backend", line));
      Matcher m = GUEST_ERRORS.matcher(backendLog);
      long guestErrors = m.find() ? Long.parseLong(m.group(1)) : -1;
      Matcher pool = POOL_FIGURES.matcher(backendLog);
      return summary(result, guestErrors, pool.find() ? pool : null, exited);
    } finally {
      cleanUp.run();
      try {
        Runtime.getRuntime().removeShutdownHook(hook);
      } catch (IllegalStateException e) {
        // The JVM is exiting already: the hook runs, and finds nothing left to do.
      }
    }
  }

  /** Stops the backend process, if it still runs, and removes the demo's directory; once. */
  private static final class CleanUp {
    private final Path dir;
    private Process backend;
    private boolean done;

    CleanUp(Path dir) {
      this.dir = dir;
    }

    /**
     * The backend to stop. A hook that ran while it was being started (SIGTERM then) found none: it
     * is stopped here at once, or nothing would.
     */
    synchronized void backend(Process process) throws InterruptedException {
      backend = process;
      if (done && process.isAlive()) {
        process.destroy();
        if (!process.waitFor(5, TimeUnit.SECONDS)) process.destroyForcibly().waitFor();
      }
    }

    synchronized void run() {
      if (done) return;
      done = true;
      try {
        if (backend != null && backend.isAlive()) {
          backend.destroy(); // SIGTERM: it removes its sockets
          if (!backend.waitFor(5, TimeUnit.SECONDS)) backend.destroyForcibly().waitFor();
        }
        deleteAll(dir);
      } catch (IOException e) {
        System.err.println("bounce demo: cannot remove " + dir + ": " + e.getMessage());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
  }

  /** The fake frontend's part: 4 connections, each carrying 4 MiB each way at once. */
  private static VsockWorkload.Result traffic(Path socket, Path uds) throws Exception {
    try (GuestRam ram =
            GuestRam.create(MemoryMode.POOL, RAM_START, RAM_SIZE, POOL_START, POOL_SIZE);
        FrontendSession session =
            FrontendSession.connect(
                socket,
                ram,
                VsockDriver.options(Handshake.QEMU, 256)
                    .withDriverFeatures(VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA)))) {
      long cid = VsockDriver.guestCid(session);
      say(
          "frontend",
          "negotiated like QEMU 7.2 (features 0x"
              + Long.toHexString(session.features())
              + ": bit 27, VIRTIO_F_RESTRICTED_DMA, accepted), guest CID "
              + cid
              + "; shared with the backend: the "
              + (POOL_SIZE >> 20)
              + " MiB DMA pool only, every buffer bounced through it");
      VsockDriver driver = new VsockDriver(session, cid, VsockDriver.LINUX_BUFFER_SIZE);
      VsockWorkload.Result result;
      try (VsockWorkload workload = new VsockWorkload(driver, uds)) {
        say(
            "frontend",
            CONNECTIONS
                + " connections at once: the guest connects to host port "
                + VsockWorkload.HOST_PORT
                + " ("
                + uds.getFileName()
                + "_"
                + VsockWorkload.HOST_PORT
                + "), host applications send 'CONNECT "
                + VsockWorkload.GUEST_PORT
                + "' to "
                + uds.getFileName()
                + "; "
                + (BYTES >> 20)
                + " MiB each way on each, CRC32C at both ends");
        result =
            workload.stream(
                VsockWorkload.Direction.BOTH,
                CONNECTIONS,
                CONNECTIONS,
                WRITE_SIZE,
                BYTES,
                true,
                LIMIT);
      }
      if (driver.badPackets() > 0) {
        result.guestToHost().error("the guest got a bad packet: " + driver.firstProblem());
      }
      session.stop();
      return result;
    }
  }

  private static int summary(
      VsockWorkload.Result r, long guestErrors, Matcher pool, boolean exited) {
    boolean poolKept = pool != null && pool.group(3).matches("0(, 0)*");
    boolean ok =
        r.errors() == 0
            && r.connections() == CONNECTIONS
            && r.guestToHost().bytes() == CONNECTIONS * BYTES
            && r.hostToGuest().bytes() == CONNECTIONS * BYTES
            && guestErrors == 0
            && poolKept
            && exited;
    System.out.println();
    System.out.println("summary:");
    System.out.printf(
        "  connections:   %d (%d open at once; half guest-initiated, half through CONNECT)%n",
        r.connections(), r.peakOpen());
    System.out.println("  guest -> host: " + way(r.guestToHost()));
    System.out.println("  host -> guest: " + way(r.hostToGuest()));
    System.out.println(
        "                 (two JVMs just started, 16 MiB each way: a demo, not a measurement;"
            + " scripts/bench-vsock measures throughput)");
    System.out.println(
        "  checksums:     "
            + (r.errors() == 0
                ? "OK (CRC32C equal at both ends of every stream)"
                : "FAILED: " + firstError(r)));
    System.out.println(
        "  DMA pool:      "
            + (pool == null
                ? "the backend did not report its pool figures"
                : String.format(
                    Locale.ROOT,
                    "%d MiB, enforced by the backend; at most %d KiB of it in flight; addresses"
                        + " outside it per queue: %s",
                    Long.parseLong(pool.group(1)) >> 20,
                    Long.parseLong(pool.group(2)) >> 10,
                    pool.group(3))));
    System.out.println(
        "  backend:       "
            + (guestErrors < 0 ? "did not report its guest errors" : guestErrors + " guest errors")
            + (exited ? ", exited on SIGTERM" : ", did NOT exit on SIGTERM"));
    System.out.println("  result:        " + (ok ? "OK" : "FAILED"));
    return ok ? 0 : 1;
  }

  private static String way(Stats s) {
    return String.format(
        Locale.ROOT,
        "%.1f MiB in %.2f s (%.0f MiB/s), write latency p50 %.0f us",
        s.bytes() / (double) (1 << 20),
        s.seconds(),
        s.bytes() / s.seconds() / (1 << 20),
        s.percentileNanos(0.5) / 1e3);
  }

  private static String firstError(VsockWorkload.Result r) {
    return r.guestToHost().errors() > 0
        ? r.guestToHost().firstError()
        : r.hostToGuest().firstError();
  }

  /** {@code bounce vsock} with the pool the guest bounces through, enforced. */
  private static List<String> backendCommand(Path socket, Path uds) {
    return List.of(
        "vsock",
        "--guest-cid",
        Long.toString(GUEST_CID),
        "--socket",
        socket.toString(),
        "--uds-path",
        uds.toString(),
        "--pool",
        String.format("0x%x:%dM", POOL_START, POOL_SIZE >> 20),
        "--restricted-dma",
        "required");
  }

  private static Process startBackend(List<String> command, Path log) throws IOException {
    String java = ProcessHandle.current().info().command().orElse("java");
    List<String> process =
        new ArrayList<>(
            List.of(
                java,
                "--enable-native-access=ALL-UNNAMED",
                "-cp",
                System.getProperty("java.class.path"),
                Main.class.getName()));
    process.addAll(command);
    return new ProcessBuilder(process)
        .redirectErrorStream(true)
        .redirectOutput(log.toFile())
        .start();
  }

  /**
   * Waits for the line the backend prints once both its sockets listen: a socket file appears at
   * bind(2), a moment before listen(2), and a connection in between would be refused.
   */
  private static void awaitListening(Process backend, Path log)
      throws IOException, InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    while (!Files.readString(log, StandardCharsets.UTF_8).contains("bounce vsock: guest CID")) {
      if (!backend.isAlive() || System.nanoTime() > deadline) {
        throw new IOException(
            "the backend "
                + (backend.isAlive() ? "did not listen within 20 s" : "exited")
                + "; its output:\n"
                + Files.readString(log, StandardCharsets.UTF_8));
      }
      Thread.sleep(20);
    }
  }

  private static void deleteAll(Path dir) throws IOException {
    try (Stream<Path> paths = Files.walk(dir)) {
      for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
    }
  }

  private static void say(String who, String what) {
    System.out.printf("[%-8s] %s%n", who, what);
    System.out.flush();
  }
}
