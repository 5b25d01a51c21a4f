package dev.bounce.vhost.frontend;

import dev.bounce.pool.Fd;
import dev.bounce.vhost.protocol.Empty;
import dev.bounce.vhost.protocol.FdRule;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.Payload;
import dev.bounce.vhost.protocol.PayloadKind;
import dev.bounce.vhost.protocol.ProtocolException;
import dev.bounce.vhost.protocol.Replies;
import dev.bounce.vhost.protocol.Requests;
import dev.bounce.vhost.protocol.U64;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.EOFException;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.lang.ref.Reference;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import jnr.constants.platform.Fcntl;
import jnr.posix.CmsgHdr;
import jnr.posix.MsgHdr;
import jnr.posix.POSIX;
import jnr.posix.POSIXFactory;
import jnr.unixsocket.UnixServerSocketChannel;
import jnr.unixsocket.UnixSocketAddress;
import jnr.unixsocket.UnixSocketChannel;
import jnr.unixsocket.UnixSocketOptions;

/**
 * The frontend's (the VMM's) end of a vhost-user socket: sends requests with their fds and reads
 * the back-end's replies, checked by the codec ({@link Replies#checkHeader}, {@link
 * Replies#decode}).
 *
 * <p>Deliberately independent of the back-end's socket code ({@code dev.bounce.vhost.socket}, FFM):
 * the socket is a jnr-unixsocket channel and fds travel through jnr-posix {@code sendmsg} / {@code
 * recvmsg} with SCM_RIGHTS, so that when the two ends of a test meet, two separate fd-passing
 * implementations meet, and a control-message bug cannot hide by being the same on both sides.
 *
 * <p>The socket stays blocking; waits are bounded by SO_RCVTIMEO / SO_SNDTIMEO, so no call here
 * blocks longer than the timeout it was given ({@link #DEFAULT_SEND_TIMEOUT} for sends). Fds
 * received with replies are owned by the returned {@link Message}; fds given to a send stay the
 * caller's (the kernel passes duplicates). Nothing leaks on any error path: fds that arrive with a
 * reply that turns out to be bad, or with more ancillary data than fits, are closed before the
 * exception is thrown.
 *
 * <p>One thread sends and one receives at a time (each direction is serialised); {@link #close()}
 * may come from any thread and wakes a receive that waits.
 */
public final class FrontendChannel implements AutoCloseable {
  /** How long {@link #getU64}, {@link #ack} and {@link #call} wait for a reply by default. */
  public static final Duration DEFAULT_REPLY_TIMEOUT = Duration.ofSeconds(10);

  /** How long a send may wait for room in a back-end's full socket buffer. */
  public static final Duration DEFAULT_SEND_TIMEOUT = Duration.ofSeconds(10);

  /** At most this many fds in one request (vhost-user.rst; {@link FdRule#MAX_FDS}). */
  public static final int MAX_FDS = FdRule.MAX_FDS;

  /** The kernel's limit of fds in one SCM_RIGHTS message (SCM_MAX_FD), for {@link #sendRaw}. */
  public static final int MAX_RAW_FDS = 253;

  private static final POSIX POSIX = POSIXFactory.getNativePOSIX();

  // Linux values (x86-64 and arm64 agree).
  private static final int AF_UNIX = 1;
  private static final int SOCK_STREAM = 1;
  private static final int SOL_SOCKET = 1;
  private static final int SCM_RIGHTS = 1;
  private static final int MSG_PEEK = 0x2;
  private static final int MSG_CTRUNC = 0x8;
  private static final int MSG_DONTWAIT = 0x40;
  private static final int MSG_NOSIGNAL = 0x4000;
  private static final int MSG_CMSG_CLOEXEC = 0x40000000;
  private static final int FD_CLOEXEC = 1;
  private static final int EINTR = 4;
  private static final int EAGAIN = 11;
  private static final int EPIPE = 32;
  private static final int ECONNRESET = 104;
  private static final int S_IFMT = 0xf000;
  private static final int S_IFSOCK = 0xc000;

