package dev.bounce.device.cli;

import dev.bounce.device.vsock.Siblings;
import dev.bounce.device.vsock.UnixHost;
import dev.bounce.device.vsock.VsockDevice;
import dev.bounce.pool.NativeException;
import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.backend.RingPolling;
import dev.bounce.vhost.loop.EventLoops;
import io.netty.channel.IoEventLoop;
import io.netty.channel.unix.Errors;
import java.io.IOException;
import java.io.Reader;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;
import org.yaml.snakeyaml.error.YAMLException;

/**
 * {@code bounce vsock}: the virtio-vsock device with the hybrid-vsock host side, for QEMU's
 * vhost-user-vsock; a drop-in for vhost-device-vsock (its flags, {@code --vm} and {@code --config}
 * schema, and its Unix-socket protocol). Several guests share one process. Runs until SIGTERM.
 */
final class VsockCommand {
  /** vhost-device-vsock's flags bounce does not have, refused saying so. */
  private static final String FORWARDING =
      "--forward-cid and --forward-listen (vhost-device-vsock's forwarding over the host's vsock)"
          + " are not supported by bounce; its host side is Unix sockets only (--uds-path)";

  private static final Flags FLAGS =
      new Flags(
              "bounce vsock (--socket PATH | --fd N) --uds-path PATH [--guest-cid N]"
                  + " [--tx-buffer-size B] [--queue-size N] [--groups NAMES]\n"
                  + "       bounce vsock --vm guest-cid=N,socket=PATH,uds-path=PATH[,...] [--vm ...]\n"
                  + "       bounce vsock --config FILE\n"
                  + "  each with [--pool GPA:SIZE | --pool-from-table | --device-pool SIZE]"
                  + " [--restricted-dma POLICY] [--max-guest-memory SIZE] [--ring-poll US[:MAX]]"
                  + " for every guest",
              Stream.concat(
                      Stream.of(
                          new Flags.Flag(
                              "guest-cid", "N", "the guest's context ID, 3 or more (default 3)"),
                          new Flags.Flag(
                              "socket",
                              "PATH",
                              "the vhost-user socket the VMM connects to (created)"),
                          new Flags.Flag("socket-path", "PATH", "the same as --socket"),
                          new Flags.Flag(
                              "fd",
                              "N",
                              "the vhost-user socket as inherited fd N instead: a listening one"
                                  + " (systemd socket activation) or a connected one (served until its"
                                  + " frontend leaves)"),
                          new Flags.Flag(
                              "print-capabilities",
                              null,
                              "prints {\"type\": \"vsock\"} (vhost-user.json) and exits"),
                          new Flags.Flag(
                              "uds-path",
                              "PATH",
                              "host applications connect here and send 'CONNECT <port>\\n'; a guest"
                                  + " connecting to host port P reaches PATH_P"),
                          new Flags.Flag(
                              "tx-buffer-size",
                              "B",
                              "bytes buffered per connection and direction (default 256K, Linux's vsock buffer); bounds memory"),
                          new Flags.Flag(
                              "queue-size",
                              "N",
                              "the largest virtqueue size offered (default 1024)"),
                          new Flags.Flag(
                              "groups",
                              "NAMES",
                              "the guest's groups, joined with '+' (default 'default'): guests of"
                                  + " one process that share a group reach each other's CIDs"),
                          new Flags.Flag(
                              "vm",
                              "KEY=VALUE,...",
                              "one guest (keys as the flags above: guest-cid, socket or fd,"
                                  + " uds-path, tx-buffer-size, queue-size, groups); repeat for more"
                                  + " guests",
                              true),
                          new Flags.Flag(
                              "config",
                              "FILE",
                              "a YAML file in vhost-device-vsock's schema: 'vms:' listing guest_cid,"
                                  + " socket, uds_path, tx_buffer_size, queue_size, groups")),
                      Stream.concat(
                          DmaFlags.FLAGS.stream(),
                          Stream.of(GuestMemoryFlag.FLAG, RingPollFlag.FLAG)))
                  .toList())
          .refusing("forward-cid", FORWARDING)
          .refusing("forward-listen", FORWARDING);

  private VsockCommand() {}

  /** How long an exit waits for everything to close (systemd's unit allows 15 s). */
  private static final long SHUTDOWN_SECONDS = 10;

