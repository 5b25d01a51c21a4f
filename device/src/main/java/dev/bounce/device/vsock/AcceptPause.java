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
  static final long PAUSE_MILLIS = 1000;

  private final Path listener;

  AcceptPause(Path listener) {
    this.listener = listener;
  }

  @Override
  public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
    LOG.log(
        Level.WARNING,
        "vsock: accepting at " + listener + ": " + cause.getMessage() + "; pausing for 1 s");
    ctx.channel().config().setAutoRead(false);
    ctx.executor()
        .schedule(
            () -> ctx.channel().config().setAutoRead(true), PAUSE_MILLIS, TimeUnit.MILLISECONDS);
  }
}
