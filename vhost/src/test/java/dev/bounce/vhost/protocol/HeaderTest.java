package dev.bounce.vhost.protocol;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.protocol.ProtocolException.Kind;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class HeaderTest {
  @Test
  @DisplayName("12 bytes, little endian: request, flags, size")
  void layout() throws Exception {
    ByteBuf out = Unpooled.buffer();
    new Header(9, 0x9, 40).write(out);
    assertEquals("09000000" + "09000000" + "28000000", Wire.hexOf(out));
    Header back = Header.read(out);
    assertEquals(new Header(9, 0x9, 40), back);
    assertTrue(back.needsReply());
    assertFalse(back.isReply());
    assertEquals(1, back.version());
    assertEquals("req=9 flags=0x9 size=40", back.describe());
  }

  @Test
  @DisplayName("a reply header's flags are exactly 0x5; a request's 0x1 or 0x9")
  void constructedFlags() {
    assertEquals(0x5, Header.reply(11, 8).flags());
    assertEquals(0x1, Header.request(11, 8, false).flags());
    assertEquals(0x9, Header.request(11, 8, true).flags());
  }

  @Test
  @DisplayName("fewer than 12 header bytes is TRUNCATED, not an IndexOutOfBoundsException")
  void shortHeader() {
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Header.read(Wire.buf("0100000001000000")));
    assertEquals(Kind.TRUNCATED, e.kind());
    assertEquals(8, e.actual());
    assertEquals(12, e.expected());
  }

  @ParameterizedTest
  @ValueSource(ints = {0x1, 0x9})
  @DisplayName("request flags: version 1, NEED_REPLY optional")
  void goodRequestFlags(int flags) {
    assertDoesNotThrow(() -> Requests.checkHeader(new Header(1, flags, 0)));
    assertDoesNotThrow(() -> BackendRequests.checkHeader(new Header(5, flags, 8)));
  }

  @ParameterizedTest
  @ValueSource(ints = {0x0, 0x2, 0x3, 0x8, 0xA, 0xB})
  @DisplayName("request flags with a version other than 1 are BAD_FLAGS")
  void wrongVersion(int flags) {
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Requests.checkHeader(new Header(1, flags, 0)));
    assertEquals(Kind.BAD_FLAGS, e.kind());
    assertTrue(e.getMessage().startsWith("GET_FEATURES (1): version "), e.getMessage());
    assertTrue(e.framingIntact());
  }

  @ParameterizedTest
  @ValueSource(ints = {0x11, 0x19, 0x101, 0x80000001, 0xFFFFFFF1})
  @DisplayName("undefined flag bits are BAD_FLAGS, and NEED_REPLY still tells the session to reply")
  void undefinedFlagBits(int flags) {
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Requests.checkHeader(new Header(2, flags, 8)));
    assertEquals(Kind.BAD_FLAGS, e.kind());
    assertTrue(e.getMessage().contains("undefined bits"), e.getMessage());
    assertEquals((flags & Header.NEED_REPLY) != 0, e.replyExpected());
    assertEquals(2, e.requestCode());
    assertEquals("SET_FEATURES", e.requestName());
  }

  @ParameterizedTest
  @ValueSource(ints = {0x5, 0xD})
  @DisplayName("a request with REPLY set is BAD_FLAGS")
  void replyFlagOnRequest(int flags) {
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Requests.checkHeader(new Header(39, flags, 8)));
    assertEquals(Kind.BAD_FLAGS, e.kind());
    assertEquals(
        "SET_STATUS (39): flags " + hex(flags) + " mark a reply, but this is a request",
        e.getMessage());
  }

  @Test
  @DisplayName("a payload over MAX_PAYLOAD is TOO_LARGE and ends the framing; MAX_PAYLOAD passes")
  void sizeBound() {
    assertDoesNotThrow(() -> Requests.checkHeader(new Header(24, 1, Header.MAX_PAYLOAD)));
    ProtocolException e =
        assertThrows(
            ProtocolException.class,
            () -> Requests.checkHeader(new Header(24, 0x9, Header.MAX_PAYLOAD + 1)));
    assertEquals(Kind.TOO_LARGE, e.kind());
    assertFalse(e.framingIntact());
    assertTrue(e.replyExpected());
    assertEquals(Header.MAX_PAYLOAD + 1, e.actual());
    assertEquals(Header.MAX_PAYLOAD, e.expected());
    assertEquals("GET_CONFIG (24): payload of 4097 bytes announced, at most 4096", e.getMessage());
  }

  @Test
  @DisplayName("a size with the top bit set is a large unsigned number, not a negative one")
  void unsignedSize() {
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Requests.checkHeader(new Header(5, 1, -1)));
    assertEquals(Kind.TOO_LARGE, e.kind());
    assertEquals(0xFFFF_FFFFL, e.actual());
  }

  @Test
  @DisplayName("the size bound is checked before the flags, so framingIntact is right")
  void sizeBeforeFlags() {
    ProtocolException e =
        assertThrows(
            ProtocolException.class, () -> Requests.checkHeader(new Header(5, 0x40, 100000)));
    assertEquals(Kind.TOO_LARGE, e.kind());
  }

  @ParameterizedTest
  @ValueSource(ints = {0x1, 0x4, 0x7, 0x9, 0xD, 0x15, 0x0})
  @DisplayName("reply flags must be exactly 0x5 (QEMU rejects anything else)")
  void replyFlagsExactly5(int flags) {
    ProtocolException e =
        assertThrows(
            ProtocolException.class,
            () -> Replies.checkHeader(new Header(1, flags, 8), FrontendRequest.GET_FEATURES));
    assertEquals(Kind.BAD_FLAGS, e.kind());
    assertEquals(
        "GET_FEATURES (1): reply flags " + hex(flags) + ", expected exactly 0x5", e.getMessage());
    assertFalse(e.replyExpected());
    assertDoesNotThrow(
        () -> Replies.checkHeader(new Header(1, 0x5, 8), FrontendRequest.GET_FEATURES));
  }

  @Test
  @DisplayName("a reply to another request is UNEXPECTED_REPLY")
  void replyCodeMustMatch() {
    ProtocolException e =
        assertThrows(
            ProtocolException.class,
            () -> Replies.checkHeader(Header.reply(15, 8), FrontendRequest.GET_FEATURES));
    assertEquals(Kind.UNEXPECTED_REPLY, e.kind());
    assertEquals(15, e.actual());
    assertEquals(1, e.expected());
  }

  private static String hex(int flags) {
    return "0x" + Integer.toHexString(flags);
  }
}
