package dev.bounce.vhost.frontend;

/**
 * How the fake guest hands its buffers to the device, like Linux's dma_map_single: {@link Direct}
 * passes a buffer's guest address as it is (all memory shared); {@link BounceBuffers} copies it
 * into the restricted pool first and back after completion. Drivers use this and never care which.
 */
public sealed interface Dma permits Dma.Direct, BounceBuffers {
  /** What a map method returns when there is no room now (back-pressure, not an error). */
  long NO_ROOM = -1;

  /**
   * Makes {@code length} bytes of guest buffer {@code address} readable by the device.
   *
   * @return the address to put in the descriptor, or {@link #NO_ROOM}
   */
  long mapToDevice(long address, int length);

  /**
   * Makes {@code length} bytes at guest buffer {@code address} writable by the device (bounced:
   * with the buffer's bytes in them, as Linux's swiotlb puts them there since 5.18, so that a
   * device writing less leaks no stale pool contents).
   *
   * @return the address to put in the descriptor, or {@link #NO_ROOM}
   */
  long mapFromDevice(long address, int length);

  /** After completion of a {@link #mapToDevice}: releases the mapping. */
  void unmapToDevice(long deviceAddress, int length);

  /**
   * After completion of a {@link #mapFromDevice}: the mapping's {@code length} bytes reach guest
   * buffer {@code address} (swiotlb copies the whole mapping back, not what the device wrote), and
   * the mapping is released.
   */
  void unmapFromDevice(long deviceAddress, long address, int length);

  /** All guest memory is shared: the device uses the guest's own buffers. */
  record Direct() implements Dma {
    @Override
    public long mapToDevice(long address, int length) {
      return address;
    }

    @Override
    public long mapFromDevice(long address, int length) {
      return address;
    }

    @Override
    public void unmapToDevice(long deviceAddress, int length) {}

    @Override
    public void unmapFromDevice(long deviceAddress, long address, int length) {}
  }
}
