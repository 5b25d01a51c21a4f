package dev.bounce.vhost.frontend;

import dev.bounce.pool.NativeException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.concurrent.ThreadLocalRandom;

/**
 * The guest driver of the engine's test device ({@code EchoDevice}): posts chains of one readable
 * buffer (a known pattern) and one writable buffer of the same size on one queue (0 unless told),
 * keeps the ring as full as the ring, the guest heap and the pool allow, and checks that every
 * completion echoed the pattern byte for byte. Nothing is allocated per chain.
 */
public final class EchoDriver {
  /** The device echoes through a 64 KiB buffer; larger chains would come back cut. */
  public static final int MAX_SIZE = 64 * 1024;

  private static final int PATTERN_SPREAD = 251;
  private static final int STALL_MILLIS = 10_000;

  private final FrontendSession.Queue queue;
  private final GuestBuffers buffers;
  private final Dma dma;
  private final MemorySegment heap;
  private final MemorySegment pattern;
  private final DriverQueue.UsedConsumer onUsed = this::completed;
  private final long[] outBuffer;
  private final long[] inBuffer;
  private final long[] outMapped;
  private final long[] inMapped;
  private final long[] postedAt;
  private int size;
  private Stats stats;
  private int inFlight;

  public EchoDriver(FrontendSession session) {
    this(session, 0);
  }

  /** A driver on queue {@code index} (a device with several echo queues). */
  public EchoDriver(FrontendSession session, int index) {
    this.queue = session.queue(index);
    this.buffers = GuestBuffers.of(session);
    this.dma = buffers.dma();
    this.heap = buffers.bytes();
    int entries = queue.ring().size();
    this.outBuffer = new long[entries];
    this.inBuffer = new long[entries];
    this.outMapped = new long[entries];
    this.inMapped = new long[entries];
    this.postedAt = new long[entries];
    this.pattern = Arena.ofAuto().allocate(MAX_SIZE + PATTERN_SPREAD);
    byte[] random = new byte[(int) pattern.byteSize()];
    ThreadLocalRandom.current().nextBytes(random);
    MemorySegment.copy(MemorySegment.ofArray(random), 0, pattern, 0, random.length);
  }

  /**
   * Echoes {@code count} chains of {@code size} bytes (or as many as fit in {@code duration}).
   *
   * @throws IOException when the backend stops completing chains for 10 s
   */
  public Stats run(long count, int size, Duration duration) throws IOException {
    if (size < 1 || size > MAX_SIZE) {
      throw new IllegalArgumentException("echo sizes are 1.." + MAX_SIZE + " bytes, not " + size);
    }
    this.size = size;
    this.stats = new Stats();
    long deadline = System.nanoTime() + duration.toNanos();
    long posted = 0;
    stats.start();
    while (stats.operations() + stats.errors() < count && System.nanoTime() < deadline) {
      while (posted < count && post(posted)) posted++;
      queue.ring().kick(queue.kick());
      if (queue.ring().harvest(onUsed) == 0 && inFlight > 0) waitForUsed(deadline);
      if (inFlight == 0 && posted < count && !canPost()) {
        throw new IOException("the guest heap or the pool cannot hold one " + size + "-byte chain");
      }
    }
    stats.finish();
    return stats;
  }

  private boolean canPost() {
    return queue.ring().freeDescriptors() >= 2;
  }

  /** Posts chain number {@code sequence}; false under back-pressure (ring, heap or pool full). */
  private boolean post(long sequence) {
    long out = buffers.allocate(size);
    if (out == GuestBuffers.NO_ROOM) return false;
    long in = buffers.allocate(size);
    if (in == GuestBuffers.NO_ROOM) {
      buffers.free(out, size);
      return false;
    }
    MemorySegment.copy(pattern, sequence % PATTERN_SPREAD, heap, out - buffers.start(), size);
    long outDevice = dma.mapToDevice(out, size);
    long inDevice = outDevice == Dma.NO_ROOM ? Dma.NO_ROOM : dma.mapFromDevice(in, size);
    int head =
        inDevice == Dma.NO_ROOM
            ? DriverQueue.NO_SPACE
            : queue.ring().add(outDevice, size, inDevice, size, false);
    if (head == DriverQueue.NO_SPACE) {
      if (inDevice != Dma.NO_ROOM) dma.unmapFromDevice(inDevice, in, size);
      if (outDevice != Dma.NO_ROOM) dma.unmapToDevice(outDevice, size);
      buffers.free(in, size);
      buffers.free(out, size);
      return false;
    }
    outBuffer[head] = out;
    inBuffer[head] = in;
    outMapped[head] = outDevice;
    inMapped[head] = inDevice;
    postedAt[head] = System.nanoTime();
    inFlight++;
    return true;
  }

  private void completed(int head, int length) {
    inFlight--;
    long out = outBuffer[head];
    long in = inBuffer[head];
    dma.unmapFromDevice(inMapped[head], in, size);
    dma.unmapToDevice(outMapped[head], size);
    long from = out - buffers.start();
    long to = in - buffers.start();
    if (length != size) {
      stats.error(
          "chain "
              + head
              + ": the device wrote "
              + Integer.toUnsignedString(length)
              + " of "
              + size
              + " bytes");
    } else if (MemorySegment.mismatch(heap, from, from + size, heap, to, to + size) != -1) {
      stats.error("chain " + head + ": the echoed bytes differ from those sent");
    } else {
      stats.record(size, System.nanoTime() - postedAt[head]);
    }
    buffers.free(in, size);
    buffers.free(out, size);
  }

  /** Waits for a used-buffer notification; returns at {@code deadline}, the run's end, too. */
  private void waitForUsed(long deadline) throws IOException {
    DriverQueue ring = queue.ring();
    long waited = 0;
    while (!ring.enableUsedNotifications()) {
      long left = (deadline - System.nanoTime()) / 1_000_000;
      if (left <= 0) return;
      try {
        if (queue.call().await((int) Math.min(1000, left)) > 0) return;
      } catch (NativeException e) {
        throw new IOException("waiting on the call eventfd: " + e.getMessage(), e);
      }
      waited += 1000;
      if (waited >= STALL_MILLIS) {
        throw new IOException(
            "the backend completed nothing for "
                + waited / 1000
                + " s with "
                + inFlight
                + " chains in flight (is it serving this queue? see its log)");
      }
    }
  }
}
