package dev.bounce.device.vsock;

import dev.bounce.pool.Fd;
import dev.bounce.pool.IoVectors;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.loop.FdWatch;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelOutboundBuffer;
import io.netty.channel.socket.ChannelInputShutdownEvent;
import io.netty.channel.socket.DuplexChannel;
import io.netty.channel.unix.UnixChannel;
import java.lang.System.Logger.Level;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * One vsock stream connection tied to one host Unix-socket channel. Neither side can make the other
 * buffer without bound:
 *
 * <ul>
 *   <li>host to guest: the device reads the socket straight into the guest's receive buffers
 *       ({@link #readInto}, {@link HostReads}) as far as the guest's credit goes; once the socket
 *       is empty, the channel reads the next bytes when they come (auto-read is off), which wakes
 *       the device up. What such a read brought and the guest has no room for yet waits in {@link
 *       #pending} until {@link #writable} says room was freed.
 *   <li>guest to host: a packet's payload goes to the socket with one writev(2) straight from guest
 *       memory ({@link #writeStraight}) while nothing waits before it; what that leaves is copied
 *       into Netty's buffer while the channel is writable (its outbound bytes below {@link
 *       UnixHost#WATER_MARK}), else kept in the connection's ring; when the host stops reading, the
 *       ring fills, the guest's credit runs out and the guest stops sending.
 * </ul>
 *
 * Half-closes map to vsock SHUTDOWN both ways; a channel that dies resets the connection, a
 * connection that dies closes the channel once what the guest sent was flushed.
 *
 * <p>Once the socket's input is shut down (the host application shut down its sending side, or the
 * guest its receiving side), bounce writes the socket itself rather than through Netty: Netty
 * 4.2.18's epoll removes such a socket from its epoll set when it wants no other event, keeps
 * believing it registered, and so fails (resets the connection, or stalls) the first write that has
 * to wait for room, and no longer hears of the host closing for good. What a straight writev(2)
 * leaves goes back to the connection's ring (the device calls readable() again); what a write(2) of
 * a copy leaves waits in {@link #unsent}; to hear of room and of a hang-up, bounce watches a second
 * fd of the same socket (a dup: Netty's registration of the first stays as it is) edge-triggered on
 * its own, from the input's shutdown until the channel closes.
 */
final class StreamBridge extends ChannelInboundHandlerAdapter implements HostSide.HostEndpoint {
  private static final System.Logger LOG = System.getLogger(StreamBridge.class.getName());

  /** Bytes moved to the host per buffer. */
  private static final int CHUNK = 64 * 1024;

  private final UnixHost host;
  private final boolean hostInitiated;
  private VsockConnection connection;
  private Channel channel;
  private ByteBuf pending;
  private ByteBuf unsent;
  private Fd roomFd;
  private FdWatch roomWatch;
  private boolean hostSentEof;
  private boolean socketMayHoldMore;
  private boolean inputShut;
  private boolean outputShut;
  private boolean ended;
  private boolean taking;
  private boolean closing;
  private boolean hostHungUp;
  private ScheduledFuture<?> lingerClose;

  /**
   * @param connection the guest-initiated connection, or null for a host-initiated one (known at
   *     {@link #connected})
   * @param hostInitiated whether to answer {@code OK <host-port>\n} once the guest accepts
   */
  StreamBridge(UnixHost host, VsockConnection connection, boolean hostInitiated) {
    this.host = host;
    this.connection = connection;
    this.hostInitiated = hostInitiated;
  }

  @Override
  public void handlerAdded(ChannelHandlerContext ctx) {
    channel = ctx.channel();
    UnixHost.configure(channel);
  }

  // ---- what the device says (HostEndpoint) ----

  @Override
  public void connected(VsockConnection c) {
    connection = c;
    String ok = "OK " + Integer.toUnsignedString(c.hostPort()) + "\n";
    channel.writeAndFlush(Unpooled.copiedBuffer(ok, StandardCharsets.US_ASCII));
    toHost();
    fromHost();
  }

  @Override
  public void readable(VsockConnection c) {
    toHost();
  }

  @Override
  public void writable(VsockConnection c) {
    fromHost();
  }

  @Override
  public void peerShutdown(VsockConnection c, int flags) {
    if ((flags & VsockHeader.SHUTDOWN_RCV) != 0) {
      // The guest takes nothing more: the host's further writes fail, as on a shut socket.
      releasePending();
      if (channel.isActive()) shutHostInput(); // else once it is (channelActive)
    }
    toHost(); // shuts the channel's output once the guest's last bytes went
  }

  private void shutHostInput() {
    ((DuplexChannel) channel).shutdownInput();
    inputShutDown();
  }

  @Override
  public void closed(VsockConnection c) {
    connection = null;
    ended = true;
    releasePending();
    if (hostInitiated) host.releaseHostPort(c.hostPort());
    if (channel != null) {
      // Ended by the read in takeFrom (the guest's last bytes were taken): its caller still holds
      // them, and closes once it has written them.
      if (!taking) closeWhenFlushed();
      // A host that never reads would keep the channel, its fd and its unsent bytes for ever,
      // outside every connection limit: what it has not taken by then is dropped.
      if (channel.isOpen()) {
        lingerClose =
            channel
                .eventLoop()
                .schedule(() -> channel.close(), host.patience().toMillis(), TimeUnit.MILLISECONDS);
      }
    }
  }

  // ---- what the channel says ----

  @Override
  public void channelActive(ChannelHandlerContext ctx) {
    // A guest's connection, now connected to the host application (a host application's channel
    // was active before its bridge came): the guest gets its RESPONSE.
    if (connection != null) {
      connection.accept();
      // A guest may shut its receiving down before its connect completed (a non-blocking
      // connect(2), then shutdown(SHUT_RD)): peerShutdown could not shut an inactive channel.
      if ((connection.peerShutdownFlags() & VsockHeader.SHUTDOWN_RCV) != 0) shutHostInput();
    }
    toHost();
    fromHost();
  }

  @Override
  public void channelRead(ChannelHandlerContext ctx, Object msg) {
    ByteBuf bytes = (ByteBuf) msg;
    if (ended) {
      bytes.release();
      return;
    }
    // A read that filled its buffer may have left more in the socket (else the socket is empty,
    // and the device would only ask in vain).
    socketMayHoldMore = !bytes.isWritable();
    pending = pending == null ? bytes : merge(ctx, pending, bytes);
    fromHost();
  }

  @Override
  public void userEventTriggered(ChannelHandlerContext ctx, Object event) {
    if (event instanceof ChannelInputShutdownEvent) {
      hostSentEof = true;
      inputShutDown();
      fromHost();
    }
  }

  @Override
  public void channelWritabilityChanged(ChannelHandlerContext ctx) {
    toHost();
  }

  @Override
  public void channelInactive(ChannelHandlerContext ctx) {
    releasePending();
    releaseUnsent();
    stopWatchingForRoom();
    if (lingerClose != null) lingerClose.cancel(false);
    VsockConnection c = connection;
    if (c != null && !c.isClosed()) {
      LOG.log(Level.DEBUG, "vsock: the host socket of " + c + " closed; reset");
      c.reset();
    }
  }

  @Override
  public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
    LOG.log(Level.DEBUG, "vsock: host socket of " + connection + ": " + cause.getMessage());
    ctx.close();
  }

  // ---- moving bytes ----

  /**
   * Host to guest: as much of {@link #pending} as the guest has room for; then the device reads the
   * socket itself when bytes may wait there ({@link #readInto}), or the channel reads when more
   * come.
   */
  private void fromHost() {
    VsockConnection c = connection;
    if (c == null || !c.isOpen() || !channel.isActive()) return;
    if (pending != null) {
      int n =
          c.write(
              NettyMemory.of(pending),
              NettyMemory.offset(pending, pending.readerIndex()),
              pending.readableBytes(),
              false);
      pending.skipBytes(n);
      if (pending.isReadable()) return; // the rest waits for writable()
      releasePending();
    }
    if (hostSentEof) {
      c.shutdown(VsockHeader.SHUTDOWN_SEND);
    } else if (c.writable() > 0) {
      if (socketMayHoldMore) {
        c.bytesWaitAtHost(); // the device reads them straight into the guest's buffers
      } else {
        channel.read();
      }
    }
  }

  @Override
  public int bytesAtHost(VsockConnection c) {
    if (pending != null || hostSentEof || inputShut || !channel.isActive()) return 0;
    int n;
    try {
      n = Libc.bytesReadable(fd());
    } catch (NativeException e) {
      return failed(c, e);
    }
    if (n == 0) readWhenMoreCome();
    return n;
  }

  /**
   * Host to guest without a copy: readv(2) straight into the guest's buffers (the device sized them
   * to what {@link #bytesAtHost} said waits).
   */
  @Override
  public long readInto(VsockConnection c, IoVectors buffers) {
    long n;
    try {
      n = Libc.readv(fd(), buffers);
    } catch (NativeException e) {
      if (e.errno() == Libc.EFAULT) return GUEST_MEMORY_FAULT; // the guest's side, not the socket
      return failed(c, e);
    }
    if (n < buffers.bytes()) readWhenMoreCome(); // WOULD_BLOCK too; at end of stream Netty says so
    return Math.max(n, 0);
  }

  /**
   * Netty reads the next bytes when they come ({@link #channelRead}): the wake-up that tells the
   * device to read again. Meanwhile the device does not.
   */
  private void readWhenMoreCome() {
    socketMayHoldMore = false;
    channel.read();
  }

  private int failed(VsockConnection c, NativeException e) {
    LOG.log(Level.DEBUG, "vsock: host socket of " + c + ": " + e.getMessage());
    channel.eventLoop().execute(channel::close); // not now: the device is filling buffers
    return 0;
  }

  /** From now on bounce writes the socket and watches it itself (see the class comment). */
  private void inputShutDown() {
    if (inputShut) return;
    inputShut = true;
    watchForRoom();
  }

  /** Guest to host: bytes leave the connection only while the channel takes them. */
  private void toHost() {
    VsockConnection c = connection;
    if (c == null || channel == null || !channel.isActive()) return;
    if (inputShut) {
      toHostDirect(c);
    } else {
      toHostThroughNetty(c);
    }
    if (ended) {
      closeWhenFlushed();
      return;
    }
    if (unsent == null
        && !outputShut
        && (c.peerShutdownFlags() & VsockHeader.SHUTDOWN_SEND) != 0
        && c.available() == 0) {
      outputShut = true;
      // Netty's shutdownOutput fails every write the channel still holds (the guest's last bytes
      // when the host reads slower than the guest sends): shut only once the writes before went.
      channel
          .writeAndFlush(Unpooled.EMPTY_BUFFER)
          .addListener(
              f -> {
                if (f.isSuccess() && channel.isActive()) ((DuplexChannel) channel).shutdownOutput();
              });
    }
  }

  private void toHostThroughNetty(VsockConnection c) {
    if (channel.isWritable() && nothingHeldByNetty()) writeStraight(c);
    boolean wrote = false;
    while (channel.isWritable() && c.available() > 0) {
      channel.write(takeFrom(c), channel.voidPromise()); // a failure reaches exceptionCaught
      wrote = true;
    }
    if (wrote) channel.flush();
  }

  /**
   * Guest to host with no copy in bounce: one writev(2) straight from the packet in guest memory
   * ({@link VsockConnection#gatherStaged}). Only while Netty holds nothing for the socket, so that
   * bytes stay in order; what the socket does not take now goes the buffered way. A failed write
   * also leaves the bytes to that way, which reports it (or, on EFAULT, faults in bounce's own
   * copy: a guest memory fault, not the host's).
   */
  private Straight writeStraight(VsockConnection c) {
    IoVectors pieces = host.pieces();
    pieces.clear();
    long gathered = c.gatherStaged(pieces);
    if (gathered == 0) return Straight.NONE;
    long n;
    try {
      n = Math.max(0, Libc.writev(fd(), pieces));
    } catch (NativeException e) {
      n = 0;
    }
    c.tookStaged(gathered, n);
    return n == gathered ? Straight.ALL : Straight.PART;
  }

  /** What {@link #writeStraight} did: nothing to write that way, all of it, or part. */
  private enum Straight {
    NONE,
    ALL,
    PART
  }

  private boolean nothingHeldByNetty() {
    ChannelOutboundBuffer held = channel.unsafe().outboundBuffer();
    return held == null || held.totalPendingWriteBytes() == 0;
  }

  /**
   * Once the socket's input is shut down (see the class comment): one writev(2) straight from guest
   * memory while nothing is held ahead, else write(2) of a copy ({@link #unsent}); both only once
   * what Netty still holds went, so that bytes stay in order.
   */
  private void toHostDirect(VsockConnection c) {
    while (flushUnsent() && c.available() > 0) {
      if (!nothingHeldByNetty()) {
        watchForRoom(); // Netty's writes drain as the socket makes room
        return;
      }
      Straight straight = writeStraight(c);
      // What a straight write left, the device keeps and says so (readable() again); a write that
      // failed is reported by flushUnsent then.
      if (straight == Straight.PART) return;
      if (straight == Straight.NONE) unsent = takeFrom(c);
    }
  }

  /**
   * Up to {@link #CHUNK} of the guest's bytes, taken from the connection (freeing its credit). The
   * connection may end inside (its last bytes taken after the guest's SHUTDOWN): the caller then
   * closes, once the bytes went ({@link #closeWhenFlushed}).
   */
  private ByteBuf takeFrom(VsockConnection c) {
    int want = Math.min(c.available(), CHUNK);
    ByteBuf buf = channel.alloc().directBuffer(want);
    taking = true;
    boolean read = false;
    try {
      int n = c.read(NettyMemory.of(buf), NettyMemory.offset(buf, buf.writerIndex()), want);
      read = true;
      return buf.writerIndex(buf.writerIndex() + n);
    } finally {
      taking = false;
      if (!read) buf.release(); // guest memory faulted under the copy (the ring stops)
    }
  }

  /**
   * The connection ended: the channel closes once every byte of the guest's went, the ones Netty
   * holds and {@link #unsent} (the patience bounds the wait).
   */
  private void closeWhenFlushed() {
    if (closing || !channel.isOpen() || !flushUnsent()) return; // onRoom comes back here
    closing = true;
    channel.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE);
  }

  /**
   * Writes {@link #unsent} straight to the socket.
   *
   * @return whether nothing is left unsent (else the socket is watched for room, or the channel was
   *     closed on a write error)
   */
  private boolean flushUnsent() {
    if (unsent != null && !channel.isOpen()) {
      // Closed: its fd number may already belong to another socket.
      releaseUnsent();
      return false;
    }
    while (unsent != null) {
      long n;
      try {
        n = Libc.write(fd(), NettyMemory.readable(unsent), unsent.readableBytes());
      } catch (NativeException e) {
        LOG.log(Level.DEBUG, "vsock: host socket of " + connection + ": " + e.getMessage());
        channel.close();
        return false;
      }
      if (n == Libc.WOULD_BLOCK) {
        watchForRoom();
        return false;
      }
      unsent.skipBytes((int) n);
      if (!unsent.isReadable()) releaseUnsent();
    }
    return true;
  }

  private int fd() {
    return ((UnixChannel) channel).fd().intValue();
  }

  /**
   * From now until the channel closes, {@link #onRoom} runs whenever the socket may have room
   * (edge-triggered: once now if it has some already, then at each change).
   */
  private void watchForRoom() {
    if (roomWatch != null) return;
    try {
      roomFd = Libc.dup(fd());
    } catch (NativeException e) {
      LOG.log(Level.WARNING, "vsock: host socket of " + connection + ": " + e.getMessage());
      channel.close();
      return;
    }
    try {
      roomWatch = FdWatch.startEdgeTriggered(host.loop(), roomFd, this::onRoom);
    } catch (RuntimeException e) { // epoll_ctl refused (ENOMEM, max_user_watches)
      LOG.log(Level.WARNING, "vsock: host socket of " + connection + ": watching it: " + e);
      roomFd.close();
      roomFd = null;
      channel.close();
    }
  }

  private boolean hungUp() {
    try {
      return Libc.hungUp(fd());
    } catch (NativeException e) {
      return true;
    }
  }

  private void stopWatchingForRoom() {
    if (roomWatch == null) return;
    roomWatch.close();
    roomFd.close(); // the socket's last fd once Netty's is closed: only now does the host see EOF
    roomWatch = null;
    roomFd = null;
  }

  /**
   * The socket may have room, or have hung up: with its input shut down, Netty hears of neither
   * (see the class comment). A host that closed for good resets the connection, as a host socket
   * that fails does, unless bytes it sent are still on their way to the guest: then the guest is
   * told that the host takes nothing more (SHUTDOWN with RCV) after them.
   */
  private void onRoom() {
    if (!channel.isActive()) return;
    VsockConnection c = connection;
    // Once bounce shut the socket's output itself (the guest's SHUTDOWN SEND), the socket reads as
    // hung up as soon as the host half-closes too: not the host closing for good.
    if (!hostHungUp && !outputShut && c != null && hungUp()) {
      hostHungUp = true;
      if (pending == null && c.queuedForGuest() == 0) {
        channel.close(); // channelInactive resets the connection
        return;
      }
      c.shutdown(VsockHeader.SHUTDOWN_RCV);
    }
    if (ended) {
      closeWhenFlushed();
    } else {
      toHost();
    }
  }

  private static ByteBuf merge(ChannelHandlerContext ctx, ByteBuf first, ByteBuf second) {
    ByteBuf merged = ctx.alloc().directBuffer(first.readableBytes() + second.readableBytes());
    merged.writeBytes(first).writeBytes(second);
    first.release();
    second.release();
    return merged;
  }

  private void releaseUnsent() {
    if (unsent != null) {
      unsent.release();
      unsent = null;
    }
  }

  private void releasePending() {
    if (pending != null) {
      pending.release();
      pending = null;
    }
  }
}
