package dev.bounce.vhost.protocol;

/**
 * A message that breaks the vhost-user protocol: bad header flags, an unknown request, a payload of
 * the wrong size, the wrong number of fds, a field out of range. Checked, because every caller (the
 * session, the fake frontend) has to decide what to tell the peer; it carries no stack trace
 * because the cause is the peer, not our code.
 *
 * <p>Every fd that came with the failed message has been closed by the time this is thrown.
 */
public final class ProtocolException extends Exception {
  private static final long serialVersionUID = 1L;

  /** What was wrong, for code that reacts differently (counters, whether to reply). */
  public enum Kind {
    /** The payload buffer held fewer bytes than the header announced. */
    TRUNCATED,
    /** The header announced a payload over {@link Header#MAX_PAYLOAD}. */
    TOO_LARGE,
    /** Version bits not 1, unknown flag bits, REPLY on a request, or reply flags not 0x5. */
    BAD_FLAGS,
    /** A request code this side does not know. */
    UNKNOWN_REQUEST,
    /** The payload size does not fit the request's layout. */
    WRONG_SIZE,
    /** Too many fds, fds where none belong, or a missing one. */
    BAD_FD_COUNT,
    /** A field holds a value the spec does not allow (region count, flag bits, ranges). */
    BAD_VALUE,
    /** A reply for another request than the one sent. */
    UNEXPECTED_REPLY
  }

  private final Kind kind;
  private final int requestCode;
  private final String requestName;
  private final boolean replyExpected;
  private final long actual;
  private final long expected;

  ProtocolException(
      Kind kind,
      int requestCode,
      String requestName,
      boolean replyExpected,
      String detail,
      long actual,
      long expected) {
    super(name(requestCode, requestName) + ": " + detail, null, false, false);
    this.kind = kind;
    this.requestCode = requestCode;
    this.requestName = requestName;
    this.replyExpected = replyExpected;
    this.actual = actual;
    this.expected = expected;
  }

  static ProtocolException of(
      Kind kind, int code, Request request, boolean replyExpected, String detail) {
    return new ProtocolException(
        kind, code, request == null ? null : request.label(), replyExpected, detail, -1, -1);
  }

  static ProtocolException of(
      Kind kind,
      int code,
      Request request,
      boolean replyExpected,
      String detail,
      long actual,
      long expected) {
    return new ProtocolException(
        kind,
        code,
        request == null ? null : request.label(),
        replyExpected,
        detail,
        actual,
        expected);
  }

  private static String name(int code, String name) {
    String number = Integer.toUnsignedString(code);
    return name == null ? "request " + number : name + " (" + number + ")";
  }

  public Kind kind() {
    return kind;
  }

  /** The request code from the header, known or not. */
  public int requestCode() {
    return requestCode;
  }

  /** The request's spec name (without VHOST_USER_), or null when the code is unknown. */
  public String requestName() {
    return requestName;
  }

  /**
   * Whether the peer set NEED_REPLY and so waits for an answer: the session should send a failure
   * reply (u64 non-zero, REPLY_ACK) if the connection can go on, rather than leave it hanging.
   */
  public boolean replyExpected() {
    return replyExpected;
  }

  /**
   * Whether the message boundaries are still known, so the connection can go on after a failure
   * reply. False when the announced size was over the bound or the payload came short: the next
   * header cannot be found, and the connection must be closed.
   */
  public boolean framingIntact() {
    return kind != Kind.TOO_LARGE && kind != Kind.TRUNCATED;
  }

  /** The offending number (a size in bytes, an fd count), or -1 when there is none. */
  public long actual() {
    return actual;
  }

  /** What the number should have been (for a range, its upper end), or -1 when there is none. */
  public long expected() {
    return expected;
  }
}
