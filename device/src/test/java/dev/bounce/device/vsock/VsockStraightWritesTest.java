package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.IoVectors;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.testing.TestSyscalls;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Guest-to-host stream bytes written to a real host fd straight from the tx chain in guest memory,
 * the way {@link StreamBridge} does: {@link VsockConnection#gatherStaged}, one writev(2), {@link
 * VsockConnection#tookStaged}. The host fd fills up (the reader at its other end reads slowly or
 * not at all), so writes are partial: what a partial writev left must be kept by the device in the
 * connection's ring from exactly the first byte not written, with the guest's credit exact, and
 * every byte must reach the reader in order.
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS)
class VsockStraightWritesTest {
  static final int BUFFER = 64 * 1024;
  static final Duration TIMEOUT = Duration.ofSeconds(20);
  static final int PORT = 1234;

  @TempDir Path dir;
  private VsockRig rig;

  @AfterEach
  void tearDown() {
    if (rig != null) rig.close();
  }

  private void start(WritevHost host) throws Exception {
    rig = new VsockRig(dir, 256, BUFFER, 8, loop -> new OneEndpoint(host));
  }

  private <T> T onLoop(Callable<T> task) throws Exception {
    return rig.device.dataLoop().submit(task).get(10, TimeUnit.SECONDS);
  }

  private static byte[] random(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  /**
   * A host end that writes a real fd as {@link StreamBridge} does: the bytes staged in guest memory
   * with one writev(2) while the ring is empty; bytes the device kept in its ring copied out in
   * pieces of the copy buffer's size and written; what the fd does not take now waits for {@link
   * #push}.
   */
  static final class WritevHost extends OneEndpoint.Endpoint {
    private final int fd;
    private final IoVectors pieces;
    private final MemorySegment copy;
    private long unsentAt;
    private long unsentEnd;
    long straight;
    long copied;

    /** (bytes gathered, bytes written) of each straight write the fd took only part of. */
    final List<long[]> partial = new ArrayList<>();

    /** Straight writes that came after another straight write of the same packet. */
    int partialAfterAnotherOfTheSamePacket;

    boolean gatheredWhileRingHeld;
    Throwable failure;

    WritevHost(int fd, int pieces, int copy) {
      this.fd = fd;
      this.pieces = new IoVectors(pieces);
      this.copy = Arena.ofAuto().allocate(copy);
    }

    @Override
    public void readable(VsockConnection c) {
      connection = c;
      push();
    }

    /** Moves what the fd takes now; on the data loop. */
    void push() {
      try {
        pushOrFail();
      } catch (NativeException | RuntimeException e) {
        if (failure == null) failure = e;
        throw new IllegalStateException(e);
      }
    }

    private void pushOrFail() throws NativeException {
      VsockConnection c = connection;
      if (c == null || !flush()) return;
      boolean wroteStraight = false;
      while (c.available() > 0) {
        pieces.clear();
        boolean ringHeld = !c.fromGuest.isEmpty();
        long gathered = c.gatherStaged(pieces);
        if (gathered > 0) {
          if (ringHeld) gatheredWhileRingHeld = true;
          long n = Math.max(0, Libc.writev(fd, pieces));
          straight += n;
          if (n > 0 && n < gathered) {
            partial.add(new long[] {gathered, n});
            if (wroteStraight) partialAfterAnotherOfTheSamePacket++;
          }
          c.tookStaged(gathered, n);
          if (n < gathered) return;
          wroteStraight = true;
          continue;
        }
        int n = c.read(copy, 0, (int) Math.min(c.available(), copy.byteSize()));
        copied += n;
        unsentAt = 0;
        unsentEnd = n;
        if (!flush()) return;
      }
    }

    private boolean flush() throws NativeException {
      while (unsentAt < unsentEnd) {
        long n = Libc.write(fd, copy.asSlice(unsentAt), unsentEnd - unsentAt);
        if (n == Libc.WOULD_BLOCK) return false;
        unsentAt += n;
      }
      return true;
    }

    long unsent() {
      return unsentEnd - unsentAt;
    }
  }

  /** Reads what waits in non-blocking {@code fd} now into {@code into}; the bytes read. */
  private static int readNow(Fd fd, MemorySegment buffer, ByteArrayOutputStream into)
      throws NativeException {
    int total = 0;
    while (true) {
      long n = Libc.read(fd.value(), buffer, buffer.byteSize());
      if (n == Libc.WOULD_BLOCK || n == 0) return total;
      into.write(buffer.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE), 0, (int) n);
      total += (int) n;
    }
  }

