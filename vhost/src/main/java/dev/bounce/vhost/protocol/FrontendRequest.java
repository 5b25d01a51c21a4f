package dev.bounce.vhost.protocol;

import static dev.bounce.vhost.protocol.FdRule.NONE;
import static dev.bounce.vhost.protocol.FdRule.ONE;
import static dev.bounce.vhost.protocol.FdRule.ONE_PER_REGION;
import static dev.bounce.vhost.protocol.FdRule.ONE_UNLESS_NOFD;
import static dev.bounce.vhost.protocol.FdRule.ZERO_OR_ONE;
import static dev.bounce.vhost.protocol.PayloadKind.CONFIG_SPACE;
import static dev.bounce.vhost.protocol.PayloadKind.DEVICE_STATE_TRANSFER;
import static dev.bounce.vhost.protocol.PayloadKind.EMPTY;
import static dev.bounce.vhost.protocol.PayloadKind.LOG;
import static dev.bounce.vhost.protocol.PayloadKind.MEMORY_TABLE;
import static dev.bounce.vhost.protocol.PayloadKind.OPAQUE;
import static dev.bounce.vhost.protocol.PayloadKind.SHARED_OBJECT;
import static dev.bounce.vhost.protocol.PayloadKind.SHMEM_CONFIG;
import static dev.bounce.vhost.protocol.PayloadKind.SINGLE_MEMORY_REGION;
import static dev.bounce.vhost.protocol.PayloadKind.U64;
import static dev.bounce.vhost.protocol.PayloadKind.VRING_ADDRESS;
import static dev.bounce.vhost.protocol.PayloadKind.VRING_FD_INDEX;
import static dev.bounce.vhost.protocol.PayloadKind.VRING_STATE;

/**
 * Front-end requests (vhost-user.rst, "Front-end message types"), by spec name without the
 * VHOST_USER_ prefix, with the id the spec gives each. 1-43 are in QEMU's vhost-user.rst;
 * GET_SHMEM_CONFIG (44) comes from the VIRTIO Shared Memory series (its v11 spec patch, which
 * rust-vmm/vhost implements). Ids 33 and 41-44 are here so that they are named in logs even though
 * bounce answers them with a failure.
 */
