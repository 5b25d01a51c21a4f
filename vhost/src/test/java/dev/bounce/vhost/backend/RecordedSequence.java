package dev.bounce.vhost.backend;

import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.vhost.protocol.ConfigSpace;
import dev.bounce.vhost.protocol.Empty;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.MemoryTable;
import dev.bounce.vhost.protocol.Payload;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A recorded vhost-user conversation from the test resources' sequences/, parsed into the
 * front-end's requests (in order, per session) with the reply each got when the recording shows
 * replies. Three formats are there:
 *
 * <ul>
 *   <li>the proxy's table (DPDK): {@code 7 1 F->B SET_VRING_CALL 13 0x1 8 1 index=0 nofd=False},
 *       replies as {@code B->F} rows, sessions between {@code --- session N} lines;
 *   <li>the logging back-end's (QEMU x86): {@code 0.049 #7 SET_VRING_CALL req=13 flags=0x1 size=8
 *       nfds=1 vring=0}, replies as {@code -> reply ...} / {@code -> ack (u64 0)}, regions on their
 *       own lines;
 *   <li>the echo back-end's (QEMU arm64): as the previous without numbers and without replies,
 *       among lines about the guest's traffic.
 * </ul>
 */
record RecordedSequence(String name, List<List<Step>> sessions, boolean repliesRecorded) {

  /** A recorded reply: its payload size when the recording gives it (else -1) and its fields. */
  record Reply(int line, long size, Map<String, String> fields, String text) {
    long number(String... keys) {
      return RecordedSequence.number(fields, text, keys);
    }
  }

  /** One front-end request as recorded. */
  record Step(
      int line,
      FrontendRequest request,
      int flags,
      long size,
      int fds,
      Map<String, String> fields,
      List<MemoryRegionDescription> regions,
      Reply reply) {

    boolean needReply() {
      return (flags & 0x8) != 0;
    }

    long number(String... keys) {
      return RecordedSequence.number(fields, "line " + line, keys);
    }

    boolean has(String key) {
      return fields.containsKey(key);
    }

    /** The payload the recording describes, rebuilt from its fields. */
    Payload payload() {
      return switch (request.payload()) {
        case EMPTY -> Empty.INSTANCE;
        case U64 -> new U64(number("features", "protocol_features", "status", "u64"));
        case VRING_STATE -> new VringState(number("index"), has("num") ? number("num") : 0);
        case VRING_ADDRESS ->
            new VringAddress(
                number("index"),
                number("flags"),
                number("desc"),
                number("used"),
                number("avail"),
                number("log"));
        case VRING_FD_INDEX ->
            new VringFdIndex(
                (int) number("index"), "True".equalsIgnoreCase(fields.getOrDefault("nofd", "")));
        case MEMORY_TABLE -> new MemoryTable(regions);
        case CONFIG_SPACE ->
            new ConfigSpace(
                (int) number("offset"),
                number("flags"),
                HexFormat.of().parseHex(fields.get("data")));
        default ->
            throw new IllegalStateException(
                "line "
                    + line
                    + ": the replay does not rebuild "
                    + request.payload()
                    + " payloads");
      };
    }

    Step withRegion(MemoryRegionDescription region) {
      List<MemoryRegionDescription> more = new ArrayList<>(regions);
      more.add(region);
      return new Step(line, request, flags, size, fds, fields, List.copyOf(more), reply);
    }

    Step withReply(Reply r) {
      return new Step(line, request, flags, size, fds, fields, regions, r);
    }
  }

  private static final Pattern TABLE_ROW =
      Pattern.compile(
          "^(\\d+)\\s+(\\d+)\\s+(F->B|B->F)\\s+([A-Z_]+)\\s+(\\d+)\\s+(0x[0-9a-fA-F]+)[A-Z]?\\s+"
              + "(\\d+)\\s+(\\d+)\\s*(.*)$");
  private static final Pattern TABLE_SESSION = Pattern.compile("^--- session (\\d+) (\\w+)");
  private static final Pattern LOG_REQUEST =
      Pattern.compile(
          "^\\s*\\d+\\.\\d+\\s+(?:#\\d+\\s+)?([A-Z][A-Z_]+)\\s+(?:req=(\\d+)\\s+)?"
              + "flags=(0x[0-9a-fA-F]+)(?:\\([A-Z_]+\\))?\\s+size=(\\d+)\\s+nfds=(\\d+)\\s*(.*)$");
  private static final Pattern LOG_REPLY = Pattern.compile("^\\s*\\d+\\.\\d+\\s+->\\s+(.*)$");
  private static final Pattern LOG_REGION = Pattern.compile("^\\s*region\\[(\\d+)\\]\\s+(.*)$");
  private static final Pattern FIELD =
      Pattern.compile("([A-Za-z_][A-Za-z_0-9]*)(?:\\([a-z_]+\\))?=([^\\s\\[\\]]+)");
  private static final Pattern TUPLE =
      Pattern.compile(
          "\\('(0x[0-9a-fA-F]+)', '(0x[0-9a-fA-F]+)', '(0x[0-9a-fA-F]+)', '(0x[0-9a-fA-F]+)'\\)");

  static RecordedSequence parse(Path file) throws IOException {
    List<String> lines = Files.readAllLines(file);
    String name = file.getFileName().toString();
    boolean table = lines.stream().anyMatch(l -> TABLE_SESSION.matcher(l).find());
    return table ? parseTable(name, lines) : parseLog(name, lines);
  }

