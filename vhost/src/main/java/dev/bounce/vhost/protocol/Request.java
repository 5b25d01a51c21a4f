package dev.bounce.vhost.protocol;

/**
 * A request code on one of the two vhost-user channels: {@link FrontendRequest} on the main socket
 * (front-end to back-end), {@link BackendRequest} on the back-end channel set up by
 * SET_BACKEND_REQ_FD. Both carry what the codec needs to check a message: the payload layout and
 * the fds that belong with it, for the request and for its reply.
 */
public sealed interface Request permits FrontendRequest, BackendRequest {
  /** The number in the header's request field. */
  int code();

  /** The spec name without the VHOST_USER_ prefix, as logs print it. */
  String label();

  /** The layout of the request's payload. */
  PayloadKind payload();

  /** The fds the request carries. */
  FdRule fds();

  /**
   * The layout of the reply the receiver always sends, or null when it replies only if asked
   * (NEED_REPLY with REPLY_ACK), and then with a u64 status.
   */
  PayloadKind replyPayload();

  /** The fds a reply may carry. */
  FdRule replyFds();
}
