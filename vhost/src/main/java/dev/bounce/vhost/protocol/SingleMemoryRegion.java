package dev.bounce.vhost.protocol;

import dev.bounce.pool.MemoryRegionDescription;
import io.netty.buffer.ByteBuf;
import java.util.Objects;

/**
 * The single memory region description of ADD_MEM_REG and REM_MEM_REG: u64 padding, then one
 * region. REM_MEM_REG identifies the region by guest address, user address and size (the mmap
 * offset is ignored; QEMU sends 0).
 */
public record SingleMemoryRegion(MemoryRegionDescription region) implements Payload {
  public static final int SIZE = 8 + Regions.REGION_SIZE;

  public SingleMemoryRegion {
    Objects.requireNonNull(region, "region");
  }

  static SingleMemoryRegion decode(ByteBuf in) throws BadPayload {
    in.skipBytes(8); // padding
    return new SingleMemoryRegion(Regions.read(in, "region"));
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeLongLE(0);
    Regions.write(out, region);
  }

  @Override
  public String describe() {
    return Regions.describe(region);
  }
}
