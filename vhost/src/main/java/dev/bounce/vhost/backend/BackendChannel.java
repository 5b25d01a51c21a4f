package dev.bounce.vhost.backend;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.loop.FdWatch;
import dev.bounce.vhost.protocol.BackendRequest;
import dev.bounce.vhost.protocol.BackendRequests;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.Payload;
import dev.bounce.vhost.socket.UnixSocket;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.IoEventLoop;
import java.io.IOException;
import java.lang.foreign.MemorySegment;

/**
 * The backend channel of vhost-user.rst (SET_BACKEND_REQ_FD): back-end requests to the frontend,
 * sent by the control loop without NEED_REPLY, on a non-blocking socket. A frontend that serves its
 * channel only between its own requests would deadlock with a backend waiting for a reply, and a
 * frontend that is slow to read must not block the control loop, which every session shares.
 */
final class BackendChannel implements AutoCloseable {
  /** What became of a request. */
  enum Sent {
    SENT,
    /** The frontend has not read what came before: nothing went; {@link #awaitRoom} then. */
    FULL,
    /** The frontend is gone, or stopped reading in the middle of a message. */
    FAILED
  }

  private final UnixSocket socket;
  private final IoEventLoop loop;
  // One buffer for every message, reused (notices can come at the ring's pace): native memory,
  // released in close.
  private final ByteBuf message = Unpooled.directBuffer(Header.SIZE + Header.MAX_PAYLOAD);
  private FdWatch roomWatch;
  private IOException failure;

  /** Takes {@code fd} (closed if it cannot be made non-blocking). */
  static BackendChannel adopt(Fd fd, IoEventLoop loop) throws IOException {
    UnixSocket socket = UnixSocket.adopt(fd);
    try {
      Libc.setNonBlocking(fd.value());
    } catch (NativeException e) {
      socket.close();
      throw e;
    }
    return new BackendChannel(socket, loop);
  }

  private BackendChannel(UnixSocket socket, IoEventLoop loop) {
    this.socket = socket;
    this.loop = loop;
  }

  /** Sends {@code request} whole or not at all (a FULL one may be sent again). */
  Sent send(BackendRequest request, Payload payload, Fd... fds) {
    message.clear();
    try {
      BackendRequests.encode(message, request, payload, false);
      socket.send(MemorySegment.ofBuffer(message.nioBuffer(0, message.readableBytes())), fds);
      return Sent.SENT;
    } catch (UnixSocket.Full e) {
      return Sent.FULL;
    } catch (IOException e) {
      failure = e;
      return Sent.FAILED;
    }
  }

  /** Why the last {@link Sent#FAILED} send failed. */
  IOException failure() {
    return failure;
  }

  /**
   * Runs {@code onRoom} on the control loop when the frontend has read some of the channel (and
   * whenever it reads more, until {@link #roomDone}): watched only while something waits, since
   * every read of the frontend's would otherwise wake the control loop.
   */
  void awaitRoom(Runnable onRoom) {
    if (roomWatch == null) roomWatch = FdWatch.startEdgeTriggered(loop, socket.fd(), onRoom::run);
  }

  /** Nothing waits any more. */
  void roomDone() {
    if (roomWatch == null) return;
    roomWatch.close();
    roomWatch = null;
  }

  @Override
  public void close() {
    roomDone();
    socket.close();
    message.release();
  }
}
