package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * A vring address description (SET_VRING_ADDR): u32 index, u32 flags, then the descriptor table,
 * used ring and available ring addresses and the log address, u64 each. The ring addresses are
 * front-end virtual addresses (IOVAs with VIRTIO_F_IOMMU_PLATFORM, guest-physical with
 * GPA_ADDRESSES); the log address is guest-physical. Alignment is left to the virtqueue, which
 * knows whether the ring is split or packed.
 *
 * @param flags bit 0 is VHOST_VRING_F_LOG; no other bit is defined
 */
public record VringAddress(
    long index, long flags, long descriptor, long used, long available, long log)
    implements Payload {
  public static final int SIZE = 40;

  /** VHOST_VRING_F_LOG: log writes to the used ring at the log address. */
  public static final long FLAG_LOG = 0x1;

  public VringAddress {
    Fields.u32("vring index", index);
    Fields.u32("vring flags", flags);
    if ((flags & ~FLAG_LOG) != 0) {
      throw new IllegalArgumentException("undefined vring address flags " + Format.hex(flags));
    }
  }

  public boolean logging() {
    return (flags & FLAG_LOG) != 0;
  }

  static VringAddress decode(ByteBuf in) throws BadPayload {
    long index = in.readUnsignedIntLE();
    long flags = in.readUnsignedIntLE();
    if ((flags & ~FLAG_LOG) != 0) {
      throw BadPayload.value(
          "vring " + index + " address flags " + Format.hex(flags) + " set undefined bits");
    }
    return new VringAddress(
        index, flags, in.readLongLE(), in.readLongLE(), in.readLongLE(), in.readLongLE());
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeIntLE((int) index);
    out.writeIntLE((int) flags);
    out.writeLongLE(descriptor);
    out.writeLongLE(used);
    out.writeLongLE(available);
    out.writeLongLE(log);
  }

  @Override
  public String describe() {
    return "index="
        + index
        + " flags="
        + Format.hex(flags)
        + " desc="
        + Format.hex(descriptor)
        + " used="
        + Format.hex(used)
        + " avail="
        + Format.hex(available)
        + " log="
        + Format.hex(log);
  }
}