  /**
   * The reader takes what comes and the host end writes on, the guest sending the rest of {@code
   * data} from {@code sent} on as credit allows, until {@code until} bytes arrived.
   */
  private void resume(
      WritevHost host,
      Fd reader,
      ByteArrayOutputStream got,
      VsockDriver.Socket s,
      byte[] data,
      int sent,
      int until)
      throws Exception {
    MemorySegment buffer = Arena.ofAuto().allocate(64 * 1024);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (got.size() < until) {
      int progress = readNow(reader, buffer, got);
      onLoop(
          () -> {
            host.push();
            return null;
          });
      if (sent < data.length) {
        int n = s.trySend(data, sent, Math.min(data.length - sent, 64 * 1024), false);
        sent += n;
        progress += n;
      }
      if (progress > 0) {
        deadline = System.nanoTime() + TIMEOUT.toNanos();
      } else {
        assertTrue(System.nanoTime() < deadline, "stalled with " + got.size() + " of " + until);
      }
      rig.driver.pump(2);
    }
  }

  @Test
  void aHostSocketThatFillsUpGetsEveryByteInOrderWithTheRestOfPartialWritesKeptInTheRing()
      throws Exception {
    try (TestSyscalls.SocketPair socket = TestSyscalls.socketPair()) {
      // A small send buffer: a 64 KiB packet does not fit whole once a few went.
      TestSyscalls.setSendBuffer(socket.one(), 16 * 1024);
      Libc.setNonBlocking(socket.one().value());
      Libc.setNonBlocking(socket.other().value());
      WritevHost host = new WritevHost(socket.one().value(), 16, 8 * 1024);
      start(host);
      byte[] data = random(4 << 20, 61);
      VsockDriver.Socket s = rig.driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);

      // Nobody reads: the socket fills, the packet that overflows it is written in part, the
      // device keeps the rest and whatever comes after, up to the window.
      int sent = VsockRig.sendUntilStalled(rig.driver, s, data, 64 * 1024);
      assertTrue(sent < data.length);
      assertFalse(onLoop(() -> host.partial.isEmpty()), "no straight write was partial");
      int held = onLoop(() -> host.connection.fromGuest.size());
      long written = onLoop(() -> host.straight + host.copied);
      assertEquals(sent, written + held, "every byte sent is written (or copied out) or held");
      assertEquals(BUFFER - held, s.settledCredit(TIMEOUT), "credit: the window less what is held");

      // The reader takes what the socket holds; the host end writes some of the ring's bytes.
      ByteArrayOutputStream got = new ByteArrayOutputStream();
      MemorySegment buffer = Arena.ofAuto().allocate(64 * 1024);
      readNow(socket.other(), buffer, got);
      onLoop(
          () -> {
            host.push();
            return null;
          });
      held = onLoop(() -> host.connection.fromGuest.size());
      assertTrue(held > 0 && held < BUFFER, held + " bytes held: the socket took part of them");
      written = onLoop(() -> host.straight + host.copied);
      assertEquals(sent, written + held);
      assertEquals(BUFFER - held, s.settledCredit(TIMEOUT), "credit exact after the ring's reads");

      // More comes while the ring holds bytes: it waits behind them, never written ahead.
      int more = (int) Math.min(s.credit(), 20_000);
      assertEquals(more, s.trySend(data, sent, more, false));
      sent += more;
      int expected = sent;
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (onLoop(() -> host.straight + host.copied + host.connection.fromGuest.size())
          < expected) {
        assertTrue(System.nanoTime() < deadline, "the device did not take the packets");
        rig.driver.pump(2);
      }

      resume(host, socket.other(), got, s, data, sent, data.length);
      assertArrayEquals(data, got.toByteArray());
      assertFalse(onLoop(() -> host.gatheredWhileRingHeld), "staged bytes passed the ring's");
      assertNull(onLoop(() -> host.failure));
      deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (s.credit() < BUFFER) {
        assertTrue(System.nanoTime() < deadline, "credit " + s.credit() + " at the end");
        rig.driver.pump(2);
      }
      assertEquals(0, rig.driver.creditViolations());
      assertEquals(0, rig.device.guestErrors());
    }
  }

  /** fcntl F_SETPIPE_SZ: a pipe of one page takes a known amount of a large write. */
  private static final int F_SETPIPE_SZ = 1031;

  private static final int PAGE = 4096;

  @Test
  void aPacketOverSeveralDescriptorsIsWrittenInOrderAfterAPartialWriteInsideOne() throws Exception {
    try (TestSyscalls.Pipe pipe = TestSyscalls.pipe()) {
      int fd = pipe.writeEnd().value();
      assertEquals(PAGE, Libc.fcntl(fd, F_SETPIPE_SZ, PAGE));
      Libc.setNonBlocking(fd);
      Libc.setNonBlocking(pipe.readEnd().value());
      // Two pieces per writev: a packet of more descriptors takes more than one. Copies of 1000
      // bytes: the device's ring keeps most of what a partial write left.
      WritevHost host = new WritevHost(fd, 2, 1000);
      start(host);
      VsockDriver.Socket s = rig.driver.connect(PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
      ByteArrayOutputStream got = new ByteArrayOutputStream();

      // The header over two descriptors, the payload over three: 1000, 5000 and 2000 bytes. The
      // empty one-page pipe takes 4096 of the 6000 gathered: the write stops inside the second.
      rig.driver.splitTx(30, 1000, 5000);
      byte[] first = random(8000, 71);
      assertEquals(first.length, s.trySend(first, 0, first.length, false));
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (onLoop(() -> host.partial.size()) == 0) {
        assertTrue(System.nanoTime() < deadline, "no partial write");
        rig.driver.pump(2);
      }
      long[] partial = onLoop(() -> host.partial.get(0));
      assertEquals(6000, partial[0], "two descriptors gathered");
      assertTrue(
          partial[1] > 1000 && partial[1] < 6000, partial[1] + ": not inside the second one");
      int held = onLoop(() -> host.connection.fromGuest.size());
      assertEquals(1000, onLoop(() -> host.unsent()), "copied from the ring, not written yet");
      assertEquals(first.length - partial[1] - 1000, held, "the device keeps the rest");
      assertEquals(BUFFER - held, s.settledCredit(TIMEOUT));
      resume(host, pipe.readEnd(), got, s, first, first.length, first.length);
      assertArrayEquals(first, got.toByteArray());

      // Payload 1000, 2000, 3000 and 2000: the first writev (two descriptors) goes whole, the
      // second stops inside the third descriptor, behind the bytes the first took.
      rig.driver.splitTx(30, 1000, 2000, 3000);
      byte[] second = random(8000, 72);
      assertEquals(second.length, s.trySend(second, 0, second.length, false));
      deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (onLoop(() -> host.partial.size()) < 2) {
        assertTrue(System.nanoTime() < deadline, "no second partial write");
        rig.driver.pump(2);
      }
      assertEquals(1, onLoop(() -> host.partialAfterAnotherOfTheSamePacket));
      partial = onLoop(() -> host.partial.get(1));
      assertEquals(5000, partial[0], "the third and fourth descriptors gathered");
      held = onLoop(() -> host.connection.fromGuest.size());
      assertEquals(1000, onLoop(() -> host.unsent()));
      assertEquals(second.length - 3000 - partial[1] - 1000, held);
      assertEquals(BUFFER - held, s.settledCredit(TIMEOUT));
      resume(host, pipe.readEnd(), got, s, second, second.length, first.length + second.length);
      byte[] all = got.toByteArray();
      assertArrayEquals(first, Arrays.copyOfRange(all, 0, first.length));
      assertArrayEquals(second, Arrays.copyOfRange(all, first.length, all.length));
      assertNull(onLoop(() -> host.failure));
      assertEquals(0, rig.driver.creditViolations());
      assertEquals(0, rig.device.guestErrors());
    }
  }
}
