package dev.bounce.vhost.protocol;

/**
 * A request code on one of the two vhost-user channels: {@link FrontendRequest} on the main socket
 * (front-end to back-end), {@link BackendRequest} on the back-end channel set up by
 * SET_BACKEND_REQ_FD. Both carry what the codec needs to check a message: the payload layout and
 * the fds that belong with it, for the request and for its reply.
 */
public sealed interface Request permits FrontendRequest, BackendRequest {
  /** The code and the payload and fd rules of the request and its reply. */
  RequestLayout layout();

  /** The spec name without the VHOST_USER_ prefix, as logs print it. */
  String label();

  /** The number in the header's request field. */
  default int code() {
    return layout().code();
  }

  /** The layout of the request's payload. */
  default PayloadKind payload() {
    return layout().payload();
  }

  /** The fds the request carries. */
  default FdRule fds() {
    return layout().fds();
  }

  /**
   * The layout of the reply the receiver always sends, or null when it replies only if asked
   * (NEED_REPLY with REPLY_ACK), and then with a u64 status.
   */
  default PayloadKind replyPayload() {
    return layout().replyPayload();
  }

  /** The fds a reply may carry. */
  default FdRule replyFds() {
    return layout().replyFds();
  }
}
