package dev.bounce.vhost.backend;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.RestrictedPool;
import dev.bounce.vhost.loop.FdWatch;
import dev.bounce.vhost.spi.DeviceContext;
import dev.bounce.vhost.spi.LogBudget;
import dev.bounce.vhost.spi.VirtioDevice;
import dev.bounce.vhost.virtq.RingAddresses;
import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.VirtqueueException;
import io.netty.channel.IoEventLoop;
import io.netty.channel.SingleThreadEventLoop;
import java.lang.System.Logger.Level;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.function.IntConsumer;

/**
 * The rings of one device on its data loop: kicks arrive here, the device processes its queues
 * here, and used buffers are published and signalled here, once per batch. The control side (the
 * session) changes rings only through {@link #call}, which runs the change on the data loop between
 * batches and waits for it: GET_VRING_BASE thus answers only once the ring has stopped, and a new
 * memory table is in place before the old one is unmapped.
 */
final class DataPlane implements DeviceContext {
  private static final System.Logger LOG = System.getLogger(DataPlane.class.getName());

  /**
   * Every this many looks at a polled ring that find nothing, the loop's thread offers its core to
   * another thread that waits for one (sched_yield(2); at once back when none does). A polling loop
   * that never yields holds its core for its whole timeslice, and where busy threads outnumber
   * cores (two guests' data loops and their VMM on two cores) the thread it waits for cannot run:
   * guest to guest at 64 KiB went from 0.20 to 0.78 of raw stream. Every look would cost the round
   * trip a syscall's time each way (1.65 to 1.87 of raw); every fourth does not show. Counted per
   * device (a vsock device polls rx and tx), not per loop, which several devices may share.
   */
  private static final int YIELD_EVERY = 4;

  private int emptyPolls; // looks at this device's polled rings that found nothing, for YIELD_EVERY

  /** Rounds of process-then-recheck before yielding the loop to other rings and devices. */
  private static final int MAX_ROUNDS = 16;

  /**
   * Chains a device may pop per round: the used ring is published (and the driver signalled if it
   * asked) at least this often, so that a driver refills while the device goes on, instead of the
   * two taking turns a whole ring at a time (Linux vhost-net publishes every VHOST_NET_BATCH = 64).
   */
  static final int BATCH = 64;

  private final IoEventLoop loop;
  private final VirtioDevice device;
  private final String name;
  private final Vring[] rings;
  private final Runnable[] processTasks;
  private final Runnable[] pollTasks;
  private final Runnable[] pollAfterIo;
  private final Runnable onConfigChanged;
  private final IntConsumer onVringCall;
  private final IntConsumer onVringErr;
  private GuestAddressSpace memory;
  private long features;
  private boolean activated;
  private boolean inBandNotifications;
  private final LogBudget guestLines = new LogBudget();

  /**
   * A ring that ran dry is polled for its {@link PollWindow} (bounds: {@code polling}), kicks still
   * suppressed, before they are re-armed and the loop may sleep. A busy driver refills within
   * microseconds: polling catches that without the kick's eventfd write and the epoll wakeup on
   * each side (Linux vhost-net's busyloop_timeout does the same). Other rings and fds on the loop
   * are served between polls.
   */
  DataPlane(
      IoEventLoop loop,
      VirtioDevice device,
      String name,
      GuestAddressSpace memory,
      RingPolling polling,
      Runnable onConfigChanged,
      IntConsumer onVringCall,
      IntConsumer onVringErr) {
    this.loop = loop;
    this.onConfigChanged = onConfigChanged;
    this.onVringCall = onVringCall;
    this.onVringErr = onVringErr;
    this.device = device;
    this.name = name;
    this.memory = memory;
    this.rings = new Vring[device.queueCount()];
    this.processTasks = new Runnable[rings.length];
    this.pollTasks = new Runnable[rings.length];
    this.pollAfterIo = new Runnable[rings.length];
    for (int i = 0; i < rings.length; i++) {
      Vring ring = new Vring(i, device.maxQueueSize(), new PollWindow(polling));
      rings[i] = ring;
      int index = i;
      processTasks[i] = () -> serve(index);
      pollTasks[i] = () -> poll(ring);
      Runnable queuePoll = () -> loop.execute(pollTasks[index]);
      // Netty runs queued tasks until none is left before it looks at fds again: a poll that
      // queued itself again would starve every socket on this loop (a vsock host socket's reply
      // waited out the whole window). Queued only after the loop's iteration, the next look
      // comes after the next round of I/O.
      pollAfterIo[i] =
          loop instanceof SingleThreadEventLoop l
              ? () -> l.executeAfterEventLoopIteration(queuePoll)
              : queuePoll;
    }
  }

