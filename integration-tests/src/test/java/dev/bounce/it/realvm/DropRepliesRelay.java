package dev.bounce.it.realvm;

import dev.bounce.pool.Fd;
import dev.bounce.vhost.socket.UnixListener;
import dev.bounce.vhost.socket.UnixSocket;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A deliberately broken backend, made of a healthy one: sits between QEMU and bounce, passes every
 * frontend message on (fds included) and drops everything bounce sends back. Lets a test prove the
 * harness fails clearly, without a test hook in bounce.
 */
final class DropRepliesRelay implements AutoCloseable {
  private final UnixListener listener;
  private final Path backend;
  private final Thread acceptor;
  private final AtomicLong forwarded = new AtomicLong();
  private final AtomicLong dropped = new AtomicLong();
  private final List<UnixSocket> sockets = new ArrayList<>();
  private final List<Thread> relaying = new ArrayList<>();
  private volatile boolean closed;
  private volatile String error;

  private DropRepliesRelay(UnixListener listener, Path backend) {
    this.listener = listener;
    this.backend = backend;
    acceptor = Thread.ofPlatform().daemon().name("relay-accept").start(this::acceptLoop);
  }

  /**
   * Listens at {@code path} for the frontend; relays to the backend listening at {@code backend}.
   */
  static DropRepliesRelay start(Path path, Path backend) throws IOException {
    // Non-blocking accept polled with a short sleep: a thread blocked in accept(2) would not wake
    // when the listener is closed.
    return new DropRepliesRelay(UnixListener.bind(path, true), backend);
  }

  Path path() {
    return listener.path();
  }

  private void acceptLoop() {
    try {
      while (!closed) {
        UnixSocket frontend = listener.accept();
        if (frontend == null) {
          Thread.sleep(20);
          continue;
        }
        UnixSocket bounce = UnixSocket.connect(backend);
        synchronized (sockets) {
          sockets.add(frontend);
          sockets.add(bounce);
          relaying.add(
              Thread.ofPlatform().daemon().name("relay-pass").start(() -> pass(frontend, bounce)));
          relaying.add(
              Thread.ofPlatform().daemon().name("relay-drop").start(() -> drop(bounce, frontend)));
        }
      }
    } catch (IOException | InterruptedException e) {
      if (!closed) error = e.toString();
    }
  }

  /** Frontend to backend: bytes and the fds that came with them, as they arrive. */
  private void pass(UnixSocket from, UnixSocket to) {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment buffer = arena.allocate(64 * 1024);
      List<Fd> fds = new ArrayList<>();
      long n;
      while ((n = from.receive(buffer, fds)) > 0) {
        to.send(buffer.asSlice(0, n), fds.toArray(Fd[]::new));
        fds.forEach(Fd::close); // the backend has its own copies now
        fds.clear();
        forwarded.addAndGet(n);
      }
    } catch (IOException e) {
      if (!closed) error = e.toString();
    } finally {
      to.shutdown();
    }
  }

  /** Backend to frontend: read and thrown away. */
  private void drop(UnixSocket from, UnixSocket to) {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment buffer = arena.allocate(64 * 1024);
      List<Fd> fds = new ArrayList<>();
      long n;
      while ((n = from.receive(buffer, fds)) > 0) {
        fds.forEach(Fd::close);
        fds.clear();
        dropped.addAndGet(n);
      }
    } catch (IOException e) {
      if (!closed) error = e.toString();
    } finally {
      to.shutdown();
    }
  }

  /** What the relay did, for failure messages. */
  String summary() {
    return "relay between QEMU and bounce: passed "
        + forwarded.get()
        + " bytes from QEMU to bounce, dropped "
        + dropped.get()
        + " bytes of bounce's replies"
        + (error == null ? "" : "; error: " + error);
  }

  @Override
  public void close() throws InterruptedException {
    closed = true;
    acceptor.join();
    listener.close();
    synchronized (sockets) {
      sockets.forEach(UnixSocket::shutdown); // wakes the relaying threads blocked in receive
      for (Thread thread : relaying) thread.join();
      sockets.forEach(UnixSocket::close); // only now: a socket's buffers die with it
    }
  }
}
