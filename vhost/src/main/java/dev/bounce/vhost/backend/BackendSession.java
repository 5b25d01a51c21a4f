package dev.bounce.vhost.backend;

import static dev.bounce.vhost.protocol.ProtocolFeature.BACKEND_REQ;
import static dev.bounce.vhost.protocol.ProtocolFeature.CONFIG;
import static dev.bounce.vhost.protocol.ProtocolFeature.CONFIGURE_MEM_SLOTS;
import static dev.bounce.vhost.protocol.ProtocolFeature.INBAND_NOTIFICATIONS;
import static dev.bounce.vhost.protocol.ProtocolFeature.MQ;
import static dev.bounce.vhost.protocol.ProtocolFeature.REPLY_ACK;
import static dev.bounce.vhost.protocol.ProtocolFeature.RESET_DEVICE;
import static dev.bounce.vhost.protocol.ProtocolFeature.SHMEM;
import static dev.bounce.vhost.protocol.ProtocolFeature.STATUS;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.Libc;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.Ranges;
import dev.bounce.pool.RestrictedPool;
import dev.bounce.vhost.loop.FdWatch;
import dev.bounce.vhost.protocol.BackendRequest;
import dev.bounce.vhost.protocol.ConfigSpace;
import dev.bounce.vhost.protocol.Empty;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.MemoryTable;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.Payload;
import dev.bounce.vhost.protocol.ProtocolException;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.protocol.Replies;
import dev.bounce.vhost.protocol.Requests;
import dev.bounce.vhost.protocol.ShmemConfig;
import dev.bounce.vhost.protocol.SingleMemoryRegion;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.socket.UnixSocket;
import dev.bounce.vhost.spi.LogBudget;
import dev.bounce.vhost.spi.VirtioDevice;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.virtq.RingAddresses;
import dev.bounce.vhost.virtq.Virtq;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.IoEventLoop;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicIntegerArray;

/**
 * One frontend connection, on the control loop: reads requests, keeps the negotiated state, hands
 * everything that touches rings to the {@link DataPlane}, and answers. The state machine follows
 * vhost-user.rst; where real frontends differ from it, ../shared/reference/REAL-PEERS.md says why
 * we follow them.
 */