  /** Runs {@code change} on the data loop between batches and returns its result. */
  <T> T call(Callable<T> change) throws Exception {
    if (loop.inEventLoop()) return change.call();
    try {
      return loop.submit(change).get();
    } catch (ExecutionException e) {
      if (e.getCause() instanceof Exception cause) throw cause;
      throw e;
    }
  }

  /** {@link #call} for a change without a result. */
  void run(CheckedRunnable change) throws Exception {
    call(
        () -> {
          change.run();
          return null;
        });
  }

  @FunctionalInterface
  interface CheckedRunnable {
    void run() throws Exception;
  }

  int queueCount() {
    return rings.length;
  }

  // ---- DeviceContext ----

  @Override
  public IoEventLoop dataLoop() {
    return loop;
  }

  @Override
  public long features() {
    return features;
  }

  @Override
  public void process(int index) {
    if (index >= 0 && index < rings.length) loop.execute(processTasks[index]);
  }

  @Override
  public void configChanged() {
    onConfigChanged.run();
  }

  // ---- changes from the control side (on the data loop) ----

  void setFeatures(long acked, boolean enableAll) {
    features = acked;
    for (Vring ring : rings) {
      ring.queue.setFeatures(acked);
      if (enableAll) setEnabled(ring.index, true);
    }
    if (!activated) {
      activated = true;
      device.activate(this);
    }
    // Rings the frontend started and enabled before SET_FEATURES could not be announced while
    // the device was inactive: announce (and serve) them now, or they never run.
    for (Vring ring : rings) update(ring);
  }

  /**
   * SET_FEATURES refused: that driver is not served, even where an earlier one on this connection
   * was (a guest reloading its driver sends SET_FEATURES again, with no reset). The device forgets
   * the old driver, as on a reset; the rings keep their setup and are served again once a driver's
   * features are accepted.
   */
  void deactivate() {
    if (!activated) return;
    activated = false;
    for (Vring ring : rings) update(ring);
    features = 0;
    device.reset();
  }

  /**
   * SET_VRING_NUM, the first message of a ring's setup: a ring a guest error broke starts afresh
   * here (a guest driver that reloads sets its rings up again on the same connection).
   */
  void setSize(int index, int size) {
    requireStopped(index, "SET_VRING_NUM");
    SplitQueue queue = rings[index].queue;
    if (queue.isBroken()) {
      queue.reset();
      queue.setFeatures(features);
    }
    queue.setSize(size);
  }

  void setAddresses(int index, RingAddresses addresses) {
    Vring ring = rings[index];
    ring.queue.setAddresses(addresses);
    if (!ring.started) return;
    // A running ring may be re-addressed (logging on or off). New addresses outside memory are a
    // guest error, as at SET_VRING_KICK: the ring stops, the connection goes on.
    try {
      attach(ring);
    } catch (VirtqueueException e) {
      guestError(ring, e);
    }
  }

  void setBase(int index, int base) {
    requireStopped(index, "SET_VRING_BASE");
    rings[index].queue.setBase(base);
  }

  /** SET_VRING_CALL: a null {@code call} (the no-fd flag) is a driver that polls. */
  void setCall(int index, EventFd call) {
    Vring ring = rings[index];
    if (ring.call != null) ring.call.close();
    ring.call = call;
    ring.callPolled = call == null;
  }

  void setErr(int index, EventFd err) {
    Vring ring = rings[index];
    if (ring.err != null) ring.err.close();
    ring.err = err;
  }

