package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Message;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;

/**
 * A frontend that sets a two-queue echo device up the way QEMU does (every step acknowledged, so a
 * refusal fails at once) on a 2 MiB region of plain shared memory, and drives chains through its
 * rings.
 */
final class TestFrontend implements AutoCloseable {
  static final long GUEST_BASE = 0x4000_0000L;
  static final long USER_BASE = 0x7f00_4000_0000L;
  static final long MEMORY_SIZE = 2 << 20;

  /** A restricted pool over all of this frontend's memory, under {@code policy}. */
  static RestrictedDma poolOverMemory(RestrictedDma.Policy policy) {
    return new RestrictedDma(policy, new RestrictedDma.Window(GUEST_BASE, MEMORY_SIZE));
  }

  static final int QUEUE_SIZE = 256;
  static final int QUEUES = 2;
  private static final long RING_STRIDE = 0x8000;

  /**
   * How long the backend tests wait for something that must happen (a reply, an echo, a signal):
   * the wait ends as soon as it does, so this only bounds how long a broken build hangs, and must
   * not be what a busy machine runs into.
   */
  static final Duration TIMEOUT = Duration.ofSeconds(20);

  static final long FEATURES =
      VirtioFeatures.bit(VirtioFeatures.VERSION_1)
          | VirtioFeatures.bit(VirtioFeatures.PROTOCOL_FEATURES);
  static final long PROTOCOL_FEATURES =
      ProtocolFeature.maskOf(
          ProtocolFeature.MQ,
          ProtocolFeature.REPLY_ACK,
          ProtocolFeature.CONFIG,
          ProtocolFeature.STATUS,
          ProtocolFeature.CONFIGURE_MEM_SLOTS);

  final FrontendChannel channel;
  final TestMemory memory;
  final EventFd[] kick = new EventFd[QUEUES];
  final EventFd[] call = new EventFd[QUEUES];
  final EventFd[] err = new EventFd[QUEUES];
  final DriverRing[] rings = new DriverRing[QUEUES];

  /** Per ring, where the next used element should land. */
  final int[] nextUsed = new int[QUEUES];

  private int echoes;

  /** Takes ownership of {@code channel} and {@code memory}. */
  TestFrontend(FrontendChannel channel, TestMemory memory) throws NativeException {
    this.channel = channel;
    this.memory = memory;
    try {
      for (int i = 0; i < QUEUES; i++) {
        kick[i] = EventFd.create();
        call[i] = EventFd.create();
        err[i] = EventFd.create();
      }
    } catch (NativeException | RuntimeException e) {
      close();
      throw e;
    }
  }

  /** On a fresh 2 MiB region. */
  TestFrontend(FrontendChannel channel) throws NativeException {
    this(channel, defaultMemory());
  }

  static TestMemory defaultMemory() throws NativeException {
    return TestMemory.single(GUEST_BASE, MEMORY_SIZE, USER_BASE);
  }

  /** Where ring {@code i} lies in the default memory (frontend addresses). */
  static VringAddress ringAddress(int i) {
    long desc = USER_BASE + RING_STRIDE * i;
    return new VringAddress(i, 0, desc, desc + 0x2000, desc + 0x1000, 0);
  }

  /** The whole setup: negotiation, memory, both rings started and enabled. */
  TestFrontend handshake() throws IOException {
    negotiate(true);
    shareMemory();
    for (int i = 0; i < QUEUES; i++) setUpRing(i, ringAddress(i));
    return this;
  }

  /** GET_FEATURES, protocol features, SET_OWNER (or not), SET_FEATURES. */
  void negotiate(boolean owner) throws IOException {
    negotiate(owner, PROTOCOL_FEATURES);
  }

  /** {@link #negotiate(boolean)} with {@code protocol} for the protocol features. */
  void negotiate(boolean owner, long protocol) throws IOException {
    negotiate(owner, protocol, FEATURES);
  }