public enum FrontendRequest implements Request {
  GET_FEATURES(1, EMPTY, NONE, U64, NONE),
  SET_FEATURES(2, U64, NONE),
  SET_OWNER(3, EMPTY, NONE),
  /** Deprecated: "back-ends either ignore this message, or use it to disable all rings". */
  RESET_OWNER(4, EMPTY, NONE),
  SET_MEM_TABLE(5, MEMORY_TABLE, ONE_PER_REGION),
  /**
   * QEMU sends the log description (16 bytes), although the request list says u64. The fd and the
   * u64 reply come only with LOG_SHMFD.
   */
  SET_LOG_BASE(6, LOG, ZERO_OR_ONE, U64, NONE),
  SET_LOG_FD(7, EMPTY, ONE),
  SET_VRING_NUM(8, VRING_STATE, NONE),
  SET_VRING_ADDR(9, VRING_ADDRESS, NONE),
  SET_VRING_BASE(10, VRING_STATE, NONE),
  /** The request's num is reserved (DPDK sends junk there): only the index means anything. */
  GET_VRING_BASE(11, VRING_STATE, NONE, VRING_STATE, NONE),
  SET_VRING_KICK(12, VRING_FD_INDEX, ONE_UNLESS_NOFD),
  SET_VRING_CALL(13, VRING_FD_INDEX, ONE_UNLESS_NOFD),
  SET_VRING_ERR(14, VRING_FD_INDEX, ONE_UNLESS_NOFD),
  GET_PROTOCOL_FEATURES(15, EMPTY, NONE, U64, NONE),
  SET_PROTOCOL_FEATURES(16, U64, NONE),
  GET_QUEUE_NUM(17, EMPTY, NONE, U64, NONE),
  SET_VRING_ENABLE(18, VRING_STATE, NONE),
  /** The first 6 bytes of the u64 are the guest's MAC. */
  SEND_RARP(19, U64, NONE),
  NET_SET_MTU(20, U64, NONE),
  /** Once SET_SLAVE_REQ_FD. */
  SET_BACKEND_REQ_FD(21, EMPTY, ONE),
  /** struct vhost_iotlb_msg, C-padded; bounce does not implement a device IOTLB. */
  IOTLB_MSG(22, OPAQUE, NONE, U64, NONE),
  SET_VRING_ENDIAN(23, VRING_STATE, NONE),
  /**
   * The request carries the offset and size wanted (and size bytes of filler). The reply's size
   * must match; an empty reply payload is the back-end's way to report failure.
   */
  GET_CONFIG(24, CONFIG_SPACE, NONE, CONFIG_SPACE, NONE),
  SET_CONFIG(25, CONFIG_SPACE, NONE),
  CREATE_CRYPTO_SESSION(26, OPAQUE, NONE, OPAQUE, NONE),
  CLOSE_CRYPTO_SESSION(27, U64, NONE),
  /** The reply carries the userfault fd and no payload. */
  POSTCOPY_ADVISE(28, EMPTY, NONE, EMPTY, ONE),
  POSTCOPY_LISTEN(29, EMPTY, NONE),
  POSTCOPY_END(30, EMPTY, NONE, U64, NONE),
  /** Inflight description, C-padded; the reply carries the shared buffer's fd. */
  GET_INFLIGHT_FD(31, OPAQUE, NONE, OPAQUE, ONE),
  SET_INFLIGHT_FD(32, OPAQUE, ONE),
  GPU_SET_SOCKET(33, EMPTY, ONE),
  RESET_DEVICE(34, EMPTY, NONE),
  /** In-band kick; the state's num is reserved. */
  VRING_KICK(35, VRING_STATE, NONE),
  GET_MAX_MEM_SLOTS(36, EMPTY, NONE, U64, NONE),
  ADD_MEM_REG(37, SINGLE_MEMORY_REGION, ONE),
  REM_MEM_REG(38, SINGLE_MEMORY_REGION, ZERO_OR_ONE),
  SET_STATUS(39, U64, NONE),
  GET_STATUS(40, EMPTY, NONE, U64, NONE),
  /** The reply is a u64 status with the dma-buf fd on success. */
  GET_SHARED_OBJECT(41, SHARED_OBJECT, NONE, U64, ZERO_OR_ONE),
  /**
   * The reply's u64 has the no-fd flag in bit 8 when the back-end keeps the front-end's channel.
   */
  SET_DEVICE_STATE_FD(42, DEVICE_STATE_TRANSFER, ONE, U64, ZERO_OR_ONE),
  CHECK_DEVICE_STATE(43, EMPTY, NONE, U64, NONE),
  GET_SHMEM_CONFIG(44, EMPTY, NONE, SHMEM_CONFIG, NONE);

  private static final FrontendRequest[] BY_CODE =
      RequestLayout.byCode(values(), FrontendRequest[]::new, 64);

  private final RequestLayout layout;

  FrontendRequest(int code, PayloadKind payload, FdRule fds) {
    this.layout = RequestLayout.of(code, payload, fds);
  }

  FrontendRequest(
      int code, PayloadKind payload, FdRule fds, PayloadKind replyPayload, FdRule replyFds) {
    this.layout = new RequestLayout(code, payload, fds, replyPayload, replyFds);
  }

  /**
   * The request with this code, or null when there is none: an unknown code is the peer's problem,
   * never an exception here (the session answers it with a failure).
   */
  public static FrontendRequest fromCode(int code) {
    return RequestLayout.lookup(BY_CODE, code);
  }

  @Override
  public RequestLayout layout() {
    return layout;
  }

  @Override
  public String label() {
    return name();
  }

  /**
   * Whether the reply of its own is a u64 status (vhost-user.rst: zero for success, non-zero for
   * failure), so that a failure can be answered, as opposed to a value (GET_FEATURES,
   * GET_VRING_BASE ...) that no number can stand in for.
   */
  public boolean replyIsStatus() {
    return switch (this) {
      case SET_LOG_BASE,
          IOTLB_MSG,
          POSTCOPY_END,
          GET_SHARED_OBJECT,
          SET_DEVICE_STATE_FD,
          CHECK_DEVICE_STATE ->
          true;
      default -> false;
    };
  }

  /** The full spec name, e.g. VHOST_USER_SET_VRING_ADDR. */
  public String specName() {
    return "VHOST_USER_" + name();
  }
}