  /**
   * INBAND_NOTIFICATIONS negotiated (or no longer): a ring without a call (error) eventfd announces
   * used buffers (guest errors) with BACKEND_VRING_CALL (ERR) messages.
   */
  void setInBandNotifications(boolean on) {
    inBandNotifications = on;
  }

  /**
   * VRING_KICK: kicks ring {@code index}, and starts it first if it is not running (vhost-user.rst,
   * "Starting and stopping rings": an in-band kick starts a ring as a readable kick eventfd does; a
   * frontend such as Linux UML's never sends SET_VRING_KICK).
   */
  void kickInBand(int index) {
    if (rings[index].started) {
      rings[index].pollWindow.kicked(System.nanoTime());
      process(index);
    } else {
      start(index, null);
    }
  }

  /**
   * SET_VRING_KICK: the ring starts (vhost-user.rst, "Starting and stopping rings"). Rings outside
   * memory are a guest error: reported like any other, the ring stays stopped. A null {@code kick}
   * is a ring the frontend kicks in-band (VRING_KICK, see {@link #process}): no eventfd to watch.
   */
  void start(int index, EventFd kick) {
    Vring ring = rings[index];
    if (ring.kickWatch != null) ring.kickWatch.close();
    if (ring.kick != null) ring.kick.close();
    ring.kick = kick;
    ring.kickWatch = null;
    if (ring.queue.addresses() == null) {
      throw new IllegalStateException("ring " + index + " has no addresses (SET_VRING_ADDR first)");
    }
    try {
      attach(ring);
    } catch (VirtqueueException e) {
      guestError(ring, e);
      return;
    }
    // Each kick is a write of the frontend's, an edge: a kick fd left readable (a semaphore eventfd
    // whose counter the frontend filled) wakes the loop no more than its writes do.
    if (kick != null) {
      ring.kickWatch = FdWatch.startEdgeTriggeredInput(loop, kick.fd(), () -> onKick(ring));
    }
    ring.started = true;
    update(ring);
  }

  /** GET_VRING_BASE: stops the ring and returns the next available index it would have consumed. */
  int stop(int index) {
    Vring ring = rings[index];
    if (ring.kickWatch != null) ring.kickWatch.close();
    ring.kickWatch = null;
    ring.started = false;
    update(ring);
    if (ring.polling) {
      // Stopped inside a poll window: kicks are still suppressed in guest memory, which the
      // ring's next owner (a migration target, another backend) would inherit.
      ring.polling = false;
      try {
        if (ring.queue.isAttached()) ring.queue.enableNotifications();
      } catch (InternalError fault) { // SIGBUS: the frontend truncated the memory; stopping anyway
        LOG.log(Level.DEBUG, "{0}: ring {1}: re-arming kicks: {2}", name, index, fault);
      }
    }
    int base = ring.queue.lastAvailIndex();
    ring.queue.detach();
    return base;
  }

  void setEnabled(int index, boolean enabled) {
    Vring ring = rings[index];
    ring.enabled = enabled;
    update(ring);
  }

  /** A new memory table: every attached ring re-resolves its addresses in it. */
  void replaceMemory(GuestAddressSpace next) {
    memory = next;
    for (Vring ring : rings) {
      if (!ring.queue.isAttached()) continue;
      try {
        attach(ring);
      } catch (VirtqueueException e) {
        guestError(ring, e);
      }
    }
  }

  GuestAddressSpace memory() {
    return memory;
  }

  /** Whether any started ring has a part inside frontend range {@code [start, start + size)}. */
  boolean ringUses(long userStart, long size) {
    for (Vring ring : rings) {
      RingAddresses a = ring.queue.addresses();
      if (!ring.started || a == null) continue;
      for (long address : new long[] {a.descriptorTable(), a.availableRing(), a.usedRing()}) {
        if (Long.compareUnsigned(address - userStart, size) < 0) return true;
      }
    }
    return false;
  }

