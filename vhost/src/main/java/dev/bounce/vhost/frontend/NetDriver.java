package dev.bounce.vhost.frontend;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import dev.bounce.vhost.protocol.ConfigSpace;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Locale;
import java.util.concurrent.ThreadLocalRandom;

/**
 * The guest driver of a virtio-net device (virtio 1.2 section 5.1), as the fake frontend's guest:
 * queue 0 is receiveq1, queue 1 transmitq1. It negotiates VERSION_1, MRG_RXBUF and MAC when offered
 * ({@link #DRIVER_FEATURES}, plus the ring features), so every packet is preceded by the 12-byte
 * {@code virtio_net_hdr_v1} ({@code num_buffers} included) whether mergeable receive buffers were
 * negotiated or not.
 *
 * <p>Transmit: each frame is one chain: an all-zero header (no checksum offload, GSO_NONE,
 * num_buffers 0) and an Ethernet frame of 60 to 1514 bytes (no FCS) from {@link #SOURCE_MAC} (or
 * the device's MAC, read from its config space when MAC and the CONFIG protocol feature were
 * negotiated) to {@link #DESTINATION_MAC}, ethertype {@link #ETHERTYPE} (IEEE local experimental
 * 0x88b5), whose payload starts with a 24-byte test header: magic "BNCE", the driver's run id, a
 * sequence number, the frame length and a checksum of the rest. The header and the frame travel in
 * one buffer, or as two descriptors (indirect when negotiated), see {@link TxLayout}. Every buffer
 * goes through {@link GuestBuffers} and {@link Dma}, so in pool mode it bounces.
 *
 * <p>Receive: the receiveq is kept stocked with device-writable buffers, {@value #RX_BUFFER_SIZE}
 * bytes by default (enough for the header and a 1514-byte frame, the 1526 bytes section 5.1.6.3.1
 * asks for without MRG_RXBUF; smaller ones with MRG_RXBUF make the device spread frames); frames
 * spread over several buffers (num_buffers above 1) are gathered. Frames of this test protocol are
 * verified (length, checksum, sequence); other frames are counted as foreign.
 *
 * <p>Workloads: {@link #transmit}, {@link #loopback} (for a backend that sends every frame back,
 * such as testpmd's io forwarding) and {@link #receive}. One thread drives the driver; nothing is
 * allocated per frame.
 */
public final class NetDriver {
  /** Virtqueue numbers (section 5.1.2). */
  public static final int RECEIVEQ = 0;

  public static final int TRANSMITQ = 1;

  /** VIRTIO_NET_F_MAC: the device has given a MAC address (config space offset 0). */
  public static final int VIRTIO_NET_F_MAC = 5;

  /** VIRTIO_NET_F_MRG_RXBUF: the driver can merge receive buffers. */
  public static final int VIRTIO_NET_F_MRG_RXBUF = 15;

