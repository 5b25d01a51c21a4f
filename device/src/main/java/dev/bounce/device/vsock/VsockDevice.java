package dev.bounce.device.vsock;

import dev.bounce.pool.LittleEndian;
import dev.bounce.vhost.spi.DeviceContext;
import dev.bounce.vhost.spi.LogBudget;
import dev.bounce.vhost.spi.VirtioDevice;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.VirtqueueException;
import io.netty.channel.IoEventLoop;
import java.lang.System.Logger.Level;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.List;

/**
 * The virtio-vsock device (virtio 1.2 section 5.10, device id 19) as QEMU's vhost-user-vsock uses
 * it: rx (0) and tx (1), plus the event queue (2) when the frontend hands it over (QEMU keeps it).
 * The config space is the guest's CID (u64, little endian). SEQPACKET (feature bit 1) is offered.
 *
 * <p>tx: each chain is a 44-byte header and its payload (Linux: two descriptors); the op is acted
 * on at once and the chain completed. rx: a connection with something to say (a RESPONSE, data the
 * guest has credit for, a SHUTDOWN, a CREDIT_UPDATE, an RST) fills one receive buffer per packet,
 * the header included, data split to fit (Linux posts 3776-byte buffers). A packet for another
 * guest's CID is not the device's: it goes to that guest as it is, through {@link Siblings}, and
 * packets from other guests take turns with the host's connections at this guest's rx buffers.
 *
 * <p>A guest error (short header, unknown op, bad length, more data than its credit) is answered
 * with RST for that connection and a log line; the device goes on serving. Memory per connection is
 * bounded by {@code bufferSize} each way, the number of connections by {@code maxConnections}, and
 * what other guests sent that waits for this one by its {@link Inbox}.
 */
public final class VsockDevice implements VirtioDevice {
  private static final System.Logger LOG = System.getLogger(VsockDevice.class.getName());

  public static final int DEVICE_ID = 19;
  public static final int RX_QUEUE = 0;
  public static final int TX_QUEUE = 1;

  /**
   * The event queue. QEMU's vhost-user-vsock keeps it (and sets up only rx and tx); a frontend that
   * hands it to the backend gets TRANSPORT_RESET through it.
   */
  public static final int EVENT_QUEUE = 2;

  /** virtio_vsock_event_id VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (virtio 1.2 section 5.10.6.7). */
  static final int EVENT_TRANSPORT_RESET = 0;

  /** struct virtio_vsock_event: one le32 id. */
  static final int EVENT_SIZE = 4;

  /** VIRTIO_VSOCK_F_SEQPACKET. */
  public static final int F_SEQPACKET = 1;

  /**
   * The default --tx-buffer-size: Linux's own vsock buffer (VIRTIO_VSOCK_DEFAULT_BUF_SIZE), not
   * vhost-device-vsock's 64 KiB. It is the credit window the guest sends in: with 64 KiB, one 64
   * KiB packet (Linux's largest) used all of it and the guest waited for each CREDIT_UPDATE before
   * the next, and streams to the host ran at 0.4x a raw Unix socket. Rings grow only as bytes wait,
   * so idle connections cost no more.
   */
  public static final int DEFAULT_BUFFER_SIZE = 256 * 1024;

  public static final int DEFAULT_MAX_CONNECTIONS = 4096;

  /** The largest payload one packet may carry (Linux VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
  public static final int MAX_PACKET_PAYLOAD = 64 * 1024;

  /** RSTs for packets with no connection waiting for an rx buffer; more are dropped. */
  private static final int MAX_STRAY_RESETS = 1024;

  private final long guestCid;
  private final int bufferSize;
  private final int maxConnections;
  private final int maxQueueSize;
  private final HostSide host;
  private final Siblings.Member member;

  private final LongMap<VsockConnection> connections = new LongMap<>();
  private final ArrayDeque<VsockConnection> sending = new ArrayDeque<>();
  private final ResetQueue strayResets = new ResetQueue(MAX_STRAY_RESETS);

  /**
   * RSTs of connections the device ended, waiting for rx buffers. Each keeps its connection's slot
   * under {@link #maxConnections} until it is sent ({@link #atConnectionLimit}), so none is ever
   * dropped: a guest socket whose RST were lost would wait for ever on a connection that is gone.
   */
  private final ResetQueue connectionResets;

  private final MemorySegment header = Arena.ofAuto().allocate(VsockHeader.SIZE);
  private DeviceContext context;
  private boolean seqpacket;
  private boolean rxRunning;
  private boolean rxRequested;
  private DescriptorChain rxChain;
  private HostReads hostReads;
  private DescriptorChain txChain;
  private DescriptorChain eventChain;
  private final MemorySegment event = Arena.ofAuto().allocate(EVENT_SIZE);
  private boolean rxStarted;
  private boolean txStarted;
  private boolean transportResetDue;
  private VsockConnection last;
  private boolean siblingsFirst; // which goes first in the next rx pass: other guests' packets

