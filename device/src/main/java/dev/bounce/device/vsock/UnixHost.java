package dev.bounce.device.vsock;

import dev.bounce.pool.IoVectors;
import dev.bounce.vhost.socket.UnixListener;
import io.netty.bootstrap.Bootstrap;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.FixedRecvByteBufAllocator;
import io.netty.channel.IoEventLoop;
import io.netty.channel.WriteBufferWaterMark;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * The hybrid-vsock host side of vhost-device-vsock and Firecracker, over Unix sockets:
 *
 * <ul>
 *   <li>A host application connects to {@code <uds-path>}, writes {@code CONNECT <port>\n} and,
 *       once the guest listener on that port accepted, reads {@code OK <host-port>\n}; then bytes
 *       flow. A refused or malformed request closes the socket without a reply.
 *   <li>A guest connecting to host port P reaches the Unix socket {@code <uds-path>_<P>}; nothing
 *       listening there means RST to the guest and a log line.
 *   <li>SEQPACKET connections use SOCK_SEQPACKET sockets at the same names and at {@code
 *       <uds-path>.seqpacket} ({@link SeqpacketHost}).
 * </ul>
 *
 * <p>Every socket is a Netty channel on the device's data loop, so the host side and the device
 * never need a lock; {@link StreamBridge} ties one channel to one {@link VsockConnection} so that
 * channel writability and vsock credit drive each other.
 */
public final class UnixHost implements HostSide, AutoCloseable {
  private static final System.Logger LOG = System.getLogger(UnixHost.class.getName());

  /** Host ports for host-initiated connections, as Firecracker allocates them: from 2^30 up. */
  static final int FIRST_HOST_PORT = 1 << 30;

  /** What {@link #patience()} is unless a test asks for less. */
  static final Duration DEFAULT_PATIENCE = Duration.ofSeconds(10);

  /**
   * Host applications connected but not yet past their CONNECT request: each holds an fd and a
   * timer until then, so there may not be more than this many at once.
   */
  static final int MAX_AWAITING_CONNECT = 128;

  /** Outbound bytes a host channel may hold before the guest's side of it stops being read. */
  static final WriteBufferWaterMark WATER_MARK = new WriteBufferWaterMark(32 * 1024, 128 * 1024);

  /**
   * What one read of a host stream channel takes at most. The device reads host sockets straight
   * into the guest's buffers ({@link HostReads}); the channel reads only to hear that bytes came
   * after a socket ran empty, and what it takes goes the longer way (copied into the connection's
   * ring, then into a buffer): small, so that the rest of a burst is left for the device.
   */
  static final int WAKE_UP_READ = 2048;

  /**
   * How every host stream channel runs: it reads only when asked, and little ({@link
   * #WAKE_UP_READ}), a host half-close is a vsock SHUTDOWN rather than the end, and its outbound
   * bytes are bounded.
   */
  static void configure(Channel channel) {
    channel.config().setAutoRead(false);
    channel.config().setRecvByteBufAllocator(new FixedRecvByteBufAllocator(WAKE_UP_READ));
    channel.config().setOption(ChannelOption.ALLOW_HALF_CLOSURE, true);
    channel.config().setWriteBufferWaterMark(WATER_MARK);
  }

  private final Path udsPath;
  private final IoEventLoop loop;
  private final Channel listener;
  private SeqpacketHost seqpacket;
  // The host ports of host-initiated connections, each with the timer that resets it if the guest
  // does not answer: cancelled when the connection ends, so that it does not keep the ended
  // connection (and its buffers, grown up to --tx-buffer-size each way) for the whole patience.
  private final Map<Integer, ScheduledFuture<?>> hostPortsInUse = new HashMap<>();
  private int nextHostPort = FIRST_HOST_PORT;
  private int awaitingConnect;
  private final Duration patience;
  private final IoVectors pieces = new IoVectors(16);
  private VsockDevice device;

  private UnixHost(Path udsPath, IoEventLoop loop, Channel listener, Duration patience) {
    this.udsPath = udsPath;
    this.loop = loop;
    this.listener = listener;
    this.patience = patience;
  }

  /**
   * Listens at {@code udsPath} (and {@code udsPath.seqpacket}) on {@code loop}, which must be the
   * data loop the device is served on.
   *
   * @throws IOException when the path is taken by something other than a stale socket
   */
  public static UnixHost listen(Path udsPath, IoEventLoop loop) throws IOException {
    return listen(udsPath, loop, DEFAULT_PATIENCE);
  }

