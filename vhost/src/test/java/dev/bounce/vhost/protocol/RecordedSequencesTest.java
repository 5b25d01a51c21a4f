package dev.bounce.vhost.protocol;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.MemoryRegionDescription;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.List;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * Byte-for-byte checks against messages from the recorded sequences in the test resources'
 * sequences/ (QEMU 7.2 vsock/net on q35 and arm64 virt, DPDK 22.11 virtio-user). Each wire image is
 * written out field by field, little endian; decoding it must give the recorded values and the
 * recorded log line, and encoding those values must give it back.
 */
class RecordedSequencesTest {
  private static void assertEncodes(String expectedHex, ByteBuf encoded) {
    assertEquals(expectedHex.replaceAll("\\s+", ""), Wire.hexOf(encoded));
  }

  @Test
  @DisplayName("qemu72-vsock-pci-x86 #17: SET_MEM_TABLE flags=0x9 size=72 nfds=2, two regions")
  void q35MemTable() throws Exception {
    String wire =
        "05000000 09000000 48000000" // SET_MEM_TABLE, version|NEED_REPLY, 72 bytes
            + "02000000 00000000" // nregions 2, padding
            + "0000000000000000 00000a0000000000 00f0ff0b8d7f0000 0000000000000000"
            + "00000c0000000000 0000f41f00000000 00f00b0c8d7f0000 00000c0000000000";
    MemoryTable expected =
        new MemoryTable(
            List.of(
                new MemoryRegionDescription(0x0, 0xa0000, 0x7f8d0bfff000L, 0x0),
                new MemoryRegionDescription(0xc0000, 0x1ff40000, 0x7f8d0c0bf000L, 0xc0000)));
    List<Fd> fds = Wire.eventFds(2);
    try (Message<FrontendRequest> message = Wire.decodeRequest(Wire.buf(wire), fds)) {
      assertEquals(FrontendRequest.SET_MEM_TABLE, message.request());
      assertEquals(expected, message.payload());
      assertTrue(message.needsReply());
      assertEquals(
          "SET_MEM_TABLE need_reply nregions=2"
              + " region[0] guest_phys_addr=0x0 size=0xa0000 userspace_addr=0x7f8d0bfff000"
              + " mmap_offset=0x0"
              + " region[1] guest_phys_addr=0xc0000 size=0x1ff40000 userspace_addr=0x7f8d0c0bf000"
              + " mmap_offset=0xc0000 fds=2",
          message.describe());
    }
    ByteBuf out = Unpooled.buffer();
    Requests.encode(out, FrontendRequest.SET_MEM_TABLE, expected, true);
    assertEncodes(wire, out);

    ByteBuf ack = Unpooled.buffer();
    Replies.ack(ack, FrontendRequest.SET_MEM_TABLE.code(), true);
    assertEncodes("05000000 05000000 08000000 0000000000000000", ack);
  }

  @Test
  @DisplayName("qemu72-vsock-mmio-arm64: SET_MEM_TABLE size=40, one region at 0x40000000")
  void arm64MemTable() throws Exception {
    String wire =
        "05000000 09000000 28000000 01000000 00000000"
            + "0000004000000000 0000002000000000 00f0ff5fcd7f0000 0000000000000000";
    List<Fd> fds = Wire.eventFds(1);
    try (Message<FrontendRequest> message = Wire.decodeRequest(Wire.buf(wire), fds)) {
      MemoryTable table = message.payload(MemoryTable.class);
      assertEquals(
          List.of(new MemoryRegionDescription(0x40000000L, 0x20000000L, 0x7fcd5ffff000L, 0)),
          table.regions());
    }
  }

  @Test
  @DisplayName("dpdk2211 #16: SET_MEM_TABLE whose guest address equals its user address")
  void dpdkMemTable() throws Exception {
    String wire =
        "05000000 09000000 28000000 01000000 00000000"
            + "00a0630001000000 0000002000000000 00a0630001000000 0000000000000000";
    try (Message<FrontendRequest> message = Wire.decodeRequest(Wire.buf(wire), Wire.eventFds(1))) {
      MemoryRegionDescription region = message.payload(MemoryTable.class).regions().get(0);
      assertEquals(0x10063a000L, region.guestAddress());
      assertEquals(region.guestAddress(), region.userAddress());
      assertEquals(0x20000000L, region.size());
    }
  }

