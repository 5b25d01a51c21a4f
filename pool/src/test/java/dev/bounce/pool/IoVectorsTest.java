package dev.bounce.pool;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.testing.TestSyscalls;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@link IoVectors} and the system calls that use it, {@link Libc#readv} and {@link
 * Libc#bytesReadable}, on real fds (pipes, Unix stream sockets) and a real mapped memfd, as the
 * vsock device reads a host socket straight into guest buffers.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class IoVectorsTest {
  static final long PAGE = Mapping.PAGE_SIZE;

  private static byte[] random(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  /** Writes all of {@code bytes} to {@code fd} (blocking), through native memory as write needs. */
  private static void writeAll(Fd fd, byte[] bytes) throws NativeException {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment from = arena.allocate(Math.max(1, bytes.length));
      MemorySegment.copy(bytes, 0, from, JAVA_BYTE, 0, bytes.length);
      long done = 0;
      while (done < bytes.length) {
        long n = Libc.write(fd.value(), from.asSlice(done), bytes.length - done);
        assertTrue(n > 0, "write " + n);
        done += n;
      }
    }
  }

  private static byte[] bytes(MemorySegment memory, long offset, int length) {
    return memory.asSlice(offset, length).toArray(JAVA_BYTE);
  }

  @Test
  void capacityIsOneToIovMax() {
    for (int bad : new int[] {0, -1, 1025, Integer.MAX_VALUE}) {
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> new IoVectors(bad));
      assertTrue(e.getMessage().contains(Integer.toString(bad)), e.getMessage());
    }
    assertTrue(new IoVectors(1).hasRoom());
    assertTrue(new IoVectors(1024).hasRoom());
  }

  @Test
  void heapMemoryIsRefusedAndNothingIsAdded() {
    IoVectors vectors = new IoVectors(4);
    MemorySegment heap = MemorySegment.ofArray(new byte[64]);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> vectors.add(heap, 0, 8));
    assertTrue(e.getMessage().contains("not native"), e.getMessage());
    assertEquals(0, vectors.count());
    assertEquals(0, vectors.bytes());
  }

  @Test
  void rangesOutsideTheSegmentAreRefusedAsIllegalArguments() {
    IoVectors vectors = new IoVectors(4);
    MemorySegment native16 = Arena.ofAuto().allocate(16);
    long[][] outside = {{0, 17}, {8, 9}, {16, 1}, {-1, 4}, {0, -1}, {Long.MAX_VALUE, 2}};
    for (long[] range : outside) {
      assertThrows(
          IllegalArgumentException.class,
          () -> vectors.add(native16, range[0], range[1]),
          Arrays.toString(range));
    }
    assertEquals(0, vectors.count(), "a refused piece is not added");
    assertEquals(0, vectors.bytes());
    vectors.add(native16, 0, 16); // the whole segment, and an empty piece at its end, are inside
    vectors.add(native16, 16, 0);
    assertEquals(2, vectors.count());
    assertEquals(16, vectors.bytes());
  }

  @Test
  void aFullArrayRefusesMoreUntilCleared() {
    IoVectors vectors = new IoVectors(2);
    MemorySegment memory = Arena.ofAuto().allocate(64);
    vectors.add(memory, 0, 10);
    assertTrue(vectors.hasRoom());
    vectors.add(memory, 10, 20);
    assertFalse(vectors.hasRoom());
    assertThrows(IllegalStateException.class, () -> vectors.add(memory, 30, 1));
    assertEquals(2, vectors.count());
    assertEquals(30, vectors.bytes());
    vectors.clear();
    assertTrue(vectors.hasRoom());
    assertEquals(0, vectors.count());
    assertEquals(0, vectors.bytes());
    vectors.add(memory, 0, 64);
    assertEquals(64, vectors.bytes());
  }

  @Test
  void readvFillsPiecesOfAMappedMemfdInTheOrderAdded() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-readv", 3 * PAGE);
        Mapping mapping = memfd.map(0, 3 * PAGE);
        TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      MemorySegment memory = mapping.segment();
      // Out of address order, one piece across a page boundary: readv fills them as listed.
      IoVectors vectors = new IoVectors(8);
      vectors.add(memory, 2 * PAGE + 10, 100);
      vectors.add(memory, 5, 50);
      vectors.add(memory, PAGE - 3, 7);
      assertEquals(157, vectors.bytes());
      byte[] data = random(157, 1);
      writeAll(pipe.writeEnd(), data);

      assertEquals(157, Libc.readv(pipe.readEnd().value(), vectors));
      assertArrayEquals(Arrays.copyOfRange(data, 0, 100), bytes(memory, 2 * PAGE + 10, 100));
      assertArrayEquals(Arrays.copyOfRange(data, 100, 150), bytes(memory, 5, 50));
      assertArrayEquals(Arrays.copyOfRange(data, 150, 157), bytes(memory, PAGE - 3, 7));
      // Nothing outside the pieces was touched.
      assertEquals(0, memory.get(JAVA_BYTE, 4));
      assertEquals(0, memory.get(JAVA_BYTE, 55));
      assertEquals(0, memory.get(JAVA_BYTE, PAGE - 4));
      assertEquals(0, memory.get(JAVA_BYTE, PAGE + 4));
      assertEquals(0, memory.get(JAVA_BYTE, 2 * PAGE + 9));
      assertEquals(0, memory.get(JAVA_BYTE, 2 * PAGE + 110));
    }
  }

  @Test
  void aShortReadFillsThePiecesInOrderAndReturnsWhatCame() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-readv-short", PAGE);
        Mapping mapping = memfd.map(0, PAGE);
        TestSyscalls.SocketPair socket = TestSyscalls.socketPair()) {
      MemorySegment memory = mapping.segment();
      IoVectors vectors = new IoVectors(4);
      vectors.add(memory, 1000, 40);
      vectors.add(memory, 0, 40);
      vectors.add(memory, 2000, 40);
      byte[] data = random(60, 2);
      writeAll(socket.other(), data);
      assertEquals(60, Libc.readv(socket.one().value(), vectors));
      assertArrayEquals(Arrays.copyOfRange(data, 0, 40), bytes(memory, 1000, 40));
      assertArrayEquals(Arrays.copyOfRange(data, 40, 60), bytes(memory, 0, 20));
      assertArrayEquals(new byte[20], bytes(memory, 20, 20));
      assertArrayEquals(new byte[40], bytes(memory, 2000, 40));
    }
  }

  @Test
  void readvOfAnEmptyNonBlockingFdWouldBlockAndAtEndOfFileIsZero() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-readv-eof", PAGE);
        Mapping mapping = memfd.map(0, PAGE);
        TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      IoVectors vectors = new IoVectors(1);
      vectors.add(mapping.segment(), 0, PAGE);
      int fd = pipe.readEnd().value();
      Libc.setNonBlocking(fd);
      assertEquals(Libc.WOULD_BLOCK, Libc.readv(fd, vectors));
      writeAll(pipe.writeEnd(), new byte[] {42});
      assertEquals(1, Libc.readv(fd, vectors));
      assertEquals(42, mapping.segment().get(JAVA_BYTE, 0));
      pipe.writeEnd().close();
      assertEquals(0, Libc.readv(fd, vectors), "end of file");
      assertEquals(0, Libc.readv(fd, vectors), "still end of file");
    }
  }

  @Test
  void readvOfABadFdThrowsNamingTheCall() throws Exception {
    assertABadFdIsNamed("readv", Libc::readv);
  }

  @Test
  void bytesReadableIsWhatWaitsInASocket() throws Exception {
    try (TestSyscalls.SocketPair socket = TestSyscalls.socketPair();
        Memfd memfd = Memfd.create("bounce-fionread", PAGE);
        Mapping mapping = memfd.map(0, PAGE)) {
      int fd = socket.one().value();
      assertEquals(0, Libc.bytesReadable(fd));
      writeAll(socket.other(), random(1000, 3));
      assertEquals(1000, Libc.bytesReadable(fd));
      writeAll(socket.other(), random(234, 4));
      assertEquals(1234, Libc.bytesReadable(fd), "both writes");
      IoVectors vectors = new IoVectors(1);
      vectors.add(mapping.segment(), 0, 200);
      assertEquals(200, Libc.readv(fd, vectors));
      assertEquals(1034, Libc.bytesReadable(fd), "what the read left");
      socket.other().close();
      assertEquals(1034, Libc.bytesReadable(fd), "the peer's close drops nothing");
    }
  }

  @Test
  void bytesReadableIsWhatWaitsInAPipe() throws Exception {
    try (TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      assertEquals(0, Libc.bytesReadable(pipe.readEnd().value()));
      writeAll(pipe.writeEnd(), random(4097, 5));
      assertEquals(4097, Libc.bytesReadable(pipe.readEnd().value()));
    }
  }

  @Test
  void bytesReadableOfABadFdThrowsNamingTheIoctl() throws Exception {
    Fd closed;
    try (TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      closed = TestSyscalls.dup(pipe.readEnd());
    }
    int fd = closed.value();
    closed.close();
    NativeException e = assertThrows(NativeException.class, () -> Libc.bytesReadable(fd));
    assertEquals("ioctl FIONREAD", e.call());
    assertEquals(Libc.EBADF, e.errno());
  }

  // ---- writev: the vsock device sends guest bytes to a host socket straight from guest memory
  // ----

  /** Reads exactly {@code n} bytes from {@code fd} (blocking). */
  private static byte[] readExactly(Fd fd, int n) throws NativeException {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment into = arena.allocate(Math.max(1, n));
      long done = 0;
      while (done < n) {
        long got = Libc.read(fd.value(), into.asSlice(done), n - done);
        assertTrue(got > 0, "read " + got + " after " + done + " of " + n);
        done += got;
      }
      return into.asSlice(0, n).toArray(JAVA_BYTE);
    }
  }

  private static byte[] concat(byte[]... parts) {
    java.io.ByteArrayOutputStream all = new java.io.ByteArrayOutputStream();
    for (byte[] p : parts) all.writeBytes(p);
    return all.toByteArray();
  }

  @Test
  void writevSendsPiecesOfAMappedMemfdInTheOrderAdded() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-writev", 3 * PAGE);
        Mapping mapping = memfd.map(0, 3 * PAGE);
        TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      MemorySegment memory = mapping.segment();
      byte[] all = random((int) (3 * PAGE), 11);
      MemorySegment.copy(all, 0, memory, JAVA_BYTE, 0, all.length);
      // Out of address order, one piece across a page boundary, one empty: sent as listed.
      IoVectors vectors = new IoVectors(8);
      vectors.add(memory, 2 * PAGE + 10, 100);
      vectors.add(memory, 5, 50);
      vectors.add(memory, 0, 0);
      vectors.add(memory, PAGE - 3, 7);
      assertEquals(157, Libc.writev(pipe.writeEnd().value(), vectors));
      byte[] expected =
          concat(
              bytes(memory, 2 * PAGE + 10, 100), bytes(memory, 5, 50), bytes(memory, PAGE - 3, 7));
      assertArrayEquals(expected, readExactly(pipe.readEnd(), 157));
      assertEquals(0, Libc.bytesReadable(pipe.readEnd().value()), "nothing more was sent");
    }
  }

  @Test
  void writevToAFullNonBlockingSocketWouldBlockAndSendsNothing() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-writev-full", PAGE);
        Mapping mapping = memfd.map(0, PAGE);
        TestSyscalls.SocketPair socket = TestSyscalls.socketPair()) {
      MemorySegment memory = mapping.segment();
      int fd = socket.one().value();
      Libc.setNonBlocking(fd);
      // Fill the socket with zeros until it takes no more.
      IoVectors zeros = new IoVectors(1);
      zeros.add(memory, 0, PAGE);
      long filled = 0;
      for (long n; (n = Libc.writev(fd, zeros)) != Libc.WOULD_BLOCK; ) {
        assertTrue(n > 0, "writev " + n);
        filled += n;
      }
      assertTrue(filled > 0);
      assertEquals(Libc.WOULD_BLOCK, Libc.writev(fd, zeros), "still full");
      byte[] marked = random(64, 12);
      MemorySegment.copy(marked, 0, memory, JAVA_BYTE, 0, marked.length);
      IoVectors vectors = new IoVectors(2);
      vectors.add(memory, 0, 32);
      vectors.add(memory, 32, 32);
      assertEquals(Libc.WOULD_BLOCK, Libc.writev(fd, vectors));
      // Nothing of the refused write went: the reader finds only the zeros, then (once room was
      // made and the write repeated) the marked bytes.
      assertArrayEquals(new byte[(int) filled], readExactly(socket.other(), (int) filled));
      assertEquals(0, Libc.bytesReadable(socket.other().value()));
      assertEquals(64, Libc.writev(fd, vectors));
      assertArrayEquals(marked, readExactly(socket.other(), 64));
    }
  }

  /** fcntl F_SETPIPE_SZ: a pipe of one page, so that what a write takes is exact. */
  private static final int F_SETPIPE_SZ = 1031;

  @Test
  void aPartialWritevReturnsTheCountAndSendsThatManyBytesFromTheFirstPiecesOn() throws Exception {
    try (Memfd memfd = Memfd.create("bounce-writev-partial", 2 * PAGE);
        Mapping mapping = memfd.map(0, 2 * PAGE);
        TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      MemorySegment memory = mapping.segment();
      byte[] all = random((int) (2 * PAGE), 13);
      MemorySegment.copy(all, 0, memory, JAVA_BYTE, 0, all.length);
      int fd = pipe.writeEnd().value();
      assertEquals(PAGE, Libc.fcntl(fd, F_SETPIPE_SZ, (int) PAGE), "a pipe of one page");
      Libc.setNonBlocking(fd);
      IoVectors vectors = new IoVectors(4);
      vectors.add(memory, PAGE + 100, 3000); // then one ending in the second piece's middle
      vectors.add(memory, 10, 3000);
      vectors.add(memory, 5000, 100);

      long n = Libc.writev(fd, vectors);
      assertEquals(PAGE, n, "what the pipe had room for, not the 6100 asked");
      byte[] first = readExactly(pipe.readEnd(), (int) n);
      int inSecond = (int) n - 3000;
      assertArrayEquals(
          concat(bytes(memory, PAGE + 100, 3000), bytes(memory, 10, inSecond)), first);
      assertEquals(0, Libc.bytesReadable(pipe.readEnd().value()));

      // The caller goes on from the first byte not written.
      IoVectors rest = new IoVectors(4);
      rest.add(memory, 10 + inSecond, 3000 - inSecond);
      rest.add(memory, 5000, 100);
      assertEquals(6100 - n, Libc.writev(fd, rest));
      assertArrayEquals(
          concat(bytes(memory, 10 + inSecond, 3000 - inSecond), bytes(memory, 5000, 100)),
          readExactly(pipe.readEnd(), (int) (6100 - n)));
    }
  }

  @Test
  void writevOfABadFdThrowsNamingTheCall() throws Exception {
    assertABadFdIsNamed("writev", Libc::writev);
  }

  /** A call that moves bytes between an fd and the pieces of an {@link IoVectors}. */
  @FunctionalInterface
  interface VectorCall {
    long call(int fd, IoVectors vectors) throws NativeException;
  }

  /** {@code call} on an fd number that is closed fails with EBADF naming {@code name}. */
  private static void assertABadFdIsNamed(String name, VectorCall call) throws Exception {
    IoVectors vectors = new IoVectors(1);
    vectors.add(Arena.ofAuto().allocate(8), 0, 8);
    Fd closed;
    try (TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      closed = TestSyscalls.dup(pipe.readEnd());
    }
    int fd = closed.value();
    closed.close();
    NativeException e = assertThrows(NativeException.class, () -> call.call(fd, vectors));
    assertEquals(name, e.call());
    assertEquals(Libc.EBADF, e.errno());
  }
}
