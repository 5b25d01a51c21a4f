package dev.bounce.vhost.protocol;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.MemoryRegionDescription;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** Every payload layout, encoded and decoded again, keeps its values; so do headers and fds. */
class RoundTripTest {
  private static final MemoryRegionDescription LOW =
      new MemoryRegionDescription(0x0, 0xa0000, 0x7f8d0bfff000L, 0x0);
  private static final MemoryRegionDescription HIGH =
      new MemoryRegionDescription(0xc0000, 0x1ff40000, 0x7f8d0c0bf000L, 0xc0000);

  private static void assertRoundTrip(
      FrontendRequest request, Payload payload, boolean needReply, int fdCount) throws Exception {
    List<Fd> fds = Wire.eventFds(fdCount);
    try (Message<FrontendRequest> message = Wire.roundTrip(request, payload, needReply, fds)) {
      assertSame(request, message.request());
      assertEquals(payload, message.payload());
      assertEquals(payload.size(), message.header().size());
      assertEquals(needReply, message.needsReply());
      assertFalse(message.isReply());
      assertEquals(fds, message.fds());
      assertTrue(fds.stream().allMatch(Fd::isOpen), "a successful decode keeps the fds open");
    }
    assertTrue(Wire.allClosed(fds), "closing the message closes its fds");
  }

  @Test
  @DisplayName("no payload: GET_FEATURES, SET_OWNER, RESET_DEVICE, GET_SHMEM_CONFIG, ...")
  void empty() throws Exception {
    for (FrontendRequest r : FrontendRequest.values()) {
      if (r.payload() == PayloadKind.EMPTY) {
        assertRoundTrip(r, Empty.INSTANCE, false, r.fds().min(Empty.INSTANCE));
      }
    }
  }

  @Test
  @DisplayName("u64: features, protocol features, status, MTU, RARP")
  void u64() throws Exception {
    assertRoundTrip(FrontendRequest.SET_FEATURES, new U64(0x140000000L), false, 0);
    assertRoundTrip(FrontendRequest.SET_PROTOCOL_FEATURES, new U64(0x10209), false, 0);
    assertRoundTrip(FrontendRequest.SET_STATUS, new U64(0xf), true, 0);
    assertRoundTrip(FrontendRequest.NET_SET_MTU, new U64(1500), true, 0);
    assertRoundTrip(FrontendRequest.SEND_RARP, new U64(-1L), false, 0);
  }

  @Test
  @DisplayName("vring state: num, base, enable, endian, GET_VRING_BASE, in-band kick")
  void vringState() throws Exception {
    assertRoundTrip(FrontendRequest.SET_VRING_NUM, new VringState(0, 256), false, 0);
    assertRoundTrip(FrontendRequest.SET_VRING_BASE, new VringState(1, 0xFFFF_FFFFL), false, 0);
    assertRoundTrip(FrontendRequest.SET_VRING_ENABLE, new VringState(0xFFFF_FFFFL, 1), false, 0);
    assertRoundTrip(FrontendRequest.SET_VRING_ENDIAN, new VringState(2, 0), false, 0);
    assertRoundTrip(FrontendRequest.GET_VRING_BASE, new VringState(0, 22066), false, 0);
    assertRoundTrip(FrontendRequest.VRING_KICK, new VringState(3, 0), true, 0);
  }

  @Test
  @DisplayName("vring address, with and without the log flag")
  void vringAddress() throws Exception {
    assertRoundTrip(
        FrontendRequest.SET_VRING_ADDR,
        new VringAddress(0, 0, 0x7f8d0e99c000L, 0x7f8d0e99c940L, 0x7f8d0e99c800L, 0x299d940),
        false,
        0);
    assertRoundTrip(
        FrontendRequest.SET_VRING_ADDR,
        new VringAddress(7, VringAddress.FLAG_LOG, -16L, -4L, -2L, -1L),
        true,
        0);
  }

  @Test
  @DisplayName("kick/call/err: an fd without the no-fd bit, none with it")
  void vringFd() throws Exception {
    for (FrontendRequest r :
        new FrontendRequest[] {
          FrontendRequest.SET_VRING_KICK,
          FrontendRequest.SET_VRING_CALL,
          FrontendRequest.SET_VRING_ERR
        }) {
      assertRoundTrip(r, new VringFdIndex(0, false), false, 1);
      assertRoundTrip(r, new VringFdIndex(255, false), false, 1);
      assertRoundTrip(r, new VringFdIndex(1, true), false, 0);
    }
    assertEquals(0x101, new VringFdIndex(1, true).value());
  }

  @Test
  @DisplayName("memory table of 1 to 8 regions, one fd each")
  void memoryTable() throws Exception {
    assertRoundTrip(FrontendRequest.SET_MEM_TABLE, new MemoryTable(List.of(LOW)), true, 1);
    assertRoundTrip(FrontendRequest.SET_MEM_TABLE, new MemoryTable(List.of(LOW, HIGH)), true, 2);
    List<MemoryRegionDescription> eight = new ArrayList<>();
    for (int i = 0; i < 8; i++) {
      eight.add(
          new MemoryRegionDescription(i * 0x100000L, 0x100000, 0x7f0000000000L + i * 0x100000L, 0));
    }
    MemoryTable table = new MemoryTable(eight);
    assertEquals(8 + 8 * 32, table.size());
    assertRoundTrip(FrontendRequest.SET_MEM_TABLE, table, false, 8);
  }

