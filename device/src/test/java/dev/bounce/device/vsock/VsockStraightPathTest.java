package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Guest-to-host stream bytes that go straight from the tx chain to the host end ({@link
 * VsockConnection#offer}), with a host end that takes only part of what it is offered and then
 * stops reading: the device keeps no more than the credit window, the credit stays exact and the
 * bytes arrive in order once the host reads again.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class VsockStraightPathTest {
  static final int BUFFER = 64 * 1024;
  static final Duration TIMEOUT = Duration.ofSeconds(20);

  @TempDir Path dir;
  private final Sink sink = new Sink();
  private VsockRig rig;

  @BeforeEach
  void start() throws Exception {
    rig = new VsockRig(dir, 256, BUFFER, 8, loop -> new OneEndpoint(sink));
  }

  @AfterEach
  void tearDown() {
    rig.close();
  }

  @Test
  void aHostThatStopsReadingMidPacketKeepsMemoryBoundedAndBytesInOrder() throws Exception {
    byte[] data = new byte[4 << 20];
    new Random(7).nextBytes(data);
    sink.budget = 300_000; // runs out in the middle of a 64 KiB packet
    VsockDriver.Socket s = rig.driver.connect(1234, VsockHeader.TYPE_STREAM, TIMEOUT);
    int sent = VsockRig.sendUntilStalled(rig.driver, s, data, 64 * 1024);
    int taken = onLoop(() -> sink.got.size());
    int held = onLoop(() -> sink.connection.available());
    assertEquals(300_000, taken);
    assertTrue(sink.sawStraight, "no bytes were offered straight from the chain");
    assertEquals(sent - taken, held, "every byte the guest sent is taken or held");
    assertTrue(held <= BUFFER, held + " bytes held, over the " + BUFFER + "-byte window");
    assertEquals(0, s.credit(), "a host that stopped reading gives no more credit");

    onLoop(
        () -> {
          sink.budget = Integer.MAX_VALUE;
          sink.drain();
          return null;
        });
    s.send(Arrays.copyOfRange(data, sent, data.length), TIMEOUT);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (onLoop(() -> sink.got.size()) < data.length && System.nanoTime() < deadline) {
      rig.driver.pump(2);
    }
    assertArrayEquals(data, onLoop(() -> sink.got.toByteArray()));
    // Every byte forwarded was announced: the guest's credit is the whole window again.
    deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (s.credit() < BUFFER && System.nanoTime() < deadline) rig.driver.pump(2);
    assertEquals(BUFFER, s.credit());
    assertEquals(0, rig.driver.creditViolations());
    assertEquals(0, rig.device.guestErrors());
  }

  private <T> T onLoop(java.util.concurrent.Callable<T> task) throws Exception {
    return rig.device.dataLoop().submit(task).get(10, TimeUnit.SECONDS);
  }

  /** A host end that reads in small pieces while its budget lasts. */
  static final class Sink extends OneEndpoint.Endpoint {
    final ByteArrayOutputStream got = new ByteArrayOutputStream();
    private final byte[] piece = new byte[1000];
    int budget;
    boolean sawStraight;

    @Override
    public void readable(VsockConnection c) {
      connection = c;
      if (c.fromGuest.isEmpty() && c.available() > 0) sawStraight = true;
      drain();
    }

    void drain() {
      while (budget > 0 && connection.available() > 0) {
        int n = connection.read(MemorySegment.ofArray(piece), 0, Math.min(piece.length, budget));
        got.write(piece, 0, n);
        budget -= n;
      }
    }
  }
}
