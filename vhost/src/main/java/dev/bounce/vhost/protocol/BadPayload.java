package dev.bounce.vhost.protocol;

/**
 * A payload decoder's complaint, before it is known which request it belongs to. The codec turns it
 * into a {@link ProtocolException} that names the request; payload classes stay free of
 * message-level context.
 */
final class BadPayload extends Exception {
  private static final long serialVersionUID = 1L;

  final ProtocolException.Kind kind;
  final long actual;
  final long expected;

  BadPayload(ProtocolException.Kind kind, String detail, long actual, long expected) {
    super(detail, null, false, false);
    this.kind = kind;
    this.actual = actual;
    this.expected = expected;
  }

  /** A field holds a value the spec does not allow. */
  static BadPayload value(String detail) {
    return new BadPayload(ProtocolException.Kind.BAD_VALUE, detail, -1, -1);
  }

  /** The payload is not the size its layout needs. */
  static BadPayload size(String detail, long actual, long expected) {
    return new BadPayload(ProtocolException.Kind.WRONG_SIZE, detail, actual, expected);
  }
}