  private long guestErrors;
  // What the guest can repeat, one budget per kind (LogBudget): its malformed packets and buffers,
  // and the connections it asks for that are refused, so that a guest probing ports nobody
  // listens on does not hide its broken packets, nor the other way round.
  private final LogBudget guestErrorLines = new LogBudget();
  private final LogBudget connectionLines = new LogBudget();
  // Packets for other guests that could not go: a guest retrying a connect to one still booting
  // must not use up the lines about its host connections.
  private final LogBudget siblingLines = new LogBudget();

  public VsockDevice(
      long guestCid, int bufferSize, int maxConnections, int maxQueueSize, HostSide host) {
    this(guestCid, bufferSize, maxConnections, maxQueueSize, host, Siblings.alone(guestCid));
  }

  /**
   * A device whose guest reaches the guests of the same {@link Siblings} it shares a group with
   * (vhost-device-vsock's sibling VM communication), as {@code member}, which is this guest's.
   */
  public VsockDevice(
      long guestCid,
      int bufferSize,
      int maxConnections,
      int maxQueueSize,
      HostSide host,
      Siblings.Member member) {
    if (member.cid() != guestCid) {
      throw new IllegalArgumentException(
          "the sibling member is guest CID " + member.cid() + "'s, not " + guestCid + "'s");
    }
    if (guestCid < 3 || guestCid > 0xffff_fffeL) {
      throw new IllegalArgumentException("guest CID " + guestCid + " is not in 3..2^32-2");
    }
    if (bufferSize < 1) throw new IllegalArgumentException("buffer size " + bufferSize);
    if (maxConnections < 1) throw new IllegalArgumentException("max connections " + maxConnections);
    this.guestCid = guestCid;
    this.bufferSize = bufferSize;
    this.maxConnections = maxConnections;
    this.maxQueueSize = maxQueueSize;
    this.host = host;
    this.member = member;
    this.connectionResets = new ResetQueue(maxConnections);
  }

  public VsockDevice(long guestCid, HostSide host) {
    this(guestCid, DEFAULT_BUFFER_SIZE, DEFAULT_MAX_CONNECTIONS, 1024, host);
  }

  // ---- VirtioDevice ----

  @Override
  public int deviceId() {
    return DEVICE_ID;
  }

  @Override
  public String name() {
    return "vsock";
  }

  @Override
  public long deviceFeatures() {
    return VirtioFeatures.bit(F_SEQPACKET);
  }

  @Override
  public int queueCount() {
    return 3;
  }

  @Override
  public int maxQueueSize() {
    return maxQueueSize;
  }

  @Override
  public byte[] config() {
    return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(guestCid).array();
  }

  @Override
  public void activate(DeviceContext context) {
    this.context = context;
    this.seqpacket = VirtioFeatures.has(context.features(), F_SEQPACKET);
    rxStarted = false;
    txStarted = false;
    host.attach(this);
    // The parameter, not the field: reset nulls the field, and a wake from another guest's loop
    // may still come after it.
    member.attach(() -> context.process(RX_QUEUE), seqpacket);
  }

  @Override
  public void queueStarted(int index, SplitQueue queue) {
    if (index == RX_QUEUE) {
      rxChain = queue.newChain();
      hostReads = new HostReads(this, queue);
      rxRunning = true;
      rxRequested = false;
      noticeResume(rxStarted, queue);
      rxStarted = true;
      if (member.hasPackets()) requestRx(); // they came while no rx queue ran
    } else if (index == TX_QUEUE) {
      txChain = queue.newChain();
      noticeResume(txStarted, queue);
      txStarted = true;
    } else if (index == EVENT_QUEUE) {
      eventChain = queue.newChain();
    }
    if (transportResetDue) context.process(EVENT_QUEUE);
  }

  /**
   * A ring that starts, for the first time since this device was activated, past index 0 was in use
   * before: the guest has connections this device never saw (bounce restarted, or the device was
   * reset, under a running guest). The guest must drop them: TRANSPORT_RESET (virtio 1.2 section
   * 5.10.6.7), sent as soon as there is an event queue.
   */
  private void noticeResume(boolean startedBefore, SplitQueue queue) {
    if (!startedBefore && queue.lastAvailIndex() != 0) transportResetDue = true;
  }

  @Override
  public void queueStopped(int index) {
    if (index == RX_QUEUE) rxRunning = false;
  }

  @Override
  public void process(int index, SplitQueue queue) throws VirtqueueException {
    if (index == TX_QUEUE) {
      while (queue.pop(txChain)) {
        transmitted(txChain);
        queue.addUsed(txChain.headIndex(), 0);
      }
    } else if (index == RX_QUEUE) {
      rxRequested = false;
      fillReceiveBuffers(queue);
    } else if (index == EVENT_QUEUE && transportResetDue && queue.pop(eventChain)) {
      event.set(LittleEndian.LE32, 0, EVENT_TRANSPORT_RESET);
      eventChain.write(event, 0, EVENT_SIZE);
      queue.addUsed(eventChain);
      transportResetDue = false;
      logConnection(
          Level.INFO,
          "vsock: the guest's rings were in use before this device served them (bounce restarted"
              + " or the device was reset under a running guest): sent TRANSPORT_RESET so that the"
              + " guest drops the connections it had");
    }
  }

