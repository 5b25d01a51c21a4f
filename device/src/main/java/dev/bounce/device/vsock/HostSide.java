package dev.bounce.device.vsock;

import dev.bounce.pool.IoVectors;

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
   * The guest asks to connect to host port {@link VsockConnection#hostPort()}. Once the host end is
   * connected, during this call or later, the host side says so with {@link
   * VsockConnection#accept}: only then does the guest get its RESPONSE. A host end that fails to
   * connect later resets the connection.
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

    /** What {@link #readInto} returns when the kernel could not write the guest's buffers. */
    long GUEST_MEMORY_FAULT = -1;

    /**
     * How many bytes for the guest wait at the host now, for {@link #readInto} (see {@link
     * VsockConnection#bytesWaitAtHost}); 0 when none, and the endpoint says {@code bytesWaitAtHost}
     * again when some come.
     */
    default int bytesAtHost(VsockConnection connection) {
      return 0;
    }

    /**
     * Reads bytes for the guest from the host straight into {@code buffers}, pieces of the guest's
     * receive buffers, with one read, after {@link #bytesAtHost} said some wait; asked only while
     * nothing {@link VsockConnection#write} took waits for the guest, so bytes stay in order. Must
     * not end the connection meanwhile (a failed read ends it later, from the loop).
     *
     * @return the bytes read, or {@link #GUEST_MEMORY_FAULT} when the read failed with EFAULT (the
     *     frontend took the guest memory away: the queue stops, as on a fault in bounce's own copy)
     */
    default long readInto(VsockConnection connection, IoVectors buffers) {
      return 0;
    }

    /** The guest shut down its side: {@link VsockHeader#SHUTDOWN_RCV} and/or SEND. */
    void peerShutdown(VsockConnection connection, int flags);

    /** The connection is gone (reset by either side, refused, or the device reset). */
    void closed(VsockConnection connection);
  }
}
