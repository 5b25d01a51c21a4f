package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * A vring state description: u32 index, u32 num. The num is the queue size (SET_VRING_NUM), the
 * next avail index (SET/GET_VRING_BASE; for packed rings both indices and wrap counters), 0 or 1
 * (SET_VRING_ENABLE, SET_VRING_ENDIAN), or reserved (GET_VRING_BASE request, VRING_KICK,
 * BACKEND_VRING_CALL/ERR).
 */
public record VringState(long index, long num) implements Payload {
  public static final int SIZE = 8;

  public VringState {
    Fields.u32("vring index", index);
    Fields.u32("vring num", num);
  }

  static VringState decode(ByteBuf in) {
    return new VringState(in.readUnsignedIntLE(), in.readUnsignedIntLE());
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeIntLE((int) index);
    out.writeIntLE((int) num);
  }

  @Override
  public String describe() {
    return "index=" + index + " num=" + num;
  }
}