  @Override
  public void reset() {
    List<VsockConnection> all = connections.values();
    connections.clear();
    sending.clear();
    strayResets.clear();
    connectionResets.clear();
    last = null;
    member.detach();
    for (VsockConnection c : all) close(c);
    if (context != null) host.detach();
    context = null;
    rxRunning = false;
    rxRequested = false;
  }

  // ---- what the host side uses ----

  public long guestCid() {
    return guestCid;
  }

  /** The loop every device and host-side call runs on; null while no driver is served. */
  public IoEventLoop dataLoop() {
    return context == null ? null : context.dataLoop();
  }

  public int bufferSize() {
    return bufferSize;
  }

  /** The connection between these ports, or null. On the device's loop (for tests). */
  VsockConnection connection(int hostPort, int guestPort) {
    return connections.get(VsockConnection.key(hostPort, guestPort));
  }

  /** Connections open or opening now. */
  public int connectionCount() {
    return connections.size();
  }

  /** Packets from the guest that broke a rule (answered with RST or dropped). */
  public long guestErrors() {
    return guestErrors;
  }

  /**
   * A host application connects to guest port {@code guestPort} from host port {@code hostPort}:
   * the guest gets a REQUEST; {@code endpoint} hears {@link HostSide.HostEndpoint#connected} or
   * {@link HostSide.HostEndpoint#closed}.
   *
   * @return the connection, or null when no driver is served, the pair is taken, the table is full
   *     or SEQPACKET was not negotiated
   */
  public VsockConnection connectToGuest(
      int hostPort, int guestPort, int type, HostSide.HostEndpoint endpoint) {
    if (context == null
        || !VsockHeader.knownType(type)
        || (type == VsockHeader.TYPE_SEQPACKET && !seqpacket)
        || atConnectionLimit()
        || connections.containsKey(VsockConnection.key(hostPort, guestPort))) {
      return null;
    }
    VsockConnection c = new VsockConnection(this, hostPort, guestPort, type, bufferSize);
    c.endpoint = endpoint;
    c.state = VsockConnection.State.CONNECTING;
    c.pending = VsockConnection.SEND_REQUEST;
    connections.put(c.key(), c);
    wantsToSend(c);
    return c;
  }

  // ---- tx: packets from the guest ----

  private void transmitted(DescriptorChain chain) throws VirtqueueException {
    long got = chain.read(header, 0, VsockHeader.SIZE);
    if (got < VsockHeader.SIZE) {
      if (guestErrorLogged()) {
        warn("a tx chain of " + got + " bytes is shorter than the 44-byte header", null);
      }
      return;
    }
    long srcCid = VsockHeader.srcCid(header, 0);
    long dstCid = VsockHeader.dstCid(header, 0);
    int srcPort = VsockHeader.srcPort(header, 0);
    int dstPort = VsockHeader.dstPort(header, 0);
    long len = VsockHeader.len(header, 0);
    int type = VsockHeader.type(header, 0);
    int op = VsockHeader.op(header, 0);
    int flags = VsockHeader.flags(header, 0);
    if (srcCid != guestCid) {
      if (guestErrorLogged()) {
        warn("a packet from CID " + srcCid + ", not the guest's " + guestCid + ": dropped", null);
      }
      return;
    }
    if (dstCid != VsockHeader.HOST_CID) {
      toSibling(chain, dstCid, srcPort, dstPort, len, type, op);
      return;
    }
    if (op == Op.RST) {
      VsockConnection c = find(dstPort, srcPort);
      if (c != null) {
        forget(c);
        close(c);
      }
      return;
    }
    VsockConnection c = find(dstPort, srcPort);
    String wrong = brokenRule(len, type, op);
    if (wrong == null && c != null && c.type() != type) {
      wrong = "type " + type + " on a connection of type " + c.type();
    }
    if (wrong != null) {
      if (guestErrorLogged()) {
        warn(describeHeader() + ": " + wrong + "; answered with RST", null);
      }
      refuse(c, srcPort, dstPort, type);
      return;
    }
    if (c != null) {
      c.peerBufAlloc = VsockHeader.bufAlloc(header, 0);
      c.peerFwdCnt = VsockHeader.fwdCnt(header, 0);
    }
    switch (op) {
      case Op.REQUEST -> request(c, srcPort, dstPort, type);
      case Op.RESPONSE -> response(c, srcPort, dstPort, type);
      case Op.RW -> data(chain, c, srcPort, dstPort, type, (int) len, flags);
      case Op.SHUTDOWN -> peerShutdown(c, srcPort, dstPort, type, flags);
      case Op.CREDIT_UPDATE -> {
        if (c == null) refuse(null, srcPort, dstPort, type);
        else if (hasWork(c)) wantsToSend(c);
      }
      case Op.CREDIT_REQUEST -> {
        if (c == null) {
          refuse(null, srcPort, dstPort, type);
        } else {
          c.pending |= VsockConnection.SEND_CREDIT;
          wantsToSend(c);
        }
      }
      default -> throw new AssertionError(op);
    }
  }

