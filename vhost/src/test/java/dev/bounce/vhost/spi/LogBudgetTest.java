package dev.bounce.vhost.spi;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class LogBudgetTest {
  @Test
  void theFirstLinesThenOneInAThousandWithTheCount() {
    LogBudget budget = new LogBudget();
    List<String> printed = new ArrayList<>();
    for (int i = 1; i <= 3000; i++) {
      if (budget.spend()) printed.add(budget.annotate("line " + i));
    }
    assertEquals(LogBudget.FIRST + 3, printed.size());
    assertEquals("line 1", printed.getFirst());
    assertEquals("line " + LogBudget.FIRST, printed.get(LogBudget.FIRST - 1));
    assertEquals("line 1000 (1000 such lines so far)", printed.get(LogBudget.FIRST));
    assertEquals("line 3000 (3000 such lines so far)", printed.getLast());
  }
}
