package dev.bounce.device.vsock;

import dev.bounce.vhost.frontend.Stats;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.zip.CRC32C;

/**
 * A vsock workload for the fake frontend against any vhost-user-vsock backend whose host side is
 * hybrid vsock over Unix sockets (bounce's {@link UnixHost}, vhost-device-vsock, Firecracker): the
 * guest ({@link VsockDriver}) at one end of every connection, a host application at the other.
 *
 * <ul>
 *   <li>Guest-initiated connections go to host port {@link #HOST_PORT}: this workload listens at
 *       {@code <uds-path>_<HOST_PORT>} and accepts what the backend connects there.
 *   <li>Host-initiated connections go through {@code <uds-path>} with {@code CONNECT <GUEST_PORT>}
 *       to the guest's listener on {@link #GUEST_PORT}, and are matched to the guest's side by the
 *       host port the {@code OK} line names.
 * </ul>
 *
 * <p>Each stream connection moves {@code bytes} each way the {@link Direction} says, in writes of
 * {@code size} bytes, and ends as a socket program ends one: a side that sent everything shuts its
 * sending down, a side that read to end of stream closes. Both ends checksum what went through
 * (CRC32C); a difference, a short stream or a reset is an error. An operation is one write; its
 * latency is the time from the write's start until its last byte arrived at the other end.
 *
 * <p>Everything runs on the caller's thread: the driver (which is single-threaded) and the host
 * applications, as non-blocking sockets polled in the same loop. So the workload adds no thread
 * switches of its own to what it measures; it spins while work is in flight and sleeps only after
 * {@link #SPIN_NANOS} without progress.
 */
public final class VsockWorkload implements AutoCloseable {
  /** The host port guest-initiated connections go to. */
  public static final int HOST_PORT = 5000;

  /** The guest port host-initiated connections go to. */
  public static final int GUEST_PORT = 5001;

  /** The port another guest listens on for {@link #toSibling}. */
  public static final int SIBLING_PORT = 6000;

  /** The largest write. */
  public static final int MAX_SIZE = 1 << 20;

  /** No progress for this long: wait on the driver's notifications instead of spinning. */
  public static final long SPIN_NANOS = Duration.ofMillis(2).toNanos();

  private static final int PATTERN_SPREAD = 251;

  /** The most the guest application takes in one read (a Linux guest's 256 KiB socket buffer). */
  private static final int RECEIVE_MAX = 256 * 1024;

  private static final int LINE_MAX = 64;
  private static final long STALL_NANOS = Duration.ofSeconds(10).toNanos();

  /** Which way the bytes of a stream workload go. */
  public enum Direction {
    GUEST_TO_HOST("guest-to-host"),
    HOST_TO_GUEST("host-to-guest"),
    /** Both ways on every connection at once; connections alternately guest- and host-initiated. */
    BOTH("both");

    private final String flag;

    Direction(String flag) {
      this.flag = flag;
    }

    public String flag() {
      return flag;
    }

    public static Direction ofFlag(String flag) {
      for (Direction d : values()) {
        if (d.flag.equals(flag)) return d;
      }
      throw new IllegalArgumentException(
          "direction '" + flag + "' is not one of guest-to-host, host-to-guest, both");
    }
  }

  /**
   * What a stream workload did, per direction (a direction that carried nothing has no bytes); how
   * many connections ran, and how many were open (established at both ends) at the same time at
   * most.
   */
  public record Result(Stats guestToHost, Stats hostToGuest, long connections, int peakOpen) {
    public long errors() {
      return guestToHost.errors() + hostToGuest.errors();
    }
  }

  private final VsockDriver driver;
  private final Path udsPath;
  private final ServerSocketChannel hostListener;
  private final Path hostListenerPath;
  private final byte[] pattern;
  private final ByteBuffer hostPattern;
  private final ByteBuffer hostIn = ByteBuffer.allocateDirect(256 * 1024);

  // The running workload.
  private final List<Link> links = new ArrayList<>();
  private final ArrayDeque<Link> awaitingHostAccept = new ArrayDeque<>();
  private final Map<Integer, Link> awaitingGuestAccept = new HashMap<>();
  private final Map<Integer, VsockDriver.Socket> acceptedByHostPort = new HashMap<>();
  private Stats toHostStats;
  private Stats toGuestStats;
  private long lastProgress;
  private boolean holding;

