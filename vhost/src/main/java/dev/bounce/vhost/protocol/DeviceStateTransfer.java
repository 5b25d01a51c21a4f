package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * The device state transfer parameters of SET_DEVICE_STATE_FD: u32 direction (0 save, 1 load) and
 * u32 migration phase (0 stopped, the only one so far). Values are kept as sent; the back-end
 * decides whether it supports them.
 */
public record DeviceStateTransfer(long direction, long phase) implements Payload {
  public static final int SIZE = 8;
  public static final long SAVE = 0;
  public static final long LOAD = 1;
  public static final long PHASE_STOPPED = 0;

  public DeviceStateTransfer {
    Fields.u32("transfer direction", direction);
    Fields.u32("migration phase", phase);
  }

  static DeviceStateTransfer decode(ByteBuf in) {
    return new DeviceStateTransfer(in.readUnsignedIntLE(), in.readUnsignedIntLE());
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeIntLE((int) direction);
    out.writeIntLE((int) phase);
  }

  @Override
  public String describe() {
    return "direction=" + direction + " phase=" + phase;
  }
}
