package dev.bounce.vhost.protocol;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.vhost.protocol.ProtocolException.Kind;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.List;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** The fake frontend's side: replies are held to flags 0x5, the request sent, and their layout. */
class RepliesTest {
  private static ProtocolException rejects(Request sent, String wire, int fdCount)
      throws Exception {
    List<Fd> fds = Wire.eventFds(fdCount);
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Wire.decodeReply(sent, Wire.buf(wire), fds));
    assertTrue(Wire.allClosed(fds), "fds of a rejected reply are closed");
    return e;
  }

  @Test
  @DisplayName("a reply echoing NEED_REPLY (0xd) is refused, as QEMU refuses it")
  void needReplyEchoed() throws Exception {
    ProtocolException e =
        rejects(FrontendRequest.SET_MEM_TABLE, "05000000 0d000000 08000000 0000000000000000", 0);
    assertEquals(Kind.BAD_FLAGS, e.kind());
    assertEquals("SET_MEM_TABLE (5): reply flags 0xd, expected exactly 0x5", e.getMessage());
  }

  @Test
  @DisplayName("a reply for another request is UNEXPECTED_REPLY")
  void otherRequest() throws Exception {
    ProtocolException e =
        rejects(FrontendRequest.GET_FEATURES, "0f000000 05000000 08000000 0000000000000000", 0);
    assertEquals(Kind.UNEXPECTED_REPLY, e.kind());
  }

  @Test
  @DisplayName("reply sizes are exact: a 4-byte ack, a 12-byte vring base")
  void replySizes() throws Exception {
    assertEquals(
        Kind.WRONG_SIZE,
        rejects(FrontendRequest.SET_STATUS, "27000000 05000000 04000000 00000000", 0).kind());
    assertEquals(
        Kind.WRONG_SIZE,
        rejects(
                FrontendRequest.GET_VRING_BASE,
                "0b000000 05000000 0c000000 00000000 00000000 00000000",
                0)
            .kind());
    assertEquals(
        Kind.TOO_LARGE,
        rejects(FrontendRequest.GET_CONFIG, "18000000 05000000 01100000", 0).kind());
  }

  @Test
  @DisplayName("fds on a reply that takes none are refused and closed")
  void fdsOnReply() throws Exception {
    ProtocolException e =
        rejects(FrontendRequest.GET_FEATURES, "01000000 05000000 08000000 0000000000000000", 1);
    assertEquals(Kind.BAD_FD_COUNT, e.kind());
  }

  @Test
  @DisplayName("GET_CONFIG: an empty reply is the back-end's failure, decoded as Empty")
  void configFailure() throws Exception {
    ByteBuf out = Unpooled.buffer();
    Replies.configFailure(out);
    assertEquals("180000000500000000000000", Wire.hexOf(out));
    try (Message<FrontendRequest> reply =
        Wire.decodeReply(FrontendRequest.GET_CONFIG, out, List.of())) {
      assertEquals(Empty.INSTANCE, reply.payload());
      assertEquals("GET_CONFIG reply", reply.describe());
    }
  }

  @Test
  @DisplayName("a failure ack for an unknown request code")
  void ackUnknownCode() throws Exception {
    ByteBuf out = Unpooled.buffer();
    Replies.ack(out, 77, false);
    assertEquals("4d00000005000000080000000100000000000000", Wire.hexOf(out));
  }

  @Test
  @DisplayName("the back-end reads QEMU's ack to BACKEND_VRING_ERR")
  void backendReplyAck() throws Exception {
    try (Message<BackendRequest> reply =
        Wire.decodeReply(
            BackendRequest.VRING_ERR,
            Wire.buf("05000000 05000000 08000000 0100000000000000"),
            List.of())) {
      assertEquals(U64.FAILURE, reply.payload());
      assertEquals("BACKEND_VRING_ERR reply ack=0x1 (failure)", reply.describe());
    }
  }

  @Test
  @DisplayName("GET_SHARED_OBJECT's reply may carry the dma-buf fd")
  void replyWithFd() throws Exception {
    List<Fd> fds = Wire.eventFds(1);
    try (Message<FrontendRequest> reply =
        Wire.decodeReply(
            FrontendRequest.GET_SHARED_OBJECT,
            Wire.buf("29000000 05000000 08000000 0000000000000000"),
            fds)) {
      assertEquals(1, reply.fds().size());
    }
    assertTrue(Wire.allClosed(fds));
  }

  @Test
  @DisplayName("payload(Class) names both layouts on a mismatch")
  void payloadCast() throws Exception {
    try (Message<FrontendRequest> reply =
        Wire.decodeReply(
            FrontendRequest.GET_FEATURES,
            Wire.buf("01000000 05000000 08000000 0000004001000000"),
            List.of())) {
      assertEquals(0x140000000L, reply.payload(U64.class).value());
      assertEquals("GET_FEATURES reply features=0x140000000", reply.describe());
      IllegalStateException e =
          assertThrows(IllegalStateException.class, () -> reply.payload(VringState.class));
      assertEquals("GET_FEATURES carries U64, not VringState", e.getMessage());
    }
  }
}