  /**
   * A workload for {@code driver}'s guest against the host side at {@code udsPath}; listens at
   * {@code <udsPath>_}{@value #HOST_PORT} (a stale socket there is replaced) and on guest port
   * {@value #GUEST_PORT}.
   */
  public VsockWorkload(VsockDriver driver, Path udsPath) throws IOException {
    this.driver = driver;
    this.udsPath = udsPath;
    this.hostListenerPath = Path.of(udsPath + "_" + HOST_PORT);
    Files.deleteIfExists(hostListenerPath);
    this.hostListener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
    try {
      // The backend connects here once per guest REQUEST, many at once under --parallel.
      hostListener.bind(UnixDomainSocketAddress.of(hostListenerPath), 4096);
      hostListener.configureBlocking(false);
    } catch (IOException e) {
      hostListener.close();
      throw new IOException("cannot listen at " + hostListenerPath + ": " + e.getMessage(), e);
    }
    driver.listen(GUEST_PORT);
    Random random = new Random(0x626f756e6365L);
    pattern = new byte[MAX_SIZE + PATTERN_SPREAD];
    random.nextBytes(pattern);
    hostPattern = ByteBuffer.allocateDirect(pattern.length).put(pattern).flip();
  }

  /**
   * Runs {@code connections} stream connections, {@code parallel} at a time, each moving {@code
   * bytes} in writes of {@code size} the way {@code direction} says; stops early after {@code
   * duration} (what was under way is counted as far as it got). With {@code openFirst}, the first
   * {@code parallel} connections are all established before any of them moves a byte.
   */
  public Result stream(
      Direction direction,
      long connections,
      int parallel,
      int size,
      long bytes,
      boolean openFirst,
      Duration duration)
      throws IOException {
    if (size < 1 || size > MAX_SIZE) {
      throw new IllegalArgumentException("write size " + size + " is not 1.." + MAX_SIZE);
    }
    if (connections < 1 || parallel < 1 || bytes < 0) {
      throw new IllegalArgumentException(
          "connections " + connections + ", parallel " + parallel + ", bytes " + bytes);
    }
    toHostStats = new Stats();
    toGuestStats = new Stats();
    long deadline = System.nanoTime() + duration.toNanos();
    long started = 0;
    long finished = 0;
    int peakOpen = 0;
    holding = openFirst;
    lastProgress = System.nanoTime();
    toHostStats.start();
    toGuestStats.start();
    while (finished < connections) {
      boolean progress = false;
      while (started < connections && links.size() < parallel && System.nanoTime() < deadline) {
        boolean guestInitiated =
            switch (direction) {
              case GUEST_TO_HOST -> true;
              case HOST_TO_GUEST -> false;
              case BOTH -> started % 2 == 0;
            };
        links.add(open(started++, guestInitiated, direction, size, bytes));
        progress = true;
      }
      progress |= step();
      int open = 0;
      for (int i = links.size() - 1; i >= 0; i--) {
        Link link = links.get(i);
        if (link.isOpen()) open++;
        if (link.done()) {
          links.remove(i);
          finished++;
          progress = true;
        }
      }
      peakOpen = Math.max(peakOpen, open);
      if (holding && open == Math.min(parallel, connections)) holding = false;
      long now = System.nanoTime(); // once per pass: the clock costs tens of ns in these VMs
      if (started == finished && now >= deadline) break;
      if (now >= deadline + STALL_NANOS) {
        for (Link link : links)
          link.fail("still running " + STALL_NANOS / 1_000_000_000 + " s after the deadline");
        links.forEach(Link::abort);
        links.clear();
        break;
      }
      idle(progress, now);
    }
    toHostStats.finish();
    toGuestStats.finish();
    return new Result(toHostStats, toGuestStats, finished, peakOpen);
  }

