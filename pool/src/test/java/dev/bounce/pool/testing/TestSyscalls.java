package dev.bounce.pool.testing;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.NativeException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * Syscalls tests need and bounce does not: fds that are not memory (pipes), and {@link Libc#dup}
 * for an {@link Fd}. Through {@link Libc#downcall}, so errno is captured the same way.
 */
public final class TestSyscalls {
  private static final int O_CLOEXEC = 0x80000;

  private static final int AF_UNIX = 1;
  private static final int SOCK_STREAM = 1;
  private static final int SOCK_CLOEXEC = 0x80000;

  private static final MethodHandle PIPE2 =
      Libc.downcall("pipe2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle SOCKETPAIR =
      Libc.downcall(
          "socketpair", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS));

  private static final int SOL_SOCKET = 1;
  private static final int SO_SNDBUF = 7;
  private static final MethodHandle SETSOCKOPT =
      Libc.downcall(
          "setsockopt",
          FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));

  private TestSyscalls() {}

  /** A new fd (close-on-exec) for the same open file as {@code fd}; the caller owns it. */
  public static Fd dup(Fd fd) throws NativeException {
    return Libc.dup(fd.value());
  }

  /** A new fd for {@code memfd}'s file, for an API that takes ownership of the fd it is given. */
  public static Fd dup(Memfd memfd) throws NativeException {
    return dup(memfd.fd());
  }

  /** The two ends of a pipe. */
  public record Pipe(Fd readEnd, Fd writeEnd) implements AutoCloseable {
    @Override
    public void close() {
      readEnd.close();
      writeEnd.close();
    }
  }

  /** pipe2(2) with O_CLOEXEC. */
  public static Pipe pipe() throws NativeException {
    Fd[] ends =
        fdPair(
            "pipe2", "O_CLOEXEC", (state, fds) -> (int) PIPE2.invokeExact(state, fds, O_CLOEXEC));
    return new Pipe(ends[0], ends[1]);
  }

  /** A call that fills {@code fds} with two new fds, returning what the C function returned. */
  @FunctionalInterface
  private interface FdPairCall {
    int call(MemorySegment state, MemorySegment fds) throws Throwable;
  }

  private static Fd[] fdPair(String call, String what, FdPairCall c) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment fds = arena.allocate(JAVA_INT, 2);
      if (c.call(state, fds) < 0) throw Libc.fail(call, what, state);
      return new Fd[] {
        Fd.adopt(fds.getAtIndex(JAVA_INT, 0)), Fd.adopt(fds.getAtIndex(JAVA_INT, 1))
      };
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }

  /** The two ends of a connected stream socket pair; bytes written to one are read at the other. */
  public record SocketPair(Fd one, Fd other) implements AutoCloseable {
    @Override
    public void close() {
      one.close();
      other.close();
    }
  }

  /**
   * socketpair(2) AF_UNIX SOCK_STREAM with close-on-exec: the kind of socket a host application
   * connects to bounce with, for tests of reads and FIONREAD on a real socket.
   */
  public static SocketPair socketPair() throws NativeException {
    Fd[] ends =
        fdPair(
            "socketpair",
            "AF_UNIX, SOCK_STREAM",
            (state, fds) ->
                (int) SOCKETPAIR.invokeExact(state, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    return new SocketPair(ends[0], ends[1]);
  }

  /** Whether {@code fd} is open in this process (fcntl F_GETFD succeeds). */
  public static boolean isOpen(int fd) {
    try {
      Libc.fcntl(fd, Libc.F_GETFD, 0);
      return true;
    } catch (NativeException e) {
      if (e.errno() == Libc.EBADF) return false;
      throw new AssertionError(e);
    }
  }

  /**
   * setsockopt SO_SNDBUF (Linux doubles it): a small send buffer makes a write larger than half of
   * it partial, as a host socket a slow application leaves full takes only part of a packet.
   */
  public static void setSendBuffer(Fd socket, int bytes) throws NativeException {
    MemorySegment state = Libc.callState();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment value = arena.allocate(JAVA_INT);
      value.set(JAVA_INT, 0, bytes);
      int r = (int) SETSOCKOPT.invokeExact(state, socket.value(), SOL_SOCKET, SO_SNDBUF, value, 4);
      if (r < 0) throw Libc.fail("setsockopt", "SO_SNDBUF " + bytes, state);
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw Libc.unexpected(t);
    }
  }
}
