package dev.bounce.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

/**
 * CPU time a process spent so far, from the scheduler's per-thread accounting (the first field of
 * {@code /proc/PID/task/TID/schedstat}, nanoseconds on a CPU, user and kernel): what shows whether
 * a measurement was limited by a busy process or by the machine's cores.
 */
final class ProcessCpu {
  private final long pid;
  private long lastCpu;
  private long lastWall;

  ProcessCpu(long pid) {
    this.pid = pid;
    start();
  }

  /** Starts an interval. */
  void start() {
    lastCpu = nanos();
    lastWall = System.nanoTime();
  }

  /** The share of one core the process used since {@link #start}, 1.0 for one core's worth. */
  double cores() {
    return (double) (nanos() - lastCpu) / Math.max(1, System.nanoTime() - lastWall);
  }

  private long nanos() {
    long sum = 0;
    try (Stream<Path> tasks = Files.list(Path.of("/proc/" + pid + "/task"))) {
      for (Path task : tasks.toList()) {
        try {
          String stat = Files.readString(task.resolve("schedstat"));
          sum += Long.parseLong(stat.substring(0, stat.indexOf(' ')));
        } catch (IOException | RuntimeException gone) {
          // A thread that ended between the listing and the read: its time is lost, a small error.
        }
      }
    } catch (IOException e) {
      throw new IllegalStateException("cannot read the CPU time of process " + pid, e);
    }
    return sum;
  }
}
