package dev.bounce.device.vsock;

import dev.bounce.pool.LittleEndian;
import dev.bounce.vhost.frontend.Dma;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestBuffers;
import dev.bounce.vhost.protocol.ConfigSpace;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The guest driver of a virtio-vsock device (virtio 1.2 section 5.10) for the fake frontend, as
 * Linux's virtio_transport does it: queue 0 rx, kept stocked with {@value #RX_BUFFER_SIZE}-byte
 * writable buffers (header included); queue 1 tx, each packet a 44-byte header descriptor and a
 * payload descriptor. Sockets connect to host ports or are accepted on guest listeners; STREAM and
 * SEQPACKET (when negotiated); credit flow control both ways: a socket never sends past the
 * device's credit, and announces its own ({@code bufferSize} per socket, consumed as the test
 * reads).
 *
 * <p>One thread drives the driver; every blocking call {@link #pump}s both queues while it waits.
 * {@link #postRxBuffers(boolean)} stops restocking the rx queue (a guest that stops receiving).
 * {@link #sendRaw} sends any header, for tests of malformed packets.
 */
public final class VsockDriver {
  public static final int RX_QUEUE = 0;
  public static final int TX_QUEUE = 1;
  public static final int EVENT_QUEUE = 2;

  /** Linux 6.1's rx buffer: one writable descriptor, header included. */
  public static final int RX_BUFFER_SIZE = 3776;

  /**
   * Linux's default receive buffer per socket (VIRTIO_VSOCK_DEFAULT_BUF_SIZE, the buf_alloc a guest
   * announces unless SO_VM_SOCKETS_BUFFER_SIZE changes it): the window host-to-guest bytes flow in.
   */
  public static final int LINUX_BUFFER_SIZE = 256 * 1024;

  /**
   * Payload bytes per tx packet: at most 64 KiB, as Linux sends (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
   */
  public static final int TX_CHUNK = VsockDevice.MAX_PACKET_PAYLOAD;

  /** The features this driver asks for; the session adds VERSION_1. */
  public static final long DRIVER_FEATURES =
      VirtioFeatures.bit(VsockDevice.F_SEQPACKET)
          | VirtioFeatures.bit(VirtioFeatures.EVENT_IDX)
          | VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC);

  private static final int FIRST_EPHEMERAL = 49152;
  private static final long STALL_NANOS = Duration.ofSeconds(10).toNanos();

  private final FrontendSession.Queue rx;
  private final FrontendSession.Queue tx;
  private final DriverQueue rxRing;
  private final DriverQueue txRing;
  private final GuestBuffers buffers;
  private final Dma dma;
  private final MemorySegment heap;
  private final long guestCid;
  private final int bufferSize;
  private final boolean seqpacket;
  private DriverQueue.Chain chain = new DriverQueue.Chain(2);
  private int txHeaderSplit;
  private int[] txPayloadSplit = new int[0];

  private final long[] rxBuffer;
  private final long[] rxMapped;
  private final int[] rxLength;
  private final long[] txHeader;
  private final long[] txHeaderMapped;
  private final long[] txPayload;
  private final long[] txPayloadMapped;
  private final int[] txPayloadLength;
  private final DriverQueue.UsedConsumer onRxUsed = this::received;
  private final DriverQueue.UsedConsumer onTxUsed = this::transmitted;
  private boolean postRx = true;

  private final SocketTable sockets = new SocketTable();
  private final Map<Integer, ArrayDeque<Socket>> listeners = new HashMap<>();
  private int nextPort = FIRST_EPHEMERAL;

  private long resetsForNoSocket;
  private long responses;
  private int markerPort = -1;
  private Socket markerSocket;
  private long packetsAtMarker;
  private int lastStrayResetPort = -1;
  private long badPackets;
  private long creditViolations;
  private String firstProblem;
  private final DriverEvents events;
  private long transportResets;

  public VsockDriver(FrontendSession session, long guestCid, int bufferSize) {
    if (session.queueCount() < 2) throw new IllegalArgumentException("vsock needs 2 queues");
    this.rx = session.queue(RX_QUEUE);
    this.tx = session.queue(TX_QUEUE);
    this.rxRing = rx.ring();
    this.txRing = tx.ring();
    this.buffers = GuestBuffers.of(session);
    this.dma = buffers.dma();
    this.heap = buffers.bytes();
    this.guestCid = guestCid;
    this.bufferSize = bufferSize;
    this.seqpacket = VirtioFeatures.has(session.features(), VsockDevice.F_SEQPACKET);
    int rxSize = rxRing.size();
    int txSize = txRing.size();
    this.rxBuffer = new long[rxSize];
    this.rxMapped = new long[rxSize];
    this.rxLength = new int[rxSize];
    this.txHeader = new long[txSize];
    this.txHeaderMapped = new long[txSize];
    this.txPayload = new long[txSize];
    this.txPayloadMapped = new long[txSize];
    this.txPayloadLength = new int[txSize];
    this.events =
        session.queueCount() > EVENT_QUEUE
            ? new DriverEvents(session.queue(EVENT_QUEUE), buffers, this::transportReset)
            : null;
  }

  /** What {@link #pumpUntil} waits for; it may send and read meanwhile. */
  @FunctionalInterface
  public interface Condition {
    boolean holds() throws IOException;
  }

  /**
   * Pumps every one of {@code drivers} (guests of one test or benchmark thread) until {@code done}
   * holds, sleeping a millisecond on the first's notifications when none had anything to do.
   *
   * @throws IOException naming {@code what} when it does not hold within {@code timeout}
   */
  public static void pumpUntil(
      List<VsockDriver> drivers, Condition done, Duration timeout, String what) throws IOException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (!done.holds()) {
      if (System.nanoTime() > deadline) {
        throw new IOException("not within " + timeout.toSeconds() + " s: " + what);
      }
      boolean progress = false;
      for (VsockDriver d : drivers) progress |= d.pump(0);
      if (!progress) drivers.getFirst().pump(1);
    }
  }

  /** This guest's CID. */
  public long guestCid() {
    return guestCid;
  }

  /** FrontendSession options for this driver: rx, tx and event queues of {@code queueSize}. */
  public static FrontendSession.Options options(
      dev.bounce.vhost.frontend.Handshake handshake, int queueSize) {
    return new FrontendSession.Options(handshake, DRIVER_FEATURES, 3, queueSize, 0);
  }

  /**
   * The device said TRANSPORT_RESET (it restarted under this guest): every connection is gone, as
   * Linux's virtio_vsock_reset_sock makes them; listening goes on.
   */
  private void transportReset() {
    transportResets++;
    for (Socket s : sockets.values()) s.reset = true;
    sockets.clear();
  }

  /** TRANSPORT_RESET events the device sent. */
  public long transportResets() {
    return transportResets;
  }

  /**
   * The guest CID the device announces in its config space (virtio 1.2 section 5.10.4), read with
   * GET_CONFIG as QEMU's vhost-user-vsock does.
   *
   * @throws IOException when the backend did not negotiate the CONFIG protocol feature or answers
   *     with something other than 8 bytes
   */
  public static long guestCid(FrontendSession session) throws IOException {
    if (!session.negotiated(ProtocolFeature.CONFIG)) {
      throw new IOException(
          "the backend did not offer the CONFIG protocol feature, so the guest CID cannot be read"
              + " (QEMU's vhost-user-vsock needs it too)");
    }
    try (Message<FrontendRequest> reply =
        session.channel().call(FrontendRequest.GET_CONFIG, ConfigSpace.read(0, 8))) {
      if (!(reply.payload() instanceof ConfigSpace config) || config.data().length != 8) {
        throw new IOException("GET_CONFIG of the guest CID got " + reply.payload());
      }
      long cid = MemorySegment.ofArray(config.data()).get(LittleEndian.LE64, 0);
      // Section 5.10.4: only the lower 32 bits are used, and CIDs 0-2 are reserved.
      if (cid < 3 || cid > 0xffff_fffeL) {
        throw new IOException(
            "the backend's config space gives guest CID "
                + Long.toUnsignedString(cid)
                + ", which no vsock device has (0-2 and 2^32-1 are reserved): is it a vsock backend?");
      }
      return cid;
    }
  }

  public boolean seqpacketNegotiated() {
    return seqpacket;
  }

  /** Whether the rx queue is restocked; false models a guest that stopped receiving. */
  public void postRxBuffers(boolean post) {
    this.postRx = post;
  }

  /** Rx buffers posted and not yet back from the device: 0 when it can send nothing more. */
  public int rxBuffersPosted() {
    return rxRing.inFlight();
  }

  /** Whether the device used every tx buffer posted: it has taken every packet sent so far. */
  public boolean txIdle() {
    return txRing.inFlight() == 0;
  }

  /** RSTs that arrived for no socket of this driver (answers to raw packets, refused ones). */
  public long resetsForNoSocket() {
    return resetsForNoSocket;
  }

  /** RESPONSE packets received, for a socket of this driver or not. */
  public long responses() {
    return responses;
  }

  /** The local port the last RST for no socket was addressed to, or -1. */
  public int lastStrayResetPort() {
    return lastStrayResetPort;
  }

  /** Packets from the device that broke a rule; {@link #firstProblem} says the first. */
  public long badPackets() {
    return badPackets;
  }

  /** RW packets from the device beyond the credit this driver gave. */
  public long creditViolations() {
    return creditViolations;
  }

  public String firstProblem() {
    return firstProblem;
  }

  // ---- sockets ----

  /** This guest's sockets, by peer CID (the host's, or another guest's) and port pair. */
  private final class SocketTable {
    private final LongMap<LongMap<Socket>> byPeerCid = new LongMap<>();

    Socket get(long peerCid, int localPort, int peerPort) {
      LongMap<Socket> pairs = byPeerCid.get(peerCid);
      return pairs == null ? null : pairs.get(VsockConnection.key(localPort, peerPort));
    }

    void put(Socket s) {
      LongMap<Socket> pairs = byPeerCid.get(s.peerCid);
      if (pairs == null) {
        pairs = new LongMap<>();
        byPeerCid.put(s.peerCid, pairs);
      }
      pairs.put(VsockConnection.key(s.localPort, s.peerPort), s);
    }

    void remove(Socket s) {
      LongMap<Socket> pairs = byPeerCid.get(s.peerCid);
      if (pairs != null) pairs.remove(VsockConnection.key(s.localPort, s.peerPort));
    }

    List<Socket> values() {
      List<Socket> all = new ArrayList<>();
      for (LongMap<Socket> pairs : byPeerCid.values()) all.addAll(pairs.values());
      return all;
    }

    int size() {
      int n = 0;
      for (LongMap<Socket> pairs : byPeerCid.values()) n += pairs.size();
      return n;
    }

    void clear() {
      byPeerCid.clear();
    }
  }

  /** A STREAM or SEQPACKET socket of this guest. */
  public final class Socket {
    final long peerCid;
    final int localPort;
    final int peerPort;
    final int type;
    final ByteRing in;
    boolean open;
    boolean reset;
    int peerBufAlloc;
    int peerFwdCnt;
    long txCnt;
    int announcedFwdCnt;
    int peerShutdown;
    long receivedAtPeerShutdown = -1;
    long packetsIn;

    Socket(long peerCid, int localPort, int peerPort, int type) {
      this.peerCid = peerCid;
      this.localPort = localPort;
      this.peerPort = peerPort;
      this.type = type;
      this.in = new ByteRing(bufferSize);
    }

    public int localPort() {
      return localPort;
    }

    /** The CID at the other end: the host's, or another guest's. */
    public long peerCid() {
      return peerCid;
    }

    public int peerPort() {
      return peerPort;
    }

    public boolean isOpen() {
      return open && !reset;
    }

    /** A {@link #startConnect} still waiting for the device's RESPONSE or RST. */
    public boolean isConnecting() {
      return !open && !reset;
    }

    public boolean wasReset() {
      return reset;
    }

    public int peerShutdownFlags() {
      return peerShutdown;
    }

    /**
     * The bytes this socket had received when the peer's first SHUTDOWN arrived, or -1 before: a
     * device that sends its SHUTDOWN after the last byte makes it every byte the host sent.
     */
    public long receivedAtPeerShutdown() {
      return receivedAtPeerShutdown;
    }

    /** Bytes the device may still send before it must wait for our credit. */
    public int creditGivenFree() {
      return in.free();
    }

    /** Bytes this socket may send now (the device's credit). */
    public long credit() {
      long inFlight = (txCnt - Integer.toUnsignedLong(peerFwdCnt)) & 0xffff_ffffL;
      return Math.max(0, Integer.toUnsignedLong(peerBufAlloc) - inFlight);
    }

    /** Bytes received and not read yet. */
    public int available() {
      return in.size();
    }

    /**
     * Sends as much of {@code bytes[off, off + len)} as the device's credit and the tx ring allow
     * now, without waiting. For SEQPACKET the last packet carries EOM when {@code endOfMessage} and
     * all bytes went.
     *
     * @return the bytes sent
     */
    public int trySend(byte[] bytes, int off, int len, boolean endOfMessage) throws IOException {
      int done = 0;
      do {
        int n = (int) Math.min(Math.min(len - done, TX_CHUNK), credit());
        boolean last = done + n == len;
        if (n == 0 && !(last && endOfMessage && type == VsockHeader.TYPE_SEQPACKET)) break;
        int flags =
            last && endOfMessage && type == VsockHeader.TYPE_SEQPACKET ? VsockHeader.SEQ_EOM : 0;
        if (!post(this, Op.RW, flags, bytes, off + done, n)) break;
        txCnt += n;
        done += n;
        if (last) break;
      } while (done < len);
      kick();
      return done;
    }

    /** Sends all of {@code bytes}, waiting for credit. */
    public void send(byte[] bytes, Duration timeout) throws IOException {
      sendAll(bytes, false, timeout);
    }

    /** Sends {@code message} as one SEQPACKET message. */
    public void sendMessage(byte[] message, Duration timeout) throws IOException {
      sendAll(message, true, timeout);
    }

    private void sendAll(byte[] bytes, boolean message, Duration timeout) throws IOException {
      long deadline = System.nanoTime() + timeout.toNanos();
      int done = 0;
      boolean first = true;
      while (first || done < bytes.length) {
        checkUsable();
        int remaining = bytes.length - done;
        int n = trySendPart(bytes, done, remaining, message);
        done += n;
        if (n == remaining && (n > 0 || first)) break;
        first = false;
        if (System.nanoTime() > deadline) {
          throw new IOException(
              "sent "
                  + done
                  + " of "
                  + bytes.length
                  + " bytes before the deadline (credit "
                  + credit()
                  + ")");
        }
        pump(10);
      }
    }

    private int trySendPart(byte[] bytes, int off, int len, boolean message) throws IOException {
      if (len == 0) {
        // An empty SEQPACKET message: one RW with EOM and no payload.
        if (message) post(this, Op.RW, VsockHeader.SEQ_EOM, bytes, 0, 0);
        kick();
        return 0;
      }
      return trySend(bytes, off, len, message);
    }

    private void checkUsable() throws IOException {
      if (reset) throw new IOException("connection reset (port " + localPort + ")");
    }

    /** Takes up to {@code len} received bytes; for SEQPACKET never past a message end. */
    public int read(byte[] dst, int off, int len) throws IOException {
      int n = in.read(MemorySegment.ofArray(dst), off, len);
      in.takeEnd();
      consumed(this);
      return n;
    }

    /**
     * {@link #read} for a reader that only looks at the bytes (a checksum): they are handed over
     * where they are, so that receiving costs the one copy a Linux guest makes, from the rx buffer
     * into the socket's, as a Linux application's recv(2) is the one copy out of the skb.
     */
    int read(ByteRing.Reader reader, int max) throws IOException {
      int n = in.read(reader, max);
      in.takeEnd();
      consumed(this);
      return n;
    }

    /** Reads exactly {@code n} bytes, waiting for them. */
    public byte[] readFully(int n, Duration timeout) throws IOException {
      byte[] out = new byte[n];
      long deadline = System.nanoTime() + timeout.toNanos();
      int done = 0;
      while (done < n) {
        int got = in.read(MemorySegment.ofArray(out), done, n - done);
        in.takeEnd();
        done += got;
        if (got > 0) consumed(this);
        if (done == n) break;
        checkUsable();
        if (System.nanoTime() > deadline) {
          throw new IOException("received " + done + " of " + n + " bytes before the deadline");
        }
        pump(10);
      }
      return out;
    }

    /** Receives one whole SEQPACKET message (at most {@code bufferSize} bytes). */
    public byte[] readMessage(Duration timeout) throws IOException {
      long deadline = System.nanoTime() + timeout.toNanos();
      while (in.messages() == 0) {
        checkUsable();
        if (System.nanoTime() > deadline) throw new IOException("no message before the deadline");
        pump(10);
      }
      int length = (int) in.firstMessageRemaining();
      byte[] out = new byte[length];
      in.read(MemorySegment.ofArray(out), 0, length);
      in.takeEnd();
      consumed(this);
      return out;
    }

    /** Sends SHUTDOWN with {@code flags} (RCV 1, SEND 2). */
    public void shutdown(int flags) throws IOException {
      postOrWait(this, Op.SHUTDOWN, flags);
    }

    /** Asks the device for its credit. */
    public void requestCredit() throws IOException {
      postOrWait(this, Op.CREDIT_REQUEST, 0);
    }

    /**
     * The device's credit for this socket once it has processed every packet sent before this call,
     * not as a packet still on its way says. The device takes tx packets in order, and each pass
     * over the rx queue sends its RSTs for unknown connections before any connection's packets: so
     * a CREDIT_REQUEST from a port no socket has (answered with such an RST, the marker), then this
     * socket's CREDIT_REQUEST, and the first packet of this socket that arrives after the marker
     * was filled after the device had taken every packet before the marker. When the guest posts no
     * rx buffers and has none left with the device, nothing more can arrive: the credit known then
     * is the last this socket will learn.
     */
    public long settledCredit(Duration timeout) throws IOException {
      checkUsable();
      long deadline = System.nanoTime() + timeout.toNanos();
      int port = nextPort++;
      markerPort = port;
      markerSocket = this;
      packetsAtMarker = -1;
      try {
        sendRaw(VsockHeader.HOST_CID, port, peerPort, 0, type, Op.CREDIT_REQUEST, 0, null);
        requestCredit();
        while (packetsAtMarker < 0 || packetsIn == packetsAtMarker) {
          if (!postRx && rxRing.inFlight() == 0) break;
          checkUsable();
          if (System.nanoTime() > deadline) {
            throw new IOException("no answer to CREDIT_REQUEST (port " + localPort + ")");
          }
          pump(10);
        }
      } finally {
        markerPort = -1;
        markerSocket = null;
      }
      checkUsable();
      return credit();
    }

    /** Sends RST and forgets the socket. */
    public void reset() throws IOException {
      postOrWait(this, Op.RST, 0);
      reset = true;
      sockets.remove(this);
    }

    /** Waits until the peer resets the socket. */
    public void awaitReset(Duration timeout) throws IOException {
      long deadline = System.nanoTime() + timeout.toNanos();
      while (!reset) {
        if (System.nanoTime() > deadline) throw new IOException("no RST before the deadline");
        pump(10);
      }
    }

    /** Waits until the peer's shutdown flags include {@code flags}. */
    public void awaitPeerShutdown(int flags, Duration timeout) throws IOException {
      long deadline = System.nanoTime() + timeout.toNanos();
      while ((peerShutdown & flags) != flags) {
        checkUsable();
        if (System.nanoTime() > deadline) throw new IOException("no SHUTDOWN before the deadline");
        pump(10);
      }
    }
  }

  /**
   * Connects to host port {@code hostPort}, waiting for the answer.
   *
   * @throws IOException when the device answers RST (nothing listens) or nothing comes in time
   */
  public Socket connect(int hostPort, int type, Duration timeout) throws IOException {
    Socket s = startConnect(hostPort, type);
    long deadline = System.nanoTime() + timeout.toNanos();
    while (s.isConnecting()) {
      if (System.nanoTime() > deadline) {
        throw new IOException("no answer to REQUEST to host port " + hostPort);
      }
      pump(10);
    }
    if (s.reset) throw new IOException("connection to host port " + hostPort + " refused (RST)");
    return s;
  }

  /**
   * Sends a REQUEST to host port {@code hostPort} and returns at once, as a non-blocking connect
   * does: the socket {@link Socket#isConnecting} until the RESPONSE ({@link Socket#isOpen}) or an
   * RST ({@link Socket#wasReset}) arrives while the driver is {@link #pump}ed.
   */
  public Socket startConnect(int hostPort, int type) throws IOException {
    return startConnect(VsockHeader.HOST_CID, hostPort, type);
  }

  /** {@link #startConnect(int, int)} to port {@code port} of CID {@code cid}: another guest's. */
  public Socket startConnect(long cid, int port, int type) throws IOException {
    Socket s = new Socket(cid, nextPort++, port, type);
    sockets.put(s);
    postOrWait(s, Op.REQUEST, 0);
    return s;
  }

  /** Accepts connections to guest port {@code port} from now on. */
  public void listen(int port) {
    listeners.putIfAbsent(port, new ArrayDeque<>());
  }

  /** The next connection accepted on {@code port}, waiting for it. */
  public Socket accept(int port, Duration timeout) throws IOException {
    long deadline = System.nanoTime() + timeout.toNanos();
    Socket s;
    while ((s = accepted(port)) == null) {
      if (System.nanoTime() > deadline) throw new IOException("nothing connected to " + port);
      pump(10);
    }
    return s;
  }

  /** The next connection accepted on {@code port}, or null when none waits (no waiting). */
  public Socket accepted(int port) {
    ArrayDeque<Socket> queue = listeners.get(port);
    if (queue == null) throw new IllegalStateException("not listening on " + port);
    return queue.pollFirst();
  }

  /** Sockets of this driver open, connecting, or closing (not yet reset). */
  public int socketCount() {
    return sockets.size();
  }

  /**
   * Sends one packet with any header fields (src_cid is this guest's, dst_cid the host's unless
   * given) and {@code payload}; the header's len is {@code len}, whatever the payload's size.
   */
  public void sendRaw(
      long dstCid, int srcPort, int dstPort, int len, int type, int op, int flags, byte[] payload)
      throws IOException {
    long deadline = System.nanoTime() + STALL_NANOS;
    while (!postPacket(
        dstCid,
        srcPort,
        dstPort,
        len,
        type,
        op,
        flags,
        0,
        0,
        payload,
        0,
        payload == null ? 0 : payload.length)) {
      if (System.nanoTime() > deadline) throw new IOException("the tx queue stays full");
      pump(10);
    }
    kick();
  }

  /**
   * Lays out the tx packets posted from now on over several readable descriptors, as a driver may
   * split a buffer anywhere: the header's first {@code headerSplit} bytes in one descriptor and the
   * rest in another (0: one descriptor), then the payload in descriptors of {@code payloadPieces}
   * bytes each, and what is left in one more.
   */
  public void splitTx(int headerSplit, int... payloadPieces) {
    if (headerSplit < 0 || headerSplit >= VsockHeader.SIZE) {
      throw new IllegalArgumentException("header split " + headerSplit);
    }
    for (int piece : payloadPieces) {
      if (piece <= 0) throw new IllegalArgumentException("payload piece " + piece);
    }
    txHeaderSplit = headerSplit;
    txPayloadSplit = payloadPieces.clone();
    chain = new DriverQueue.Chain(3 + payloadPieces.length);
  }

  /** Sends a tx chain of only {@code bytes} bytes (less than a header), zero-filled. */
  public void sendShortHeader(int bytes) throws IOException {
    long buffer = buffers.allocate(bytes);
    if (buffer == GuestBuffers.NO_ROOM) throw new IOException("no room for " + bytes + " bytes");
    heap.asSlice(buffer - buffers.start(), bytes).fill((byte) 0);
    long mapped = dma.mapToDevice(buffer, bytes);
    int head = txRing.add(mapped, bytes, false);
    if (head == DriverQueue.NO_SPACE) throw new IOException("the tx queue is full");
    txHeader[head] = buffer;
    txHeaderMapped[head] = mapped;
    txPayload[head] = 0;
    txPayloadLength[head] = bytes;
    kick();
  }

  // ---- packets out ----

  private void postOrWait(Socket s, int op, int flags) throws IOException {
    long deadline = System.nanoTime() + STALL_NANOS;
    while (!post(s, op, flags, null, 0, 0)) {
      if (System.nanoTime() > deadline) throw new IOException("the tx queue stays full");
      pump(10);
    }
    kick();
  }

  private boolean post(Socket s, int op, int flags, byte[] bytes, int off, int len) {
    int fwdCnt = (int) s.in.consumed();
    boolean posted =
        postPacket(
            s.peerCid,
            s.localPort,
            s.peerPort,
            len,
            s.type,
            op,
            flags,
            s.in.capacity(),
            fwdCnt,
            bytes,
            off,
            len);
    if (posted) s.announcedFwdCnt = fwdCnt;
    return posted;
  }

  private boolean postPacket(
      long dstCid,
      int srcPort,
      int dstPort,
      int len,
      int type,
      int op,
      int flags,
      int bufAlloc,
      int fwdCnt,
      byte[] payload,
      int off,
      int payloadLength) {
    txRing.harvest(onTxUsed);
    long hdr = buffers.allocate(VsockHeader.SIZE);
    if (hdr == GuestBuffers.NO_ROOM) return false;
    VsockHeader.write(
        heap,
        hdr - buffers.start(),
        guestCid,
        dstCid,
        srcPort,
        dstPort,
        len,
        type,
        op,
        flags,
        bufAlloc,
        fwdCnt);
    long pay = 0;
    if (payloadLength > 0) {
      pay = buffers.allocate(payloadLength);
      if (pay == GuestBuffers.NO_ROOM) {
        buffers.free(hdr, VsockHeader.SIZE);
        return false;
      }
      MemorySegment.copy(
          MemorySegment.ofArray(payload), off, heap, pay - buffers.start(), payloadLength);
    }
    long hdrMapped = dma.mapToDevice(hdr, VsockHeader.SIZE);
    long payMapped =
        payloadLength > 0 && hdrMapped != Dma.NO_ROOM ? dma.mapToDevice(pay, payloadLength) : 0;
    int head = DriverQueue.NO_SPACE;
    if (hdrMapped != Dma.NO_ROOM && payMapped != Dma.NO_ROOM) {
      chain.clear();
      if (txHeaderSplit > 0) {
        chain.readable(hdrMapped, txHeaderSplit);
        chain.readable(hdrMapped + txHeaderSplit, VsockHeader.SIZE - txHeaderSplit);
      } else {
        chain.readable(hdrMapped, VsockHeader.SIZE);
      }
      long at = 0;
      for (int piece : txPayloadSplit) {
        if (payloadLength - at <= piece) break;
        chain.readable(payMapped + at, piece);
        at += piece;
      }
      if (payloadLength > at) chain.readable(payMapped + at, payloadLength - at);
      head = txRing.add(chain, false);
    }
    if (head == DriverQueue.NO_SPACE) {
      if (payloadLength > 0 && payMapped != Dma.NO_ROOM && hdrMapped != Dma.NO_ROOM) {
        dma.unmapToDevice(payMapped, payloadLength);
      }
      if (hdrMapped != Dma.NO_ROOM) dma.unmapToDevice(hdrMapped, VsockHeader.SIZE);
      if (payloadLength > 0) buffers.free(pay, payloadLength);
      buffers.free(hdr, VsockHeader.SIZE);
      return false;
    }
    txHeader[head] = hdr;
    txHeaderMapped[head] = hdrMapped;
    txPayload[head] = pay;
    txPayloadMapped[head] = payMapped;
    txPayloadLength[head] = payloadLength;
    if (payloadLength == 0) txPayloadLength[head] = -1;
    return true;
  }

  private void transmitted(int head, int length) {
    int payloadLength = txPayloadLength[head];
    if (txPayload[head] == 0 && payloadLength > 0) {
      // a short header from sendShortHeader: one buffer of payloadLength bytes
      dma.unmapToDevice(txHeaderMapped[head], payloadLength);
      buffers.free(txHeader[head], payloadLength);
      return;
    }
    dma.unmapToDevice(txHeaderMapped[head], VsockHeader.SIZE);
    buffers.free(txHeader[head], VsockHeader.SIZE);
    if (payloadLength > 0) {
      dma.unmapToDevice(txPayloadMapped[head], payloadLength);
      buffers.free(txPayload[head], payloadLength);
    }
  }

  /**
   * The reader took bytes: tells the device of its credit when Linux would ({@link
   * #creditUpdateDue}).
   */
  private void consumed(Socket s) throws IOException {
    int unannounced = (int) s.in.consumed() - s.announcedFwdCnt;
    boolean due =
        creditUpdateDue(
            s.type == VsockHeader.TYPE_SEQPACKET, bufferSize, unannounced, s.in.isEmpty());
    if (due && !s.reset) postOrWait(s, Op.CREDIT_UPDATE, 0);
  }

  /**
   * Whether a reader that took bytes announces its credit, as Linux's virtio_transport does: after
   * every SEQPACKET message (seqpacket_do_dequeue), and for a STREAM (stream_do_dequeue) once what
   * the device last heard leaves less than one full packet free (6.1's only rule: with 256 KiB,
   * after 192 KiB were read) or when everything was read (6.8's low_rx_bytes). Never with nothing
   * new to announce. Every message ends in an update, so the next one, however large within the
   * buffer, gets the room it needs; a STREAM reader that drains the buffer always announces.
   */
  static boolean creditUpdateDue(
      boolean seqpacket, int bufferSize, int unannounced, boolean everythingRead) {
    if (unannounced == 0) return false;
    if (seqpacket) return true;
    int onePacket = Math.min(bufferSize, VsockDevice.MAX_PACKET_PAYLOAD);
    return bufferSize - unannounced < onePacket || everythingRead;
  }

  // ---- packets in ----

  private void refill() {
    if (!postRx) return;
    while (rxRing.freeDescriptors() > 0 && addRxBuffer(RX_BUFFER_SIZE)) {}
  }

  /**
   * Posts one rx buffer of {@code size} bytes now, whether or not the rx queue is restocked ({@link
   * #postRxBuffers(boolean)}), and kicks: in that order after the buffers posted before it. A size
   * of at most the 44-byte header is a guest that breaks section 5.10.6.3 (an rx buffer holds a
   * header and data).
   *
   * @throws IOException when the ring or guest memory has no room for it
   */
  public void postRxBuffer(int size) throws IOException {
    if (!addRxBuffer(size)) throw new IOException("no room for an rx buffer of " + size);
    kick();
  }

  private boolean addRxBuffer(int size) {
    long buffer = buffers.allocate(size);
    if (buffer == GuestBuffers.NO_ROOM) return false;
    long mapped = dma.mapFromDevice(buffer, size);
    if (mapped == Dma.NO_ROOM) {
      buffers.free(buffer, size);
      return false;
    }
    int head = rxRing.add(mapped, size, true);
    if (head == DriverQueue.NO_SPACE) {
      dma.unmapFromDevice(mapped, buffer, size);
      buffers.free(buffer, size);
      return false;
    }
    rxBuffer[head] = buffer;
    rxMapped[head] = mapped;
    rxLength[head] = size;
    return true;
  }

  private void received(int head, int length) {
    long buffer = rxBuffer[head];
    int size = rxLength[head];
    dma.unmapFromDevice(rxMapped[head], buffer, size);
    try {
      packet(buffer - buffers.start(), length);
    } finally {
      buffers.free(buffer, size);
    }
  }

  private void problem(String what) {
    badPackets++;
    if (firstProblem == null) firstProblem = what;
  }

  private final ArrayDeque<Object[]> replies = new ArrayDeque<>();

  private void packet(long at, int length) {
    if (length < VsockHeader.SIZE) {
      problem("an rx buffer came back with " + length + " bytes");
      return;
    }
    long len = VsockHeader.len(heap, at);
    int op = VsockHeader.op(heap, at);
    int localPort = VsockHeader.dstPort(heap, at);
    int peerPort = VsockHeader.srcPort(heap, at);
    int type = VsockHeader.type(heap, at);
    long peerCid = VsockHeader.srcCid(heap, at);
    if (VsockHeader.dstCid(heap, at) != guestCid) {
      problem("a packet not for this guest: " + VsockHeader.describe(heap, at));
      return;
    }
    if (len != length - VsockHeader.SIZE) {
      problem("len " + len + " but the buffer holds " + (length - VsockHeader.SIZE) + " bytes");
      return;
    }
    Socket s = sockets.get(peerCid, localPort, peerPort);
    if (op == Op.RESPONSE) responses++;
    if (op == Op.RST) {
      if (s == null) {
        resetsForNoSocket++;
        lastStrayResetPort = localPort;
        if (localPort == markerPort && packetsAtMarker < 0) {
          packetsAtMarker = markerSocket.packetsIn;
        }
      } else {
        s.reset = true;
        sockets.remove(s);
      }
      return;
    }
    if (s == null) {
      if (op == Op.REQUEST && listeners.containsKey(localPort)) {
        s = new Socket(peerCid, localPort, peerPort, type);
        s.open = true;
        s.peerBufAlloc = VsockHeader.bufAlloc(heap, at);
        s.peerFwdCnt = VsockHeader.fwdCnt(heap, at);
        sockets.put(s);
        listeners.get(localPort).addLast(s);
        replies.addLast(new Object[] {s, Op.RESPONSE});
      } else {
        replies.addLast(new Object[] {new Socket(peerCid, localPort, peerPort, type), Op.RST});
      }
      return;
    }
    s.packetsIn++;
    s.peerBufAlloc = VsockHeader.bufAlloc(heap, at);
    s.peerFwdCnt = VsockHeader.fwdCnt(heap, at);
    switch (op) {
      case Op.RESPONSE -> s.open = true;
      case Op.RW -> {
        if (len > s.in.free()) {
          creditViolations++;
          problem("the device sent " + len + " bytes with credit for " + s.in.free());
          return;
        }
        s.in.write(heap, at + VsockHeader.SIZE, (int) len);
        if (s.type == VsockHeader.TYPE_SEQPACKET
            && (VsockHeader.flags(heap, at) & VsockHeader.SEQ_EOM) != 0) {
          s.in.markEnd();
        }
      }
      case Op.SHUTDOWN -> {
        if (s.receivedAtPeerShutdown < 0) s.receivedAtPeerShutdown = s.in.produced();
        s.peerShutdown |= VsockHeader.flags(heap, at) & VsockHeader.SHUTDOWN_BOTH;
      }
      case Op.CREDIT_UPDATE -> {}
      case Op.CREDIT_REQUEST -> replies.addLast(new Object[] {s, Op.CREDIT_UPDATE});
      default -> problem("unexpected " + VsockHeader.describe(heap, at));
    }
  }

  // ---- the queues ----

  /**
   * Hands over used buffers of both queues, answers what needs answering, restocks the rx queue and
   * kicks; when nothing happened, waits up to {@code waitMillis} for a used-buffer notification.
   *
   * @return whether anything happened
   */
  public boolean pump(int waitMillis) throws IOException {
    int work = rxRing.harvest(onRxUsed) + txRing.harvest(onTxUsed);
    if (events != null) work += events.pump();
    while (!replies.isEmpty()) {
      Object[] r = replies.peekFirst();
      if (!post((Socket) r[0], (Integer) r[1], 0, null, 0, 0)) break;
      replies.pollFirst();
      work++;
    }
    refill();
    kick();
    if (work > 0 || waitMillis <= 0) return work > 0;
    boolean ready = rxRing.enableUsedNotifications() | txRing.enableUsedNotifications();
    if (!ready) FrontendSession.Queue.awaitUsed(rx, tx, waitMillis);
    rxRing.disableUsedNotifications();
    txRing.disableUsedNotifications();
    return false;
  }

  private void kick() throws IOException {
    rx.notifyDevice();
    tx.notifyDevice();
  }
}
