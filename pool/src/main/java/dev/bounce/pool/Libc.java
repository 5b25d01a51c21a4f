package dev.bounce.pool;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout.PathElement;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;

/**
 * The few libc calls bounce needs, through java.lang.foreign, with errno captured and turned into a
 * {@link NativeException} that names the call. Every other class goes through here (the socket
 * layer of module vhost adds its calls with {@link #downcall} and {@link #fail}).
 *
 * <p>The calls on hot paths ({@link #read}, {@link #write}) allocate nothing: the errno capture
 * buffer is per thread and allocated once.
 */
public final class Libc {
  public static final int MFD_CLOEXEC = 0x1;
  public static final int MFD_ALLOW_SEALING = 0x2;
  public static final int F_GETFD = 1;
  public static final int F_SETFD = 2;
  public static final int F_GETFL = 3;
  public static final int F_SETFL = 4;
  public static final int FD_CLOEXEC = 1;
  public static final int O_NONBLOCK = 0x800;
  public static final int F_DUPFD_CLOEXEC = 1030;
  public static final int F_ADD_SEALS = 1033;
  public static final int F_GET_SEALS = 1034;
  public static final int PROT_READ = 0x1;
  public static final int PROT_WRITE = 0x2;
  public static final int MAP_SHARED = 0x1;
  public static final int EFD_SEMAPHORE = 0x1;
  public static final int EFD_NONBLOCK = 0x800;
  public static final int EFD_CLOEXEC = 0x80000;
  public static final int EINTR = 4;
  public static final int EBADF = 9;
  public static final int EAGAIN = 11;
  public static final int EFAULT = 14;
  public static final int EINVAL = 22;
  public static final int ENOTSOCK = 88;

  /** What {@link #read} and {@link #write} return when a non-blocking fd is not ready (EAGAIN). */
  public static final long WOULD_BLOCK = -1;

