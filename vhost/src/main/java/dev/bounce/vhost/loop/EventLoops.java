package dev.bounce.vhost.loop;

import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.util.concurrent.DefaultThreadFactory;
import java.util.concurrent.TimeUnit;

/**
 * A group of Netty epoll loops (threads). bounce registers raw fds on them (the listening socket,
 * the vhost-user sockets, kick eventfds) through {@link FdWatch}; Netty's channels serve the host
 * sockets of the devices.
 */
public final class EventLoops implements AutoCloseable {
  private final MultiThreadIoEventLoopGroup group;

  /**
   * @param threads how many loop threads
   * @param name the thread name prefix, seen in thread dumps and logs
   */
  public EventLoops(int threads, String name) {
    Epoll.ensureAvailability();
    this.group =
        new MultiThreadIoEventLoopGroup(
            threads, new DefaultThreadFactory(name, true), EpollIoHandler.newFactory());
  }

  /** The next loop, round-robin. */
  public IoEventLoop next() {
    return group.next();
  }

  public MultiThreadIoEventLoopGroup group() {
    return group;
  }

  /** Stops every loop, waiting up to a few seconds for the tasks already queued. */
  @Override
  public void close() {
    group.shutdownGracefully(0, 3, TimeUnit.SECONDS).syncUninterruptibly();
  }
}