  /** RESET_DEVICE, RESET_OWNER, or the frontend gone: every ring back to new, the device reset. */
  void reset() {
    for (Vring ring : rings) {
      if (ring.kickWatch != null) ring.kickWatch.close();
      ring.kickWatch = null;
      ring.started = false;
      ring.enabled = false;
      ring.polling = false;
      update(ring);
      ring.closeFds();
      ring.queue.reset();
    }
    features = 0;
    if (activated) device.reset();
    activated = false;
  }

  // ---- the data path ----

  private void onKick(Vring ring) {
    ring.pollWindow.kicked(System.nanoTime());
    try {
      ring.kick.drain();
    } catch (NativeException e) {
      guestLines.log(
          LOG,
          Level.WARNING,
          () -> name + ": ring " + ring.index + ": reading its kick eventfd: " + e);
    }
    serve(ring.index);
  }

  /**
   * Lets the device work on one ring in rounds of at most {@link #BATCH} chains, publishing what it
   * used and signalling the driver (if it asked) after each round. While the device makes progress
   * and more is available, it goes round again; once the ring runs dry it is polled for {@link
   * PollWindow its window} before kicks are re-armed (without polling: re-armed at once, and round
   * again if more arrived meanwhile). A device that takes nothing (a receive queue with nothing to
   * deliver) does not spin.
   */
  private void serve(int index) {
    Vring ring = rings[index];
    try {
      serveRounds(ring);
    } catch (InternalError fault) {
      // The JVM turns SIGBUS on a mapping into InternalError: the frontend truncated the memfd it
      // shared. Escaping, it would end this event loop's thread and every ring on it; it is the
      // frontend's doing, so this ring stops like on any guest error (nothing more is touched).
      guestError(ring, ring.queue.memoryFault(fault));
    }
  }

  private void serveRounds(Vring ring) {
    int index = ring.index;
    for (int round = 0; round < MAX_ROUNDS; round++) {
      // Only a ring the device was told about (queueStarted): a ring can be started and enabled
      // before SET_FEATURES, or without it, while the device is inactive.
      if (!ring.announced || !ring.running()) return;
      int before = ring.queue.lastAvailIndex();
      try {
        ring.queue.limitPops(BATCH);
        device.process(index, ring.queue);
      } catch (VirtqueueException e) {
        publish(ring);
        guestError(ring, e);
        return;
      }
      publish(ring);
      boolean progress = ring.queue.lastAvailIndex() != before;
      if (progress && ring.pollWindow.nanos() > 0) {
        // Busy: look again for more without re-arming kicks; none now, poll for a while.
        if (hasAvailable(ring)) continue;
        if (ring.queue.isBroken()) return;
        startPolling(ring);
        return;
      }
      if (!ring.queue.enableNotifications() || !progress) return;
    }
    loop.execute(processTasks[index]);
  }

  /**
   * {@link dev.bounce.vhost.virtq.SplitQueue#hasAvailable} with a guest error reported as such (the
   * ring stops).
   */
  private boolean hasAvailable(Vring ring) {
    try {
      return ring.queue.hasAvailable();
    } catch (VirtqueueException e) {
      guestError(ring, e);
      return false;
    }
  }

  /**
   * Keeps the driver's kicks suppressed (without EVENT_IDX VIRTQ_USED_F_NO_NOTIFY; with it
   * avail_event simply stays behind) and polls the ring from the loop for its {@link PollWindow}
   * after this, its last work.
   */
  private void startPolling(Vring ring) {
    ring.queue.disableNotifications();
    ring.polling = true;
    ring.pollWindow.opened(System.nanoTime());
    schedulePoll(ring);
  }

  private void schedulePoll(Vring ring) {
    if (ring.pollScheduled) return;
    ring.pollScheduled = true;
    pollAfterIo[ring.index].run();
  }

