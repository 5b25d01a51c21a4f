package dev.bounce.device.vsock;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * An in-memory {@link HostSide} for tests of the device alone (no sockets): host ports that echo
 * every byte (and every SEQPACKET message) back to the guest, and host peers that connect to guest
 * listeners, send bytes and collect what comes back. Echoing honours back-pressure: bytes are taken
 * from the guest only as fast as the guest takes the echo, so a guest that stops receiving stalls
 * its connection with bounded memory.
 *
 * <p>{@link #echo} may be called before the device starts; the {@link Peer} methods may be called
 * from any thread (they run on the device's data loop and wait).
 */
public final class LoopbackHost implements HostSide {
  private static final int CHUNK = 16 * 1024;

  private final Set<Integer> echoPorts = new HashSet<>();
  private final MemorySegment scratch = MemorySegment.ofArray(new byte[CHUNK]);
  private volatile VsockDevice device;
  private volatile int echoConnections;

  /** Guest connections to host port {@code port} are accepted and echoed. */
  public synchronized LoopbackHost echo(int port) {
    echoPorts.add(port);
    return this;
  }

  @Override
  public void attach(VsockDevice device) {
    this.device = device;
  }

  @Override
  public void detach() {}

  @Override
  public HostEndpoint guestConnect(VsockConnection connection) {
    synchronized (this) {
      if (!echoPorts.contains(connection.hostPort())) return null;
    }
    echoConnections++;
    connection.accept(); // in memory: connected at once
    return echoEndpoint;
  }

  /** Guest connections accepted by echo ports so far. */
  public int echoConnections() {
    return echoConnections;
  }

  private final HostEndpoint echoEndpoint =
      new HostEndpoint() {
        @Override
        public void readable(VsockConnection c) {
          pump(c);
        }

        @Override
        public void writable(VsockConnection c) {
          pump(c);
        }

        @Override
        public void peerShutdown(VsockConnection c, int flags) {
          if ((flags & VsockHeader.SHUTDOWN_SEND) != 0) {
            pump(c);
            c.shutdown(VsockHeader.SHUTDOWN_SEND);
          }
        }

        @Override
        public void closed(VsockConnection c) {}
      };

  /** Moves what the guest sent back to it, as far as the room for the echo allows. */
  private void pump(VsockConnection c) {
    while (c.available() > 0 || (c.isSeqpacket() && c.fromGuest.firstMessageRemaining() == 0)) {
      int room = c.writable();
      int want = c.fromGuest.readable(Math.min(CHUNK, room));
      boolean wholeMessage = c.isSeqpacket() && want == c.fromGuest.firstMessageRemaining();
      if (want == 0 && !wholeMessage) return;
      // A SEQPACKET message is echoed in pieces that each fit; EOM goes with the last.
      int n = c.read(scratch, 0, want);
      boolean eom = c.endOfMessage();
      c.write(scratch, 0, n, eom);
      if (c.isClosed()) return;
    }
  }

  // ---- host-initiated connections ----

  /**
   * Connects host port {@code hostPort} to guest port {@code guestPort} (a guest listener must
   * accept).
   *
   * @return the peer, or null when the device refused at once (no driver, table full)
   */
  public Peer connect(int hostPort, int guestPort, int type) throws Exception {
    Peer peer = new Peer();
    VsockConnection c = onLoop(() -> device.connectToGuest(hostPort, guestPort, type, peer));
    if (c == null) return null;
    peer.connection = c;
    return peer;
  }

  private <T> T onLoop(Callable<T> task)
      throws InterruptedException, ExecutionException, TimeoutException {
    VsockDevice d = device;
    if (d == null || d.dataLoop() == null) throw new IllegalStateException("no driver served");
    return d.dataLoop().submit(task).get(10, TimeUnit.SECONDS);
  }

  /** A host application's end of one connection: what it sent and what it received. */
  public final class Peer implements HostEndpoint {
    private VsockConnection connection;
    private final ByteArrayOutputStream received = new ByteArrayOutputStream();
    private final List<byte[]> messages = new ArrayList<>();
    private final ByteArrayOutputStream message = new ByteArrayOutputStream();
    private byte[] out = new byte[0];
    private int outAt;
    private boolean outEom;
    private volatile boolean connected;
    private volatile boolean closed;
    private volatile int peerShutdown;

    @Override
    public void connected(VsockConnection c) {
      connected = true;
      flush(c);
    }

    @Override
    public void readable(VsockConnection c) {
      byte[] chunk = new byte[CHUNK];
      MemorySegment seg = MemorySegment.ofArray(chunk);
      synchronized (this) {
        while (c.available() > 0 || (c.isSeqpacket() && c.fromGuest.firstMessageRemaining() == 0)) {
          int n = c.read(seg, 0, CHUNK);
          received.write(chunk, 0, n);
          if (c.isSeqpacket()) {
            message.write(chunk, 0, n);
            if (c.endOfMessage()) {
              messages.add(message.toByteArray());
              message.reset();
            }
          }
          if (n == 0 && !c.endOfMessage()) break;
        }
      }
    }

    @Override
    public void writable(VsockConnection c) {
      flush(c);
    }

    @Override
    public void peerShutdown(VsockConnection c, int flags) {
      peerShutdown |= flags;
    }

    @Override
    public void closed(VsockConnection c) {
      closed = true;
    }

    private void flush(VsockConnection c) {
      if (!c.isOpen()) return;
      while (outAt < out.length) {
        int n = c.write(MemorySegment.ofArray(out), outAt, out.length - outAt, outEom);
        if (n == 0) return;
        outAt += n;
      }
      if (outEom && out.length == 0) c.write(MemorySegment.ofArray(out), 0, 0, true);
      outEom = false;
    }

    /** Sends {@code bytes} (one message for SEQPACKET), after what was sent before. */
    public void send(byte[] bytes) throws Exception {
      onLoop(
          () -> {
            byte[] rest = new byte[out.length - outAt + bytes.length];
            System.arraycopy(out, outAt, rest, 0, out.length - outAt);
            System.arraycopy(bytes, 0, rest, out.length - outAt, bytes.length);
            out = rest;
            outAt = 0;
            outEom = connection.isSeqpacket();
            flush(connection);
            return null;
          });
    }

    public void shutdown(int flags) throws Exception {
      onLoop(
          () -> {
            connection.shutdown(flags);
            return null;
          });
    }

    public void reset() throws Exception {
      onLoop(
          () -> {
            connection.reset();
            return null;
          });
    }

    public boolean isConnected() {
      return connected;
    }

    public boolean isClosed() {
      return closed;
    }

    public int peerShutdownFlags() {
      return peerShutdown;
    }

    /** Bytes received so far. */
    public synchronized byte[] received() {
      return received.toByteArray();
    }

    /** Whole SEQPACKET messages received so far. */
    public synchronized List<byte[]> messages() {
      return List.copyOf(messages);
    }
  }
}
