package dev.bounce.vhost.frontend.hostile;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;

import dev.bounce.pool.NativeException;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.EchoDriver;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.virtq.RingAddresses;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.VarHandle;
import java.time.Duration;

/**
 * A guest whose driver goes bad: a normally negotiated session on fresh guest memory, ring 0 shown
 * to work (a few chains echoed), then written to directly, as a broken or malicious guest would:
 * descriptors with any address, loops, available indices that lie. Afterwards {@link
 * #guestErrorCheck} says whether the backend treated it as ARCHITECTURE.md says a guest error must
 * be treated.
 */
final class Victim implements AutoCloseable {

  /** Chains echoed before the attack: the ring worked, so what follows is the attack's doing. */
  static final int PRIMING_CHAINS = 4;

  /** How long a ring that stopped must stay still after one more kick. */
  private static final Duration STILL = Duration.ofMillis(50);

  final GuestRam ram;
  final FrontendSession session;
  final FrontendSession.Queue queue;
  final DriverQueue ring;
  final RingAddresses rings;
  private final Duration wait;
  private int primedUsed;

  private Victim(GuestRam ram, FrontendSession session, Duration wait) {
    this.ram = ram;
    this.session = session;
    this.queue = session.queue(0);
    this.ring = queue.ring();
    this.rings = ring.guestAddresses();
    this.wait = wait;
  }

  /** Negotiates on fresh memory of {@code guest}; ring 0 gets an err eventfd whatever the style. */
  static Victim open(Hostile.Config config, Hostile.Guest guest) throws IOException {
    GuestRam ram = guest.create();
    try {
      FrontendSession session = Hostile.connect(config, ram);
      try {
        session.channel().setReplyTimeout(config.timeout());
        if (config.handshake() == Handshake.DPDK) {
          // DPDK sends no SET_VRING_ERR; without one a guest error cannot be seen from here.
          FrontendSession.Queue q = session.queue(0);
          session
              .channel()
              .send(FrontendRequest.SET_VRING_ERR, new VringFdIndex(0, false), false, q.err().fd());
          // A round trip, so that the backend has taken it before the ring is driven: kicks
          // reach the backend by another way than the socket and could overtake it.
          session.channel().getU64(FrontendRequest.GET_FEATURES);
        }
        return new Victim(ram, session, config.timeout());
      } catch (IOException | RuntimeException e) {
        session.close();
        throw e;
      }
    } catch (IOException | RuntimeException e) {
      ram.close();
      throw e;
    }
  }

  /** Echoes a few chains on ring 0 (they must all come back right) and notes where used.idx is. */
  Victim prime() throws IOException {
    // Callers open and prime in one resource expression, so a Victim that fails here is closed
    // here: left open, its session would turn every later one away as a second frontend.
    try {
      Stats stats = new EchoDriver(session).run(PRIMING_CHAINS, 256, wait);
      if (stats.operations() != PRIMING_CHAINS || stats.errors() != 0) {
        throw new IOException(
            "the backend did not echo "
                + PRIMING_CHAINS
                + " good chains before the attack ("
                + stats.operations()
                + " echoed, "
                + stats.errors()
                + " errors"
                + (stats.firstError() == null ? "" : ", first: " + stats.firstError())
                + ")");
      }
      primedUsed = usedIndex();
      return this;
    } catch (IOException | RuntimeException e) {
      close();
      throw e;
    }
  }

  /** A guest address the backend may use: the first page after the rings, free after priming. */
  long scratch() {
    return session.ringAreaEnd();
  }

  // ---- the guest's side of ring 0, written directly ----

  /** Posts one descriptor as a chain through the driver (the address is not checked) and kicks. */
  void post(long address, long length, boolean writable) throws NativeException {
    if (ring.add(address, length, writable) == DriverQueue.NO_SPACE) {
      throw new IllegalStateException("ring 0 is full after priming");
    }
    ring.publish();
    kick();
  }

  void writeDescriptor(int index, long address, long length, int flags, int next) {
    writeDescriptor(
        ram.at(rings.descriptorTable() + 16L * index, 16), address, length, flags, next);
  }

  static void writeDescriptor(MemorySegment d, long address, long length, int flags, int next) {
    d.set(LE64, 0, address);
    d.set(LE32, 8, (int) length);
    d.set(LE16, 12, (short) flags);
    d.set(LE16, 14, (short) next);
  }

  /** Puts {@code head} in the next available ring entry and publishes it, as a driver would. */
  void makeAvailable(int head) {
    int idx = ring.availIndex();
    availRing().set(LE16, 4 + 2L * (idx & (ring.size() - 1)), (short) head);
    setAvailIndex(idx + 1);
  }

  /** Stores avail.idx (release), whatever it says. */
  void setAvailIndex(int value) {
    VarHandle.releaseFence();
    availRing().set(LE16, 2, (short) value);
    VarHandle.fullFence();
  }

  int availIndex() {
    return ring.availIndex();
  }

  private MemorySegment availRing() {
    return ram.at(rings.availableRing(), 4 + 2L * ring.size() + 2);
  }

  int usedIndex() {
    return Short.toUnsignedInt(ram.at(rings.usedRing(), 4).get(LE16, 2));
  }

  void kick() throws NativeException {
    queue.kick().signal();
  }

  FrontendChannel channel() {
    return session.channel();
  }

  // ---- what the backend did ----

  /** Whether ring 0's err eventfd was signalled within the wait. */
  boolean awaitError() throws NativeException {
    return queue.err().await((int) wait.toMillis()) > 0;
  }

  /** A check's verdict and its account. */
  record Check(boolean ok, String text) {}

  /**
   * After an attack on ring 0: was the err eventfd signalled, did the ring stop (it completed
   * nothing of the attack and stays still after one more kick; only when {@code touchRing}, as the
   * ring memory may be gone), and did the connection go on (GET_VRING_BASE answered)?
   */
  Check guestErrorCheck(boolean touchRing) throws NativeException {
    boolean signalled = awaitError();
    Check after = afterError(touchRing);
    return new Check(
        signalled && after.ok(),
        (signalled
                ? "err eventfd signalled"
                : "err eventfd NOT signalled within " + wait.toMillis() + " ms")
            + after.text());
  }

  /**
   * What follows an error on ring 0: it stopped (only when {@code touchRing}: it completed nothing
   * of the attack and stays still after one more kick) and the connection goes on (GET_VRING_BASE
   * is answered).
   */
  Check afterError(boolean touchRing) throws NativeException {
    StringBuilder text = new StringBuilder();
    boolean ok = true;
    if (touchRing) {
      int used = usedIndex();
      if (used != primedUsed) {
        ok = false;
        text.append("; the backend completed ")
            .append((used - primedUsed) & 0xffff)
            .append(" chain(s) of the attack");
      }
      kick();
      sleep(STILL);
      int later = usedIndex();
      if (later != used) {
        ok = false;
        text.append("; the ring went on after the error (used.idx ")
            .append(used)
            .append(" -> ")
            .append(later)
            .append(')');
      } else {
        text.append(", ring stopped");
      }
    }
    try {
      int base = session.stop()[0];
      text.append(", connection went on (GET_VRING_BASE answered ").append(base).append(')');
    } catch (IOException e) {
      ok = false;
      text.append("; the connection did not go on: ").append(e.getMessage());
    }
    return new Check(ok, text.toString());
  }

  static void sleep(Duration duration) {
    try {
      Thread.sleep(duration);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  @Override
  public void close() {
    try {
      session.close();
    } finally {
      ram.close();
    }
  }
}
