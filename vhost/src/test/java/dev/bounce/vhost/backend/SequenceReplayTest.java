package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.ConfigSpace;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.Payload;
import dev.bounce.vhost.protocol.Replies;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import jnr.posix.POSIXFactory;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Replays every recorded conversation of the test resources' sequences/ (QEMU 7.2 and DPDK 22.11
 * talking to real back-ends; copies of ../shared/reference/sequences, so that every clone runs
 * them) against bounce over a real socket: the same requests in the same order, with real memfds
 * where the recording had guest RAM (same guest addresses, sizes and frontend addresses, so the
 * recorded ring addresses fall inside them) and real eventfds for kicks, calls and errors. The
 * device is the echo device with the recorded device's queue count and feature bits.
 *
 * <p>Checked for every request: the rebuilt payload has the recorded size; a reply comes exactly
 * when the protocol (and, where it shows replies, the recording) has one, with flags exactly 0x5,
 * the request's code, the size its layout has, and the value the protocol fixes given bounce's
 * state (features offered, acks 0, queue count, GET_STATUS echoing SET_STATUS, GET_CONFIG of the
 * device's config bytes, GET_VRING_BASE of the ring's position); no reply arrives for requests that
 * have none; nothing is logged at WARNING. Whenever a ring is started and enabled, a chain is
 * echoed through it (kick, used ring, call). DPDK's reconnect sessions (no SET_OWNER, rings reused
 * with SET_VRING_BASE 0 while their used index in memory is 22066) must resume from the used ring.
 *
 * <p>qemu72-vsock-mmio-arm64-restricted-pool.log is replayed with plain shared memory: the backend
 * maps the whole region QEMU shared. Serving it with the restricted pool (only the guest's
 * restricted-dma-pool window mapped, every ring and buffer address checked against it) is a later
 * issue; its rings at 0x5c000000 lie inside the recorded pool window anyway.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SequenceReplayTest {
  /**
   * How long to wait for what must come (a reply, an echo, the back-end connecting, a session's
   * end): each wait ends when it does, so this only bounds a broken build's wait.
   */
  private static final Duration REPLY = Duration.ofSeconds(20);

  /** How long a request that has no reply waits to be sure none comes. */
  private static final Duration QUIET = Duration.ofMillis(25);

  /** The used (and avail) index DPDK's rings were at when its back-end went away. */
  private static final int RESUME_INDEX = 22066;

  private static final int MAX_QUEUE_SIZE = 1024;

  /**
   * Feature bits a recorded device offered that bounce cannot serve: dirty logging, packed rings.
   */
  private static final long UNSERVABLE = VirtioFeatures.bit(26) | VirtioFeatures.bit(34);

  @TempDir Path dir;

  @TestFactory
  Stream<DynamicTest> replaysEveryRecording() throws Exception {
    URL resource = SequenceReplayTest.class.getResource("/sequences");
    assertNotNull(resource, "no sequences/ among the test resources");
    Path folder = Path.of(resource.toURI());
    List<Path> files;
    try (Stream<Path> listing = Files.list(folder)) {
      files = listing.filter(Files::isRegularFile).sorted().toList();
    }
    assertFalse(files.isEmpty(), folder + " holds no recordings");
    return files.stream()
        .map(f -> DynamicTest.dynamicTest(f.getFileName().toString(), () -> replay(f)));
  }

  private void replay(Path file) throws Exception {
    RecordedSequence recording = RecordedSequence.parse(file);
    assertFalse(recording.sessions().isEmpty(), file + ": no sessions");
    for (List<RecordedSequence.Step> session : recording.sessions()) {
      assertFalse(session.isEmpty(), file + ": an empty session");
    }
    ConfiguredEcho device =
        new ConfiguredEcho(queueCount(recording), MAX_QUEUE_SIZE, deviceFeatures(recording));
    boolean reconnects = recording.sessions().size() > 1;
    Path socket = dir.resolve(file.getFileName().toString().replaceAll("\\W", "_") + ".sock");
    // DPDK's reconnecting virtio-user listens (server=1) and the back-end connects; QEMU and the
    // plain DPDK run connect to a listening back-end.
    try (BackendFixture backend =
        reconnects
            ? BackendFixture.connect(socket, device)
            : BackendFixture.listen(socket, device)) {
      for (int s = 0; s < recording.sessions().size(); s++) {
        List<RecordedSequence.Step> steps = recording.sessions().get(s);
        boolean reconnect =
            s > 0 && steps.stream().noneMatch(st -> st.request() == FrontendRequest.SET_OWNER);
        backend.clearLog();
        try (FrontendChannel channel =
                reconnects
                    ? FrontendChannel.accept(socket, REPLY)
                    : FrontendChannel.connect(socket);
            Session session = new Session(recording, s + 1, channel, device, reconnect)) {
          for (RecordedSequence.Step step : steps) session.replay(step);
          assertFalse(
              channel.awaitInput(Duration.ofMillis(200)),
              session.where + ": the back-end sent something nobody asked for at the end");
          session.checkNoGuestErrors();
          channel.close();
          backend.awaitNoSession(REPLY);
        }
        assertEquals(
            List.of(), backend.warnings(), recording.name() + " session " + (s + 1) + ": warnings");
        if (reconnect) {
          long resumed =
              backend.infos().stream()
                  .filter(l -> l.contains("resuming from the used ring"))
                  .count();
          assertEquals(
              device.queueCount(),
              resumed,
              recording.name()
                  + " session "
                  + (s + 1)
                  + ": every ring resumed from its used index; log: "
                  + backend.infos());
        }
      }
    }
  }

  /** The recorded GET_QUEUE_NUM, else the recorded device's: vsock and net back-ends have 2. */
  private static int queueCount(RecordedSequence recording) {
    for (List<RecordedSequence.Step> session : recording.sessions()) {
      for (RecordedSequence.Step step : session) {
        if (step.request() == FrontendRequest.GET_QUEUE_NUM && step.reply() != null) {
          return (int) step.reply().number("queue_num");
        }
      }
    }
    String name = recording.name();
    if (name.contains("vsock") || name.contains("net")) return 2;
    throw new AssertionError(name + ": which device is this recording of?");
  }

  /**
   * The feature bits the recorded device offered (its GET_FEATURES reply, or what the frontend took
   * where replies are not recorded), less those bounce cannot serve.
   */
  private static long deviceFeatures(RecordedSequence recording) {
    long taken = 0;
    for (List<RecordedSequence.Step> session : recording.sessions()) {
      for (RecordedSequence.Step step : session) {
        if (step.request() == FrontendRequest.GET_FEATURES && step.reply() != null) {
          return step.reply().number("features") & ~UNSERVABLE;
        }
        if (step.request() == FrontendRequest.SET_FEATURES) taken |= step.number("features");
      }
    }
    return taken & ~UNSERVABLE;
  }

  /** What the frontend keeps of one ring, and where bounce's ring should be. */
  private static final class Ring {
    final int index;
    int size = MAX_QUEUE_SIZE;
    int base;
    boolean positionsPending = true;
    VringAddress address;
    boolean started;
    boolean enabled;
    boolean echoed;
    int nextAvail;
    DriverRing driver;
    EventFd kick;
    EventFd call;
    EventFd err;

    Ring(int index) {
      this.index = index;
    }

    void closeFds() {
      for (EventFd fd : new EventFd[] {kick, call, err}) if (fd != null) fd.close();
    }
  }

  /** One session of a recording, replayed. */
  private static final class Session implements AutoCloseable {
    final RecordedSequence recording;
    final FrontendChannel channel;
    final ConfiguredEcho device;
    final boolean reconnect;
    final String where;
    final Ring[] rings;
    final long offered;
    final List<TestMemory> memories = new ArrayList<>();
    TestMemory memory;
    Fd backendChannelEnd;
    long status;
    boolean featuresSet;
    String at;

    Session(
        RecordedSequence recording,
        int number,
        FrontendChannel channel,
        ConfiguredEcho device,
        boolean reconnect) {
      this.recording = recording;
      this.channel = channel;
      this.device = device;
      this.reconnect = reconnect;
      this.where = recording.name() + " session " + number;
      this.rings = new Ring[device.queueCount()];
      for (int i = 0; i < rings.length; i++) rings[i] = new Ring(i);
      this.offered = device.deviceFeatures() | BackendSession.ENGINE_FEATURES;
    }

    void replay(RecordedSequence.Step step) throws Exception {
      at = where + ", line " + step.line() + " (" + step.request() + ")";
      Payload payload = step.payload();
      assertEquals(step.size(), payload.size(), at + ": the rebuilt payload's size");
      assertTrue(step.flags() == 0x1 || step.flags() == 0x9, at + ": recorded flags");
      Fd[] fds = fdsFor(step, payload);
      assertEquals(step.fds(), fds.length, at + ": fds");
      beforeSend(step, payload);
      channel.send(step.request(), payload, step.needReply(), fds);
      if (step.request() == FrontendRequest.SET_BACKEND_REQ_FD) fds[0].close(); // the back-end's
      boolean replies = step.request().replyPayload() != null || step.needReply();
      if (recording.repliesRecorded()) {
        assertEquals(replies, step.reply() != null, at + ": a reply is recorded exactly when due");
      }
      if (replies) {
        try (FrontendChannel.Frame frame = channel.receiveFrame(REPLY)) {
          // Byte for byte: what the protocol fixes given bounce's state, encoded as it must be.
          ByteBuf expected = Unpooled.buffer();
          Replies.encode(expected, step.request(), expectedReply(step, payload));
          ByteBuf got = Unpooled.buffer();
          frame.header().write(got);
          got.writeBytes(frame.payload());
          assertEquals(
              ByteBufUtil.hexDump(expected), ByteBufUtil.hexDump(got), at + ": the reply's bytes");
          // and the codec, as a frontend reads it, agrees
          try (Message<FrontendRequest> reply =
              Replies.decode(
                  step.request(),
                  frame.header(),
                  Unpooled.wrappedBuffer(frame.payload()),
                  frame.fds())) {
            checkReply(step, payload, reply);
          }
        }
      } else {
        assertFalse(channel.awaitInput(QUIET), at + ": a reply came to a request that has none");
      }
      afterReply(step, payload);
    }

    private Fd[] fdsFor(RecordedSequence.Step step, Payload payload) throws Exception {
      return switch (step.request()) {
        case SET_MEM_TABLE -> {
          // Plain shared memory for every recording, the arm64 restricted-pool one included: the
          // backend maps all of what is shared (the restricted-pool policy is a later issue).
          memory = TestMemory.of(step.regions());
          memories.add(memory);
          yield memory.fds();
        }
        case SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR -> {
          VringFdIndex v = (VringFdIndex) payload;
          if (v.noFd()) yield new Fd[0];
          Ring ring = ring(v.index());
          EventFd fd = EventFd.create();
          EventFd old =
              switch (step.request()) {
                case SET_VRING_KICK -> ring.kick;
                case SET_VRING_CALL -> ring.call;
                default -> ring.err;
              };
          if (old != null) old.close(); // ours; the back-end closes its copy when replaced
          switch (step.request()) {
            case SET_VRING_KICK -> ring.kick = fd;
            case SET_VRING_CALL -> ring.call = fd;
            default -> ring.err = fd;
          }
          yield new Fd[] {fd.fd()};
        }
        case SET_BACKEND_REQ_FD -> {
          int[] pair = new int[2];
          assertEquals(
              0, POSIXFactory.getNativePOSIX().socketpair(1, 1, 0, pair), "socketpair(AF_UNIX)");
          if (backendChannelEnd != null) backendChannelEnd.close();
          backendChannelEnd = Fd.adopt(pair[0]);
          yield new Fd[] {Fd.adopt(pair[1])};
        }
        default -> new Fd[0];
      };
    }

    private void beforeSend(RecordedSequence.Step step, Payload payload) {
      if (step.request() != FrontendRequest.SET_VRING_KICK) return;
      Ring ring = ring(((VringFdIndex) payload).index());
      if (memory == null || ring.address == null) return;
      ring.driver = new DriverRing(memory, ring.size, ring.address);
      if (!ring.positionsPending) {
        ring.driver.startAt(ring.nextAvail);
      } else if (reconnect) {
        // The DPDK frontend's rings ran before: SET_VRING_BASE 0, but the used index is not 0.
        ring.driver.resumeAt(RESUME_INDEX);
      } else {
        ring.driver.startAt(ring.base);
      }
    }

    private void checkReply(
        RecordedSequence.Step step, Payload payload, Message<FrontendRequest> reply) {
      Header header = reply.header();
      assertEquals(0x5, header.flags(), at + ": reply flags (exactly 0x5, as QEMU requires)");
      assertEquals(step.request().code(), header.request(), at + ": reply code");
      if (step.reply() != null && step.reply().size() >= 0) {
        assertEquals(step.reply().size(), header.payloadSize(), at + ": reply size as recorded");
      }
      switch (step.request()) {
        case GET_FEATURES -> assertU64(reply, offered, "the features bounce offers");
        case GET_PROTOCOL_FEATURES ->
            assertU64(
                reply,
                BackendSession.OFFERED_PROTOCOL_FEATURES,
                "the protocol features bounce offers");
        case GET_QUEUE_NUM -> {
          assertU64(reply, device.queueCount(), "queue count");
          if (step.reply() != null) {
            assertEquals(step.reply().number("queue_num"), device.queueCount(), at + ": recorded");
          }
        }
        case GET_MAX_MEM_SLOTS -> assertU64(reply, GuestAddressSpace.MAX_REGIONS, "memory slots");
        case GET_STATUS -> {
          assertU64(reply, status, "the status last set");
          if (step.reply() != null) {
            assertEquals(step.reply().number("status"), status, at + ": recorded status");
          }
        }
        case GET_CONFIG -> {
          ConfigSpace asked = (ConfigSpace) payload;
          ConfigSpace got = reply.payload(ConfigSpace.class);
          assertEquals(asked.size(), header.payloadSize(), at + ": reply size");
          assertEquals(asked.offset(), got.offset(), at + ": config offset");
          assertEquals(asked.length(), got.length(), at + ": config size");
          assertEquals(asked.flags(), got.flags(), at + ": config flags");
          byte[] config = device.config();
          assertArrayEquals(
              Arrays.copyOfRange(config, asked.offset(), asked.offset() + asked.length()),
              got.data(),
              at + ": config bytes");
        }
        case GET_VRING_BASE -> {
          VringState asked = (VringState) payload;
          VringState got = reply.payload(VringState.class);
          assertEquals(VringState.SIZE, header.payloadSize(), at + ": reply size");
          assertEquals(asked.index(), got.index(), at + ": vring index");
          assertEquals(ring(asked.index()).nextAvail, got.num(), at + ": next avail index");
        }
        default -> {
          assertTrue(step.needReply(), at + ": a reply without NEED_REPLY");
          assertU64(reply, 0, "REPLY_ACK success");
          if (step.reply() != null) {
            assertEquals(0, step.reply().number("ack"), at + ": recorded ack");
          }
        }
      }
    }

    /** The reply payload the protocol fixes for {@code step}, given the state replayed so far. */
    private Payload expectedReply(RecordedSequence.Step step, Payload payload) {
      return switch (step.request()) {
        case GET_FEATURES -> new U64(offered);
        case GET_PROTOCOL_FEATURES -> new U64(BackendSession.OFFERED_PROTOCOL_FEATURES);
        case GET_QUEUE_NUM -> new U64(device.queueCount());
        case GET_MAX_MEM_SLOTS -> new U64(GuestAddressSpace.MAX_REGIONS);
        case GET_STATUS -> new U64(status);
        case GET_CONFIG -> {
          ConfigSpace asked = (ConfigSpace) payload;
          byte[] config = device.config();
          yield new ConfigSpace(
              asked.offset(),
              asked.flags(),
              Arrays.copyOfRange(config, asked.offset(), asked.offset() + asked.length()));
        }
        case GET_VRING_BASE -> {
          long index = ((VringState) payload).index();
          yield new VringState(index, ring(index).nextAvail);
        }
        default -> U64.SUCCESS; // REPLY_ACK
      };
    }

    private void assertU64(Message<FrontendRequest> reply, long expected, String what) {
      assertEquals(U64.SIZE, reply.header().payloadSize(), at + ": reply size");
      assertEquals(
          "0x" + Long.toHexString(expected),
          "0x" + Long.toHexString(reply.payload(U64.class).value()),
          at + ": " + what);
    }

    private void afterReply(RecordedSequence.Step step, Payload payload) throws Exception {
      switch (step.request()) {
        case SET_FEATURES -> {
          long features = ((U64) payload).value();
          assertEquals(
              0, features & ~offered, at + ": the recorded features are a subset of the offer");
          featuresSet = true;
          if (!VirtioFeatures.has(features, VirtioFeatures.PROTOCOL_FEATURES)) {
            for (Ring ring : rings) ring.enabled = true;
          }
        }
        case SET_PROTOCOL_FEATURES -> {
          long features = ((U64) payload).value();
          assertEquals(
              0,
              features & ~BackendSession.OFFERED_PROTOCOL_FEATURES,
              at + ": the recorded protocol features are a subset of the offer");
        }
        case SET_STATUS -> status = ((U64) payload).value() & 0xff;
        case SET_VRING_NUM -> {
          VringState v = (VringState) payload;
          ring(v.index()).size = (int) v.num();
        }
        case SET_VRING_BASE -> {
          VringState v = (VringState) payload;
          Ring ring = ring(v.index());
          ring.base = (int) v.num();
          ring.nextAvail = ring.base;
          ring.positionsPending = true;
        }
        case SET_VRING_ADDR -> {
          VringAddress a = (VringAddress) payload;
          ring(a.index()).address = a;
        }
        case SET_VRING_KICK -> {
          Ring ring = ring(((VringFdIndex) payload).index());
          ring.started = ring.driver != null;
          if (ring.started && ring.positionsPending) {
            ring.nextAvail = ring.driver.availIndex();
            ring.positionsPending = false;
          }
        }
        case SET_VRING_ENABLE -> {
          VringState v = (VringState) payload;
          ring(v.index()).enabled = v.num() != 0;
        }
        case GET_VRING_BASE -> ring(((VringState) payload).index()).started = false;
        default -> {}
      }
      for (Ring ring : rings) {
        if (ring.started && ring.enabled && featuresSet && !ring.echoed) echo(ring);
      }
    }

    /** A chain through a ring that has just started running: the backend serves it. */
    private void echo(Ring ring) throws Exception {
      assertNotNull(ring.kick, at + ": ring " + ring.index + " runs without a kick eventfd");
      byte[] data = (where + " ring " + ring.index).getBytes(StandardCharsets.UTF_8);
      ring.driver.echo(data, ring.kick, ring.call, ring.nextAvail, REPLY);
      ring.nextAvail = (ring.nextAvail + 1) & 0xffff;
      ring.echoed = true;
    }

    void checkNoGuestErrors() throws Exception {
      for (Ring ring : rings) {
        if (ring.err != null) {
          assertEquals(0, ring.err.drain(), where + ": ring " + ring.index + " error eventfd");
        }
      }
    }

    private Ring ring(long index) {
      assertTrue(index >= 0 && index < rings.length, at + ": ring " + index);
      return rings[(int) index];
    }

    @Override
    public void close() {
      for (Ring ring : rings) ring.closeFds();
      memories.forEach(TestMemory::close);
      if (backendChannelEnd != null) backendChannelEnd.close();
    }
  }
}
