package dev.bounce.vhost.loop;

import dev.bounce.pool.Fd;
import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.epoll.EpollIoEvent;
import io.netty.channel.epoll.EpollIoHandle;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;

/**
 * Watches a raw fd for readability on one Netty epoll loop (level-triggered) and runs a callback
 * there. Netty's domain-socket channels cannot receive bytes together with several fds, so bounce
 * registers its fds as raw handles and does the I/O itself through FFM.
 *
 * <p>The watch never closes the fd: its owner does, after {@link #close()}.
 */
public final class FdWatch implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(FdWatch.class.getName());

  /**
   * What runs on the loop when the fd is readable (or has hung up or failed: the read will say), or
   * for an edge-triggered watch, writable.
   */
  @FunctionalInterface
  public interface Readable {
    void onReadable();
  }

  private final IoEventLoop loop;
  private final IoRegistration registration;

  private FdWatch(IoEventLoop loop, IoRegistration registration) {
    this.loop = loop;
    this.registration = registration;
  }

  /**
   * Registers {@code fd} on {@code loop} and starts watching; blocks until registered unless called
   * on the loop itself.
   */
  public static FdWatch start(IoEventLoop loop, Fd fd, Readable callback) {
    return start(loop, fd, callback, EpollIoOps.EPOLLIN);
  }

  /**
   * Watches {@code fd} edge-triggered for readability only: {@code callback} runs when input comes,
   * not while some stays. For a peer's eventfd, which makes an edge at each of the peer's writes:
   * in semaphore mode (EFD_SEMAPHORE) a read takes only 1 from the counter, so level-triggered, a
   * counter the peer filled would wake the loop about 2^64 times.
   */
  public static FdWatch startEdgeTriggeredInput(IoEventLoop loop, Fd fd, Readable callback) {
    return start(loop, fd, callback, EpollIoOps.EPOLLIN.with(EpollIoOps.EPOLLET));
  }

  /**
   * Watches {@code fd} edge-triggered for readability and writability both: {@code callback} runs
   * whenever either may have changed (or the peer hung up) and must then go as far as it can in
   * both directions, since the edge will not come again. For sockets whose owner pauses reading
   * (when its consumer has no room) or waits for room to write: level-triggered, a paused readable
   * fd would wake the loop again and again.
   */
  public static FdWatch startEdgeTriggered(IoEventLoop loop, Fd fd, Readable callback) {
    return start(
        loop,
        fd,
        callback,
        EpollIoOps.EPOLLIN
            .with(EpollIoOps.EPOLLOUT)
            .with(EpollIoOps.EPOLLRDHUP)
            .with(EpollIoOps.EPOLLET));
  }

  private static FdWatch start(IoEventLoop loop, Fd fd, Readable callback, EpollIoOps ops) {
    Handle handle = new Handle(new FileDescriptor(fd.value()), callback);
    IoRegistration registration = loop.register(handle).syncUninterruptibly().getNow();
    try {
      registration.submit(ops); // epoll_ctl: fails with ENOMEM or past max_user_watches
    } catch (RuntimeException e) {
      // Netty keeps a registration whose epoll_ctl failed, keyed by the fd number; the next fd
      // to get that number (the caller closes this one) would meet it.
      registration.cancel();
      throw e;
    }
    return new FdWatch(loop, registration);
  }

  /** Stops watching. Safe from any thread, and more than once. */
  @Override
  public void close() {
    if (loop.inEventLoop()) {
      registration.cancel();
    } else if (!loop.isShuttingDown()) {
      loop.submit(registration::cancel).syncUninterruptibly();
    }
  }

  private record Handle(FileDescriptor fd, Readable callback) implements EpollIoHandle {
    @Override
    public void handle(IoRegistration registration, IoEvent event) {
      EpollIoOps ops = ((EpollIoEvent) event).ops();
      if (ops.contains(EpollIoOps.EPOLLIN)
          || ops.contains(EpollIoOps.EPOLLOUT)
          || ops.contains(EpollIoOps.EPOLLERR)
          || ops.contains(EpollIoOps.EPOLLRDHUP)) {
        try {
          callback.onReadable();
        } catch (RuntimeException e) {
          // A bug in a callback must not end the loop and every ring and session on it: say so
          // loudly, stop watching this fd (a level-triggered fd would fail again at once), go on.
          LOG.log(
              System.Logger.Level.ERROR,
              "bug: a callback on " + fd + " threw; no longer watching it, the loop goes on",
              e);
          registration.cancel();
        }
      }
    }

    /** Called by Netty when the registration ends; the fd belongs to someone else. */
    @Override
    public void close() {}
  }
}
