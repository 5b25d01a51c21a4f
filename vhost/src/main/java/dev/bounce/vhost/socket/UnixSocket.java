package dev.bounce.vhost.socket;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A connected AF_UNIX stream socket that carries fds (SCM_RIGHTS) along with bytes: the vhost-user
 * control channel. The msghdr, iovec and control buffer are allocated once per socket and reused,
 * so one socket is used by one thread at a time.
 */
public final class UnixSocket implements AutoCloseable {
  /** vhost-user allows at most 8 fds in one message (VHOST_MEMORY_BASELINE_NREGIONS). */
  public static final int MAX_FDS = 8;

  private final Fd fd;
  private final Arena arena = Arena.ofShared();
  private final MemorySegment msghdr = arena.allocate(SocketCalls.MSGHDR_SIZE, 8);
  private final MemorySegment iovec = arena.allocate(SocketCalls.IOVEC_SIZE, 8);
  private final MemorySegment control = arena.allocate(SocketCalls.cmsgSpace(MAX_FDS), 8);
  private final AtomicBoolean closed = new AtomicBoolean();

  private UnixSocket(Fd fd) {
    this.fd = fd;
  }

  /** Takes ownership of a connected socket fd. */
  public static UnixSocket adopt(Fd fd) {
    return new UnixSocket(fd);
  }

