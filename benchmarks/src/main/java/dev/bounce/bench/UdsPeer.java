package dev.bounce.bench;

import dev.bounce.device.vsock.VsockWorkload;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.locks.LockSupport;
import java.util.zip.CRC32C;

/**
 * The raw Unix-socket peer that {@link VsockBench} compares bounce with: a second process, like
 * {@code bounce vsock}, serving one connection at a time at the path it is given. The connection's
 * first byte chooses: {@code S} (sink: read to end of stream with CRC32C, answer the 8-byte
 * checksum) or {@code E} (echo every byte). Its loop is {@link VsockWorkload}'s: non-blocking
 * sockets, spinning while work is in flight, parking only after {@link VsockWorkload#SPIN_NANOS}
 * idle, so the baseline gets the same harness as the bounce path it is compared with.
 */
public final class UdsPeer {
  private UdsPeer() {}

  public static void main(String[] args) throws IOException {
    Path path = Path.of(args[0]);
    Files.deleteIfExists(path);
    try (ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
      listener.bind(UnixDomainSocketAddress.of(path));
      ByteBuffer buffer = ByteBuffer.allocateDirect(256 * 1024);
      while (true) {
        try (SocketChannel ch = listener.accept()) {
          ch.configureBlocking(false);
          serve(ch, buffer);
        } catch (IOException e) {
          System.err.println("uds-peer: " + e.getMessage());
        }
      }
    }
  }

  private static void serve(SocketChannel ch, ByteBuffer buffer) throws IOException {
    Idle idle = new Idle();
    ByteBuffer mode = ByteBuffer.allocate(1);
    while (mode.hasRemaining()) {
      if (ch.read(mode) < 0) return;
      idle.after(!mode.hasRemaining());
    }
    boolean echo = mode.get(0) == 'E';
    CRC32C crc = new CRC32C();
    while (true) {
      buffer.clear();
      int n = ch.read(buffer);
      if (n < 0) break;
      if (n > 0) {
        buffer.flip();
        if (echo) {
          while (buffer.hasRemaining()) idle.after(ch.write(buffer) > 0);
        } else {
          crc.update(buffer);
        }
      }
      idle.after(n > 0);
    }
    if (!echo) {
      ByteBuffer answer = ByteBuffer.allocate(8).putLong(0, crc.getValue());
      while (answer.hasRemaining()) idle.after(ch.write(answer) > 0);
    }
  }

  /** {@link VsockWorkload}'s idling: spin while work came recently, else park a millisecond. */
  static final class Idle {
    private long lastProgress = System.nanoTime();

    void after(boolean progress) {
      long now = System.nanoTime();
      if (progress) {
        lastProgress = now;
      } else if (now - lastProgress > VsockWorkload.SPIN_NANOS) {
        LockSupport.parkNanos(1_000_000);
      } else {
        Thread.onSpinWait();
      }
    }
  }
}