  /** What the header in {@link #header} gets wrong whatever its destination, or null. */
  private String brokenRule(long len, int type, int op) {
    if (!Op.isKnown(op)) return "unknown op " + op;
    if (!VsockHeader.knownType(type) || (type == VsockHeader.TYPE_SEQPACKET && !seqpacket)) {
      return "socket type " + type + " was not negotiated";
    }
    if (op != Op.RW && len != 0) return "a " + Op.name(op) + " carries len " + len;
    if (len > MAX_PACKET_PAYLOAD) {
      return "len " + len + " is over the " + MAX_PACKET_PAYLOAD + "-byte packet limit";
    }
    return null;
  }

  /**
   * A packet for another guest ({@link Siblings}): forwarded as it is; one that breaks a rule, or
   * cannot go, is answered with an RST from where it was going (unless it is an RST itself), so
   * that the guest's socket fails at once rather than wait for a peer that will not answer.
   */
  private void toSibling(
      DescriptorChain chain, long dstCid, int srcPort, int dstPort, long len, int type, int op)
      throws VirtqueueException {
    String wrong = brokenRule(len, type, op);
    if (wrong == null) {
      Siblings.Forwarded f = member.forward(dstCid, header, chain, (int) len);
      switch (f) {
        case SENT -> {
          return;
        }
        case SHORT -> wrong = "its chain holds fewer than len payload bytes";
        default -> {
          Level level = f == Siblings.Forwarded.FULL ? Level.WARNING : Level.DEBUG;
          if (LOG.isLoggable(level) && siblingLines.spend()) {
            print(siblingLines, level, describeHeader() + ": " + unforwarded(f) + "; reset");
          }
        }
      }
    }
    if (wrong != null && guestErrorLogged()) {
      warn(describeHeader() + ": " + wrong + "; answered with RST", null);
    }
    int resetType = VsockHeader.knownType(type) ? type : VsockHeader.TYPE_STREAM;
    if (op != Op.RST
        && !member.resetFrom(dstCid, dstPort, srcPort, resetType)
        && siblingLines.spend()) {
      print(
          siblingLines,
          Level.WARNING,
          "vsock: the guest takes no packets from other CIDs (RSTs among them): dropped the RST"
              + " for guest port "
              + Integer.toUnsignedString(srcPort));
    }
  }

  private static String unforwarded(Siblings.Forwarded f) {
    return switch (f) {
      case NO_SUCH_GUEST -> "no guest of this process has that CID";
      case NO_COMMON_GROUP -> "that guest shares no group with this one";
      case NOT_RUNNING -> "that guest's driver is not running";
      case NO_SEQPACKET -> "that guest's driver did not negotiate SEQPACKET";
      case FULL ->
          "that guest has not taken the packets waiting for it (at most "
              + (Siblings.SENDER_BYTES >> 20)
              + " MiB from one guest, "
              + (Siblings.INBOX_BYTES >> 20)
              + " MiB in all)";
      default -> throw new AssertionError(f);
    };
  }

  private void request(VsockConnection existing, int guestPort, int hostPort, int type) {
    if (existing != null) {
      if (guestErrorLogged()) {
        warn(describeHeader() + ": REQUEST on a connection that exists; reset", null);
      }
      refuse(existing, guestPort, hostPort, type);
      return;
    }
    // The guest reuses the pair, so it holds the connection an RST still waiting for it belonged to
    // as gone: sent after this REQUEST's RESPONSE was queued, it would reset the new one instead.
    connectionResets.remove(guestPort, hostPort);
    strayResets.remove(guestPort, hostPort);
    if (atConnectionLimit()) {
      if (connectionLines.spend()) {
        print(
            connectionLines,
            Level.WARNING,
            "vsock: "
                + maxConnections
                + " connections open or waiting to send their RST; refusing "
                + describeHeader());
      }
      refuse(null, guestPort, hostPort, type);
      return;
    }
    VsockConnection c = new VsockConnection(this, hostPort, guestPort, type, bufferSize);
    c.peerBufAlloc = VsockHeader.bufAlloc(header, 0);
    c.peerFwdCnt = VsockHeader.fwdCnt(header, 0);
    c.state = VsockConnection.State.ACCEPTING; // the host side may accept it at once
    HostSide.HostEndpoint endpoint = host.guestConnect(c);
    if (endpoint == null) {
      if (connectionLines.spend()) {
        print(
            connectionLines,
            Level.DEBUG,
            "vsock: nothing listens on host port " + Integer.toUnsignedString(hostPort));
      }
      refuse(null, guestPort, hostPort, type);
      return;
    }
    c.endpoint = endpoint;
    // A host side that ended the connection already (HostSide.guestConnect) leaves no slot held.
    if (c.state != VsockConnection.State.CLOSED) connections.put(c.key(), c);
  }

