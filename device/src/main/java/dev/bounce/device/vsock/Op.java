package dev.bounce.device.vsock;

/**
 * The {@code op} field of a vsock header (virtio 1.2 section 5.10.6, {@code enum virtio_vsock_op}).
 * Plain ints: headers are parsed without allocation.
 */
public final class Op {
  public static final int INVALID = 0;
  public static final int REQUEST = 1;
  public static final int RESPONSE = 2;
  public static final int RST = 3;
  public static final int SHUTDOWN = 4;
  public static final int RW = 5;
  public static final int CREDIT_UPDATE = 6;
  public static final int CREDIT_REQUEST = 7;

  private static final String[] NAMES = {
    "INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN", "RW", "CREDIT_UPDATE", "CREDIT_REQUEST"
  };

  private Op() {}

  /** Whether {@code op} is one a peer may send (INVALID is not). */
  public static boolean isKnown(int op) {
    return op >= REQUEST && op <= CREDIT_REQUEST;
  }

  public static String name(int op) {
    return op >= 0 && op < NAMES.length ? NAMES[op] : "op " + op;
  }
}