  /**
   * Ping-pong over one guest-initiated connection: the guest sends {@code size} bytes, the host
   * application sends them back, {@code count} times (or for {@code duration}); an operation is one
   * round trip.
   */
  public Stats pingPong(long count, int size, Duration duration) throws IOException {
    if (size < 1 || size > MAX_SIZE) {
      throw new IllegalArgumentException("message size " + size + " is not 1.." + MAX_SIZE);
    }
    Stats stats = new Stats();
    toHostStats = new Stats(); // one-way checks of each message, not reported
    toGuestStats = stats;
    // Stepped by this method until the round trips are done; then closed as a stream is.
    Link link = open(0, true, Direction.BOTH, size, 0);
    long deadline = System.nanoTime() + duration.toNanos();
    lastProgress = System.nanoTime();
    while (!link.isOpen() && !link.failed) {
      idle(step());
      if (System.nanoTime() > deadline + STALL_NANOS) link.fail("not connected in time");
    }
    byte[] back = new byte[size];
    stats.start();
    for (long k = 0; k < count && !link.failed && System.nanoTime() < deadline; k++) {
      long start = System.nanoTime();
      int offset = (int) (k % PATTERN_SPREAD);
      if (!link.pingPong(offset, size, back, deadline + STALL_NANOS)) break;
      stats.record(size, System.nanoTime() - start);
    }
    stats.finish();
    link.finishSending();
    links.add(link);
    while (!link.done()) {
      idle(step());
      if (System.nanoTime() > deadline + 2 * STALL_NANOS) {
        link.fail("did not close in time");
        link.abort();
      }
    }
    links.clear();
    if (toHostStats.errors() > 0) stats.error(toHostStats.firstError());
    return stats;
  }

  /**
   * One stream from this workload's guest to another guest of the same backend ({@code sibling}'s,
   * reached by its CID through the backend's sibling routing) on {@link #SIBLING_PORT}: {@code
   * bytes} in writes of {@code size}, both guests driven on this thread, a checksum at each end;
   * then the sender resets the connection. The stats hold the stream as one operation.
   */
  public Stats toSibling(VsockDriver sibling, int size, long bytes, Duration duration)
      throws IOException {
    if (size < 1 || size > MAX_SIZE) {
      throw new IllegalArgumentException("write size " + size + " is not 1.." + MAX_SIZE);
    }
    Stats stats = new Stats();
    sibling.listen(SIBLING_PORT);
    long deadline = System.nanoTime() + duration.toNanos() + STALL_NANOS;
    VsockDriver.Socket out =
        driver.startConnect(sibling.guestCid(), SIBLING_PORT, VsockHeader.TYPE_STREAM);
    VsockDriver.Socket in = null;
    while ((in == null || out.isConnecting()) && !out.wasReset() && System.nanoTime() < deadline) {
      boolean progress = driver.pump(0) | sibling.pump(0);
      if (in == null) in = sibling.accepted(SIBLING_PORT);
      idle(progress);
    }
    if (in == null || !out.isOpen()) {
      stats.error("guest " + sibling.guestCid() + " did not accept the connection");
      return stats;
    }
    CRC32C sentCrc = new CRC32C();
    CRC32C receivedCrc = new CRC32C();
    ByteRing.Reader checksum = receivedCrc::update;
    long sent = 0;
    long received = 0;
    stats.start();
    while (received < bytes && !out.wasReset() && !in.wasReset()) {
      boolean progress = driver.pump(0) | sibling.pump(0);
      if (sent < bytes) {
        int off = (int) ((sent / size) % PATTERN_SPREAD) + (int) (sent % size);
        int n = out.trySend(pattern, off, (int) Math.min(size - sent % size, bytes - sent), false);
        sentCrc.update(pattern, off, n);
        sent += n;
        progress |= n > 0;
      }
      int n = in.read(checksum, RECEIVE_MAX);
      received += n;
      progress |= n > 0;
      if (System.nanoTime() > deadline) break;
      idle(progress);
    }
    stats.record(received, 0);
    stats.finish();
    if (received < bytes) {
      stats.error(received + " of " + bytes + " bytes reached guest " + sibling.guestCid());
    } else if (sentCrc.getValue() != receivedCrc.getValue()) {
      stats.error("guest " + sibling.guestCid() + " got other bytes than were sent");
    }
    out.reset();
    while (!in.wasReset() && System.nanoTime() < deadline) idle(driver.pump(0) | sibling.pump(0));
    return stats;
  }

  /** One pass: the driver, the listeners, and every connection's bytes. */
  private boolean step() throws IOException {
    boolean progress = driver.pump(0);
    SocketChannel accepted;
    // Only while a guest connection waits for its host end: accept(2) is a syscall per pass.
    while (!awaitingHostAccept.isEmpty() && (accepted = hostListener.accept()) != null) {
      accepted.configureBlocking(false);
      awaitingHostAccept.pollFirst().host = accepted;
      progress = true;
    }
    VsockDriver.Socket s;
    while ((s = driver.accepted(GUEST_PORT)) != null) {
      Link link = awaitingGuestAccept.remove(s.peerPort());
      if (link != null) {
        link.guest = s;
      } else {
        acceptedByHostPort.put(s.peerPort(), s);
      }
      progress = true;
    }
    for (int i = 0; i < links.size(); i++) progress |= links.get(i).step();
    return progress;
  }

