package dev.bounce.vhost.socket;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * The AF_UNIX socket calls, through java.lang.foreign with errno captured by {@link Libc}. Layouts
 * are those of the 64-bit Linux ABIs (x86-64 and arm64 agree on all of them).
 */
final class SocketCalls {
  static final int AF_UNIX = 1;
  static final int SOCK_STREAM = 1;
  static final int SOCK_SEQPACKET = 5;
  static final int SOCK_NONBLOCK = 0x800;
  static final int SOCK_CLOEXEC = 0x80000;
  static final int SOL_SOCKET = 1;
  static final int SO_TYPE = 3;
  static final int SO_ACCEPTCONN = 30;
  static final int SO_DOMAIN = 39;
  static final int SCM_RIGHTS = 1;
  static final int MSG_PEEK = 0x2;
  static final int MSG_CTRUNC = 0x8;
  static final int MSG_TRUNC = 0x20;
  static final int MSG_DONTWAIT = 0x40;
  static final int MSG_EOR = 0x80;
  static final int MSG_NOSIGNAL = 0x4000;
  static final int MSG_CMSG_CLOEXEC = 0x40000000;
  static final int SHUT_WR = 1;
  static final int SHUT_RDWR = 2;
  static final int ECONNREFUSED = 111;
  static final int ENOENT = 2;

  /** struct sockaddr_un: sa_family_t then 108 bytes of path, NUL-terminated. */
  static final int SUN_PATH_MAX = 108;

  static final long SOCKADDR_UN_SIZE = 2 + SUN_PATH_MAX;

  /** struct msghdr. */
  static final long MSGHDR_SIZE = 56;

  static final long MSG_IOV = 16;
  static final long MSG_IOVLEN = 24;
  static final long MSG_CONTROL = 32;
  static final long MSG_CONTROLLEN = 40;
  static final long MSG_FLAGS = 48;

  /** struct iovec. */
  static final long IOVEC_SIZE = 16;

  /** struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type, then data aligned to 8. */
  static final long CMSG_HEADER = 16;

  static final long CMSG_LEVEL = 8;
  static final long CMSG_TYPE = 12;

