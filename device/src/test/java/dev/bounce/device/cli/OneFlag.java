package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;

/** One flag of a device command, parsed alone: what it takes, and what it refuses, and how. */
record OneFlag<T>(Flags.Flag flag, OneFlag.Reader<T> reader) {
  /** What a command makes of the flag once parsed. */
  @FunctionalInterface
  interface Reader<T> {
    T read(Flags flags) throws UsageException;
  }

  /** The value {@code args} (the flag's, or none) give. */
  T parsed(String... args) throws UsageException {
    Flags flags = new Flags("test", List.of(flag));
    assertTrue(flags.parse(List.of(args)));
    return reader.read(flags);
  }

  /** Each value in {@code bad} is refused with a message starting with the text it maps to. */
  void refuses(Map<String, String> bad) {
    for (var e : bad.entrySet()) {
      UsageException refused =
          assertThrows(
              UsageException.class, () -> parsed("--" + flag.name(), e.getKey()), e::getKey);
      assertTrue(refused.getMessage().startsWith(e.getValue()), refused.getMessage());
    }
  }
}
