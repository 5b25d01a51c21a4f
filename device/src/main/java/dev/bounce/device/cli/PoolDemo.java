package dev.bounce.device.cli;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;

import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestAccessException;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.Ranges;
import dev.bounce.pool.RestrictedPool;
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.socket.UnixSocket;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The demo as far as the pool goes: a VMM process creates guest RAM as a memfd and shares it with a
 * backend process over a Unix socket (SCM_RIGHTS); the backend maps only the restricted pool's
 * pages, reads what the VMM wrote there, answers in the pool, and refuses an address outside it.
 * The devices' issues replace this with vsock and net traffic.
 */
final class PoolDemo {
  static final String RAM_NAME = "bounce-demo-ram";
  private static final long RAM_GPA = 0x4000_0000L;
  private static final long RAM_SIZE = 64L << 20;
  private static final long POOL_GPA = 0x4300_0000L;
  private static final long POOL_SIZE = 4L << 20;
  private static final long REPLY_OFFSET = 4096;
  private static final int TEXT_MAX = 64;
  private static final String VMM_TEXT = "hello from the VMM";
  private static final String BACKEND_TEXT = "hello from the backend";

  /**
   * VMM to backend: the region (4 longs) and the pool window (2 longs); backend to VMM: 2 longs.
   */
  private static final long REQUEST_SIZE = 6 * Long.BYTES;

  private static final long RESULT_SIZE = 2 * Long.BYTES;

  private PoolDemo() {}

  static int run(List<String> args) throws Exception {
    Flags flags = new Flags("bounce demo", List.of());
    if (!flags.parse(args)) return 0;
    Path dir = Files.createTempDirectory("bounce-demo");
    Path socketPath = dir.resolve("demo.sock");
    say(
        "vmm",
        "bounce demo: a restricted pool over shared memory (the devices come in later issues)");
    try (Memfd ram = Memfd.create(RAM_NAME, RAM_SIZE);
        Mapping vmmView = ram.map(0, RAM_SIZE);
        UnixListener listener = UnixListener.bind(socketPath, false);
        Arena arena = Arena.ofConfined()) {
      say(
          "vmm",
          "guest RAM: memfd \"" + RAM_NAME + "\", " + mib(RAM_SIZE) + " at guest " + hex(RAM_GPA));
      say(
          "vmm",
          "restricted pool: guest " + Ranges.describe(POOL_GPA, POOL_SIZE) + ", " + mib(POOL_SIZE));
      MemorySegment ramBytes = vmmView.segment();
      writeText(ramBytes, POOL_GPA - RAM_GPA, VMM_TEXT);
      say("vmm", "wrote \"" + VMM_TEXT + "\" at guest " + hex(POOL_GPA));
      Process backend = startBackend(socketPath);
      try (UnixSocket peer = listener.accept()) {
        say(
            "vmm",
            "backend process "
                + backend.pid()
                + " connected; sending the memfd over "
                + socketPath);
        MemorySegment request = arena.allocate(REQUEST_SIZE);
        long[] fields = {RAM_GPA, RAM_SIZE, RAM_GPA, 0, POOL_GPA, POOL_SIZE};
        for (int i = 0; i < fields.length; i++)
          request.setAtIndex(JAVA_LONG_UNALIGNED, i, fields[i]);
        peer.send(request, ram.fd());
        MemorySegment result = arena.allocate(RESULT_SIZE);
        if (!peer.receiveFully(result, new ArrayList<>())) {
          throw new IOException("the backend process closed the socket without answering");
        }
        long mappedBytes = result.getAtIndex(JAVA_LONG_UNALIGNED, 0);
        boolean refused = result.getAtIndex(JAVA_LONG_UNALIGNED, 1) == 1;
        String reply = readText(ramBytes, POOL_GPA - RAM_GPA + REPLY_OFFSET);
        say(
            "vmm",
            "read \""
                + reply
                + "\" at guest "
                + hex(POOL_GPA + REPLY_OFFSET)
                + " through its own mapping");
        boolean ok =
            reply.equals(BACKEND_TEXT) && mappedBytes == POOL_SIZE && refused && waitFor(backend);
        System.out.println();
        System.out.println("summary:");
        System.out.println(
            "  shared:  " + mib(RAM_SIZE) + " memfd, passed to another process with SCM_RIGHTS");
        System.out.println(
            "  mapped by the backend: "
                + mib(mappedBytes)
                + " (the pool only, per /proc/PID/maps)");
        System.out.println(
            "  writes seen both ways: " + (reply.equals(BACKEND_TEXT) ? "yes" : "NO"));
        System.out.println("  address outside the pool refused: " + (refused ? "yes" : "NO"));
        System.out.println("  result: " + (ok ? "OK" : "FAILED"));
        return ok ? 0 : 1;
      } finally {
        backend.destroy();
      }
    } finally {
      Files.deleteIfExists(socketPath);
      Files.deleteIfExists(dir);
    }
  }

