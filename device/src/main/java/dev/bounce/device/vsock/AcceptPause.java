package dev.bounce.device.vsock;

import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * On the host stream listener: an accept(2) that fails (out of fds, say) leaves the connection in
 * the backlog, so the listener stays readable and would wake the loop at once, for ever. It stops
 * reading for a second, as {@link SeqpacketHost} does, and says so in bounce's words. Netty's own
 * acceptor would pause too, but then hand the error on to the pipeline's end, which logs it as
 * unhandled.
 */
@ChannelHandler.Sharable
final class AcceptPause extends ChannelInboundHandlerAdapter {
  private static final System.Logger LOG = System.getLogger(AcceptPause.class.getName());

  /** How long a host listener stops accepting after accept(2) failed. */
  static final long PAUSE_MILLIS = 1000;

  private final Path listener;

  AcceptPause(Path listener) {
    this.listener = listener;
  }

  /** The line either host listener logs when accept(2) fails and it pauses. */
  static void logPause(Object listener, String why) {
    LOG.log(
        Level.WARNING,
        "vsock: accepting at "
            + listener
            + ": "
            + why
            + "; pausing for "
            + PAUSE_MILLIS / 1000
            + " s");
  }

  @Override
  public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
    logPause(listener, cause.getMessage());
    ctx.channel().config().setAutoRead(false);
    ctx.executor()
        .schedule(
            () -> ctx.channel().config().setAutoRead(true), PAUSE_MILLIS, TimeUnit.MILLISECONDS);
  }
}