  @Test
  @DisplayName("single memory region: ADD_MEM_REG with its fd, REM_MEM_REG with or without one")
  void singleRegion() throws Exception {
    assertRoundTrip(FrontendRequest.ADD_MEM_REG, new SingleMemoryRegion(HIGH), true, 1);
    assertRoundTrip(FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(LOW), true, 0);
    assertRoundTrip(FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(LOW), true, 1);
  }

  @Test
  @DisplayName("config space: GET_CONFIG request, SET_CONFIG at the end of the 256 bytes")
  void configSpace() throws Exception {
    assertRoundTrip(FrontendRequest.GET_CONFIG, ConfigSpace.read(0, 8), false, 0);
    assertRoundTrip(
        FrontendRequest.SET_CONFIG,
        new ConfigSpace(250, ConfigSpace.TYPE_MIGRATION, new byte[] {1, 2, 3, 4, 5, 6}),
        true,
        0);
    assertRoundTrip(FrontendRequest.SET_CONFIG, new ConfigSpace(0, 0, new byte[256]), false, 0);
  }

  @Test
  @DisplayName("the payloads bounce only names: log, device state, shared object, opaque")
  void otherPayloads() throws Exception {
    assertRoundTrip(FrontendRequest.SET_LOG_BASE, new LogDescription(0x1000, 0), false, 1);
    assertRoundTrip(FrontendRequest.SET_LOG_BASE, new LogDescription(0x1000, 0x10), false, 0);
    assertRoundTrip(
        FrontendRequest.SET_DEVICE_STATE_FD,
        new DeviceStateTransfer(DeviceStateTransfer.LOAD, DeviceStateTransfer.PHASE_STOPPED),
        true,
        1);
    assertRoundTrip(
        FrontendRequest.GET_SHARED_OBJECT,
        new SharedObject(UUID.fromString("123e4567-e89b-12d3-a456-426614174000")),
        false,
        0);
    assertRoundTrip(FrontendRequest.IOTLB_MSG, new Opaque(new byte[32]), false, 0);
    assertRoundTrip(FrontendRequest.SET_INFLIGHT_FD, new Opaque(new byte[] {1, 2, 3}), false, 1);
  }

  @Test
  @DisplayName("the shared object UUID is big endian on the wire")
  void uuidByteOrder() {
    ByteBuf out = Unpooled.buffer();
    new SharedObject(UUID.fromString("00112233-4455-6677-8899-aabbccddeeff")).encode(out);
    assertEquals("00112233445566778899aabbccddeeff", Wire.hexOf(out));
  }

  @Test
  @DisplayName("back-end requests: host notifier, call, err, config change, shmem map/unmap")
  void backendRequests() throws Exception {
    assertBackendRoundTrip(
        BackendRequest.VRING_HOST_NOTIFIER_MSG, new VringArea(1, false, 0x1000, 0x3000), 1);
    assertBackendRoundTrip(BackendRequest.VRING_HOST_NOTIFIER_MSG, new VringArea(1, true, 0, 0), 0);
    assertBackendRoundTrip(BackendRequest.VRING_CALL, new VringState(0, 0), 0);
    assertBackendRoundTrip(BackendRequest.VRING_ERR, new VringState(1, 0), 0);
    assertBackendRoundTrip(BackendRequest.CONFIG_CHANGE_MSG, Empty.INSTANCE, 0);
    assertBackendRoundTrip(
        BackendRequest.SHMEM_MAP,
        new ShmemMapping(3, 0x2000, 0x10000, 0x4000, ShmemMapping.FLAG_WRITABLE),
        1);
    assertBackendRoundTrip(
        BackendRequest.SHMEM_UNMAP, new ShmemMapping(3, 0, 0x10000, 0x4000, 0), 0);
    assertBackendRoundTrip(
        BackendRequest.SHARED_OBJECT_LOOKUP, new SharedObject(new UUID(1, 2)), 0);
    assertBackendRoundTrip(BackendRequest.IOTLB_MSG, new Opaque(new byte[32]), 0);
  }

  private static void assertBackendRoundTrip(BackendRequest request, Payload payload, int fdCount)
      throws Exception {
    List<Fd> fds = Wire.eventFds(fdCount);
    ByteBuf out = Unpooled.buffer();
    BackendRequests.encode(out, request, payload, true);
    try (Message<BackendRequest> message = Wire.decodeBackendRequest(out, fds)) {
      assertSame(request, message.request());
      assertEquals(payload, message.payload());
      assertTrue(message.needsReply());
      assertEquals(fds, message.fds());
    }
    assertTrue(Wire.allClosed(fds));
  }

