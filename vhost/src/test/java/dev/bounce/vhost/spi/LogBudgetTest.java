package dev.bounce.vhost.spi;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.System.Logger;
import java.lang.System.Logger.Level;
import java.util.ArrayList;
import java.util.List;
import java.util.ResourceBundle;
import org.junit.jupiter.api.Test;

class LogBudgetTest {
  private long now;
  private final LogBudget budget = new LogBudget(() -> now);

  private List<String> spend(int from, int to) {
    List<String> printed = new ArrayList<>();
    for (int i = from; i <= to; i++) {
      if (budget.spend()) printed.add(budget.annotate("line " + i));
    }
    return printed;
  }

  @Test
  void theFirstLinesThenOneInAThousandWithTheCount() {
    List<String> printed = spend(1, 3000);
    assertEquals(LogBudget.FIRST + 3, printed.size());
    assertEquals("line 1", printed.getFirst());
    assertEquals("line " + LogBudget.FIRST, printed.get(LogBudget.FIRST - 1));
    assertEquals("line 1000 (1000 such lines so far)", printed.get(LogBudget.FIRST));
    assertEquals("line 3000 (3000 such lines so far)", printed.getLast());
  }

  @Test
  void aNewMinuteGetsItsFirstLinesAgain() {
    spend(1, 500);
    now += LogBudget.WINDOW_NANOS - 1;
    assertEquals(List.of(), spend(501, 600), "the same minute");
    now += 1;
    List<String> printed = spend(601, 700);
    assertEquals(LogBudget.FIRST, printed.size());
    assertEquals("line 601 (601 such lines so far)", printed.getFirst());
  }

  @Test
  void logBuildsOnlyTheLinesItPrints() {
    List<String> logged = new ArrayList<>();
    int[] built = {0};
    Logger logger = new CollectingLogger(logged);
    for (int i = 1; i <= 1000; i++) {
      int n = i;
      budget.log(
          logger,
          Level.WARNING,
          () -> {
            built[0]++;
            return "line " + n;
          });
    }
    assertEquals(LogBudget.FIRST + 1, built[0]);
    assertEquals(LogBudget.FIRST + 1, logged.size());
    assertEquals("WARNING line 1000 (1000 such lines so far)", logged.getLast());
  }

  /** A System.Logger that keeps what it is given, as "LEVEL message". */
  private record CollectingLogger(List<String> lines) implements Logger {
    @Override
    public String getName() {
      return "test";
    }

    @Override
    public boolean isLoggable(Level level) {
      return true;
    }

    @Override
    public void log(Level level, ResourceBundle bundle, String msg, Throwable thrown) {
      lines.add(level + " " + msg);
    }

    @Override
    public void log(Level level, ResourceBundle bundle, String format, Object... params) {
      lines.add(level + " " + format);
    }
  }
}
