package dev.bounce.vhost.socket;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;

/**
 * A non-blocking AF_UNIX SOCK_SEQPACKET socket: a listener or a connection whose messages keep
 * their boundaries. Netty has no SEQPACKET channel, so bounce watches these fds with {@code
 * FdWatch} and does the I/O here. A zero-length message cannot be told from end-of-stream by
 * recv(2), so it reads as end-of-stream.
 */
public final class SeqpacketSocket implements AutoCloseable {
  private static final int TYPE =
      SocketCalls.SOCK_SEQPACKET | SocketCalls.SOCK_CLOEXEC | SocketCalls.SOCK_NONBLOCK;
  private static final int BACKLOG = 128;

  private final Fd fd;
  private final String name;

  private SeqpacketSocket(Fd fd, String name) {
    this.fd = fd;
    this.name = name;
  }

  /**
   * Listens at {@code path}, replacing a stale socket file.
   *
   * @throws IOException when another process listens there or the path is not a socket
   */
  public static SeqpacketSocket listen(Path path) throws IOException {
    UnixListener.removeStale(path, SocketCalls.SOCK_SEQPACKET);
    Fd fd = Fd.adopt(SocketCalls.socket(TYPE));
    try {
      SocketCalls.bind(fd.value(), path);
      SocketCalls.listen(fd.value(), BACKLOG);
      return new SeqpacketSocket(fd, "seqpacket listener " + path);
    } catch (IOException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  /**
   * Connects to {@code path}.
   *
   * @return the connection, or null when nobody listens there
   * @throws IOException when the kernel refuses otherwise (a full backlog among them)
   */
  public static SeqpacketSocket connect(Path path) throws IOException {
    Fd fd = Fd.adopt(SocketCalls.socket(TYPE));
    try {
      if (SocketCalls.connect(fd.value(), path) != 0) {
        fd.close();
        return null;
      }
      return new SeqpacketSocket(fd, "seqpacket " + path);
    } catch (IOException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  /** The next connection of a listener, or null when none waits. */
  public SeqpacketSocket accept() throws NativeException {
    int client =
        SocketCalls.accept(fd.value(), SocketCalls.SOCK_CLOEXEC | SocketCalls.SOCK_NONBLOCK);
    return client < 0 ? null : new SeqpacketSocket(Fd.adopt(client), "seqpacket peer of " + name);
  }

  public Fd fd() {
    return fd;
  }

  /**
   * Sends {@code length} bytes of {@code message} as one message.
   *
   * @return true when sent, false when the socket's buffer is full (wait for writability)
   * @throws NativeException when the peer is gone (EPIPE, ECONNRESET) or the message is too big for
   *     the socket (EMSGSIZE)
   */
  public boolean send(MemorySegment message, long length) throws NativeException {
    int flags = SocketCalls.MSG_EOR | SocketCalls.MSG_NOSIGNAL | SocketCalls.MSG_DONTWAIT;
    return SocketCalls.send(fd.value(), message, length, flags) != Libc.WOULD_BLOCK;
  }

  /**
   * The length of the next message without taking it: 0 at end of stream, {@link Libc#WOULD_BLOCK}
   * when none waits.
   */
  public long nextMessageLength() throws NativeException {
    int flags = SocketCalls.MSG_PEEK | SocketCalls.MSG_TRUNC | SocketCalls.MSG_DONTWAIT;
    return SocketCalls.recv(fd.value(), MemorySegment.NULL, 0, flags);
  }

  /**
   * Takes the next message into {@code into} (what does not fit is lost).
   *
   * @return the message's whole length (more than {@code into} holds when it was cut), 0 at end of
   *     stream, or {@link Libc#WOULD_BLOCK}
   */
  public long receive(MemorySegment into) throws NativeException {
    int flags = SocketCalls.MSG_TRUNC | SocketCalls.MSG_DONTWAIT;
    return SocketCalls.recv(fd.value(), into, into.byteSize(), flags);
  }

  /** No more messages from this side: the peer reads end of stream after what was sent. */
  public void shutdownOutput() throws NativeException {
    SocketCalls.shutdown(fd.value(), SocketCalls.SHUT_WR);
  }

  @Override
  public void close() {
    fd.close();
  }

  @Override
  public String toString() {
    return name;
  }
}
