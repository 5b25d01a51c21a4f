package dev.bounce.device.vsock;

import dev.bounce.pool.NativeException;
import dev.bounce.vhost.loop.FdWatch;
import dev.bounce.vhost.socket.SeqpacketSocket;
import io.netty.channel.IoEventLoop;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * The SEQPACKET half of {@link UnixHost}, with the names ARCHITECTURE.md gives: a host application
 * reaches a guest SEQPACKET listener through {@code <uds-path>.seqpacket} (its first message {@code
 * CONNECT <port>\n}, the reply message {@code OK <port>\n}); a guest SEQPACKET connection to host
 * port P reaches a SOCK_SEQPACKET socket listening at {@code <uds-path>_<P>}. Netty has no
 * SEQPACKET channel, so these are raw sockets watched on the same data loop ({@link
 * SeqpacketBridge}).
 */
final class SeqpacketHost implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(SeqpacketHost.class.getName());

  private final UnixHost owner;
  private final SeqpacketSocket listener;
  private final IoEventLoop loop;
  private FdWatch watch;
  private boolean closed;

  private SeqpacketHost(UnixHost owner, SeqpacketSocket listener, IoEventLoop loop) {
    this.owner = owner;
    this.listener = listener;
    this.loop = loop;
    this.watch = FdWatch.start(loop, listener.fd(), this::accept);
  }

  static SeqpacketHost listen(UnixHost owner, Path path, IoEventLoop loop) throws IOException {
    SeqpacketSocket listener = SeqpacketSocket.listen(path);
    try {
      return new SeqpacketHost(owner, listener, loop);
    } catch (RuntimeException e) {
      listener.close();
      throw e;
    }
  }

  private void accept() {
    try {
      for (SeqpacketSocket s = listener.accept(); s != null; s = listener.accept()) {
        SeqpacketBridge.awaitConnect(owner, s);
      }
    } catch (NativeException e) {
      // Out of fds, say: the connection stays in the backlog and the level-triggered listener
      // would wake the loop at once, for ever. Stop watching for a second, as Netty's acceptor
      // does.
      AcceptPause.logPause(listener, e.getMessage());
      watch.close();
      loop.schedule(this::resume, AcceptPause.PAUSE_MILLIS, TimeUnit.MILLISECONDS);
    }
  }

  private void resume() {
    if (!closed) watch = FdWatch.start(loop, listener.fd(), this::accept);
  }

  /**
   * A guest SEQPACKET connection to {@code target}: its endpoint, or null (the guest gets RST) when
   * none listens or it failed, which a log line says.
   */
  HostSide.HostEndpoint dial(VsockConnection connection, Path target) {
    SeqpacketSocket s;
    try {
      s = SeqpacketSocket.connect(target);
    } catch (IOException e) {
      owner.refusedGuest(connection, target, e.getMessage());
      return null;
    }
    if (s == null) {
      owner.refusedGuest(connection, target, "no SOCK_SEQPACKET listener");
      return null;
    }
    return SeqpacketBridge.forGuest(owner, s, connection);
  }

  @Override
  public void close() {
    closed = true;
    watch.close();
    listener.close();
  }

  static Path pathFor(Path udsPath) {
    return Path.of(udsPath + ".seqpacket");
  }

  static void remove(Path path) {
    try {
      Files.deleteIfExists(path);
    } catch (IOException e) {
      LOG.log(Level.WARNING, "vsock: cannot remove " + path + ": " + e.getMessage());
    }
  }
}
