package dev.bounce.vhost.frontend;

import static dev.bounce.vhost.protocol.FrontendRequest.ADD_MEM_REG;
import static dev.bounce.vhost.protocol.FrontendRequest.GET_FEATURES;
import static dev.bounce.vhost.protocol.FrontendRequest.GET_MAX_MEM_SLOTS;
import static dev.bounce.vhost.protocol.FrontendRequest.GET_PROTOCOL_FEATURES;
import static dev.bounce.vhost.protocol.FrontendRequest.GET_QUEUE_NUM;
import static dev.bounce.vhost.protocol.FrontendRequest.GET_SHMEM_CONFIG;
import static dev.bounce.vhost.protocol.FrontendRequest.GET_STATUS;
import static dev.bounce.vhost.protocol.FrontendRequest.GET_VRING_BASE;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_BACKEND_REQ_FD;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_FEATURES;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_MEM_TABLE;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_OWNER;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_PROTOCOL_FEATURES;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_STATUS;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_VRING_ADDR;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_VRING_BASE;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_VRING_CALL;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_VRING_ENABLE;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_VRING_ERR;
import static dev.bounce.vhost.protocol.FrontendRequest.SET_VRING_KICK;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.protocol.BackendRequest;
import dev.bounce.vhost.protocol.BackendRequests;
import dev.bounce.vhost.protocol.Empty;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.MemoryTable;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.Payload;
import dev.bounce.vhost.protocol.ProtocolException;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.protocol.Replies;
import dev.bounce.vhost.protocol.ShmemConfig;
import dev.bounce.vhost.protocol.ShmemMapping;
import dev.bounce.vhost.protocol.SingleMemoryRegion;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * The fake frontend's VMM half: negotiates with any vhost-user backend the way QEMU 7.2 or DPDK
 * 22.11 virtio-user does (vhost/src/test/resources/sequences), shares the guest's memory as {@link
 * GuestRam} says, and sets up every queue with its rings (in the pool when there is one) and
 * eventfds. The guest half, a driver model, then works the queues through {@link #queue}.
 */
public final class FrontendSession implements AutoCloseable {
  /** Virtio device status bits (virtio 1.2 section 2.1). */
  static final int ACKNOWLEDGE = 1;

  static final int DRIVER = 2;
  static final int DRIVER_OK = 4;
  static final int FEATURES_OK = 8;

  /** Protocol features the fake frontend understands. */
  static final long FRONTEND_PROTOCOL_FEATURES =
      ProtocolFeature.maskOf(
          ProtocolFeature.MQ,
          ProtocolFeature.REPLY_ACK,
          ProtocolFeature.CONFIG,
          ProtocolFeature.RESET_DEVICE,
          ProtocolFeature.CONFIGURE_MEM_SLOTS,
          ProtocolFeature.STATUS);

  /**
   * What device-pool mode adds: the back-end request channel, on which the pool arrives
   * (BACKEND_SHMEM_MAP), and the VIRTIO Shared Memory protocol feature.
   */
  static final long DEVICE_POOL_PROTOCOL_FEATURES =
      ProtocolFeature.maskOf(ProtocolFeature.BACKEND_REQ, ProtocolFeature.SHMEM);

  /** Room for rings before bounce slots or guest buffers start, from the start of their area. */
  private static final long PAGE = 4096;

  /**
   * How to negotiate.
   *
   * @param handshake whose message sequence to follow
   * @param driverFeatures the feature bits the driver supports (device-specific and ring ones); the
   *     session accepts those the backend offers, plus VERSION_1 and PROTOCOL_FEATURES
   * @param queues how many queues to set up; 0 to ask the backend (GET_QUEUE_NUM)
   * @param queueSize entries per queue (a power of two)
   * @param indirectEntries descriptors per indirect table when INDIRECT_DESC is negotiated; 0 for
   *     none
   */
  public record Options(
      Handshake handshake, long driverFeatures, int queues, int queueSize, int indirectEntries) {
    /** These options with {@code more} feature bits the driver supports. */
    public Options withDriverFeatures(long more) {
      return new Options(handshake, driverFeatures | more, queues, queueSize, indirectEntries);
    }
  }

  /** One queue as the guest driver uses it: the ring and its three eventfds. */
  public record Queue(DriverQueue ring, EventFd kick, EventFd call, EventFd err) {
    /** Publishes what the driver added and kicks the device if the ring says it must. */
    public void notifyDevice() throws IOException {
      try {
        ring.kick(kick);
      } catch (NativeException e) {
        throw new IOException("kicking queue " + ring.index() + ": " + e.getMessage(), e);
      }
    }

    /**
     * Waits up to {@code timeoutMillis} for a used-buffer notification on {@code a} or {@code b}
     * (null: not that one), then drains both call eventfds.
     *
     * @return whether one came
     */
    public static boolean awaitUsed(Queue a, Queue b, int timeoutMillis) throws IOException {
      try {
        boolean ready =
            Libc.pollIn(
                a == null ? -1 : a.call().fd().value(),
                b == null ? -1 : b.call().fd().value(),
                timeoutMillis);
        if (a != null) a.call().drain();
        if (b != null) b.call().drain();
        return ready;
      } catch (NativeException e) {
        throw new IOException("waiting on the call eventfds: " + e.getMessage(), e);
      }
    }

    void close() {
      kick.close();
      call.close();
      err.close();
    }
  }

  private FrontendChannel channel;
  private final GuestRam ram;
  private final Options options;
  private final List<Queue> queues = new ArrayList<>();
  private FrontendChannel backendRequests;
  private long offeredFeatures;
  private long features;
  private long protocolFeatures;
  private long ringAreaEnd;

  private FrontendSession(FrontendChannel channel, GuestRam ram, Options options) {
    this.channel = channel;
    this.ram = ram;
    this.options = options;
  }

  /** Connects to a backend listening at {@code socket} and negotiates. */
  public static FrontendSession connect(Path socket, GuestRam ram, Options options)
      throws IOException {
    return negotiated(FrontendChannel.connect(socket), ram, options);
  }

  /** Listens at {@code socket} for a backend in client mode, then negotiates. */
  public static FrontendSession accept(Path socket, Duration timeout, GuestRam ram, Options options)
      throws IOException {
    return negotiated(FrontendChannel.accept(socket, timeout), ram, options);
  }

  private static FrontendSession negotiated(FrontendChannel channel, GuestRam ram, Options options)
      throws IOException {
    FrontendSession session = new FrontendSession(channel, ram, options);
    try {
      session.negotiate();
      return session;
    } catch (IOException | RuntimeException e) {
      session.close();
      throw e;
    }
  }

  // ---- negotiation ----

  private void negotiate() throws IOException {
    switch (options.handshake()) {
      case QEMU, QEMU_SLOTS -> negotiateLikeQemu(false);
      case DPDK -> negotiateLikeDpdk();
    }
  }

  /**
   * The sequence of qemu72-vsock-pci-x86.log and qemu72-net-pci-x86.log; {@code resuming} the rings
   * that already exist, as QEMU does when its backend reconnects: same features, each ring set up
   * where it stands.
   */
  private void negotiateLikeQemu(boolean resuming) throws IOException {
    offeredFeatures = channel.getU64(GET_FEATURES);
    negotiateProtocolFeatures();
    int count = negotiateQueueCount();
    // QEMU hands over the backend channel before SET_OWNER (qemu72-vsock-mmio-arm64 recording),
    // and its vhost-user devices ask for shared memory once vhost_dev_init, which sends SET_OWNER,
    // is done.
    if (ram.mode() == MemoryMode.DEVICE_POOL) giveBackendChannel();
    channel.send(SET_OWNER, false);
    if (ram.mode() == MemoryMode.DEVICE_POOL) receiveDevicePool();
    if (!resuming) createQueues(count);
    for (Queue q : queues) {
      send(SET_VRING_CALL, new VringFdIndex(q.ring().index(), false), q.call().fd());
      send(SET_VRING_ERR, new VringFdIndex(q.ring().index(), false), q.err().fd());
    }
    if (resuming) {
      setFeaturesAgain();
    } else {
      setFeatures();
    }
    if (negotiated(ProtocolFeature.STATUS)) {
      channel.getU64(GET_STATUS);
      sendMaybeAck(SET_STATUS, new U64(FEATURES_OK));
    }
    shareMemory();
    for (Queue q : queues) setUpRing(q, resuming ? q.ring().lastUsedIndex() : 0);
    enableRings();
    if (negotiated(ProtocolFeature.STATUS)) {
      sendMaybeAck(SET_STATUS, new U64(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK));
    }
  }

  /**
   * The backend went away and listens at {@code socket} again (it restarted under a running guest):
   * connects and sets the same rings up once more where they stand, as QEMU does when a vhost-user
   * backend reconnects. Guest memory, the rings and what the driver posted stay; what the old
   * backend held but never used is offered again.
   *
   * @throws IOException when the backend cannot be reached or no longer offers the features the
   *     rings run with; in device-pool mode, always (the pool died with its backend)
   */
  public void reconnect(Path socket) throws IOException {
    if (ram.mode() == MemoryMode.DEVICE_POOL) {
      throw new IOException(
          "a device-owned pool dies with its backend: no reconnect in device-pool mode");
    }
    channel.close();
    channel = FrontendChannel.connect(socket);
    negotiateLikeQemu(true);
  }

  private void setFeaturesAgain() throws IOException {
    if ((offeredFeatures & features) != features) {
      throw new IOException(
          "the backend no longer offers the features the rings run with (0x"
              + Long.toHexString(features)
              + "; offered 0x"
              + Long.toHexString(offeredFeatures)
              + ")");
    }
    sendMaybeAck(SET_FEATURES, new U64(features));
  }

  /** dpdk2211-virtio-user-net.txt: SET_OWNER first, acknowledged SET_STATUS, one memory table. */
  private void negotiateLikeDpdk() throws IOException {
    channel.send(SET_OWNER, false);
    offeredFeatures = channel.getU64(GET_FEATURES);
    negotiateProtocolFeatures();
    if (ram.mode() == MemoryMode.DEVICE_POOL) {
      giveBackendChannel();
      receiveDevicePool();
    }
    createQueues(negotiateQueueCount());
    for (Queue q : queues) {
      send(SET_VRING_CALL, new VringFdIndex(q.ring().index(), false), q.call().fd());
    }
    setFeatures();
    if (negotiated(ProtocolFeature.STATUS)) {
      sendMaybeAck(SET_STATUS, new U64(ACKNOWLEDGE | DRIVER | FEATURES_OK));
      channel.getU64(GET_STATUS);
    }
    shareMemory();
    for (Queue q : queues) setUpRing(q, 0);
    enableRings();
    if (negotiated(ProtocolFeature.STATUS)) {
      sendMaybeAck(SET_STATUS, new U64(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK));
    }
  }

  private void negotiateProtocolFeatures() throws IOException {
    if (!VirtioFeatures.has(offeredFeatures, VirtioFeatures.PROTOCOL_FEATURES)) return;
    long offered = channel.getU64(GET_PROTOCOL_FEATURES);
    long understood =
        FRONTEND_PROTOCOL_FEATURES
            | (ram.mode() == MemoryMode.DEVICE_POOL ? DEVICE_POOL_PROTOCOL_FEATURES : 0);
    protocolFeatures = offered & understood;
    channel.send(SET_PROTOCOL_FEATURES, new U64(protocolFeatures), false);
  }

  private int negotiateQueueCount() throws IOException {
    if (!negotiated(ProtocolFeature.MQ)) {
      if (options.queues() > 0) return options.queues();
      throw new IOException("the backend did not negotiate MQ, so give the queue count (--queues)");
    }
    long offered = channel.getU64(GET_QUEUE_NUM);
    if (options.queues() == 0) return (int) Math.min(offered, 64);
    // As QEMU checks: a driver for another kind of device would otherwise run against rings the
    // backend does not have, and fail much later with nothing saying why.
    if (offered < options.queues()) {
      throw new IOException(
          "the backend's queue count is "
              + offered
              + " and this driver needs "
              + options.queues()
              + ": is it a backend for this kind of device?");
    }
    return options.queues();
  }

  private void setFeatures() throws IOException {
    long wanted =
        options.driverFeatures()
            | VirtioFeatures.bit(VirtioFeatures.VERSION_1)
            | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES);
    features = offeredFeatures & wanted;
    if (!VirtioFeatures.has(features, VirtioFeatures.VERSION_1)) {
      throw new IOException(
          "the backend does not offer VIRTIO_F_VERSION_1 (features 0x"
              + Long.toHexString(offeredFeatures)
              + "): only modern devices are supported");
    }
    rebuildQueuesFor(features);
    sendMaybeAck(SET_FEATURES, new U64(features));
  }

  /**
   * Device-pool mode: the backend owns the pool (dev.bounce.vhost.backend.DevicePool). Hands the
   * backend its request channel (SET_BACKEND_REQ_FD), asks for the VIRTIO Shared Memory Regions
   * (GET_SHMEM_CONFIG; its reply also means the backend has handled SET_BACKEND_REQ_FD, after which
   * it sends the pool), takes the pool's fd from BACKEND_SHMEM_MAP and maps it at guest and
   * frontend address 0, so that every address the guest gives the device is an offset into it.
   */
  /** SET_BACKEND_REQ_FD, on which a device-owned pool comes (BACKEND_SHMEM_MAP). */
  private void giveBackendChannel() throws IOException {
    if (!negotiated(ProtocolFeature.SHMEM) || !negotiated(ProtocolFeature.BACKEND_REQ)) {
      throw new IOException(
          "the backend offers no device-owned pool (protocol features "
              + ProtocolFeature.describe(DEVICE_POOL_PROTOCOL_FEATURES)
              + " not both offered); run it with --device-pool SIZE, or use --mode shared or pool");
    }
    FrontendChannel.RequestChannel pair = FrontendChannel.backendRequestChannel();
    backendRequests = pair.ours();
    try {
      sendMaybeAck(SET_BACKEND_REQ_FD, Empty.INSTANCE, pair.theirs());
    } finally {
      pair.theirs().close();
    }
  }

  /** GET_SHMEM_CONFIG, then the pool's BACKEND_SHMEM_MAP on the backend channel. */
  private void receiveDevicePool() throws IOException {
    long size;
    try (Message<FrontendRequest> reply = channel.call(GET_SHMEM_CONFIG, Empty.INSTANCE)) {
      ShmemConfig config = reply.payload(ShmemConfig.class);
      size = config.sizes().isEmpty() ? 0 : config.sizes().getFirst();
      if (size == 0) {
        throw new IOException(
            "the backend has no VIRTIO Shared Memory Region 0 for its pool (GET_SHMEM_CONFIG: "
                + config.describe()
                + ")");
      }
    }
    try (FrontendChannel.Frame frame = backendRequests.receiveFrame(channel.replyTimeout());
        Message<BackendRequest> map =
            BackendRequests.decode(
                frame.header(), Unpooled.wrappedBuffer(frame.payload()), frame.fds())) {
      if (map.request() != BackendRequest.SHMEM_MAP) {
        throw new IOException("expected BACKEND_SHMEM_MAP with the pool, got " + map.describe());
      }
      ShmemMapping mapping = map.payload(ShmemMapping.class);
      if (mapping.shmid() != 0
          || mapping.fdOffset() != 0
          || mapping.shmOffset() != 0
          || mapping.length() != size
          || !mapping.writable()) {
        throw new IOException(
            "BACKEND_SHMEM_MAP "
                + mapping.describe()
                + " is not the whole pool of "
                + size
                + " bytes, read-write, at offset 0 of region 0");
      }
      ram.attachDevicePool(map.takeFd(0), size);
      if (map.needsReply()) acknowledgeBackend(map.request());
    } catch (ProtocolException e) {
      throw new IOException("the backend's request channel: " + e.getMessage(), e);
    }
  }

  /** Answers a back-end request that asked for a reply with success (REPLY_ACK u64 0). */
  private void acknowledgeBackend(BackendRequest request) throws IOException {
    ByteBuf out = Unpooled.buffer();
    Replies.ack(out, request.code(), true);
    byte[] bytes = new byte[out.readableBytes()];
    out.readBytes(bytes);
    backendRequests.sendRaw(bytes);
  }

  /** Device-pool mode shares no memory: the guest's RAM stays private, the pool is the device's. */
  private void shareMemory() throws IOException {
    if (ram.mode() == MemoryMode.DEVICE_POOL) return;
    List<GuestRam.SharedRegion> regions = ram.sharedRegions();
    try {
      if (options.handshake() == Handshake.QEMU_SLOTS
          && negotiated(ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
        long slots = channel.getU64(GET_MAX_MEM_SLOTS);
        if (slots < regions.size()) {
          throw new IOException(
              "the backend has " + slots + " memory slots; the guest needs " + regions.size());
        }
        for (GuestRam.SharedRegion r : regions) {
          sendMaybeAck(ADD_MEM_REG, new SingleMemoryRegion(r.description()), r.fd());
        }
      } else {
        Fd[] fds = regions.stream().map(GuestRam.SharedRegion::fd).toArray(Fd[]::new);
        MemoryTable table =
            new MemoryTable(regions.stream().map(GuestRam.SharedRegion::description).toList());
        sendMaybeAck(SET_MEM_TABLE, table, fds);
      }
    } finally {
      regions.forEach(r -> r.fd().close());
    }
  }

  private void setUpRing(Queue q, int base) throws IOException {
    int index = q.ring().index();
    send(FrontendRequest.SET_VRING_NUM, new VringState(index, q.ring().size()));
    send(SET_VRING_BASE, new VringState(index, base));
    send(SET_VRING_ADDR, q.ring().vringAddress());
    send(SET_VRING_KICK, new VringFdIndex(index, false), q.kick().fd());
  }

  private void enableRings() throws IOException {
    if (!VirtioFeatures.has(features, VirtioFeatures.PROTOCOL_FEATURES)) return;
    for (Queue q : queues) send(SET_VRING_ENABLE, new VringState(q.ring().index(), 1));
  }

  // ---- queues ----

  /** Where the rings go: the start of the pool when there is one, otherwise a page into RAM. */
  private long ringAreaStart() {
    return ram.hasPool() ? ram.poolStart() : ram.ramStart() + PAGE;
  }

  private void createQueues(int count) throws NativeException {
    for (int i = 0; i < count; i++) {
      EventFd kick = EventFd.create();
      EventFd call = EventFd.create();
      EventFd err = EventFd.create();
      queues.add(new Queue(null, kick, call, err));
    }
    rebuildQueuesFor(0);
  }

  /**
   * (Re)builds the driver rings for the negotiated {@code ringFeatures}: EVENT_IDX and
   * INDIRECT_DESC change how the driver uses them. Each queue's rings and indirect tables take
   * whole pages.
   */
  private void rebuildQueuesFor(long ringFeatures) {
    long at = ringAreaStart();
    boolean indirect =
        options.indirectEntries() > 0
            && VirtioFeatures.has(ringFeatures, VirtioFeatures.INDIRECT_DESC);
    for (int i = 0; i < queues.size(); i++) {
      Queue old = queues.get(i);
      GuestRam.Area area = ram.areaOf(at);
      DriverQueue.Builder builder =
          DriverQueue.builder(area.bytes(), area.guestBase(), area.userBase())
              .index(i)
              .size(options.queueSize())
              .features(ringFeatures)
              .ringsAt(at);
      at = RingLayout.align(at + DriverQueue.ringBytes(options.queueSize()), PAGE);
      if (indirect) {
        builder.indirectTables(at, options.indirectEntries());
        at =
            RingLayout.align(
                at + DriverQueue.indirectBytes(options.queueSize(), options.indirectEntries()),
                PAGE);
      }
      queues.set(i, new Queue(builder.build(), old.kick(), old.call(), old.err()));
    }
    ringAreaEnd = at;
  }

  /** The first guest address after the rings: where a driver model may put its buffers. */
  public long ringAreaEnd() {
    return ringAreaEnd;
  }

  public Queue queue(int index) {
    return queues.get(index);
  }

  public int queueCount() {
    return queues.size();
  }

  /** The features both sides accepted. */
  public long features() {
    return features;
  }

  public long offeredFeatures() {
    return offeredFeatures;
  }

  public long protocolFeatures() {
    return protocolFeatures;
  }

  public boolean negotiated(ProtocolFeature feature) {
    return feature.in(protocolFeatures);
  }

  public GuestRam ram() {
    return ram;
  }

  public FrontendChannel channel() {
    return channel;
  }

  /**
   * Stops every ring (GET_VRING_BASE, as a VMM does when the guest stops) and returns the index
   * each backend ring stopped at.
   */
  public int[] stop() throws IOException {
    int[] bases = new int[queues.size()];
    for (Queue q : queues) {
      try (Message<FrontendRequest> reply =
          channel.call(GET_VRING_BASE, new VringState(q.ring().index(), 0))) {
        bases[q.ring().index()] = (int) reply.payload(VringState.class).num();
      }
    }
    return bases;
  }

  // ---- sending ----

  private void send(FrontendRequest request, Payload payload, Fd... fds) throws IOException {
    channel.send(request, payload, false, fds);
  }

  /**
   * Sends with NEED_REPLY and requires success where the backend negotiated REPLY_ACK, as QEMU and
   * DPDK do for the memory table and the status; otherwise sends plainly.
   */
  private void sendMaybeAck(FrontendRequest request, Payload payload, Fd... fds)
      throws IOException {
    if (negotiated(ProtocolFeature.REPLY_ACK)) {
      channel.ack(request, payload, fds);
    } else {
      send(request, payload, fds);
    }
  }

  @Override
  public void close() {
    channel.close();
    if (backendRequests != null) backendRequests.close();
    queues.forEach(Queue::close);
  }
}
