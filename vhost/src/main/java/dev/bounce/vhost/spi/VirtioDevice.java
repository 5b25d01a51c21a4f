package dev.bounce.vhost.spi;

import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.VirtqueueException;

/**
 * What a device (vsock, net, the test device) gives the vhost-user engine, and all it gets from it.
 * A device never sees a socket or a message; the engine never knows what vsock or net is.
 *
 * <p>Threads: {@link #deviceId()} to {@link #config()} are called on the session's control loop;
 * every other method runs on the device's data loop ({@link DeviceContext#dataLoop()}), one call at
 * a time. A device keeps no {@link java.lang.foreign.MemorySegment} of guest memory between calls:
 * the memory table may change in between.
 */
public interface VirtioDevice {
  /** The virtio device id (19 vsock, 1 net), for logs. */
  int deviceId();

  /** A short name for logs, for example "vsock". */
  String name();

  /**
   * Device-specific feature bits offered, and any device-independent ones the device itself needs.
   * The engine adds VERSION_1, INDIRECT_DESC, EVENT_IDX and PROTOCOL_FEATURES.
   */
  long deviceFeatures();

  /** How many virtqueues (GET_QUEUE_NUM). */
  int queueCount();

  /** The largest size the driver may give a queue (a power of two). */
  int maxQueueSize();

  /** The device configuration space as the driver reads it (GET_CONFIG); at most 256 bytes. */
  byte[] config();

  /**
   * SET_CONFIG: the driver writes {@code data} at {@code offset}.
   *
   * @return false when the device has no writable config there (the engine reports the failure)
   */
  default boolean writeConfig(int offset, byte[] data) {
    return false;
  }

  /**
   * The engine is ready: {@code context} stays valid until {@link #reset()}. Called on the data
   * loop once a frontend has negotiated features, before any queue starts.
   */
  void activate(DeviceContext context);

  /** Queue {@code index} is started and enabled: the device may use it from now on. */
  void queueStarted(int index, SplitQueue queue);

  /**
   * Work on queue {@code index}: the driver kicked it, it just started, or the device asked for it
   * ({@link DeviceContext#process}). Pop what can be served and add it to the used ring; the engine
   * publishes the used ring and notifies the driver after this returns. The engine bounds each call
   * ({@link SplitQueue#limitPops}): pop may answer false while chains remain, and the engine then
   * calls again at once, so stop at the first false pop as if the ring were empty.
   *
   * @throws VirtqueueException when the driver gave a bad chain: the engine stops that queue and
   *     reports
   */
  void process(int index, SplitQueue queue) throws VirtqueueException;

  /** Queue {@code index} stopped (GET_VRING_BASE, disabled, or a guest error): do not touch it. */
  void queueStopped(int index);

  /**
   * The frontend went away or reset the device: drop all per-driver state (connections, buffered
   * data) and be ready for a new {@link #activate}.
   */
  void reset();
}
