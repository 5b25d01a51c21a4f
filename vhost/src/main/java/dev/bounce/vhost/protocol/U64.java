package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * A single 64-bit integer: features, protocol features, device status, queue count, memory slots,
 * MTU, and the REPLY_ACK status (0 success, non-zero failure).
 *
 * @param value unsigned
 */
public record U64(long value) implements Payload {
  public static final int SIZE = 8;

  /** The REPLY_ACK success status. */
  public static final U64 SUCCESS = new U64(0);

  /** The REPLY_ACK status bounce sends on failure; any non-zero value means failure. */
  public static final U64 FAILURE = new U64(1);

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeLongLE(value);
  }

  @Override
  public String describe() {
    return "u64=" + Format.hex(value);
  }
}
