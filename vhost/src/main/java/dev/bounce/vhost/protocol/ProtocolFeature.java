package dev.bounce.vhost.protocol;

import java.util.Collection;
import java.util.EnumSet;
import java.util.Set;
import java.util.StringJoiner;

/**
 * Protocol feature bits (vhost-user.rst, "Protocol features", VHOST_USER_PROTOCOL_F_*), exchanged
 * with GET/SET_PROTOCOL_FEATURES once VHOST_USER_F_PROTOCOL_FEATURES (virtio feature bit 30) is
 * negotiated. 0-19 are in QEMU's vhost-user.rst; 20-22 were added in 2026 (GET_VRING_BASE_INFLIGHT,
 * GPA_ADDRESSES, and SHMEM at 22 — rust-vmm/vhost had SHMEM at 21 until its PR #367).
 */
public enum ProtocolFeature {
  MQ(0),
  LOG_SHMFD(1),
  RARP(2),
  REPLY_ACK(3),
  /** VHOST_USER_PROTOCOL_F_MTU (NET_SET_MTU's text calls it F_NET_MTU). */
  MTU(4),
  /** Once SLAVE_REQ. */
  BACKEND_REQ(5),
  CROSS_ENDIAN(6),
  CRYPTO_SESSION(7),
  PAGEFAULT(8),
  CONFIG(9),
  /** Once SLAVE_SEND_FD. */
  BACKEND_SEND_FD(10),
  HOST_NOTIFIER(11),
  INFLIGHT_SHMFD(12),
  RESET_DEVICE(13),
  INBAND_NOTIFICATIONS(14),
  CONFIGURE_MEM_SLOTS(15),
  STATUS(16),
  /** Memory regions grow two u32 fields; bounce never offers it, so its regions stay 32 bytes. */
  XEN_MMAP(17),
  SHARED_OBJECT(18),
  DEVICE_STATE(19),
  GET_VRING_BASE_INFLIGHT(20),
  /** Ring addresses (SET_VRING_ADDR) become guest-physical instead of front-end virtual. */
  GPA_ADDRESSES(21),
  /** VIRTIO Shared Memory Regions: GET_SHMEM_CONFIG, BACKEND_SHMEM_MAP/UNMAP. */
  SHMEM(22);

  private static final ProtocolFeature[] VALUES = values();
  private static final long KNOWN;

  static {
    long known = 0;
    for (ProtocolFeature f : VALUES) known |= f.mask();
    KNOWN = known;
  }

  private final int bit;

  ProtocolFeature(int bit) {
    this.bit = bit;
  }

  public int bit() {
    return bit;
  }

  public long mask() {
    return 1L << bit;
  }

  /** Whether this feature's bit is set in {@code mask}. */
  public boolean in(long mask) {
    return (mask & mask()) != 0;
  }

  /** The mask with the bits of {@code features}. */
  public static long maskOf(ProtocolFeature... features) {
    long mask = 0;
    for (ProtocolFeature f : features) mask |= f.mask();
    return mask;
  }

  /** The mask with the bits of {@code features}. */
  public static long maskOf(Collection<ProtocolFeature> features) {
    long mask = 0;
    for (ProtocolFeature f : features) mask |= f.mask();
    return mask;
  }

  /** The known features set in {@code mask}; unknown bits are dropped (see {@link #unknown}). */
  public static Set<ProtocolFeature> setOf(long mask) {
    EnumSet<ProtocolFeature> set = EnumSet.noneOf(ProtocolFeature.class);
    for (ProtocolFeature f : VALUES) if (f.in(mask)) set.add(f);
    return set;
  }

  /** Every bit this enum names. */
  public static long knownMask() {
    return KNOWN;
  }

  /** The bits of {@code mask} no feature here names. */
  public static long unknown(long mask) {
    return mask & ~KNOWN;
  }

  /** The mask for logs: "MQ|REPLY_ACK|CONFIG|STATUS", unknown bits as "bit40", "none" for 0. */
  public static String describe(long mask) {
    if (mask == 0) return "none";
    StringJoiner names = new StringJoiner("|");
    for (ProtocolFeature f : VALUES) if (f.in(mask)) names.add(f.name());
    long rest = unknown(mask);
    while (rest != 0) {
      int bit = Long.numberOfTrailingZeros(rest);
      names.add("bit" + bit);
      rest &= rest - 1;
    }
    return names.toString();
  }
}
