package dev.bounce.bench;

import dev.bounce.pool.BounceAllocator;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The guest-side bounce allocator, one operation being an allocate and a free:
 *
 * <ul>
 *   <li>{@code allocFree}: on an empty pool, the allocation freed at once (the best case);
 *   <li>{@code allocFreeHalfFull}: the pool kept half full of live allocations; each operation
 *       allocates a new one and frees a randomly chosen live one in its place, so the free slots
 *       are scattered over the segments and the next-fit cursor keeps moving.
 * </ul>
 *
 * The pool is 64 MiB, Linux's default swiotlb size.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@State(Scope.Thread)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class BounceAllocatorBenchmark {
  private static final long POOL_SIZE = 64L * 1024 * 1024;
  private static final int VICTIMS = 1 << 16; // a power of two

  /** Bytes per mapping: one slot, two slots, 32 slots (a quarter segment). */
  @Param({"2048", "4096", "65536"})
  public int size;

  private BounceAllocator empty;
  private BounceAllocator halfFull;
  private long[] live;
  private final int[] victims = new int[VICTIMS];
  private int next;

  @Setup(Level.Trial)
  public void setUp() {
    empty = new BounceAllocator(POOL_SIZE);
    halfFull = new BounceAllocator(POOL_SIZE);
    int slots = (size + BounceAllocator.SLOT_SIZE - 1) / BounceAllocator.SLOT_SIZE;
    live = new long[(int) (POOL_SIZE / 2 / ((long) slots * BounceAllocator.SLOT_SIZE))];
    for (int i = 0; i < live.length; i++) live[i] = allocate(halfFull, size);
    SplittableRandom random = new SplittableRandom(42);
    for (int i = 0; i < VICTIMS; i++) victims[i] = random.nextInt(live.length);
    // Scatter: replace live mappings at random until the holes are spread over the whole pool.
    for (int i = 0; i < 4 * live.length; i++) replaceOne();
    if (halfFull.bytesInUse() != POOL_SIZE / 2) {
      throw new IllegalStateException(halfFull.bytesInUse() + " bytes in use, not half the pool");
    }
  }

  @Benchmark
  public long allocFree() {
    long offset = empty.allocate(size);
    empty.free(offset, size);
    return offset;
  }

  @Benchmark
  public long allocFreeHalfFull() {
    return replaceOne();
  }

  /** Allocates a mapping and frees a random live one in its place. */
  private long replaceOne() {
    long offset = allocate(halfFull, size);
    int victim = victims[next++ & (VICTIMS - 1)];
    halfFull.free(live[victim], size);
    live[victim] = offset;
    return offset;
  }

  private static long allocate(BounceAllocator allocator, int size) {
    long offset = allocator.allocate(size);
    if (offset == BounceAllocator.NO_ROOM) {
      throw new IllegalStateException("no room for " + size + " bytes in a half-full pool");
    }
    return offset;
  }
}