  @Test
  @DisplayName("replies: u64 values, acks, vring base, config, shmem config, config failure")
  void replies() throws Exception {
    assertReplyRoundTrip(FrontendRequest.GET_FEATURES, new U64(0x140000000L));
    assertReplyRoundTrip(FrontendRequest.GET_QUEUE_NUM, new U64(2));
    assertReplyRoundTrip(FrontendRequest.SET_MEM_TABLE, U64.SUCCESS);
    assertReplyRoundTrip(FrontendRequest.SET_STATUS, U64.FAILURE);
    assertReplyRoundTrip(FrontendRequest.GET_VRING_BASE, new VringState(1, 29248));
    assertReplyRoundTrip(
        FrontendRequest.GET_CONFIG, new ConfigSpace(0, 0, new byte[] {3, 0, 0, 0, 0, 0, 0, 0}));
    assertReplyRoundTrip(FrontendRequest.GET_CONFIG, Empty.INSTANCE);
    assertReplyRoundTrip(
        FrontendRequest.GET_SHMEM_CONFIG, new ShmemConfig(List.of(0x400000L, 0L, 0x100000L)));
    assertReplyRoundTrip(BackendRequest.VRING_ERR, U64.SUCCESS);
  }

  private static <R extends Request> void assertReplyRoundTrip(R request, Payload payload)
      throws Exception {
    ByteBuf out = Unpooled.buffer();
    Replies.encode(out, request, payload);
    assertEquals(0x5, out.getIntLE(4), "reply flags");
    try (Message<R> reply = Wire.decodeReply(request, out, List.of())) {
      assertSame(request, reply.request());
      assertEquals(payload, reply.payload());
      assertTrue(reply.isReply());
    }
  }

  @Test
  @DisplayName("shmem config: always 256 sizes on the wire, the count is the regions in use")
  void shmemConfigLayout() {
    ShmemConfig config = new ShmemConfig(List.of(0x400000L, 0L, 0x100000L, 0L));
    assertEquals(List.of(0x400000L, 0L, 0x100000L), config.sizes(), "trailing unused ids dropped");
    assertEquals(2, config.regionCount());
    ByteBuf out = Unpooled.buffer();
    config.encode(out);
    assertEquals(2056, out.readableBytes());
    assertEquals(2, out.getIntLE(0));
    assertEquals(0x100000L, out.getLongLE(8 + 2 * 8));
    assertEquals("nregions=2 shm[0]=0x400000 shm[2]=0x100000", config.describe());
  }

  @Test
  @DisplayName("taking an fd moves it out of the message: closing the message leaves it open")
  void takeFd() throws Exception {
    List<Fd> fds = Wire.eventFds(1);
    Fd kept;
    try (Message<FrontendRequest> message =
        Wire.roundTrip(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), false, fds)) {
      kept = message.takeFd(0);
      assertNotSame(fds.get(0), kept);
      assertFalse(fds.get(0).isOpen(), "the message's Fd object gave up its number");
    }
    assertTrue(kept.isOpen());
    kept.close();
  }

  @Test
  @DisplayName("records copy their arrays, and refuse values a u32/u8 field cannot hold")
  void recordInvariants() {
    byte[] data = {1, 2};
    ConfigSpace config = new ConfigSpace(0, 0, data);
    data[0] = 9;
    assertArrayEquals(new byte[] {1, 2}, config.data());
    assertThrows(IllegalArgumentException.class, () -> new VringState(-1, 0));
    assertThrows(IllegalArgumentException.class, () -> new VringState(0, 1L << 32));
    assertThrows(IllegalArgumentException.class, () -> new VringFdIndex(256, false));
    assertThrows(IllegalArgumentException.class, () -> new VringAddress(0, 2, 0, 0, 0, 0));
    assertThrows(IllegalArgumentException.class, () -> new MemoryTable(List.of()));
    assertThrows(IllegalArgumentException.class, () -> new ConfigSpace(255, 0, new byte[2]));
    assertThrows(IllegalArgumentException.class, () -> new ConfigSpace(0, 0, new byte[0]));
    assertThrows(IllegalArgumentException.class, () -> new ShmemMapping(0, 0, 0, 0, 0));
    assertThrows(IllegalArgumentException.class, () -> new ShmemMapping(0, -1, 0, 2, 0));
  }

  @Test
  @DisplayName("encoders refuse a payload of the wrong layout for the request")
  void encodersCheckLayout() {
    ByteBuf out = Unpooled.buffer();
    assertThrows(
        IllegalArgumentException.class,
        () -> Requests.encode(out, FrontendRequest.SET_VRING_ADDR, new VringState(0, 0), false));
    assertThrows(
        IllegalArgumentException.class,
        () -> BackendRequests.encode(out, BackendRequest.VRING_ERR, U64.SUCCESS, false));
    assertThrows(
        IllegalArgumentException.class,
        () -> Replies.encode(out, FrontendRequest.GET_VRING_BASE, U64.SUCCESS));
    assertThrows(
        IllegalArgumentException.class,
        () -> Replies.encode(out, FrontendRequest.SET_MEM_TABLE, new VringState(0, 0)));
    assertEquals(0, out.writerIndex(), "nothing written on refusal");
  }
}
