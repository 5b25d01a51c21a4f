package dev.bounce.vhost.frontend;

import java.util.Locale;

/**
 * What a workload did: operations, bytes, errors, and a latency histogram that allocates nothing
 * per sample (log-linear buckets: 16 per power of two, so a percentile is within ~6% of the truth).
 */
public final class Stats {
  private static final int SUB = 16;
  private static final int BUCKETS = 64 * SUB;

  private final long[] histogram = new long[BUCKETS];
  private long operations;
  private long bytes;
  private long errors;
  private long maxNanos;
  private long startNanos = System.nanoTime();
  private long endNanos;
  private String firstError;

  public void start() {
    startNanos = System.nanoTime();
  }

  public void finish() {
    endNanos = System.nanoTime();
  }

  /** One operation of {@code byteCount} bytes that took {@code nanos}. */
  public void record(long byteCount, long nanos) {
    operations++;
    bytes += byteCount;
    histogram[bucket(nanos)]++;
    if (nanos > maxNanos) maxNanos = nanos;
  }

  public void error(String what) {
    errors++;
    if (firstError == null) firstError = what;
  }

  private static int bucket(long nanos) {
    if (nanos < SUB) return (int) Math.max(nanos, 0);
    int power = 63 - Long.numberOfLeadingZeros(nanos);
    int sub = (int) ((nanos >>> (power - 4)) & (SUB - 1));
    return Math.min(BUCKETS - 1, (power - 3) * SUB + sub);
  }

  private static long bucketValue(int bucket) {
    if (bucket < SUB) return bucket;
    int power = bucket / SUB + 3;
    long sub = bucket % SUB;
    return (SUB + sub) << (power - 4);
  }

  /** The latency at or below which {@code fraction} of operations finished, in nanoseconds. */
  public long percentileNanos(double fraction) {
    if (operations == 0) return 0;
    long rank = (long) Math.ceil(fraction * operations);
    long seen = 0;
    for (int b = 0; b < BUCKETS; b++) {
      seen += histogram[b];
      if (seen >= rank) return Math.min(bucketValue(b), maxNanos);
    }
    return maxNanos;
  }

  public long operations() {
    return operations;
  }

  public long bytes() {
    return bytes;
  }

  public long errors() {
    return errors;
  }

  public String firstError() {
    return firstError;
  }

  public double seconds() {
    return ((endNanos == 0 ? System.nanoTime() : endNanos) - startNanos) / 1e9;
  }

  /** A few lines a person reads. */
  public String text() {
    double s = seconds();
    return String.format(
        Locale.ROOT,
        "operations: %d in %.3f s (%.0f/s)%n"
            + "bytes:      %d (%.1f MiB/s)%n"
            + "latency:    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s%n"
            + "errors:     %d%s%n",
        operations,
        s,
        operations / s,
        bytes,
        bytes / s / (1 << 20),
        micros(percentileNanos(0.50)),
        micros(percentileNanos(0.90)),
        micros(percentileNanos(0.99)),
        micros(percentileNanos(0.999)),
        micros(maxNanos),
        errors,
        firstError == null ? "" : " (first: " + firstError + ")");
  }

  /** The same as one JSON object. */
  public String json() {
    double s = seconds();
    return String.format(
        Locale.ROOT,
        "{\"operations\":%d,\"seconds\":%.6f,\"operations_per_second\":%.1f,\"bytes\":%d,"
            + "\"bytes_per_second\":%.1f,\"latency_ns\":{\"p50\":%d,\"p90\":%d,\"p99\":%d,"
            + "\"p999\":%d,\"max\":%d},\"errors\":%d,\"first_error\":%s}",
        operations,
        s,
        operations / s,
        bytes,
        bytes / s,
        percentileNanos(0.50),
        percentileNanos(0.90),
        percentileNanos(0.99),
        percentileNanos(0.999),
        maxNanos,
        errors,
        firstError == null ? "null" : quote(firstError));
  }

  private static String micros(long nanos) {
    return String.format(Locale.ROOT, "%.1f us", nanos / 1e3);
  }

  /** {@code text} as a JSON string literal. */
  public static String quote(String text) {
    StringBuilder s = new StringBuilder("\"");
    for (char c : text.toCharArray()) {
      switch (c) {
        case '"' -> s.append("\\\"");
        case '\\' -> s.append("\\\\");
        case '\n' -> s.append("\\n");
        default -> {
          if (c < 0x20) s.append(String.format("\\u%04x", (int) c));
          else s.append(c);
        }
      }
    }
    return s.append('"').toString();
  }
}