  /** The features this driver asks for; the session adds VERSION_1. */
  public static final long DRIVER_FEATURES =
      VirtioFeatures.bit(VIRTIO_NET_F_MAC)
          | VirtioFeatures.bit(VIRTIO_NET_F_MRG_RXBUF)
          | VirtioFeatures.bit(VirtioFeatures.EVENT_IDX)
          | VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC);

  /** Descriptors per indirect table a transmit chain needs (header and frame). */
  public static final int INDIRECT_ENTRIES = 2;

  /** struct virtio_net_hdr_v1 without hash report: 12 bytes, num_buffers at offset 10. */
  public static final int HEADER_SIZE = 12;

  /**
   * Frame sizes without FCS: the Ethernet minimum and the 1500-byte MTU plus the 14-byte header.
   */
  public static final int MIN_FRAME = 60;

  public static final int MAX_FRAME = 1514;

  /** IEEE 802 local experimental ethertype 1. */
  public static final int ETHERTYPE = 0x88b5;

  /** Bytes per receive buffer by default: at least 12 + 1514 (section 5.1.6.3.1), one slot. */
  public static final int RX_BUFFER_SIZE = 2048;

  /** The smallest receive buffer this driver posts with MRG_RXBUF (the spec's minimum is 12). */
  public static final int MIN_RX_BUFFER_SIZE = 64;

  /** The smallest receive buffer without MRG_RXBUF: the header and a 1514-byte frame. */
  public static final int MIN_WHOLE_RX_BUFFER_SIZE = HEADER_SIZE + MAX_FRAME;

  /** Locally administered unicast addresses: 02:62:6f:75:6e:63 ("\2bounc") and ...:64. */
  public static final String SOURCE_MAC = "02:62:6f:75:6e:63";

  public static final String DESTINATION_MAC = "02:62:6f:75:6e:64";

  /** How a transmitted frame's header and data are laid out. */
  public enum TxLayout {
    /** Header and frame in one buffer, one descriptor (Linux when the header fits in headroom). */
    ONE_BUFFER,
    /** The header and the frame as two descriptors, in an indirect table when negotiated. */
    HEADER_APART,
    /** Alternately one and the other (even sequence numbers one buffer): both paths exercised. */
    MIXED
  }

  private static final ValueLayout.OfShort BE16 =
      JAVA_SHORT.withOrder(ByteOrder.BIG_ENDIAN).withByteAlignment(1);
  private static final ValueLayout.OfInt BE32 =
      JAVA_INT.withOrder(ByteOrder.BIG_ENDIAN).withByteAlignment(1);
  private static final ValueLayout.OfLong BE64 =
      JAVA_LONG.withOrder(ByteOrder.BIG_ENDIAN).withByteAlignment(1);
  private static final ValueLayout.OfShort LE16 =
      JAVA_SHORT.withOrder(ByteOrder.LITTLE_ENDIAN).withByteAlignment(1);
  private static final ValueLayout.OfInt LE32 =
      JAVA_INT.withOrder(ByteOrder.LITTLE_ENDIAN).withByteAlignment(1);
  private static final ValueLayout.OfLong LE64 =
      JAVA_LONG.withOrder(ByteOrder.LITTLE_ENDIAN).withByteAlignment(1);

  // virtio_net_hdr_v1: u8 flags, u8 gso_type, le16 hdr_len, gso_size, csum_start, csum_offset,
  // num_buffers.
  private static final int HDR_GSO_TYPE = 1;
  private static final int HDR_NUM_BUFFERS = 10;

  // The frame: dst, src, ethertype, then the test header (big endian) and filler.
  private static final int AT_ETHERTYPE = 12;
  private static final int AT_MAGIC = 14;
  private static final int AT_RUN = 18;
  private static final int AT_SEQUENCE = 22;
  private static final int AT_LENGTH = 30;
  private static final int AT_CHECKSUM = 32;
  private static final int AT_FILL = 36;
  private static final int MAGIC = 0x424e4345; // "BNCE"

  /** The largest frame gathered from several buffers (a GSO-sized frame; ours are smaller). */
  private static final int MAX_GATHERED = 65_562;

  private static final int PATTERN_SPREAD = 251;
  private static final long CHECKSUM_SEED = 0x62_6f_75_6e_63_65L;
  private static final int STALL_MILLIS = 10_000;
  private static final int WAIT_MILLIS = 1000;
  private static final long ANY_RUN = -1;

  private final FrontendSession.Queue rx;
  private final FrontendSession.Queue tx;
  private final DriverQueue rxRing;
  private final DriverQueue txRing;
  private final GuestBuffers buffers;
  private final Dma dma;
  private final MemorySegment heap;
  private final long heapStart;
  private final boolean mergeable;
  private final int rxBufferSize;
  private final MemorySegment sourceMac;
  private final MemorySegment destinationMac;
  private final String macSource;
  private final MemorySegment pattern;
  private final long[] fillerHashes = new long[PATTERN_SPREAD];
  private int fillerHashSize;
  private final int runId;
  private TxLayout layout = TxLayout.MIXED;

  // Transmit: one all-zero header shared by every HEADER_APART chain (the device only reads it),
  // mapped once like a coherent DMA allocation; what each chain in flight holds, by head.
  private final long txHeader;
  private final long txHeaderMapped;
  private final DriverQueue.Chain chain = new DriverQueue.Chain(2);
  private final long[] txBuffer;
  private final long[] txMapped;
  private final int[] txLength;
  private final int[] txFrameSize;
  private final long[] txPostedAt;
  private final DriverQueue.UsedConsumer onTxUsed = this::transmitted;
  private long nextSequence;

  // Receive: free guest buffers, what each posted buffer is, by head, and a gathered frame.
  private final long[] rxFree;
  private final int rxBuffers;
  private int rxFreeCount;
  private final long[] rxBuffer;
  private final long[] rxMapped;
  private final MemorySegment gathered;
  private int gatheredLength;
  private int buffersLeft;
  private boolean gatherFailed;
  private final DriverQueue.UsedConsumer onRxUsed = this::receivedBuffer;

  // The running workload.
  private enum Mode {
    TRANSMIT,
    LOOPBACK,
    RECEIVE
  }

  private Mode mode = Mode.TRANSMIT;
  private Stats stats = new Stats();
  private long txCompleted;
  private long expectedRun = ANY_RUN;
  private long expectedSequence;
  private boolean sequenceKnown;
  private long returned;
  private long lost;
  private int stalledMillis;
  private final long[] loopSentAt;
  private final int loopMask;

  // Counters over the driver's life.
  private long framesSent;
  private long framesReceived;
  private long foreignFrames;
  private long badFrames;
  private long lostFrames;
  private long rxBuffersUsed;
  private long bytesReceived;

  /**
   * A driver over {@code session}'s queues 0 and 1 with {@value #RX_BUFFER_SIZE}-byte receive
   * buffers; stocks the receiveq at once.
   *
   * @throws IllegalArgumentException when the session has fewer than two queues
   * @throws IOException when reading the device's MAC fails
   */
  public NetDriver(FrontendSession session) throws IOException {
    this(session, RX_BUFFER_SIZE);
  }

  /**
   * A driver whose receive buffers are {@code rxBufferSize} bytes: {@value #MIN_RX_BUFFER_SIZE} to
   * {@value #RX_BUFFER_SIZE} with MRG_RXBUF negotiated (below 1526, frames come in several
   * buffers), {@value #MIN_WHOLE_RX_BUFFER_SIZE} to {@value #RX_BUFFER_SIZE} without.
   *
   * @throws IllegalArgumentException when the session has fewer than two queues or the size does
   *     not fit
   * @throws IOException when reading the device's MAC fails
   */
  public NetDriver(FrontendSession session, int rxBufferSize) throws IOException {
    if (session.queueCount() < 2) {
      throw new IllegalArgumentException(
          "a net driver needs queue 0 (receiveq) and queue 1 (transmitq); the session has "
              + session.queueCount());
    }
    this.rx = session.queue(RECEIVEQ);
    this.tx = session.queue(TRANSMITQ);
    this.rxRing = rx.ring();
    this.txRing = tx.ring();
    this.buffers = GuestBuffers.of(session);
    this.dma = buffers.dma();
    this.heap = buffers.bytes();
    this.heapStart = buffers.start();
    this.mergeable = VirtioFeatures.has(session.features(), VIRTIO_NET_F_MRG_RXBUF);
    int smallest = mergeable ? MIN_RX_BUFFER_SIZE : MIN_WHOLE_RX_BUFFER_SIZE;
    if (rxBufferSize < smallest || rxBufferSize > RX_BUFFER_SIZE) {
      throw new IllegalArgumentException(
          "receive buffers are "
              + smallest
              + ".."
              + RX_BUFFER_SIZE
              + " bytes "
              + (mergeable ? "with" : "without")
              + " mergeable rx buffers, not "
              + rxBufferSize);
    }
    this.rxBufferSize = rxBufferSize;
    Arena arena = Arena.ofAuto();
    this.sourceMac = arena.allocate(6);
    this.destinationMac = arena.allocate(6);
    MemorySegment.copy(mac(DESTINATION_MAC), 0, destinationMac, JAVA_BYTE, 0, 6);
    byte[] deviceMac = deviceMac(session);
    this.macSource =
        deviceMac != null
            ? "the device's config space"
            : VirtioFeatures.has(session.features(), VIRTIO_NET_F_MAC)
                ? "the test address (MAC negotiated, but no CONFIG protocol feature to read it)"
                : "the test address";
    MemorySegment.copy(
        deviceMac != null ? deviceMac : mac(SOURCE_MAC), 0, sourceMac, JAVA_BYTE, 0, 6);
    this.pattern = arena.allocate(MAX_FRAME + PATTERN_SPREAD);
    byte[] random = new byte[(int) pattern.byteSize()];
    ThreadLocalRandom.current().nextBytes(random);
    MemorySegment.copy(random, 0, pattern, JAVA_BYTE, 0, random.length);
    this.runId = ThreadLocalRandom.current().nextInt();

    int txSize = txRing.size();
    this.txBuffer = new long[txSize];
    this.txMapped = new long[txSize];
    this.txLength = new int[txSize];
    this.txFrameSize = new int[txSize];
    this.txPostedAt = new long[txSize];
    this.txHeader = buffers.allocate(HEADER_SIZE);
    if (txHeader == GuestBuffers.NO_ROOM) {
      throw new IllegalArgumentException("the guest heap has no room for a virtio_net_hdr");
    }
    heap.set(LE64, txHeader - heapStart, 0L);
    heap.set(LE32, txHeader - heapStart + 8, 0);
    this.txHeaderMapped = dma.mapToDevice(txHeader, HEADER_SIZE);
    if (txHeaderMapped == Dma.NO_ROOM) {
      throw new IllegalArgumentException("the pool has no room for the transmit header");
    }

    int rxSize = rxRing.size();
    this.rxBuffer = new long[rxSize];
    this.rxMapped = new long[rxSize];
    this.rxFree = new long[rxSize];
    for (int i = 0; i < rxSize; i++) {
      long buffer = buffers.allocate(rxBufferSize);
      if (buffer == GuestBuffers.NO_ROOM) break;
      rxFree[rxFreeCount++] = buffer;
    }
    if (rxFreeCount == 0) {
      throw new IllegalArgumentException("the guest heap has no room for one receive buffer");
    }
    this.rxBuffers = rxFreeCount;
    this.gathered = arena.allocate(MAX_GATHERED);
    this.loopSentAt = new long[rxSize];
    this.loopMask = rxSize - 1;
    rxRing.disableUsedNotifications();
    txRing.disableUsedNotifications();
    refill();
  }

  /** The device's MAC from config space, or null when it cannot be read. */
  private static byte[] deviceMac(FrontendSession session) throws IOException {
    if (!VirtioFeatures.has(session.features(), VIRTIO_NET_F_MAC)
        || !session.negotiated(ProtocolFeature.CONFIG)) {
      return null;
    }
    try (Message<FrontendRequest> reply =
        session.channel().call(FrontendRequest.GET_CONFIG, ConfigSpace.read(0, 6))) {
      return reply.payload() instanceof ConfigSpace config && config.data().length == 6
          ? config.data()
          : null;
    }
  }

  private static byte[] mac(String text) {
    return HexFormat.ofDelimiter(":").parseHex(text);
  }

  /** Chooses how later frames are laid out (default {@link TxLayout#MIXED}). */
  public NetDriver layout(TxLayout layout) {
    this.layout = layout;
    return this;
  }

  /** Checks a frame size: 60 to 1514 bytes, an Ethernet frame without FCS (no GSO). */
  public static void checkFrameSize(int frameSize) {
    if (frameSize < MIN_FRAME || frameSize > MAX_FRAME) {
      throw new IllegalArgumentException(
          "net frame sizes are "
              + MIN_FRAME
              + ".."
              + MAX_FRAME
              + " bytes (an Ethernet frame without FCS; no GSO), not "
              + frameSize);
    }
  }

  // ---- workloads ----

  /**
   * Transmits {@code count} frames of {@code frameSize} bytes (or as many as {@code duration}
   * allows) and returns one operation per frame the device completed, its latency from posting to
   * completion. Frames that arrive meanwhile are verified and counted ({@link #framesReceived}).
   *
   * @throws IllegalArgumentException for a frame size outside 60..1514
   * @throws IOException when the device completes nothing for 10 s
   */
  public Stats transmit(long count, int frameSize, Duration duration) throws IOException {
    checkFrameSize(frameSize);
    prepareFiller(frameSize);
    begin(Mode.TRANSMIT);
    long first = nextSequence;
    long deadline = System.nanoTime() + duration.toNanos();
    while (txCompleted < count && System.nanoTime() < deadline) {
      int work = harvest();
      while (nextSequence - first < count && post(frameSize)) work++;
      kick();
      if (work == 0 && nextSequence - first < count && txRing.inFlight() == 0) {
        throw cannotPost(frameSize);
      }
      if (work == 0) idle(true, "transmitted frame");
    }
    stats.finish();
    return stats;
  }

  /**
   * For a backend that sends every frame back (testpmd's io or macswap forwarding, a loopback
   * backend): transmits {@code count} frames of {@code frameSize} bytes, never more in the loop
   * than the receive buffers posted can hold, so a device that forwards promptly drops none, and
   * returns one operation per frame that came back intact and in order, its latency the round trip.
   * A frame that does not come back is an error.
   *
   * @throws IOException when nothing comes back for 10 s
   */
  public Stats loopback(long count, int frameSize, Duration duration) throws IOException {
    checkFrameSize(frameSize);
    prepareFiller(frameSize);
    begin(Mode.LOOPBACK);
    long first = nextSequence;
    expectedRun = runId;
    expectedSequence = first;
    sequenceKnown = true;
    // A frame takes this many buffers (a device could take more, and then drop some).
    int buffersPerFrame = (HEADER_SIZE + frameSize + rxBufferSize - 1) / rxBufferSize;
    long deadline = System.nanoTime() + duration.toNanos();
    while (returned + lost < count && System.nanoTime() < deadline) {
      int work = harvest();
      while (nextSequence - first < count
          && (nextSequence - first - returned - lost + 1) * buffersPerFrame <= rxRing.inFlight()
          && post(frameSize)) {
        work++;
      }
      kick();
      if (work == 0
          && nextSequence - first < count
          && txRing.inFlight() == 0
          && nextSequence - first - returned - lost == 0) {
        throw cannotPost(frameSize);
      }
      if (work == 0) idle(false, "frame back");
    }
    long missing = count - returned - lost;
    if (missing > 0 && nextSequence - first == count) {
      stats.error(missing + " frames sent did not come back before the deadline");
    }
    stats.finish();
    return stats;
  }

  /**
   * Receives until {@code count} frames of this test protocol (from any sender; sequence checked
   * from the first one's run) arrived, or {@code duration} passed: one operation per intact frame.
   */
  public Stats receive(long count, Duration duration) throws IOException {
    begin(Mode.RECEIVE);
    expectedRun = ANY_RUN;
    sequenceKnown = false;
    long deadline = System.nanoTime() + duration.toNanos();
    while (returned < count && System.nanoTime() < deadline) {
      int work = harvest();
      kick();
      if (work == 0) idle(false, null);
    }
    stats.finish();
    return stats;
  }

  private IOException cannotPost(int frameSize) {
    return new IOException(
        "cannot post one "
            + frameSize
            + "-byte frame with nothing in flight: the guest heap or the pool is full ("
            + rxRing.inFlight()
            + " receive buffers of "
            + rxBufferSize
            + " bytes are posted; make the pool larger)");
  }

  private void begin(Mode mode) {
    this.mode = mode;
    this.stats = new Stats();
    this.txCompleted = 0;
    this.returned = 0;
    this.lost = 0;
    this.expectedRun = ANY_RUN;
    this.sequenceKnown = false;
    this.stalledMillis = 0;
    stats.start();
  }

  /** Used buffers of both queues handed over, and the receiveq restocked; how many there were. */
  private int harvest() {
    int work = rxRing.harvest(onRxUsed) + txRing.harvest(onTxUsed);
    refill();
    return work;
  }

  private void kick() throws IOException {
    rx.notifyDevice();
    tx.notifyDevice();
  }

  // ---- transmit ----

  /** Posts the next frame; false under back-pressure (ring, heap or pool full). */
  private boolean post(int frameSize) {
    long sequence = nextSequence;
    boolean apart =
        layout == TxLayout.HEADER_APART || (layout == TxLayout.MIXED && (sequence & 1) == 1);
    int length = apart ? frameSize : HEADER_SIZE + frameSize;
    long buffer = buffers.allocate(length);
    if (buffer == GuestBuffers.NO_ROOM) return false;
    long frame = buffer - heapStart;
    if (!apart) {
      heap.set(LE64, frame, 0L);
      heap.set(LE32, frame + 8, 0);
      frame += HEADER_SIZE;
    }
    writeFrame(frame, sequence, frameSize);
    long mapped = dma.mapToDevice(buffer, length);
    if (mapped == Dma.NO_ROOM) {
      buffers.free(buffer, length);
      return false;
    }
    int head =
        apart
            ? txRing.add(
                chain.clear().readable(txHeaderMapped, HEADER_SIZE).readable(mapped, frameSize),
                true)
            : txRing.add(mapped, length, false);
    if (head == DriverQueue.NO_SPACE) {
      dma.unmapToDevice(mapped, length);
      buffers.free(buffer, length);
      return false;
    }
    long now = System.nanoTime();
    txBuffer[head] = buffer;
    txMapped[head] = mapped;
    txLength[head] = length;
    txFrameSize[head] = frameSize;
    txPostedAt[head] = now;
    if (mode == Mode.LOOPBACK) loopSentAt[(int) sequence & loopMask] = now;
    nextSequence++;
    framesSent++;
    return true;
  }

  private void writeFrame(long at, long sequence, int frameSize) {
    MemorySegment.copy(destinationMac, 0, heap, at, 6);
    MemorySegment.copy(sourceMac, 0, heap, at + 6, 6);
    heap.set(BE16, at + AT_ETHERTYPE, (short) ETHERTYPE);
    heap.set(BE32, at + AT_MAGIC, MAGIC);
    heap.set(BE32, at + AT_RUN, runId);
    heap.set(BE64, at + AT_SEQUENCE, sequence);
    heap.set(BE16, at + AT_LENGTH, (short) frameSize);
    MemorySegment.copy(pattern, sequence % PATTERN_SPREAD, heap, at + AT_FILL, frameSize - AT_FILL);
    long fillerHash = fillerHashes[(int) (sequence % PATTERN_SPREAD)];
    heap.set(BE32, at + AT_CHECKSUM, checksum(fillerHash, heap, at));
  }

  private void transmitted(int head, int length) {
    long buffer = txBuffer[head];
    int bufferLength = txLength[head];
    dma.unmapToDevice(txMapped[head], bufferLength);
    buffers.free(buffer, bufferLength);
    txCompleted++;
    if (mode == Mode.TRANSMIT) {
      stats.record(txFrameSize[head], System.nanoTime() - txPostedAt[head]);
    }
  }

  // ---- receive ----

  /** Posts every free receive buffer the ring and the pool take. */
  private void refill() {
    while (rxFreeCount > 0) {
      long buffer = rxFree[rxFreeCount - 1];
      long mapped = dma.mapFromDevice(buffer, rxBufferSize);
      if (mapped == Dma.NO_ROOM) return;
      int head = rxRing.add(mapped, rxBufferSize, true);
      if (head == DriverQueue.NO_SPACE) {
        dma.unmapFromDevice(mapped, buffer, rxBufferSize);
        return;
      }
      rxFreeCount--;
      rxBuffer[head] = buffer;
      rxMapped[head] = mapped;
    }
  }

  private void receivedBuffer(int head, int length) {
    long buffer = rxBuffer[head];
    // The ring already refused a used length above the buffer's writable bytes.
    dma.unmapFromDevice(rxMapped[head], buffer, rxBufferSize);
    rxBuffersUsed++;
    consume(buffer - heapStart, length);
    rxFree[rxFreeCount++] = buffer;
  }

  /** One used receive buffer of {@code length} bytes at heap offset {@code at}. */
  private void consume(long at, int length) {
    if (buffersLeft > 0) {
      if (!gatherFailed) {
        if (gatheredLength + length > MAX_GATHERED) {
          bad("a frame gathered from several buffers runs over " + MAX_GATHERED + " bytes");
          gatherFailed = true;
        } else {
          MemorySegment.copy(heap, at, gathered, gatheredLength, length);
          gatheredLength += length;
        }
      }
      if (--buffersLeft == 0 && !gatherFailed) frame(gathered, 0, gatheredLength);
      return;
    }
    if (length < HEADER_SIZE) {
      bad(
          "a receive buffer came back with "
              + length
              + " bytes, less than the "
              + HEADER_SIZE
              + "-byte virtio_net_hdr");
      return;
    }
    int gsoType = Byte.toUnsignedInt(heap.get(JAVA_BYTE, at + HDR_GSO_TYPE));
    int buffersUsed = mergeable ? Short.toUnsignedInt(heap.get(LE16, at + HDR_NUM_BUFFERS)) : 1;
    if (gsoType != 0) {
      bad("a received frame has gso_type " + gsoType + " although no GUEST_TSO/UFO was negotiated");
    }
    if (buffersUsed == 0) {
      bad("a received frame has num_buffers 0");
      buffersUsed = 1;
    }
    if (buffersUsed == 1) {
      frame(heap, at + HEADER_SIZE, length - HEADER_SIZE);
      return;
    }
    MemorySegment.copy(heap, at + HEADER_SIZE, gathered, 0, length - HEADER_SIZE);
    gatheredLength = length - HEADER_SIZE;
    gatherFailed = false;
    buffersLeft = buffersUsed - 1;
  }

  /** A whole received frame of {@code length} bytes at {@code at} of {@code bytes}. */
  private void frame(MemorySegment bytes, long at, int length) {
    if (length < AT_FILL
        || Short.toUnsignedInt(bytes.get(BE16, at + AT_ETHERTYPE)) != ETHERTYPE
        || bytes.get(BE32, at + AT_MAGIC) != MAGIC) {
      foreignFrames++;
      return;
    }
    long run = Integer.toUnsignedLong(bytes.get(BE32, at + AT_RUN));
    long sequence = bytes.get(BE64, at + AT_SEQUENCE);
    int sentLength = Short.toUnsignedInt(bytes.get(BE16, at + AT_LENGTH));
    if (sentLength != length) {
      bad(
          "frame "
              + sequence
              + " arrived with "
              + length
              + " bytes; it was sent with "
              + sentLength);
      return;
    }
    if (bytes.get(BE32, at + AT_CHECKSUM) != checksum(bytes, at, length)) {
      bad("frame " + sequence + " (" + length + " bytes) arrived with a wrong checksum");
      return;
    }
    if (mode == Mode.RECEIVE && expectedRun == ANY_RUN) expectedRun = run;
    long wanted = mode == Mode.RECEIVE ? expectedRun : Integer.toUnsignedLong(runId);
    if (run != wanted) {
      foreignFrames++; // another run's (or another driver's) frame: intact, but not followed
      return;
    }
    framesReceived++;
    bytesReceived += length;
    if (mode == Mode.TRANSMIT) return;
    if (!sequenceKnown) {
      expectedSequence = sequence;
      sequenceKnown = true;
    }
    if (sequence != expectedSequence) {
      if (Long.compareUnsigned(sequence, expectedSequence) > 0) {
        long gap = sequence - expectedSequence;
        lost += gap;
        lostFrames += gap;
        stats.error(
            gap
                + " frames lost: "
                + expectedSequence
                + (gap > 1 ? ".." + (sequence - 1) : "")
                + " never arrived before "
                + sequence);
      } else {
        stats.error(
            "frame " + sequence + " arrived again or late (expected " + expectedSequence + ")");
        return;
      }
    }
    expectedSequence = sequence + 1;
    returned++;
    long nanos =
        mode == Mode.LOOPBACK ? System.nanoTime() - loopSentAt[(int) sequence & loopMask] : 0;
    stats.record(length, nanos);
  }

  private void bad(String what) {
    badFrames++;
    stats.error(what);
  }

  /**
   * The test header's checksum: a multiplicative hash of the filler, then of the test header from
   * the magic to the checksum field (the MAC addresses are left out: forwarding may swap them).
   */
  static int checksum(MemorySegment bytes, long at, int length) {
    return checksum(fillerHash(bytes, at + AT_FILL, length - AT_FILL), bytes, at);
  }

  /** The checksum from the filler's hash and the test header before the checksum field. */
  private static int checksum(long fillerHash, MemorySegment bytes, long at) {
    long h = mix(fillerHash, bytes, at + AT_MAGIC, at + AT_CHECKSUM);
    return (int) (h ^ (h >>> 32));
  }

  private static long fillerHash(MemorySegment bytes, long at, int length) {
    return mix(CHECKSUM_SEED, bytes, at, at + length);
  }

  /**
   * The filler of a frame depends only on its sequence number modulo {@value #PATTERN_SPREAD} and
   * the frame size: its hash is computed once per workload, not per frame.
   */
  private void prepareFiller(int frameSize) {
    if (fillerHashSize == frameSize) return;
    for (int k = 0; k < PATTERN_SPREAD; k++) {
      fillerHashes[k] = fillerHash(pattern, k, frameSize - AT_FILL);
    }
    fillerHashSize = frameSize;
  }

  private static long mix(long h, MemorySegment bytes, long from, long to) {
    long i = from;
    for (; i + 8 <= to; i += 8)
      h = Long.rotateLeft((h ^ bytes.get(LE64, i)) * 0x9E3779B97F4A7C15L, 29);
    for (; i < to; i++)
      h = Long.rotateLeft((h ^ (bytes.get(JAVA_BYTE, i) & 0xff)) * 0xC2B2AE3D27D4EB4FL, 29);
    return h;
  }

  // ---- waiting ----

  /**
   * Nothing to do now: asks for used buffer notifications (the transmitq's delayed when {@code
   * forTransmit}, the receiveq's always) and waits for either call eventfd, at most a second.
   *
   * @throws IOException when nothing happened for 10 s while something was expected
   */
  private void idle(boolean forTransmit, String awaited) throws IOException {
    boolean waitTx = txRing.inFlight() > 0;
    boolean waitRx = rxRing.inFlight() > 0;
    boolean ready =
        (waitTx
                && (forTransmit
                    ? txRing.enableUsedNotificationsDelayed()
                    : txRing.enableUsedNotifications()))
            || (waitRx && rxRing.enableUsedNotifications());
    if (!ready) {
      ready = FrontendSession.Queue.awaitUsed(waitTx ? tx : null, waitRx ? rx : null, WAIT_MILLIS);
    }
    txRing.disableUsedNotifications();
    rxRing.disableUsedNotifications();
    if (ready || txRing.hasUsed() || rxRing.hasUsed()) {
      stalledMillis = 0;
      return;
    }
    stalledMillis += WAIT_MILLIS;
    if (awaited != null && stalledMillis >= STALL_MILLIS) {
      throw new IOException(
          String.format(
              Locale.ROOT,
              "no %s from the backend for %d s (transmitq: %d chains in flight, receiveq: %d"
                  + " buffers posted; is it serving both queues? see its log)",
              awaited,
              stalledMillis / 1000,
              txRing.inFlight(),
              rxRing.inFlight()));
    }
  }

  // ---- what happened ----

  /** Frames posted on the transmitq so far. */
  public long framesSent() {
    return framesSent;
  }

  /**
   * Frames of this test protocol that arrived intact (from this driver's run or, in {@link
   * #receive}, the run followed).
   */
  public long framesReceived() {
    return framesReceived;
  }

  public long bytesReceived() {
    return bytesReceived;
  }

  /** Frames that are not this driver's (another protocol, or another run's). */
  public long foreignFrames() {
    return foreignFrames;
  }

  /** Receive buffers and frames that were wrong: short, cut, bad checksum, bad header. */
  public long badFrames() {
    return badFrames;
  }

  /** Frames that a later sequence number showed were lost. */
  public long lostFrames() {
    return lostFrames;
  }

  /** Receive buffers the device used. */
  public long receiveBuffersUsed() {
    return rxBuffersUsed;
  }

  public boolean mergeableRxBuffers() {
    return mergeable;
  }

  /** The source MAC address of transmitted frames, as aa:bb:cc:dd:ee:ff. */
  public String mac() {
    return HexFormat.ofDelimiter(":").formatHex(sourceMac.toArray(JAVA_BYTE));
  }

  /** One line for a person: the driver's setup. */
  public String describe() {
    return String.format(
        Locale.ROOT,
        "virtio-net driver: MAC %s (%s), %s, %d receive buffers of %d bytes, transmit layout %s%s",
        mac(),
        macSource,
        mergeable ? "mergeable rx buffers" : "no mergeable rx buffers",
        rxBuffers,
        rxBufferSize,
        layout.name().toLowerCase(Locale.ROOT).replace('_', '-'),
        txRing.indirectDescriptors() ? " (indirect)" : "");
  }

  /** One line for a person: the receive side's counters. */
  public String receiveSummary() {
    return String.format(
        Locale.ROOT,
        "received: %d test frames (%d bytes), %d foreign, %d bad, %d lost, %d rx buffers used",
        framesReceived,
        bytesReceived,
        foreignFrames,
        badFrames,
        lostFrames,
        rxBuffersUsed);
  }
}
