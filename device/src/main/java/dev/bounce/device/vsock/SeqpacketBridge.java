package dev.bounce.device.vsock;

import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.loop.FdWatch;
import dev.bounce.vhost.socket.SeqpacketSocket;
import java.lang.System.Logger.Level;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * One vsock SEQPACKET connection tied to one host SOCK_SEQPACKET socket, message for message. Like
 * {@link StreamBridge}, neither side makes the other buffer without bound: at most one message each
 * way waits here (each at most the connection's buffer size, which is also the largest message a
 * guest may send, its buf_alloc), the socket is read only when the guest took the last message, and
 * the guest's bytes leave the connection only when the socket took the last message.
 */
final class SeqpacketBridge implements HostSide.HostEndpoint {
  private static final System.Logger LOG = System.getLogger(SeqpacketBridge.class.getName());

  private final UnixHost owner;
  private final SeqpacketSocket socket;
  private final boolean hostInitiated;
  // Everything here runs on the data loop; each buffer is allocated when its direction first
  // carries a message, so an idle connection costs no buffer at all.
  private final Arena arena = Arena.ofConfined();
  private FdWatch watch;
  private ScheduledFuture<?> connectTimeout;
  private ScheduledFuture<?> lingerEnd;
  private VsockConnection connection;
  private boolean awaitingConnect;
  private boolean connectionClosed;
  private boolean taking;
  private boolean ended;

  // Guest to host: one message assembled from the connection, then sent whole.
  private MemorySegment toHost;
  private int toHostLength;
  private boolean toHostComplete;
  private boolean outputShut;

  // Host to guest: one message received whole, then handed to the connection as room allows.
  private MemorySegment fromHost;
  private int fromHostLength;
  private int fromHostOffset;
  private boolean fromHostPending;
  private boolean hostEof;

  private SeqpacketBridge(
      UnixHost owner, SeqpacketSocket socket, VsockConnection connection, boolean hostInitiated) {
    this.owner = owner;
    this.socket = socket;
    this.connection = connection;
    this.hostInitiated = hostInitiated;
  }

  /** A host application connected to {@code <uds-path>.seqpacket}: wait for its CONNECT. */
  static void awaitConnect(UnixHost owner, SeqpacketSocket socket) {
    if (!owner.admitConnectRequest()) {
      socket.close();
      return;
    }
    SeqpacketBridge b = new SeqpacketBridge(owner, socket, null, true);
    b.awaitingConnect = true;
    b.connectTimeout =
        owner
            .loop()
            .schedule(
                () -> b.refuse("sent no CONNECT message within " + owner.patience()),
                owner.patience().toMillis(),
                TimeUnit.MILLISECONDS);
    b.watch();
  }

  /**
   * A guest connection whose host end {@code socket} just connected: the guest's RESPONSE.
   *
   * @return the bridge, or null (the socket closed, the guest to get RST) when it cannot be watched
   */
  static SeqpacketBridge forGuest(UnixHost owner, SeqpacketSocket socket, VsockConnection c) {
    SeqpacketBridge b = new SeqpacketBridge(owner, socket, c, false);
    if (!b.watch()) return null;
    c.accept();
    return b;
  }

  /**
   * Watches the socket from now on; false when epoll refused it (ENOMEM, max_user_watches): then
   * the bridge ended and closed the socket, which would otherwise leak (and the exception stop the
   * caller, the .seqpacket listener among them).
   */
  private boolean watch() {
    try {
      watch = FdWatch.startEdgeTriggered(owner.loop(), socket.fd(), this::onEvent);
      return true;
    } catch (RuntimeException e) {
      LOG.log(Level.WARNING, "vsock: " + socket + ": watching it: " + e);
      end();
      return false;
    }
  }

  /** A message buffer: the connection's buffer size, which is also the largest message. */
  private MemorySegment buffer(VsockConnection c) {
    return arena.allocate(c.fromGuest.capacity());
  }

  /** The socket may have changed both ways (edge-triggered: go as far as possible in each). */
  private void onEvent() {
    step(bothWays);
  }

  // Made once: a method reference made per call would allocate per packet.
  private final Step bothWays =
      () -> {
        if (awaitingConnect) {
          readConnect();
        } else {
          fromHost();
          if (!ended) toHost(); // a reset in fromHost may have sent the last message and ended
        }
      };
  private final Step guestToHost = this::toHost;
  private final Step hostToGuest = this::fromHost;

  /** One direction's work; a socket error resets the connection (or ends a pending request). */
  private void step(Step work) {
    if (ended) return;
    try {
      work.run();
    } catch (NativeException e) {
      LOG.log(Level.DEBUG, "vsock: " + socket + ": " + e.getMessage());
      VsockConnection c = connection;
      if (c != null && !c.isClosed()) c.reset(); // closed() then releases the socket
      else end();
    }
  }

  @FunctionalInterface
  private interface Step {
    void run() throws NativeException;
  }