  /** A listening frontend accepts one back-end; a short backlog is plenty. */
  private static final int BACKLOG = 4;

  private static final long MAX_ACCEPT_PAUSE_NANOS = Duration.ofMillis(20).toNanos();

  private final UnixSocketChannel channel;
  private final int fd;
  private final String peer;
  private final AtomicBoolean closed = new AtomicBoolean();
  private final Object sendLock = new Object();
  private final Object receiveLock = new Object();

  /** Header and largest payload of one reply; replies are read into it, never past one message. */
  private final ByteBuffer receiveBuffer =
      ByteBuffer.allocateDirect(Header.SIZE + Header.MAX_PAYLOAD);

  private ByteBuffer sendBuffer = ByteBuffer.allocateDirect(Header.SIZE + Header.MAX_PAYLOAD);
  private volatile Duration replyTimeout = DEFAULT_REPLY_TIMEOUT;

  /** The SO_RCVTIMEO last set, in ms, so that a run of reads sets it once; -1 before the first. */
  private int receiveTimeoutMillis = -1;

  /**
   * Why the message boundaries are lost (a reply cut off by a timeout, a size over the bound), or
   * null while replies can still be read.
   */
  private String unusable;

  private FrontendChannel(UnixSocketChannel channel, String peer) throws IOException {
    this.channel = channel;
    this.fd = channel.getFD();
    this.peer = peer;
    setCloseOnExec(fd);
    channel.setOption(UnixSocketOptions.SO_SNDTIMEO, millis(DEFAULT_SEND_TIMEOUT));
  }

  /** Adopts a connected jnr channel; closes it if it cannot be set up. */
  private static FrontendChannel adopt(UnixSocketChannel channel, String peer) throws IOException {
    try {
      return new FrontendChannel(channel, peer);
    } catch (IOException | RuntimeException e) {
      closeQuietly(channel);
      throw e;
    }
  }

  /**
   * Connects to a back-end listening at {@code path} (the usual case: QEMU's {@code -chardev
   * socket,path=...} without server=on).
   *
   * @throws IOException naming the path when nothing listens there
   */
  public static FrontendChannel connect(Path path) throws IOException {
    UnixSocketChannel channel = UnixSocketChannel.open();
    try {
      channel.connect(new UnixSocketAddress(path.toFile()));
    } catch (IOException | RuntimeException e) {
      closeQuietly(channel);
      throw new IOException(
          "cannot connect to a vhost-user back-end at " + path + ": " + e.getMessage(), e);
    }
    return adopt(channel, "back-end at " + path);
  }

  /**
   * Listens at {@code listenPath} until one back-end connects, then stops listening (the socket
   * file is removed): the frontend is the server and the back-end the client, as DPDK virtio-user
   * with server=1 and a back-end in client mode. A stale socket file at the path is replaced; a
   * path where another process listens, or that is not a socket, is refused.
   *
   * @throws SocketTimeoutException when no back-end connected within {@code timeout}
   */
  public static FrontendChannel accept(Path listenPath, Duration timeout) throws IOException {
    long deadline = System.nanoTime() + timeout.toNanos();
    removeStale(listenPath);
    UnixServerSocketChannel server = UnixServerSocketChannel.open();
    boolean bound = false;
    try {
      setCloseOnExec(server.getFD());
      server.socket().bind(new UnixSocketAddress(listenPath.toFile()), BACKLOG);
      bound = true;
      // jnr's server channel has no timeout option: wait non-blocking, with short pauses (one
      // accept per connection, so the polling costs nothing that matters).
      server.configureBlocking(false);
      long pause = Duration.ofMillis(1).toNanos();
      while (true) {
        UnixSocketChannel accepted = server.accept(); // blocking again, close-on-exec below
        if (accepted != null) return adopt(accepted, "back-end connected to " + listenPath);
        long left = deadline - System.nanoTime();
        if (left <= 0) {
          throw new SocketTimeoutException(
              "no vhost-user back-end connected to " + listenPath + " within " + timeout);
        }
        sleepNanos(Math.min(pause, left));
        pause = Math.min(pause * 2, MAX_ACCEPT_PAUSE_NANOS);
      }
    } finally {
      closeQuietly(server);
      if (bound) Files.deleteIfExists(listenPath);
    }
  }

