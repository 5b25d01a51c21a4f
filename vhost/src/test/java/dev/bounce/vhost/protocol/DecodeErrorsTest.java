package dev.bounce.vhost.protocol;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Fd;
import dev.bounce.pool.testing.OpenFds;
import dev.bounce.vhost.protocol.ProtocolException.Kind;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.List;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Malformed requests: each is a {@link ProtocolException} of the right kind, naming the request and
 * the numbers, and every fd that came with it is closed.
 */
class DecodeErrorsTest {
  private static final String REGION_LOW =
      "0000000000000000 00000a0000000000 00f0ff0b8d7f0000 0000000000000000";

  /**
   * Decodes {@code code}/{@code flags}/{@code payload} with {@code fdCount} real eventfds, expects
   * a failure of {@code kind}, and checks that every fd was closed and the process holds no more
   * fds than before.
   */
  private static ProtocolException fails(
      Kind kind, int code, int flags, String payload, int fdCount) throws Exception {
    int before = OpenFds.count();
    List<Fd> fds = Wire.eventFds(fdCount);
    ByteBuf message = Unpooled.buffer();
    Requests.encodeRaw(message, code, flags, Wire.hex(payload));
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Wire.decodeRequest(message, fds));
    assertEquals(kind, e.kind(), e.getMessage());
    assertEquals(code, e.requestCode());
    assertTrue(Wire.allClosed(fds), "every fd given to a failed decode is closed");
    OpenFds.assertBackTo(before);
    return e;
  }

  private static ProtocolException fails(Kind kind, FrontendRequest r, String payload, int fds)
      throws Exception {
    return fails(kind, r.code(), Header.VERSION, payload, fds);
  }

  @ParameterizedTest
  @EnumSource(FrontendRequest.class)
  @DisplayName("a fixed-size payload one byte short or long is WRONG_SIZE with both sizes")
  void wrongFixedSize(FrontendRequest request) throws Exception {
    int size = request.payload().fixedSize();
    if (size < 0) return;
    int fds = request.fds() == FdRule.ONE ? 1 : 0;
    ProtocolException longer = fails(Kind.WRONG_SIZE, request, "00".repeat(size + 1), fds);
    assertEquals(size + 1, longer.actual());
    assertEquals(size, longer.expected());
    assertEquals(request.label(), longer.requestName());
    assertTrue(longer.framingIntact());
    if (size > 0) {
      ProtocolException shorter = fails(Kind.WRONG_SIZE, request, "00".repeat(size - 1), fds);
      assertEquals(size - 1, shorter.actual());
    }
  }

  @Test
  @DisplayName("the message names request, code and sizes")
  void wrongSizeMessage() throws Exception {
    ProtocolException e =
        fails(Kind.WRONG_SIZE, FrontendRequest.SET_VRING_ADDR, "00".repeat(36), 0);
    assertEquals("SET_VRING_ADDR (9): payload is 36 bytes, expected 40", e.getMessage());
    assertEquals(0, e.getStackTrace().length, "no stack trace for a peer's error");
  }

  @Test
  @DisplayName("a payload buffer shorter than the header says is TRUNCATED; longer is WRONG_SIZE")
  void truncated() throws Exception {
    List<Fd> fds = Wire.eventFds(1);
    ProtocolException e =
        assertThrows(
            ProtocolException.class,
            () -> Requests.decode(new Header(13, 1, 8), Unpooled.wrappedBuffer(new byte[4]), fds));
    assertEquals(Kind.TRUNCATED, e.kind());
    assertFalse(e.framingIntact());
    assertEquals(4, e.actual());
    assertEquals(8, e.expected());
    assertTrue(Wire.allClosed(fds));

    ProtocolException longer =
        assertThrows(
            ProtocolException.class,
            () -> Requests.decode(new Header(1, 1, 0), Unpooled.wrappedBuffer(new byte[4]), null));
    assertEquals(Kind.WRONG_SIZE, longer.kind());
  }

  @Test
  @DisplayName("a header over MAX_PAYLOAD fails before any payload is looked at; fds closed")
  void tooLarge() throws Exception {
    List<Fd> fds = Wire.eventFds(2);
    ProtocolException e =
        assertThrows(
            ProtocolException.class,
            () -> Requests.decode(new Header(5, 0x9, 5000), Unpooled.EMPTY_BUFFER, fds));
    assertEquals(Kind.TOO_LARGE, e.kind());
    assertTrue(e.replyExpected());
    assertTrue(Wire.allClosed(fds));
  }

  @ParameterizedTest
  @ValueSource(ints = {0, 45, 99, 0x7FFFFFFF, 0xFFFFFFFF})
  @DisplayName("an unknown request code is UNKNOWN_REQUEST, framing intact, fds closed")
  void unknownRequest(int code) throws Exception {
    ProtocolException e = fails(Kind.UNKNOWN_REQUEST, code, 0x9, "0000000000000000", 1);
    assertEquals(
        "request " + Integer.toUnsignedString(code) + ": unknown front-end request code",
        e.getMessage());
    assertTrue(e.replyExpected(), "NEED_REPLY was set: the session can refuse it");
    assertTrue(e.framingIntact());
    assertEquals(null, e.requestName());
    assertFalse(fails(Kind.UNKNOWN_REQUEST, code, 0x1, "", 0).replyExpected(), "no NEED_REPLY");
  }

  @Test
  @DisplayName("bad flags are reported before the code is looked up, fds closed")
  void badFlagsOnDecode() throws Exception {
    fails(Kind.BAD_FLAGS, 13, 0x5, "0000000000000000", 1);
    fails(Kind.BAD_FLAGS, 13, 0x21, "0000000000000000", 1);
    fails(Kind.BAD_FLAGS, 99, 0x2, "", 0);
  }

  // --- fd counts

  @Test
  @DisplayName("more than 8 fds is BAD_FD_COUNT whatever the request")
  void tooManyFds() throws Exception {
    ProtocolException e =
        fails(
            Kind.BAD_FD_COUNT,
            FrontendRequest.SET_MEM_TABLE,
            "08000000 00000000" + REGION_LOW.repeat(8),
            9);
    assertEquals(9, e.actual());
    assertEquals(8, e.expected());
  }

  @Test
  @DisplayName("fds on a request that takes none")
  void fdsWhereNoneBelong() throws Exception {
    ProtocolException e =
        fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_FEATURES, "0000004001000000", 1);
    assertEquals("SET_FEATURES (2): carries 1 fd, takes none", e.getMessage());
    fails(Kind.BAD_FD_COUNT, FrontendRequest.GET_FEATURES, "", 2);
    fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_VRING_ADDR, "00".repeat(40), 1);
  }

  @Test
  @DisplayName("SET_VRING_CALL with the no-fd bit and an fd")
  void noFdBitWithFd() throws Exception {
    ProtocolException e =
        fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_VRING_CALL, "0001000000000000", 1);
    assertEquals(
        "SET_VRING_CALL (13): carries 1 fd, takes none with the no-fd flag set", e.getMessage());
  }

  @Test
  @DisplayName("SET_VRING_CALL without the no-fd bit and no fd")
  void noBitNoFd() throws Exception {
    ProtocolException e =
        fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_VRING_CALL, "0000000000000000", 0);
    assertEquals(
        "SET_VRING_CALL (13): carries 0 fds, expected 1 (the no-fd flag is not set)",
        e.getMessage());
    fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_VRING_KICK, "0100000000000000", 2);
  }

  @Test
  @DisplayName("SET_MEM_TABLE needs exactly one fd per region")
  void memTableFds() throws Exception {
    String two =
        "02000000 00000000"
            + REGION_LOW
            + REGION_LOW.replace("0000000000000000 00000a", "0000100000000000 00000a");
    ProtocolException fewer = fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_MEM_TABLE, two, 1);
    assertEquals("SET_MEM_TABLE (5): carries 1 fd, expected 2", fewer.getMessage());
    fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_MEM_TABLE, two, 3);
    fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_MEM_TABLE, two, 0);
  }

  @Test
  @DisplayName(
      "exactly-one requests: ADD_MEM_REG, SET_BACKEND_REQ_FD; REM_MEM_REG takes at most one")
  void exactlyOne() throws Exception {
    String region = "0000000000000000" + REGION_LOW;
    fails(Kind.BAD_FD_COUNT, FrontendRequest.ADD_MEM_REG, region, 0);
    fails(Kind.BAD_FD_COUNT, FrontendRequest.ADD_MEM_REG, region, 2);
    fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_BACKEND_REQ_FD, "", 0);
    fails(Kind.BAD_FD_COUNT, FrontendRequest.SET_BACKEND_REQ_FD, "", 2);
    ProtocolException rem = fails(Kind.BAD_FD_COUNT, FrontendRequest.REM_MEM_REG, region, 2);
    assertEquals("REM_MEM_REG (38): carries 2 fds, expected 0 to 1", rem.getMessage());
  }

  // --- field values

  @Test
  @DisplayName("memory table: region count 0 or 9, size not matching the count")
  void memoryTableValues() throws Exception {
    ProtocolException zero =
        fails(Kind.BAD_VALUE, FrontendRequest.SET_MEM_TABLE, "00000000 00000000", 0);
    assertEquals("SET_MEM_TABLE (5): region count 0, expected 1 to 8", zero.getMessage());
    fails(
        Kind.BAD_VALUE,
        FrontendRequest.SET_MEM_TABLE,
        "09000000 00000000" + REGION_LOW.repeat(9),
        8);
    ProtocolException size =
        fails(Kind.WRONG_SIZE, FrontendRequest.SET_MEM_TABLE, "02000000 00000000" + REGION_LOW, 2);
    assertEquals(40, size.actual());
    assertEquals(72, size.expected());
    fails(Kind.WRONG_SIZE, FrontendRequest.SET_MEM_TABLE, "010000", 1);
    fails(Kind.WRONG_SIZE, FrontendRequest.SET_MEM_TABLE, "", 1);
  }

  @Test
  @DisplayName("regions MemoryRegionDescription refuses are BAD_VALUE")
  void badRegions() throws Exception {
    String zeroSize = "0000000000000000 0000000000000000 0000000000000000 0000000000000000";
    ProtocolException e =
        fails(Kind.BAD_VALUE, FrontendRequest.SET_MEM_TABLE, "01000000 00000000" + zeroSize, 1);
    assertTrue(
        e.getMessage().startsWith("SET_MEM_TABLE (5): region[0]: region size"), e.getMessage());
    String wraps = "00f0ffffffffffff 0020000000000000 0000000000000000 0000000000000000";
    fails(Kind.BAD_VALUE, FrontendRequest.ADD_MEM_REG, "0000000000000000" + wraps, 1);
    String negativeOffset = "0000000000000000 0010000000000000 0000000000000000 00000000000000f0";
    fails(Kind.BAD_VALUE, FrontendRequest.REM_MEM_REG, "0000000000000000" + negativeOffset, 0);
  }

  @Test
  @DisplayName("config space: beyond 256 bytes, empty, or size field not matching the payload")
  void configValues() throws Exception {
    ProtocolException beyond =
        fails(
            Kind.BAD_VALUE,
            FrontendRequest.SET_CONFIG,
            "fc000000 08000000 00000000" + "00".repeat(8),
            0);
    assertEquals(
        "SET_CONFIG (25): config access at offset 252 of 8 bytes is not within 1 to 256 bytes",
        beyond.getMessage());
    fails(
        Kind.BAD_VALUE,
        FrontendRequest.GET_CONFIG,
        "ffffffff 08000000 00000000" + "00".repeat(8),
        0);
    fails(Kind.BAD_VALUE, FrontendRequest.GET_CONFIG, "00000000 00000000 00000000", 0);
    fails(
        Kind.BAD_VALUE,
        FrontendRequest.SET_CONFIG,
        "00000000 01010000 00000000" + "00".repeat(257),
        0);
    ProtocolException mismatch =
        fails(Kind.WRONG_SIZE, FrontendRequest.GET_CONFIG, "00000000 08000000 00000000 00", 0);
    assertEquals(13, mismatch.actual());
    assertEquals(20, mismatch.expected());
    fails(Kind.WRONG_SIZE, FrontendRequest.GET_CONFIG, "00000000 08000000 0000", 0);
    fails(Kind.WRONG_SIZE, FrontendRequest.GET_CONFIG, "00000000 ffffffff 00000000", 0);
  }

  @Test
  @DisplayName("kick/call/err words with bits beyond index and no-fd flag are BAD_VALUE")
  void vringFdWordBits() throws Exception {
    fails(Kind.BAD_VALUE, FrontendRequest.SET_VRING_KICK, "0002000000000000", 1);
    fails(Kind.BAD_VALUE, FrontendRequest.SET_VRING_ERR, "0000000000000080", 1);
    fails(Kind.BAD_VALUE, FrontendRequest.SET_VRING_CALL, "0000000001000000", 0);
  }

  @Test
  @DisplayName("vring address flags other than LOG are BAD_VALUE")
  void vringAddressFlags() throws Exception {
    ProtocolException e =
        fails(
            Kind.BAD_VALUE,
            FrontendRequest.SET_VRING_ADDR,
            "01000000 02000000" + "00".repeat(32),
            0);
    assertEquals(
        "SET_VRING_ADDR (9): vring 1 address flags 0x2 set undefined bits", e.getMessage());
  }

  @Test
  @DisplayName("back-end channel: unknown code, fd rules, bad mmap values; fds closed")
  void backendChannel() throws Exception {
    List<Fd> fds = Wire.eventFds(1);
    ByteBuf unknown = Unpooled.buffer();
    Requests.encodeRaw(unknown, 11, 1, new byte[0]);
    ProtocolException e =
        assertThrows(ProtocolException.class, () -> Wire.decodeBackendRequest(unknown, fds));
    assertEquals(Kind.UNKNOWN_REQUEST, e.kind());
    assertEquals("request 11: unknown back-end request code", e.getMessage());
    assertTrue(Wire.allClosed(fds));

    List<Fd> one = Wire.eventFds(1);
    ByteBuf err = Unpooled.buffer();
    BackendRequests.vringErr(err, 0, false);
    ProtocolException fdOnErr =
        assertThrows(ProtocolException.class, () -> Wire.decodeBackendRequest(err, one));
    assertEquals("BACKEND_VRING_ERR (5): carries 1 fd, takes none", fdOnErr.getMessage());
    assertTrue(Wire.allClosed(one));

    ByteBuf map = Unpooled.buffer();
    Requests.encodeRaw(
        map,
        9,
        1,
        Wire.hex("03" + "00".repeat(7) + "00".repeat(16) + "00".repeat(8) + "00".repeat(8)));
    List<Fd> mapFd = Wire.eventFds(1);
    ProtocolException zeroLength =
        assertThrows(ProtocolException.class, () -> Wire.decodeBackendRequest(map, mapFd));
    assertEquals(Kind.BAD_VALUE, zeroLength.kind());
    assertEquals("BACKEND_SHMEM_MAP (9): mmap length is 0", zeroLength.getMessage());
    assertTrue(Wire.allClosed(mapFd));
  }

  @Test
  @DisplayName("a bug-shaped failure (a null fd entry) still closes every fd given")
  void nullFdEntry() throws Exception {
    List<Fd> fds = Wire.eventFds(1);
    java.util.ArrayList<Fd> withNull = new java.util.ArrayList<>(fds);
    withNull.add(null);
    ByteBuf message = Unpooled.buffer();
    Requests.encodeRaw(message, 5, 1, Wire.hex("02000000 00000000" + REGION_LOW + REGION_LOW));
    assertThrows(NullPointerException.class, () -> Wire.decodeRequest(message, withNull));
    assertTrue(Wire.allClosed(fds));
  }
}