  /** The host end of {@code c}, which the guest asked for, is connected: RESPONSE. */
  void accepted(VsockConnection c) {
    c.state = VsockConnection.State.ESTABLISHED;
    c.pending |= VsockConnection.SEND_RESPONSE;
    wantsToSend(c);
  }

  private void response(VsockConnection c, int guestPort, int hostPort, int type) {
    if (c == null || c.state != VsockConnection.State.CONNECTING) {
      if (guestErrorLogged()) {
        warn(describeHeader() + ": RESPONSE to no request; reset", null);
      }
      refuse(c, guestPort, hostPort, type);
      return;
    }
    c.state = VsockConnection.State.ESTABLISHED;
    c.endpoint.connected(c);
    if (hasWork(c)) wantsToSend(c);
  }

  private void data(
      DescriptorChain chain,
      VsockConnection c,
      int guestPort,
      int hostPort,
      int type,
      int len,
      int flags)
      throws VirtqueueException {
    if (c == null || c.state != VsockConnection.State.ESTABLISHED) {
      refuse(c, guestPort, hostPort, type);
      return;
    }
    if ((c.peerShutdown & VsockHeader.SHUTDOWN_SEND) != 0) {
      if (guestErrorLogged()) {
        warn(describeHeader() + ": data after the guest shut down sending; reset", c);
      }
      refuse(c, guestPort, hostPort, type);
      return;
    }
    if (len == 0) {
      // An empty packet carries nothing. An empty SEQPACKET message could not reach a host
      // SOCK_SEQPACKET reader (it reads as end of stream) and would hold a boundary without using
      // credit, so a guest could grow the ring's boundaries without bound: it is dropped.
      if (c.isSeqpacket() && (flags & VsockHeader.SEQ_EOM) != 0) {
        if (guestErrorLogged()) {
          warn(describeHeader() + ": an empty SEQPACKET message; dropped", c);
        }
      }
      return;
    }
    if (len > c.fromGuest.free()) {
      if (guestErrorLogged()) {
        warn(
            describeHeader()
                + ": "
                + len
                + " bytes, but the guest had credit for "
                + c.fromGuest.free()
                + "; reset",
            c);
      }
      refuse(c, guestPort, hostPort, type);
      return;
    }
    // A stream's bytes go straight to a host end that takes them now; only what it leaves is kept.
    boolean offered =
        !c.isSeqpacket()
            && len > 0
            && c.fromGuest.isEmpty()
            && (c.hostShutdown & VsockHeader.SHUTDOWN_RCV) == 0;
    int rest = offered ? len - c.offer(chain, len) : len;
    if (c.state != VsockConnection.State.ESTABLISHED) return; // the host end reset it meanwhile
    if (!c.fromGuest.writeFrom(chain, rest)) {
      if (guestErrorLogged()) {
        warn(describeHeader() + ": the chain holds fewer payload bytes than len; reset", c);
      }
      refuse(c, guestPort, hostPort, type);
      return;
    }
    if (c.isSeqpacket() && (flags & VsockHeader.SEQ_EOM) != 0 && !c.fromGuest.markEnd()) {
      if (guestErrorLogged()) {
        warn(describeHeader() + ": too many messages held; reset", c);
      }
      refuse(c, guestPort, hostPort, type);
      return;
    }
    if ((c.hostShutdown & VsockHeader.SHUTDOWN_RCV) != 0) {
      c.fromGuest.clear(); // the host reads no more: the bytes are dropped, the credit returned
      consumedFromGuest(c);
      return;
    }
    if (!offered || rest > 0) c.endpoint.readable(c);
  }

  private void peerShutdown(VsockConnection c, int guestPort, int hostPort, int type, int flags) {
    if (c == null) {
      refuse(null, guestPort, hostPort, type);
      return;
    }
    int added = flags & VsockHeader.SHUTDOWN_BOTH & ~c.peerShutdown;
    c.peerShutdown |= added;
    if ((added & VsockHeader.SHUTDOWN_RCV) != 0) c.toGuest.clear();
    if (added != 0) c.endpoint.peerShutdown(c, added);
    closeIfDone(c);
  }

  /** The guest shut down both ways and the host took every byte: RST, as Linux does. */
  private void closeIfDone(VsockConnection c) {
    if (c.peerShutdown == VsockHeader.SHUTDOWN_BOTH
        && c.fromGuest.isEmpty()
        && c.state != VsockConnection.State.CLOSED) {
      resetConnection(c);
    }
  }

  // ---- what connections tell the device ----