  private void idle(boolean progress) throws IOException {
    idle(progress, System.nanoTime());
  }

  private void idle(boolean progress, long now) throws IOException {
    if (progress) {
      lastProgress = now;
    } else if (now - lastProgress > SPIN_NANOS) {
      driver.pump(1);
    } else {
      Thread.onSpinWait();
    }
  }

  private Link open(long index, boolean guestInitiated, Direction direction, int size, long bytes)
      throws IOException {
    long toHost = direction == Direction.HOST_TO_GUEST ? 0 : bytes;
    long toGuest = direction == Direction.GUEST_TO_HOST ? 0 : bytes;
    Link link = new Link(index, size, toHost, toGuest);
    if (guestInitiated) {
      link.guest = driver.startConnect(HOST_PORT, VsockHeader.TYPE_STREAM);
      awaitingHostAccept.addLast(link);
    } else {
      SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
      try {
        ch.connect(UnixDomainSocketAddress.of(udsPath));
        ch.configureBlocking(false);
      } catch (IOException e) {
        ch.close();
        throw new IOException(
            "cannot connect to the backend's host side at " + udsPath + ": " + e.getMessage(), e);
      }
      link.host = ch;
      link.line = ByteBuffer.allocate(LINE_MAX);
      link.request =
          ByteBuffer.wrap(("CONNECT " + GUEST_PORT + "\n").getBytes(StandardCharsets.US_ASCII));
    }
    return link;
  }

  @Override
  public void close() throws IOException {
    links.forEach(Link::abort);
    links.clear();
    hostListener.close();
    Files.deleteIfExists(hostListenerPath);
  }

  /** One way of one connection: what was sent, what arrived, both checksums, writes in flight. */
  private final class Flow {
    final String name;
    final Stats stats;
    final int size;
    long total;
    long sent;
    long received;
    final CRC32C sentCrc = new CRC32C();
    final CRC32C receivedCrc = new CRC32C();
    final ByteRing.Reader checksumReceived = receivedCrc::update;
    long[] writeStart = new long[64];
    long writesStarted;
    long writesArrived;
    boolean eof;

    Flow(String name, Stats stats, int size, long total) {
      this.name = name;
      this.stats = stats;
      this.size = size;
      this.total = total;
    }

    boolean sendingDone() {
      return sent == total;
    }

    /** The next write: offset into the pattern, and its length (the rest of this write). */
    int writeOffset() {
      return (int) ((sent / size) % PATTERN_SPREAD) + (int) (sent % size);
    }

    int writeRemaining() {
      return (int) Math.min(size - sent % size, total - sent);
    }

    /** Notes when the write {@link #sent} is in began, once per write. */
    void noteWriteStart() {
      if (sent / size < writesStarted) return;
      if (writesStarted - writesArrived == writeStart.length) {
        long[] grown = new long[writeStart.length * 2];
        for (long w = writesArrived; w < writesStarted; w++) {
          grown[(int) (w % grown.length)] = writeStart[(int) (w % writeStart.length)];
        }
        writeStart = grown;
      }
      writeStart[(int) (writesStarted++ % writeStart.length)] = System.nanoTime();
    }

    /** {@code n} more bytes arrived: record the writes they completed. */
    void arrived(int n) {
      received += n;
      long now = System.nanoTime();
      while (writesArrived < writesStarted) {
        long end = Math.min((writesArrived + 1) * size, total);
        if (received < end) break;
        long start = writeStart[(int) (writesArrived % writeStart.length)];
        stats.record(end - writesArrived * size, now - start);
        writesArrived++;
      }
    }

    /** At end of stream: every byte arrived with the checksum it left with. */
    void verify(Link link) {
      if (received != total) {
        link.fail(stats, name + ": " + received + " of " + total + " bytes arrived");
      } else if (sentCrc.getValue() != receivedCrc.getValue()) {
        link.fail(
            stats,
            name
                + ": CRC32C of what arrived "
                + Long.toHexString(receivedCrc.getValue())
                + " differs from what was sent "
                + Long.toHexString(sentCrc.getValue()));
      }
    }
  }

