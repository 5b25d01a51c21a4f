package dev.bounce.vhost.socket;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Objects;

/**
 * A listening AF_UNIX stream socket at a path. A stale socket file (nobody accepts on it, as after
 * a crash) is replaced; a live one is left alone and refused, so two daemons cannot steal each
 * other's frontends. Closing removes the socket file if it is still the one this listener created.
 */
public final class UnixListener implements AutoCloseable {
  private static final int BACKLOG = 16;
  private static final int S_IFMT = 0xf000;
  private static final int S_IFSOCK = 0xc000;

  private final Fd fd;
  private final Path path;
  private final Object fileKey;

  private UnixListener(Fd fd, Path path, Object fileKey) {
    this.fd = fd;
    this.path = path;
    this.fileKey = fileKey;
  }

  /**
   * Listens at {@code path}.
   *
   * @param nonBlocking whether {@link #accept()} returns null instead of waiting (for an epoll
   *     loop)
   * @throws IOException when another process listens there, the path is something other than a
   *     socket, or the kernel refuses
   */
  public static UnixListener bind(Path path, boolean nonBlocking) throws IOException {
    removeStale(path);
    int type = SocketCalls.SOCK_STREAM | SocketCalls.SOCK_CLOEXEC;
    if (nonBlocking) type |= SocketCalls.SOCK_NONBLOCK;
    Fd fd = Fd.adopt(SocketCalls.socket(type));
    try {
      SocketCalls.bind(fd.value(), path);
      SocketCalls.listen(fd.value(), BACKLOG);
      return new UnixListener(fd, path, fileKey(path));
    } catch (IOException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  /**
   * Whether the inherited fd {@code fd} is a listening AF_UNIX stream socket; false for a connected
   * one.
   *
   * @throws IOException naming the fd when it is not an AF_UNIX stream socket at all
   */
  public static boolean listens(int fd) throws IOException {
    try {
      int domain = SocketCalls.intOption(fd, SocketCalls.SO_DOMAIN);
      int type = SocketCalls.intOption(fd, SocketCalls.SO_TYPE);
      if (domain != SocketCalls.AF_UNIX || type != SocketCalls.SOCK_STREAM) {
        throw new IOException(
            "fd "
                + fd
                + " is not an AF_UNIX stream socket (domain "
                + domain
                + ", type "
                + type
                + ")");
      }
      return SocketCalls.intOption(fd, SocketCalls.SO_ACCEPTCONN) != 0;
    } catch (NativeException e) {
      // The two a wrong --fd meets, said plainly; anything else names the call.
      throw new IOException(
          switch (e.errno()) {
            case Libc.ENOTSOCK -> "fd " + fd + " is not a socket";
            case Libc.EBADF -> "fd " + fd + " is not open in this process";
            default -> "fd " + fd + " is not a socket this process has: " + e.getMessage();
          },
          e);
    }
  }

  /**
   * Takes over an inherited listening socket ({@link #listens}; systemd's socket activation, a
   * management layer's {@code --fd}): made non-blocking. Closing it removes no file: its path, if
   * any, belongs to whoever created it.
   */
  public static UnixListener inherit(Fd fd) throws NativeException {
    Libc.setNonBlocking(fd.value());
    return new UnixListener(fd, null, null);
  }

  /**
   * Removes a socket file at {@code path} that nobody listens on (left by a process that died), so
   * a restarted daemon can bind again.
   *
   * @throws IOException when the path is something other than a socket, or someone listens there
   */
  public static void removeStale(Path path) throws IOException {
    removeStale(path, SocketCalls.SOCK_STREAM);
  }

  /** {@link #removeStale(Path)} for a socket of {@code type} (the probe must match it). */
  static void removeStale(Path path, int type) throws IOException {
    if (!Files.exists(path, LinkOption.NOFOLLOW_LINKS)) return;
    // isOther() is also true of FIFOs and device nodes, which a connect probe calls stale too.
    int mode = (Integer) Files.getAttribute(path, "unix:mode", LinkOption.NOFOLLOW_LINKS);
    if ((mode & S_IFMT) != S_IFSOCK) {
      throw new IOException(path + " exists and is not a socket: remove it or choose another path");
    }
    // Non-blocking: a blocking connect to a live listener whose backlog is full waits forever.
    Fd probe =
        Fd.adopt(SocketCalls.socket(type | SocketCalls.SOCK_CLOEXEC | SocketCalls.SOCK_NONBLOCK));
    try {
      int refused;
      try {
        refused = SocketCalls.connect(probe.value(), path);
      } catch (NativeException e) {
        if (e.errno() != Libc.EAGAIN) throw e;
        refused = 0; // backlog full: someone listens there
      }
      if (refused == 0) {
        throw new IOException(
            "another process is listening at " + path + ": stop it or choose another path");
      }
    } finally {
      probe.close();
    }
    Files.deleteIfExists(path);
  }

  private static Object fileKey(Path path) throws IOException {
    return Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS)
        .fileKey();
  }

  /** Where it listens, or null for an inherited listener. */
  public Path path() {
    return path;
  }

  public Fd fd() {
    return fd;
  }

  /** The next connection, or null when a non-blocking listener has none waiting. */
  public UnixSocket accept() throws IOException {
    int client = SocketCalls.accept(fd.value(), SocketCalls.SOCK_CLOEXEC);
    return client < 0 ? null : UnixSocket.adopt(Fd.adopt(client));
  }

  @Override
  public void close() {
    // Compare before closing: while the fd is open the socket's inode cannot be freed, so no file
    // created since can have its number (and so its file key).
    try {
      if (path != null
          && Files.exists(path, LinkOption.NOFOLLOW_LINKS)
          && Objects.equals(fileKey(path), fileKey)) {
        Files.delete(path);
      }
    } catch (IOException e) {
      // someone else removed or replaced it: theirs now
    } finally {
      fd.close();
    }
  }

  @Override
  public String toString() {
    return path == null ? "listener on inherited fd " + fd.value() : "listener at " + path;
  }
}