  /** The host took bytes out of {@code c.fromGuest}: maybe the guest should hear of its credit. */
  void consumedFromGuest(VsockConnection c) {
    int fwdCnt = (int) c.fromGuest.consumed();
    int unannounced = fwdCnt - c.announcedFwdCnt;
    // Tell the guest once a quarter of the buffer is free again, or when the buffer is empty (a
    // guest waiting for credit then learns it has all of it).
    if (unannounced != 0 && (unannounced >= c.fromGuest.capacity() / 4 || c.fromGuest.isEmpty())) {
      c.pending |= VsockConnection.SEND_CREDIT;
      wantsToSend(c);
    }
    closeIfDone(c);
  }

  /** {@code c} may have a packet for the guest: queue it for the rx queue. */
  void wantsToSend(VsockConnection c) {
    if (c.queued || c.state == VsockConnection.State.CLOSED) return;
    c.queued = true;
    sending.addLast(c);
    requestRx();
  }

  /** Asks the engine for a pass over the rx queue, once until it comes. */
  private void requestRx() {
    if (context != null && !rxRequested) {
      rxRequested = true;
      context.process(RX_QUEUE);
    }
  }

  /** Ends {@code c}: RST to the guest, and the host end hears it. */
  void resetConnection(VsockConnection c) {
    forget(c);
    // The RST takes over the connection's slot, so its queue has room (see connectionResets).
    if (!connectionResets.add(c.guestPort(), c.hostPort(), c.type())) {
      // Cannot happen while every slot is counted; said loudly if it ever does.
      LOG.log(Level.ERROR, "vsock: bug: no slot kept for the RST of " + c);
      strayReset(c.guestPort(), c.hostPort(), c.type());
    }
    requestRx();
    close(c);
  }

  /** Connections open or opening, and RSTs of ended ones not sent yet, fill the table. */
  private boolean atConnectionLimit() {
    return connections.size() + connectionResets.size() >= maxConnections;
  }

  private void forget(VsockConnection c) {
    if (last == c) last = null;
    connections.remove(c.key());
  }

  private static void close(VsockConnection c) {
    if (c.state == VsockConnection.State.CLOSED) return;
    c.state = VsockConnection.State.CLOSED;
    c.fromGuest.clear();
    c.toGuest.clear();
    if (c.endpoint != null) c.endpoint.closed(c);
  }

  private void refuse(VsockConnection c, int guestPort, int hostPort, int type) {
    if (c != null) {
      resetConnection(c);
    } else {
      strayReset(guestPort, hostPort, type);
    }
  }

  private void strayReset(int guestPort, int hostPort, int type) {
    // A pair whose RST already waits keeps that one, also when the queue is full.
    if (!strayResets.add(guestPort, hostPort, VsockHeader.knownType(type) ? type : 1)) {
      // The guest posts no rx buffers while it keeps sending: its RST for this port is lost.
      if (connectionLines.spend()) {
        print(
            connectionLines,
            Level.WARNING,
            "vsock: "
                + MAX_STRAY_RESETS
                + " RSTs wait for rx buffers the guest does not post; dropped the one for guest"
                + " port "
                + Integer.toUnsignedString(guestPort));
      }
      return;
    }
    requestRx();
  }

  private VsockConnection find(int hostPort, int guestPort) {
    VsockConnection c = last;
    if (c != null && c.hostPort() == hostPort && c.guestPort() == guestPort) return c;
    c = connections.get(VsockConnection.key(hostPort, guestPort));
    if (c != null) last = c;
    return c;
  }

  // ---- rx: packets to the guest ----

  private static int peerCredit(VsockConnection c) {
    int inFlight = (int) c.toGuest.consumed() - c.peerFwdCnt;
    long free = Integer.toUnsignedLong(c.peerBufAlloc) - Integer.toUnsignedLong(inFlight);
    return (int) Math.max(0, Math.min(free, Integer.MAX_VALUE));
  }

  /** Whether {@code c} holds data the guest can take now (an empty message needs no credit). */
  private static boolean hasData(VsockConnection c) {
    return c.state == VsockConnection.State.ESTABLISHED
        && (!c.toGuest.isEmpty() || (c.isSeqpacket() && c.toGuest.messages() > 0))
        && (peerCredit(c) > 0 || c.toGuest.readable(1) == 0);
  }

  /**
   * Whether data the guest has credit for may wait at {@code c}'s host end, to be read straight
   * into rx buffers ({@link HostReads}): only once the connection said what comes before (its
   * RESPONSE) and holds no bytes itself, which go first.
   */
  private static boolean readsFromHost(VsockConnection c) {
    return c.bytesWaitAtHost
        && c.state == VsockConnection.State.ESTABLISHED
        && (c.pending & (VsockConnection.SEND_REQUEST | VsockConnection.SEND_RESPONSE)) == 0
        && c.toGuest.isEmpty()
        && c.writable() > 0
        && peerCredit(c) > 0;
  }