  /**
   * One look at a polled ring: serves it when the driver made more available; once the window is
   * over, re-arms kicks and re-checks (REAL-PEERS.md: otherwise an entry published meanwhile waits
   * for a kick the driver never sends), and the loop may sleep.
   */
  private void poll(Vring ring) {
    ring.pollScheduled = false;
    if (!ring.polling) return;
    if (!ring.announced || !ring.running()) {
      ring.polling = false;
      return;
    }
    boolean work;
    try {
      if (ring.pollWindow.isOpen(System.nanoTime())) {
        work = hasAvailable(ring);
        if (!work && !ring.queue.isBroken()) {
          if (++emptyPolls % YIELD_EVERY == 0) Thread.yield();
          schedulePoll(ring);
          return;
        }
      } else {
        work = ring.queue.enableNotifications();
        if (!work) ring.pollWindow.closed();
      }
    } catch (InternalError fault) {
      ring.polling = false;
      guestError(ring, ring.queue.memoryFault(fault));
      return;
    }
    ring.polling = false;
    if (work) serve(ring.index);
  }

  private void publish(Vring ring) {
    if (!ring.queue.isAttached()) return;
    ring.queue.publish();
    if (!ring.queue.needsNotification()) return;
    if (ring.call != null) {
      try {
        ring.call.signal();
      } catch (NativeException e) {
        LOG.log(
            Level.WARNING, "{0}: ring {1}: signalling its call eventfd: {2}", name, ring.index, e);
      }
    } else if (inBandNotifications && !ring.callPolled) {
      onVringCall.accept(ring.index);
    }
  }

  /**
   * A guest error: the ring stops, its error eventfd is signalled (or BACKEND_VRING_ERR sent), the
   * count rises, one log line.
   */
  private void guestError(Vring ring, VirtqueueException e) {
    ring.guestErrors++;
    if (e.poolViolation() != null) ring.poolViolations++;
    long errors = ring.guestErrors;
    guestLines.log(
        LOG,
        Level.WARNING,
        () ->
            name
                + ": ring "
                + ring.index
                + " stopped by a guest error ("
                + errors
                + " so far): "
                + e.getMessage());
    update(ring);
    if (ring.err != null) {
      try {
        ring.err.signal();
      } catch (NativeException signalFailed) {
        LOG.log(
            Level.WARNING,
            "{0}: ring {1}: signalling its error eventfd: {2}",
            name,
            ring.index,
            signalFailed);
      }
    } else if (inBandNotifications) {
      onVringErr.accept(ring.index);
    }
  }

  /** The restricted-DMA figures so far; on the data loop. */
  DmaMetrics dmaMetrics() {
    long poolSize =
        memory instanceof RestrictedPool pool && pool.mapped().regionCount() > 0 ? pool.size() : 0;
    long peak = 0;
    List<Long> violations = new ArrayList<>(rings.length);
    for (Vring ring : rings) {
      peak += ring.queue.peakBytesInFlight();
      violations.add(ring.poolViolations);
    }
    return new DmaMetrics(poolSize, peak, violations);
  }

  private void attach(Vring ring) throws VirtqueueException {
    boolean resumed;
    try {
      resumed = ring.queue.attach(memory); // reads used.idx: a truncated memfd faults here too
    } catch (InternalError fault) {
      throw ring.queue.memoryFault(fault);
    }
    if (resumed) {
      LOG.log(
          Level.INFO,
          "{0}: ring {1}: the frontend set base {2} but the used ring is at {3}; resuming from the"
              + " used ring (a reconnecting DPDK frontend does this)",
          name,
          String.valueOf(ring.index),
          String.valueOf(ring.queue.requestedBase()),
          String.valueOf(ring.queue.lastAvailIndex()));
    }
  }

  /** Tells the device when a ring starts or stops running, and kicks off work when it starts. */
  private void update(Vring ring) {
    boolean running = ring.running() && activated;
    if (running && !ring.announced) {
      ring.announced = true;
      device.queueStarted(ring.index, ring.queue);
      serve(ring.index);
    } else if (!running && ring.announced) {
      ring.announced = false;
      // Stopped, reset, broken by the guest or its driver gone: whoever runs the ring next has
      // pauses of its own.
      ring.pollWindow.reset();
      device.queueStopped(ring.index);
    }
  }

  private void requireStopped(int index, String request) {
    if (rings[index].started) {
      throw new IllegalStateException(
          request + " on ring " + index + " while it runs (GET_VRING_BASE stops it first)");
    }
  }

  /** Closes every ring's fds; the device is reset. Called once the session is over. */
  void close() {
    reset();
  }
}
