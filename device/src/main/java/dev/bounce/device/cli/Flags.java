package dev.bounce.device.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code --name value} and {@code --name=value} flags of one command, checked against the flags it
 * declares, with a help text generated from the declarations.
 */
final class Flags {
  /**
   * A flag a command accepts; {@code valueName} is null for a switch that takes no value. A flag
   * with a value may be given once, unless it is {@code repeatable} (each value then counts).
   */
  record Flag(String name, String valueName, String help, boolean repeatable) {
    Flag(String name, String valueName, String help) {
      this(name, valueName, help, false);
    }
  }

  private final String usage;
  private final Map<String, Flag> declared = new LinkedHashMap<>();
  private final Map<String, String> values = new LinkedHashMap<>();
  private final Map<String, List<String>> repeated = new LinkedHashMap<>();
  private final Map<String, String> refused = new LinkedHashMap<>();

  Flags(String usage, List<Flag> flags) {
    this.usage = usage;
    flags.forEach(f -> declared.put(f.name(), f));
    declared.put("help", new Flag("help", null, "prints this help"));
  }

  /**
   * A flag another program has and this command does not: refused with {@code message} (which says
   * so, and what to do) instead of as an unknown flag.
   */
  Flags refusing(String name, String message) {
    refused.put(name, message);
    return this;
  }

  /** Parses {@code args}; false when --help was asked for (the help is printed). */
  boolean parse(List<String> args) throws UsageException {
    values.clear();
    repeated.clear();
    for (int i = 0; i < args.size(); i++) {
      String arg = args.get(i).equals("-h") ? "--help" : args.get(i); // as clap's -h
      if (!arg.startsWith("--")) throw new UsageException("unexpected argument '" + arg + "'");
      String name = arg.substring(2);
      String value = null;
      int equals = name.indexOf('=');
      if (equals >= 0) {
        value = name.substring(equals + 1);
        name = name.substring(0, equals);
      }
      Flag flag = declared.get(name);
      if (flag == null) {
        throw new UsageException(
            refused.getOrDefault(name, "unknown flag --" + name + " (see --help)"));
      }
      if (flag.valueName() != null && value == null) {
        if (i + 1 >= args.size()) throw new UsageException("--" + name + " needs a value");
        value = args.get(++i);
      }
      // The last of two would win, unsaid; a switch given twice asks for the same thing twice.
      if (flag.valueName() != null && !flag.repeatable() && values.containsKey(name)) {
        throw new UsageException("--" + name + " is given twice: give it once");
      }
      values.put(name, value == null ? "" : value);
      repeated.computeIfAbsent(name, n -> new ArrayList<>()).add(value == null ? "" : value);
    }
    if (values.containsKey("help")) {
      System.out.print(help());
      return false;
    }
    return true;
  }

  String help() {
    StringBuilder text = new StringBuilder("usage: ").append(usage).append("\n\nflags:\n");
    for (Flag flag : declared.values()) {
      String left = "--" + flag.name() + (flag.valueName() == null ? "" : " " + flag.valueName());
      text.append(String.format("  %-28s %s%n", left, flag.help()));
    }
    return text.toString();
  }

  String get(String name, String fallback) {
    return values.getOrDefault(name, fallback);
  }

  String require(String name) throws UsageException {
    String value = values.get(name);
    if (value == null) throw new UsageException("--" + name + " is required (see --help)");
    return value;
  }

  /** Every value a repeatable flag was given, in order (for one given once: its value). */
  List<String> all(String name) {
    return repeated.getOrDefault(name, List.of());
  }

  boolean has(String name) {
    return values.containsKey(name);
  }

  /** A whole number, decimal or 0x hex. */
  long number(String name, long fallback) throws UsageException {
    String value = values.get(name);
    if (value == null) return fallback;
    try {
      return parseNumber(value.trim());
    } catch (NumberFormatException e) {
      throw new UsageException("--" + name + ": '" + value + "' is not a number");
    }
  }

  private static final Pattern DURATION = Pattern.compile("(\\d{1,9})(ms|s|m|h)?");

  /** A time: seconds, or a number with a unit (500ms, 10s, 2m, 1h); more than 0. */
  Duration duration(String name, Duration fallback) throws UsageException {
    String value = values.get(name);
    if (value == null) return fallback;
    Matcher m = DURATION.matcher(value.trim());
    if (!m.matches() || Long.parseLong(m.group(1)) == 0) {
      throw new UsageException(
          "--" + name + ": '" + value + "' is not a duration (like 60, 10s, 500ms, 2m)");
    }
    long n = Long.parseLong(m.group(1));
    Duration d =
        switch (m.group(2) == null ? "s" : m.group(2)) {
          case "ms" -> Duration.ofMillis(n);
          case "m" -> Duration.ofMinutes(n);
          case "h" -> Duration.ofHours(n);
          default -> Duration.ofSeconds(n);
        };
    // Deadlines are nanoTime() plus the duration, which must not overflow.
    if (d.compareTo(MAX_DURATION) > 0) {
      throw new UsageException("--" + name + ": '" + value + "' is longer than a year");
    }
    return d;
  }

  private static final Duration MAX_DURATION = Duration.ofDays(366);

  /** A size: bytes, or with a K, M, G or T suffix (powers of 1024). */
  long size(String name, long fallback) throws UsageException {
    String value = values.get(name);
    return value == null ? fallback : parseSize("--" + name, value);
  }

  static long parseSize(String what, String text) throws UsageException {
    String digits = text.trim();
    long unit = 1;
    char last = digits.isEmpty() ? ' ' : Character.toUpperCase(digits.charAt(digits.length() - 1));
    int shift = "KMGT".indexOf(last);
    if (shift >= 0) {
      unit = 1L << (10 * (shift + 1));
      digits = digits.substring(0, digits.length() - 1);
    }
    try {
      return Math.multiplyExact(parseNumber(digits), unit);
    } catch (NumberFormatException | ArithmeticException e) {
      throw new UsageException(what + ": '" + text + "' is not a size (like 4096, 64K, 16M, 1G)");
    }
  }

  /**
   * bounce creates a socket, not its directory: a missing one is refused naming {@code what} (the
   * flag), before anything binds.
   */
  static void directoryExists(String what, Path socket) throws UsageException {
    Path directory = socket.toAbsolutePath().normalize().getParent();
    if (directory == null || Files.isDirectory(directory)) return;
    throw new UsageException(
        what
            + " "
            + socket
            + ": "
            + (Files.exists(directory)
                ? directory + " is not a directory"
                : "its directory " + directory + " does not exist; create it first")
            + " (bounce creates the socket, not its directory)");
  }

  /** A number in decimal or 0x hex. */
  static long parseNumber(String text) {
    return text.startsWith("0x") || text.startsWith("0X")
        ? Long.parseUnsignedLong(text.substring(2), 16)
        : Long.parseLong(text);
  }
}
