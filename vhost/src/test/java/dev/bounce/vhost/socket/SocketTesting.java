package dev.bounce.vhost.socket;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;

/**
 * What the socket tests need beyond the code under test: a raw sendmsg that attaches any number of
 * fds (to play a misbehaving peer), a few socket options, and a FIFO. Independent of {@link
 * UnixSocket}'s own msghdr handling on purpose.
 */
public final class SocketTesting {
  static final int F_SETFL = 4;
  static final int O_NONBLOCK = 0x800;
  static final int FD_CLOEXEC = 1;
  static final int EPIPE = 32;
  public static final int SO_SNDBUF = 7;
  static final int SO_PASSCRED = 16;

  /** SO_SNDTIMEO with a struct timeval of two longs: the value on both 64-bit ABIs. */
  static final int SO_SNDTIMEO = 21;

  private static final int S_IFMT = 0xf000;
  private static final int S_IFSOCK = 0xc000;

  private static final MethodHandle SETSOCKOPT =
      Libc.downcall(
          "setsockopt",
          FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle GETSOCKOPT =
      Libc.downcall(
          "getsockopt",
          FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS));
  private static final MethodHandle MKFIFO =
      Libc.downcall("mkfifo", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));

  /** ioctl(2) with a pointer argument (it is variadic). */
  private static final MethodHandle IOCTL =
      Linker.nativeLinker()
          .downcallHandle(
              Linker.nativeLinker().defaultLookup().find("ioctl").orElseThrow(),
              FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS),
              Linker.Option.firstVariadicArg(2),
              Linker.Option.captureCallState("errno"));

  /** SIOCOUTQ (TIOCOUTQ): for a Unix socket, the bytes of its buffers the peer has not read yet. */
  private static final long SIOCOUTQ = 0x5411;

  private SocketTesting() {}

  /** A native segment holding {@code bytes}. */
  static MemorySegment segment(Arena arena, byte[] bytes) {
    MemorySegment segment = arena.allocate(Math.max(1, bytes.length));
    MemorySegment.copy(bytes, 0, segment, JAVA_BYTE, 0, bytes.length);
    return segment.asSlice(0, bytes.length);
  }

  static byte[] bytes(MemorySegment segment) {
    return segment.toArray(JAVA_BYTE);
  }

  /**
   * One sendmsg(2) of {@code data} with every fd in {@code fds} in one SCM_RIGHTS message, however
   * many: a peer that breaks the 8-fd rule. Returns the bytes sent.
   */
  static long rawSend(int socket, byte[] data, int... fds) throws NativeException {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment payload = segment(arena, data);
      MemorySegment iovec = arena.allocate(SocketCalls.IOVEC_SIZE, 8);
      iovec.set(ADDRESS, 0, payload);
      iovec.set(JAVA_LONG, 8, data.length);
      MemorySegment msghdr = arena.allocate(SocketCalls.MSGHDR_SIZE, 8);
      msghdr.set(ADDRESS, SocketCalls.MSG_IOV, iovec);
      msghdr.set(JAVA_LONG, SocketCalls.MSG_IOVLEN, 1);
      if (fds.length > 0) {
        MemorySegment control = arena.allocate(SocketCalls.cmsgSpace(fds.length), 8);
        control.set(JAVA_LONG, 0, SocketCalls.cmsgLen(fds.length));
        control.set(JAVA_INT, SocketCalls.CMSG_LEVEL, SocketCalls.SOL_SOCKET);
        control.set(JAVA_INT, SocketCalls.CMSG_TYPE, SocketCalls.SCM_RIGHTS);
        for (int i = 0; i < fds.length; i++) {
          control.set(JAVA_INT, SocketCalls.CMSG_HEADER + 4L * i, fds[i]);
        }
        msghdr.set(ADDRESS, SocketCalls.MSG_CONTROL, control);
        msghdr.set(JAVA_LONG, SocketCalls.MSG_CONTROLLEN, control.byteSize());
      }
      return SocketCalls.sendmsg(socket, msghdr, SocketCalls.MSG_NOSIGNAL);
    }
  }

  static void setInt(Fd socket, int option, int value) throws NativeException {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment v = arena.allocate(JAVA_INT);
      v.set(JAVA_INT, 0, value);
      setsockopt(socket, option, v);
    }
  }

  /** An int socket option as the kernel keeps it (SO_SNDBUF: twice what was set). */
  public static int getInt(Fd socket, int option) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment v = arena.allocate(JAVA_INT);
      MemorySegment length = arena.allocate(JAVA_INT);
      length.set(JAVA_INT, 0, 4);
      int result =
          (int)
              GETSOCKOPT.invokeExact(
                  state, socket.value(), SocketCalls.SOL_SOCKET, option, v, length);
      if (result < 0) throw Libc.fail("getsockopt", "option " + option, state);
      return v.get(JAVA_INT, 0);
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /**
   * What {@code socket} has sent and its peer not read yet, counted as the kernel counts it against
   * SO_SNDBUF (with each buffer's overhead): a write blocks once this reaches {@link #getInt
   * getInt(socket, SO_SNDBUF)}.
   */
  public static int unsent(Fd socket) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment v = arena.allocate(JAVA_INT);
      int result = (int) IOCTL.invokeExact(state, socket.value(), SIOCOUTQ, v);
      if (result < 0) throw Libc.fail("ioctl", "SIOCOUTQ", state);
      return v.get(JAVA_INT, 0);
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** SO_SNDTIMEO: a write waits at most {@code millis} for room; 0 waits as long as it takes. */
  static void setSendTimeout(Fd socket, long millis) throws NativeException {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment timeval = arena.allocate(16, 8);
      timeval.set(JAVA_LONG, 0, millis / 1000);
      timeval.set(JAVA_LONG, 8, (millis % 1000) * 1000);
      setsockopt(socket, SO_SNDTIMEO, timeval);
    }
  }

  private static void setsockopt(Fd socket, int option, MemorySegment value)
      throws NativeException {
    MemorySegment state = Libc.callState();
    try {
      int result =
          (int)
              SETSOCKOPT.invokeExact(
                  state,
                  socket.value(),
                  SocketCalls.SOL_SOCKET,
                  option,
                  value,
                  (int) value.byteSize());
      if (result < 0) throw Libc.fail("setsockopt", "option " + option, state);
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  static void setNonBlocking(Fd fd) throws NativeException {
    int flags = Libc.fcntl(fd.value(), Libc.F_GETFL, 0);
    Libc.fcntl(fd.value(), F_SETFL, flags | O_NONBLOCK);
  }

  static void mkfifo(Path path) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      if ((int) MKFIFO.invokeExact(state, arena.allocateFrom(path.toString()), 0600) < 0) {
        throw Libc.fail("mkfifo", path.toString(), state);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** A socket file left behind by a listener that died: bound, listened on, fd closed. */
  static void leaveStaleSocketFile(Path path) throws NativeException {
    int fd = SocketCalls.socket(SocketCalls.SOCK_STREAM | SocketCalls.SOCK_CLOEXEC);
    try {
      SocketCalls.bind(fd, path);
      SocketCalls.listen(fd, 1);
    } finally {
      Libc.close(fd);
    }
  }

  static boolean isSocketFile(Path path) throws IOException {
    if (!Files.exists(path, LinkOption.NOFOLLOW_LINKS)) return false;
    int mode = (Integer) Files.getAttribute(path, "unix:mode", LinkOption.NOFOLLOW_LINKS);
    return (mode & S_IFMT) == S_IFSOCK;
  }

  static Object fileKey(Path path) throws IOException {
    return Files.readAttributes(
            path, java.nio.file.attribute.BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS)
        .fileKey();
  }
}
