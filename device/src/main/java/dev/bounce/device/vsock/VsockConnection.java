package dev.bounce.device.vsock;

import dev.bounce.pool.IoVectors;
import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.lang.foreign.MemorySegment;

/**
 * One vsock connection between a guest port and a host port, as the device keeps it: its state, the
 * bytes each way that wait in bounce (each a {@link ByteRing} bounded by the device's buffer size;
 * stream bytes mostly pass without waiting: {@link #offer}, {@link #bytesWaitAtHost}) and the
 * credit of both peers (virtio 1.2 section 5.10.6.3). The host side works it through the public
 * methods, on the data loop only.
 *
 * <p>Credit: the guest may send us at most {@code bufAlloc - (rxCnt - fwdCnt)} more bytes, where
 * {@code bufAlloc} is our ring's capacity, {@code rxCnt} what it sent and {@code fwdCnt} what the
 * host took out of the ring. We send the guest at most {@code peerBufAlloc - (txCnt - peerFwdCnt)}.
 * Counters wrap modulo 2^32 as the header fields do.
 */
public final class VsockConnection {
  enum State {
    /** The host asked; REQUEST sent or about to be, no RESPONSE yet. */
    CONNECTING,
    /** The guest asked; its host end is not connected yet ({@link #accept}), so no RESPONSE yet. */
    ACCEPTING,
    ESTABLISHED,
    CLOSED
  }

  // What the connection has to tell the guest (bits of pending).
  static final int SEND_REQUEST = 1;
  static final int SEND_RESPONSE = 2;
  static final int SEND_CREDIT = 4;
  static final int SEND_SHUTDOWN = 8;

  private final VsockDevice device;
  private final int hostPort;
  private final int guestPort;
  private final int type;
  final ByteRing fromGuest;
  final ByteRing toGuest;
  HostSide.HostEndpoint endpoint;
  State state;
  int pending;
  boolean queued;
  int peerBufAlloc;
  int peerFwdCnt;
  int announcedFwdCnt;
  int hostShutdown;
  int peerShutdown;
  boolean bytesWaitAtHost;
  private boolean lastReadEndedMessage;

  // A stream packet's payload the host may take straight from guest memory: set only during
  // offer(), while fromGuest is empty (so bytes stay in order).
  private DescriptorChain staged;
  private int stagedLeft;
  private int stagedTaken;
  private VirtqueueException stagedFault;

  VsockConnection(VsockDevice device, int hostPort, int guestPort, int type, int bufferSize) {
    this.device = device;
    this.hostPort = hostPort;
    this.guestPort = guestPort;
    this.type = type;
    this.fromGuest = new ByteRing(bufferSize);
    this.toGuest = new ByteRing(bufferSize);
  }

  static long key(int hostPort, int guestPort) {
    return ((long) hostPort << 32) | Integer.toUnsignedLong(guestPort);
  }

  long key() {
    return key(hostPort, guestPort);
  }

  public int hostPort() {
    return hostPort;
  }

  public int guestPort() {
    return guestPort;
  }

  public long guestCid() {
    return device.guestCid();
  }

  /** {@link VsockHeader#TYPE_STREAM} or {@link VsockHeader#TYPE_SEQPACKET}. */
  public int type() {
    return type;
  }

  public boolean isSeqpacket() {
    return type == VsockHeader.TYPE_SEQPACKET;
  }

  public boolean isOpen() {
    return state == State.ESTABLISHED;
  }

  public boolean isClosed() {
    return state == State.CLOSED;
  }

  /** Shutdown flags the guest sent so far. */
  public int peerShutdownFlags() {
    return peerShutdown;
  }

  // ---- bytes from the guest ----

  /** Bytes from the guest waiting to be read. */
  public int available() {
    return fromGuest.size() + stagedLeft;
  }

  /**
   * Takes up to {@code max} bytes from the guest into {@code dst}; for SEQPACKET never past the end
   * of the current message ({@link #endOfMessage} then says whether it ended). Frees guest credit.
   */
  public int read(MemorySegment dst, long dstOffset, int max) {
    int n = fromGuest.read(dst, dstOffset, max);
    if (n < max && stagedLeft > 0) n += readStaged(dst, dstOffset + n, max - n);
    lastReadEndedMessage = fromGuest.takeEnd();
    if (n > 0 || lastReadEndedMessage) device.consumedFromGuest(this);
    return n;
  }

  /**
   * Hands a stream packet's {@code len} payload bytes, at {@code chain}'s cursor, to the host end
   * while they are still in guest memory: what it takes during this {@link
   * HostSide.HostEndpoint#readable} call, written straight from there ({@link #gatherStaged}) or
   * {@link #read} into its buffer, skips {@link #fromGuest}. The rest stays at the cursor for the
   * device to keep.
   *
   * @return the bytes the host took (counted as received and forwarded in {@link #fromGuest})
   * @throws VirtqueueException when a descriptor of the chain was invalid
   */
  int offer(DescriptorChain chain, int len) throws VirtqueueException {
    staged = chain;
    stagedLeft = len;
    stagedTaken = 0;
    try {
      endpoint.readable(this);
    } finally {
      staged = null;
      stagedLeft = 0;
    }
    VirtqueueException fault = stagedFault;
    stagedFault = null;
    if (fault != null) throw fault;
    return stagedTaken;
  }

