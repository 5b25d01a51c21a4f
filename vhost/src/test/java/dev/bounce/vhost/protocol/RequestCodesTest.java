package dev.bounce.vhost.protocol;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;

import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Request codes and fd rules against the ":id:" lines of vhost-user.rst. */
class RequestCodesTest {
  /** Every front-end request with the id the spec gives it, in spec order. */
  private static final Map<String, Integer> FRONTEND = new LinkedHashMap<>();

  static {
    String[] names = {
      "GET_FEATURES",
      "SET_FEATURES",
      "SET_OWNER",
      "RESET_OWNER",
      "SET_MEM_TABLE",
      "SET_LOG_BASE",
      "SET_LOG_FD",
      "SET_VRING_NUM",
      "SET_VRING_ADDR",
      "SET_VRING_BASE",
      "GET_VRING_BASE",
      "SET_VRING_KICK",
      "SET_VRING_CALL",
      "SET_VRING_ERR",
      "GET_PROTOCOL_FEATURES",
      "SET_PROTOCOL_FEATURES",
      "GET_QUEUE_NUM",
      "SET_VRING_ENABLE",
      "SEND_RARP",
      "NET_SET_MTU",
      "SET_BACKEND_REQ_FD",
      "IOTLB_MSG",
      "SET_VRING_ENDIAN",
      "GET_CONFIG",
      "SET_CONFIG",
      "CREATE_CRYPTO_SESSION",
      "CLOSE_CRYPTO_SESSION",
      "POSTCOPY_ADVISE",
      "POSTCOPY_LISTEN",
      "POSTCOPY_END",
      "GET_INFLIGHT_FD",
      "SET_INFLIGHT_FD",
      "GPU_SET_SOCKET",
      "RESET_DEVICE",
      "VRING_KICK",
      "GET_MAX_MEM_SLOTS",
      "ADD_MEM_REG",
      "REM_MEM_REG",
      "SET_STATUS",
      "GET_STATUS",
      "GET_SHARED_OBJECT",
      "SET_DEVICE_STATE_FD",
      "CHECK_DEVICE_STATE",
      "GET_SHMEM_CONFIG"
    };
    for (int i = 0; i < names.length; i++) FRONTEND.put(names[i], i + 1);
  }

  @Test
  @DisplayName("every front-end request has the spec's id, and every id 1-44 has a request")
  void frontendCodesMatchTheSpec() {
    assertEquals(FRONTEND.size(), FrontendRequest.values().length);
    FRONTEND.forEach(
        (name, code) -> {
          FrontendRequest request = FrontendRequest.valueOf(name);
          assertEquals(code, request.code(), name);
          assertSame(request, FrontendRequest.fromCode(code), name);
          assertEquals("VHOST_USER_" + name, request.specName());
        });
  }

  @Test
  @DisplayName("back-end requests 1-10 have the spec's ids")
  void backendCodesMatchTheSpec() {
    String[] names = {
      "IOTLB_MSG",
      "CONFIG_CHANGE_MSG",
      "VRING_HOST_NOTIFIER_MSG",
      "VRING_CALL",
      "VRING_ERR",
      "SHARED_OBJECT_ADD",
      "SHARED_OBJECT_REMOVE",
      "SHARED_OBJECT_LOOKUP",
      "SHMEM_MAP",
      "SHMEM_UNMAP"
    };
    assertEquals(names.length, BackendRequest.values().length);
    for (int i = 0; i < names.length; i++) {
      BackendRequest request = BackendRequest.valueOf(names[i]);
      assertEquals(i + 1, request.code());
      assertSame(request, BackendRequest.fromCode(i + 1));
      assertEquals("BACKEND_" + names[i], request.label());
      assertEquals("VHOST_USER_BACKEND_" + names[i], request.specName());
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {0, 45, 63, 64, 1000, -1, Integer.MIN_VALUE, Integer.MAX_VALUE})
  @DisplayName("an unknown code looks up to null, never an exception")
  void unknownCodesAreNull(int code) {
    assertNull(FrontendRequest.fromCode(code));
    assertNull(BackendRequest.fromCode(code));
  }

  @Test
  @DisplayName("fd rules: the requests that carry fds, and how many")
  void fdRules() {
    assertEquals(FdRule.ONE_PER_REGION, FrontendRequest.SET_MEM_TABLE.fds());
    for (FrontendRequest r :
        new FrontendRequest[] {
          FrontendRequest.SET_VRING_KICK,
          FrontendRequest.SET_VRING_CALL,
          FrontendRequest.SET_VRING_ERR
        }) {
      assertEquals(FdRule.ONE_UNLESS_NOFD, r.fds(), r.label());
    }
    for (FrontendRequest r :
        new FrontendRequest[] {
          FrontendRequest.SET_LOG_FD,
          FrontendRequest.SET_BACKEND_REQ_FD,
          FrontendRequest.SET_INFLIGHT_FD,
          FrontendRequest.GPU_SET_SOCKET,
          FrontendRequest.ADD_MEM_REG,
          FrontendRequest.SET_DEVICE_STATE_FD
        }) {
      assertEquals(FdRule.ONE, r.fds(), r.label());
    }
    assertEquals(FdRule.ZERO_OR_ONE, FrontendRequest.SET_LOG_BASE.fds());
    assertEquals(FdRule.ZERO_OR_ONE, FrontendRequest.REM_MEM_REG.fds());
    long withFds =
        java.util.Arrays.stream(FrontendRequest.values())
            .filter(r -> r.fds() != FdRule.NONE)
            .count();
    assertEquals(12, withFds, "requests that may carry fds");
    assertEquals(FdRule.ONE_UNLESS_NOFD, BackendRequest.VRING_HOST_NOTIFIER_MSG.fds());
    assertEquals(FdRule.ONE, BackendRequest.SHMEM_MAP.fds());
  }

  @Test
  @DisplayName("the requests that always have a reply, with its layout")
  void replyLayouts() {
    assertEquals(PayloadKind.U64, FrontendRequest.GET_FEATURES.replyPayload());
    assertEquals(PayloadKind.U64, FrontendRequest.GET_PROTOCOL_FEATURES.replyPayload());
    assertEquals(PayloadKind.VRING_STATE, FrontendRequest.GET_VRING_BASE.replyPayload());
    assertEquals(PayloadKind.CONFIG_SPACE, FrontendRequest.GET_CONFIG.replyPayload());
    assertEquals(PayloadKind.SHMEM_CONFIG, FrontendRequest.GET_SHMEM_CONFIG.replyPayload());
    assertNull(FrontendRequest.SET_MEM_TABLE.replyPayload(), "only REPLY_ACK");
    assertNull(FrontendRequest.SET_STATUS.replyPayload(), "only REPLY_ACK");
  }
}