  private static final Linker LINKER = Linker.nativeLinker();
  private static final StructLayout CALL_STATE = Linker.Option.captureStateLayout();
  private static final VarHandle ERRNO =
      CALL_STATE.varHandle(PathElement.groupElement("errno")).withInvokeExactBehavior();
  private static final ThreadLocal<MemorySegment> STATE =
      ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(CALL_STATE));

  private static final MethodHandle MEMFD_CREATE =
      downcall("memfd_create", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle FTRUNCATE =
      downcall("ftruncate", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG));
  private static final MethodHandle FCNTL =
      downcall("fcntl", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
  private static final MethodHandle FSTAT =
      downcall("fstat", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS));
  private static final MethodHandle MMAP =
      downcall(
          "mmap",
          FunctionDescriptor.of(
              ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG));
  private static final MethodHandle MUNMAP =
      downcall("munmap", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
  private static final MethodHandle EVENTFD =
      downcall("eventfd", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));
  private static final MethodHandle READ =
      downcall("read", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
  private static final MethodHandle WRITE =
      downcall("write", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
  private static final MethodHandle READV =
      downcall("readv", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle WRITEV =
      downcall("writev", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT));
  private static final MethodHandle POLL =
      downcall("poll", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
  private static final MethodHandle CLOSE =
      downcall("close", FunctionDescriptor.of(JAVA_INT, JAVA_INT));
  private static final MethodHandle STRERROR =
      plainDowncall("strerror", FunctionDescriptor.of(ADDRESS, JAVA_INT));

  /** glibc 2.32 and later only: older libcs get "errno N" in messages instead of the name. */
  private static final MethodHandle STRERRORNAME_NP =
      LINKER
          .defaultLookup()
          .find("strerrorname_np")
          .map(s -> LINKER.downcallHandle(s, FunctionDescriptor.of(ADDRESS, JAVA_INT)))
          .orElse(null);

  private Libc() {}

  /**
   * A handle to a libc function whose first argument is the errno capture segment: pass {@link
   * #callState()} and read {@link #errno(MemorySegment)} after a failure.
   */
  public static MethodHandle downcall(String name, FunctionDescriptor descriptor) {
    return LINKER.downcallHandle(symbol(name), descriptor, Linker.Option.captureCallState("errno"));
  }

  /**
   * The kernel's page size (getpagesize(3)): mmap(2) offsets are multiples of it, and it is not
   * 4096 everywhere (arm64 kernels are built with 16 KiB or 64 KiB pages too).
   */
  static long pageSize() {
    try {
      return (int) plainDowncall("getpagesize", FunctionDescriptor.of(JAVA_INT)).invokeExact();
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  private static MethodHandle plainDowncall(String name, FunctionDescriptor descriptor) {
    return LINKER.downcallHandle(symbol(name), descriptor);
  }

  private static MemorySegment symbol(String name) {
    return LINKER
        .defaultLookup()
        .find(name)
        .orElseThrow(() -> new UnsatisfiedLinkError("libc has no " + name));
  }

  /** This thread's errno capture segment; allocated once per thread. */
  public static MemorySegment callState() {
    return STATE.get();
  }

  public static int errno(MemorySegment state) {
    return (int) ERRNO.get(state, 0L);
  }

  /** The exception for a call that just failed on this thread. */
  public static NativeException fail(String call, String what, MemorySegment state) {
    return new NativeException(call, what, errno(state));
  }

  /** Rethrows what a downcall handle threw: downcalls throw nothing checked, so this is a bug. */
  public static AssertionError unexpected(Throwable t) {
    if (t instanceof RuntimeException e) throw e;
    if (t instanceof Error e) throw e;
    return new AssertionError("a downcall threw a checked exception", t);
  }

  /** memfd_create(2) with {@code flags}; the name shows in /proc/PID/fd and maps. */
  public static int memfdCreate(String name, int flags) throws NativeException {
    MemorySegment state = callState();
    try (Arena arena = Arena.ofConfined()) {
      int fd = (int) MEMFD_CREATE.invokeExact(state, arena.allocateFrom(name), flags);
      if (fd < 0) throw fail("memfd_create", "name " + name, state);
      return fd;
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  public static void ftruncate(int fd, long size) throws NativeException {
    MemorySegment state = callState();
    try {
      if ((int) FTRUNCATE.invokeExact(state, fd, size) < 0) {
        throw fail("ftruncate", "fd " + fd + ", " + size + " bytes", state);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  public static int fcntl(int fd, int cmd, int arg) throws NativeException {
    MemorySegment state = callState();
    try {
      int result = (int) FCNTL.invokeExact(state, fd, cmd, arg);
      if (result < 0) throw fail("fcntl", "fd " + fd + ", cmd " + cmd + ", arg " + arg, state);
      return result;
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /** Sets O_NONBLOCK on {@code fd}'s open file. */
  public static void setNonBlocking(int fd) throws NativeException {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
  }

  public static void setBlocking(int fd) throws NativeException {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK);
  }

  /** Sets close-on-exec on {@code fd} (one inherited from the parent process, say). */
  public static void setCloseOnExec(int fd) throws NativeException {
    fcntl(fd, F_SETFD, FD_CLOEXEC);
  }

  /** A new fd (close-on-exec) for the same open file as {@code fd}; the caller owns it. */
  public static Fd dup(int fd) throws NativeException {
    return Fd.adopt(fcntl(fd, F_DUPFD_CLOEXEC, 0));
  }

  /** What fstat(2) says of an fd, as far as bounce cares. */
  public record FileStatus(int mode, long size) {
    private static final int S_IFMT = 0xf000;
    private static final int S_IFREG = 0x8000;

    public boolean isRegularFile() {
      return (mode & S_IFMT) == S_IFREG;
    }
  }

  public static FileStatus fstat(int fd) throws NativeException {
    MemorySegment state = callState();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment stat = arena.allocate(StatLayout.SIZE);
      if ((int) FSTAT.invokeExact(state, fd, stat) < 0) throw fail("fstat", "fd " + fd, state);
      return new FileStatus(
          stat.get(JAVA_INT, StatLayout.MODE_OFFSET), stat.get(JAVA_LONG, StatLayout.SIZE_OFFSET));
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /**
   * struct stat: x86-64 has its own layout (st_nlink before st_mode); the generic 64-bit layout of
   * arm64 and riscv64 puts st_mode at 16. st_size is at 48 on both.
   */
  private static final class StatLayout {
    static final long SIZE = 256;
    static final long MODE_OFFSET = "amd64".equals(System.getProperty("os.arch")) ? 24 : 16;
    static final long SIZE_OFFSET = 48;
  }

  /**
   * mmap(2) of {@code length} bytes of {@code fd} at {@code offset}, shared; returns the address.
   */
  public static MemorySegment mmap(long length, int prot, int flags, int fd, long offset)
      throws NativeException {
    MemorySegment state = callState();
    try {
      MemorySegment address =
          (MemorySegment)
              MMAP.invokeExact(state, MemorySegment.NULL, length, prot, flags, fd, offset);
      if (address.address() == -1L) {
        throw fail(
            "mmap",
            "fd " + fd + ", offset 0x" + Long.toHexString(offset) + ", " + length + " bytes",
            state);
      }
      return address;
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  public static void munmap(MemorySegment address, long length) throws NativeException {
    MemorySegment state = callState();
    try {
      if ((int) MUNMAP.invokeExact(state, address, length) < 0) {
        throw fail("munmap", "0x" + Long.toHexString(address.address()) + ", " + length, state);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  public static int eventfd(int initialValue, int flags) throws NativeException {
    MemorySegment state = callState();
    try {
      int fd = (int) EVENTFD.invokeExact(state, initialValue, flags);
      if (fd < 0) throw fail("eventfd", "flags 0x" + Integer.toHexString(flags), state);
      return fd;
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /**
   * read(2) into {@code buffer}, retried on EINTR; returns the bytes read, or {@link #WOULD_BLOCK}
   * when a non-blocking fd has nothing.
   */
  public static long read(int fd, MemorySegment buffer, long count) throws NativeException {
    MemorySegment state = callState();
    try {
      while (true) {
        long n = (long) READ.invokeExact(state, fd, buffer, count);
        if (n >= 0) return n;
        int errno = errno(state);
        if (errno == EAGAIN) return WOULD_BLOCK;
        if (errno != EINTR) throw new NativeException("read", "fd " + fd + ", " + count, errno);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /** write(2), retried on EINTR; returns the bytes written, or {@link #WOULD_BLOCK}. */
  public static long write(int fd, MemorySegment buffer, long count) throws NativeException {
    MemorySegment state = callState();
    try {
      while (true) {
        long n = (long) WRITE.invokeExact(state, fd, buffer, count);
        if (n >= 0) return n;
        int errno = errno(state);
        if (errno == EAGAIN) return WOULD_BLOCK;
        if (errno != EINTR) throw new NativeException("write", "fd " + fd + ", " + count, errno);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /**
   * readv(2) into the pieces of {@code vectors}, retried on EINTR; returns the bytes read (0 at end
   * of file), or {@link #WOULD_BLOCK} when a non-blocking fd has nothing. Allocates nothing.
   */
  public static long readv(int fd, IoVectors vectors) throws NativeException {
    return vectored(READV, "readv", fd, vectors);
  }

  /**
   * writev(2) from the pieces of {@code vectors}, retried on EINTR; returns the bytes written, or
   * {@link #WOULD_BLOCK} when a non-blocking fd has no room. Allocates nothing.
   */
  public static long writev(int fd, IoVectors vectors) throws NativeException {
    return vectored(WRITEV, "writev", fd, vectors);
  }

  /** {@code call} (readv or writev, through {@code handle}) with EINTR retried and EAGAIN told. */
  private static long vectored(MethodHandle handle, String call, int fd, IoVectors vectors)
      throws NativeException {
    MemorySegment state = callState();
    try {
      while (true) {
        long n = (long) handle.invokeExact(state, fd, vectors.array(), vectors.count());
        if (n >= 0) return n;
        int errno = errno(state);
        if (errno == EAGAIN) return WOULD_BLOCK;
        if (errno != EINTR)
          throw new NativeException(call, "fd " + fd + ", " + vectors.bytes(), errno);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  private static final long FIONREAD = 0x541B;
  private static final MethodHandle IOCTL_INT =
      LINKER.downcallHandle(
          symbol("ioctl"),
          FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS),
          Linker.Option.firstVariadicArg(2),
          Linker.Option.captureCallState("errno"));
  private static final ThreadLocal<MemorySegment> INT_OUT =
      ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(JAVA_INT));

  /**
   * The bytes a read of socket {@code fd} would return now (ioctl FIONREAD; 0 also at end of
   * stream). Allocation-free.
   */
  public static int bytesReadable(int fd) throws NativeException {
    MemorySegment state = callState();
    MemorySegment out = INT_OUT.get();
    try {
      if ((int) IOCTL_INT.invokeExact(state, fd, FIONREAD, out) < 0) {
        throw fail("ioctl FIONREAD", "fd " + fd, state);
      }
      return out.get(JAVA_INT, 0);
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /** POLLIN for {@link #pollIn}. */
  public static final short POLLIN = 0x1;

  private static final ThreadLocal<MemorySegment> POLLFDS =
      ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(16, 4));

  /**
   * poll(2) on one fd for input; true when it is readable (or hung up) within {@code timeoutMillis}
   * (-1: no limit). Retried on EINTR; allocation-free.
   */
  public static boolean pollIn(int fd, int timeoutMillis) throws NativeException {
    return pollIn(fd, -1, timeoutMillis);
  }

  /** {@link #pollIn(int, int)} on two fds at once (a negative fd is ignored, as poll(2) does). */
  public static boolean pollIn(int fd, int otherFd, int timeoutMillis) throws NativeException {
    MemorySegment pollfds = POLLFDS.get();
    pollfds.fill((byte) 0);
    pollfds.set(JAVA_INT, 0, fd);
    pollfds.set(java.lang.foreign.ValueLayout.JAVA_SHORT, 4, POLLIN);
    pollfds.set(JAVA_INT, 8, otherFd);
    pollfds.set(java.lang.foreign.ValueLayout.JAVA_SHORT, 12, POLLIN);
    return poll(pollfds, 2, timeoutMillis) > 0;
  }

  private static final short POLLERR = 0x8;
  private static final short POLLHUP = 0x10;

  /**
   * Whether {@code fd} has hung up or failed (POLLHUP or POLLERR, which poll(2) reports without
   * being asked), now. For a socket whose own events say nothing else, such as one whose input is
   * shut down: its peer closing shows only here. Allocation-free.
   */
  public static boolean hungUp(int fd) throws NativeException {
    MemorySegment pollfds = POLLFDS.get();
    pollfds.fill((byte) 0);
    pollfds.set(JAVA_INT, 0, fd);
    poll(pollfds, 1, 0);
    short revents = pollfds.get(java.lang.foreign.ValueLayout.JAVA_SHORT, 6);
    return (revents & (POLLHUP | POLLERR)) != 0;
  }

  /** poll(2) on the first {@code count} entries of {@code pollfds}, retried on EINTR. */
  private static int poll(MemorySegment pollfds, long count, int timeoutMillis)
      throws NativeException {
    MemorySegment state = callState();
    try {
      while (true) {
        int n = (int) POLL.invokeExact(state, pollfds, count, timeoutMillis);
        if (n >= 0) return n;
        int errno = errno(state);
        if (errno != EINTR) {
          String fds = "fd " + pollfds.get(JAVA_INT, 0);
          if (count > 1) fds += ", fd " + pollfds.get(JAVA_INT, 8);
          throw new NativeException("poll", fds, errno);
        }
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /**
   * close(2). Not retried on EINTR: Linux releases the fd before it can fail, so a retry could
   * close an fd another thread just opened.
   */
  public static void close(int fd) throws NativeException {
    MemorySegment state = callState();
    try {
      if ((int) CLOSE.invokeExact(state, fd) < 0) {
        int errno = errno(state);
        if (errno != EINTR) throw new NativeException("close", "fd " + fd, errno);
      }
    } catch (NativeException e) {
      throw e;
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }

  /** The symbolic name of an errno value, for example {@code EBADF}. */
  static String errnoName(int errno) {
    if (STRERRORNAME_NP == null) return "errno " + errno;
    return cString(STRERRORNAME_NP, errno, "errno " + errno);
  }

  /** The description of an errno value, for example {@code Bad file descriptor}. */
  static String strerror(int errno) {
    return cString(STRERROR, errno, "unknown error");
  }

  private static String cString(MethodHandle function, int errno, String fallback) {
    try {
      MemorySegment text = (MemorySegment) function.invokeExact(errno);
      return text.equals(MemorySegment.NULL) ? fallback : text.reinterpret(256).getString(0);
    } catch (Throwable t) {
      throw unexpected(t);
    }
  }
}
