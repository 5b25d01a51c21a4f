package dev.bounce.pool;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.bounce.pool.testing.JnrFdPassing;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import jnr.unixsocket.UnixSocketAddress;
import jnr.unixsocket.UnixSocketChannel;

/**
 * The child side of {@link MemfdSharingTest}: connects to the parent's socket, receives a memfd
 * with SCM_RIGHTS, maps it with {@link Mapping}, and checks and writes patterns in step with the
 * parent.
 *
 * <p>Protocol: parent sends 8 bytes (the size) + the fd; child checks pattern PARENT_FIRST, fills
 * CHILD, sends 'W'; parent checks CHILD, fills PARENT_SECOND, sends 'P'; child checks PARENT_SECOND
 * through the mapping it still holds, sends 'V' and exits 0. Any mismatch: a line on stderr, exit
 * 2.
 */
public final class MemfdSharingChild {
  static final long PARENT_FIRST = 0x1111_2222_3333_4444L;
  static final long CHILD = 0x5555_6666_7777_8888L;
  static final long PARENT_SECOND = 0x9999_aaaa_bbbb_ccccL;

  private MemfdSharingChild() {}

  public static void main(String[] args) throws IOException {
    Path socket = Path.of(args[0]);
    try (UnixSocketChannel channel =
        UnixSocketChannel.open(new UnixSocketAddress(socket.toFile()))) {
      JnrFdPassing.Received message = JnrFdPassing.receive(channel, 64, 4);
      if (message.payload().length != Long.BYTES || message.fds().length != 1) {
        fail("expected 8 bytes and one fd, got " + message);
      }
      long size = ByteBuffer.wrap(message.payload()).getLong();
      int number = message.fds()[0];
      System.out.println(
          "received fd "
              + number
              + " -> "
              + Files.readSymbolicLink(Path.of("/proc/self/fd/" + number)));
      try (Fd fd = Fd.adoptChecked(number);
          Mapping mapping = Mapping.map(fd, 0, size)) {
        MemorySegment bytes = mapping.segment();
        expect(bytes, PARENT_FIRST, "the parent's first pattern");
        fill(bytes, CHILD);
        reply(channel, 'W');
        expectByte(channel, 'P');
        expect(bytes, PARENT_SECOND, "the parent's second pattern");
        reply(channel, 'V');
      }
    } catch (NativeException | RuntimeException e) {
      e.printStackTrace();
      System.exit(3);
    }
    System.exit(0);
  }

  /** The value of long {@code index} in the pattern {@code seed}: differs at every index. */
  static long pattern(long seed, long index) {
    long z = seed + index * 0x9E37_79B9_7F4A_7C15L;
    z = (z ^ (z >>> 30)) * 0xBF58_476D_1CE4_E5B9L;
    z = (z ^ (z >>> 27)) * 0x94D0_49BB_1331_11EBL;
    return z ^ (z >>> 31);
  }

  static void fill(MemorySegment bytes, long seed) {
    long longs = bytes.byteSize() / Long.BYTES;
    for (long i = 0; i < longs; i++) bytes.setAtIndex(JAVA_LONG, i, pattern(seed, i));
  }

  /** The first long index that does not hold the pattern, or -1. */
  static long firstMismatch(MemorySegment bytes, long seed) {
    long longs = bytes.byteSize() / Long.BYTES;
    for (long i = 0; i < longs; i++) {
      if (bytes.getAtIndex(JAVA_LONG, i) != pattern(seed, i)) return i;
    }
    return -1;
  }

  private static void expect(MemorySegment bytes, long seed, String what) {
    long bad = firstMismatch(bytes, seed);
    if (bad >= 0) {
      fail(
          what
              + " differs at byte offset "
              + bad * Long.BYTES
              + ": 0x"
              + Long.toHexString(bytes.getAtIndex(JAVA_LONG, bad))
              + " instead of 0x"
              + Long.toHexString(pattern(seed, bad)));
    }
  }

  private static void reply(UnixSocketChannel channel, char c) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(new byte[] {(byte) c});
    while (b.hasRemaining()) channel.write(b);
  }

  private static void expectByte(UnixSocketChannel channel, char c) throws IOException {
    ByteBuffer b = ByteBuffer.allocate(1);
    while (b.hasRemaining()) {
      if (channel.read(b) < 0) fail("the parent closed the socket before sending '" + c + "'");
    }
    if (b.get(0) != (byte) c) fail("expected '" + c + "', got " + Arrays.toString(b.array()));
  }

  private static void fail(String why) {
    System.err.println("child: " + why);
    System.exit(2);
  }
}