  /** {@link #negotiate(boolean, long)}, the driver accepting {@code features}. */
  void negotiate(boolean owner, long protocol, long features) throws IOException {
    long offered = channel.getU64(FrontendRequest.GET_FEATURES);
    assertTrue(VirtioFeatures.has(offered, VirtioFeatures.PROTOCOL_FEATURES), "offered features");
    long offeredProtocol = channel.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
    assertEquals(protocol, offeredProtocol & protocol, "offered protocol features");
    channel.send(FrontendRequest.SET_PROTOCOL_FEATURES, new U64(protocol), false);
    assertEquals(QUEUES, channel.getU64(FrontendRequest.GET_QUEUE_NUM), "queue count");
    if (owner) channel.ack(FrontendRequest.SET_OWNER);
    channel.ack(FrontendRequest.SET_FEATURES, new U64(features));
  }

  void shareMemory() throws IOException {
    channel.ack(FrontendRequest.SET_MEM_TABLE, memory.table(), memory.fds());
  }

  /** {@link #configureRing}, then the driver's side of the ring is ready for chains. */
  void setUpRing(int i, VringAddress address) throws IOException {
    setUpRing(i, address, kick[i], call[i], err[i]);
  }

  /** {@link #setUpRing(int, VringAddress)} with these eventfds (null: the no-fd flag). */
  void setUpRing(int i, VringAddress address, EventFd kick, EventFd call, EventFd err)
      throws IOException {
    configureRing(i, address, kick, call, err);
    rings[i] = new DriverRing(memory, QUEUE_SIZE, address);
    rings[i].startAt(nextUsed[i]);
  }

  /** Size, base, addresses, call, err, kick, enable: each acknowledged. */
  void configureRing(int i, VringAddress address) throws IOException {
    configureRing(i, address, kick[i], call[i], err[i]);
  }

  /** {@link #configureRing(int, VringAddress)} with these eventfds (null: the no-fd flag). */
  void configureRing(int i, VringAddress address, EventFd kick, EventFd call, EventFd err)
      throws IOException {
    channel.ack(FrontendRequest.SET_VRING_NUM, new VringState(i, QUEUE_SIZE));
    channel.ack(FrontendRequest.SET_VRING_BASE, new VringState(i, 0));
    channel.ack(FrontendRequest.SET_VRING_ADDR, address);
    setVringFd(FrontendRequest.SET_VRING_CALL, i, call);
    setVringFd(FrontendRequest.SET_VRING_ERR, i, err);
    setVringFd(FrontendRequest.SET_VRING_KICK, i, kick);
    channel.ack(FrontendRequest.SET_VRING_ENABLE, new VringState(i, 1));
  }

  /**
   * SET_VRING_KICK, _CALL or _ERR of ring {@code i} with {@code fd}, or the no-fd flag for null.
   */
  void setVringFd(FrontendRequest request, int i, EventFd fd) throws IOException {
    if (fd == null) channel.ack(request, new VringFdIndex(i, true));
    else channel.ack(request, new VringFdIndex(i, false), fd.fd());
  }

  /** A chain through ring {@code i}, echoed back. */
  void echo(int i) throws NativeException, InterruptedException {
    byte[] data = ("echo " + ++echoes + " on ring " + i).getBytes(StandardCharsets.UTF_8);
    rings[i].echo(data, kick[i], call[i], nextUsed[i], TIMEOUT);
    nextUsed[i] = (nextUsed[i] + 1) & 0xffff;
  }

  /** GET_VRING_BASE: stops ring {@code i}; its next avail index. */
  long stop(int i) throws IOException {
    try (Message<FrontendRequest> reply =
        channel.call(FrontendRequest.GET_VRING_BASE, new VringState(i, 0))) {
      VringState state = reply.payload(VringState.class);
      assertEquals(i, state.index(), "GET_VRING_BASE index");
      return state.num();
    }
  }

  @Override
  public void close() {
    channel.close();
    for (EventFd[] fds : new EventFd[][] {kick, call, err}) {
      for (EventFd fd : fds) if (fd != null) fd.close();
    }
    memory.close();
  }
}