  /**
   * {@link #listen(Path, IoEventLoop)} with {@code patience}: how long a host application may take
   * to send its CONNECT request, a guest to answer it, and a closed connection's channel to deliver
   * the guest's last bytes.
   */
  public static UnixHost listen(Path udsPath, IoEventLoop loop, Duration patience)
      throws IOException {
    UnixListener.removeStale(udsPath);
    UnixHost[] self = new UnixHost[1];
    ChannelFuture bound =
        new ServerBootstrap()
            .group(loop)
            .channel(EpollServerDomainSocketChannel.class)
            .handler(new AcceptPause(udsPath))
            .childHandler(
                new ChannelInitializer<Channel>() {
                  @Override
                  protected void initChannel(Channel ch) {
                    ConnectRequest.install(ch, self[0]);
                  }
                })
            .bind(new DomainSocketAddress(udsPath.toString()))
            .awaitUninterruptibly();
    if (!bound.isSuccess()) {
      throw new IOException("cannot listen at " + udsPath + ": " + bound.cause(), bound.cause());
    }
    self[0] = new UnixHost(udsPath, loop, bound.channel(), patience);
    try {
      self[0].seqpacket = SeqpacketHost.listen(self[0], SeqpacketHost.pathFor(udsPath), loop);
    } catch (IOException | RuntimeException e) {
      self[0].close();
      throw e;
    }
    return self[0];
  }

  public Path udsPath() {
    return udsPath;
  }

  // ---- HostSide ----

  @Override
  public void attach(VsockDevice device) {
    this.device = device;
  }

  @Override
  public void detach() {
    device = null;
  }

  @Override
  public HostEndpoint guestConnect(VsockConnection connection) {
    Path target = portPath(udsPath, connection.hostPort());
    if (connection.isSeqpacket()) return seqpacket.dial(connection, target);
    StreamBridge bridge = new StreamBridge(this, connection, false);
    ChannelFuture connected =
        new Bootstrap()
            .group(loop)
            .channel(EpollDomainSocketChannel.class)
            .handler(bridge)
            .connect(new DomainSocketAddress(target.toString()));
    // Only a channel that cannot even be registered (out of fds) fails at once: Bootstrap connects
    // in a later task of the loop, and the guest gets its RESPONSE once connected (the bridge's
    // channelActive) or RST when the connect fails.
    if (connected.isDone() && !connected.isSuccess()) {
      refusedGuest(connection, target, why(connected.cause()));
      return null;
    }
    connected.addListener(
        f -> {
          // A guest that reset the connection first has been answered, and closed the channel.
          if (!f.isSuccess() && !connection.isClosed()) {
            refusedGuest(connection, target, why(f.cause()));
            connection.reset();
          }
        });
    return bridge;
  }

  private static String why(Throwable cause) {
    if (cause instanceof FileNotFoundException) return "no such socket";
    return cause.getMessage() != null ? cause.getMessage() : cause.toString();
  }

  /** The guest may retry without end: the line goes through the device's rate limit. */
  void refusedGuest(VsockConnection connection, Path target, String why) {
    VsockDevice d = device;
    if (d == null) return;
    d.logConnection(
        Level.INFO,
        "vsock: guest "
            + connection.guestCid()
            + " port "
            + Integer.toUnsignedString(connection.guestPort())
            + " connects to host port "
            + Integer.toUnsignedString(connection.hostPort())
            + ", but nothing accepts at "
            + target
            + " ("
            + why
            + "); sent RST. A host application should listen there.");
  }

  // ---- host-initiated connections ----

