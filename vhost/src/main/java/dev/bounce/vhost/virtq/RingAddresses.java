package dev.bounce.vhost.virtq;

import dev.bounce.pool.AddressKind;
import java.util.Objects;

/**
 * Where the three parts of a split virtqueue are (section 2.7: the Descriptor Area holds the
 * descriptor table, the Driver Area the available ring, the Device Area the used ring), in the
 * address space {@code kind}: SET_VRING_ADDR gives frontend-virtual addresses ({@link
 * AddressKind#FRONTEND_VIRTUAL}); with an IOMMU or a device-owned pool they are guest addresses
 * ({@link AddressKind#GUEST_PHYSICAL}). Unchecked here: {@link SplitQueue#attach} checks alignment
 * and that every byte is in memory.
 */
public record RingAddresses(
    long descriptorTable, long availableRing, long usedRing, AddressKind kind) {
  public RingAddresses {
    Objects.requireNonNull(kind, "kind");
  }
}