  private void readConnect() throws NativeException {
    MemorySegment line = arena.allocate(ConnectRequest.MAX_LINE);
    long n = socket.receive(line);
    if (n == Libc.WOULD_BLOCK) return;
    awaitingConnect = false;
    owner.connectRequestDone();
    connectTimeout.cancel(false);
    if (n == 0) {
      refuse("closed before a CONNECT message");
      return;
    }
    if (n > ConnectRequest.MAX_LINE) {
      refuse("sent a first message of " + n + " bytes instead of 'CONNECT <port>'");
      return;
    }
    String text =
        new String(line.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE), StandardCharsets.US_ASCII);
    long port = ConnectRequest.guestPort(text);
    if (port < 0) {
      refuse("sent '" + text.strip() + "' instead of 'CONNECT <port>'");
      return;
    }
    if (owner.hostConnect((int) port, VsockHeader.TYPE_SEQPACKET, this) == null) end();
  }

  private void refuse(String what) {
    LOG.log(
        Level.INFO,
        "vsock: a host application at "
            + SeqpacketHost.pathFor(owner.udsPath())
            + " "
            + what
            + "; closed");
    end();
  }

  // ---- what the device says ----

  @Override
  public void connected(VsockConnection c) {
    connection = c;
    toHost = buffer(c);
    byte[] ok =
        ("OK " + Integer.toUnsignedString(c.hostPort()) + "\n").getBytes(StandardCharsets.US_ASCII);
    MemorySegment.copy(MemorySegment.ofArray(ok), 0, toHost, 0, ok.length);
    toHostLength = ok.length;
    toHostComplete = true;
    onEvent();
  }

  @Override
  public void readable(VsockConnection c) {
    step(guestToHost); // only the guest's side changed: no recv(2) per packet for nothing
  }

  @Override
  public void writable(VsockConnection c) {
    step(hostToGuest);
  }

  @Override
  public void peerShutdown(VsockConnection c, int flags) {
    if ((flags & VsockHeader.SHUTDOWN_RCV) != 0) fromHostPending = false;
    onEvent();
  }

  /**
   * The socket closes once it took the guest's last message, which waits here when the socket was
   * full (a host that reads slower than the guest sent).
   */
  @Override
  public void closed(VsockConnection c) {
    if (hostInitiated) owner.releaseHostPort(c.hostPort());
    connection = null;
    connectionClosed = true;
    // Ended by the read in take (the guest's last message was taken): toHost still holds it, and
    // goes on to send it.
    if (!taking) step(guestToHost);
    // A host that never reads would keep the socket for ever: its last message is dropped then.
    if (!ended) {
      lingerEnd =
          owner.loop().schedule(this::end, owner.patience().toMillis(), TimeUnit.MILLISECONDS);
    }
  }

  private void end() {
    if (ended) return;
    ended = true;
    if (connectTimeout != null) connectTimeout.cancel(false);
    if (lingerEnd != null) lingerEnd.cancel(false);
    if (awaitingConnect) {
      awaitingConnect = false;
      owner.connectRequestDone();
    }
    if (watch != null) watch.close();
    socket.close();
    arena.close();
  }

  // ---- moving messages ----

  /** Host to guest: the waiting message as far as the guest has room, then the next. */
  private void fromHost() throws NativeException {
    VsockConnection c = connection;
    while (c != null && c.isOpen()) {
      if (fromHostPending) {
        int n = c.write(fromHost, fromHostOffset, fromHostLength - fromHostOffset, true);
        fromHostOffset += n;
        if (fromHostOffset < fromHostLength) return; // the rest when writable() says
        fromHostPending = false;
      }
      if (hostEof || (c.peerShutdownFlags() & VsockHeader.SHUTDOWN_RCV) != 0) return;
      if (fromHost == null) {
        if (socket.nextMessageLength() == Libc.WOULD_BLOCK) return;
        fromHost = buffer(c);
      }
      long n = socket.receive(fromHost);
      if (n == Libc.WOULD_BLOCK) return;
      if (n == 0) {
        hostEof = true;
        c.shutdown(VsockHeader.SHUTDOWN_SEND);
        return;
      }
      if (n > fromHost.byteSize()) {
        LOG.log(
            Level.INFO,
            "vsock: a host message of "
                + n
                + " bytes on "
                + c
                + " is more than its "
                + fromHost.byteSize()
                + "-byte buffer (--tx-buffer-size); reset");
        c.reset();
        return;
      }
      fromHostLength = (int) n;
      fromHostOffset = 0;
      fromHostPending = true;
    }
  }

  /** Guest to host: messages leave the connection only as fast as the socket takes them. */
  private void toHost() throws NativeException {
    while (true) {
      if (toHostComplete) {
        if (!socket.send(toHost, toHostLength)) return; // the next edge says when there is room
        toHostComplete = false;
        toHostLength = 0;
      }
      VsockConnection c = connection;
      if (c == null) {
        if (connectionClosed) end(); // and its last message went
        return;
      }
      if (toHost == null) {
        if (c.available() == 0) {
          shutOutputIfGuestDone(c);
          return;
        }
        toHost = buffer(c);
      }
      int room = (int) toHost.byteSize() - toHostLength;
      int n = take(c, room);
      toHostLength += n;
      if (c.endOfMessage()) {
        toHostComplete = true;
      } else if (n == 0) {
        if (room == 0) {
          c.log(Level.INFO, "vsock: a guest message outgrew its buffer; reset");
          c.reset();
        } else if (toHostLength == 0) {
          shutOutputIfGuestDone(c);
        }
        return;
      }
    }
  }

  /**
   * Up to {@code room} bytes of the guest's message, taken from the connection (freeing its
   * credit). The connection may end inside (its last message taken after the guest's SHUTDOWN):
   * {@link #closed} then leaves the message to the caller.
   */
  private int take(VsockConnection c, int room) {
    taking = true;
    try {
      return c.read(toHost, toHostLength, room);
    } finally {
      taking = false;
    }
  }

  /** The guest shut down its sending and every message of it went: the host reads end of stream. */
  private void shutOutputIfGuestDone(VsockConnection c) throws NativeException {
    if (!outputShut && (c.peerShutdownFlags() & VsockHeader.SHUTDOWN_SEND) != 0) {
      outputShut = true;
      socket.shutdownOutput();
    }
  }
}
