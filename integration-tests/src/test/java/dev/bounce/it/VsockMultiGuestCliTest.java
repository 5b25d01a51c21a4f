package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.device.vsock.VsockDriver;
import dev.bounce.device.vsock.VsockHeader;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * One {@code scripts/bounce vsock} process serving two guests, given with repeated {@code --vm} or
 * with a {@code --config} YAML file (vhost-device-vsock's ways), each driven at once by its own
 * {@code scripts/bounce frontend --device vsock}: each guest streams both ways with no errors and
 * has its own CID, and SIGTERM reports both guests and removes every socket file.
 */
@Timeout(value = 150, unit = TimeUnit.SECONDS)
class VsockMultiGuestCliTest {
  private static final Duration START = Duration.ofSeconds(90);
  private static final Duration STOP = Duration.ofSeconds(20);

  @TempDir Path dir;
  private BounceDaemon backend;

  record Guest(long cid, Path socket, Path uds) {}

  private List<Guest> twoGuests() {
    return List.of(
        new Guest(3, dir.resolve("vhost3.sock"), dir.resolve("vm3.vsock")),
        new Guest(4, dir.resolve("vhost4.sock"), dir.resolve("vm4.vsock")));
  }

  @AfterEach
  void killBackendLeftRunning() throws InterruptedException {
    if (backend != null) backend.close();
  }

  @Test
  void twoGuestsFromRepeatedVmFlagsEachStreamWithTheirOwnCid() throws Exception {
    List<Guest> guests = twoGuests();
    Guest three = guests.get(0);
    Guest four = guests.get(1);
    startBackend(
        guests,
        "--vm",
        "guest-cid=3,socket=" + three.socket() + ",uds-path=" + three.uds(),
        "--vm",
        "guest-cid=4,socket=" + four.socket() + ",uds-path=" + four.uds() + ",tx-buffer-size=64K");
    driveEachGuestAtOnce(guests);
    stopBackendAndCheckItCleanedUp(guests);
  }

  @Test
  void twoGuestsFromAConfigFileEachStreamWithTheirOwnCid() throws Exception {
    List<Guest> guests = twoGuests();
    Path config =
        Files.writeString(
            dir.resolve("vms.yaml"),
            """
            vms:
              - guest_cid: 3
                socket: %s
                uds_path: %s
              - guest_cid: 4
                socket: %s
                uds_path: %s
                tx_buffer_size: 65536
                queue_size: 512
            """
                .formatted(
                    guests.get(0).socket(),
                    guests.get(0).uds(),
                    guests.get(1).socket(),
                    guests.get(1).uds()));
    startBackend(guests, "--config", config.toString());
    driveEachGuestAtOnce(guests);
    stopBackendAndCheckItCleanedUp(guests);
  }

  /**
   * vhost-device-vsock's sibling VM communication through one bounce process: guests 3 and 4 share
   * group "blue" (3 is in "red" too), guest 5 is in "green" only. Guest 3 connects to guest 4's
   * listener and 256 KiB go each way; its connection to guest 5 is reset, and 5 never hears of it.
   */
  @Test
  void guestsSharingAGroupReachEachOtherAndNoOtherGuest() throws Exception {
    List<Guest> guests = new ArrayList<>(twoGuests());
    guests.add(new Guest(5, dir.resolve("vhost5.sock"), dir.resolve("vm5.vsock")));
    List<String> groups = List.of("red+blue", "blue", "green");
    List<String> args = new ArrayList<>();
    for (int i = 0; i < guests.size(); i++) {
      Guest g = guests.get(i);
      args.add("--vm");
      args.add(
          "guest-cid=%d,socket=%s,uds-path=%s,groups=%s"
              .formatted(g.cid(), g.socket(), g.uds(), groups.get(i)));
    }
    startBackend(guests, args.toArray(String[]::new));
    assertTrue(backend.log().contains(", groups red+blue"), backend.log());
    List<AutoCloseable> open = new ArrayList<>();
    try {
      List<VsockDriver> drivers = new ArrayList<>();
      for (Guest g : guests) {
        GuestRam ram = GuestRam.create(MemoryMode.SHARED, 0x4000_0000L, 64L << 20, 0, 0);
        open.add(ram);
        FrontendSession session =
            FrontendSession.connect(g.socket(), ram, VsockDriver.options(Handshake.QEMU, 256));
        open.add(0, session);
        drivers.add(
            new VsockDriver(session, VsockDriver.guestCid(session), VsockDriver.LINUX_BUFFER_SIZE));
      }
      VsockDriver three = drivers.get(0);
      VsockDriver four = drivers.get(1);
      VsockDriver five = drivers.get(2);
      four.listen(6000);
      five.listen(6000);
      VsockDriver.Socket toFour = three.startConnect(4, 6000, VsockHeader.TYPE_STREAM);
      VsockDriver.Socket toFive = three.startConnect(5, 6000, VsockHeader.TYPE_STREAM);
      VsockDriver.Socket[] atFour = new VsockDriver.Socket[1];
      VsockDriver.pumpUntil(
          drivers,
          () -> {
            if (atFour[0] == null) atFour[0] = four.accepted(6000);
            return atFour[0] != null && !toFour.isConnecting() && toFive.wasReset();
          },
          START,
          "guest 4 accepted guest 3 and guest 5 reset it");
      assertTrue(toFour.isOpen(), "guest 4 refused guest 3");
      assertEquals(3, atFour[0].peerCid());
      byte[] there = new byte[256 << 10];
      byte[] back = new byte[256 << 10];
      new Random(3).nextBytes(there);
      new Random(4).nextBytes(back);
      ByteArrayOutputStream atThree = new ByteArrayOutputStream();
      ByteArrayOutputStream atFourBytes = new ByteArrayOutputStream();
      int[] sent = new int[2];
      byte[] chunk = new byte[65536];
      VsockDriver.pumpUntil(
          drivers,
          () -> {
            sent[0] += toFour.trySend(there, sent[0], there.length - sent[0], false);
            sent[1] += atFour[0].trySend(back, sent[1], back.length - sent[1], false);
            atFourBytes.write(chunk, 0, atFour[0].read(chunk, 0, chunk.length));
            atThree.write(chunk, 0, toFour.read(chunk, 0, chunk.length));
            return atThree.size() == back.length && atFourBytes.size() == there.length;
          },
          START,
          "256 KiB went each way between guests 3 and 4");
      assertArrayEquals(there, atFourBytes.toByteArray());
      assertArrayEquals(back, atThree.toByteArray());
      assertNull(five.accepted(6000), "guest 5 heard of guest 3's connection");
      for (VsockDriver d : drivers) assertEquals(0, d.badPackets(), d.firstProblem());
    } finally {
      for (AutoCloseable c : open) c.close();
    }
    stopBackendAndCheckItCleanedUp(guests);
  }

  @Test
  void twoGuestsWithOneCidAreAUsageErrorAndNothingIsServed() throws Exception {
    Path a = dir.resolve("a.sock");
    Path b = dir.resolve("b.sock");
    Path u1 = dir.resolve("u1.vsock");
    Path u2 = dir.resolve("u2.vsock");
    start(
        "--vm",
        "guest-cid=3,socket=" + a + ",uds-path=" + u1,
        "--vm",
        "guest-cid=3,socket=" + b + ",uds-path=" + u2);
    // Exits at once; if it serves instead, say so now rather than at the timeout.
    long deadline = System.nanoTime() + START.toNanos();
    while (!backend.process().waitFor(20, TimeUnit.MILLISECONDS)) {
      if (backend.log().contains(": vhost-user socket ")) {
        throw new AssertionError("bounce vsock serves two guests with CID 3: " + backend.log());
      }
      if (System.nanoTime() > deadline)
        throw new AssertionError("bounce vsock runs on: " + backend.log());
    }
    String log = backend.log();
    assertEquals(2, backend.process().exitValue(), log);
    assertTrue(
        log.contains("bounce vsock: guests 1 and 2 both have guest CID 3; each needs its own"),
        log);
    for (Path p : List.of(a, b, u1, u2)) {
      assertFalse(Files.exists(p, LinkOption.NOFOLLOW_LINKS), p + " was created");
    }
  }

  /**
   * The second guest's socket cannot be created (a file that is not a socket is in its place):
   * bounce exits 1 naming it, having closed what the first guest already had (its sockets are gone)
   * while its event loops still ran.
   */
  @Test
  void aGuestThatCannotStartEndsBounceAndRemovesWhatTheOthersOpened() throws Exception {
    Path a = dir.resolve("a.sock");
    Path u1 = dir.resolve("u1.vsock");
    Path b = Files.writeString(dir.resolve("b.sock"), "not a socket");
    Path u2 = dir.resolve("u2.vsock");
    String log = startTwoGuestsAndAwaitExit(a, u1, b, u2);
    assertEquals(1, backend.process().exitValue(), log);
    assertTrue(log.contains(b.toString()), "the failing path is named: " + log);
    assertFalse(log.contains("bounce vsock: closing"), "a close failed: " + log);
    for (Path p : List.of(a, u1, Path.of(u1 + ".seqpacket"), u2, Path.of(u2 + ".seqpacket"))) {
      assertFalse(Files.exists(p, LinkOption.NOFOLLOW_LINKS), p + " was left behind");
    }
  }

  /** A guest's socket in a directory that does not exist is a usage error: nothing is created. */
  @Test
  void aGuestWhoseSocketDirectoryIsMissingIsRefusedBeforeAnyGuestStarts() throws Exception {
    Path a = dir.resolve("a.sock");
    Path u1 = dir.resolve("u1.vsock");
    Path b = dir.resolve("missing-dir").resolve("b.sock");
    Path u2 = dir.resolve("u2.vsock");
    String log = startTwoGuestsAndAwaitExit(a, u1, b, u2);
    assertEquals(2, backend.process().exitValue(), log);
    assertEquals(
        "bounce vsock: guest 2: socket "
            + b
            + ": its directory "
            + b.getParent()
            + " does not exist; create it first (bounce creates the socket, not its directory)",
        log.strip());
    for (Path p : List.of(a, u1, u2)) {
      assertFalse(Files.exists(p, LinkOption.NOFOLLOW_LINKS), p + " was created");
    }
  }

  /** Starts guests 3 and 4 on these paths, waits for bounce to exit (it must), and its log. */
  private String startTwoGuestsAndAwaitExit(Path a, Path u1, Path b, Path u2) throws Exception {
    start(
        "--vm",
        "guest-cid=3,socket=" + a + ",uds-path=" + u1,
        "--vm",
        "guest-cid=4,socket=" + b + ",uds-path=" + u2);
    assertTrue(
        backend.process().waitFor(START.toSeconds(), TimeUnit.SECONDS),
        "bounce vsock runs on: " + backend.log());
    return backend.log();
  }

  /** Starts bounce vsock with {@code args}, its stdout and stderr going to its log. */
  private void start(String... args) throws IOException {
    List<String> vsock = new ArrayList<>(List.of("vsock"));
    vsock.addAll(List.of(args));
    backend = BounceDaemon.start(dir.resolve("vsock.log"), vsock.toArray(String[]::new));
  }

  /** Starts bounce vsock with {@code args}; returns once it says it serves every guest. */
  private void startBackend(List<Guest> guests, String... args) throws Exception {
    start(args);
    // Each guest's line comes once its sockets listen; their files appear a moment before.
    for (Guest g : guests) {
      backend.awaitLine(
          "bounce vsock: guest CID "
              + g.cid()
              + ": vhost-user socket "
              + g.socket()
              + ", host side "
              + g.uds(),
          START);
    }
  }

  /**
   * Runs a frontend against each guest, both at once: a JSON stream workload each, then a short
   * text one whose stderr names the CID the guest read from the device's config space (the JSON
   * does not carry it).
   */
  private void driveEachGuestAtOnce(List<Guest> guests) throws Exception {
    try (ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
      List<Future<LauncherTest.Run>> json = new ArrayList<>();
      for (Guest g : guests) {
        json.add(
            pool.submit(
                () ->
                    LauncherTest.vsockFrontend(
                        g.socket(), g.uds(), "--count", "4", "--bytes", "256K")));
      }
      for (int i = 0; i < guests.size(); i++) checkStreamed(guests.get(i), json.get(i).get());

      List<Future<LauncherTest.Run>> text = new ArrayList<>();
      for (Guest g : guests) {
        text.add(
            pool.submit(
                () ->
                    LauncherTest.launch(
                        "frontend",
                        "--socket",
                        g.socket().toString(),
                        "--device",
                        "vsock",
                        "--uds-path",
                        g.uds().toString(),
                        "--memory",
                        "64M",
                        "--count",
                        "1",
                        "--bytes",
                        "4K")));
      }
      for (int i = 0; i < guests.size(); i++) {
        Guest g = guests.get(i);
        LauncherTest.Run run = text.get(i).get();
        String what =
            "guest CID " + g.cid() + ": " + run.out() + run.err() + "\nbackend: " + backend.log();
        assertEquals(0, run.status(), what);
        assertTrue(
            run.err().contains("; guest CID " + g.cid() + "; host side " + g.uds() + ";"), what);
      }
    }
  }

  private void checkStreamed(Guest g, LauncherTest.Run run) {
    LauncherTest.assertVsockStreams(
        run, 4, 256 << 10, "guest CID " + g.cid() + ", backend: " + backend.log());
  }

  /** SIGTERM: both guests reported with no errors, and no socket file left behind. */
  private void stopBackendAndCheckItCleanedUp(List<Guest> guests) throws Exception {
    int status = backend.stop(STOP);
    String log = backend.log();
    assertEquals(143, status, log);
    for (Guest g : guests) {
      assertTrue(log.contains("bounce vsock: guest CID " + g.cid() + ": 0 guest errors"), log);
      for (Path p : List.of(g.socket(), g.uds(), Path.of(g.uds() + ".seqpacket"))) {
        assertFalse(Files.exists(p, LinkOption.NOFOLLOW_LINKS), p + " is left: " + log);
      }
    }
  }
}