  /** vhost-user.rst, "Backend program conventions": the other flags are ignored. */
  private static final String CAPABILITIES = "{\"type\": \"vsock\"}";

  static int run(List<String> args) throws Exception {
    if (args.contains("--print-capabilities")) {
      System.out.println(CAPABILITIES);
      return 0;
    }
    if (!FLAGS.parse(args)) return 0;
    List<VsockVm> vms = vms();
    RestrictedDma dma = DmaFlags.restrictedDma(FLAGS);
    long maxGuestMemory = GuestMemoryFlag.maxGuestMemory(FLAGS);
    RingPolling polling = RingPollFlag.ringPolling(FLAGS);
    // SIGTERM, or nothing left to serve (every socket an inherited connected one whose frontend
    // left): this thread then closes everything while the event loops still run, and the exit
    // waits for it.
    CountDownLatch stopped = new CountDownLatch(1);
    CountDownLatch closed = new CountDownLatch(1);
    AtomicInteger serving = new AtomicInteger(vms.size());
    Runnable onFinished =
        () -> {
          if (serving.decrementAndGet() == 0) stopped.countDown();
        };
    List<AutoCloseable> open = new ArrayList<>();
    int threads = Math.min(vms.size(), Runtime.getRuntime().availableProcessors());
    Siblings siblings = new Siblings();
    try (EventLoops control = new EventLoops(1, "bounce-control");
        EventLoops data = new EventLoops(threads, "bounce-data")) {
      List<Served> guests = new ArrayList<>();
      try {
        for (VsockVm vm : vms) {
          Served guest =
              serve(
                  vm,
                  siblings.join(vm.guestCid(), vm.groups()),
                  dma,
                  maxGuestMemory,
                  polling,
                  control.next(),
                  data.next(),
                  open);
          guests.add(guest);
          guest.server().finished().thenRun(onFinished);
        }
        Runtime.getRuntime()
            .addShutdownHook(
                new Thread(
                    () -> {
                      stopped.countDown();
                      try {
                        closed.await(SHUTDOWN_SECONDS, TimeUnit.SECONDS);
                      } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                      }
                    }));
        stopped.await();
      } finally {
        closeAll(open); // here, not after the try-with-resources: the loops must still run
      }
      int status = 0;
      for (Served guest : guests) {
        VsockDevice d = guest.device();
        System.err.println(
            "bounce vsock: guest CID " + d.guestCid() + ": " + d.guestErrors() + " guest errors");
        // A management layer that handed bounce one frontend's socket learns from the status how
        // that session ended.
        BackendServer server = guest.server();
        if (server.failure() != null) {
          System.err.println(
              "bounce vsock: " + server + ": ended on an error: " + server.failure());
          status = 1;
        }
      }
      return status;
    } finally {
      closed.countDown(); // the event loops are shut down by now
    }
  }

  private static List<VsockVm> vms() throws UsageException, IOException {
    // With --vm or --config every guest is described there: a per-guest flag beside them would be
    // ignored, unsaid (and unchecked).
    String described = FLAGS.has("config") ? "--config" : FLAGS.has("vm") ? "--vm" : null;
    if (described != null && !(FLAGS.has("vm") && FLAGS.has("config"))) {
      for (String key : VsockVm.KEYS) {
        if (FLAGS.has(key)) {
          throw new UsageException(
              "--"
                  + key
                  + " does not combine with "
                  + described
                  + ": "
                  + (described.equals("--vm")
                      ? "give " + key + "=... inside each --vm"
                      : "give " + key.replace('-', '_') + ": in each entry of the file"));
        }
      }
    }
    boolean single =
        FLAGS.has("socket") || FLAGS.has("socket-path") || FLAGS.has("fd") || FLAGS.has("uds-path");
    int ways = (single ? 1 : 0) + (FLAGS.has("vm") ? 1 : 0) + (FLAGS.has("config") ? 1 : 0);
    if (ways != 1) {
      throw new UsageException(
          "give exactly one of: --socket (or --fd) with --uds-path, --vm (repeatable), --config (see --help)");
    }
    if (FLAGS.has("config")) {
      return directoriesExist(distinct(fromConfig(Path.of(FLAGS.require("config")))), false);
    }
    if (FLAGS.has("vm")) {
      List<VsockVm> vms = new ArrayList<>();
      for (String spec : FLAGS.all("vm")) vms.add(VsockVm.parse(spec));
      return directoriesExist(distinct(vms), false);
    }
    Map<String, String> keys = new LinkedHashMap<>();
    for (String key : VsockVm.KEYS) {
      if (FLAGS.has(key)) keys.put(key, FLAGS.get(key, null));
    }
    VsockVm vm = VsockVm.ofFlags(keys);
    if (socketOnOwnHostSide(vm)) {
      throw new UsageException(
          (FLAGS.has("socket-path") ? "--socket-path " : "--socket ")
              + vm.socket()
              + " is a path of --uds-path "
              + vm.udsPath()
              + "'s host side (the path itself, .seqpacket, or _<port>, which a guest reaches by"
              + " connecting to that host port): give the socket another path");
    }
    return directoriesExist(List.of(vm), true);
  }

  /**
   * bounce creates its sockets, not their directories: a missing one is the user's to create, and
   * said so before anything binds ({@code flags}: the guest came from the flags).
   */
  private static List<VsockVm> directoriesExist(List<VsockVm> vms, boolean flags)
      throws UsageException {
    for (int i = 0; i < vms.size(); i++) {
      VsockVm vm = vms.get(i);
      String guest = flags ? "--" : "guest " + (i + 1) + ": ";
      if (vm.socket() instanceof VhostSocket.AtPath(Path socket)) {
        Flags.directoryExists(
            guest + (flags && FLAGS.has("socket-path") ? "socket-path" : "socket"), socket);
      }
      Flags.directoryExists(guest + "uds-path", vm.udsPath());
    }
    return vms;
  }

  /**
   * Whether a guest's vhost-user socket is one of its own host-side paths: a guest connecting to
   * host port P reaches {@code <uds-path>_P}, and would reach its own vhost-user socket there.
   */
  private static boolean socketOnOwnHostSide(VsockVm vm) {
    return vm.socket() instanceof VhostSocket.AtPath(Path socket)
        && UnixHost.ownsPath(file(vm.udsPath()), file(socket));
  }

  /** No two guests may share a CID, a vhost-user socket (path or fd) or a uds-path. */
  static List<VsockVm> distinct(List<VsockVm> vms) throws UsageException {
    for (int i = 0; i < vms.size(); i++) {
      VsockVm vm = vms.get(i);
      if (socketOnOwnHostSide(vm)) {
        throw new UsageException(
            "guest "
                + (i + 1)
                + ": its vhost-user socket "
                + vm.socket()
                + " is also a path of its host side (uds-path "
                + vm.udsPath()
                + ")");
      }
      for (int j = 0; j < i; j++) {
        String clash = clash(vms.get(j), vms.get(i));
        if (clash != null) {
          throw new UsageException(
              "guests "
                  + (j + 1)
                  + " and "
                  + (i + 1)
                  + " both have "
                  + clash
                  + "; each needs its own");
        }
      }
    }
    return vms;
  }

  /** What guests {@code a} and {@code b} share that each needs its own, or null. */
  private static String clash(VsockVm a, VsockVm b) {
    if (a.guestCid() == b.guestCid()) return "guest CID " + a.guestCid();
    Path aSocket = a.socket() instanceof VhostSocket.AtPath(Path p) ? file(p) : null;
    Path bSocket = b.socket() instanceof VhostSocket.AtPath(Path p) ? file(p) : null;
    if (aSocket == null ? a.socket().equals(b.socket()) : aSocket.equals(bSocket)) {
      return "vhost-user socket " + a.socket();
    }
    Path aUds = file(a.udsPath());
    Path bUds = file(b.udsPath());
    if (aUds.equals(bUds)) return "uds-path " + a.udsPath();
    // A guest names host ports, so each one's <uds-path>_<port> paths are its own too.
    if (UnixHost.ownsPath(aUds, bUds) || UnixHost.ownsPath(bUds, aUds)) {
      return "host-side paths (uds-path "
          + a.udsPath()
          + " and "
          + b.udsPath()
          + ", with their .seqpacket and _<port> paths)";
    }
    if ((bSocket != null && UnixHost.ownsPath(aUds, bSocket))
        || (aSocket != null && UnixHost.ownsPath(bUds, aSocket))) {
      Path socket = bSocket != null && UnixHost.ownsPath(aUds, bSocket) ? bSocket : aSocket;
      return "the path " + socket + " (one's socket, among the other's host-side paths)";
    }
    return null;
  }

  /** A path as the file it names, however spelled (relative, with . or ..). */
  private static Path file(Path path) {
    return path.toAbsolutePath().normalize();
  }

  static List<VsockVm> fromConfig(Path file) throws UsageException, IOException {
    // A file the user named that is not there, not readable or not a file: each a usage error.
    if (Files.isDirectory(file)) {
      throw new UsageException("--config " + file + " is a directory, not a YAML file");
    }
    Object root;
    try (Reader in = Files.newBufferedReader(file)) {
      LoaderOptions options = new LoaderOptions();
      options.setAllowDuplicateKeys(false); // else the last of two socket: keys wins, unsaid
      root = new Yaml(new SafeConstructor(options)).load(in);
    } catch (YAMLException e) {
      if (e.getCause() instanceof IOException read) { // reading failed, not parsing
        throw new UsageException("--config " + file + ": cannot read it: " + read.getMessage());
      }
      throw new UsageException(file + " is not valid YAML: " + e.getMessage());
    } catch (NoSuchFileException e) { // whose message is the bare path, as AccessDenied's
      throw new UsageException("--config " + file + ": no such file");
    } catch (AccessDeniedException e) {
      throw new UsageException("--config " + file + ": permission denied");
    }
    if (!(root instanceof Map<?, ?> top) || !(top.get("vms") instanceof List<?> list)) {
      throw new UsageException(file + ": expected a top-level 'vms:' list");
    }
    List<VsockVm> vms = new ArrayList<>();
    for (int i = 0; i < list.size(); i++) {
      if (!(list.get(i) instanceof Map<?, ?> entry)) {
        throw new UsageException(file + ": vms[" + i + "] is not a mapping");
      }
      Map<String, Object> keys = new LinkedHashMap<>();
      entry.forEach((k, v) -> keys.put(String.valueOf(k), v));
      vms.add(VsockVm.of(keys, file + " vms[" + i + "]"));
    }
    if (vms.isEmpty()) throw new UsageException(file + ": 'vms:' is empty");
    return vms;
  }

  /** One guest being served: its device and the server of its vhost-user socket. */
  private record Served(VsockDevice device, BackendServer server) {}

  private static Served serve(
      VsockVm vm,
      Siblings.Member siblings,
      RestrictedDma dma,
      long maxGuestMemory,
      RingPolling polling,
      IoEventLoop control,
      IoEventLoop data,
      List<AutoCloseable> open)
      throws IOException {
    UnixHost host;
    try {
      host = UnixHost.listen(vm.udsPath(), data);
    } catch (IOException e) {
      // Netty's bind error reads "bind(..) failed with error(-13)": say it as --socket's does.
      if (e.getCause() instanceof Errors.NativeIoException netty && netty.expectedErr() < 0) {
        throw new IOException(
            new NativeException("bind", vm.udsPath().toString(), -netty.expectedErr()).getMessage(),
            e);
      }
      throw e;
    }
    open.add(host);
    VsockDevice device =
        new VsockDevice(
            vm.guestCid(),
            vm.txBufferSize(),
            VsockDevice.DEFAULT_MAX_CONNECTIONS,
            vm.queueSize(),
            host,
            siblings);
    BackendServer server =
        vm.socket()
            .serve(
                new BackendServer.Config(
                    "vsock cid " + vm.guestCid(),
                    device,
                    control,
                    data,
                    dma,
                    maxGuestMemory,
                    polling));
    open.add(0, server); // closed before its host side
    System.err.println(
        "bounce vsock: guest CID "
            + vm.guestCid()
            + ": vhost-user socket "
            + vm.socket()
            + ", host side "
            + vm.udsPath()
            + ", groups "
            + String.join("+", vm.groups()));
    return new Served(device, server);
  }

  private static void closeAll(List<AutoCloseable> open) {
    for (AutoCloseable c : List.copyOf(open)) {
      try {
        c.close();
      } catch (Exception e) {
        System.err.println("bounce vsock: closing " + c + ": " + e.getMessage());
      }
    }
    open.clear();
  }
}
