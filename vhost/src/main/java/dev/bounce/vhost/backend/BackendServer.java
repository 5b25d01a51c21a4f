package dev.bounce.vhost.backend;

import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestRegion;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Ranges;
import dev.bounce.vhost.loop.FdWatch;
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.socket.UnixSocket;
import dev.bounce.vhost.spi.LogBudget;
import dev.bounce.vhost.spi.VirtioDevice;
import io.netty.channel.IoEventLoop;
import io.netty.util.concurrent.Future;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * Serves one device on one vhost-user socket, one frontend at a time: either listening at the path
 * (the usual case; QEMU opens a new connection at every guest boot, so the next is accepted when
 * one ends) or, in client mode, connecting to a frontend that listens (DPDK virtio-user server=1)
 * and connecting again whenever it goes away; or on a socket inherited as an fd (vhost-user.rst,
 * "Backend program conventions", {@code --fd}): a listening one as at a path, a connected one for
 * its one frontend.
 */
public final class BackendServer implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(BackendServer.class.getName());
  private static final long RECONNECT_MILLIS = 500;

  /** How long the listener stops accepting after accept(2) failed (out of fds, say). */
  private static final long ACCEPT_PAUSE_MILLIS = 1000;

  /**
   * What a server serves, where its work runs, how it restricts device DMA ({@link
   * RestrictedDma#OFF}: not at all), how much guest memory one session may map (a memory table or
   * added region that would take it over {@code maxGuestMemory} is refused), and how long a ring
   * that ran dry is polled ({@link RingPolling}).
   */
  public record Config(
      String name,
      VirtioDevice device,
      IoEventLoop controlLoop,
      IoEventLoop dataLoop,
      RestrictedDma restrictedDma,
      long maxGuestMemory,
      RingPolling ringPolling) {
    /**
     * 1 TiB per session unless raised: a QEMU guest shares all its RAM, so this is a guest of 1
     * TiB, a generous bound for the VMs a vsock backend runs beside (a larger one raises it), and
     * 64 sessions at it still fit in {@link GuestRegion#PROCESS_LIMIT} on x86-64 (32 while each
     * replaces its table, when the old and the new are both mapped). Where the address space is
     * smaller (39-bit arm64), the process's bound.
     */
    public static final long DEFAULT_MAX_GUEST_MEMORY =
        Math.min(1L << 40, GuestRegion.PROCESS_LIMIT);

    public Config {
      java.util.Objects.requireNonNull(restrictedDma, "restrictedDma");
      java.util.Objects.requireNonNull(ringPolling, "ringPolling");
      checkMaxGuestMemory(maxGuestMemory);
    }

    /** With {@link RingPolling#DEFAULT}. */
    public Config(
        String name,
        VirtioDevice device,
        IoEventLoop controlLoop,
        IoEventLoop dataLoop,
        RestrictedDma restrictedDma,
        long maxGuestMemory) {
      this(name, device, controlLoop, dataLoop, restrictedDma, maxGuestMemory, RingPolling.DEFAULT);
    }

    /** With the {@link #DEFAULT_MAX_GUEST_MEMORY} cap. */
    public Config(
        String name,
        VirtioDevice device,
        IoEventLoop controlLoop,
        IoEventLoop dataLoop,
        RestrictedDma restrictedDma) {
      this(name, device, controlLoop, dataLoop, restrictedDma, DEFAULT_MAX_GUEST_MEMORY);
    }

    /**
     * Without restricted DMA: an ordinary vhost-user backend that maps what the frontend shares.
     */
    public Config(String name, VirtioDevice device, IoEventLoop controlLoop, IoEventLoop dataLoop) {
      this(name, device, controlLoop, dataLoop, RestrictedDma.OFF);
    }

    /**
     * Refuses what a Config refuses for {@code maxGuestMemory}, so that a bad flag fails at start:
     * a cap that is not positive, or over {@link GuestRegion#PROCESS_LIMIT}, which bounds every
     * session anyway.
     */
    public static void checkMaxGuestMemory(long bytes) {
      if (bytes <= 0) {
        throw new IllegalArgumentException(
            "a cap of " + bytes + " bytes of guest memory lets no session map any");
      }
      if (bytes > GuestRegion.PROCESS_LIMIT) {
        throw new IllegalArgumentException(
            Ranges.describeSize(bytes)
                + " is over "
                + Ranges.describeSize(GuestRegion.PROCESS_LIMIT)
                + ", the bound on the guest memory of all sessions together");
      }
    }
  }

  private final Config config;
  private final Path path;
  private final String where;
  private final UnixListener listener;
  private final CompletableFuture<Void> finished = new CompletableFuture<>();
  private volatile String failure;
  private FdWatch acceptWatch;
  private volatile BackendSession session;
  private volatile boolean closed;
  private ScheduledFuture<?> retry; // the next connect (client mode) or accept (after a failure)
  private long sessions;
  private final LogBudget frontendLines = new LogBudget();
  private final LogBudget sessionLines = new LogBudget(); // each session's comings and goings

  private BackendServer(Config config, Path path, String where, UnixListener listener) {
    this.config = config;
    this.path = path;
    this.where = where;
    this.listener = listener;
  }

  /** Listens at {@code path} (a stale socket file is replaced, a live one refused). */
  public static BackendServer listen(Path path, Config config) throws IOException {
    return accepting(config, path, "" + path, UnixListener.bind(path, true));
  }

  /** Connects to a frontend listening at {@code path}, retrying until it is there. */
  public static BackendServer connect(Path path, Config config) {
    BackendServer server = new BackendServer(config, path, "" + path, null);
    config.controlLoop().execute(server::tryConnect);
    return server;
  }

  /**
   * Serves the inherited socket {@code number}, which it owns from then on: a listening one for one
   * frontend after another, a connected one for its frontend only ({@link #finished} completes when
   * that one goes away).
   *
   * @throws IOException naming the fd when it is not an AF_UNIX stream socket (it is then left
   *     open: a wrong number may be one the JVM uses)
   */
  public static BackendServer inherit(int number, Config config) throws IOException {
    String where = "inherited fd " + number;
    boolean listening = UnixListener.listens(number);
    Fd fd = Fd.adopt(number);
    try {
      Libc.setCloseOnExec(number); // bounce's, not for the programs it may start
      if (listening) return accepting(config, null, where, UnixListener.inherit(fd));
      BackendServer server = new BackendServer(config, null, where, null);
      Future<?> served =
          config
              .controlLoop()
              .submit(
                  () -> {
                    server.serve(UnixSocket.adopt(fd));
                    return null;
                  });
      served.syncUninterruptibly();
      return server;
    } catch (IOException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  private static BackendServer accepting(
      Config config, Path path, String where, UnixListener listener) {
    BackendServer server = new BackendServer(config, path, where, listener);
    // On the control loop, so that an accept (a VMM already in the backlog) finds the watch set.
    IoEventLoop loop = config.controlLoop();
    try {
      if (loop.inEventLoop()) {
        server.watchListener();
      } else {
        loop.submit(server::watchListener).syncUninterruptibly();
      }
    } catch (RuntimeException e) { // epoll_ctl refused
      listener.close();
      throw e;
    }
    LOG.log(Level.INFO, "{0}: listening on {1}", config.name(), where);
    return server;
  }

  /**
   * Completes when there is nothing more to serve: the frontend of an inherited connected socket
   * went away, or the server was closed.
   */
  public CompletableFuture<Void> finished() {
    return finished;
  }

  /**
   * Once {@link #finished} for an inherited connected socket: why bounce ended its one session (the
   * frontend broke the protocol), or null when the frontend left.
   */
  public String failure() {
    return failure;
  }

  private void accept() {
    try {
      UnixSocket socket;
      while ((socket = listener.accept()) != null) {
        // The previous frontend may have closed just before this one connected, with its end of
        // stream not read yet (both arrive in one epoll round): read it first, so that only a
        // frontend that is still there makes this one a second frontend.
        if (session != null) session.drain();
        if (session != null) {
          warn("a second frontend connected while one is being served; closing it");
          socket.close();
          continue;
        }
        try {
          serve(socket);
        } catch (IOException | RuntimeException e) {
          // That frontend's session could not start (serve closed its socket); the next one may.
          // Escaping, it would end this watch: the listener would never accept again.
          warn("could not serve the frontend that connected: " + e);
        }
      }
    } catch (IOException e) {
      // Out of fds, say: the connection stays in the backlog, and the level-triggered listener
      // would wake the control loop (every VM's) at once, for ever. Stop watching for a while.
      LOG.log(
          Level.WARNING,
          "{0}: accepting on {1}: {2}; pausing for {3} s",
          config.name(),
          where,
          e.getMessage(),
          ACCEPT_PAUSE_MILLIS / 1000);
      acceptWatch.close();
      acceptWatch = null;
      pauseAccepting();
    }
  }

  private void pauseAccepting() {
    retry =
        config
            .controlLoop()
            .schedule(this::resumeAccepting, ACCEPT_PAUSE_MILLIS, TimeUnit.MILLISECONDS);
  }

  private void watchListener() {
    acceptWatch = FdWatch.start(config.controlLoop(), listener.fd(), this::accept);
  }

  private void resumeAccepting() {
    if (closed) return;
    try {
      watchListener();
    } catch (RuntimeException e) { // epoll_ctl refused (ENOMEM, max_user_watches): try again
      LOG.log(
          Level.WARNING,
          "{0}: watching {1} again: {2}; retrying in {3} s",
          config.name(),
          where,
          e.getMessage(),
          ACCEPT_PAUSE_MILLIS / 1000);
      pauseAccepting();
    }
  }

  private void tryConnect() {
    if (closed) return;
    try {
      serve(UnixSocket.connect(path));
    } catch (IOException | RuntimeException e) {
      if (e instanceof RuntimeException) warn("could not serve the frontend: " + e);
      LOG.log(Level.DEBUG, "{0}: {1}; retrying", config.name(), e.getMessage());
      retry =
          config.controlLoop().schedule(this::tryConnect, RECONNECT_MILLIS, TimeUnit.MILLISECONDS);
    }
  }

  private void serve(UnixSocket socket) throws IOException {
    sessions++;
    String name = config.name() + " #" + sessions;
    sessionLines.log(LOG, Level.INFO, () -> name + ": frontend connected");
    try {
      session = BackendSession.start(name, socket, config, sessionLines, this::sessionEnded);
    } catch (IOException | RuntimeException e) {
      socket.close();
      throw e;
    }
  }

  private void sessionEnded() {
    BackendSession ended = session;
    session = null;
    if (path == null && listener == null) { // an inherited connected socket: its one frontend
      failure = ended == null ? null : ended.failure();
      LOG.log(Level.INFO, "{0}: the frontend on {1} went away", config.name(), where);
      finished.complete(null);
    } else if (listener == null && !closed) {
      config.controlLoop().schedule(this::tryConnect, RECONNECT_MILLIS, TimeUnit.MILLISECONDS);
    }
  }

  /** A line about the frontends that come and go, within its {@link LogBudget}. */
  private void warn(String line) {
    frontendLines.log(LOG, Level.WARNING, () -> config.name() + ": " + line);
  }

  /** The session being served, or null. */
  public BackendSession session() {
    return session;
  }

  /** The socket path, or null for an inherited socket. */
  public Path path() {
    return path;
  }

  @Override
  public String toString() {
    return config.name() + " on " + where;
  }

  /** Ends the session (rings stopped, everything released) and stops listening. */
  @Override
  public void close() {
    closed = true;
    Runnable shutdown =
        () -> {
          if (retry != null) retry.cancel(false);
          if (acceptWatch != null) acceptWatch.close();
          BackendSession current = session;
          if (current != null) current.close();
          if (listener != null) listener.close();
          finished.complete(null);
        };
    IoEventLoop loop = config.controlLoop();
    if (loop.inEventLoop()) {
      shutdown.run();
    } else {
      loop.submit(shutdown).syncUninterruptibly();
    }
  }
}
