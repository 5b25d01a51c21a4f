package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/** The flag parser every command uses: what it takes, and the line a user gets for a mistake. */
class FlagsTest {
  private static Flags flags() {
    return new Flags(
        "test",
        List.of(
            new Flags.Flag("cid", "N", "a single value"),
            new Flags.Flag("vm", "SPEC", "repeatable", true),
            new Flags.Flag("json", null, "a switch")));
  }

  private static String refused(Flags flags, String... args) {
    return assertThrows(UsageException.class, () -> flags.parse(List.of(args))).getMessage();
  }

  @Test
  void aSingleValueFlagGivenTwiceIsRefusedInEitherSpelling() {
    assertEquals(
        "--cid is given twice: give it once", refused(flags(), "--cid", "3", "--cid", "4"));
    assertEquals("--cid is given twice: give it once", refused(flags(), "--cid=3", "--cid", "3"));
  }

  @Test
  void aRepeatableFlagKeepsEveryValueInOrder() throws Exception {
    Flags flags = flags();
    assertTrue(flags.parse(List.of("--vm", "a", "--vm=b", "--cid", "5", "--json", "--json")));
    assertEquals(List.of("a", "b"), flags.all("vm"));
    assertEquals("5", flags.get("cid", null));
    assertTrue(flags.has("json"));
  }

  @Test
  void parsingAgainStartsFromNothing() throws Exception {
    Flags flags = flags();
    assertTrue(flags.parse(List.of("--cid", "3", "--vm", "a")));
    assertTrue(flags.parse(List.of("--cid", "4")));
    assertEquals("4", flags.get("cid", null));
    assertEquals(List.of(), flags.all("vm"));
    assertFalse(flags.has("json"));
  }
}
