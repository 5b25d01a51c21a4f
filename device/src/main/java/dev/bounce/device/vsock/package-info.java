/**
 * The virtio-vsock device and everything around it.
 *
 * <ul>
 *   <li>The device: {@link dev.bounce.device.vsock.VsockDevice} (id 19; rx, tx and, when the
 *       frontend hands it over, the event queue; config = guest CID), {@link
 *       dev.bounce.device.vsock.VsockHeader} and {@link dev.bounce.device.vsock.Op} (the 44-byte
 *       header, parsed in place), {@link dev.bounce.device.vsock.VsockConnection} (state, credit
 *       flow control, bounded {@link dev.bounce.device.vsock.ByteRing}s each way), {@link
 *       dev.bounce.device.vsock.HostReads} (host-to-guest stream bytes read from the host socket
 *       straight into rx buffers), {@link dev.bounce.device.vsock.Siblings} (guests of one process
 *       reaching each other's CIDs, each with a bounded {@link dev.bounce.device.vsock.Inbox}).
 *   <li>The host side, behind {@link dev.bounce.device.vsock.HostSide}: {@link
 *       dev.bounce.device.vsock.UnixHost}, the hybrid vsock of vhost-device-vsock and Firecracker
 *       (Netty channels for streams, SOCK_SEQPACKET sockets for SEQPACKET), and the in-memory
 *       {@link dev.bounce.device.vsock.LoopbackHost} for tests.
 *   <li>The guest side, for the fake frontend: {@link dev.bounce.device.vsock.VsockDriver} and
 *       {@link dev.bounce.device.vsock.VsockWorkload}.
 * </ul>
 *
 * <p>Known gaps: a guest's half-open connection with no traffic is never timed out, nor is Linux's
 * close timeout (RST after SHUTDOWN when the peer stays silent) modelled on the host side;
 * VIRTIO_VSOCK_F_STREAM (bit 0) is not offered (Linux 6.1 does not know it).
 */
package dev.bounce.device.vsock;