  /** The backend side: {@code demo-backend --socket PATH}. */
  static int runBackend(List<String> args) throws Exception {
    Flags flags =
        new Flags(
            "bounce demo-backend --socket PATH",
            List.of(new Flags.Flag("socket", "PATH", "the demo's socket")));
    if (!flags.parse(args)) return 0;
    try (UnixSocket socket = UnixSocket.connect(Path.of(flags.require("socket")));
        Arena arena = Arena.ofConfined()) {
      MemorySegment request = arena.allocate(REQUEST_SIZE);
      List<Fd> fds = new ArrayList<>();
      if (!socket.receiveFully(request, fds) || fds.size() != 1) {
        fds.forEach(Fd::close);
        throw new IOException(
            "expected one region and one fd from the VMM, got " + fds.size() + " fds");
      }
      long[] f = new long[6];
      for (int i = 0; i < f.length; i++) f[i] = request.getAtIndex(JAVA_LONG_UNALIGNED, i);
      MemoryRegionDescription region = new MemoryRegionDescription(f[0], f[1], f[2], f[3]);
      say("backend", "received " + fds.getFirst() + " for " + region);
      try (RestrictedPool pool = RestrictedPool.at(f[4], f[5]).withRegion(region, fds.getFirst())) {
        long mapped = mappedBytes(RAM_NAME);
        say(
            "backend",
            "mapped only the pool: " + mib(mapped) + " of the " + mib(region.size()) + " shared");
        String text = readText(pool.translate(pool.start(), TEXT_MAX), 0);
        say("backend", "read \"" + text + "\" at guest " + hex(pool.start()));
        writeText(pool.translate(pool.start() + REPLY_OFFSET, TEXT_MAX), 0, BACKEND_TEXT);
        say(
            "backend",
            "wrote \"" + BACKEND_TEXT + "\" at guest " + hex(pool.start() + REPLY_OFFSET));
        boolean refused = false;
        try {
          pool.translate(region.guestAddress(), TEXT_MAX);
        } catch (GuestAccessException e) {
          say("backend", "refused: " + e.getMessage());
          refused = true;
        }
        MemorySegment result = arena.allocate(RESULT_SIZE);
        result.setAtIndex(JAVA_LONG_UNALIGNED, 0, mapped);
        result.setAtIndex(JAVA_LONG_UNALIGNED, 1, refused ? 1 : 0);
        socket.send(result);
      }
    }
    return 0;
  }

  private static Process startBackend(Path socketPath) throws IOException {
    String java = ProcessHandle.current().info().command().orElse("java");
    return new ProcessBuilder(
            java,
            "--enable-native-access=ALL-UNNAMED",
            "-cp",
            System.getProperty("java.class.path"),
            Main.class.getName(),
            "demo-backend",
            "--socket",
            socketPath.toString())
        .inheritIO()
        .start();
  }

  private static boolean waitFor(Process process) throws InterruptedException {
    return process.waitFor(10, TimeUnit.SECONDS) && process.exitValue() == 0;
  }

  /** Bytes of this process's mappings of the memfd called {@code name}, from /proc/self/maps. */
  static long mappedBytes(String name) throws IOException {
    long total = 0;
    for (String line : Files.readAllLines(Path.of("/proc/self/maps"))) {
      if (!line.contains("/memfd:" + name)) continue;
      String[] range = line.substring(0, line.indexOf(' ')).split("-");
      total += Long.parseUnsignedLong(range[1], 16) - Long.parseUnsignedLong(range[0], 16);
    }
    return total;
  }

  private static void writeText(MemorySegment segment, long offset, String text) {
    segment.asSlice(offset, TEXT_MAX).fill((byte) 0);
    segment.setString(offset, text);
  }

  private static String readText(MemorySegment segment, long offset) {
    MemorySegment bytes = segment.asSlice(offset, TEXT_MAX);
    if (bytes.get(JAVA_BYTE, TEXT_MAX - 1) != 0) return "(not a string)";
    return bytes.getString(0);
  }

  private static void say(String who, String what) {
    System.out.printf("[%-7s] %s%n", who, what);
    System.out.flush();
  }

  private static String hex(long value) {
    return Ranges.hex(value);
  }

  private static String mib(long bytes) {
    return bytes % (1L << 20) == 0 ? (bytes >> 20) + " MiB" : bytes + " bytes";
  }
}