  /**
   * Adds the bytes {@link #offer} staged, still in guest memory, to {@code pieces}, for the host
   * end to write with one writev(2) and no copy in bounce; then {@link #tookStaged} says how many
   * went. Only while nothing waits in {@link #fromGuest} (those go first).
   *
   * @return the bytes added (0: none staged now)
   */
  public long gatherStaged(IoVectors pieces) {
    if (stagedLeft == 0 || !fromGuest.isEmpty()) return 0;
    try {
      return staged.gatherReadable(pieces, stagedLeft);
    } catch (VirtqueueException e) {
      stagedFault = e;
      stagedLeft = 0;
      return 0;
    }
  }

  /**
   * {@code n} of the {@code gathered} bytes of {@link #gatherStaged} reached the host (frees guest
   * credit); the rest stays staged, for {@link #read} or the device to keep.
   */
  public void tookStaged(long gathered, long n) {
    if (n > 0) {
      fromGuest.passThrough((int) n);
      stagedTaken += (int) n;
      stagedLeft -= (int) n;
    }
    if (n < gathered) {
      // The chain's cursor went past all of them: back to the first byte not written, behind
      // the header and what the host took before. A chain the guest changed meanwhile offers
      // nothing more: the device finds it short, or broken, and says so.
      long at = VsockHeader.SIZE + (long) stagedTaken;
      try {
        staged.rewind();
        if (staged.skipReadable(at) < at) stagedLeft = 0;
      } catch (VirtqueueException e) {
        stagedFault = e;
        stagedLeft = 0;
      }
    }
    if (n > 0) device.consumedFromGuest(this);
  }

  private int readStaged(MemorySegment dst, long dstOffset, int max) {
    int want = Math.min(max, stagedLeft);
    int got;
    try {
      got = (int) staged.read(dst, dstOffset, want);
    } catch (VirtqueueException e) {
      stagedFault = e;
      got = 0;
    }
    fromGuest.passThrough(got);
    stagedTaken += got;
    // A chain shorter than its len: nothing more is offered; the device finds it short and resets.
    stagedLeft = got < want ? 0 : stagedLeft - got;
    return got;
  }

  /** Whether the last {@link #read} reached the end of a SEQPACKET message. */
  public boolean endOfMessage() {
    return lastReadEndedMessage;
  }

  // ---- bytes to the guest ----

  /** Bytes written for the guest and not sent to it yet. */
  public int queuedForGuest() {
    return toGuest.size();
  }

  /** How many bytes {@link #write} takes now (0 when closed or the guest stopped receiving). */
  public int writable() {
    if (state == State.CLOSED
        || (peerShutdown & VsockHeader.SHUTDOWN_RCV) != 0
        || (hostShutdown & VsockHeader.SHUTDOWN_SEND) != 0) {
      return 0;
    }
    return toGuest.free();
  }

  /**
   * Queues up to {@code length} bytes of {@code src} for the guest, as many as {@link #writable}
   * allows. For SEQPACKET, {@code endOfMessage} ends the message after them, but only when all were
   * taken (the rest of a message comes with the next write).
   *
   * @return the bytes taken
   */
  public int write(MemorySegment src, long srcOffset, int length, boolean endOfMessage) {
    int n = Math.min(length, writable());
    if (n > 0) toGuest.write(src, srcOffset, n);
    if (isSeqpacket() && endOfMessage && n == length && state != State.CLOSED) toGuest.markEnd();
    if (n > 0 || endOfMessage) device.wantsToSend(this);
    return n;
  }

  /**
   * Bytes for the guest may wait at the host end, to be read straight into the guest's receive
   * buffers ({@link HostSide.HostEndpoint#readInto}) once it has some and credit: a stream's way
   * round {@link #write}'s copy. The device asks until a read comes back short; the host end says
   * so again when more may have come.
   */
  public void bytesWaitAtHost() {
    if (state == State.CLOSED || isSeqpacket()) return;
    bytesWaitAtHost = true;
    device.wantsToSend(this);
  }

  /**
   * The host end of a connection the guest asked for is connected: the guest gets its RESPONSE.
   * Only then: a host end that fails to connect resets the connection instead, and RST is the
   * guest's one answer, as a refused connect(2) expects.
   */
  public void accept() {
    if (state == State.ACCEPTING) device.accepted(this);
  }

  // ---- closing ----

  /** The host shuts down its side (RCV and/or SEND): the guest is told once queued bytes went. */
  public void shutdown(int flags) {
    if (state == State.CLOSED) return;
    int added = flags & VsockHeader.SHUTDOWN_BOTH & ~hostShutdown;
    if (added == 0) return;
    hostShutdown |= added;
    pending |= SEND_SHUTDOWN;
    device.wantsToSend(this);
  }

  /** A line about this connection that the guest caused, within the device's budget for them. */
  void log(System.Logger.Level level, String what) {
    device.logConnection(level, what + " (" + this + ")");
  }

  /** The host resets the connection: RST to the guest, and the connection is dropped. */
  public void reset() {
    if (state == State.CLOSED) return;
    device.resetConnection(this);
  }

  @Override
  public String toString() {
    return "vsock "
        + (isSeqpacket() ? "seqpacket " : "stream ")
        + "host:"
        + Integer.toUnsignedString(hostPort)
        + " <-> "
        + device.guestCid()
        + ":"
        + Integer.toUnsignedString(guestPort)
        + " "
        + state;
  }
}