  @Test
  @DisplayName("qemu72-vsock-pci-x86 #20: SET_VRING_ADDR size=40")
  void vringAddr() throws Exception {
    String wire =
        "09000000 01000000 28000000"
            + "00000000 00000000" // index 0, flags 0
            + "00c0990e8d7f0000" // desc
            + "40c9990e8d7f0000" // used
            + "00c8990e8d7f0000" // avail
            + "40d9990200000000"; // log
    VringAddress expected =
        new VringAddress(0, 0, 0x7f8d0e99c000L, 0x7f8d0e99c940L, 0x7f8d0e99c800L, 0x299d940L);
    try (Message<FrontendRequest> message = Wire.decodeRequest(Wire.buf(wire), List.of())) {
      assertEquals(expected, message.payload());
      assertEquals(
          "SET_VRING_ADDR index=0 flags=0x0 desc=0x7f8d0e99c000 used=0x7f8d0e99c940"
              + " avail=0x7f8d0e99c800 log=0x299d940",
          message.describe());
    }
    ByteBuf out = Unpooled.buffer();
    Requests.encode(out, FrontendRequest.SET_VRING_ADDR, expected, false);
    assertEncodes(wire, out);
  }

  @Test
  @DisplayName("qemu72-vsock-pci-x86 #11: GET_CONFIG size=20 and its reply data=0300000000000000")
  void getConfigGuestCid() throws Exception {
    String request = "18000000 01000000 14000000 00000000 08000000 00000000 0000000000000000";
    try (Message<FrontendRequest> message = Wire.decodeRequest(Wire.buf(request), List.of())) {
      ConfigSpace config = message.payload(ConfigSpace.class);
      assertEquals(0, config.offset());
      assertEquals(8, config.length());
      assertEquals(
          "GET_CONFIG offset=0 size=8 flags=0x0 data=0000000000000000", message.describe());
    }
    ByteBuf out = Unpooled.buffer();
    Requests.encode(out, FrontendRequest.GET_CONFIG, ConfigSpace.read(0, 8), false);
    assertEncodes(request, out);

    String reply = "18000000 05000000 14000000 00000000 08000000 00000000 0300000000000000";
    ByteBuf written = Unpooled.buffer();
    Replies.config(written, new ConfigSpace(0, 0, new byte[] {3, 0, 0, 0, 0, 0, 0, 0}));
    assertEncodes(reply, written);
    try (Message<FrontendRequest> back =
        Wire.decodeReply(FrontendRequest.GET_CONFIG, Wire.buf(reply), List.of())) {
      assertArrayEquals(
          new byte[] {3, 0, 0, 0, 0, 0, 0, 0}, back.payload(ConfigSpace.class).data());
      assertEquals(
          "GET_CONFIG reply offset=0 size=8 flags=0x0 data=0300000000000000", back.describe());
    }
  }

  @Test
  @DisplayName("GET_VRING_BASE replies: qemu72 vring=0 num=0, dpdk2211 #35 index=1 num=29248")
  void getVringBase() throws Exception {
    ByteBuf qemu = Unpooled.buffer();
    Replies.vringBase(qemu, new VringState(0, 0));
    assertEncodes("0b000000 05000000 08000000 00000000 00000000", qemu);

    String dpdk = "0b000000 05000000 08000000 01000000 40720000";
    ByteBuf out = Unpooled.buffer();
    Replies.vringBase(out, new VringState(1, 29248));
    assertEncodes(dpdk, out);
    try (Message<FrontendRequest> reply =
        Wire.decodeReply(FrontendRequest.GET_VRING_BASE, Wire.buf(dpdk), List.of())) {
      assertEquals(new VringState(1, 29248), reply.payload());
      assertEquals("GET_VRING_BASE reply index=1 num=29248", reply.describe());
    }

    // reconnect #3: DPDK's request carries junk in the reserved num; it still decodes
    String junk = "0b000000 01000000 08000000 00000000 32560000";
    try (Message<FrontendRequest> request = Wire.decodeRequest(Wire.buf(junk), List.of())) {
      assertEquals(new VringState(0, 22066), request.payload());
    }
  }

