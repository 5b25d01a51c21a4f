package dev.bounce.pool;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.bounce.pool.testing.NothingLeaked;
import dev.bounce.pool.testing.OpenFds;
import dev.bounce.pool.testing.ProcessMaps;
import dev.bounce.pool.testing.TestSyscalls;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.function.Executable;

/**
 * Bad input to the native wrappers: every refusal is a clear exception naming the problem, and
 * leaves no fd and no mapping behind.
 */
class NativeBadInputTest {
  private static final long PAGE = Mapping.PAGE_SIZE;

  /** Above any fd limit: never open. */
  private static final int NEVER_OPEN = 1_000_000;

  private static final int F_SEAL_WRITE = 0x8;

  @RegisterExtension final NothingLeaked nothingLeaked = new NothingLeaked();

  /**
   * That {@code call} throws {@code type} with every one of {@code words} in its message, and that
   * the process has exactly as many fds and mappings afterwards as before.
   */
  private static <T extends Throwable> T refused(Class<T> type, Executable call, String... words) {
    int fds = OpenFds.count();
    long mappings = Mapping.liveCount();
    T e = assertThrows(type, call);
    assertNotNull(e.getMessage());
    for (String word : words) {
      assertTrue(e.getMessage().contains(word), () -> "'" + word + "' not in: " + e.getMessage());
    }
    OpenFds.assertBackTo(fds);
    assertEquals(mappings, Mapping.liveCount(), () -> "a mapping leaked by: " + e.getMessage());
    return e;
  }

  // ---- Memfd ----

  @Test
  @DisplayName("memfd: size 0 or negative is refused before any syscall")
  void memfdSizeMustBePositive() {
    refused(
        IllegalArgumentException.class, () -> Memfd.create("m", 0), "size must be positive", "0");
    refused(
        IllegalArgumentException.class, () -> Memfd.create("m", -1), "size must be positive", "-1");
    refused(
        IllegalArgumentException.class,
        () -> Memfd.create("m", Long.MIN_VALUE),
        "size must be positive",
        Long.toString(Long.MIN_VALUE));
  }

  @Test
  @DisplayName(
      "memfd: a name the kernel refuses gives NativeException naming memfd_create and EINVAL")
  void memfdNameTooLong() {
    NativeException e =
        refused(
            NativeException.class,
            () -> Memfd.create("n".repeat(300), PAGE),
            "memfd_create(",
            "EINVAL");
    assertEquals("memfd_create", e.call());
    assertEquals(Libc.EINVAL, e.errno());
  }

  @Test
  @DisplayName(
      "memfd of Long.MAX_VALUE bytes: refused by ftruncate, or lazily allocated and then mapping"
          + " all of it fails cleanly (ENOMEM)")
  void hugeMemfd() throws Exception {
    int fds = OpenFds.count();
    Memfd created;
    try {
      created = Memfd.create("bounce-huge", Long.MAX_VALUE);
    } catch (NativeException kernelLimit) {
      // Kernels with a smaller file size limit refuse here (EFBIG); that too must leak nothing.
      assertEquals("ftruncate", kernelLimit.call(), kernelLimit.getMessage());
      OpenFds.assertBackTo(fds);
      return;
    }
    try (Memfd huge = created) {
      assertEquals(Long.MAX_VALUE, huge.size());
      NativeException e =
          refused(NativeException.class, () -> huge.map(0, Long.MAX_VALUE), "mmap(", "ENOMEM");
      assertEquals("mmap", e.call());
      // A page near its end is fine: the file really is that large.
      try (Mapping last = huge.map(Long.MAX_VALUE - (Long.MAX_VALUE % PAGE) - PAGE, PAGE)) {
        last.segment().set(JAVA_LONG, 0, 42);
        assertEquals(42, last.segment().get(JAVA_LONG, 0));
      }
    }
  }

