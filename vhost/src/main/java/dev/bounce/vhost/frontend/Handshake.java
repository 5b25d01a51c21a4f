package dev.bounce.vhost.frontend;

import java.util.Locale;

/**
 * Which real frontend's negotiation the fake frontend replays (vhost/src/test/resources/sequences).
 */
public enum Handshake {
  /** QEMU 7.2: one SET_MEM_TABLE with every region. */
  QEMU,
  /** QEMU 7.2 with CONFIGURE_MEM_SLOTS: GET_MAX_MEM_SLOTS, then one ADD_MEM_REG per region. */
  QEMU_SLOTS,
  /** DPDK 22.11 virtio-user: SET_OWNER first, SET_STATUS with replies, one SET_MEM_TABLE. */
  DPDK;

  /** The flag spelling: qemu, qemu-slots, dpdk. */
  public String flag() {
    return name().toLowerCase(Locale.ROOT).replace('_', '-');
  }

  public static Handshake ofFlag(String flag) {
    for (Handshake h : values()) if (h.flag().equals(flag)) return h;
    throw new IllegalArgumentException(
        "handshake '" + flag + "' is not one of qemu, qemu-slots, dpdk");
  }
}