  private static boolean hasWork(VsockConnection c) {
    // Nothing goes before the RESPONSE of a connection the host side has not accepted yet.
    if (c.state == VsockConnection.State.CLOSED || c.state == VsockConnection.State.ACCEPTING) {
      return false;
    }
    int p = c.pending;
    if (c.state == VsockConnection.State.CONNECTING) {
      return (p & VsockConnection.SEND_REQUEST) != 0;
    }
    return (p & ~VsockConnection.SEND_SHUTDOWN) != 0
        || hasData(c)
        || readsFromHost(c)
        || ((p & VsockConnection.SEND_SHUTDOWN) != 0 && c.toGuest.isEmpty());
  }

  private void fillReceiveBuffers(SplitQueue queue) throws VirtqueueException {
    if (!rxRunning || !sendResets(queue, connectionResets) || !sendResets(queue, strayResets)) {
      return;
    }
    // Other guests' packets and the host's connections take turns at going first, so that
    // neither can have every rx buffer (vhost-device-vsock alternates the same way).
    siblingsFirst = !siblingsFirst;
    if (siblingsFirst) {
      if (fromSiblings(queue)) fromConnections(queue);
    } else if (fromConnections(queue)) {
      fromSiblings(queue);
    }
  }

  /** Delivers other guests' packets; false when the rx queue ran out of buffers. */
  private boolean fromSiblings(SplitQueue queue) throws VirtqueueException {
    while (member.hasPackets()) {
      if (!queue.pop(rxChain)) return false;
      long room = writableBytes(rxChain);
      if (room < VsockHeader.SIZE || !member.deliver(rxChain, room)) {
        unusable(queue, rxChain);
      } else {
        queue.addUsed(rxChain.headIndex(), (int) rxChain.bytesWritten());
      }
    }
    return true;
  }

  /** Fills rx buffers from the connections with work; false when the queue ran out of them. */
  private boolean fromConnections(SplitQueue queue) throws VirtqueueException {
    VsockConnection c;
    while ((c = nextWithWork()) != null) {
      boolean buffered = false;
      try {
        buffered = readsFromHost(c) ? hostReads.receive(c, peerCredit(c)) : fillOne(queue, c);
      } finally {
        // Out of buffers, or the queue failed: c waits for the next pass (else it could wait for
        // ever, its host end having handed the reading over to the device).
        if (!buffered && !c.queued) {
          c.queued = true;
          sending.addFirst(c);
        }
      }
      if (!buffered) return false;
      if (hasWork(c) && !c.queued) {
        c.queued = true;
        sending.addLast(c);
      }
    }
    return true;
  }

  /** One packet of {@code c}; false when the rx queue had no buffer. */
  private boolean fillOne(SplitQueue queue, VsockConnection c) throws VirtqueueException {
    if (!queue.pop(rxChain)) return false;
    fill(queue, rxChain, c);
    return true;
  }

  /** Sends the RSTs of {@code resets}; whether all went (else the rx queue ran out of buffers). */
  private boolean sendResets(SplitQueue queue, ResetQueue resets) throws VirtqueueException {
    while (!resets.isEmpty()) {
      if (!queue.pop(rxChain)) return false;
      VsockHeader.write(
          header,
          0,
          VsockHeader.HOST_CID,
          guestCid,
          resets.firstHostPort(),
          resets.firstGuestPort(),
          0,
          resets.firstType(),
          Op.RST,
          0,
          0,
          0);
      resets.removeFirst();
      complete(queue, rxChain, 0);
    }
    return true;
  }

  private VsockConnection nextWithWork() {
    VsockConnection c;
    while ((c = sending.pollFirst()) != null) {
      c.queued = false;
      if (hasWork(c)) return c;
    }
    return null;
  }

  /** Writes one packet of {@code c} into {@code chain} and completes it. */
  private void fill(SplitQueue queue, DescriptorChain chain, VsockConnection c)
      throws VirtqueueException {
    int op;
    int flags = 0;
    int payload = 0;
    int p = c.pending;
    if ((p & VsockConnection.SEND_REQUEST) != 0) {
      op = Op.REQUEST;
      c.pending &= ~VsockConnection.SEND_REQUEST;
    } else if ((p & VsockConnection.SEND_RESPONSE) != 0) {
      op = Op.RESPONSE;
      c.pending &= ~VsockConnection.SEND_RESPONSE;
    } else if (hasData(c)) {
      op = Op.RW;
      long room = writableBytes(chain) - VsockHeader.SIZE;
      int limit = (int) Math.max(0, Math.min(Math.min(room, MAX_PACKET_PAYLOAD), peerCredit(c)));
      payload = c.toGuest.readable(limit);
      if (c.isSeqpacket() && payload == c.toGuest.firstMessageRemaining()) {
        flags = VsockHeader.SEQ_EOM;
      }
      if (room < 0 || (payload == 0 && flags == 0)) {
        // A receive buffer too small for a header (or for any data): the guest broke 5.10.6.3.
        if (guestErrorLogged()) {
          warn("a receive buffer of " + (room + VsockHeader.SIZE) + " bytes is unusable", c);
        }
        complete(queue, chain, -1);
        return;
      }
    } else if ((p & VsockConnection.SEND_SHUTDOWN) != 0 && c.toGuest.isEmpty()) {
      op = Op.SHUTDOWN;
      flags = c.hostShutdown;
      c.pending &= ~VsockConnection.SEND_SHUTDOWN;
    } else {
      op = Op.CREDIT_UPDATE;
    }
    writeHeader(c, op, flags, payload);
    if (!headerFits(queue, chain, c, "a receive buffer is shorter than the 44-byte header")) return;
    if (op == Op.RW) {
      c.toGuest.readInto(chain, payload);
      if (flags != 0) c.toGuest.takeEnd();
      if (c.endpoint != null && c.toGuest.free() > 0) c.endpoint.writable(c);
    }
    queue.addUsed(chain.headIndex(), (int) chain.bytesWritten());
  }

