package dev.bounce.vhost.spi;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
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
}
