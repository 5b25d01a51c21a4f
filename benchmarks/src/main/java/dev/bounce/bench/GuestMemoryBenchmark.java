package dev.bounce.bench;

import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestAccessException;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.GuestMemory;
import dev.bounce.pool.GuestRegion;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.RestrictedPool;
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
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.openjdk.jmh.infra.Blackhole;

/**
 * Guest-physical translation, the per-descriptor cost of every ring: {@link
 * GuestAddressSpace#translate} (returns a slice) and {@link GuestAddressSpace#regionAt} (the
 * allocation-free form), over three address spaces:
 *
 * <ul>
 *   <li>{@code q35}: what QEMU shares for a q35 machine, RAM below 4 GiB and above it as two
 *       regions of one memfd;
 *   <li>{@code regions509}: a full table, {@link GuestAddressSpace#MAX_REGIONS} regions (the binary
 *       search's worst case);
 *   <li>{@code restrictedPool}: the q35 sharing seen through a 64 MiB restricted-DMA window.
 * </ul>
 *
 * Each call takes the next (address, length) of a precomputed random table, so the JIT can neither
 * fold the lookup nor the branch predictor learn one path. Run with {@code -prof gc} to see that
 * regionAt allocates nothing and translate only the slice.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@State(Scope.Thread)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class GuestMemoryBenchmark {
  private static final long KIB = 1024;
  private static final long MIB = 1024 * KIB;
  private static final long GIB = 1024 * MIB;

  /** Where QEMU's q35 splits RAM: 2 GiB below the 32-bit PCI hole, the rest from 4 GiB up. */
  private static final long Q35_LOW = 2 * GIB;

  private static final long Q35_HIGH_START = 4 * GIB;
  private static final long Q35_HIGH = 2 * GIB;

  /** A restricted-dma-pool reserved at the top of low RAM. */
  private static final long POOL_START = Q35_LOW - 64 * MIB;

  private static final long POOL_SIZE = 64 * MIB;

  private static final long TABLE_REGION = 2 * MIB;
  private static final long TABLE_STRIDE = 4 * MIB; // regions with holes between them

  /** Where the frontend (QEMU) has guest RAM mapped in its own address space. */
  private static final long USER_BASE = 0x7f00_0000_0000L;

  /** Descriptor lengths: a small header, an MTU-sized packet, a block, a page. */
  private static final long[] LENGTHS = {16, 1514, 512, 4096};

  private static final int ADDRESSES = 4096; // a power of two

  @Param({"q35", "regions509", "restrictedPool"})
  public String layout;

  private GuestAddressSpace memory;
  private final long[] addresses = new long[ADDRESSES];
  private final long[] lengths = new long[ADDRESSES];
  private int next;

  @Setup(Level.Trial)
  public void setUp() throws NativeException {
    SplittableRandom random = new SplittableRandom(42);
    switch (layout) {
      case "q35" -> {
        memory = q35(GuestMemory.empty());
        for (int i = 0; i < ADDRESSES; i++) {
          long start = random.nextBoolean() ? 0 : Q35_HIGH_START;
          pick(i, random, start, start == 0 ? Q35_LOW : Q35_HIGH);
        }
      }
      case "regions509" -> {
        memory = table();
        for (int i = 0; i < ADDRESSES; i++) {
          long start = random.nextInt(GuestAddressSpace.MAX_REGIONS) * TABLE_STRIDE;
          pick(i, random, start, TABLE_REGION);
        }
      }
      case "restrictedPool" -> {
        memory = q35(RestrictedPool.at(POOL_START, POOL_SIZE));
        for (int i = 0; i < ADDRESSES; i++) pick(i, random, POOL_START, POOL_SIZE);
      }
      default -> throw new IllegalArgumentException("unknown layout " + layout);
    }
    for (int i = 0; i < ADDRESSES; i++) {
      if (memory.regionAt(addresses[i], lengths[i]) == null) {
        throw new IllegalStateException("0x" + Long.toHexString(addresses[i]) + " is not mapped");
      }
    }
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    memory.close();
  }

  @Benchmark
  public void translate(Blackhole blackhole) throws GuestAccessException {
    int i = next++ & (ADDRESSES - 1);
    blackhole.consume(memory.translate(addresses[i], lengths[i]));
  }

  @Benchmark
  public void regionAt(Blackhole blackhole) {
    int i = next++ & (ADDRESSES - 1);
    GuestRegion region = memory.regionAt(addresses[i], lengths[i]);
    blackhole.consume(region);
  }

  /** A random descriptor inside {@code [start, start + size)}. */
  private void pick(int i, SplittableRandom random, long start, long size) {
    long length = LENGTHS[random.nextInt(LENGTHS.length)];
    addresses[i] = start + random.nextLong(size - length + 1);
    lengths[i] = length;
  }

  /** Low and high RAM of one 4 GiB memfd, as QEMU shares a q35 guest's memory. */
  private static GuestAddressSpace q35(GuestAddressSpace space) throws NativeException {
    try (Memfd ram = Memfd.create("bench-q35", Q35_LOW + Q35_HIGH)) {
      space =
          space.withRegion(
              new MemoryRegionDescription(0, Q35_LOW, USER_BASE, 0), duplicate(ram.fd()));
      return space.withRegion(
          new MemoryRegionDescription(Q35_HIGH_START, Q35_HIGH, USER_BASE + Q35_LOW, Q35_LOW),
          duplicate(ram.fd()));
    }
  }

  /** {@link GuestAddressSpace#MAX_REGIONS} regions, each a slice of one memfd. */
  private static GuestAddressSpace table() throws NativeException {
    GuestAddressSpace space = GuestMemory.empty();
    try (Memfd ram = Memfd.create("bench-table", GuestAddressSpace.MAX_REGIONS * TABLE_REGION)) {
      for (int r = 0; r < GuestAddressSpace.MAX_REGIONS; r++) {
        space =
            space.withRegion(
                new MemoryRegionDescription(
                    r * TABLE_STRIDE, TABLE_REGION, USER_BASE + r * TABLE_STRIDE, r * TABLE_REGION),
                duplicate(ram.fd()));
      }
    }
    return space;
  }

  /** A second fd for the same memfd, as each region of a memory table arrives with its own. */
  private static Fd duplicate(Fd fd) throws NativeException {
    return Libc.dup(fd.value());
  }
}