  @Test
  @DisplayName("dpdk2211 #10-11: SET_STATUS 0xb with NEED_REPLY, acked with u64 0")
  void setStatusAck() throws Exception {
    String request = "27000000 09000000 08000000 0b00000000000000";
    try (Message<FrontendRequest> message = Wire.decodeRequest(Wire.buf(request), List.of())) {
      assertEquals(new U64(0xb), message.payload());
      assertEquals("SET_STATUS need_reply status=0xb", message.describe());
    }
    String ack = "27000000 05000000 08000000 0000000000000000";
    ByteBuf out = Unpooled.buffer();
    Replies.ack(out, FrontendRequest.SET_STATUS.code(), true);
    assertEncodes(ack, out);
    try (Message<FrontendRequest> reply =
        Wire.decodeReply(FrontendRequest.SET_STATUS, Wire.buf(ack), List.of())) {
      assertEquals(U64.SUCCESS, reply.payload());
      assertEquals("SET_STATUS reply ack=0", reply.describe());
    }
  }

  @Test
  @DisplayName("qemu72-vsock-pci-x86 #2-3: protocol features 0x10209 as the log prints them")
  void protocolFeatures() throws Exception {
    String request = "10000000 01000000 08000000 0902010000000000";
    try (Message<FrontendRequest> message = Wire.decodeRequest(Wire.buf(request), List.of())) {
      assertEquals(
          "SET_PROTOCOL_FEATURES protocol_features=0x10209 [MQ|REPLY_ACK|CONFIG|STATUS]",
          message.describe());
    }
    ByteBuf reply = Unpooled.buffer();
    Replies.u64(reply, FrontendRequest.GET_PROTOCOL_FEATURES, 0x10209);
    assertEncodes("0f000000 05000000 08000000 0902010000000000", reply);
  }

  @Test
  @DisplayName("qemu72 #7, #21: SET_VRING_CALL / SET_VRING_KICK with one eventfd each")
  void kickAndCall() throws Exception {
    try (Message<FrontendRequest> call =
        Wire.decodeRequest(
            Wire.buf("0d000000 01000000 08000000 0000000000000000"), Wire.eventFds(1))) {
      assertEquals(new VringFdIndex(0, false), call.payload());
      assertEquals("SET_VRING_CALL index=0 fds=1", call.describe());
    }
    try (Message<FrontendRequest> kick =
        Wire.decodeRequest(
            Wire.buf("0c000000 01000000 08000000 0100000000000000"), Wire.eventFds(1))) {
      assertEquals(new VringFdIndex(1, false), kick.payload());
    }
  }

  @Test
  @DisplayName("qemu72-vsock-mmio-arm64: SET_BACKEND_REQ_FD flags=0x9 size=0 nfds=1")
  void backendReqFd() throws Exception {
    List<Fd> fds = Wire.eventFds(1);
    try (Message<FrontendRequest> message =
        Wire.decodeRequest(Wire.buf("15000000 09000000 00000000"), fds)) {
      assertEquals(Empty.INSTANCE, message.payload());
      assertEquals("SET_BACKEND_REQ_FD need_reply fds=1", message.describe());
    }
  }

  @Test
  @DisplayName("back-end channel: VRING_ERR and CONFIG_CHANGE_MSG as bounce writes them")
  void backendRequests() {
    ByteBuf err = Unpooled.buffer();
    BackendRequests.vringErr(err, 1, true);
    assertEncodes("05000000 09000000 08000000 01000000 00000000", err);
    ByteBuf call = Unpooled.buffer();
    BackendRequests.vringCall(call, 0, false);
    assertEncodes("04000000 01000000 08000000 00000000 00000000", call);
    ByteBuf change = Unpooled.buffer();
    BackendRequests.configChange(change, false);
    assertEncodes("02000000 01000000 00000000", change);
  }
}
