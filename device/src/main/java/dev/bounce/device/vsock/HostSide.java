package dev.bounce.device.vsock;

/**
 * Where a {@link VsockDevice}'s connections end on the host: the hybrid-vsock Unix sockets of
 * vhost-device-vsock and Firecracker (to come), or {@link LoopbackHost} in tests. Every method runs
 * on the device's data loop, and the host side calls the device ({@link
 * VsockDevice#connectToGuest}, the {@link VsockConnection} methods) only from that loop too: host
 * channels belong on {@link VsockDevice#dataLoop()}.
 */
public interface HostSide {
  /** A driver is being served: {@code device} accepts host connections to the guest from now on. */
  void attach(VsockDevice device);

  /**
   * The guest asks to connect to host port {@link VsockConnection#hostPort()}.
   *
   * @return the endpoint that takes the connection, or null to refuse it (the guest gets RST)
   */
  HostEndpoint guestConnect(VsockConnection connection);

  /** The driver went away or reset the device: every connection was closed before this. */
  void detach();

  /** One connection's host end: what the device tells it. */
  interface HostEndpoint {
    /** A connection the host asked for ({@link VsockDevice#connectToGuest}) was accepted. */
    default void connected(VsockConnection connection) {}

    /** Bytes from the guest wait: take them with {@link VsockConnection#read}. */
    void readable(VsockConnection connection);

    /** Room for bytes to the guest was freed: {@link VsockConnection#write} takes more. */
    void writable(VsockConnection connection);

    /** The guest shut down its side: {@link VsockHeader#SHUTDOWN_RCV} and/or SEND. */
    void peerShutdown(VsockConnection connection, int flags);

    /** The connection is gone (reset by either side, refused, or the device reset). */
    void closed(VsockConnection connection);
  }
}
