package dev.bounce.bench;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.GuestMemory;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Mapping;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.RestrictedPool;
import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.RingAddresses;
import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.Virtq;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The split virtqueue's device side on one thread, scored in descriptors per second (each
 * benchmark's operation count is the descriptors of one batch). One invocation is one batch as the
 * device's data loop runs it: the driver (same thread, its own mapping of the memfd) makes N chains
 * available with one release store of avail.idx; the device pops each, walks its descriptor(s) and
 * touches the bytes through {@link DescriptorChain#segment()} / {@link DescriptorChain#offset()},
 * adds a used element, then publishes once, decides on a notification (EVENT_IDX, full fence) and
 * re-enables kicks (avail_event store, full fence, re-check).
 *
 * <ul>
 *   <li>{@code direct32}, {@code direct256}: batches of 32 / 256 single-descriptor chains, reading
 *       the first 8 bytes of each buffer;
 *   <li>{@code copy64}: 256 single-descriptor chains, copying each buffer's first 64 bytes out with
 *       {@link DescriptorChain#read(MemorySegment, long, long)};
 *   <li>{@code indirect4}: 64 chains of one indirect table of 4 descriptors each (256 descriptors).
 * </ul>
 *
 * Over all guest memory shared ({@code shared}) and through a 16 MiB restricted-DMA pool ({@code
 * restrictedPool}). Run with {@code -prof gc}: gc.alloc.rate.norm must be ~0 B/op.
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@State(Scope.Thread)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class VirtqueueBenchmark {

  private static final long MIB = 1024 * 1024;
  private static final long MEMORY_SIZE = 64 * MIB;
  private static final long GUEST_BASE = 0x4000_0000L;
  private static final long USER_BASE = 0x7f00_0000_0000L;
  private static final long POOL_START = GUEST_BASE + 32 * MIB;
  private static final long POOL_SIZE = 16 * MIB;

  private static final int QUEUE_SIZE = 256;
  private static final int BUFFER_SIZE = 1514; // an MTU-sized frame
  private static final int SLOT = 2048; // one bounce slot per buffer
  private static final int INDIRECT_DESCRIPTORS = 4;

  @Param({"shared", "restrictedPool"})
  public String layout;

  private Memfd memfd;
  private Mapping driverView;
  private GuestAddressSpace memory;
  private SplitQueue direct;
  private SplitQueue indirect;
  private DescriptorChain directChain;
  private DescriptorChain indirectChain;
  private Ring directRing;
  private Ring indirectRing;
  private MemorySegment scratch;
  private long notifications;

  /** The driver's view of one queue's rings. */
  private final class Ring {
    final long desc;
    final long avail;
    final long used;
    int availIdx;

    Ring(long base) {
      desc = base;
      avail = desc + Virtq.descriptorTableSize(QUEUE_SIZE);
      used = (avail + Virtq.availableRingSize(QUEUE_SIZE) + 4095) & -4096L;
    }

    long end() {
      return used + Virtq.usedRingSize(QUEUE_SIZE);
    }

    RingAddresses addresses() {
      long offset = USER_BASE - GUEST_BASE;
      return new RingAddresses(
          desc + offset, avail + offset, used + offset, AddressKind.FRONTEND_VIRTUAL);
    }

    void descriptor(long table, int i, long address, int length, int flags, int next) {
      MemorySegment d = at(table + 16L * i, 16);
      d.set(LE64, 0, address);
      d.set(LE32, 8, length);
      d.set(LE16, 12, (short) flags);
      d.set(LE16, 14, (short) next);
    }

    /** Makes the next {@code n} descriptors of the table available, one release store. */
    void post(int n) {
      MemorySegment a = driverView.segment();
      long ring = avail - GUEST_BASE;
      int idx = availIdx;
      for (int k = 0; k < n; k++) {
        a.set(
            LE16,
            ring + 4 + 2L * ((idx + k) & (QUEUE_SIZE - 1)),
            (short) ((idx + k) & (QUEUE_SIZE - 1)));
      }
      availIdx = (idx + n) & 0xffff;
      VarHandle.releaseFence();
      a.set(LE16, ring + 2, (short) availIdx);
    }
  }

  @Setup(Level.Trial)
  public void setUp() throws NativeException, VirtqueueException {
    memfd = Memfd.create("bench-virtq", MEMORY_SIZE);
    driverView = memfd.map(0, MEMORY_SIZE);
    GuestAddressSpace empty =
        switch (layout) {
          case "shared" -> GuestMemory.empty();
          case "restrictedPool" -> RestrictedPool.at(POOL_START, POOL_SIZE);
          default -> throw new IllegalArgumentException("unknown layout " + layout);
        };
    memory =
        empty.withRegion(
            new MemoryRegionDescription(GUEST_BASE, MEMORY_SIZE, USER_BASE, 0),
            Libc.dup(memfd.fd().value()));

    // Everything the device touches lies in the pool (or where the pool would be).
    directRing = new Ring(POOL_START);
    indirectRing = new Ring((directRing.end() + 4095) & -4096L);
    long buffers = (indirectRing.end() + 4095) & -4096L;
    long tables = buffers + (long) QUEUE_SIZE * INDIRECT_DESCRIPTORS * SLOT;
    for (int i = 0; i < QUEUE_SIZE; i++) {
      directRing.descriptor(directRing.desc, i, buffers + (long) i * SLOT, BUFFER_SIZE, 0, 0);
      long table = tables + 16L * INDIRECT_DESCRIPTORS * i;
      for (int k = 0; k < INDIRECT_DESCRIPTORS; k++) {
        boolean last = k == INDIRECT_DESCRIPTORS - 1;
        long buffer = buffers + ((long) i * INDIRECT_DESCRIPTORS + k) * SLOT;
        indirectRing.descriptor(
            table, k, buffer, BUFFER_SIZE, last ? 0 : Virtq.VIRTQ_DESC_F_NEXT, last ? 0 : k + 1);
      }
      indirectRing.descriptor(
          indirectRing.desc, i, table, 16 * INDIRECT_DESCRIPTORS, Virtq.VIRTQ_DESC_F_INDIRECT, 0);
    }
    for (int i = 0; i < QUEUE_SIZE * INDIRECT_DESCRIPTORS; i++) {
      at(buffers + (long) i * SLOT, 8).set(LE64, 0, i);
    }
    if (tables + 16L * INDIRECT_DESCRIPTORS * QUEUE_SIZE > POOL_START + POOL_SIZE) {
      throw new IllegalStateException("benchmark layout does not fit the pool");
    }

    long features = (1L << Virtq.VIRTIO_F_EVENT_IDX) | (1L << Virtq.VIRTIO_F_INDIRECT_DESC);
    direct = queue(0, directRing, features);
    indirect = queue(1, indirectRing, features);
    directChain = direct.newChain();
    indirectChain = indirect.newChain();
    scratch = Arena.ofAuto().allocate(64, 8);
  }

  private SplitQueue queue(int index, Ring ring, long features) throws VirtqueueException {
    SplitQueue queue = new SplitQueue(index, QUEUE_SIZE);
    queue.setSize(QUEUE_SIZE);
    queue.setFeatures(features);
    queue.setAddresses(ring.addresses());
    queue.setBase(0);
    queue.attach(memory);
    return queue;
  }

  private MemorySegment at(long guestAddress, long length) {
    return driverView.segment().asSlice(guestAddress - GUEST_BASE, length);
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    if (direct.isBroken() || indirect.isBroken()) {
      throw new IllegalStateException("a queue broke: " + direct.error() + " " + indirect.error());
    }
    memory.close();
    driverView.close();
    memfd.close();
  }

  @Benchmark
  @OperationsPerInvocation(32)
  public long direct32() throws VirtqueueException {
    return directBatch(32);
  }

  @Benchmark
  @OperationsPerInvocation(QUEUE_SIZE)
  public long direct256() throws VirtqueueException {
    return directBatch(QUEUE_SIZE);
  }

  @Benchmark
  @OperationsPerInvocation(QUEUE_SIZE)
  public long copy64() throws VirtqueueException {
    directRing.post(QUEUE_SIZE);
    SplitQueue queue = direct;
    DescriptorChain chain = directChain;
    long sum = 0;
    while (queue.pop(chain)) {
      sum += chain.read(scratch, 0, 64);
      queue.addUsed(chain.headIndex(), 0);
    }
    endBatch(queue);
    return sum + scratch.get(ValueLayout.JAVA_LONG, 0);
  }

  @Benchmark
  @OperationsPerInvocation(QUEUE_SIZE)
  public long indirect4() throws VirtqueueException {
    indirectRing.post(QUEUE_SIZE / INDIRECT_DESCRIPTORS);
    SplitQueue queue = indirect;
    DescriptorChain chain = indirectChain;
    long sum = 0;
    while (queue.pop(chain)) {
      while (chain.next()) sum += chain.segment().get(LE64, chain.offset());
      queue.addUsed(chain.headIndex(), 0);
    }
    endBatch(queue);
    return sum;
  }

  private long directBatch(int n) throws VirtqueueException {
    directRing.post(n);
    SplitQueue queue = direct;
    DescriptorChain chain = directChain;
    long sum = 0;
    while (queue.pop(chain)) {
      chain.next();
      sum += chain.segment().get(LE64, chain.offset());
      queue.addUsed(chain.headIndex(), 0);
    }
    endBatch(queue);
    return sum;
  }

  /** The end of a data-loop batch: publish, maybe notify, re-enable kicks and re-check. */
  private void endBatch(SplitQueue queue) {
    queue.publish();
    if (queue.needsNotification()) notifications++;
    if (queue.enableNotifications()) throw new IllegalStateException("work left in the ring");
  }
}