  /**
   * A connected socket pair for back-end requests (SET_BACKEND_REQ_FD): {@code ours} reads what the
   * back-end sends ({@link #receiveFrame}) and answers with {@link #sendRaw}; {@code theirs} is the
   * fd to hand over, the caller's to close once sent.
   */
  public record RequestChannel(FrontendChannel ours, Fd theirs) {}

  public static RequestChannel backendRequestChannel() throws IOException {
    // socketpair(2) through jnr-posix, not UnixSocketChannel.pair(): the back-end's end must be a
    // plain fd this side closes after sending, and closing a jnr channel shuts the socket down.
    int[] fds = new int[2];
    if (POSIX.socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) {
      throw new IOException(
          "socketpair for the back-end request channel: " + describe(POSIX.errno()));
    }
    Fd theirs = Fd.adopt(fds[1]);
    UnixSocketChannel ours = UnixSocketChannel.fromFD(fds[0]);
    try {
      setCloseOnExec(fds[1]);
      return new RequestChannel(adopt(ours, "back-end request channel"), theirs);
    } catch (IOException | RuntimeException e) {
      closeQuietly(ours);
      theirs.close();
      throw e;
    }
  }

  // ---- sending ----

  /**
   * Sends {@code request} with {@code payload}, NEED_REPLY if asked, and {@code fds} attached (the
   * fds stay the caller's). Checks the request's layout and fd count first: use {@link #sendRaw}
   * for malformed messages.
   *
   * @throws IllegalArgumentException when the payload is not the request's layout or the number of
   *     fds is not what the request takes
   * @throws ClosedByPeer when the back-end closed the connection
   * @throws IOException when sending fails otherwise, or the back-end does not read within {@link
   *     #DEFAULT_SEND_TIMEOUT}
   */
  public void send(FrontendRequest request, Payload payload, boolean needReply, Fd... fds)
      throws IOException {
    FdRule rule = request.fds();
    if (request.payload().accepts(payload)
        && (fds.length < rule.min(payload) || fds.length > rule.max(payload))) {
      throw new IllegalArgumentException(
          request.label()
              + " takes "
              + rule.min(payload)
              + (rule.min(payload) == rule.max(payload) ? "" : " to " + rule.max(payload))
              + " fds, not "
              + fds.length);
    }
    ByteBuf message = Unpooled.buffer(Header.SIZE + payload.size());
    try {
      Requests.encode(message, request, payload, needReply);
      byte[] bytes = new byte[message.readableBytes()];
      message.readBytes(bytes);
      transmit(bytes, numbers(fds), request.label());
    } finally {
      message.release();
    }
  }

  /** {@link #send} for a request without payload (SET_OWNER, GET_FEATURES, ...). */
  public void send(FrontendRequest request, boolean needReply) throws IOException {
    send(request, Empty.INSTANCE, needReply);
  }

  /**
   * Sends {@code bytes} as they are, with {@code fds} attached to the first byte, and checks
   * nothing: for probing how a back-end copes with malformed input (a truncated header, a size over
   * the bound, more fds than any request takes, half a message before a close).
   *
   * @throws IllegalArgumentException for fds without a byte to carry them, or more than {@link
   *     #MAX_RAW_FDS}
   */
  public void sendRaw(byte[] bytes, Fd... fds) throws IOException {
    if (fds.length > MAX_RAW_FDS) {
      throw new IllegalArgumentException(
          fds.length + " fds in one message; the kernel takes at most " + MAX_RAW_FDS);
    }
    if (fds.length > 0 && bytes.length == 0) {
      // A stream socket sends nothing for no bytes, and the fds would vanish with it.
      throw new IllegalArgumentException("fds need at least one byte to travel with");
    }
    if (bytes.length == 0) return;
    transmit(bytes, numbers(fds), "raw message");
  }

