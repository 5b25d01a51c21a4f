package dev.bounce.device.vsock;

import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.socket.ChannelInputShutdownEvent;
import io.netty.handler.codec.LineBasedFrameDecoder;
import io.netty.handler.codec.TooLongFrameException;
import java.lang.System.Logger.Level;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * The first line a host application sends on {@code <uds-path>}: {@code CONNECT <port>\n}, as
 * vhost-device-vsock and Firecracker take it. Once read, this handler and the line decoder leave
 * the pipeline to a {@link StreamBridge}; bytes sent after the line go to the guest unchanged. A
 * bad line, an over-long one, or none within the host's patience closes the socket with a log line.
 */
final class ConnectRequest extends ChannelInboundHandlerAdapter {
  private static final System.Logger LOG = System.getLogger(ConnectRequest.class.getName());

  /** "CONNECT 4294967295" is 18 bytes; room for spaces, never for a flood. */
  static final int MAX_LINE = 64;

  private final UnixHost host;
  private ScheduledFuture<?> timeout;
  private boolean answered;
  private boolean admitted;

  private ConnectRequest(UnixHost host) {
    this.host = host;
  }

  static void install(Channel channel, UnixHost host) {
    UnixHost.configure(channel);
    channel
        .pipeline()
        .addLast("line", new LineBasedFrameDecoder(MAX_LINE, true, true))
        .addLast("connect", new ConnectRequest(host));
  }

  @Override
  public void channelActive(ChannelHandlerContext ctx) {
    if (!host.admitConnectRequest()) {
      ctx.close();
      return;
    }
    admitted = true;
    timeout =
        ctx.executor()
            .schedule(
                () -> refuse(ctx, "sent no CONNECT line within " + host.patience()),
                host.patience().toMillis(),
                TimeUnit.MILLISECONDS);
    ctx.read();
  }

  @Override
  public void channelRead(ChannelHandlerContext ctx, Object msg) {
    String line;
    ByteBuf buf = (ByteBuf) msg;
    try {
      line = buf.toString(StandardCharsets.US_ASCII);
    } finally {
      buf.release();
    }
    // Lines already read after a refused request are not requests: the socket is closing.
    if (answered) return;
    answered = true;
    timeout.cancel(false);
    release();
    long port = guestPort(line);
    if (port < 0) {
      refuse(ctx, "sent '" + printable(line) + "' instead of 'CONNECT <port>'");
      return;
    }
    StreamBridge bridge = new StreamBridge(host, null, true);
    VsockConnection c = host.hostConnect((int) port, VsockHeader.TYPE_STREAM, bridge);
    if (c == null) {
      ctx.close();
      return;
    }
    // Bytes after the line, already read, reach the bridge as the decoder leaves.
    ctx.pipeline().replace(this, "bridge", bridge);
    ctx.pipeline().remove("line");
  }

  @Override
  public void channelReadComplete(ChannelHandlerContext ctx) {
    if (!answered) ctx.read(); // still waiting for the whole line
  }

  @Override
  public void userEventTriggered(ChannelHandlerContext ctx, Object event) {
    if (event instanceof ChannelInputShutdownEvent) refuse(ctx, "closed before a CONNECT line");
  }

  @Override
  public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
    refuse(
        ctx,
        cause instanceof TooLongFrameException
            ? "sent a first line longer than " + MAX_LINE + " bytes instead of 'CONNECT <port>'"
            : "failed: " + cause.getMessage());
  }

  @Override
  public void channelInactive(ChannelHandlerContext ctx) {
    if (timeout != null) timeout.cancel(false);
    release();
  }

  /** This application no longer counts as owing a CONNECT request. */
  private void release() {
    if (admitted) {
      admitted = false;
      host.connectRequestDone();
    }
  }

  private void refuse(ChannelHandlerContext ctx, String what) {
    if (timeout != null) timeout.cancel(false);
    release();
    LOG.log(Level.INFO, "vsock: a host application at " + host.udsPath() + " " + what + "; closed");
    ctx.close();
  }

  /**
   * The port of a {@code CONNECT <port>} line (vsock ports are u32), or -1. Read as
   * vhost-device-vsock and Firecracker read it, for their host applications: the word in any case,
   * and words after the port ignored.
   */
  static long guestPort(String line) {
    String[] words = line.trim().split("\\s+");
    if (words.length < 2 || !words[0].equalsIgnoreCase("CONNECT")) return -1;
    try {
      return Integer.parseUnsignedInt(words[1]) & 0xffff_ffffL;
    } catch (NumberFormatException e) {
      return -1;
    }
  }

  private static String printable(String line) {
    String cut = line.length() > MAX_LINE ? line.substring(0, MAX_LINE) : line;
    return cut.replaceAll("[^\\x20-\\x7e]", "?");
  }
}
