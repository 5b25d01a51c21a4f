package dev.bounce.vhost.virtq;

/**
 * The split virtqueue's names and numbers from the virtio specification (1.2, section 2.7 "Split
 * Virtqueues"; include/uapi/linux/virtio_ring.h). Every field is little-endian (section 2.7 and
 * 2.7.3: only legacy interfaces use guest-native endianness, and bounce serves no legacy device).
 */
public final class Virtq {
  private Virtq() {}

  /** Queue Size is a power of two of at most 32768 (section 2.7). */
  public static final int MAX_QUEUE_SIZE = 32768;

  /** Whether {@code size} can be a Queue Size: a power of two of at most 32768 (section 2.7). */
  public static boolean isQueueSize(long size) {
    return size > 0 && size <= MAX_QUEUE_SIZE && (size & (size - 1)) == 0;
  }

  /** Feature bit: the driver may use indirect descriptor tables (section 2.7.5.3, 6 "Reserved"). */
  public static final int VIRTIO_F_INDIRECT_DESC = 28;

  /**
   * Feature bit: the used_event / avail_event fields replace the flags for notification suppression
   * (sections 2.7.7 and 2.7.10). Linux calls it VIRTIO_RING_F_EVENT_IDX.
   */
  public static final int VIRTIO_F_EVENT_IDX = 29;

  /**
   * Legacy feature bit: notify the driver when the available ring runs empty, even when it
   * suppressed notifications (section 6.3 "Legacy Interface: Reserved Feature Bits").
   */
  public static final int VIRTIO_F_NOTIFY_ON_EMPTY = 24;

  /** struct virtq_desc.flags: the buffer continues via the next field. */
  public static final int VIRTQ_DESC_F_NEXT = 1;

  /** struct virtq_desc.flags: the buffer is device write-only (otherwise device read-only). */
  public static final int VIRTQ_DESC_F_WRITE = 2;

  /** struct virtq_desc.flags: the buffer holds a table of indirect descriptors. */
  public static final int VIRTQ_DESC_F_INDIRECT = 4;

  /** struct virtq_avail.flags: the driver does not want used buffer notifications. */
  public static final int VIRTQ_AVAIL_F_NO_INTERRUPT = 1;

  /** struct virtq_used.flags: the device does not want available buffer notifications. */
  public static final int VIRTQ_USED_F_NO_NOTIFY = 1;

  /** sizeof(struct virtq_desc): le64 addr, le32 len, le16 flags, le16 next. */
  public static final int DESCRIPTOR_SIZE = 16;

  /** Alignment of each ring part (section 2.7, table; 2.7.1 Driver Requirements: Virtqueues). */
  public static final int DESCRIPTOR_TABLE_ALIGNMENT = 16;

  public static final int AVAILABLE_RING_ALIGNMENT = 2;
  public static final int USED_RING_ALIGNMENT = 4;

  // struct virtq_desc
  static final long DESC_ADDR = 0;
  static final long DESC_LEN = 8;
  static final long DESC_FLAGS = 12;
  static final long DESC_NEXT = 14;

  // struct virtq_avail: le16 flags, le16 idx, le16 ring[size], le16 used_event
  static final long AVAIL_FLAGS = 0;
  static final long AVAIL_IDX = 2;
  static final long AVAIL_RING = 4;

  // struct virtq_used: le16 flags, le16 idx, {le32 id, le32 len} ring[size], le16 avail_event
  static final long USED_FLAGS = 0;
  static final long USED_IDX = 2;
  static final long USED_RING = 4;
  static final int USED_ELEM_SIZE = 8;

  /** Bytes of the descriptor table for {@code size} entries (section 2.7, table). */
  public static long descriptorTableSize(int size) {
    return (long) DESCRIPTOR_SIZE * size;
  }

  /** Bytes of the available ring, used_event included (section 2.7, table). */
  public static long availableRingSize(int size) {
    return 6 + 2L * size;
  }

  /** Bytes of the used ring, avail_event included (section 2.7, table). */
  public static long usedRingSize(int size) {
    return 6 + (long) USED_ELEM_SIZE * size;
  }

  /** Offset of used_event in the available ring. */
  static long usedEventOffset(int size) {
    return AVAIL_RING + 2L * size;
  }

  /** Offset of avail_event in the used ring. */
  static long availEventOffset(int size) {
    return USED_RING + (long) USED_ELEM_SIZE * size;
  }

  /**
   * vring_need_event from virtio_ring.h (section 2.7.7.2 with EVENT_IDX): whether moving the used
   * index from {@code oldIdx} to {@code newIdx} passed {@code eventIdx}, all modulo 2^16.
   */
  public static boolean needEvent(int eventIdx, int newIdx, int oldIdx) {
    return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
  }
}