  /**
   * Completes {@code chain}, whose first {@code len} payload bytes {@link HostReads} read from the
   * host end, as an RW packet of {@code c}: its header goes in front of them.
   *
   * @return false when the header no longer fit (the guest shortened the buffer meanwhile): then
   *     completed empty, and the payload is lost
   */
  boolean completeData(SplitQueue queue, DescriptorChain chain, VsockConnection c, int len)
      throws VirtqueueException {
    writeHeader(c, Op.RW, 0, len);
    chain.rewind(); // walks (and checks) the descriptors again, as the guest may have changed them
    if (!headerFits(queue, chain, c, "a receive buffer shrank while the device filled it; reset")) {
      return false;
    }
    queue.addUsed(chain.headIndex(), VsockHeader.SIZE + len);
    return true;
  }

  /**
   * Completes a receive buffer too small for a header and data unused (the guest broke 5.10.6.3).
   */
  void unusable(SplitQueue queue, DescriptorChain chain) throws VirtqueueException {
    if (guestErrorLogged()) {
      warn("a receive buffer too small for a header and data is unusable", null);
    }
    complete(queue, chain, -1);
  }

  /** Puts {@code c}'s packet header into {@link #header}, announcing the credit it carries. */
  private void writeHeader(VsockConnection c, int op, int flags, int len) {
    int fwdCnt = (int) c.fromGuest.consumed();
    VsockHeader.write(
        header,
        0,
        VsockHeader.HOST_CID,
        guestCid,
        c.hostPort(),
        c.guestPort(),
        len,
        c.type(),
        op,
        flags,
        c.fromGuest.capacity(),
        fwdCnt);
    c.announcedFwdCnt = fwdCnt;
    c.pending &= ~VsockConnection.SEND_CREDIT;
  }

  private static long writableBytes(DescriptorChain chain) throws VirtqueueException {
    long n = 0;
    while (chain.next()) {
      if (chain.isWritable()) n += chain.length();
    }
    chain.rewind();
    return n;
  }

  /**
   * Completes {@code chain} with what was written ({@code -1}: nothing, the buffer is unusable).
   */
  private void complete(SplitQueue queue, DescriptorChain chain, int unused)
      throws VirtqueueException {
    if (unused == 0
        && !headerFits(queue, chain, null, "a receive buffer is shorter than the 44-byte header")) {
      return;
    }
    queue.addUsed(chain.headIndex(), unused == 0 ? (int) chain.bytesWritten() : 0);
  }

  /**
   * Writes {@link #header} at the front of {@code chain}; a buffer too short for it is completed
   * empty, with a rate-limited line saying {@code why}.
   */
  private boolean headerFits(SplitQueue queue, DescriptorChain chain, VsockConnection c, String why)
      throws VirtqueueException {
    if (chain.write(header, 0, VsockHeader.SIZE) == VsockHeader.SIZE) return true;
    if (guestErrorLogged()) warn(why, c);
    queue.addUsed(chain.headIndex(), 0);
    return false;
  }

  // ---- logs ----

  private String describeHeader() {
    return "vsock: guest packet " + VsockHeader.describe(header, 0);
  }

  /**
   * Counts a guest error; whether its line is logged ({@link #guestErrorLines}), so that a guest
   * repeating it per packet costs no message built only to be dropped.
   */
  private boolean guestErrorLogged() {
    guestErrors++;
    return guestErrorLines.spend();
  }

  private void warn(String what, VsockConnection c) {
    print(guestErrorLines, Level.WARNING, c == null ? what : what + " (" + c + ")");
  }

  /**
   * Logs a line about the connections the guest asks for, rate-limited ({@link #connectionLines}).
   */
  void logConnection(Level level, String what) {
    if (connectionLines.spend()) print(connectionLines, level, what);
  }

  /** Prints a line {@code budget} let through. */
  private static void print(LogBudget budget, Level level, String what) {
    LOG.log(level, budget.annotate(what));
  }
}