  private static final MethodHandle SOCKET =
      Libc.downcall("socket", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
  private static final MethodHandle BIND =
      Libc.downcall("bind", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle LISTEN =
      Libc.downcall("listen", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));
  private static final MethodHandle ACCEPT4 =
      Libc.downcall(
          "accept4", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT));
  private static final MethodHandle CONNECT =
      Libc.downcall("connect", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle SENDMSG =
      Libc.downcall("sendmsg", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle RECVMSG =
      Libc.downcall("recvmsg", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle SEND =
      Libc.downcall(
          "send", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
  private static final MethodHandle RECV =
      Libc.downcall(
          "recv", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
  private static final MethodHandle GETSOCKOPT =
      Libc.downcall(
          "getsockopt",
          FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS));
  private static final MethodHandle SHUTDOWN =
      Libc.downcall("shutdown", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));

  private SocketCalls() {}

  /** CMSG_SPACE for {@code fds} ints: header plus data rounded up to 8. */
  static long cmsgSpace(int fds) {
    return CMSG_HEADER + ((fds * 4L + 7) & ~7L);
  }

  /** CMSG_LEN for {@code fds} ints. */
  static long cmsgLen(int fds) {
    return CMSG_HEADER + fds * 4L;
  }

  static int socket(int type) throws NativeException {
    MemorySegment state = Libc.callState();
    try {
      int fd = (int) SOCKET.invokeExact(state, AF_UNIX, type, 0);
      if (fd < 0) throw Libc.fail("socket", "AF_UNIX, type 0x" + Integer.toHexString(type), state);
      return fd;
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** A sockaddr_un for {@code path}; refuses paths the kernel cannot hold. */
  static MemorySegment address(Arena arena, Path path) {
    byte[] bytes = path.toString().getBytes(StandardCharsets.UTF_8);
    if (bytes.length >= SUN_PATH_MAX) {
      throw new IllegalArgumentException(
          "socket path is "
              + bytes.length
              + " bytes, more than a Unix socket can hold ("
              + (SUN_PATH_MAX - 1)
              + "): "
              + path);
    }
    MemorySegment address = arena.allocate(SOCKADDR_UN_SIZE);
    address.set(JAVA_SHORT, 0, (short) AF_UNIX);
    MemorySegment.copy(bytes, 0, address, JAVA_BYTE, 2, bytes.length);
    return address;
  }

  static void bind(int fd, Path path) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      if ((int) BIND.invokeExact(state, fd, address(arena, path), (int) SOCKADDR_UN_SIZE) < 0) {
        throw Libc.fail("bind", path.toString(), state);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  static void listen(int fd, int backlog) throws NativeException {
    MemorySegment state = Libc.callState();
    try {
      if ((int) LISTEN.invokeExact(state, fd, backlog) < 0) {
        throw Libc.fail("listen", "fd " + fd, state);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** accept4 with close-on-exec; returns the new fd or -1 when a non-blocking listener has none. */
  static int accept(int fd, int flags) throws NativeException {
    MemorySegment state = Libc.callState();
    try {
      while (true) {
        int client =
            (int) ACCEPT4.invokeExact(state, fd, MemorySegment.NULL, MemorySegment.NULL, flags);
        if (client >= 0) return client;
        int errno = Libc.errno(state);
        if (errno == Libc.EAGAIN) return -1;
        if (errno != Libc.EINTR) throw new NativeException("accept4", "fd " + fd, errno);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** connect(2); returns 0, or the errno when it is ECONNREFUSED or ENOENT (nobody listening). */
  static int connect(int fd, Path path) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      while (true) {
        if ((int) CONNECT.invokeExact(state, fd, address(arena, path), (int) SOCKADDR_UN_SIZE)
            == 0) {
          return 0;
        }
        int errno = Libc.errno(state);
        if (errno == ECONNREFUSED || errno == ENOENT) return errno;
        if (errno != Libc.EINTR) throw new NativeException("connect", path.toString(), errno);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** sendmsg(2); returns bytes sent or {@link Libc#WOULD_BLOCK}. */
  static long sendmsg(int fd, MemorySegment msghdr, int flags) throws NativeException {
    return retried("sendmsg", fd, state -> (long) SENDMSG.invokeExact(state, fd, msghdr, flags));
  }

  /** recvmsg(2); returns bytes received (0 at end of stream) or {@link Libc#WOULD_BLOCK}. */
  static long recvmsg(int fd, MemorySegment msghdr, int flags) throws NativeException {
    return retried("recvmsg", fd, state -> (long) RECVMSG.invokeExact(state, fd, msghdr, flags));
  }

  /** send(2); returns bytes sent or {@link Libc#WOULD_BLOCK}. */
  static long send(int fd, MemorySegment data, long length, int flags) throws NativeException {
    return retried("send", fd, state -> (long) SEND.invokeExact(state, fd, data, length, flags));
  }

  /**
   * recv(2); returns what recv returns (bytes, or with MSG_TRUNC the message's length), or {@link
   * Libc#WOULD_BLOCK}.
   */
  static long recv(int fd, MemorySegment into, long length, int flags) throws NativeException {
    return retried("recv", fd, state -> (long) RECV.invokeExact(state, fd, into, length, flags));
  }

  /** One socket call, as a lambda over the errno capture state. */
  @FunctionalInterface
  private interface Call {
    long invoke(MemorySegment state) throws Throwable;
  }

  /**
   * Runs {@code call} again while it is interrupted (EINTR); EAGAIN becomes {@link
   * Libc#WOULD_BLOCK}, any other failure a {@link NativeException} naming {@code name} and {@code
   * fd}.
   */
  private static long retried(String name, int fd, Call call) throws NativeException {
    MemorySegment state = Libc.callState();
    try {
      while (true) {
        long n = call.invoke(state);
        if (n >= 0) return n;
        int errno = Libc.errno(state);
        if (errno == Libc.EAGAIN) return Libc.WOULD_BLOCK;
        if (errno != Libc.EINTR) throw new NativeException(name, "fd " + fd, errno);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  static void shutdown(int fd) throws NativeException {
    shutdown(fd, SHUT_RDWR);
  }

  /** shutdown(2) with {@code how}: {@link #SHUT_WR} or {@link #SHUT_RDWR}. */
  static void shutdown(int fd, int how) throws NativeException {
    MemorySegment state = Libc.callState();
    try {
      if ((int) SHUTDOWN.invokeExact(state, fd, how) < 0) {
        throw Libc.fail("shutdown", "fd " + fd, state);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** getsockopt(2) of an int option at SOL_SOCKET ({@link #SO_TYPE}, {@link #SO_DOMAIN}...). */
  static int intOption(int fd, int option) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment value = arena.allocate(JAVA_INT);
      MemorySegment length = arena.allocate(JAVA_INT);
      length.set(JAVA_INT, 0, (int) JAVA_INT.byteSize());
      if ((int) GETSOCKOPT.invokeExact(state, fd, SOL_SOCKET, option, value, length) < 0) {
        throw Libc.fail("getsockopt", "fd " + fd + ", option " + option, state);
      }
      return value.get(JAVA_INT, 0);
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }
}
