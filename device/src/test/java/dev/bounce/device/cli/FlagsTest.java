package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Map;
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
  void dashHIsHelpAsWithVhostDeviceVsock() throws Exception {
    // parse prints the help and answers false ("do not run") for either spelling.
    assertFalse(flags().parse(List.of("--cid", "3", "-h")));
    assertFalse(flags().parse(List.of("--help")));
    assertEquals("unexpected argument '-x'", refused(flags(), "-x"));
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
  void aDurationIsSecondsOrANumberWithAUnit() throws Exception {
    Flags flags = new Flags("test", List.of(new Flags.Flag("duration", "TIME", "a time")));
    Duration fallback = Duration.ofSeconds(60);
    for (var ok :
        Map.of(
                "10", Duration.ofSeconds(10),
                "10s", Duration.ofSeconds(10),
                "500ms", Duration.ofMillis(500),
                "2m", Duration.ofMinutes(2),
                "1h", Duration.ofHours(1))
            .entrySet()) {
      assertTrue(flags.parse(List.of("--duration", ok.getKey())));
      assertEquals(ok.getValue(), flags.duration("duration", fallback), ok.getKey());
    }
    assertTrue(flags.parse(List.of()));
    assertEquals(fallback, flags.duration("duration", fallback));
    for (String bad : List.of("10x", "s", "-1", "0", "1.5s", "10 s", "9999999999")) {
      assertTrue(flags.parse(List.of("--duration", bad)));
      UsageException e =
          assertThrows(UsageException.class, () -> flags.duration("duration", fallback), bad);
      assertEquals(
          "--duration: '" + bad + "' is not a duration (like 60, 10s, 500ms, 2m)", e.getMessage());
    }
    // Nine digits of hours would overflow a deadline in nanoseconds.
    assertTrue(flags.parse(List.of("--duration", "999999999h")));
    UsageException e =
        assertThrows(UsageException.class, () -> flags.duration("duration", fallback));
    assertEquals("--duration: '999999999h' is longer than a year", e.getMessage());
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
