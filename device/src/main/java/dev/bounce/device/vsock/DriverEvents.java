package dev.bounce.device.vsock;

import dev.bounce.pool.LittleEndian;
import dev.bounce.vhost.frontend.Dma;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestBuffers;
import java.io.IOException;

/**
 * The guest driver's side of the vsock event queue (virtio 1.2 section 5.10.6.7): a few 4-byte
 * buffers kept posted, as Linux keeps them, and each event handed to the driver. The only event
 * defined is TRANSPORT_RESET.
 */
final class DriverEvents {
  /** Linux posts one buffer per ring entry; a handful is plenty for one event type. */
  static final int BUFFERS = 8;

  private final FrontendSession.Queue queue;
  private final DriverQueue ring;
  private final GuestBuffers buffers;
  private final Dma dma;
  private final long[] buffer;
  private final long[] mapped;
  private final Runnable onTransportReset;
  private final DriverQueue.UsedConsumer onUsed = this::used;
  private int posted;

  DriverEvents(FrontendSession.Queue queue, GuestBuffers buffers, Runnable onTransportReset) {
    this.queue = queue;
    this.ring = queue.ring();
    this.buffers = buffers;
    this.dma = buffers.dma();
    this.buffer = new long[ring.size()];
    this.mapped = new long[ring.size()];
    this.onTransportReset = onTransportReset;
  }

  /** Takes the events the device sent, posts buffers again and kicks; returns the events taken. */
  int pump() throws IOException {
    int events = ring.harvest(onUsed);
    while (posted < Math.min(BUFFERS, ring.size())) {
      long b = buffers.allocate(VsockDevice.EVENT_SIZE);
      if (b == GuestBuffers.NO_ROOM) break;
      long m = dma.mapFromDevice(b, VsockDevice.EVENT_SIZE);
      if (m == Dma.NO_ROOM) {
        buffers.free(b, VsockDevice.EVENT_SIZE);
        break;
      }
      int head = ring.add(m, VsockDevice.EVENT_SIZE, true);
      buffer[head] = b;
      mapped[head] = m;
      posted++;
    }
    queue.notifyDevice();
    return events;
  }

  private void used(int head, int length) {
    posted--;
    dma.unmapFromDevice(mapped[head], buffer[head], VsockDevice.EVENT_SIZE);
    int id =
        length >= VsockDevice.EVENT_SIZE
            ? buffers.bytes().get(LittleEndian.LE32, buffer[head] - buffers.start())
            : -1;
    buffers.free(buffer[head], VsockDevice.EVENT_SIZE);
    // TRANSPORT_RESET is the only event virtio 1.2 defines; Linux ignores others too.
    if (id == VsockDevice.EVENT_TRANSPORT_RESET) onTransportReset.run();
  }
}
