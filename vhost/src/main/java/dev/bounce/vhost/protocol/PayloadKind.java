package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * The payload layouts of vhost-user.rst ("Message Specification", "Payload"), each with the record
 * that holds it. Fixed-size layouts must match their size exactly; the variable ones check their
 * own length fields against the header size.
 */
public enum PayloadKind {
  /** "N/A": no payload; the header size must be 0. */
  EMPTY(0),
  /** A single 64-bit integer. */
  U64(8),
  /** A vring state description: u32 index, u32 num. */
  VRING_STATE(8),
  /** A vring address description: u32 index, u32 flags, u64 desc, used, avail, log. */
  VRING_ADDRESS(VringAddress.SIZE),
  /** The u64 of SET_VRING_KICK/CALL/ERR: index in bits 0-7, no-fd flag in bit 8. */
  VRING_FD_INDEX(8),
  /** Multiple memory regions description: u32 count, u32 padding, 1 to 8 regions. */
  MEMORY_TABLE(-1),
  /** Single memory region description: u64 padding, one region. */
  SINGLE_MEMORY_REGION(SingleMemoryRegion.SIZE),
  /** Virtio device config space: u32 offset, u32 size, u32 flags, size bytes. */
  CONFIG_SPACE(-1),
  /** Log description: u64 size, u64 offset. */
  LOG(LogDescription.SIZE),
  /** Device state transfer parameters: u32 direction, u32 phase. */
  DEVICE_STATE_TRANSFER(8),
  /** VhostUserShared: a 16-byte UUID. */
  SHARED_OBJECT(SharedObject.SIZE),
  /** VIRTIO Shared Memory Region configuration: u32 count, u32 padding, 256 u64 sizes. */
  SHMEM_CONFIG(ShmemConfig.SIZE),
  /** MMAP request: u8 shmid, 7 padding, u64 fd offset, shm offset, len, flags. */
  SHMEM_MAPPING(ShmemMapping.SIZE),
  /** Vring area description: u64 index and flags, u64 size, u64 offset. */
  VRING_AREA(VringArea.SIZE),
  /**
   * A layout bounce does not interpret (IOTLB, crypto session, inflight description): kept as
   * bytes, bounded by {@link Header#MAX_PAYLOAD}, so such a request can be answered with a failure
   * instead of tearing the connection down.
   */
  OPAQUE(-1);

  private final int fixedSize;

  PayloadKind(int fixedSize) {
    this.fixedSize = fixedSize;
  }

  /** The exact payload size, or -1 when the size depends on the content. */
  public int fixedSize() {
    return fixedSize;
  }

  /** Whether {@code payload} is this layout's record (for encoders that check their input). */
  public boolean accepts(Payload payload) {
    return switch (this) {
      case EMPTY -> payload instanceof Empty;
      case U64 -> payload instanceof U64;
      case VRING_STATE -> payload instanceof VringState;
      case VRING_ADDRESS -> payload instanceof VringAddress;
      case VRING_FD_INDEX -> payload instanceof VringFdIndex;
      case MEMORY_TABLE -> payload instanceof MemoryTable;
      case SINGLE_MEMORY_REGION -> payload instanceof SingleMemoryRegion;
      case CONFIG_SPACE -> payload instanceof ConfigSpace;
      case LOG -> payload instanceof LogDescription;
      case DEVICE_STATE_TRANSFER -> payload instanceof DeviceStateTransfer;
      case SHARED_OBJECT -> payload instanceof SharedObject;
      case SHMEM_CONFIG -> payload instanceof ShmemConfig;
      case SHMEM_MAPPING -> payload instanceof ShmemMapping;
      case VRING_AREA -> payload instanceof VringArea;
      case OPAQUE -> payload instanceof Opaque;
    };
  }

  /**
   * Decodes exactly {@code size} readable bytes of {@code in}. The caller has checked that they are
   * there; this checks that the size fits the layout before reading a field, so a short payload is
   * a {@link BadPayload}, never an IndexOutOfBoundsException.
   */
  Payload decode(ByteBuf in, int size) throws BadPayload {
    if (fixedSize >= 0 && size != fixedSize) {
      throw BadPayload.size(
          "payload is " + Format.bytesCount(size) + ", expected " + fixedSize, size, fixedSize);
    }
    return switch (this) {
      case EMPTY -> Empty.INSTANCE;
      case U64 -> new U64(in.readLongLE());
      case VRING_STATE -> VringState.decode(in);
      case VRING_ADDRESS -> VringAddress.decode(in);
      case VRING_FD_INDEX -> VringFdIndex.decode(in);
      case MEMORY_TABLE -> MemoryTable.decode(in, size);
      case SINGLE_MEMORY_REGION -> SingleMemoryRegion.decode(in);
      case CONFIG_SPACE -> ConfigSpace.decode(in, size);
      case LOG -> LogDescription.decode(in);
      case DEVICE_STATE_TRANSFER -> DeviceStateTransfer.decode(in);
      case SHARED_OBJECT -> SharedObject.decode(in);
      case SHMEM_CONFIG -> ShmemConfig.decode(in);
      case SHMEM_MAPPING -> ShmemMapping.decode(in);
      case VRING_AREA -> VringArea.decode(in);
      case OPAQUE -> Opaque.decode(in, size);
    };
  }
}