  private void transmit(byte[] bytes, int[] fds, String what) throws IOException {
    synchronized (sendLock) {
      ensureOpen();
      if (sendBuffer.capacity() < bytes.length) {
        sendBuffer = ByteBuffer.allocateDirect(bytes.length);
      }
      ByteBuffer data = sendBuffer.clear().put(bytes).flip();
      int sent = 0;
      boolean withFds = fds.length > 0;
      while (sent < bytes.length) {
        int n = sendOnce(data.slice(sent, bytes.length - sent), withFds ? fds : new int[0]);
        if (n >= 0) {
          sent += n;
          withFds = false; // the fds went with the first byte
          continue;
        }
        int errno = -n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          throw new SocketTimeoutException(
              "sending "
                  + what
                  + " to the "
                  + peer
                  + ": it has not read for "
                  + DEFAULT_SEND_TIMEOUT.toSeconds()
                  + " s (its socket buffer is full)");
        }
        if (errno == EPIPE || errno == ECONNRESET) {
          throw new ClosedByPeer(
              "sending "
                  + what
                  + ": the "
                  + peer
                  + " closed the connection ("
                  + sent
                  + " of "
                  + bytes.length
                  + " bytes sent)");
        }
        throw new IOException("sending " + what + " to the " + peer + ": " + describe(errno));
      }
    }
  }

  /** One sendmsg(2); the bytes sent, or minus errno. */
  private int sendOnce(ByteBuffer data, int[] fds) {
    MsgHdr message = POSIX.allocateMsgHdr();
    Object iov = setIov(message, data);
    CmsgHdr control = null;
    if (fds.length > 0) {
      control = message.allocateControl(Integer.BYTES * fds.length);
      control.setLevel(SOL_SOCKET);
      control.setType(SCM_RIGHTS);
      ByteBuffer numbers =
          ByteBuffer.allocate(Integer.BYTES * fds.length).order(ByteOrder.nativeOrder());
      for (int number : fds) numbers.putInt(number);
      control.setData(numbers.flip());
    }
    int n = POSIX.sendmsg(fd, message, MSG_NOSIGNAL);
    int result = n >= 0 ? n : -POSIX.errno();
    // msghdr holds only the addresses of the data, the iovec and the control block: keep their
    // owners alive until the call has returned.
    Reference.reachabilityFence(data);
    Reference.reachabilityFence(iov);
    Reference.reachabilityFence(control);
    Reference.reachabilityFence(message);
    return result;
  }

  // ---- receiving ----

  /**
   * Reads the reply to {@code sent} and checks it: flags exactly 0x5, the same request code, a size
   * within the bound, and the payload and fds the reply to that request carries. The returned
   * message owns the fds that came with it: close it.
   *
   * @throws SocketTimeoutException when no whole reply arrived within {@code timeout}
   * @throws ClosedByPeer when the back-end closed the connection (before or during the reply)
   * @throws IOException when the reply is not a valid reply to {@code sent} (its {@link
   *     ProtocolException} is the cause; the message has been read, so the next can follow)
   */
  public Message<FrontendRequest> receiveReply(FrontendRequest sent, Duration timeout)
      throws IOException {
    Frame frame = receive("the reply to " + sent.label(), timeout);
    try {
      return Replies.decode(
          sent, frame.header(), Unpooled.wrappedBuffer(frame.payload()), frame.fds());
    } catch (ProtocolException e) {
      throw new IOException(
          "the " + peer + " sent an invalid reply to " + sent.label() + ": " + e.getMessage(), e);
    }
  }

  /** {@link #receiveReply(FrontendRequest, Duration)} with {@link #replyTimeout()}. */
  public Message<FrontendRequest> receiveReply(FrontendRequest sent) throws IOException {
    return receiveReply(sent, replyTimeout);
  }

  /**
   * One message as it came: the header, as many payload bytes as it announces, and the fds that
   * came with them (owned: close the frame). Only the size is checked (at most {@link
   * Header#MAX_PAYLOAD}, or the message boundaries would be lost).
   */
  public record Frame(Header header, byte[] payload, List<Fd> fds) implements AutoCloseable {
    public Frame {
      fds = List.copyOf(fds);
    }

    /** Closes the fds. */
    @Override
    public void close() {
      fds.forEach(Fd::close);
    }
  }

  /**
   * Reads the next message unchecked (but for its size): for a reply that {@link #receiveReply}
   * cannot name, such as the failure reply to an unknown request code.
   *
   * @throws SocketTimeoutException when no whole message arrived within {@code timeout}
   * @throws ClosedByPeer when the back-end closed the connection
   */
  public Frame receiveFrame(Duration timeout) throws IOException {
    return receive("a message", timeout);
  }

  private Frame receive(String what, Duration timeout) throws IOException {
    synchronized (receiveLock) {
      ensureReadable();
      long deadline = System.nanoTime() + timeout.toNanos();
      List<Fd> fds = new ArrayList<>(0);
      boolean returned = false;
      try {
        ByteBuffer headerBytes = receiveBuffer.slice(0, Header.SIZE);
        readFully(headerBytes, fds, deadline, what, timeout, true);
        Header header;
        try {
          header = Header.read(Unpooled.wrappedBuffer(headerBytes.flip()));
        } catch (ProtocolException e) {
          throw new AssertionError("12 bytes are a header", e);
        }
        if (header.payloadSize() > Header.MAX_PAYLOAD) {
          unusable =
              what
                  + " announced "
                  + header.payloadSize()
                  + " payload bytes (at most "
                  + Header.MAX_PAYLOAD
                  + ")";
          throw new IOException("the " + peer + " sent " + unusable);
        }
        ByteBuffer payload = receiveBuffer.slice(Header.SIZE, header.size());
        readFully(payload, fds, deadline, what, timeout, false);
        byte[] bytes = new byte[header.size()];
        payload.flip().get(bytes);
        Frame frame = new Frame(header, bytes, fds);
        returned = true;
        return frame;
      } finally {
        if (!returned) fds.forEach(Fd::close);
      }
    }
  }

  /**
   * Reads exactly the buffer's remaining bytes, adding the fds that come along to {@code fds}.
   * Nothing is read past it, so a message's fds are never mistaken for the next one's.
   */
  private void readFully(
      ByteBuffer into,
      List<Fd> fds,
      long deadline,
      String what,
      Duration timeout,
      boolean startOfMessage)
      throws IOException {
    while (into.hasRemaining()) {
      ensureOpen(); // closed from another thread while this one waited
      long left = deadline - System.nanoTime();
      boolean nothingYet = startOfMessage && into.position() == 0;
      // Past the deadline, one last look without waiting: bytes already there are not late just
      // because this thread ran late.
      int flags = left > 0 ? 0 : MSG_DONTWAIT;
      if (left > 0) setReceiveTimeout(left);
      int n = receiveOnce(into.slice(), fds, flags);
      if (n > 0) {
        into.position(into.position() + n);
      } else if (n == 0 || n == -ECONNRESET) {
        ensureOpen(); // our own close() ends the stream too
        if (!nothingYet) unusable = "the connection ended in the middle of " + what;
        throw new ClosedByPeer(
            "the "
                + peer
                + " closed the connection "
                + (nothingYet ? "instead of sending " : "in the middle of ")
                + what);
      } else if (n != -EINTR && n != -EAGAIN) {
        throw new IOException("reading " + what + " from the " + peer + ": " + describe(-n));
      } else if (n == -EAGAIN && left <= 0) {
        if (!nothingYet) unusable = what + " was cut off by a timeout";
        throw new SocketTimeoutException(
            (nothingYet ? "nothing of " : "only part of ")
                + what
                + " came from the "
                + peer
                + " within "
                + timeout);
      }
      // EAGAIN before the deadline: SO_RCVTIMEO ran out (it rounds); the loop checks the deadline.
    }
  }

  /**
   * One recvmsg(2) into {@code into} (from its position); the fds that came are adopted onto {@code
   * fds} at once. The bytes received, 0 at end of stream, or minus errno.
   *
   * @throws IOException when more fds came than fit (they are closed) or other ancillary data
   */
  private int receiveOnce(ByteBuffer into, List<Fd> fds, int flags) throws IOException {
    MsgHdr message = POSIX.allocateMsgHdr();
    Object iov = setIov(message, into);
    CmsgHdr control = message.allocateControl(Integer.BYTES * MAX_FDS);
    int n = POSIX.recvmsg(fd, message, flags | MSG_CMSG_CLOEXEC);
    int errno = n < 0 ? POSIX.errno() : 0;
    Reference.reachabilityFence(into);
    Reference.reachabilityFence(iov);
    if (n < 0) {
      Reference.reachabilityFence(control);
      return -errno;
    }
    List<Fd> received = new ArrayList<>(0);
    String unexpected = null;
    for (CmsgHdr cmsg : message.getControls()) {
      if (cmsg.getLevel() != SOL_SOCKET || cmsg.getType() != SCM_RIGHTS) {
        unexpected = "level " + cmsg.getLevel() + ", type " + cmsg.getType();
        continue;
      }
      ByteBuffer numbers = cmsg.getData();
      if (numbers == null) continue;
      numbers.order(ByteOrder.nativeOrder());
      while (numbers.remaining() >= Integer.BYTES) received.add(Fd.adopt(numbers.getInt()));
    }
    Reference.reachabilityFence(control);
    if ((message.getFlags() & MSG_CTRUNC) != 0 || unexpected != null) {
      received.forEach(Fd::close);
      unusable = "the reply's ancillary data was refused";
      throw new IOException(
          "the "
              + peer
              + (unexpected != null
                  ? " sent unexpected ancillary data (" + unexpected + ")"
                  : " sent more than " + MAX_FDS + " fds in one message")
              + "; closed every fd that came with it");
    }
    fds.addAll(received);
    return n;
  }

  /**
   * Whether the back-end closed the connection, waiting up to {@code timeout} for it. False while
   * it is open, and also when it sent bytes not yet read (read them first): what follows them
   * cannot be seen without consuming them.
   */
  public boolean isClosedByPeer(Duration timeout) throws IOException {
    return peek(timeout) == Peek.END;
  }

  /**
   * Whether anything arrives within {@code timeout}: bytes to read, or the end of the connection.
   * Consumes nothing. For checking that a request got no reply.
   */
  public boolean awaitInput(Duration timeout) throws IOException {
    return peek(timeout) != Peek.NOTHING;
  }

  private enum Peek {
    NOTHING,
    DATA,
    END
  }

  private Peek peek(Duration timeout) throws IOException {
    synchronized (receiveLock) {
      ensureOpen();
      long deadline = System.nanoTime() + timeout.toNanos();
      ByteBuffer one = receiveBuffer.slice(0, 1);
      while (true) {
        ensureOpen();
        long left = deadline - System.nanoTime();
        if (left > 0) setReceiveTimeout(left);
        // No control buffer: fds queued with the peeked byte stay queued (the kernel installs
        // none for a peek that has no room for them). Past the deadline, a last look without
        // waiting.
        MsgHdr message = POSIX.allocateMsgHdr();
        Object iov = setIov(message, one);
        int n = POSIX.recvmsg(fd, message, MSG_PEEK | (left > 0 ? 0 : MSG_DONTWAIT));
        int errno = n < 0 ? POSIX.errno() : 0;
        Reference.reachabilityFence(one);
        Reference.reachabilityFence(iov);
        if (n > 0) return Peek.DATA;
        if (n == 0 || errno == ECONNRESET) return Peek.END;
        if (errno != EINTR && errno != EAGAIN) {
          throw new IOException("waiting for the " + peer + ": " + describe(errno));
        }
        if (errno == EAGAIN && left <= 0) return Peek.NOTHING;
      }
    }
  }

  /**
   * The back-end closed the connection: found reading (end of stream, or a reset) or writing (a
   * broken pipe). An {@link EOFException}, so that either direction can be caught as one.
   */
  public static final class ClosedByPeer extends EOFException {
    private static final long serialVersionUID = 1L;

    ClosedByPeer(String message) {
      super(message);
    }
  }

  // ---- request and reply ----

  /**
   * Sends {@code request} (no payload) and returns the u64 of its reply: GET_FEATURES,
   * GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, GET_STATUS.
   */
  public long getU64(FrontendRequest request) throws IOException {
    if (request.payload() != PayloadKind.EMPTY || request.replyPayload() != PayloadKind.U64) {
      throw new IllegalArgumentException(request.label() + " is not a u64 query");
    }
    send(request, false);
    try (Message<FrontendRequest> reply = receiveReply(request)) {
      return reply.payload(U64.class).value();
    }
  }

  /**
   * Sends a request whose reply is its own payload (GET_VRING_BASE, GET_CONFIG, ...) and returns
   * the reply, which owns any fds it carries.
   */
  public Message<FrontendRequest> call(FrontendRequest request, Payload payload, Fd... fds)
      throws IOException {
    if (request.replyPayload() == null) {
      throw new IllegalArgumentException(
          request.label() + " has no reply of its own; use ack() for a REPLY_ACK status");
    }
    send(request, payload, false, fds);
    return receiveReply(request);
  }

  /**
   * Sends {@code request} with NEED_REPLY and requires the REPLY_ACK status 0 (the back-end must
   * have negotiated REPLY_ACK, or be one that acknowledges anyway).
   *
   * @throws Refused when the back-end answered with a failure status
   */
  public void ack(FrontendRequest request, Payload payload, Fd... fds) throws IOException {
    if (request.replyPayload() != null) {
      throw new IllegalArgumentException(
          request.label() + " always has a reply of its own; use call()");
    }
    send(request, payload, true, fds);
    try (Message<FrontendRequest> reply = receiveReply(request)) {
      long status = reply.payload(U64.class).value();
      if (status != 0) throw new Refused(request, status, peer);
    }
  }

  /** {@link #ack(FrontendRequest, Payload, Fd...)} for a request without payload. */
  public void ack(FrontendRequest request) throws IOException {
    ack(request, Empty.INSTANCE);
  }

  /** The back-end answered a request with a non-zero REPLY_ACK status. */
  public static final class Refused extends IOException {
    private static final long serialVersionUID = 1L;
    private final transient FrontendRequest request;
    private final long status;

    Refused(FrontendRequest request, long status, String peer) {
      super(
          "the "
              + peer
              + " refused "
              + request.label()
              + " (status "
              + Long.toUnsignedString(status)
              + ")");
      this.request = request;
      this.status = status;
    }

    public FrontendRequest request() {
      return request;
    }

    /** The non-zero status of the reply. */
    public long status() {
      return status;
    }
  }

  // ---- settings and the end ----

  /**
   * The reply timeout of {@link #getU64}, {@link #ack}, {@link #call} and {@link #receiveReply}.
   */
  public Duration replyTimeout() {
    return replyTimeout;
  }

  public void setReplyTimeout(Duration timeout) {
    if (timeout.isNegative() || timeout.isZero()) {
      throw new IllegalArgumentException("reply timeout must be positive: " + timeout);
    }
    this.replyTimeout = timeout;
  }

  public boolean isOpen() {
    return !closed.get();
  }

  /**
   * Shuts the connection down (waking a receive that waits) and closes it. Idempotent; safe from
   * any thread.
   */
  @Override
  public void close() {
    if (!closed.compareAndSet(false, true)) return;
    closeQuietly(channel); // shutdown(2) both ways, then close(2)
  }

  @Override
  public String toString() {
    return "vhost-user frontend channel to the " + peer + (closed.get() ? " (closed)" : "");
  }

  // ---- helpers ----

  private void ensureOpen() throws IOException {
    if (closed.get()) throw new IOException("the channel to the " + peer + " is closed");
  }

  private void ensureReadable() throws IOException {
    ensureOpen();
    if (unusable != null) {
      throw new IOException(
          "the channel to the " + peer + " lost its message boundaries: " + unusable);
    }
  }

  private void setReceiveTimeout(long nanos) throws IOException {
    // SO_RCVTIMEO 0 means forever: never set less than 1 ms.
    int ms = (int) Math.clamp(Math.ceilDiv(nanos, 1_000_000L), 1L, Integer.MAX_VALUE);
    if (ms == receiveTimeoutMillis) return;
    channel.setOption(UnixSocketOptions.SO_RCVTIMEO, ms);
    receiveTimeoutMillis = ms;
  }

  /**
   * Points {@code message} at {@code buffer} (a direct buffer, from its position) and returns what
   * keeps the iovec array alive: jnr-posix allocates that array from a per-thread block of native
   * memory that is freed once no Java object holding an allocation in it is reachable, and keeps
   * only its address (in the msghdr). A one-byte allocation made right after comes from the same
   * block (or the array shares the msghdr's): hold it until the call has returned.
   */
  private static Object setIov(MsgHdr message, ByteBuffer buffer) {
    message.setIov(new ByteBuffer[] {buffer});
    return jnr.ffi.Runtime.getSystemRuntime().getMemoryManager().allocateDirect(1);
  }

  private static int millis(Duration duration) {
    return (int) Math.clamp(duration.toMillis(), 1L, Integer.MAX_VALUE);
  }

  private static int[] numbers(Fd[] fds) {
    int[] numbers = new int[fds.length];
    for (int i = 0; i < fds.length; i++) numbers[i] = fds[i].value();
    return numbers;
  }

  private static void setCloseOnExec(int fd) throws IOException {
    // jnr creates its sockets without SOCK_CLOEXEC; a child process (a VMM, a test helper) must
    // not inherit the connection.
    if (POSIX.fcntlInt(fd, Fcntl.F_SETFD, FD_CLOEXEC) < 0) {
      throw new IOException("fcntl(FD_CLOEXEC) on socket " + fd + ": " + describe(POSIX.errno()));
    }
  }

  private static void removeStale(Path path) throws IOException {
    if (!Files.exists(path, LinkOption.NOFOLLOW_LINKS)) return;
    int mode = (Integer) Files.getAttribute(path, "unix:mode", LinkOption.NOFOLLOW_LINKS);
    if ((mode & S_IFMT) != S_IFSOCK) {
      throw new IOException(path + " exists and is not a socket: remove it or choose another path");
    }
    UnixSocketChannel probe = UnixSocketChannel.open();
    boolean live;
    try {
      // Non-blocking, so that a live listener with a full backlog cannot hold us up.
      probe.configureBlocking(false);
      probe.connect(new UnixSocketAddress(path.toFile()));
      live = true; // connected, or pending: someone listens
    } catch (IOException e) {
      live = false; // refused: nobody listens any more
    } finally {
      closeQuietly(probe);
    }
    if (live) {
      throw new IOException(
          "another process is listening at " + path + ": stop it or choose another path");
    }
    Files.deleteIfExists(path);
  }

  private static void sleepNanos(long nanos) throws InterruptedIOException {
    try {
      Thread.sleep(Duration.ofNanos(nanos));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new InterruptedIOException("interrupted while waiting for a back-end to connect");
    }
  }

  private static void closeQuietly(java.nio.channels.Channel channel) {
    try {
      channel.close();
    } catch (IOException e) {
      // nothing more to release: the fd is gone either way
    }
  }

  private static String describe(int errno) {
    return POSIX.strerror(errno) + " (errno " + errno + ")";
  }
}
