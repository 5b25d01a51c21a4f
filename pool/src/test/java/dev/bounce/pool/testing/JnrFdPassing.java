package dev.bounce.pool.testing;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import jnr.posix.CmsgHdr;
import jnr.posix.MsgHdr;
import jnr.posix.POSIX;
import jnr.posix.POSIXFactory;
import jnr.unixsocket.UnixSocketChannel;

/**
 * Passes fds over an AF_UNIX socket with SCM_RIGHTS through jnr-posix: an implementation that
 * shares no code with bounce's own FFM socket layer, so a cmsg bug cannot hide by being symmetric.
 */
public final class JnrFdPassing {
  public static final int SOL_SOCKET = 1;
  public static final int SCM_RIGHTS = 1;
  private static final int MSG_CTRUNC = 0x8;

  private static final POSIX POSIX = POSIXFactory.getNativePOSIX();

  private JnrFdPassing() {}

  public static POSIX posix() {
    return POSIX;
  }

  /** One sendmsg(2) of {@code payload} (at least one byte) with {@code fds} attached. */
  public static void send(UnixSocketChannel channel, byte[] payload, int... fds)
      throws IOException {
    if (payload.length == 0) throw new IllegalArgumentException("SCM_RIGHTS needs a data byte");
    MsgHdr message = POSIX.allocateMsgHdr();
    ByteBuffer data = ByteBuffer.allocateDirect(payload.length);
    data.put(payload).flip();
    message.setIov(new ByteBuffer[] {data});
    if (fds.length > 0) {
      CmsgHdr control = message.allocateControl(Integer.BYTES * fds.length);
      control.setLevel(SOL_SOCKET);
      control.setType(SCM_RIGHTS);
      ByteBuffer numbers =
          ByteBuffer.allocate(Integer.BYTES * fds.length).order(ByteOrder.nativeOrder());
      for (int fd : fds) numbers.putInt(fd);
      numbers.flip();
      control.setData(numbers);
    }
    int sent = POSIX.sendmsg(channel.getFD(), message, 0);
    if (sent < 0) {
      int errno = POSIX.errno();
      throw new IOException("sendmsg failed: errno " + errno + " (" + POSIX.strerror(errno) + ")");
    }
    if (sent != payload.length) {
      throw new IOException("sendmsg sent " + sent + " of " + payload.length + " bytes");
    }
  }

  /** What one recvmsg(2) returned: the bytes and the fds (now owned by the caller). */
  public record Received(byte[] payload, int[] fds) {
    @Override
    public String toString() {
      return payload.length + " bytes, fds " + Arrays.toString(fds);
    }
  }

  /**
   * One recvmsg(2) of up to {@code maxPayload} bytes and {@code maxFds} fds; blocks. An empty
   * payload means the peer closed the connection.
   *
   * @throws IOException when recvmsg fails or the control data was truncated (fds were lost)
   */
  public static Received receive(UnixSocketChannel channel, int maxPayload, int maxFds)
      throws IOException {
    MsgHdr message = POSIX.allocateMsgHdr();
    ByteBuffer data = ByteBuffer.allocateDirect(maxPayload);
    message.setIov(new ByteBuffer[] {data});
    message.allocateControl(Integer.BYTES * maxFds);
    int received = POSIX.recvmsg(channel.getFD(), message, 0);
    if (received < 0) {
      int errno = POSIX.errno();
      throw new IOException("recvmsg failed: errno " + errno + " (" + POSIX.strerror(errno) + ")");
    }
    int[] fds = new int[0];
    for (CmsgHdr control : message.getControls()) {
      if (control.getLevel() != SOL_SOCKET || control.getType() != SCM_RIGHTS) continue;
      ByteBuffer numbers = control.getData().order(ByteOrder.nativeOrder());
      while (numbers.remaining() >= Integer.BYTES) {
        fds = Arrays.copyOf(fds, fds.length + 1);
        fds[fds.length - 1] = numbers.getInt();
      }
    }
    if ((message.getFlags() & MSG_CTRUNC) != 0) {
      for (int fd : fds) POSIX.close(fd);
      throw new IOException(
          "recvmsg: control data truncated (MSG_CTRUNC), fds " + Arrays.toString(fds));
    }
    byte[] payload = new byte[received];
    data.get(0, payload);
    return new Received(payload, fds);
  }
}