  @Test
  @DisplayName(
      "memfd seals: a shrink-sealed memfd refuses ftruncate; sealing after F_SEAL_SEAL fails")
  void seals() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-seal", 4 * PAGE)) {
      assertEquals(0, memfd.seals());
      memfd.seal(Memfd.F_SEAL_SHRINK | Memfd.F_SEAL_GROW);
      assertEquals(Memfd.F_SEAL_SHRINK | Memfd.F_SEAL_GROW, memfd.seals());
      NativeException shrink =
          refused(
              NativeException.class,
              () -> Libc.ftruncate(memfd.fd().value(), PAGE),
              "ftruncate(",
              "EPERM");
      assertEquals("ftruncate", shrink.call());
      memfd.seal(Memfd.F_SEAL_SEAL);
      NativeException more =
          refused(NativeException.class, () -> memfd.seal(F_SEAL_WRITE), "fcntl(", "EPERM");
      assertEquals("fcntl", more.call());
      try (Mapping still = memfd.map(0, 4 * PAGE)) {
        assertEquals(4 * PAGE, still.size());
      }
    }
  }

  // ---- Mapping ----

  @Test
  @DisplayName("mapping: zero, negative, and huge sizes are refused with the reason")
  void mappingSizes() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-sizes", 4 * PAGE)) {
      refused(IllegalArgumentException.class, () -> memfd.map(0, 0), "size must be positive");
      refused(IllegalArgumentException.class, () -> memfd.map(0, -PAGE), "size must be positive");
      refused(
          IllegalArgumentException.class,
          () -> memfd.map(0, Long.MIN_VALUE),
          "size must be positive");
      refused(
          IllegalArgumentException.class,
          () -> memfd.map(0, Long.MAX_VALUE),
          "cannot map " + Long.MAX_VALUE + " bytes",
          "the file is only " + 4 * PAGE + " bytes");
    }
  }

  @Test
  @DisplayName("the page size offsets are checked against is the kernel's, as getconf says")
  void pageSizeIsTheKernels() throws Exception {
    Process getconf = new ProcessBuilder("getconf", "PAGESIZE").start();
    String said = new String(getconf.getInputStream().readAllBytes()).trim();
    assertEquals(0, getconf.waitFor());
    assertEquals(Long.parseLong(said), Mapping.PAGE_SIZE);
  }

  @Test
  @DisplayName("mapping: negative or unaligned offsets are refused")
  void mappingOffsets() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-offsets", 4 * PAGE)) {
      refused(IllegalArgumentException.class, () -> memfd.map(-PAGE, PAGE), "offset is negative");
      refused(
          IllegalArgumentException.class,
          () -> memfd.map(Long.MIN_VALUE, PAGE),
          "offset is negative");
      for (long offset : new long[] {1, 0x800, PAGE - 1, PAGE + 1, 3 * PAGE + 0x10}) {
        refused(
            IllegalArgumentException.class,
            () -> memfd.map(offset, PAGE),
            "0x" + Long.toHexString(offset),
            "not a multiple of the page size");
      }
    }
  }

  @Test
  @DisplayName("mapping: a range past the end of the file is refused (it would SIGBUS, not fail)")
  void mappingPastTheEnd() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-end", 4 * PAGE)) {
      long size = 4 * PAGE;
      refused(
          IllegalArgumentException.class, () -> memfd.map(0, size + 1), "the file is only " + size);
      refused(
          IllegalArgumentException.class, () -> memfd.map(PAGE, size), "the file is only " + size);
      refused(IllegalArgumentException.class, () -> memfd.map(size, 1), "offset 0x4000");
      refused(IllegalArgumentException.class, () -> memfd.map(8 * PAGE, PAGE), "the file is only");
      // offset + size overflows a signed long: must not wrap into "fits"
      refused(
          IllegalArgumentException.class,
          () -> memfd.map(Long.MAX_VALUE - PAGE + 1, 2 * PAGE),
          "the file is only");
      refused(
          IllegalArgumentException.class,
          () -> memfd.map(0x7fff_ffff_ffff_f000L, PAGE),
          "the file is only");
      // The exact end is fine.
      try (Mapping tail = memfd.map(3 * PAGE, PAGE);
          Mapping odd = memfd.map(0, size - 1)) {
        assertEquals(PAGE, tail.size());
        assertEquals(size - 1, odd.size());
        assertEquals(3 * PAGE, tail.offset());
      }
    }
  }

  @Test
  @DisplayName("mapping: a closed Fd is refused (IllegalStateException), a never-open fd is EBADF")
  void mappingClosedFds() throws Exception {
    Memfd memfd = Memfd.create("bounce-closed", PAGE);
    memfd.close();
    refused(IllegalStateException.class, () -> memfd.map(0, PAGE), "fd already closed");
    refused(
        IllegalStateException.class, () -> Mapping.map(memfd.fd(), 0, PAGE), "fd already closed");

    Fd never = Fd.adopt(NEVER_OPEN);
    try {
      NativeException e =
          refused(
              NativeException.class,
              () -> Mapping.map(never, 0, PAGE),
              "fstat(fd " + NEVER_OPEN,
              "EBADF");
      assertEquals("fstat", e.call());
      assertEquals(Libc.EBADF, e.errno());
    } finally {
      never.release();
    }
  }

  @Test
  @DisplayName("mapping: an eventfd or a pipe is refused as not a memory file, and stays open")
  void mappingForeignFds() throws Exception {
    try (EventFd eventFd = EventFd.create();
        TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      for (Fd fd : List.of(eventFd.fd(), pipe.readEnd(), pipe.writeEnd())) {
        refused(
            IllegalArgumentException.class,
            () -> Mapping.map(fd, 0, PAGE),
            "fd " + fd.value(),
            "not a memory file");
        assertTrue(fd.isOpen(), "Mapping.map does not own the fd it is given");
        assertTrue(TestSyscalls.isOpen(fd.value()));
      }
      eventFd.signal(); // still works
      assertEquals(1, eventFd.drain());
    }
  }

  @Test
  @DisplayName(
      "mapping: a write-sealed memfd cannot be mapped shared writable: NativeException EPERM")
  void mappingWriteSealedMemfd() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-wseal", PAGE)) {
      memfd.seal(F_SEAL_WRITE);
      NativeException e =
          refused(NativeException.class, () -> memfd.map(0, PAGE), "mmap(", "EPERM");
      assertEquals("mmap", e.call());
    }
  }

  @Test
  @DisplayName(
      "mapping: close is idempotent; access afterwards throws IllegalStateException, any thread")
  void mappingClose() throws Exception {
    String name = "bounce-mapclose-" + System.nanoTime();
    try (Memfd memfd = Memfd.create(name, 2 * PAGE)) {
      Mapping mapping = memfd.map(0, 2 * PAGE);
      MemorySegment segment = mapping.segment();
      MemorySegment slice = segment.asSlice(PAGE, 8);
      segment.set(JAVA_BYTE, 0, (byte) 1);
      assertEquals(nothingLeaked.mappingsBefore() + 1, Mapping.liveCount());
      assertEquals(1, ProcessMaps.ofMemfd(name).size());

      mapping.close();
      assertEquals(nothingLeaked.mappingsBefore(), Mapping.liveCount());
      assertEquals(List.of(), ProcessMaps.ofMemfd(name), "unmapped");
      mapping.close();
      mapping.close();
      assertEquals(
          nothingLeaked.mappingsBefore(), Mapping.liveCount(), "a second close unmapped again");

      assertThrows(IllegalStateException.class, () -> segment.get(JAVA_BYTE, 0));
      assertThrows(IllegalStateException.class, () -> segment.set(JAVA_BYTE, 0, (byte) 2));
      assertThrows(IllegalStateException.class, () -> slice.get(JAVA_LONG, 0));
      assertThrows(IllegalStateException.class, () -> mapping.segment().fill((byte) 0));
      Throwable other =
          CompletableFuture.supplyAsync(() -> tryRead(segment)).get(10, TimeUnit.SECONDS);
      assertInstanceOf(IllegalStateException.class, other, "from another thread");
    }
  }

  private static Throwable tryRead(MemorySegment segment) {
    try {
      segment.get(JAVA_BYTE, 0);
      return null;
    } catch (RuntimeException e) {
      return e;
    }
  }

  // ---- Fd ----

  @Test
  @DisplayName("Fd: close is idempotent, value() after close throws, negative numbers refused")
  void fdLifecycle() throws Exception {
    Memfd memfd = Memfd.create("bounce-fd", PAGE);
    Fd fd = memfd.fd();
    int number = fd.value();
    assertTrue(fd.isOpen());
    assertEquals("fd " + number, fd.toString());
    assertTrue(OpenFds.target(number).startsWith("/memfd:bounce-fd"));

    fd.close();
    assertFalse(fd.isOpen());
    assertFalse(TestSyscalls.isOpen(number));
    IllegalStateException e = assertThrows(IllegalStateException.class, fd::value);
    assertTrue(e.getMessage().contains("closed"), e.getMessage());
    assertEquals("fd(closed)", fd.toString());
    fd.close(); // nothing: it must not close whatever reuses the number
    memfd.close();
    assertThrows(IllegalStateException.class, fd::release);

    refused(IllegalArgumentException.class, () -> Fd.adopt(-1), "not an fd: -1");
    NativeException checked =
        refused(
            NativeException.class,
            () -> Fd.adoptChecked(NEVER_OPEN),
            "fcntl(fd " + NEVER_OPEN,
            "EBADF");
    assertEquals(Libc.EBADF, checked.errno());
  }

  @Test
  @DisplayName("Fd: a second close does not close an fd that reused the number")
  void fdSecondCloseLeavesReusedNumberAlone() throws Exception {
    try (Memfd second = Memfd.create("bounce-second", PAGE)) {
      Memfd first = Memfd.create("bounce-first", PAGE);
      int number = first.fd().value();
      first.close();
      // Put another open file at the number first's Fd had (F_DUPFD: lowest free >= number).
      try (Fd reused = Fd.adopt(Libc.fcntl(second.fd().value(), Libc.F_DUPFD_CLOEXEC, number))) {
        assumeTrue(reused.value() == number, "another thread took fd " + number);
        first.close();
        first.fd().close();
        assertTrue(TestSyscalls.isOpen(number), "closing a closed Fd closed someone else's fd");
        assertTrue(OpenFds.target(number).startsWith("/memfd:bounce-second"));
      }
    }
  }

  @Test
  @DisplayName("Fd: release gives up ownership without closing")
  void fdRelease() throws Exception {
    Memfd memfd = Memfd.create("bounce-release", PAGE);
    int number = memfd.fd().release();
    assertFalse(memfd.fd().isOpen());
    memfd.close(); // closes nothing: the number is not ours any more
    assertTrue(TestSyscalls.isOpen(number));
    Fd.adoptChecked(number).close();
    assertFalse(TestSyscalls.isOpen(number));
  }

  // ---- EventFd after close ----

  @Test
  @DisplayName("EventFd: signal or drain after close throws IllegalStateException")
  void eventFdAfterClose() throws Exception {
    EventFd eventFd = EventFd.create();
    eventFd.close();
    eventFd.close();
    assertThrows(IllegalStateException.class, eventFd::signal);
    assertThrows(IllegalStateException.class, eventFd::drain);
  }

  // ---- NativeException ----

  @Test
  @DisplayName("NativeException names the call, what it was called on, the errno name and text")
  void nativeExceptionMessage() {
    NativeException e = new NativeException("mmap", "fd 7, offset 0x1000, 4096 bytes", Libc.EBADF);
    assertEquals(
        "mmap(fd 7, offset 0x1000, 4096 bytes) failed: EBADF (Bad file descriptor)",
        e.getMessage());
    assertEquals("mmap", e.call());
    assertEquals(Libc.EBADF, e.errno());
    assertEquals(
        "read(fd 3, 8) failed: EAGAIN (Resource temporarily unavailable)",
        new NativeException("read", "fd 3, 8", Libc.EAGAIN).getMessage());
    // An errno with no name still gives a readable message.
    String unknown = new NativeException("ioctl", "fd 3", 4095).getMessage();
    assertTrue(unknown.startsWith("ioctl(fd 3) failed: errno 4095 ("), unknown);
  }

  @Test
  @DisplayName("a real failing syscall: NativeException with the call, the fd and EBADF")
  void realSyscallFailure() {
    NativeException close = assertThrows(NativeException.class, () -> Libc.close(NEVER_OPEN));
    assertEquals(
        "close(fd " + NEVER_OPEN + ") failed: EBADF (Bad file descriptor)", close.getMessage());
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment buffer = arena.allocate(8);
      NativeException read =
          assertThrows(NativeException.class, () -> Libc.read(NEVER_OPEN, buffer, 8));
      assertEquals("read", read.call());
      assertEquals(
          "read(fd " + NEVER_OPEN + ", 8) failed: EBADF (Bad file descriptor)", read.getMessage());
    }
  }
}
