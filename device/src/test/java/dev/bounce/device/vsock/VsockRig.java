package dev.bounce.device.vsock;

import static dev.bounce.pool.LittleEndian.LE16;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import io.netty.channel.IoEventLoop;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;

/**
 * A vsock device served by the real engine on a real socket, with the fake frontend and {@link
 * VsockDriver} on the other end: what every vsock test starts from.
 */
final class VsockRig implements AutoCloseable {
  static final long GUEST_CID = 3;
  static final long RAM_START = 0x4000_0000L;
  static final long RAM_SIZE = 64L << 20;

  /** Builds the host side on the data loop the device will be served on. */
  @FunctionalInterface
  interface HostFactory {
    HostSide create(IoEventLoop dataLoop) throws Exception;
  }

  final EventLoops loops;
  final HostSide host;
  final VsockDevice device;
  final Path socket;
  final BackendServer server;
  final GuestRam ram;
  final FrontendSession session;
  final VsockDriver driver;

  /** Where guest memory is and what bounce is told about it (restricted DMA, issue 7). */
  record Memory(MemoryMode mode, long poolStart, long poolSize, RestrictedDma dma) {
    /** All guest RAM shared, no pool: QEMU's share=on. */
    static final Memory SHARED = new Memory(MemoryMode.SHARED, 0, 0, RestrictedDma.OFF);
  }

  VsockRig(Path dir, int queueSize, int bufferSize, int maxConnections, HostFactory hostFactory)
      throws Exception {
    this(
        dir,
        queueSize,
        bufferSize,
        maxConnections,
        hostFactory,
        Memory.SHARED,
        Siblings.alone(GUEST_CID));
  }

