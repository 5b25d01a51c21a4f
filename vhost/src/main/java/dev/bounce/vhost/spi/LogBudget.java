package dev.bounce.vhost.spi;

/**
 * How many lines a peer (a guest, a frontend) may put in the host's log by repeating a mistake: the
 * first {@link #FIRST} in full, then one in a thousand, which says how many there were. Each peer
 * gets its own, so that one cannot drown out the lines of the others. Not thread-safe: one event
 * loop owns a budget.
 */
public final class LogBudget {
  static final int FIRST = 20;

  private long lines;

  /** Counts a line; whether it is to be printed. */
  public boolean spend() {
    lines++;
    return lines <= FIRST || lines % 1000 == 0;
  }

  /** A line {@link #spend} let through, as printed: past the first ones, with the count so far. */
  public String annotate(String line) {
    return lines > FIRST ? line + " (" + lines + " such lines so far)" : line;
  }
}
