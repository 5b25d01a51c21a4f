package dev.bounce.vhost.spi;

import io.netty.channel.IoEventLoop;

/** What the engine offers a device while a frontend is connected. */
public interface DeviceContext {
  /** The loop all of the device's queue work runs on. */
  IoEventLoop dataLoop();

  /** The feature bits the driver accepted. */
  long features();

  /**
   * Asks for {@link VirtioDevice#process} on queue {@code index} soon (for example: host data
   * arrived for the receive queue). Safe from any thread; does nothing for a queue that is not
   * running.
   */
  void process(int index);

  /**
   * The config space changed (for example a link went down): the frontend is told with
   * CONFIG_CHANGE_MSG where it negotiated CONFIG and BACKEND_REQ, and otherwise learns it at its
   * next GET_CONFIG. Safe from any thread.
   */
  void configChanged();
}
