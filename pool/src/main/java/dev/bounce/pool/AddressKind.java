package dev.bounce.pool;

/** The two address spaces a vhost-user backend sees. */
public enum AddressKind {
  /** Guest-physical addresses: what descriptors carry. */
  GUEST_PHYSICAL("guest address"),
  /**
   * The frontend's own virtual addresses: what SET_VRING_ADDR carries (unless IOMMU translation).
   */
  FRONTEND_VIRTUAL("frontend address");

  private final String label;

  AddressKind(String label) {
    this.label = label;
  }

  public String label() {
    return label;
  }
}
