package dev.bounce.vhost.protocol;

import java.util.function.IntFunction;

/**
 * What the codec needs to know of a request on either channel: its code, the layout of its payload
 * and the fds that belong with it, for the request and for its reply ({@code replyPayload} null: it
 * replies only if asked, with a u64 status).
 */
public record RequestLayout(
    int code, PayloadKind payload, FdRule fds, PayloadKind replyPayload, FdRule replyFds) {

  /** A request that replies only when asked (NEED_REPLY with REPLY_ACK). */
  static RequestLayout of(int code, PayloadKind payload, FdRule fds) {
    return new RequestLayout(code, payload, fds, null, FdRule.NONE);
  }

  /** The requests indexed by code, checked for duplicates; unused codes stay null. */
  static <R extends Request> R[] byCode(R[] requests, IntFunction<R[]> array, int size) {
    R[] byCode = array.apply(size);
    for (R r : requests) {
      if (byCode[r.code()] != null) throw new AssertionError("duplicate code " + r.code());
      byCode[r.code()] = r;
    }
    return byCode;
  }

  /** The request with {@code code} in a {@link #byCode} table, or null: never an exception. */
  static <R extends Request> R lookup(R[] byCode, int code) {
    return code > 0 && code < byCode.length ? byCode[code] : null;
  }
}
