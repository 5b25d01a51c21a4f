package dev.bounce.vhost.protocol;

import static dev.bounce.vhost.protocol.FdRule.NONE;
import static dev.bounce.vhost.protocol.FdRule.ONE;
import static dev.bounce.vhost.protocol.FdRule.ONE_UNLESS_NOFD;
import static dev.bounce.vhost.protocol.FdRule.ZERO_OR_ONE;
import static dev.bounce.vhost.protocol.PayloadKind.EMPTY;
import static dev.bounce.vhost.protocol.PayloadKind.OPAQUE;
import static dev.bounce.vhost.protocol.PayloadKind.SHARED_OBJECT;
import static dev.bounce.vhost.protocol.PayloadKind.SHMEM_MAPPING;
import static dev.bounce.vhost.protocol.PayloadKind.U64;
import static dev.bounce.vhost.protocol.PayloadKind.VRING_AREA;
import static dev.bounce.vhost.protocol.PayloadKind.VRING_STATE;

/**
 * Back-end requests (vhost-user.rst, "Back-end message types"), sent by the back-end on the channel
 * from SET_BACKEND_REQ_FD. Spec names are VHOST_USER_BACKEND_* (once VHOST_USER_SLAVE_*); the
 * constants drop the prefix. 1-8 are in QEMU's vhost-user.rst; SHMEM_MAP/UNMAP (9, 10) come from
 * the VIRTIO Shared Memory series.
 */
public enum BackendRequest implements Request {
  /** struct vhost_iotlb_msg (miss or access failure). */
  IOTLB_MSG(1, OPAQUE, NONE),
  /** The config space changed; the front-end re-reads it with GET_CONFIG. */
  CONFIG_CHANGE_MSG(2, EMPTY, NONE),
  VRING_HOST_NOTIFIER_MSG(3, VRING_AREA, ONE_UNLESS_NOFD),
  /** In-band call; the state's num is reserved. */
  VRING_CALL(4, VRING_STATE, NONE),
  /** In-band error; the state's num is reserved. */
  VRING_ERR(5, VRING_STATE, NONE),
  SHARED_OBJECT_ADD(6, SHARED_OBJECT, NONE),
  SHARED_OBJECT_REMOVE(7, SHARED_OBJECT, NONE),
  /** The reply is a u64 status with the dma-buf fd on success. */
  SHARED_OBJECT_LOOKUP(8, SHARED_OBJECT, NONE, U64, ZERO_OR_ONE),
  SHMEM_MAP(9, SHMEM_MAPPING, ONE),
  SHMEM_UNMAP(10, SHMEM_MAPPING, NONE);

  private static final BackendRequest[] BY_CODE =
      RequestLayout.byCode(values(), BackendRequest[]::new, 16);

  private final RequestLayout layout;

  BackendRequest(int code, PayloadKind payload, FdRule fds) {
    this.layout = RequestLayout.of(code, payload, fds);
  }

  BackendRequest(
      int code, PayloadKind payload, FdRule fds, PayloadKind replyPayload, FdRule replyFds) {
    this.layout = new RequestLayout(code, payload, fds, replyPayload, replyFds);
  }

  /** The request with this code, or null when there is none. */
  public static BackendRequest fromCode(int code) {
    return RequestLayout.lookup(BY_CODE, code);
  }

  /** BACKEND_ + the name, so that VRING_ERR on this channel is not read as the front-end's. */
  @Override
  public RequestLayout layout() {
    return layout;
  }

  @Override
  public String label() {
    return "BACKEND_" + name();
  }

  /** The full spec name, e.g. VHOST_USER_BACKEND_VRING_ERR. */
  public String specName() {
    return "VHOST_USER_BACKEND_" + name();
  }
}
