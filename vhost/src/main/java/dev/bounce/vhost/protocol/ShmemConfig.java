package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;
import java.util.ArrayList;
import java.util.List;

/**
 * The VIRTIO Shared Memory Region configuration of the GET_SHMEM_CONFIG reply (VIRTIO Shared Memory
 * series, spec patch v11): u32 region count, u32 padding, then 256 u64 region sizes indexed by
 * shmid (VHOST_USER_MAX_SHMEM_REGIONS), always all 256. A size of 0 is an unused shmid; the count
 * is the number of non-zero sizes (the series' implementation; its spec text was still being
 * clarified in January 2026), so decoding only bounds it.
 *
 * @param sizes the size of each region by shmid; trailing unused ids are dropped
 */
public record ShmemConfig(List<Long> sizes) implements Payload {
  /** VHOST_USER_MAX_SHMEM_REGIONS. */
  public static final int MAX_REGIONS = 256;

  public static final int SIZE = 8 + MAX_REGIONS * 8;

  public ShmemConfig {
    sizes = List.copyOf(trim(sizes));
    if (sizes.size() > MAX_REGIONS) {
      throw new IllegalArgumentException(
          sizes.size() + " shared memory regions, at most " + MAX_REGIONS);
    }
  }

  private static List<Long> trim(List<Long> sizes) {
    int end = sizes.size();
    while (end > 0 && sizes.get(end - 1) == 0) end--;
    return sizes.subList(0, end);
  }

  /** The regions in use (non-zero size): the count field. */
  public int regionCount() {
    int count = 0;
    for (long size : sizes) if (size != 0) count++;
    return count;
  }

  static ShmemConfig decode(ByteBuf in) throws BadPayload {
    long count = in.readUnsignedIntLE();
    in.skipBytes(4); // padding
    if (count > MAX_REGIONS) {
      throw BadPayload.value("region count " + count + ", at most " + MAX_REGIONS);
    }
    List<Long> sizes = new ArrayList<>(MAX_REGIONS);
    for (int i = 0; i < MAX_REGIONS; i++) sizes.add(in.readLongLE());
    return new ShmemConfig(sizes);
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeIntLE(regionCount());
    out.writeIntLE(0);
    for (long size : sizes) out.writeLongLE(size);
    out.writeZero((MAX_REGIONS - sizes.size()) * Long.BYTES);
  }

  @Override
  public String describe() {
    StringBuilder s = new StringBuilder("nregions=").append(regionCount());
    for (int i = 0; i < sizes.size(); i++) {
      if (sizes.get(i) != 0)
        s.append(" shm[").append(i).append("]=").append(Format.hex(sizes.get(i)));
    }
    return s.toString();
  }
}
