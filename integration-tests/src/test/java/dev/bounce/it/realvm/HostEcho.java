package dev.bounce.it.realvm;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.zip.CRC32;

/**
 * A host application listening where bounce sends a guest's connections to host port P ({@code
 * <uds-path>_<P>}): it accepts one connection and echoes every byte, counting and checksumming what
 * it received.
 */
final class HostEcho implements AutoCloseable {
  private final Path path;
  private final ServerSocketChannel listener;
  private final Thread thread;
  private volatile Transfer received = new Transfer(0, 0);
  private volatile String error;

  HostEcho(Path path) throws IOException {
    this.path = path;
    listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
    listener.bind(UnixDomainSocketAddress.of(path));
    thread = Thread.ofVirtual().name("host-echo").start(this::serve);
  }

  private void serve() {
    try (SocketChannel connection = listener.accept()) {
      ByteBuffer buffer = ByteBuffer.allocate(64 * 1024);
      CRC32 crc = new CRC32();
      long count = 0;
      while (connection.read(buffer.clear()) > 0) {
        buffer.flip();
        crc.update(buffer.duplicate());
        count += buffer.remaining();
        received = new Transfer(count, crc.getValue());
        while (buffer.hasRemaining()) connection.write(buffer);
      }
    } catch (IOException e) {
      if (listener.isOpen()) error = e.toString();
    }
  }

  /** What the guest's connection delivered so far. */
  Transfer received() {
    return received;
  }

  /** Why serving failed, or null. */
  String error() {
    return error;
  }

  @Override
  public void close() throws IOException, InterruptedException {
    listener.close();
    thread.join();
    Files.deleteIfExists(path);
  }
}
