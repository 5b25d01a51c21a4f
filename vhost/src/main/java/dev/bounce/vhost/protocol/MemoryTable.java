package dev.bounce.vhost.protocol;

import dev.bounce.pool.MemoryRegionDescription;
import io.netty.buffer.ByteBuf;
import java.util.ArrayList;
import java.util.List;

/**
 * The multiple memory regions description of SET_MEM_TABLE: u32 region count, u32 padding, then the
 * regions. One fd per region comes with it, in region order (the message's fds). The count is 1 to
 * 8 (VHOST_MEMORY_BASELINE_NREGIONS; more regions need CONFIGURE_MEM_SLOTS and ADD_MEM_REG), and
 * the payload is exactly as long as the count says: QEMU and DPDK send 8 + 32 * n bytes, not a full
 * 8-region array.
 */
public record MemoryTable(List<MemoryRegionDescription> regions) implements Payload {
  /** VHOST_MEMORY_BASELINE_NREGIONS. */
  public static final int MAX_REGIONS = 8;

  private static final int PREFIX = 8;

  public MemoryTable {
    regions = List.copyOf(regions);
    if (regions.isEmpty() || regions.size() > MAX_REGIONS) {
      throw new IllegalArgumentException(
          "a memory table has 1 to " + MAX_REGIONS + " regions, not " + regions.size());
    }
  }

  /** The payload size for {@code regions} regions. */
  public static int sizeFor(int regions) {
    return PREFIX + regions * Regions.REGION_SIZE;
  }

  static MemoryTable decode(ByteBuf in, int size) throws BadPayload {
    if (size < PREFIX) {
      throw BadPayload.size(
          "payload is " + Format.bytesCount(size) + ", shorter than the region count and padding",
          size,
          PREFIX);
    }
    long count = in.readUnsignedIntLE();
    in.skipBytes(4); // padding: not required to be zero by the spec, so not checked
    if (count < 1 || count > MAX_REGIONS) {
      throw BadPayload.value("region count " + count + ", expected 1 to " + MAX_REGIONS);
    }
    int expected = sizeFor((int) count);
    if (size != expected) {
      throw BadPayload.size(
          "payload is "
              + Format.bytesCount(size)
              + ", expected "
              + expected
              + " for "
              + count
              + " regions",
          size,
          expected);
    }
    List<MemoryRegionDescription> regions = new ArrayList<>((int) count);
    for (int i = 0; i < count; i++) regions.add(Regions.read(in, "region[" + i + "]"));
    return new MemoryTable(regions);
  }

  @Override
  public int size() {
    return sizeFor(regions.size());
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeIntLE(regions.size());
    out.writeIntLE(0);
    for (MemoryRegionDescription region : regions) Regions.write(out, region);
  }

  @Override
  public String describe() {
    StringBuilder s = new StringBuilder("nregions=").append(regions.size());
    for (int i = 0; i < regions.size(); i++) {
      s.append(" region[").append(i).append("] ").append(Regions.describe(regions.get(i)));
    }
    return s.toString();
  }
}