public final class BackendSession implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(BackendSession.class.getName());

  /** See {@link #onReadable()}. */
  static final int MESSAGES_PER_WAKEUP = 64;

  /**
   * Protocol features bounce always offers; a device-owned pool adds SHMEM ({@link
   * RestrictedDma#offeredProtocolFeatures}). REPLY_ACK and BACKEND_REQ are what QEMU's
   * iommu_platform=on demands beside VIRTIO_F_ACCESS_PLATFORM (REAL-PEERS.md). INBAND_NOTIFICATIONS
   * lets a ring's guest error reach a frontend that gave no error eventfd.
   */
  public static final long OFFERED_PROTOCOL_FEATURES =
      ProtocolFeature.maskOf(
          MQ,
          REPLY_ACK,
          BACKEND_REQ,
          CONFIG,
          RESET_DEVICE,
          INBAND_NOTIFICATIONS,
          CONFIGURE_MEM_SLOTS,
          STATUS);

  /** Ring features the engine offers for every device. */
  static final long ENGINE_FEATURES =
      VirtioFeatures.bit(VirtioFeatures.VERSION_1)
          | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES)
          | VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC)
          | VirtioFeatures.bit(VirtioFeatures.EVENT_IDX);

  /** Virtio 1.2 section 2.1: the device status bit the device clears to refuse the features. */
  private static final long FEATURES_OK = 0x8;

  /**
   * A --pool-from-table region larger than this is worth a warning: restricted pools are tens of
   * MiB (a swiotlb region, a DT restricted-dma-pool), so a frontend sharing one region this large
   * is more likely sharing all of guest RAM, which the flag would then hand to bounce unrestricted.
   */
  static final long LARGE_POOL_FROM_TABLE = 1L << 30;

  private final String name;
  private final UnixSocket socket;
  private final VirtioDevice device;
  private final DataPlane data;
  private final RestrictedDma dma;
  private final long maxGuestMemory;
  private final DevicePool devicePool;
  private boolean devicePoolSent;
  private final Runnable onClose;
  private final IoEventLoop controlLoop;
  private final MessageReader reader;
  private final ByteBuf out; // native memory: allocated last in the constructor, released in close
  private FdWatch watch;
  private boolean owner;
  private boolean warnedNoOwner;
  private long ackedFeatures;
  private long ackedProtocolFeatures;
  private long status;
  private boolean refused;
  private boolean warnedRingsRefused;
  // The lines a frontend can repeat at will, one budget per kind: a flood of malformed requests
  // does not hide a refused SET_FEATURES, nor a reset loop either.
  private final LogBudget malformedLines = new LogBudget();
  private final LogBudget failedLines = new LogBudget();
  // The server's, shared by its sessions one after another: a VMM reconnecting in a loop cannot
  // flood the log with each session's lines any more than with its own resets and tables.
  private final LogBudget lifecycleLines;
  private final LogBudget poolMismatchLines = new LogBudget(); // rarer than the table it follows
  private boolean warnedNoBackendChannel;
  private boolean warnedMemoryIgnored;
  private BackendChannel backendChannel;
  // Control loop only: the ring notices (bits as in noticesQueued) and the config change that met
  // a full backend channel; each covers the ones after it, and goes once the frontend has read.
  private final int[] noticesWaiting;
  private boolean configChangeWaiting;
  private boolean closed;
  private volatile String failure;

  /** Per ring, a VRING_CALL (bit 1) and a VRING_ERR (bit 2) queued on the control loop. */
  private final AtomicIntegerArray noticesQueued;

  private BackendSession(
      String name,
      UnixSocket socket,
      BackendServer.Config config,
      LogBudget lifecycleLines,
      DevicePool devicePool,
      GuestAddressSpace memory,
      Runnable onClose) {
    this.name = name;
    this.socket = socket;
    this.device = config.device();
    this.dma = config.restrictedDma();
    this.maxGuestMemory = config.maxGuestMemory();
    this.lifecycleLines = lifecycleLines;
    this.devicePool = devicePool;
    this.controlLoop = config.controlLoop();
    this.data =
        new DataPlane(
            config.dataLoop(),
            device,
            name,
            memory,
            config.ringPolling(),
            this::configChanged,
            index -> sendVringNotice(BackendRequest.VRING_CALL, index),
            index -> sendVringNotice(BackendRequest.VRING_ERR, index));
    this.onClose = onClose;
    this.reader = new MessageReader(socket, Header.MAX_PAYLOAD);
    this.noticesQueued = new AtomicIntegerArray(device.queueCount());
    this.noticesWaiting = new int[device.queueCount()];
    // Last: a constructor that throws before here (a device the engine cannot serve) has nothing
    // of its own to release.
    this.out = Unpooled.directBuffer(Header.SIZE + Header.MAX_PAYLOAD);
  }

  /**
   * Serves {@code socket} from now on; {@code onClose} runs (on the control loop) once the frontend
   * is gone and everything it gave has been released. With a {@link RestrictedDma.DeviceOwned}
   * pool, the session creates its own pool memfd (a fresh one per connection, so nothing of one
   * guest reaches the next). Memory the frontend shares beyond the config's {@code maxGuestMemory}
   * bytes mapped is refused.
   */
  public static BackendSession start(
      String name,
      UnixSocket socket,
      BackendServer.Config config,
      LogBudget lifecycleLines,
      Runnable onClose)
      throws NativeException {
    nonBlocking(socket);
    RestrictedDma dma = config.restrictedDma();
    DevicePool devicePool =
        dma.pool() instanceof RestrictedDma.DeviceOwned(long size) ? DevicePool.create(size) : null;
    BackendSession session;
    GuestAddressSpace memory = null;
    try {
      memory = devicePool != null ? devicePool.memory() : dma.emptyMemory();
      session =
          new BackendSession(name, socket, config, lifecycleLines, devicePool, memory, onClose);
    } catch (NativeException | RuntimeException e) {
      if (memory != null) memory.close();
      if (devicePool != null) devicePool.close();
      throw e;
    }
    if (dma.enabled()) lifecycleLines.log(LOG, Level.INFO, () -> name + ": " + dma);
    session.controlLoop.execute(
        () -> {
          // drain() may have ended the session already (a frontend that connected and closed)
          if (session.closed) return;
          try {
            session.watch = FdWatch.start(session.controlLoop, socket.fd(), session::onReadable);
          } catch (RuntimeException e) { // epoll_ctl refused (ENOMEM, max_user_watches)
            LOG.log(Level.WARNING, "{0}: cannot watch the connection: {1}; closing it", name, e);
            session.close();
          }
        });
    return session;
  }

  // ---- reading ----

  /**
   * Reads what the frontend has sent so far, now; on the control loop. The server calls it when
   * another frontend connects while this one is served: one that has closed its end already (a
   * quick reconnect) ends here, instead of making the newcomer look like a second frontend.
   */
  void drain() {
    if (closed) return;
    read(MESSAGES_PER_WAKEUP);
    // Its end of stream may lie behind more than a wake-up's worth of requests (a frontend that
    // flooded, then closed), which nobody waits for any more; reading them all here would let a
    // frontend that floods and connects again hold the control loop.
    if (!closed && hungUp()) {
      lifecycleLines.log(LOG, Level.INFO, () -> name + ": the frontend disconnected");
      close();
    }
  }

  private boolean hungUp() {
    try {
      return Libc.hungUp(socket.fd().value());
    } catch (NativeException e) {
      return true;
    }
  }

  /**
   * The socket is readable: at most {@link #MESSAGES_PER_WAKEUP} messages, so that a frontend that
   * floods requests leaves the control loop to the other sessions in between. The watch is
   * level-triggered, and the reader takes no byte past the message it completes, so the loop comes
   * back for the rest.
   */
  private void onReadable() {
    read(MESSAGES_PER_WAKEUP);
  }

  private void read(int messages) {
    try {
      MessageReader.Frame frame;
      for (int n = 0; n < messages && !closed && (frame = reader.read()) != null; n++) {
        handle(frame);
      }
    } catch (MessageReader.EndOfStream e) {
      lifecycleLines.log(LOG, Level.INFO, () -> name + ": " + e.getMessage());
      close();
    } catch (IOException | ProtocolException e) {
      LOG.log(Level.WARNING, "{0}: closing the connection: {1}", name, e.getMessage());
      failure = e.getMessage();
      close();
    }
  }

  /** A warning about the frontend's requests, within the {@link LogBudget} of its kind. */
  private void warn(LogBudget kind, String line) {
    kind.log(LOG, Level.WARNING, () -> name + ": " + line);
  }

  /** Why bounce ended the connection (the frontend broke the protocol), or null. */
  public String failure() {
    return failure;
  }

  private void handle(MessageReader.Frame frame) throws IOException, ProtocolException {
    Header header = Header.read(Unpooled.wrappedBuffer(frame.header().asByteBuffer()));
    Message<FrontendRequest> message;
    try {
      message =
          Requests.decode(
              header, Unpooled.wrappedBuffer(frame.payload().asByteBuffer()), frame.fds());
    } catch (ProtocolException e) {
      // ARCHITECTURE.md, "Errors": a failure reply where the frontend asked for one. An unknown
      // request without NEED_REPLY asks nothing of us: a log line, and the connection goes on
      // (issue 3). Any other malformed request ends the connection: dropping it quietly would
      // leave a frontend waiting forever for the reply it expects (GET_FEATURES with bad flags or
      // a stray fd), or going on with state the backend does not share (a SET_VRING_KICK refused).
      boolean unknown = e.kind() == ProtocolException.Kind.UNKNOWN_REQUEST;
      if (!e.framingIntact() || !(e.replyExpected() || unknown)) throw e;
      warn(malformedLines, "refused a malformed request: " + e.getMessage());
      if (e.replyExpected()) reply(() -> Replies.ack(out, header.request(), false));
      return;
    }
    try (message) {
      LOG.log(Level.DEBUG, "{0}: {1}", name, message.describe());
      dispatch(message);
    }
  }

  private void dispatch(Message<FrontendRequest> message) throws IOException {
    FrontendRequest request = message.request();
    boolean ownReply = request.replyPayload() != null;
    try {
      checkOwner(request);
      serve(message);
      if (!ownReply && message.needsReply()) reply(() -> Replies.ack(out, request.code(), true));
    } catch (RequestFailed | RuntimeException e) {
      String why = e instanceof RequestFailed ? e.getMessage() : e.toString();
      warn(failedLines, message.describe() + " failed: " + why);
      // A reply of its own that is a u64 status says the failure (whether or not NEED_REPLY was
      // set: the frontend waits for it anyway). Any other has no failure form (vhost-user.rst:
      // REPLY_ACK changes nothing for it), and a u64 in its place would be read as that reply:
      // the connection ends.
      if (request.replyIsStatus()) {
        reply(() -> Replies.ack(out, request.code(), false));
      } else if (ownReply) {
        throw new IOException(request.label() + " failed and has no way to say so: " + why);
      } else if (message.needsReply()) {
        reply(() -> Replies.ack(out, request.code(), false));
      }
    } catch (Exception e) {
      throw new IOException(request.label() + ": " + e.getMessage(), e);
    }
  }

  /**
   * vhost-user.rst wants SET_OWNER first, but a reconnecting DPDK frontend never resends it
   * (REAL-PEERS.md): serve it, and say so once.
   */
  private void checkOwner(FrontendRequest request) {
    if (owner || warnedNoOwner) return;
    switch (request) {
      case GET_FEATURES,
          GET_PROTOCOL_FEATURES,
          SET_PROTOCOL_FEATURES,
          GET_QUEUE_NUM,
          // QEMU 7.2 with BACKEND_REQ sends it before SET_OWNER (qemu72-vsock-mmio-arm64 recording)
          SET_BACKEND_REQ_FD,
          SET_OWNER -> {}
      default -> {
        warnedNoOwner = true;
        LOG.log(
            Level.INFO,
            "{0}: {1} before SET_OWNER; serving it (a reconnecting DPDK frontend does this)",
            name,
            request.label());
      }
    }
  }

  // ---- the requests ----

  private void serve(Message<FrontendRequest> m) throws Exception {
    switch (m.request()) {
      case GET_FEATURES -> replyU64(m, offeredFeatures());
      case SET_FEATURES -> setFeatures(m.payload(U64.class).value());
      case GET_PROTOCOL_FEATURES -> replyU64(m, offeredProtocolFeatures());
      case SET_PROTOCOL_FEATURES -> setProtocolFeatures(m.payload(U64.class).value());
      case SET_OWNER -> owner = true;
      case RESET_OWNER, RESET_DEVICE -> resetDevice(m.request());
      case GET_QUEUE_NUM -> replyU64(m, device.queueCount());
      case GET_MAX_MEM_SLOTS -> replyU64(m, GuestAddressSpace.MAX_REGIONS);
      case SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG -> {
        if (devicePool != null) ignoreMemory(m.request());
        else if (m.request() == FrontendRequest.SET_MEM_TABLE) setMemTable(m);
        else if (m.request() == FrontendRequest.ADD_MEM_REG) addMemoryRegion(m);
        else removeMemoryRegion(m.payload(SingleMemoryRegion.class).region());
      }
      case SET_VRING_NUM -> setVringNum(m.payload(VringState.class));
      case SET_VRING_ADDR -> setVringAddr(m.payload(VringAddress.class));
      case SET_VRING_BASE -> setVringBase(m.payload(VringState.class));
      case GET_VRING_BASE -> getVringBase(m);
      case SET_VRING_KICK -> setVringKick(m);
      case SET_VRING_CALL -> {
        int index = vringIndex(m);
        EventFd call = eventFd(m);
        data.run(() -> data.setCall(index, call));
      }
      case SET_VRING_ERR -> {
        int index = vringIndex(m);
        EventFd err = eventFd(m);
        data.run(() -> data.setErr(index, err));
      }
      case VRING_KICK -> vringKick(m.payload(VringState.class));
      case SET_VRING_ENABLE -> {
        VringState state = m.payload(VringState.class);
        int index = checkIndex(state.index());
        data.run(() -> data.setEnabled(index, state.num() != 0));
      }
      case GET_CONFIG -> getConfig(m.payload(ConfigSpace.class));
      case SET_CONFIG -> setConfig(m.payload(ConfigSpace.class));
      case SET_STATUS -> setStatus(m.payload(U64.class).value());
      case GET_STATUS -> replyU64(m, status);
      case SET_BACKEND_REQ_FD -> {
        // Kept open for the session: QEMU reads end-of-file on it as the backend going away.
        if (backendChannel != null) {
          backendChannel.close();
          backendChannel = null; // also when the new one cannot be adopted
        }
        backendChannel = BackendChannel.adopt(m.takeFd(0), controlLoop);
        if (devicePool != null && negotiated(SHMEM)) sendDevicePool();
        sendWaiting(); // what waited for the channel before
      }
      case GET_SHMEM_CONFIG -> {
        ShmemConfig config =
            devicePool != null && negotiated(SHMEM)
                ? devicePool.config()
                : new ShmemConfig(List.of());
        reply(() -> Replies.shmemConfig(out, config));
      }
      default ->
          throw new RequestFailed(
              m.request().label() + " is not supported by this backend (not negotiated)");
    }
  }

  /**
   * The control loop must never wait on a frontend's socket: both of its sockets get O_NONBLOCK.
   */
  private static UnixSocket nonBlocking(UnixSocket socket) throws NativeException {
    Libc.setNonBlocking(socket.fd().value());
    return socket;
  }

  private long offeredFeatures() {
    return device.deviceFeatures() | ENGINE_FEATURES | dma.offeredFeatures();
  }

  private long offeredProtocolFeatures() {
    return OFFERED_PROTOCOL_FEATURES | dma.offeredProtocolFeatures();
  }

  private void setFeatures(long features) throws Exception {
    String refusal = featureRefusal(features);
    refused = refusal != null;
    if (refused) {
      // RESTRICTED-DMA.md, "Policy": refused features are never applied, so the device is not
      // active (no longer, if an earlier driver's features were accepted) and no ring runs;
      // FEATURES_OK stays clear from now on.
      ackedFeatures = 0;
      status &= ~FEATURES_OK;
      data.run(data::deactivate);
      throw new RequestFailed(refusal);
    }
    ackedFeatures = features;
    // vhost-user.rst: without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled from the start.
    boolean enableAll = !VirtioFeatures.has(features, VirtioFeatures.PROTOCOL_FEATURES);
    data.run(() -> data.setFeatures(features, enableAll));
  }

  /** Why the driver's {@code features} cannot be served, or null. */
  private String featureRefusal(long features) {
    long unknown = features & ~offeredFeatures();
    if (unknown != 0) {
      return "the driver accepted features 0x"
          + Long.toHexString(unknown)
          + " that were not offered";
    }
    String refusal = dma.refusal(features);
    if (refusal == null && devicePool != null && !devicePoolSent) {
      // Its memory table is never mapped and its ring addresses would be read as offsets into a
      // pool it never received: nothing it does could work. A frontend that set up its backend
      // channel before negotiating SHMEM gets the pool now.
      if (negotiated(SHMEM) && backendChannel != null) sendDevicePool();
      if (!devicePoolSent) {
        refusal =
            "refusing the frontend: bounce owns the pool (--device-pool) but the frontend"
                + (!negotiated(SHMEM)
                    ? " did not negotiate VHOST_USER_PROTOCOL_F_SHMEM, so it cannot receive it"
                    : backendChannel == null
                        ? " gave no backend channel (SET_BACKEND_REQ_FD) to receive it on"
                        : " has not read its backend channel, which is full, so it could not be"
                            + " sent")
                + "; run bounce with --pool GPA:SIZE for this VMM";
      }
    }
    return refusal;
  }

  private void setProtocolFeatures(long features) throws Exception {
    long unknown = features & ~offeredProtocolFeatures();
    if (unknown != 0) {
      throw new RequestFailed(
          "protocol features " + ProtocolFeature.describe(unknown) + " were not offered");
    }
    // vhost-user.rst, "In-band notifications": the feature without BACKEND_REQ (the channel the
    // calls travel on) and REPLY_ACK is an error the backend can only answer by closing.
    long needed = ProtocolFeature.maskOf(BACKEND_REQ, REPLY_ACK);
    if ((features & INBAND_NOTIFICATIONS.mask()) != 0 && (features & needed) != needed) {
      throw new IOException(
          "INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK too; the frontend set "
              + ProtocolFeature.describe(features));
    }
    ackedProtocolFeatures = features;
    data.run(() -> data.setInBandNotifications(inBandNotifications()));
  }

  private void resetDevice(FrontendRequest request) throws Exception {
    lifecycleLines.log(
        LOG, Level.INFO, () -> name + ": " + request.label() + ": resetting the device");
    data.run(data::reset);
    ackedFeatures = 0;
    status = 0;
    refused = false;
    warnedRingsRefused = false;
    if (request == FrontendRequest.RESET_OWNER) owner = false;
  }

  /**
   * Virtio 1.2 section 3.1.1 step 5-6: the driver sets FEATURES_OK and re-reads the status; a
   * device that refuses the features leaves the bit clear. GET_STATUS answers with what is kept.
   */
  private void setStatus(long value) {
    status = value & 0xff;
    if (refused) status &= ~FEATURES_OK;
  }

  /**
   * With a device-owned pool the frontend's memory is never mapped: every address is an offset into
   * the pool (DevicePool), and mapping guest RAM would defeat the point. The fds close with the
   * message.
   */
  private void ignoreMemory(FrontendRequest request) {
    if (warnedMemoryIgnored) return;
    warnedMemoryIgnored = true;
    LOG.log(
        Level.INFO,
        "{0}: {1}: not mapping the frontend''s memory; the device owns the pool and addresses are"
            + " offsets into it",
        name,
        request.label());
  }

  /** BACKEND_SHMEM_MAP of the device pool; see {@link #sendToFrontend} for why no reply. */
  private void sendDevicePool() {
    devicePoolSent =
        sendToFrontend(BackendRequest.SHMEM_MAP, devicePool.mapping(), devicePool.fd())
            == BackendChannel.Sent.SENT;
    if (!devicePoolSent) return;
    LOG.log(
        Level.INFO,
        "{0}: handed the device pool to the frontend (BACKEND_SHMEM_MAP, shmid {1}, {2} bytes)",
        name,
        DevicePool.SHMID,
        devicePool.size());
  }

  /** The memory a memory table starts from: the configured pool, or the table's one region. */
  private GuestAddressSpace startingMemory(List<MemoryRegionDescription> regions)
      throws RequestFailed {
    if (!(dma.pool() instanceof RestrictedDma.SharedRegion)) return dma.emptyMemory();
    if (regions.size() != 1) {
      throw new RequestFailed(
          "the memory table has "
              + regions.size()
              + " regions, but --pool-from-table needs exactly one, the pool (a Firecracker-style"
              + " frontend that shares only its swiotlb region); give --pool GPA:SIZE instead");
    }
    MemoryRegionDescription pool = regions.getFirst();
    GuestAddressSpace memory;
    try {
      memory = RestrictedPool.at(pool.guestAddress(), pool.size());
    } catch (IllegalArgumentException e) {
      throw new RequestFailed("the one region cannot be the pool: " + e.getMessage());
    }
    if (Long.compareUnsigned(pool.size(), LARGE_POOL_FROM_TABLE) > 0) {
      LOG.log(
          Level.WARNING,
          "{0}: --pool-from-table took the frontend''s one region, {1} MiB at guest 0x{2}, as the"
              + " pool; restricted pools are usually tens of MiB, so this frontend may be sharing"
              + " all of guest RAM, which bounce can then reach; give --pool GPA:SIZE to name the"
              + " pool",
          name,
          String.valueOf(pool.size() >>> 20),
          Long.toHexString(pool.guestAddress()));
    }
    return memory;
  }

  private void setMemTable(Message<FrontendRequest> m) throws Exception {
    List<MemoryRegionDescription> regions = m.payload(MemoryTable.class).regions();
    GuestAddressSpace next = startingMemory(regions);
    withinCap("the memory table", next, regions); // next holds nothing yet: nothing to close
    try {
      for (int i = 0; i < regions.size(); i++) next = next.withRegion(regions.get(i), m.takeFd(i));
    } catch (NativeException | RuntimeException e) {
      next.close();
      throw new RequestFailed("cannot map the memory table: " + e.getMessage());
    }
    replaceMemory(next);
  }

  private void addMemoryRegion(Message<FrontendRequest> m) throws Exception {
    MemoryRegionDescription region = m.payload(SingleMemoryRegion.class).region();
    GuestAddressSpace base = data.memory();
    if (dma.pool() instanceof RestrictedDma.SharedRegion) {
      if (base.regionCount() != 0) {
        throw new RequestFailed(
            "cannot add "
                + region
                + ": --pool-from-table takes the frontend's one region as the pool, and it has"
                + " one already");
      }
      base = startingMemory(List.of(region));
    }
    withinCap("adding " + region, base, List.of(region));
    GuestAddressSpace next;
    try {
      next = base.withRegion(region, m.takeFd(0));
    } catch (NativeException | IllegalArgumentException e) {
      throw new RequestFailed("cannot add " + region + ": " + e.getMessage());
    }
    replaceMemory(next);
  }

  private void removeMemoryRegion(MemoryRegionDescription region) throws Exception {
    if (data.call(() -> data.ringUses(region.userAddress(), region.size()))) {
      throw new RequestFailed("cannot remove " + region + ": a running ring lies in it");
    }
    GuestAddressSpace next;
    try {
      next = data.memory().withoutRegion(region);
    } catch (IllegalArgumentException e) {
      throw new RequestFailed(e.getMessage());
    }
    replaceMemory(next);
  }

  /**
   * Refuses {@code regions} added to {@code base} when this session would then map more than its
   * cap, before anything is mapped: a frontend's memfds cost it nothing until touched, so without a
   * cap one frontend could fill the daemon's address space, and every session would fail with it
   * (ARCHITECTURE.md, "Errors": no unbounded allocation driven by frontend input).
   */
  private void withinCap(String what, GuestAddressSpace base, List<MemoryRegionDescription> regions)
      throws RequestFailed {
    long after = base.mappedBytesWith(regions);
    if (after <= maxGuestMemory) return;
    throw new RequestFailed(
        what
            + " would map "
            + Ranges.describeSize(after)
            + " of guest memory, over this session's cap of "
            + Ranges.describeSize(maxGuestMemory)
            + "; refused, the "
            + Ranges.describeSize(data.memory().mappedBytes())
            + " mapped now stay. A guest this large needs bounce started with --max-guest-memory"
            + " SIZE");
  }

  /**
   * Puts {@code next} in place under the rings, then unmaps what the old table had and it has not.
   */
  private void replaceMemory(GuestAddressSpace next) throws Exception {
    GuestAddressSpace old = data.memory();
    data.run(() -> data.replaceMemory(next));
    old.retire(next);
    lifecycleLines.log(LOG, Level.INFO, () -> name + ": memory is now " + next);
    if (next instanceof RestrictedPool pool && next.regionCount() > 0 && !pool.isFullyShared()) {
      boolean none = pool.mapped().regionCount() == 0;
      poolMismatchLines.log(
          LOG,
          Level.WARNING,
          () ->
              name
                  + ": the frontend shares "
                  + (none ? "none" : "only part")
                  + " of the restricted pool "
                  + pool
                  + ": the pool given to bounce and the memory the VMM shares disagree; "
                  + (none ? "every address" : "addresses in the holes")
                  + " will be refused");
    }
  }

  private void setVringNum(VringState state) throws Exception {
    int index = checkIndex(state.index());
    if (state.num() > Virtq.MAX_QUEUE_SIZE) {
      throw new RequestFailed("ring " + index + ": size " + state.num() + " is over 32768");
    }
    data.run(() -> data.setSize(index, (int) state.num()));
  }

  private void setVringAddr(VringAddress address) throws Exception {
    int index = checkIndex(address.index());
    RingAddresses addresses =
        new RingAddresses(
            address.descriptor(),
            address.available(),
            address.used(),
            AddressKind.FRONTEND_VIRTUAL);
    data.run(() -> data.setAddresses(index, addresses));
  }

  private void setVringBase(VringState state) throws Exception {
    int index = checkIndex(state.index());
    if (state.num() > 0xffff) {
      throw new RequestFailed("ring " + index + ": base " + state.num() + " is over 65535");
    }
    data.run(() -> data.setBase(index, (int) state.num()));
  }

  /** The number in the request is junk (REAL-PEERS.md): only the index counts. */
  private void getVringBase(Message<FrontendRequest> m) throws Exception {
    int index = checkIndex(m.payload(VringState.class).index());
    int base = data.call(() -> data.stop(index));
    reply(() -> Replies.vringBase(out, new VringState(index, base)));
  }

  private void setVringKick(Message<FrontendRequest> m) throws Exception {
    int index = vringIndex(m);
    EventFd kick = eventFd(m);
    if (kick == null) {
      throw new RequestFailed(
          "ring "
              + index
              + ": polling without a kick eventfd is not supported; send an eventfd (or, with"
              + " INBAND_NOTIFICATIONS and BACKEND_REQ, leave SET_VRING_KICK out and kick with"
              + " VRING_KICK)");
    }
    if (refused) ringOfRefusedDriver(index);
    data.run(() -> data.start(index, kick));
  }

  /** VRING_KICK: an in-band kick, which also starts a ring that is not running. */
  private void vringKick(VringState state) throws Exception {
    if (!inBandNotifications()) {
      throw new RequestFailed("VRING_KICK needs INBAND_NOTIFICATIONS negotiated; it is not");
    }
    int index = checkIndex(state.index());
    if (refused) ringOfRefusedDriver(index);
    data.run(() -> data.kickInBand(index));
  }

  /**
   * vhost-user.rst: with INBAND_NOTIFICATIONS and BACKEND_REQ, SET_VRING_CALL and SET_VRING_ERR are
   * optional; a ring without their eventfds is told of with BACKEND_VRING_CALL and _ERR.
   */
  private boolean inBandNotifications() {
    return negotiated(INBAND_NOTIFICATIONS);
  }

  /**
   * QEMU sends SET_FEATURES without NEED_REPLY (REAL-PEERS.md), so it never learns of a refusal and
   * starts the rings anyway; the device was never activated, so they are not served. Said once,
   * since the guest then shows only a device that never answers (its vsock connect times out).
   */
  private void ringOfRefusedDriver(int index) {
    if (warnedRingsRefused) return;
    warnedRingsRefused = true;
    LOG.log(
        Level.WARNING,
        "{0}: not serving ring {1} nor any other: the driver''s features were refused (see the"
            + " SET_FEATURES line) and the frontend starts the rings anyway (QEMU does not ask for"
            + " the answer to SET_FEATURES); the guest sees a device that never responds",
        name,
        index);
  }

  private int vringIndex(Message<FrontendRequest> m) throws RequestFailed {
    return checkIndex(m.payload(VringFdIndex.class).index());
  }

  /** The message's eventfd, now owned by the caller; null for the no-fd bit. */
  private static EventFd eventFd(Message<FrontendRequest> m) throws RequestFailed {
    if (m.payload(VringFdIndex.class).noFd()) return null;
    try {
      return EventFd.adopt(m.takeFd(0));
    } catch (NativeException | IllegalArgumentException e) {
      throw new RequestFailed(e.getMessage() + "; send an eventfd");
    }
  }

  private int checkIndex(long index) throws RequestFailed {
    if (index < 0 || index >= data.queueCount()) {
      throw new RequestFailed(
          "ring index " + index + " is not below the device's " + data.queueCount() + " queues");
    }
    return (int) index;
  }

  private void getConfig(ConfigSpace request) throws IOException {
    byte[] config = device.config();
    long end = (long) request.offset() + request.length();
    if (request.offset() < 0 || end > config.length) {
      warn(
          failedLines,
          "GET_CONFIG of "
              + request.length()
              + " bytes at "
              + request.offset()
              + " is outside the "
              + config.length
              + "-byte config space");
      reply(() -> Replies.configFailure(out));
      return;
    }
    byte[] bytes = Arrays.copyOfRange(config, request.offset(), (int) end);
    reply(() -> Replies.config(out, new ConfigSpace(request.offset(), request.flags(), bytes)));
  }

  private void setConfig(ConfigSpace request) throws RequestFailed {
    if (!device.writeConfig(request.offset(), request.data())) {
      throw new RequestFailed(
          "the "
              + device.name()
              + " device has no writable config at offset "
              + request.offset()
              + " ("
              + request.length()
              + " bytes)");
    }
  }

  // ---- writing ----

  private void replyU64(Message<FrontendRequest> m, long value) throws IOException {
    reply(() -> Replies.u64(out, m.request(), value));
  }

  private void reply(Runnable encode) throws IOException {
    out.clear();
    encode.run();
    socket.send(MemorySegment.ofBuffer(out.nioBuffer(0, out.readableBytes())));
  }

  /**
   * Tells the frontend the config space changed: CONFIG_CHANGE_MSG on the backend channel, without
   * NEED_REPLY so the control loop never waits on the frontend.
   */
  private void configChanged() {
    controlLoop.execute(
        () -> {
          if (closed || backendChannel == null || !negotiated(CONFIG) || !negotiated(BACKEND_REQ)) {
            return;
          }
          if (!configChangeWaiting) sendConfigChange();
        });
  }

  /**
   * A ring left without eventfds under INBAND_NOTIFICATIONS, and no backend channel to tell of it
   * on (never set, or dropped): its driver waits for ever, so that is said, once per session.
   */
  private void warnNoBackendChannel(BackendRequest request, int index) {
    if (warnedNoBackendChannel) return;
    warnedNoBackendChannel = true;
    LOG.log(
        Level.WARNING,
        "{0}: ring {1} has no {2} eventfd and there is no backend channel for {3} (the frontend"
            + " sent no SET_BACKEND_REQ_FD, or its channel failed): the driver is not told; give"
            + " the ring an eventfd or the session a backend channel",
        name,
        String.valueOf(index),
        request == BackendRequest.VRING_CALL ? "call" : "error",
        request.label());
  }

  /**
   * BACKEND_VRING_CALL or BACKEND_VRING_ERR for ring {@code index}, from the data loop: sent by the
   * control loop, which owns the backend channel, without NEED_REPLY as {@link #configChanged}. A
   * notice only says "look at the ring", so one still waiting for the control loop covers the ones
   * after it: a data loop faster than the control loop cannot grow the latter's queue.
   */
  private void sendVringNotice(BackendRequest request, int index) {
    int bit = noticeBit(request);
    if ((noticesQueued.getAndAccumulate(index, bit, (was, b) -> was | b) & bit) != 0) return;
    controlLoop.execute(
        () -> {
          // Cleared before sending: a notice for what the ring did after this one is sent anew.
          noticesQueued.getAndAccumulate(index, ~bit, (was, keep) -> was & keep);
          if (closed) return;
          if (backendChannel == null) {
            warnNoBackendChannel(request, index);
            return;
          }
          if ((noticesWaiting[index] & bit) == 0) sendNotice(request, index);
        });
  }

  /** The notices a ring has, each with its bit in {@link #noticesQueued} and noticesWaiting. */
  private static final BackendRequest[] NOTICES = {
    BackendRequest.VRING_CALL, BackendRequest.VRING_ERR
  };

  private static int noticeBit(BackendRequest notice) {
    return notice == BackendRequest.VRING_CALL ? 1 : 2;
  }

  private void sendNotice(BackendRequest notice, int index) {
    if (sendToFrontend(notice, new VringState(index, 0)) == BackendChannel.Sent.FULL) {
      noticesWaiting[index] |= noticeBit(notice);
      awaitRoom();
    }
  }

  private void sendConfigChange() {
    if (sendToFrontend(BackendRequest.CONFIG_CHANGE_MSG, Empty.INSTANCE)
        == BackendChannel.Sent.FULL) {
      configChangeWaiting = true;
      awaitRoom();
    }
  }

  /**
   * A frontend that has not read its channel for a while (QEMU's main loop busy elsewhere) fills
   * it: what met the full channel waits for room rather than blocking the control loop, which every
   * session shares, or ending the channel for good.
   */
  private void awaitRoom() {
    try {
      backendChannel.awaitRoom(this::sendWaiting);
    } catch (RuntimeException e) { // epoll_ctl refused (ENOMEM, max_user_watches)
      dropBackendChannel("watching it for room: " + e);
    }
  }

  /** The frontend read some of its channel: what waited goes, as far as there is room. */
  private void sendWaiting() {
    if (closed || backendChannel == null) return;
    if (configChangeWaiting) {
      configChangeWaiting = false;
      sendConfigChange();
      if (configChangeWaiting || backendChannel == null) return;
    }
    for (int index = 0; index < noticesWaiting.length; index++) {
      for (BackendRequest notice : NOTICES) {
        int bit = noticeBit(notice);
        if ((noticesWaiting[index] & bit) == 0) continue;
        noticesWaiting[index] &= ~bit;
        sendNotice(notice, index);
        if ((noticesWaiting[index] & bit) != 0 || backendChannel == null) return;
      }
    }
    backendChannel.roomDone();
  }

  /** Sends a back-end request on the backend channel ({@link BackendChannel}: no reply). */
  private BackendChannel.Sent sendToFrontend(BackendRequest request, Payload payload, Fd... fds) {
    BackendChannel.Sent sent = backendChannel.send(request, payload, fds);
    if (sent == BackendChannel.Sent.FAILED) {
      // A frontend that is gone, or stopped reading in the middle of a message: the channel is
      // dropped rather than left corrupt.
      dropBackendChannel(
          "sending " + request.label() + ": " + backendChannel.failure().getMessage());
    }
    return sent;
  }

  private void dropBackendChannel(String why) {
    LOG.log(Level.WARNING, "{0}: {1}; no more back-end requests to this frontend", name, why);
    backendChannel.close();
    backendChannel = null;
  }

  // ---- the end ----

  /**
   * The restricted-DMA figures of this session so far (RESTRICTED-DMA.md), or null without a pool.
   * Safe from any thread: read on the data loop.
   */
  public DmaMetrics dmaMetrics() {
    if (!dma.enabled()) return null;
    try {
      return data.call(data::dmaMetrics);
    } catch (Exception e) {
      throw new IllegalStateException("reading the restricted-DMA metrics: " + e, e);
    }
  }

  private void logDmaMetrics() {
    if (!dma.enabled()) return;
    try {
      // Not within the budget: the metrics on exit are what RESTRICTED-DMA.md promises.
      LOG.log(Level.INFO, "{0}: session over; {1}", name, dmaMetrics());
    } catch (IllegalStateException e) {
      LOG.log(Level.WARNING, "{0}: {1}", name, e.getMessage());
    }
  }

  /** Whether the frontend negotiated {@code feature}. */
  boolean negotiated(ProtocolFeature feature) {
    return feature.in(ackedProtocolFeatures);
  }

  /** Stops every ring, resets the device, and releases everything the frontend gave. Idempotent. */
  @Override
  public void close() {
    if (closed) return;
    closed = true;
    if (watch != null) watch.close();
    try {
      data.run(data::close);
    } catch (Exception e) {
      LOG.log(Level.WARNING, "{0}: stopping the rings: {1}", name, e);
    }
    logDmaMetrics();
    data.memory().close();
    if (devicePool != null) devicePool.close();
    if (backendChannel != null) backendChannel.close();
    reader.close();
    socket.close();
    out.release();
    onClose.run();
  }

  @Override
  public String toString() {
    return name + " (features 0x" + Long.toHexString(ackedFeatures) + ")";
  }
}
