package dev.bounce.pool.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** The mappings of this process or another one, from /proc/PID/maps. */
public final class ProcessMaps {
  private ProcessMaps() {}

  /** One line of /proc/self/maps. */
  public record Entry(long start, long end, String permissions, long offset, String path) {
    public long size() {
      return end - start;
    }
  }

  public static List<Entry> all() {
    return read("self");
  }

  /** The mappings of process {@code pid} (a child bounce, say). */
  public static List<Entry> all(long pid) {
    return read(Long.toString(pid));
  }

  private static List<Entry> read(String process) {
    List<String> lines;
    try {
      lines = Files.readAllLines(Path.of("/proc", process, "maps"));
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    List<Entry> entries = new ArrayList<>(lines.size());
    for (String line : lines) {
      // start-end perms offset dev inode [path]; the path may contain spaces ("(deleted)").
      String[] fields = line.split("\\s+", 6);
      String[] range = fields[0].split("-");
      entries.add(
          new Entry(
              Long.parseUnsignedLong(range[0], 16),
              Long.parseUnsignedLong(range[1], 16),
              fields[1],
              Long.parseUnsignedLong(fields[2], 16),
              fields.length > 5 ? fields[5].strip() : ""));
    }
    return entries;
  }

  /**
   * The mappings of the memfd created with {@code name}: the kernel shows them as {@code
   * /memfd:NAME (deleted)}.
   */
  public static List<Entry> ofMemfd(String name) {
    return ofMemfd(all(), name);
  }

  /** {@link #ofMemfd(String)} in process {@code pid}. */
  public static List<Entry> ofMemfd(long pid, String name) {
    return ofMemfd(all(pid), name);
  }

  private static List<Entry> ofMemfd(List<Entry> entries, String name) {
    String path = "/memfd:" + name + " (deleted)";
    return entries.stream().filter(e -> e.path().equals(path)).toList();
  }
}