  /** One connection: the guest's socket and the host application's. */
  private final class Link {
    final long index;
    final Flow toHost;
    final Flow toGuest;
    VsockDriver.Socket guest;
    SocketChannel host;
    ByteBuffer request; // host-initiated: the CONNECT line still to send
    ByteBuffer line; // host-initiated: the OK line as it arrives
    boolean hostOpen;
    boolean hostOutputShut;
    boolean guestSendShut;
    boolean guestShut; // both ways: the device answers with RST once the host took every byte
    boolean hostClosed;
    boolean failed;

    Link(long index, int size, long toHost, long toGuest) {
      this.index = index;
      this.toHost = new Flow("guest-to-host", toHostStats, size, toHost);
      this.toGuest = new Flow("host-to-guest", toGuestStats, size, toGuest);
    }

    boolean isOpen() {
      return guest != null && guest.isOpen() && host != null && hostOpen();
    }

    private boolean hostOpen() {
      return hostOpen || (line == null && host != null);
    }

    boolean done() {
      return failed || (hostClosed && guestShut && guest.wasReset());
    }

    void fail(String what) {
      fail(toHost.total > 0 ? toHostStats : toGuestStats, what);
    }

    /** Counts the failure in {@code where} (the direction it concerns) and ends the link. */
    void fail(Stats where, String what) {
      if (failed) return;
      failed = true;
      where.error("connection " + index + ": " + what);
      awaitingHostAccept.remove(this);
      awaitingGuestAccept.values().remove(this);
      abort();
    }

    void abort() {
      try {
        if (guest != null && !guest.wasReset()) guest.reset();
      } catch (IOException e) {
        // the device is gone; the failure is already counted
      }
      closeHost();
    }

    private void closeHost() {
      try {
        if (host != null) host.close();
      } catch (IOException e) {
        // closing a socket we are done with
      }
      hostClosed = true;
    }

    /** Moves what can move now, without waiting. */
    boolean step() throws IOException {
      if (failed || done()) return false;
      boolean progress = false;
      if (host != null && !hostOpen()) progress |= connectLine();
      if (guest != null && guest.wasReset() && !guestShut) {
        fail(
            "reset ("
                + toHost.received
                + " bytes reached the host, "
                + toGuest.received
                + " the guest)");
        return true;
      }
      if (holding || guest == null || guest.isConnecting() || host == null || !hostOpen()) {
        return progress;
      }
      try {
        progress |= guestSend() | guestReceive() | hostSend() | hostReceive();
      } catch (IOException e) {
        fail(e.getMessage());
        return true;
      }
      return progress;
    }

    /** Host-initiated: send CONNECT, read the OK line, find the guest's side by its host port. */
    private boolean connectLine() throws IOException {
      boolean progress = false;
      if (request.hasRemaining()) progress = host.write(request) > 0;
      while (!hostOpen) {
        ByteBuffer one = line.slice(line.position(), 1);
        int n = host.read(one);
        if (n < 0) {
          fail("the backend closed the host connection instead of answering CONNECT");
          return true;
        }
        if (n == 0) return progress;
        progress = true;
        line.position(line.position() + 1);
        if (line.get(line.position() - 1) == '\n') {
          String ok = new String(line.array(), 0, line.position() - 1, StandardCharsets.US_ASCII);
          if (!ok.startsWith("OK ")) {
            fail("the backend answered '" + ok + "' to CONNECT " + GUEST_PORT);
            return true;
          }
          hostOpen = true;
          int hostPort = Integer.parseUnsignedInt(ok.substring(3).trim());
          guest = acceptedByHostPort.remove(hostPort);
          if (guest == null) awaitingGuestAccept.put(hostPort, this);
        } else if (!line.hasRemaining()) {
          fail("no OK line within " + LINE_MAX + " bytes");
          return true;
        }
      }
      return progress;
    }

    private boolean guestSend() throws IOException {
      boolean progress = false;
      Flow f = toHost;
      while (!f.sendingDone()) {
        f.noteWriteStart();
        int off = f.writeOffset();
        int n = guest.trySend(pattern, off, f.writeRemaining(), false);
        if (n == 0) break;
        f.sentCrc.update(pattern, off, n);
        f.sent += n;
        progress = true;
      }
      // The guest shuts its sending down once it sent everything, and its receiving once it also
      // read to end of stream.
      if (f.sendingDone() && !guestSendShut) {
        guest.shutdown(VsockHeader.SHUTDOWN_SEND);
        guestSendShut = true;
        progress = true;
      }
      if (guestSendShut && toGuest.eof && !guestShut) {
        guest.shutdown(VsockHeader.SHUTDOWN_BOTH);
        guestShut = true;
        progress = true;
      }
      return progress;
    }

