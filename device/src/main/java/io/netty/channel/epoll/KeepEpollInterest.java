package io.netty.channel.epoll;

import io.netty.channel.Channel;
import java.io.IOException;

/**
 * A workaround, in Netty's package because it needs {@code AbstractEpollChannel.setFlag}, for an
 * epoll bug of Netty 4.2.18 (the newest with a linux-x86_64 native jar in our registry).
 *
 * <p>When a channel's interest set becomes empty, Netty deletes its fd from epoll (since
 * netty/netty#16689) but still counts it as added, so the next change of interest is an
 * EPOLL_CTL_MOD that fails with ENOENT. bounce's vsock host side meets this whenever a host
 * application shuts down its sending side (EPOLLIN and EPOLLRDHUP are cleared) and bounce then has
 * to wait for room to write to it (EPOLLOUT): the channel never hears it is writable again and the
 * guest's bytes stall. Keeping EPOLLPRI, which a Unix stream socket never signals, in the set means
 * it is never empty. Remove this class when Netty is upgraded to a release without the bug ({@code
 * UnixHostTest.aHostThatHalfClosesStillReceivesEverythingTheGuestSends} tells).
 */
public final class KeepEpollInterest {
  /** EPOLLPRI: urgent data, which AF_UNIX sockets never have. */
  private static final int EPOLLPRI = 0x002;

  private KeepEpollInterest() {}

  /** Call before {@code channel} is registered, or on its loop. */
  public static void on(Channel channel) {
    if (channel instanceof AbstractEpollChannel epoll) {
      try {
        epoll.setFlag(EPOLLPRI);
      } catch (IOException e) {
        throw new IllegalStateException("epoll_ctl on " + channel + ": " + e.getMessage(), e);
      }
    }
  }
}
