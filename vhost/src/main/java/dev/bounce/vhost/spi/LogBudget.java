package dev.bounce.vhost.spi;

import java.lang.System.Logger;
import java.lang.System.Logger.Level;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

/**
 * How many lines of one kind a peer (a guest, a frontend) may put in the host's log by repeating a
 * mistake: the first {@link #FIRST} of each minute in full, and past those one in a thousand, which
 * says how many there were. Each peer gets its own, so that one cannot drown out the lines of the
 * others; each kind of line its own, so that a flood of one (malformed packets) does not hide a
 * rarer one (a refused driver); and a VM that runs for months still gets its new problems said, not
 * only its first twenty. Not thread-safe: one event loop owns a budget.
 */
public final class LogBudget {
  static final int FIRST = 20;
  static final long WINDOW_NANOS = 60_000_000_000L;

  private final LongSupplier clock;
  private long lines;
  private long windowStart;
  private int inWindow;

  public LogBudget() {
    this(System::nanoTime);
  }

  LogBudget(LongSupplier clock) {
    this.clock = clock;
    this.windowStart = clock.getAsLong();
  }

  /** Counts a line; whether it is to be printed. */
  public boolean spend() {
    lines++;
    long now = clock.getAsLong();
    if (now - windowStart >= WINDOW_NANOS) {
      windowStart = now;
      inWindow = 0;
    }
    return ++inWindow <= FIRST || lines % 1000 == 0;
  }

  /** A line {@link #spend} let through, as printed: past the first ones, with the count so far. */
  public String annotate(String line) {
    return lines > FIRST ? line + " (" + lines + " such lines so far)" : line;
  }

  /**
   * Logs the line if the budget lets it through, building it only then. For lines off the data path
   * (the supplier is an allocation); a packet's line uses {@link #spend} and {@link #annotate}.
   */
  public void log(Logger logger, Level level, Supplier<String> line) {
    if (spend()) logger.log(level, annotate(line.get()));
  }
}