    private boolean guestReceive() throws IOException {
      boolean progress = false;
      Flow f = toGuest;
      int n;
      while ((n = guest.read(f.checksumReceived, RECEIVE_MAX)) > 0) {
        f.arrived(n);
        progress = true;
      }
      if (!f.eof
          && (guest.peerShutdownFlags() & VsockHeader.SHUTDOWN_SEND) != 0
          && guest.available() == 0) {
        f.eof = true;
        f.verify(this);
        progress = true;
      }
      return progress;
    }

    private boolean hostSend() throws IOException {
      boolean progress = false;
      Flow f = toGuest;
      // One write(2) per pass (see hostReceive).
      if (!f.sendingDone()) {
        f.noteWriteStart();
        int off = f.writeOffset();
        int n = host.write(hostPattern.slice(off, f.writeRemaining()));
        if (n > 0) {
          f.sentCrc.update(hostPattern.slice(off, n));
          f.sent += n;
          progress = true;
        }
      }
      // The host application half-closes as soon as it sent everything, while the guest's bytes
      // may still be coming (bounce then writes them to a half-closed socket).
      if (f.sendingDone() && !hostOutputShut) {
        host.shutdownOutput();
        hostOutputShut = true;
        progress = true;
      }
      // It closes once the guest's side is gone (every byte it sent has arrived) and it read to end
      // of stream: the guest's reset can overtake the guest's last bytes still on their way here.
      if (hostOutputShut && guestShut && guest.wasReset() && toHost.eof && !hostClosed) {
        closeHost();
        progress = true;
      }
      return progress;
    }

    private boolean hostReceive() throws IOException {
      // One read(2) per pass, as one write(2) in hostSend: the host application is a process of
      // its own, on a core of its own, in the deployed shape. Going round until the socket is full
      // or empty would hold the guest's half of this thread (its harvest, its credit updates)
      // behind a socket's worth of host I/O, which a real guest does not wait for. raw relay's
      // loop in the benchmark makes one of each per pass too.
      Flow f = toHost;
      if (f.eof) return false;
      hostIn.clear();
      int n = host.read(hostIn);
      if (n < 0) {
        f.eof = true;
        f.verify(this);
      } else if (n > 0) {
        hostIn.flip();
        f.receivedCrc.update(hostIn);
        f.arrived(n);
      }
      return n != 0;
    }

    /** Ping-pong: one round trip of {@code size} bytes. */
    boolean pingPong(int offset, int size, byte[] back, long deadline) throws IOException {
      int sent = 0;
      int atHost = 0;
      int echoed = 0;
      int atGuest = 0;
      while (atGuest < size) {
        boolean progress = driver.pump(0);
        if (sent < size) {
          int n = guest.trySend(pattern, offset + sent, size - sent, false);
          toHost.sentCrc.update(pattern, offset + sent, n);
          sent += n;
          toHost.sent += n;
          progress |= n > 0;
        }
        if (atHost < size) {
          hostIn.clear().limit(size - atHost);
          int n = host.read(hostIn);
          if (n < 0) {
            fail("the host connection ended mid-ping-pong");
            return false;
          }
          hostIn.flip();
          toHost.receivedCrc.update(hostIn);
          toHost.received += n;
          atHost += n;
          progress |= n > 0;
        }
        if (echoed < atHost) {
          // The host application answers with the bytes it read (the checksum proves they are
          // the pattern's, so it writes them from there).
          int n = host.write(hostPattern.slice(offset + echoed, atHost - echoed));
          echoed += n;
          progress |= n > 0;
        }
        int n = guest.read(back, atGuest, size - atGuest);
        if (n > 0) {
          atGuest += n;
          progress = true;
        }
        if (guest.wasReset()) {
          fail("reset during ping-pong");
          return false;
        }
        if (System.nanoTime() > deadline) {
          fail(
              "a round trip stalled: "
                  + sent
                  + " sent, "
                  + atHost
                  + " at the host, "
                  + atGuest
                  + " back");
          return false;
        }
        idle(progress);
      }
      toGuest.sent += size;
      toGuest.received += size;
      toGuest.sentCrc.update(pattern, offset, size);
      toGuest.receivedCrc.update(back, 0, size);
      return true;
    }

    /** Ping-pong is over: both sides end the connection as a stream does. */
    void finishSending() {
      toGuest.total = toGuest.sent;
      toHost.total = toHost.sent;
    }
  }
}
