package dev.bounce.vhost.spi;

/**
 * Device-independent feature bits (virtio spec, "Reserved Feature Bits") and vhost-user's bit 30.
 */
public final class VirtioFeatures {
  /**
   * VIRTIO_F_RESTRICTED_DMA (the RFC's VIRTIO_F_SWIOTLB): addresses only inside the bounce pool.
   */
  public static final int RESTRICTED_DMA = 27;

  public static final int INDIRECT_DESC = 28;
  public static final int EVENT_IDX = 29;

  /** VHOST_USER_F_PROTOCOL_FEATURES: the frontend may use GET/SET_PROTOCOL_FEATURES. */
  public static final int PROTOCOL_FEATURES = 30;

  public static final int VERSION_1 = 32;
  public static final int ACCESS_PLATFORM = 33;

  private VirtioFeatures() {}

  public static long bit(int feature) {
    return 1L << feature;
  }

  public static boolean has(long features, int feature) {
    return (features & bit(feature)) != 0;
  }
}