  private static RecordedSequence parseTable(String name, List<String> lines) {
    List<List<Step>> sessions = new ArrayList<>();
    List<Step> current = null;
    int session = -1;
    for (int i = 0; i < lines.size(); i++) {
      String line = lines.get(i);
      Matcher s = TABLE_SESSION.matcher(line);
      if (s.find()) {
        int number = Integer.parseInt(s.group(1));
        if (number != session) {
          session = number;
          current = new ArrayList<>();
          sessions.add(current);
        }
        continue;
      }
      Matcher m = TABLE_ROW.matcher(line);
      if (!m.matches()) continue;
      if (current == null) throw new IllegalStateException(name + ":" + (i + 1) + ": no session");
      FrontendRequest request = request(m.group(4), Integer.parseInt(m.group(5)), name, i + 1);
      int flags = Integer.decode(m.group(6));
      long size = Long.parseLong(m.group(7));
      String rest = m.group(9);
      if (m.group(3).equals("F->B")) {
        List<MemoryRegionDescription> regions = new ArrayList<>();
        Matcher t = TUPLE.matcher(rest);
        while (t.find()) {
          regions.add(
              new MemoryRegionDescription(
                  Long.decode(t.group(1)),
                  Long.decode(t.group(2)),
                  Long.decode(t.group(3)),
                  Long.decode(t.group(4))));
        }
        current.add(
            new Step(
                i + 1,
                request,
                flags,
                size,
                Integer.parseInt(m.group(8)),
                fields(rest),
                List.copyOf(regions),
                null));
      } else {
        Step last = current.isEmpty() ? null : current.getLast();
        if (last == null || last.request() != request || last.reply() != null) {
          throw new IllegalStateException(
              name + ":" + (i + 1) + ": a reply to " + request + " that follows no such request");
        }
        if (flags != 0x5) {
          throw new IllegalStateException(name + ":" + (i + 1) + ": recorded reply flags " + flags);
        }
        current.set(current.size() - 1, last.withReply(new Reply(i + 1, size, fields(rest), rest)));
      }
    }
    return new RecordedSequence(name, List.copyOf(sessions), true);
  }

  private static RecordedSequence parseLog(String name, List<String> lines) {
    List<Step> steps = new ArrayList<>();
    boolean replies = false;
    for (int i = 0; i < lines.size(); i++) {
      String line = lines.get(i);
      Matcher m = LOG_REQUEST.matcher(line);
      if (m.matches()) {
        int code = m.group(2) == null ? -1 : Integer.parseInt(m.group(2));
        steps.add(
            new Step(
                i + 1,
                request(m.group(1), code, name, i + 1),
                Integer.decode(m.group(3)),
                Long.parseLong(m.group(4)),
                Integer.parseInt(m.group(5)),
                fields(m.group(6)),
                List.of(),
                null));
        continue;
      }
      Matcher r = LOG_REGION.matcher(line);
      if (r.matches()) {
        Map<String, String> f = fields(r.group(2));
        Step last = steps.getLast();
        steps.set(
            steps.size() - 1,
            last.withRegion(
                new MemoryRegionDescription(
                    number(f, line, "guest_phys_addr"),
                    number(f, line, "size"),
                    number(f, line, "userspace_addr"),
                    number(f, line, "mmap_offset"))));
        continue;
      }
      Matcher reply = LOG_REPLY.matcher(line);
      if (reply.matches()) {
        replies = true;
        Step last = steps.getLast();
        if (last.reply() != null) {
          throw new IllegalStateException(name + ":" + (i + 1) + ": a second reply");
        }
        String text = reply.group(1);
        Map<String, String> f = fields(text);
        Matcher ack = Pattern.compile("^ack \\(u64 (\\d+)\\)").matcher(text);
        if (ack.find()) f.put("ack", ack.group(1));
        steps.set(steps.size() - 1, last.withReply(new Reply(i + 1, -1, f, text)));
      }
    }
    return new RecordedSequence(name, List.of(List.copyOf(steps)), replies);
  }

  private static FrontendRequest request(String label, int code, String file, int line) {
    FrontendRequest request;
    try {
      request = FrontendRequest.valueOf(label);
    } catch (IllegalArgumentException e) {
      throw new IllegalStateException(file + ":" + line + ": unknown request " + label, e);
    }
    if (code >= 0 && code != request.code()) {
      throw new IllegalStateException(
          file
              + ":"
              + line
              + ": "
              + label
              + " recorded as code "
              + code
              + ", not "
              + request.code());
    }
    return request;
  }

  /** key=value pairs, with the recordings' spellings made one: vring/index, desc_uaddr/desc, ... */
  static Map<String, String> fields(String text) {
    Map<String, String> fields = new LinkedHashMap<>();
    Matcher m = FIELD.matcher(text);
    while (m.find()) {
      String key =
          switch (m.group(1)) {
            case "vring" -> "index";
            case "desc_uaddr" -> "desc";
            case "used_uaddr" -> "used";
            case "avail_uaddr" -> "avail";
            default -> m.group(1);
          };
      fields.putIfAbsent(key, m.group(2).replaceAll("[,)]+$", ""));
    }
    return fields;
  }

  static long number(Map<String, String> fields, String where, String... keys) {
    for (String key : keys) {
      String value = fields.get(key);
      if (value != null) {
        return value.startsWith("0x")
            ? Long.parseUnsignedLong(value.substring(2), 16)
            : Long.parseLong(value);
      }
    }
    throw new IllegalStateException(where + ": none of " + String.join(", ", keys) + " recorded");
  }
}
