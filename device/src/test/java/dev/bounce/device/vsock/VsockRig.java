package dev.bounce.device.vsock;

import dev.bounce.pool.GuestMemory;
import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.loop.EventLoops;
import io.netty.channel.IoEventLoop;
import java.nio.file.Path;

/**
 * A vsock device served by the real engine on a real socket, with the fake frontend and {@link
 * VsockDriver} on the other end: what every vsock test starts from.
 */
final class VsockRig implements AutoCloseable {
  static final long GUEST_CID = 3;
  static final long RAM_START = 0x4000_0000L;
  static final long RAM_SIZE = 64L << 20;

  /** Builds the host side on the data loop the device will be served on. */
  @FunctionalInterface
  interface HostFactory {
    HostSide create(IoEventLoop dataLoop) throws Exception;
  }

  final EventLoops loops;
  final HostSide host;
  final VsockDevice device;
  final BackendServer server;
  final GuestRam ram;
  final FrontendSession session;
  final VsockDriver driver;

  VsockRig(Path dir, int queueSize, int bufferSize, int maxConnections, HostFactory hostFactory)
      throws Exception {
    loops = new EventLoops(2, "vsock-test");
    try {
      IoEventLoop control = loops.next();
      IoEventLoop data = loops.next();
      host = hostFactory.create(data);
      device = new VsockDevice(GUEST_CID, bufferSize, maxConnections, 1024, host);
      Path socket = dir.resolve("vsock.sock");
      server =
          BackendServer.listen(
              socket, new BackendServer.Config("vsock", device, control, data, GuestMemory::empty));
      ram = GuestRam.create(MemoryMode.SHARED, RAM_START, RAM_SIZE, 0, 0);
      session =
          FrontendSession.connect(socket, ram, VsockDriver.options(Handshake.QEMU, queueSize));
      driver = new VsockDriver(session, GUEST_CID, bufferSize);
      driver.pump(0);
    } catch (Exception | Error e) {
      close();
      throw e;
    }
  }

  @Override
  public void close() {
    if (session != null) session.close();
    if (ram != null) ram.close();
    if (server != null) server.close();
    if (host instanceof AutoCloseable c) {
      try {
        c.close();
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    }
    loops.close();
  }
}
