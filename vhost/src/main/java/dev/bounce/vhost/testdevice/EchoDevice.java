package dev.bounce.vhost.testdevice;

import dev.bounce.vhost.spi.DeviceContext;
import dev.bounce.vhost.spi.VirtioDevice;
import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The engine's test device: proves the engine before vsock and net exist, and gives benchmarks and
 * the fake frontend a device that costs next to nothing. Every queue echoes: the bytes of a chain's
 * readable descriptors are written back into its writable ones (as many as fit), and the used
 * length says how many. A chain with no writable part is simply consumed. Its config space is 8
 * bytes: the number of chains served so far (little endian u64).
 */
public final class EchoDevice implements VirtioDevice {
  /** Not a registered virtio id: the test device exists only inside bounce. */
  public static final int DEVICE_ID = 0x7e57;

  private static final int SCRATCH = 64 * 1024;

  private final int queues;
  private final int maxQueueSize;
  private final DescriptorChain[] chains;
  private final MemorySegment scratch = Arena.ofAuto().allocate(SCRATCH);
  private volatile long served;

  public EchoDevice(int queues, int maxQueueSize) {
    this.queues = queues;
    this.maxQueueSize = maxQueueSize;
    this.chains = new DescriptorChain[queues];
  }

  @Override
  public int deviceId() {
    return DEVICE_ID;
  }

  @Override
  public String name() {
    return "echo";
  }

  @Override
  public long deviceFeatures() {
    return 0;
  }

  @Override
  public int queueCount() {
    return queues;
  }

  @Override
  public int maxQueueSize() {
    return maxQueueSize;
  }

  @Override
  public byte[] config() {
    return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(served).array();
  }

  @Override
  public void activate(DeviceContext context) {}

  @Override
  public void queueStarted(int index, SplitQueue queue) {
    chains[index] = queue.newChain();
  }

  @Override
  public void process(int index, SplitQueue queue) throws VirtqueueException {
    DescriptorChain chain = chains[index];
    long count = 0;
    while (queue.pop(chain)) {
      long read = 0;
      while (chain.next() && !chain.isWritable()) {
        long take = Math.min(chain.length(), SCRATCH - read);
        MemorySegment.copy(chain.segment(), chain.offset(), scratch, read, take);
        read += take;
      }
      long written = 0;
      if (chain.isPositioned() && chain.isWritable()) {
        do {
          long put = Math.min(chain.length(), read - written);
          MemorySegment.copy(scratch, written, chain.segment(), chain.offset(), put);
          written += put;
        } while (written < read && chain.next());
      }
      queue.addUsed(chain.headIndex(), (int) written);
      count++;
    }
    served += count;
  }

  @Override
  public void queueStopped(int index) {}

  @Override
  public void reset() {
    served = 0;
  }

  /** Chains served since the last reset. */
  public long served() {
    return served;
  }
}
