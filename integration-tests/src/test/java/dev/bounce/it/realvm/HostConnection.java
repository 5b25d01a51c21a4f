package dev.bounce.it.realvm;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.FutureTask;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.zip.CRC32;

/**
 * A host application that connects to a guest listener through bounce's host side (vhost-device-
 * vsock's protocol: connect to {@code --uds-path}, send {@code CONNECT <port>\n}, read {@code OK
 * <host-port>\n}), sends the {@link TestPattern} and reads what the guest echoes back.
 */
final class HostConnection {
  private HostConnection() {}

  /**
   * Sends {@code bytes} to guest port {@code port} and reads as many back.
   *
   * @return what came back
   * @throws IOException naming the step that failed, or the time limit
   */
  static Transfer echo(Path udsPath, int port, long bytes, Duration timeout)
      throws IOException, InterruptedException {
    try (SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX)) {
      channel.connect(UnixDomainSocketAddress.of(udsPath));
      FutureTask<Transfer> exchange = new FutureTask<>(() -> exchange(channel, port, bytes));
      Thread.ofVirtual().name("host-connection").start(exchange);
      return await(exchange, timeout, channel);
    }
  }

  private static Transfer await(Future<Transfer> exchange, Duration timeout, SocketChannel channel)
      throws IOException, InterruptedException {
    try {
      return exchange.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      channel.close(); // ends the blocked reads and writes
      throw new IOException("no echo within " + timeout.toSeconds() + " s", e);
    } catch (ExecutionException e) {
      throw new IOException(e.getCause().getMessage(), e.getCause());
    }
  }

  private static Transfer exchange(SocketChannel channel, int port, long bytes)
      throws IOException, InterruptedException {
    channel.write(StandardCharsets.US_ASCII.encode("CONNECT " + port + "\n"));
    String answer = readLine(channel);
    if (!answer.startsWith("OK ")) {
      throw new IOException("CONNECT " + port + " was answered '" + answer + "', not 'OK <port>'");
    }
    Thread sender =
        Thread.ofVirtual().name("host-connection-send").start(() -> send(channel, bytes));
    ByteBuffer buffer = ByteBuffer.allocate(64 * 1024);
    CRC32 crc = new CRC32();
    long count = 0;
    while (count < bytes) {
      buffer.clear().limit((int) Math.min(buffer.capacity(), bytes - count));
      int n = channel.read(buffer);
      if (n < 0) throw new IOException("the guest closed after echoing " + count + " bytes");
      crc.update(buffer.flip());
      count += n;
    }
    sender.join();
    return new Transfer(count, crc.getValue());
  }

  private static void send(SocketChannel channel, long bytes) {
    byte[] chunk = new byte[64 * 1024];
    try {
      for (long at = 0; at < bytes; at += chunk.length) {
        int n = (int) Math.min(chunk.length, bytes - at);
        TestPattern.fill(chunk, n, at);
        ByteBuffer buffer = ByteBuffer.wrap(chunk, 0, n);
        while (buffer.hasRemaining()) channel.write(buffer);
      }
    } catch (IOException e) {
      // the reader sees the connection end and reports how far the echo got
    }
  }

  /** Reads up to and without the first newline, a byte at a time so no data is taken with it. */
  private static String readLine(SocketChannel channel) throws IOException {
    StringBuilder line = new StringBuilder();
    ByteBuffer one = ByteBuffer.allocate(1);
    while (true) {
      if (channel.read(one.clear()) < 0) {
        throw new IOException("bounce closed the connection after '" + line + "' (no OK line)");
      }
      char c = (char) one.get(0);
      if (c == '\n') return line.toString();
      line.append(c);
    }
  }
}