  /**
   * Connects to the listener at {@code path} without waiting for it; the connected socket blocks. A
   * listener that does not accept and whose backlog is full would hold a blocking connect for ever,
   * and with it the event loop that called it.
   *
   * @throws IOException naming the path when nobody listens there, or (EAGAIN) when its backlog is
   *     full
   */
  public static UnixSocket connect(Path path) throws IOException {
    Fd fd =
        Fd.adopt(
            SocketCalls.socket(
                SocketCalls.SOCK_STREAM | SocketCalls.SOCK_CLOEXEC | SocketCalls.SOCK_NONBLOCK));
    try {
      int refused = SocketCalls.connect(fd.value(), path);
      if (refused != 0) {
        throw new IOException(
            "nothing listens at "
                + path
                + " ("
                + new NativeException("connect", path.toString(), refused).getMessage()
                + ")");
      }
      Libc.setBlocking(fd.value());
      return new UnixSocket(fd);
    } catch (IOException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  public Fd fd() {
    return fd;
  }

  /**
   * A non-blocking socket's buffer was full before any byte of a message went: nothing was sent,
   * and the message may be sent whole once the peer has read.
   */
  public static final class Full extends IOException {
    Full(Fd fd) {
      super("the peer on " + fd + " is not reading: its socket buffer is full");
    }
  }

  /**
   * Sends all of {@code data}, with {@code fds} attached to its first byte. Blocks until the kernel
   * has taken everything; a non-blocking socket that fills up fails rather than spins.
   *
   * @throws Full when a non-blocking socket took nothing (the peer has not read yet)
   * @throws IOException when the peer is gone, or stopped reading in the middle of the message
   */
  public void send(MemorySegment data, Fd... fds) throws IOException {
    if (fds.length > MAX_FDS) {
      throw new IllegalArgumentException(fds.length + " fds in one message; at most " + MAX_FDS);
    }
    if (fds.length > 0 && data.byteSize() == 0) {
      // a stream socket sends nothing for no bytes, and the kernel drops the fds without a word
      throw new IllegalArgumentException("fds need at least one byte of data to travel with");
    }
    long sent = 0;
    boolean withFds = fds.length > 0;
    do {
      prepare(data.asSlice(sent), withFds ? fds.length : 0);
      if (withFds) {
        MemorySegment cmsg = control;
        cmsg.set(JAVA_LONG, 0, SocketCalls.cmsgLen(fds.length));
        cmsg.set(JAVA_INT, SocketCalls.CMSG_LEVEL, SocketCalls.SOL_SOCKET);
        cmsg.set(JAVA_INT, SocketCalls.CMSG_TYPE, SocketCalls.SCM_RIGHTS);
        for (int i = 0; i < fds.length; i++) {
          cmsg.set(JAVA_INT, SocketCalls.CMSG_HEADER + 4L * i, fds[i].value());
        }
      }
      long n = SocketCalls.sendmsg(fd.value(), msghdr, SocketCalls.MSG_NOSIGNAL);
      if (n == Libc.WOULD_BLOCK) {
        if (sent == 0) throw new Full(fd);
        throw new IOException(
            "the peer on "
                + fd
                + " stopped reading in the middle of a message: the buffer is full");
      }
      sent += n;
      withFds = false;
    } while (sent < data.byteSize());
  }

  /**
   * Receives up to {@code into.byteSize()} bytes; fds that came with them are adopted and added to
   * {@code fds}.
   *
   * @return the bytes received, 0 at end of stream, or {@link Libc#WOULD_BLOCK} on a non-blocking
   *     socket with nothing to read
   * @throws IOException when the peer sent more than {@link #MAX_FDS} fds (the ones that arrived
   *     are closed) or anything but fds as ancillary data
   */
  public long receive(MemorySegment into, List<Fd> fds) throws IOException {
    prepare(into, MAX_FDS);
    long n = SocketCalls.recvmsg(fd.value(), msghdr, SocketCalls.MSG_CMSG_CLOEXEC);
    if (n == Libc.WOULD_BLOCK) return n;
    List<Fd> received = takeFds();
    int flags = msghdr.get(JAVA_INT, SocketCalls.MSG_FLAGS);
    if ((flags & SocketCalls.MSG_CTRUNC) != 0) {
      received.forEach(Fd::close);
      throw new IOException(
          "the peer sent more than " + MAX_FDS + " fds in one message; closed them all");
    }
    fds.addAll(received);
    return n;
  }

  /**
   * Receives exactly {@code into.byteSize()} bytes (blocking); false at end of stream before any.
   */
  public boolean receiveFully(MemorySegment into, List<Fd> fds) throws IOException {
    long got = 0;
    while (got < into.byteSize()) {
      long n = receive(into.asSlice(got), fds);
      if (n == 0) {
        if (got == 0) return false;
        throw new IOException(
            "the peer closed the connection mid-message (" + got + " of " + into.byteSize() + ")");
      }
      if (n == Libc.WOULD_BLOCK) throw new IOException("receiveFully on a non-blocking socket");
      got += n;
    }
    return true;
  }

  private void prepare(MemorySegment data, int fdCapacity) {
    iovec.set(ADDRESS, 0, data);
    iovec.set(JAVA_LONG, 8, data.byteSize());
    msghdr.fill((byte) 0);
    msghdr.set(ADDRESS, SocketCalls.MSG_IOV, iovec);
    msghdr.set(JAVA_LONG, SocketCalls.MSG_IOVLEN, 1);
    if (fdCapacity > 0) {
      long length = fdCapacity == MAX_FDS ? control.byteSize() : SocketCalls.cmsgSpace(fdCapacity);
      control.fill((byte) 0);
      msghdr.set(ADDRESS, SocketCalls.MSG_CONTROL, control);
      msghdr.set(JAVA_LONG, SocketCalls.MSG_CONTROLLEN, length);
    }
  }

  /** Adopts every fd in the control data recvmsg filled, so none can leak on a later error. */
  private List<Fd> takeFds() throws IOException {
    List<Fd> fds = new ArrayList<>(0);
    long controlLength = msghdr.get(JAVA_LONG, SocketCalls.MSG_CONTROLLEN);
    long offset = 0;
    IOException bad = null;
    while (offset + SocketCalls.CMSG_HEADER <= controlLength) {
      long length = control.get(JAVA_LONG, offset);
      if (length < SocketCalls.CMSG_HEADER || offset + length > controlLength) break;
      int level = control.get(JAVA_INT, offset + SocketCalls.CMSG_LEVEL);
      int type = control.get(JAVA_INT, offset + SocketCalls.CMSG_TYPE);
      if (level == SocketCalls.SOL_SOCKET && type == SocketCalls.SCM_RIGHTS) {
        for (long at = SocketCalls.CMSG_HEADER; at + 4 <= length; at += 4) {
          fds.add(Fd.adopt(control.get(JAVA_INT, offset + at)));
        }
      } else {
        bad = new IOException("unexpected ancillary data (level " + level + ", type " + type + ")");
      }
      offset += (length + 7) & ~7L;
    }
    if (bad != null) {
      fds.forEach(Fd::close);
      throw bad;
    }
    return fds;
  }

  /** Shuts both directions down, waking a thread blocked in receive; the fd stays open. */
  public void shutdown() {
    try {
      SocketCalls.shutdown(fd.value());
    } catch (NativeException | IllegalStateException e) {
      // already gone: nothing to wake
    }
  }

  @Override
  public void close() {
    fd.close();
    if (!closed.compareAndSet(false, true)) return; // Arena.close() throws the second time
    try {
      arena.close();
    } catch (IllegalStateException e) {
      closed.set(false); // a call on another thread still holds the buffers; close() again later
      throw e;
    }
  }

  @Override
  public String toString() {
    return "unix socket " + fd;
  }
}
