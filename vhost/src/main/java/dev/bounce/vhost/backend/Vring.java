package dev.bounce.vhost.backend;

import dev.bounce.pool.EventFd;
import dev.bounce.vhost.loop.FdWatch;
import dev.bounce.vhost.virtq.SplitQueue;

/**
 * One vring as the engine tracks it: the queue, its three eventfds (or in-band notifications), and
 * the two independent switches of vhost-user.rst ("Starting and stopping rings"): started
 * (SET_VRING_KICK .. GET_VRING_BASE) and enabled (SET_VRING_ENABLE). Only the data loop touches it.
 */
final class Vring {
  final int index;
  final SplitQueue queue;
  EventFd kick;
  EventFd call;
  EventFd err;

  /**
   * SET_VRING_CALL came with the no-fd flag: the driver polls, so used buffers are announced
   * neither by eventfd nor, under INBAND_NOTIFICATIONS, by BACKEND_VRING_CALL (vhost-user.rst).
   */
  boolean callPolled;

  FdWatch kickWatch;
  boolean started;
  boolean enabled;

  /** Whether the device was told {@code queueStarted} and not yet {@code queueStopped}. */
  boolean announced;

  long guestErrors;

  /** Guest errors that were addresses outside the restricted pool (a subset of guestErrors). */
  long poolViolations;

  /** Whether the ring is being polled (kicks suppressed) after it ran dry; see DataPlane. */
  boolean polling;

  /** Whether a poll task is queued on the loop (at most one). */
  boolean pollScheduled;

  /** How long the ring is polled after its last work, and since when. */
  final PollWindow pollWindow;

  Vring(int index, int maxSize, PollWindow pollWindow) {
    this.index = index;
    this.queue = new SplitQueue(index, maxSize);
    this.pollWindow = pollWindow;
  }

  boolean running() {
    return started && enabled && queue.isAttached() && !queue.isBroken();
  }

  void closeFds() {
    if (kickWatch != null) kickWatch.close();
    kickWatch = null;
    if (kick != null) kick.close();
    if (call != null) call.close();
    if (err != null) err.close();
    kick = null;
    call = null;
    err = null;
    callPolled = false;
  }
}
