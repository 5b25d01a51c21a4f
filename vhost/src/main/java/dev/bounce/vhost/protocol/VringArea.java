package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * The vring area description of BACKEND_VRING_HOST_NOTIFIER_MSG: a u64 with the vring index in bits
 * 0-7 and the no-fd flag in bit 8 (as {@link VringFdIndex}), then the u64 size and offset of the
 * area to mmap from the fd that comes with it. No fd (flag set) removes the notifier.
 *
 * @param areaSize the area's size ({@code size()} is the payload's)
 */
public record VringArea(int index, boolean noFd, long areaSize, long offset) implements Payload {
  public static final int SIZE = 24;

  public VringArea {
    Fields.u8("vring index", index);
  }

  static VringArea decode(ByteBuf in) throws BadPayload {
    VringFdIndex word = VringFdIndex.decode(in);
    return new VringArea(word.index(), word.noFd(), in.readLongLE(), in.readLongLE());
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeLongLE(new VringFdIndex(index, noFd).value());
    out.writeLongLE(areaSize);
    out.writeLongLE(offset);
  }

  @Override
  public String describe() {
    return "index="
        + index
        + (noFd ? " nofd" : "")
        + " size="
        + Format.hex(areaSize)
        + " offset="
        + Format.hex(offset);
  }
}
