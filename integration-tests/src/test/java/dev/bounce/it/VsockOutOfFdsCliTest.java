package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.socket.SeqpacketSocket;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bounce vsock} as its own process when it runs out of fds. A listener whose accept(2) fails
 * with EMFILE stays readable, the connection still waiting in its backlog, so a level-triggered
 * watch would wake the data loop again at once for as long as fds stay short. bounce stops watching
 * the listener for a second instead, and accepts again once fds are free. Each test lowers the
 * running process's fd limit (prlimit(1), util-linux) to a few above what it has open, so that a
 * handful of host connections, none of which sends its CONNECT request yet, use up the rest (until
 * bounce gives up on them after 10 s, far longer than a test takes). No frontend is needed: bounce
 * accepts host connections before any VMM connects.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class VsockOutOfFdsCliTest {
  /** Fds bounce may open beyond those it has at the start; far below the 128 awaiting CONNECT. */
  private static final int SPARE_FDS = 4;

  /** How long a process out of fds is watched for spinning. */
  private static final Duration WINDOW = Duration.ofSeconds(2);

  /**
   * The most of {@link #WINDOW} bounce's loops may spend runnable. A loop woken by a readable
   * listener again and again never sleeps, so it is runnable (on a CPU, or waiting for one on a
   * loaded machine) all the time; an idle loop sleeps in epoll_wait nearly all the time. CPU time
   * alone would not tell them apart under load: a spinning loop sharing 2 busy cores got a third of
   * one.
   */
  private static final double MAX_IDLE_SHARE = 0.3;

  /** For anything awaited: generous, since the machine may be busy with other work. */
  private static final Duration PATIENCE = Duration.ofSeconds(60);

  @TempDir Path dir;
  private Path socket;
  private Path uds;
  private BounceDaemon bounce;
  private final List<AutoCloseable> held = new ArrayList<>();

  @BeforeEach
  void startBounce() throws Exception {
    socket = dir.resolve("vhost.sock");
    uds = dir.resolve("vm.vsock");
    bounce =
        BounceDaemon.start(
            dir.resolve("bounce.log"),
            "vsock",
            "--guest-cid",
            "3",
            "--socket",
            socket.toString(),
            "--uds-path",
            uds.toString());
    // The line comes once the vhost-user socket listens, after both host-side listeners.
    bounce.awaitLine("bounce vsock: guest CID 3: vhost-user socket " + socket);
  }

  @AfterEach
  void stopBounce() throws Exception {
    closeHeld();
    if (bounce != null) bounce.close();
  }

  @Test
  void seqpacketListenerOutOfFdsPausesInsteadOfSpinningAndAcceptsAgainOnceFdsAreFree()
      throws Exception {
    Path listener = Path.of(uds + ".seqpacket");
    int limit = limitFds();
    for (int i = 0, n = free(limit) + 2; i < n; i++) {
      SeqpacketSocket s = SeqpacketSocket.connect(listener);
      assertNotNull(s, "nothing listens at " + listener);
      held.add(s);
    }

    bounce.awaitLine("EMFILE (Too many open files); pausing for 1 s", PATIENCE);
    assertIdle();

    closeHeld();
    SeqpacketSocket s = SeqpacketSocket.connect(listener);
    held.add(s);
    sendMessage(s, "CONNECT 5001\n");
    bounce.awaitLine("asked for guest port 5001", PATIENCE);
    assertTrue(bounce.process().isAlive(), "bounce vsock died: " + bounce.tail());
  }

  /** The stream listener is Netty's; bounce's AcceptPause turns its autoRead off for a second. */
  @Test
  void streamListenerOutOfFdsPausesInsteadOfSpinningAndAcceptsAgainOnceFdsAreFree()
      throws Exception {
    UnixDomainSocketAddress listener = UnixDomainSocketAddress.of(uds);
    int limit = limitFds();
    for (int i = 0, n = free(limit) + 2; i < n; i++) held.add(SocketChannel.open(listener));

    awaitNoFdFree(limit);
    bounce.awaitLine("vsock: accepting at " + uds + ": ", PATIENCE);
    assertTrue(bounce.tail().contains("; pausing for 1 s"), bounce.tail());
    assertIdle();

    closeHeld();
    SocketChannel s = SocketChannel.open(listener);
    held.add(s);
    s.write(ByteBuffer.wrap("CONNECT 5002\n".getBytes(StandardCharsets.US_ASCII)));
    bounce.awaitLine("asked for guest port 5002", PATIENCE);
    assertTrue(bounce.process().isAlive(), "bounce vsock died: " + bounce.tail());
  }

  /**
   * The vhost-user listener is bounce's engine's, on the control loop every VM's session shares: it
   * too pauses rather than spins, and serves the VMM once fds are free.
   */
  @Test
  void vhostUserListenerOutOfFdsPausesInsteadOfSpinningAndServesOnceFdsAreFree() throws Exception {
    int limit = limitFds();
    // Host applications that have not sent CONNECT yet hold the fds bounce has left.
    UnixDomainSocketAddress hostSide = UnixDomainSocketAddress.of(uds);
    for (int i = 0, n = free(limit); i < n; i++) held.add(SocketChannel.open(hostSide));
    awaitNoFdFree(limit);

    SocketChannel vmm = SocketChannel.open(UnixDomainSocketAddress.of(socket));
    bounce.awaitLine("vsock cid 3: accepting on " + socket + ": ", PATIENCE);
    assertTrue(bounce.tail().contains("; pausing for 1 s"), bounce.tail());
    assertIdle();

    closeHeld();
    bounce.awaitLine("frontend connected", PATIENCE);
    vmm.close();
    assertTrue(bounce.process().isAlive(), "bounce vsock died: " + bounce.tail());
  }

  /**
   * Lowers bounce's fd limit to what it has open plus {@link #SPARE_FDS}.
   *
   * @return the limit
   */
  private int limitFds() throws Exception {
    long pid = bounce.process().pid();
    // scripts/bounce execs java, so by now its pid is the JVM's.
    assertEquals("java", Files.readString(Path.of("/proc/" + pid + "/comm")).strip());
    int limit = openFds(pid).size() + SPARE_FDS;
    Process prlimit =
        new ProcessBuilder(
                "prlimit", "--pid", Long.toString(pid), "--nofile=" + limit + ":" + limit)
            .redirectErrorStream(true)
            .start();
    String said = new String(prlimit.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertEquals(0, prlimit.waitFor(), "prlimit (util-linux) failed: " + said);
    assertTrue(free(limit) > 0, "no fd left below " + limit + ": " + openFds(pid));
    return limit;
  }

  /** How many more fds bounce may open: the numbers below its limit that are not in use. */
  private int free(int limit) throws IOException {
    return limit - (int) openFds(bounce.process().pid()).stream().filter(fd -> fd < limit).count();
  }

  private void awaitNoFdFree(int limit) throws Exception {
    long deadline = System.nanoTime() + PATIENCE.toNanos();
    while (free(limit) > 0) {
      assertTrue(bounce.process().isAlive(), "bounce vsock exited: " + bounce.tail());
      assertTrue(System.nanoTime() < deadline, free(limit) + " fds never taken: " + bounce.tail());
      Thread.sleep(20);
    }
  }

  private static List<Integer> openFds(long pid) throws IOException {
    try (Stream<Path> fds = Files.list(Path.of("/proc/" + pid + "/fd"))) {
      return fds.map(p -> Integer.parseInt(p.getFileName().toString())).toList();
    }
  }

  /**
   * Bounce's event loops (the data loop that watches the host listeners, the control loop) sleep
   * through most of {@link #WINDOW}. Only its own threads count: the JIT compiling what start-up
   * ran, late on a loaded machine, is not spinning.
   */
  private void assertIdle() throws Exception {
    long pid = bounce.process().pid();
    long runnableBefore = loopRunnableNanos(pid);
    long wallBefore = System.nanoTime();
    Thread.sleep(WINDOW);
    double share =
        (double) (loopRunnableNanos(pid) - runnableBefore)
            / Math.max(1, System.nanoTime() - wallBefore);
    assertTrue(
        share < MAX_IDLE_SHARE,
        "bounce's loops were runnable "
            + share
            + " of the time while out of fds: "
            + bounce.tail());
  }

  /**
   * Time the threads bounce names (bounce-data-*, bounce-control-*) spent on a CPU plus waiting on
   * a run queue for one: the first two fields of schedstat, in ns.
   */
  private static long loopRunnableNanos(long pid) throws IOException {
    long sum = 0;
    int loops = 0;
    try (Stream<Path> tasks = Files.list(Path.of("/proc/" + pid + "/task"))) {
      for (Path task : tasks.toList()) {
        if (!Files.readString(task.resolve("comm")).startsWith("bounce-")) continue;
        String[] schedstat = Files.readString(task.resolve("schedstat")).strip().split(" ");
        sum += Long.parseLong(schedstat[0]) + Long.parseLong(schedstat[1]);
        loops++;
      }
    }
    assertTrue(loops > 0, "no bounce-* thread in process " + pid);
    return sum;
  }

  private static void sendMessage(SeqpacketSocket s, String text) throws Exception {
    byte[] bytes = text.getBytes(StandardCharsets.US_ASCII);
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment message = arena.allocateFrom(ValueLayout.JAVA_BYTE, bytes);
      assertTrue(s.send(message, bytes.length), "a fresh socket's buffer is full");
    }
  }

  private void closeHeld() throws Exception {
    for (AutoCloseable c : held) c.close();
    held.clear();
  }
}