  /**
   * A guest of {@code siblings}' registry, with its CID, on event loops of its own; its vhost-user
   * socket is {@code vsock-<cid>.sock} in {@code dir}, which several guests can share.
   */
  VsockRig(
      Path dir,
      int queueSize,
      int bufferSize,
      int maxConnections,
      HostFactory hostFactory,
      Memory memory,
      Siblings.Member siblings)
      throws Exception {
    long cid = siblings.cid();
    loops = new EventLoops(2, "vsock-test");
    try {
      IoEventLoop control = loops.next();
      IoEventLoop data = loops.next();
      host = hostFactory.create(data);
      device = new VsockDevice(cid, bufferSize, maxConnections, 1024, host, siblings);
      socket = dir.resolve("vsock-" + cid + ".sock");
      server =
          BackendServer.listen(
              socket, new BackendServer.Config("vsock", device, control, data, memory.dma()));
      ram =
          GuestRam.create(
              memory.mode(), RAM_START, RAM_SIZE, memory.poolStart(), memory.poolSize());
      // A guest that bounces through a pool keeps the restricted-DMA contract (bit 27).
      long restricted =
          memory.mode() == MemoryMode.SHARED
              ? 0
              : VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA);
      session =
          FrontendSession.connect(
              socket,
              ram,
              VsockDriver.options(Handshake.QEMU, queueSize).withDriverFeatures(restricted));
      driver = new VsockDriver(session, cid, bufferSize);
      driver.pump(0);
    } catch (Exception | Error e) {
      close();
      throw e;
    }
  }

  /** How long {@link #sendUntilStalled} waits for any one step before it fails. */
  static final Duration STALL_TIMEOUT = Duration.ofSeconds(20);

  /**
   * Sends {@code data} on {@code s} in writes of at most {@code chunk} bytes until it is all sent
   * or the connection stalled, pumping {@code driver}. Stalled means no credit as the device counts
   * it once it has processed every byte sent ({@link VsockDriver.Socket#settledCredit}), not a
   * quiet spell: a device that is merely slow (a busy machine) would look stalled after one, and
   * would then take more bytes or give more credit after all.
   *
   * @return the bytes sent
   */
  static int sendUntilStalled(VsockDriver driver, VsockDriver.Socket s, byte[] data, int chunk)
      throws IOException {
    int sent = 0;
    long deadline = System.nanoTime() + STALL_TIMEOUT.toNanos();
    while (sent < data.length) {
      int n = s.trySend(data, sent, Math.min(chunk, data.length - sent), false);
      sent += n;
      if (n > 0) {
        deadline = System.nanoTime() + STALL_TIMEOUT.toNanos();
        driver.pump(0);
        continue;
      }
      if (s.credit() == 0 && s.settledCredit(STALL_TIMEOUT) == 0) break;
      if (System.nanoTime() > deadline) {
        throw new AssertionError(
            "sent " + sent + " bytes, then neither more nor a stall (credit " + s.credit() + ")");
      }
      driver.pump(5); // the tx queue or the guest's buffers are full: wait for the device
    }
    return sent;
  }

  /**
   * Sends {@code data} on {@code s} and reads what comes back at the same time, as far as credit
   * allows, pumping {@code driver}; fails when nothing moves for {@code timeout}.
   */
  static byte[] echo(VsockDriver driver, VsockDriver.Socket s, byte[] data, Duration timeout)
      throws IOException {
    ByteArrayOutputStream back = new ByteArrayOutputStream();
    byte[] chunk = new byte[8192];
    int sent = 0;
    long deadline = System.nanoTime() + timeout.toNanos();
    while (back.size() < data.length) {
      boolean progress = false;
      if (sent < data.length) {
        int n = s.trySend(data, sent, Math.min(data.length - sent, 32 * 1024), false);
        sent += n;
        progress |= n > 0;
      }
      int got = s.read(chunk, 0, chunk.length);
      back.write(chunk, 0, got);
      progress |= got > 0;
      if (!progress) {
        if (System.nanoTime() > deadline) {
          throw new AssertionError("stalled: sent " + sent + ", back " + back.size());
        }
        driver.pump(10);
      }
    }
    return back.toByteArray();
  }

  /** Waits until the device has taken every packet {@code driver} sent. */
  static void awaitTxTaken(VsockDriver driver, Duration timeout) throws IOException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (!driver.txIdle()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("the device did not take what was sent");
      }
      driver.pump(10);
    }
  }

  // ---- a frontend that breaks the rules, and restarts rings ----

  /**
   * Stops ring {@code index} as a VMM does (GET_VRING_BASE): the available index bounce stopped at,
   * the first chain it did not consume.
   */
  int stopRing(int index) throws IOException {
    try (Message<FrontendRequest> reply =
        session.channel().call(FrontendRequest.GET_VRING_BASE, new VringState(index, 0))) {
      return (int) reply.payload(VringState.class).num();
    }
  }

  /**
   * Sets stopped ring {@code index} up again at {@code base}, as a guest driver does that restarts
   * it after an error (SET_VRING_NUM starts a broken ring afresh): bounce serves it again.
   */
  void startRing(int index, int base) throws IOException {
    FrontendSession.Queue q = session.queue(index);
    FrontendChannel channel = session.channel();
    channel.send(FrontendRequest.SET_VRING_NUM, new VringState(index, q.ring().size()), false);
    channel.send(FrontendRequest.SET_VRING_BASE, new VringState(index, base), false);
    channel.send(FrontendRequest.SET_VRING_ADDR, q.ring().vringAddress(), false);
    channel.send(
        FrontendRequest.SET_VRING_KICK, new VringFdIndex(index, false), false, q.kick().fd());
  }

  /** Waits up to {@code timeout} for bounce to signal ring {@code index}'s error eventfd. */
  void awaitRingError(int index, Duration timeout) throws NativeException {
    EventFd err = session.queue(index).err();
    if (!Libc.pollIn(err.fd().value(), (int) timeout.toMillis())) {
      throw new AssertionError(
          "ring " + index + "'s error eventfd was not signalled within " + timeout);
    }
    err.drain();
  }

  /** Whether bounce signalled ring {@code index}'s error eventfd (without waiting). */
  boolean ringErrorSignalled(int index) throws NativeException {
    return Libc.pollIn(session.queue(index).err().fd().value(), 0);
  }

  /**
   * Cuts the guest RAM memfd at guest address {@code end}, as a frontend that truncates the memory
   * it shared (both mappings stay; their pages past the end fault), or with {@code end} at the end
   * of RAM gives the memory back, zeroed. Whatever lies past {@code end} must not be touched
   * meanwhile, by the driver either (same process): the rings lie below {@link
   * FrontendSession#ringAreaEnd()}, the driver's buffers above it.
   */
  void truncateRamAt(long end) throws NativeException {
    for (GuestRam.SharedRegion r : ram.sharedRegions()) {
      try {
        Libc.ftruncate(r.fd().value(), end - r.description().guestAddress());
      } finally {
        r.fd().close();
      }
    }
  }

  /**
   * The head of the chain the driver made available on ring {@code index} {@code ahead} entries
   * after the last one it harvested: when every chain the device consumed came back and was
   * harvested, {@code ahead} 0 is the next chain the device pops.
   */
  int availableHead(int index, int ahead) {
    DriverQueue ring = session.queue(index).ring();
    int entry = (ring.lastUsedIndex() + ahead) & (ring.size() - 1);
    long at = ring.guestAddresses().availableRing() + 4 + 2L * entry;
    return Short.toUnsignedInt(ram.at(at, 2).get(LE16, 0));
  }

  /** Descriptor {@code head} of ring {@code index} in guest memory: le64 addr, le32 len, ... */
  MemorySegment descriptor(int index, int head) {
    return ram.at(session.queue(index).ring().guestAddresses().descriptorTable() + 16L * head, 16);
  }

  @Override
  public void close() {
    if (session != null) session.close();
    if (ram != null) ram.close();
    if (server != null) server.close();
    if (host instanceof AutoCloseable c) {
      try {
        c.close();
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    }
    loops.close();
  }
}