  /**
   * A host application asked for guest port {@code guestPort}: returns the connection, or null (the
   * caller closes its socket) when no guest is being served or the device refuses. A guest that
   * neither accepts nor refuses within the patience has the connection reset: it would hold a
   * connection slot and the host application's socket.
   */
  VsockConnection hostConnect(int guestPort, int type, HostEndpoint endpoint) {
    VsockDevice d = device;
    if (d == null) {
      LOG.log(
          Level.INFO,
          "vsock: a host application asked for guest port "
              + Integer.toUnsignedString(guestPort)
              + " at "
              + udsPath
              + ", but no guest driver is running; closed");
      return null;
    }
    int hostPort = allocateHostPort();
    VsockConnection c = d.connectToGuest(hostPort, guestPort, type, endpoint);
    if (c == null) {
      releaseHostPort(hostPort);
      LOG.log(
          Level.INFO,
          "vsock: cannot connect to guest port "
              + Integer.toUnsignedString(guestPort)
              + " (too many connections, or SEQPACKET not negotiated); closed");
      return null;
    }
    if (c.isClosed()) return c; // its host port went back with it
    ScheduledFuture<?> unanswered =
        loop.schedule(
            () -> {
              if (!c.isOpen() && !c.isClosed()) {
                logUnanswered(c);
                c.reset();
              }
            },
            patience.toMillis(),
            TimeUnit.MILLISECONDS);
    hostPortsInUse.put(hostPort, unanswered);
    return c;
  }

  private void logUnanswered(VsockConnection c) {
    LOG.log(
        Level.INFO,
        "vsock: guest port "
            + Integer.toUnsignedString(c.guestPort())
            + " answered a host application at "
            + (c.isSeqpacket() ? SeqpacketHost.pathFor(udsPath) : udsPath)
            + " neither way within "
            + patience
            + "; reset");
  }

  private int allocateHostPort() {
    while (hostPortsInUse.containsKey(nextHostPort)) nextHostPort = next(nextHostPort);
    int port = nextHostPort;
    hostPortsInUse.put(port, null);
    nextHostPort = next(nextHostPort);
    return port;
  }

  private static int next(int port) {
    return port == Integer.MAX_VALUE ? FIRST_HOST_PORT : port + 1;
  }

  /**
   * A host application connected and owes its CONNECT request: false (close it) when {@link
   * #MAX_AWAITING_CONNECT} already do. Each true is matched by one {@link #connectRequestDone}.
   */
  boolean admitConnectRequest() {
    if (awaitingConnect >= MAX_AWAITING_CONNECT) {
      LOG.log(
          Level.WARNING,
          "vsock: "
              + MAX_AWAITING_CONNECT
              + " host applications at "
              + udsPath
              + " have not sent CONNECT yet; closing another one");
      return false;
    }
    awaitingConnect++;
    return true;
  }

  void connectRequestDone() {
    awaitingConnect--;
  }

  /** A host-initiated connection ended: its host port may be handed out again. */
  void releaseHostPort(int hostPort) {
    ScheduledFuture<?> unanswered = hostPortsInUse.remove(hostPort);
    if (unanswered != null) unanswered.cancel(false);
  }

  /** How long a peer may keep a socket open without moving on (see {@link #listen}). */
  Duration patience() {
    return patience;
  }

  /** Where a guest's connections to host port {@code port} go: {@code <udsPath>_<port>}. */
  static Path portPath(Path udsPath, int port) {
    return Path.of(udsPath + "_" + Integer.toUnsignedString(port));
  }

  /**
   * Whether the host side at {@code udsPath} listens at or connects to {@code path}: the uds-path
   * itself, its SEQPACKET listener, or {@code <udsPath>_<port>} for any port a guest may name. Both
   * paths must be absolute and normalized. No other guest's socket may be among them, or a guest
   * could reach it by naming the port.
   */
  public static boolean ownsPath(Path udsPath, Path path) {
    if (path.equals(udsPath) || path.equals(SeqpacketHost.pathFor(udsPath))) return true;
    String prefix = udsPath.getFileName() + "_";
    String name = path.getFileName() == null ? "" : path.getFileName().toString();
    return Objects.equals(path.getParent(), udsPath.getParent())
        && name.length() > prefix.length()
        && name.startsWith(prefix)
        && name.substring(prefix.length()).chars().allMatch(ch -> ch >= '0' && ch <= '9');
  }

  /** The iovec array of the bridges' straight writes: they all run on the one data loop. */
  IoVectors pieces() {
    return pieces;
  }

  /** The data loop every host socket lives on. */
  IoEventLoop loop() {
    return loop;
  }

  @Override
  public void close() {
    listener.close().awaitUninterruptibly();
    if (seqpacket != null) {
      if (loop.inEventLoop()) seqpacket.close();
      else if (!loop.isShuttingDown()) loop.submit(seqpacket::close).syncUninterruptibly();
      SeqpacketHost.remove(SeqpacketHost.pathFor(udsPath));
    }
    SeqpacketHost.remove(udsPath);
  }
}
