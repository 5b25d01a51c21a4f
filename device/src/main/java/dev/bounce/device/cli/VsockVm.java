package dev.bounce.device.cli;

import dev.bounce.device.vsock.Siblings;
import dev.bounce.device.vsock.VsockDevice;
import dev.bounce.vhost.virtq.Virtq;
import java.nio.file.Path;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * One guest served by {@code bounce vsock}: what vhost-device-vsock takes per VM, from its flags,
 * from a {@code --vm key=value,...} or from an entry of a {@code --config} file. Keys are spelled
 * with '-' or '_' alike ({@code guest-cid}, {@code guest_cid}), as vhost-device-vsock accepts both.
 */
record VsockVm(
    long guestCid,
    VhostSocket socket,
    Path udsPath,
    int txBufferSize,
    int queueSize,
    Set<String> groups) {
  static final long DEFAULT_GUEST_CID = 3;
  static final int DEFAULT_TX_BUFFER_SIZE = VsockDevice.DEFAULT_BUFFER_SIZE;
  static final int DEFAULT_QUEUE_SIZE = 1024;

  /** The keys of a guest, in the order the help lists them. */
  static final List<String> KEYS =
      List.of(
          "guest-cid",
          "socket",
          "socket-path",
          "fd",
          "uds-path",
          "tx-buffer-size",
          "queue-size",
          "groups");

  VsockVm {
    if (guestCid < 3 || guestCid > 0xffff_fffeL) {
      throw new IllegalArgumentException(
          "guest-cid " + guestCid + " is not a guest CID (3 to 4294967294)");
    }
    if (txBufferSize < 4096 || txBufferSize > (64 << 20)) {
      throw new IllegalArgumentException(
          "tx-buffer-size " + txBufferSize + " is not between 4096 and 64M");
    }
    if (!Virtq.isQueueSize(queueSize)) {
      throw new IllegalArgumentException(
          "queue-size " + queueSize + " is not a power of two up to " + Virtq.MAX_QUEUE_SIZE);
    }
    if (groups.isEmpty() || groups.contains("")) {
      throw new IllegalArgumentException("groups " + groups + " has an empty group name");
    }
    groups = Collections.unmodifiableSet(new LinkedHashSet<>(groups));
  }

  /** {@code guest-cid=4,socket=/tmp/vhost4.socket,uds-path=/tmp/vm4.vsock[,...]}. */
  static VsockVm parse(String spec) throws UsageException {
    Map<String, Object> keys = new LinkedHashMap<>();
    for (String pair : spec.split(",")) {
      int equals = pair.indexOf('=');
      if (equals < 1) throw new UsageException("--vm: '" + pair + "' is not key=value");
      String key = pair.substring(0, equals).trim();
      if (keys.put(key, pair.substring(equals + 1).trim()) != null) {
        throw new UsageException("--vm " + spec + ": " + key + " is given twice");
      }
    }
    return of(keys, "--vm " + spec);
  }

  /** One VM from {@code keys} (a --vm list or a config file entry); {@code where} names it. */
  static VsockVm of(Map<String, ?> keys, String where) throws UsageException {
    return of(keys, new Naming(where));
  }

  /** The one VM of {@code bounce vsock}'s flags ({@code --socket ... --uds-path ...}). */
  static VsockVm ofFlags(Map<String, String> flags) throws UsageException {
    return of(flags, new Naming(null));
  }

  /**
   * How messages name a guest and its keys: {@code where: key} for a --vm or a config entry, {@code
   * --key} for the flags.
   */
  private record Naming(String where) {
    String key(String key) {
      return where == null ? "--" + key : key;
    }

    /** {@code text} about this guest. */
    String say(String text) {
      return where == null ? text : where + ": " + text;
    }
  }

  private static VsockVm of(Map<String, ?> keys, Naming naming) throws UsageException {
    Map<String, String> values = new LinkedHashMap<>();
    for (var e : keys.entrySet()) {
      String key = e.getKey().replace('_', '-');
      if (key.equals("forward-cid") || key.equals("forward-listen")) {
        throw new UsageException(
            naming.say(
                "forward-cid and forward-listen (vhost-device-vsock's forwarding over the host's"
                    + " vsock) are not supported by bounce; its host side is Unix sockets only"));
      }
      if (!KEYS.contains(key)) {
        throw new UsageException(
            naming.say("unknown key '" + e.getKey() + "' (known: " + KEYS + ")"));
      }
      String name = naming.where() == null ? naming.key(key) : e.getKey();
      // A config file's "uds_path:" is null, and String.valueOf would make it the path "null".
      if (e.getValue() == null) {
        throw new UsageException(naming.say(name + " has no value"));
      }
      if (e.getValue() instanceof Map<?, ?> || e.getValue() instanceof Collection<?>) {
        throw new UsageException(naming.say(name + " is not a single value"));
      }
      if (String.valueOf(e.getValue()).isBlank()) {
        throw new UsageException(naming.say(name + " has no value"));
      }
      if (values.put(key, String.valueOf(e.getValue())) != null) {
        throw new UsageException(naming.say(key + " is given twice ('-' and '_' spell one key)"));
      }
    }
    if (!values.containsKey("uds-path")) {
      throw new UsageException(
          naming.where() == null ? "--uds-path is required" : naming.say("uds-path is missing"));
    }
    try {
      return new VsockVm(
          number(values, "guest-cid", DEFAULT_GUEST_CID, naming),
          vhostSocket(values, naming),
          Path.of(values.get("uds-path")),
          intValue("tx-buffer-size", size(values, naming)),
          intValue("queue-size", number(values, "queue-size", DEFAULT_QUEUE_SIZE, naming)),
          groups(values, naming));
    } catch (IllegalArgumentException e) {
      // Each message starts with the key it is about.
      throw new UsageException(
          naming.say(naming.where() == null ? "--" + e.getMessage() : e.getMessage()));
    }
  }

  /** socket (or its alias socket-path) or fd: exactly one. */
  private static VhostSocket vhostSocket(Map<String, String> values, Naming naming)
      throws UsageException {
    String path = values.getOrDefault("socket", values.get("socket-path"));
    int given =
        (values.containsKey("socket") ? 1 : 0)
            + (values.containsKey("socket-path") ? 1 : 0)
            + (values.containsKey("fd") ? 1 : 0);
    if (given != 1) {
      throw new UsageException(
          naming.say(
              "give exactly one of "
                  + naming.key("socket")
                  + " (or "
                  + naming.key("socket-path")
                  + "), a path, and "
                  + naming.key("fd")
                  + ", an inherited fd"));
    }
    if (path != null) return new VhostSocket.AtPath(Path.of(path));
    long fd = number(values, "fd", -1, naming);
    if (fd < 0 || fd > Integer.MAX_VALUE) {
      throw new UsageException(
          naming.say(naming.key("fd") + " " + values.get("fd") + " is not an fd number"));
    }
    if (fd < 3) {
      // Under systemd, stdout and stderr may be sockets to the journal: never a frontend's.
      throw new UsageException(
          naming.say(
              naming.key("fd")
                  + " "
                  + fd
                  + " is standard input, output or error; pass the socket at 3 or up"));
    }
    return new VhostSocket.Inherited((int) fd);
  }

  /**
   * vhost-device-vsock's groups: names joined with '+' ({@code group1+groupA}), {@link
   * Siblings#DEFAULT_GROUP} when not given; an empty name is refused (vhost-device-vsock would make
   * it a group of its own).
   */
  private static Set<String> groups(Map<String, String> values, Naming naming)
      throws UsageException {
    String text = values.get("groups");
    if (text == null) return Set.of(Siblings.DEFAULT_GROUP);
    Set<String> groups = new LinkedHashSet<>();
    for (String name : text.split("\\+", -1)) {
      if (name.isBlank()) {
        throw new UsageException(
            naming.say(
                naming.key("groups")
                    + " '"
                    + text
                    + "' has an empty group name (names are joined with '+')"));
      }
      groups.add(name.trim());
    }
    return groups;
  }

  private static long size(Map<String, String> values, Naming naming) throws UsageException {
    String text = values.get("tx-buffer-size");
    return text == null
        ? DEFAULT_TX_BUFFER_SIZE
        : Flags.parseSize(naming.say(naming.key("tx-buffer-size")), text);
  }

  private static int intValue(String key, long value) {
    if (value < 0 || value > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(key + " " + value + " is out of range");
    }
    return (int) value;
  }

  private static long number(Map<String, String> values, String key, long fallback, Naming naming)
      throws UsageException {
    String text = values.get(key);
    if (text == null) return fallback;
    try {
      return Flags.parseNumber(text);
    } catch (NumberFormatException e) {
      throw new UsageException(naming.say(naming.key(key) + " '" + text + "' is not a number"));
    }
  }
}
