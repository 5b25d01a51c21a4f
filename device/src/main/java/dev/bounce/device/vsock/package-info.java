/**
 * The virtio-vsock device (issue 5): {@link dev.bounce.device.vsock.VsockDevice} (id 19, rx and tx
 * queues as QEMU's vhost-user-vsock uses them, config = guest CID), {@link
 * dev.bounce.device.vsock.VsockHeader} and {@link dev.bounce.device.vsock.Op} (the 44-byte header,
 * parsed in place), {@link dev.bounce.device.vsock.VsockConnection} (state, credit flow control,
 * bounded {@link dev.bounce.device.vsock.ByteRing}s each way), the {@link
 * dev.bounce.device.vsock.HostSide} interface with the in-memory {@link
 * dev.bounce.device.vsock.LoopbackHost}, and the guest-side {@link
 * dev.bounce.device.vsock.VsockDriver} for the fake frontend.
 *
 * <p>What remains of issue 5:
 *
 * <ul>
 *   <li>The Unix-socket host side ({@code UnixHost implements HostSide}): listen on {@code
 *       --uds-path}, a LineBasedFrameDecoder for {@code CONNECT <port>\n}, reply {@code OK
 *       <host-port>\n} (vhost-device-vsock allocates the host port), then bytes; guest connections
 *       to host port P dial {@code <uds-path>_<P>}; failures become RST with a log line. Netty
 *       channels registered on {@link dev.bounce.device.vsock.VsockDevice#dataLoop()} (every
 *       HostSide call must be on that loop); channel writability drives {@code
 *       VsockConnection.writable()}/{@code read()} (autoRead off while the guest has no room).
 *       SEQPACKET over SOCK_SEQPACKET Unix sockets ({@code <uds-path>_<P>}, {@code
 *       <uds-path>.seqpacket}).
 *   <li>TRANSPORT_RESET on the event queue when the device restarts under a running guest (QEMU
 *       keeps the event queue for vhost-user-vsock; decide whether a third queue is served for
 *       other frontends, and send the event through it).
 *   <li>CLI: {@code bounce vsock --guest-cid --socket --uds-path [--tx-buffer-size]
 *       [--queue-size]}, repeated {@code --vm}, {@code --config FILE}; the demo.
 *   <li>Tests still to write: 1 GiB each way with a checksum, 10,000 sequential and 1,000
 *       concurrent connections (VsockDriver keeps a HashMap of sockets: fine, but connect() is
 *       synchronous), RST and SHUTDOWN from the host side, a host application that never reads,
 *       pool memory modes (restricted DMA) with VsockDriver, the QEMU 7.2 + Linux 6.1 test,
 *       scripts/bench-vsock.
 *   <li>Device details: the connection table boxes a Long key per lookup (a one-entry cache hides
 *       it on streams; a primitive map would remove it); host-side SEQPACKET messages larger than
 *       the buffer are cut by {@code VsockConnection.write}; a guest's half-open connection with no
 *       traffic is never timed out; Linux's close timeout (RST after SHUTDOWN if the peer stays
 *       silent) is not modelled on the host side; VIRTIO_VSOCK_F_STREAM (bit 0) is not offered
 *       (Linux 6.1 does not know it).
 * </ul>
 */
package dev.bounce.device.vsock;
