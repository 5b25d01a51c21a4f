package dev.bounce.vhost.frontend.hostile;

import static dev.bounce.vhost.frontend.hostile.RawProbe.concat;
import static dev.bounce.vhost.frontend.hostile.RawProbe.header;
import static dev.bounce.vhost.frontend.hostile.RawProbe.message;
import static dev.bounce.vhost.frontend.hostile.RawProbe.u64;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.Ranges;
import dev.bounce.vhost.frontend.DriverQueue;
import dev.bounce.vhost.frontend.EchoDriver;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.frontend.FrontendSession;
import dev.bounce.vhost.frontend.GuestRam;
import dev.bounce.vhost.frontend.Handshake;
import dev.bounce.vhost.frontend.MemoryMode;
import dev.bounce.vhost.frontend.Stats;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.MemoryTable;
import dev.bounce.vhost.protocol.SingleMemoryRegion;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.virtq.Virtq;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * The fake frontend's hostile mode: named scenarios, each doing against a backend's socket what a
 * broken or malicious VMM or guest does (malformed messages, descriptors outside memory or the
 * pool, loops, rings that lie, a peer that vanishes mid-message or mid-traffic), then checking that
 * the backend survived: a fresh, normal frontend session echoes a few hundred chains afterwards.
 *
 * <p>Each scenario also checks that the backend reported the error the way ARCHITECTURE.md
 * ("Errors") says: a guest error stops that ring and signals its err eventfd while the connection
 * goes on; a frontend error gets a failure reply (where the message asked for a reply) or ends the
 * connection. The checks hold for any vhost-user backend serving the engine's test device (echo);
 * in-process tests add their own (no fd or mapping leaked).
 *
 * <p>Scenarios run one after another, one connection at a time: a backend that serves one frontend
 * at a time may turn a new connection away while it lets go of the last, so connections are tried
 * again for a few seconds before a scenario gives up.
 */
public final class Hostile {
  /** Chains the survival check echoes. */
  public static final int SURVIVAL_CHAINS = 300;

  private static final int SURVIVAL_SIZE = 1500;
  private static final long DEFAULT_RAM_START = 0x4000_0000L;
  private static final long DEFAULT_POOL_SIZE = 4L << 20;
  private static final int NEED_REPLY = Header.VERSION | Header.NEED_REPLY;
  private static final int NO_REPLY = Header.VERSION;

  /**
   * The guest's memory: RAM, and a restricted pool or none, shared as {@code mode} says.
   *
   * @param poolSize 0 for no pool
   */
  public record Guest(MemoryMode mode, long ramStart, long ramSize, long poolStart, long poolSize) {
    /** All of RAM shared, no pool (QEMU with share=on). */
    public static Guest shared(long ramStart, long ramSize) {
      return new Guest(MemoryMode.SHARED, ramStart, ramSize, 0, 0);
    }

    GuestRam create() throws NativeException {
      return GuestRam.create(mode, ramStart, ramSize, poolStart, poolSize);
    }

    boolean hasPool() {
      return poolSize != 0;
    }

    /**
     * This guest when it has a pool; otherwise the same RAM with a 4 MiB pool right after it,
     * shared alone (pool mode, like Firecracker's swiotlb), so that any backend gets only the pool.
     */
    Guest withPool() {
      if (hasPool()) return this;
      return new Guest(MemoryMode.POOL, ramStart, ramSize, ramStart + ramSize, DEFAULT_POOL_SIZE);
    }

    /** The first guest address the backend is given. */
    long sharedStart() {
      return mode == MemoryMode.POOL ? poolStart : ramStart;
    }

    /** The first guest address after what the backend is given. */
    long sharedEnd() {
      return mode == MemoryMode.POOL ? poolStart + poolSize : ramStart + ramSize;
    }

    long poolEnd() {
      return poolStart + poolSize;
    }

    @Override
    public String toString() {
      return mode.flag()
          + " mode, RAM "
          + Ranges.describe(ramStart, ramSize)
          + (hasPool() ? ", pool " + Ranges.describe(poolStart, poolSize) : "");
    }
  }

  /**
   * Where the backend is and how to talk to it.
   *
   * @param timeout how long to wait for a reply, the end of a connection, or an err eventfd (each
   *     wait ends as soon as the backend reacts, so only a backend that fails to react waits it
   *     out)
   */
  public record Config(
      Path socket, Handshake handshake, Guest guest, int queueSize, Duration timeout) {
    /**
     * QEMU's handshake, 16 MiB of shared RAM, 256-entry queues, 10 s waits: long enough that a
     * correct backend on a busy machine is not taken for one that does not react.
     */
    public static Config of(Path socket) {
      return new Config(
          socket,
          Handshake.QEMU,
          Guest.shared(DEFAULT_RAM_START, 16L << 20),
          256,
          Duration.ofSeconds(10));
    }

    public Config withHandshake(Handshake h) {
      return new Config(socket, h, guest, queueSize, timeout);
    }

    public Config withQueueSize(int size) {
      return new Config(socket, handshake, guest, size, timeout);
    }

    public Config withTimeout(Duration t) {
      return new Config(socket, handshake, guest, queueSize, t);
    }

    public Config withGuest(Guest g) {
      return new Config(socket, handshake, g, queueSize, timeout);
    }

    FrontendSession.Options options() {
      return new FrontendSession.Options(
          handshake,
          VirtioFeatures.bit(VirtioFeatures.EVENT_IDX)
              | VirtioFeatures.bit(VirtioFeatures.INDIRECT_DESC),
          1,
          queueSize,
          0);
    }
  }

  /** A scenario's name and what it does. */
  public record Scenario(String name, String description) {}

  /**
   * What a scenario did and what became of the backend.
   *
   * @param happened what the scenario did and how the backend answered, variant by variant
   * @param survived whether a fresh normal session echoed {@link #SURVIVAL_CHAINS} chains after
   * @param reported whether every error was reported as ARCHITECTURE.md says
   * @param survival the survival check's account
   */
  public record Result(
      String scenario, String happened, boolean survived, boolean reported, String survival) {
    public boolean passed() {
      return survived && reported;
    }

    /** One line: PASS or FAIL, the name, and why. */
    public String line() {
      String verdict = passed() ? "PASS" : "FAIL";
      String why =
          !survived
              ? "the backend did not survive: " + survival + " (after: " + happened + ")"
              : !reported ? "not reported as ARCHITECTURE.md says: " + happened : happened;
      return verdict + " " + scenario + ": " + why;
    }

    public String json() {
      return String.format(
          Locale.ROOT,
          "{\"scenario\":%s,\"passed\":%b,\"survived\":%b,\"reported\":%b,\"happened\":%s,"
              + "\"survival\":%s}",
          Stats.quote(scenario),
          passed(),
          survived,
          reported,
          Stats.quote(happened),
          Stats.quote(survival));
    }
  }

  /** What a scenario's attack came to, before the survival check. */
  private record Outcome(boolean reported, String happened) {}

  @FunctionalInterface
  private interface Attack {
    Outcome run(Hostile hostile) throws Exception;
  }

  private record Entry(Scenario scenario, Attack attack) {}

  private static final List<Entry> ENTRIES =
      List.of(
          entry(
              "bad-version",
              "headers whose version bits are 0, 2 or 3: a failure reply when NEED_REPLY is set,"
                  + " otherwise the connection ends",
              Hostile::badVersion),
          entry(
              "bad-flags",
              "undefined flag bits, and the REPLY bit on a request",
              Hostile::badFlags),
          entry(
              "oversize",
              "a header announcing a payload over the 4096-byte bound (and 2^32-1): the"
                  + " connection ends before the payload is buffered",
              Hostile::oversize),
          entry(
              "unknown-request",
              "request codes 0, 99 and 0xffffffff with NEED_REPLY (a failure reply), and 99 without"
                  + " (the connection ends, or it goes on with the message skipped)",
              Hostile::unknownRequest),
          entry(
              "wrong-payload-size",
              "payloads shorter or longer than the request's layout (SET_FEATURES, SET_VRING_NUM,"
                  + " SET_VRING_ADDR, SET_MEM_TABLE, GET_FEATURES)",
              Hostile::wrongPayloadSize),
          entry(
              "stray-fds",
              "fds on requests that take none, and a missing fd where one is due",
              Hostile::strayFds),
          entry(
              "too-many-fds",
              "more fds in one message than any request takes (9 and 32)",
              Hostile::tooManyFds),
          entry(
              "bad-values",
              "well-formed requests with values to refuse: ring index out of range, ring size"
                  + " not a power of two, base over 65535, features never offered, a memory"
                  + " region whose fd is an eventfd or smaller than the region",
              Hostile::badValues),
          entry(
              "desc-past-memory",
              "a buffer at the first byte after the memory the backend was given, and 1 MiB past",
              Hostile::descPastMemory),
          entry(
              "desc-spanning-memory-end",
              "a buffer that starts in memory and ends past it",
              Hostile::descSpanningMemoryEnd),
          entry(
              "desc-wrapping", "buffers whose address + length wraps 2^64", Hostile::descWrapping),
          entry(
              "desc-outside-pool",
              "buffers in guest RAM outside the restricted pool, just below it and just past it,"
                  + " and an indirect table outside it (pool mode unless the guest given has a"
                  + " pool)",
              Hostile::descOutsidePool),
          entry(
              "desc-spanning-pool-end",
              "buffers that straddle the pool's start or its end",
              Hostile::descSpanningPoolEnd),
          entry(
              "chain-loop",
              "descriptor chains that loop: next pointing at itself, two descriptors pointing at"
                  + " each other, and a loop inside an indirect table",
              Hostile::chainLoop),
          entry(
              "indirect-bad",
              "indirect tables outside memory, of 0 or 17 bytes, and nested",
              Hostile::indirectBad),
          entry(
              "avail-index-ahead",
              "avail.idx published more than the queue size ahead of what was consumed (size+1,"
                  + " 0x8000, and one behind, which is 65535 ahead)",
              Hostile::availIndexAhead),
          entry(
              "avail-head-out-of-range",
              "available ring entries naming descriptors past the table",
              Hostile::availHeadOutOfRange),
          entry(
              "ring-outside-memory",
              "a ring restarted with SET_VRING_ADDR outside memory, or misaligned",
              Hostile::ringOutsideMemory),
          entry(
              "memfd-shrunk",
              "the frontend truncates the shared memfd to 0 under a running ring, then kicks:"
                  + " every access the backend makes faults (SIGBUS)",
              Hostile::memfdShrunk),
          entry(
              "second-frontend",
              "a second connection while a frontend is served: turned away or served, and the"
                  + " first goes on",
              Hostile::secondFrontend),
          entry(
              "vanish-mid-header",
              "the frontend closes after 1, 6 and 11 bytes of a header",
              Hostile::vanishMidHeader),
          entry(
              "vanish-mid-payload",
              "the frontend closes after a header announcing a payload, and halfway through it",
              Hostile::vanishMidPayload),
          entry(
              "vanish-with-fds",
              "the frontend closes with fds in flight: a memfd or eventfds sent with part of a"
                  + " message, and a whole SET_VRING_KICK just before the close",
              Hostile::vanishWithFds),
          entry(
              "vanish-mid-traffic",
              "the frontend closes with a ring full of chains in flight, and with idle rings",
              Hostile::vanishMidTraffic));

  private static Entry entry(String name, String description, Attack attack) {
    return new Entry(new Scenario(name, description), attack);
  }

  private final Config config;

  public Hostile(Config config) {
    this.config = config;
  }

  /** Every scenario, in the order {@code all} runs them. */
  public static List<Scenario> scenarios() {
    return ENTRIES.stream().map(Entry::scenario).toList();
  }

  public static List<String> names() {
    return ENTRIES.stream().map(e -> e.scenario().name()).toList();
  }

  /** Runs every scenario. */
  public List<Result> runAll() {
    List<Result> results = new ArrayList<>();
    for (String name : names()) results.add(run(name));
    return results;
  }

  /**
   * Runs scenario {@code name}, then the survival check.
   *
   * @throws IllegalArgumentException for a name that is not a scenario
   */
  public Result run(String name) {
    Entry entry =
        ENTRIES.stream()
            .filter(e -> e.scenario().name().equals(name))
            .findFirst()
            .orElseThrow(
                () ->
                    new IllegalArgumentException(
                        "no hostile scenario '"
                            + name
                            + "'; they are: "
                            + String.join(", ", names())));
    Outcome outcome;
    try {
      outcome = entry.attack().run(this);
    } catch (Exception e) {
      outcome = new Outcome(false, "the scenario could not be carried out: " + describe(e));
    }
    String survival;
    boolean survived;
    try {
      survival = survive();
      survived = true;
    } catch (Exception e) {
      survival = describe(e);
      survived = false;
    }
    return new Result(name, outcome.happened(), survived, outcome.reported(), survival);
  }

  // ---- the survival check ----

  /**
   * A fresh normal session echoes {@link #SURVIVAL_CHAINS} chains; its account, or an exception.
   */
  private String survive() throws IOException {
    try (GuestRam ram = config.guest().create();
        FrontendSession session = connect(config, ram)) {
      Stats stats =
          new EchoDriver(session).run(SURVIVAL_CHAINS, SURVIVAL_SIZE, Duration.ofSeconds(20));
      session.stop();
      if (stats.operations() != SURVIVAL_CHAINS || stats.errors() != 0) {
        throw new IOException(
            "a fresh frontend echoed "
                + stats.operations()
                + " of "
                + SURVIVAL_CHAINS
                + " chains with "
                + stats.errors()
                + " errors"
                + (stats.firstError() == null ? "" : " (first: " + stats.firstError() + ")"));
      }
      return "a fresh frontend echoed " + SURVIVAL_CHAINS + " chains";
    }
  }

  /**
   * A negotiated session; a connection turned away (a backend still letting go of the last one) is
   * tried again for a few seconds.
   */
  static FrontendSession connect(Config config, GuestRam ram) throws IOException {
    long deadline = System.nanoTime() + patience(config).toNanos();
    while (true) {
      try {
        return FrontendSession.connect(config.socket(), ram, config.options());
      } catch (FrontendChannel.Refused e) {
        throw e;
      } catch (IOException e) {
        if (System.nanoTime() - deadline > 0) throw e;
        RawProbe.pause();
      }
    }
  }

  private static Duration patience(Config config) {
    return config.timeout().multipliedBy(3);
  }

  // ---- frontend errors: malformed messages ----

  /**
   * One malformed message: what it is, its request code (for the reply), its bytes and fds.
   *
   * @param mayIgnore whether a backend may let the message pass with a log line, the connection
   *     going on: only an unknown request without NEED_REPLY, which asks nothing of the backend
   *     (the engine does so since issue 3, so that a newer frontend's optional message cannot end a
   *     VM's device)
   */
  private record Probe(String label, int code, boolean mayIgnore, byte[] bytes, Fd... fds) {
    Probe(String label, int code, byte[] bytes, Fd... fds) {
      this(label, code, false, bytes, fds);
    }
  }

  /**
   * Sends each probe on a fresh connection (after one good GET_FEATURES, so that the backend is
   * serving it) and reads what the backend did. A failure reply must leave the connection usable.
   */
  private Outcome probe(List<Probe> probes) throws IOException {
    boolean reported = true;
    List<String> lines = new ArrayList<>();
    for (Probe p : probes) {
      try (FrontendChannel channel =
          RawProbe.served(config.socket(), patience(config), config.timeout())) {
        channel.sendRaw(p.bytes(), p.fds());
        if (p.mayIgnore()) {
          // The next request tells: answered (the message was skipped whole and the connection
          // went on), or the end of the connection; anything else is a fault.
          String line;
          boolean ok = true;
          try {
            channel.getU64(FrontendRequest.GET_FEATURES);
            line =
                "skipped (no reply was asked for), the connection went on: GET_FEATURES answered";
          } catch (FrontendChannel.ClosedByPeer e) {
            line = "connection closed";
          } catch (IOException e) {
            ok = false;
            line = "the next request's reply went wrong: " + e.getMessage();
          }
          reported &= ok;
          lines.add(p.label() + ": " + line);
          continue;
        }
        RawProbe.Reaction reaction = RawProbe.reaction(channel, p.code(), config.timeout());
        String line = p.label() + ": " + reaction;
        boolean ok = reaction.reported();
        if (reaction.kind() == RawProbe.Kind.FAILURE_REPLY) {
          try {
            channel.getU64(FrontendRequest.GET_FEATURES);
            line += ", then GET_FEATURES answered";
          } catch (FrontendChannel.ClosedByPeer e) {
            line += ", then the connection was closed";
          } catch (IOException e) {
            ok = false;
            line += ", then the connection was unusable: " + e.getMessage();
          }
        }
        reported &= ok;
        lines.add(line);
      } catch (FrontendChannel.ClosedByPeer e) {
        // The backend closed while the probe was still being sent: the connection ended.
        lines.add(p.label() + ": connection closed (while sending)");
      } finally {
        for (Fd fd : p.fds()) fd.close();
      }
    }
    return new Outcome(reported, String.join("; ", lines));
  }

  private Outcome badVersion() throws IOException {
    return probe(
        List.of(
            new Probe(
                "GET_FEATURES version 0 + NEED_REPLY",
                code(FrontendRequest.GET_FEATURES),
                header(code(FrontendRequest.GET_FEATURES), Header.NEED_REPLY, 0)),
            new Probe(
                "SET_OWNER version 2 + NEED_REPLY",
                code(FrontendRequest.SET_OWNER),
                header(code(FrontendRequest.SET_OWNER), 0x2 | Header.NEED_REPLY, 0)),
            new Probe(
                "SET_FEATURES version 3 + NEED_REPLY",
                code(FrontendRequest.SET_FEATURES),
                message(
                    code(FrontendRequest.SET_FEATURES),
                    0x3 | Header.NEED_REPLY,
                    u64(VirtioFeatures.bit(VirtioFeatures.VERSION_1)))),
            new Probe(
                "GET_FEATURES version 0, no NEED_REPLY",
                code(FrontendRequest.GET_FEATURES),
                header(code(FrontendRequest.GET_FEATURES), 0, 0))));
  }

  private Outcome badFlags() throws IOException {
    return probe(
        List.of(
            new Probe(
                "SET_OWNER flags 0x19 (undefined bit 0x10)",
                code(FrontendRequest.SET_OWNER),
                header(code(FrontendRequest.SET_OWNER), NEED_REPLY | 0x10, 0)),
            new Probe(
                "SET_OWNER flags 0xd (REPLY on a request)",
                code(FrontendRequest.SET_OWNER),
                header(code(FrontendRequest.SET_OWNER), NEED_REPLY | Header.REPLY, 0)),
            new Probe(
                "GET_FEATURES flags 0x80000001, no NEED_REPLY",
                code(FrontendRequest.GET_FEATURES),
                header(code(FrontendRequest.GET_FEATURES), 0x8000_0001, 0))));
  }

  private Outcome oversize() throws IOException {
    return probe(
        List.of(
            new Probe(
                "SET_MEM_TABLE announcing " + (Header.MAX_PAYLOAD + 1) + " bytes",
                code(FrontendRequest.SET_MEM_TABLE),
                concat(
                    header(code(FrontendRequest.SET_MEM_TABLE), NEED_REPLY, Header.MAX_PAYLOAD + 1),
                    new byte[64])),
            new Probe(
                "GET_FEATURES announcing 2^32-1 bytes",
                code(FrontendRequest.GET_FEATURES),
                header(code(FrontendRequest.GET_FEATURES), NEED_REPLY, 0xffff_ffffL))));
  }

  private Outcome unknownRequest() throws IOException {
    return probe(
        List.of(
            new Probe("code 0 + NEED_REPLY", 0, header(0, NEED_REPLY, 0)),
            new Probe("code 99 + NEED_REPLY, 8 bytes", 99, message(99, NEED_REPLY, u64(1))),
            new Probe("code 0xffffffff + NEED_REPLY", -1, header(-1, NEED_REPLY, 0)),
            new Probe(
                "code 99, no NEED_REPLY, 16 bytes",
                99,
                true,
                message(99, NO_REPLY, new byte[16]))));
  }

  private Outcome wrongPayloadSize() throws IOException {
    int setFeatures = code(FrontendRequest.SET_FEATURES);
    int vringNum = code(FrontendRequest.SET_VRING_NUM);
    int vringAddr = code(FrontendRequest.SET_VRING_ADDR);
    int memTable = code(FrontendRequest.SET_MEM_TABLE);
    int getFeatures = code(FrontendRequest.GET_FEATURES);
    return probe(
        List.of(
            new Probe(
                "SET_FEATURES with 4 bytes",
                setFeatures,
                message(setFeatures, NEED_REPLY, new byte[4])),
            new Probe(
                "SET_FEATURES with 12 bytes",
                setFeatures,
                message(setFeatures, NEED_REPLY, new byte[12])),
            new Probe(
                "SET_VRING_NUM with 4 bytes", vringNum, message(vringNum, NEED_REPLY, new byte[4])),
            new Probe(
                "SET_VRING_ADDR with 39 bytes",
                vringAddr,
                message(vringAddr, NEED_REPLY, new byte[39])),
            new Probe(
                "SET_MEM_TABLE announcing 1 region with none",
                memTable,
                message(memTable, NEED_REPLY, u64(1))),
            new Probe(
                "GET_FEATURES with 8 bytes", getFeatures, message(getFeatures, NEED_REPLY, u64(0))),
            new Probe(
                "SET_FEATURES with 4 bytes, no NEED_REPLY",
                setFeatures,
                message(setFeatures, NO_REPLY, new byte[4]))));
  }

  private Outcome strayFds() throws IOException {
    int setOwner = code(FrontendRequest.SET_OWNER);
    int setFeatures = code(FrontendRequest.SET_FEATURES);
    int getFeatures = code(FrontendRequest.GET_FEATURES);
    int kick = code(FrontendRequest.SET_VRING_KICK);
    int call = code(FrontendRequest.SET_VRING_CALL);
    byte[] features = u64(VirtioFeatures.bit(VirtioFeatures.VERSION_1));
    List<Probe> probes = new ArrayList<>();
    try {
      probes.add(
          new Probe(
              "SET_OWNER + an eventfd", setOwner, header(setOwner, NEED_REPLY, 0), eventFd()));
      probes.add(
          new Probe(
              "SET_FEATURES + 2 eventfds",
              setFeatures,
              message(setFeatures, NEED_REPLY, features),
              eventFd(),
              eventFd()));
      probes.add(
          new Probe(
              "SET_VRING_KICK with the no-fd bit + an eventfd",
              kick,
              message(kick, NEED_REPLY, RawProbe.bytes(new VringFdIndex(0, true))),
              eventFd()));
      probes.add(
          new Probe(
              "SET_VRING_CALL without its eventfd",
              call,
              message(call, NEED_REPLY, RawProbe.bytes(new VringFdIndex(0, false)))));
      probes.add(
          new Probe(
              "GET_FEATURES + a memfd, no NEED_REPLY",
              getFeatures,
              header(getFeatures, NO_REPLY, 0),
              memfd(4096)));
    } catch (NativeException | RuntimeException e) {
      probes.forEach(p -> Arrays.stream(p.fds()).forEach(Fd::close));
      throw e;
    }
    return probe(probes);
  }

  private Outcome tooManyFds() throws IOException {
    int memTable = code(FrontendRequest.SET_MEM_TABLE);
    int setOwner = code(FrontendRequest.SET_OWNER);
    List<Probe> probes = new ArrayList<>();
    try {
      MemoryTable table =
          new MemoryTable(
              List.of(new MemoryRegionDescription(DEFAULT_RAM_START, 4096, 0x7f00_0000_0000L, 0)));
      probes.add(
          new Probe(
              "SET_MEM_TABLE of 1 region + 9 fds",
              memTable,
              message(memTable, NEED_REPLY, RawProbe.bytes(table)),
              eventFds(9)));
      probes.add(
          new Probe(
              "SET_OWNER + 32 eventfds", setOwner, header(setOwner, NEED_REPLY, 0), eventFds(32)));
    } catch (NativeException | RuntimeException e) {
      probes.forEach(p -> Arrays.stream(p.fds()).forEach(Fd::close));
      throw e;
    }
    return probe(probes);
  }

  private Outcome badValues() throws IOException {
    int vringNum = code(FrontendRequest.SET_VRING_NUM);
    int vringBase = code(FrontendRequest.SET_VRING_BASE);
    int setFeatures = code(FrontendRequest.SET_FEATURES);
    int memTable = code(FrontendRequest.SET_MEM_TABLE);
    int addReg = code(FrontendRequest.ADD_MEM_REG);
    List<Probe> probes = new ArrayList<>();
    try {
      probes.add(
          new Probe(
              "SET_VRING_NUM of ring 200",
              vringNum,
              message(vringNum, NEED_REPLY, RawProbe.bytes(new VringState(200, 256)))));
      probes.add(
          new Probe(
              "SET_VRING_NUM size 3",
              vringNum,
              message(vringNum, NEED_REPLY, RawProbe.bytes(new VringState(0, 3)))));
      probes.add(
          new Probe(
              "SET_VRING_NUM size 65536",
              vringNum,
              message(vringNum, NEED_REPLY, RawProbe.bytes(new VringState(0, 65536)))));
      probes.add(
          new Probe(
              "SET_VRING_BASE 70000",
              vringBase,
              message(vringBase, NEED_REPLY, RawProbe.bytes(new VringState(0, 70000)))));
      probes.add(
          new Probe(
              "SET_FEATURES with bit 63 (never offered)",
              setFeatures,
              message(
                  setFeatures,
                  NEED_REPLY,
                  u64(1L << 63 | VirtioFeatures.bit(VirtioFeatures.VERSION_1)))));
      // The region is all the memory the guest shares, so that a backend with a pool (which maps
      // only the pool's window of what is shared) has to map part of it too.
      Guest g = config.guest();
      long start = g.sharedStart();
      long size = g.sharedEnd() - start;
      MemoryRegionDescription all = new MemoryRegionDescription(start, size, 0x7f00_0000_0000L, 0);
      probes.add(
          new Probe(
              "SET_MEM_TABLE whose fd is an eventfd",
              memTable,
              message(memTable, NEED_REPLY, RawProbe.bytes(new MemoryTable(List.of(all)))),
              eventFd()));
      probes.add(
          new Probe(
              "SET_MEM_TABLE of " + (size >> 20) + " MiB over a 4 KiB memfd",
              memTable,
              message(memTable, NEED_REPLY, RawProbe.bytes(new MemoryTable(List.of(all)))),
              memfd(4096)));
      probes.add(
          new Probe(
              "ADD_MEM_REG at mmap offset 2^62 over a 4 KiB memfd",
              addReg,
              message(
                  addReg,
                  NEED_REPLY,
                  RawProbe.bytes(
                      new SingleMemoryRegion(
                          new MemoryRegionDescription(start, size, 0x7f00_0000_0000L, 1L << 62)))),
              memfd(4096)));
    } catch (NativeException | RuntimeException e) {
      probes.forEach(p -> Arrays.stream(p.fds()).forEach(Fd::close));
      throw e;
    }
    return probe(probes);
  }

  // ---- guest errors: descriptors and rings ----

  /** One way to break ring 0 of a primed victim. */
  private record Variant(String label, Breaker breaker) {}

  @FunctionalInterface
  private interface Breaker {
    void breakRing(Victim victim) throws Exception;
  }

  /**
   * Each variant on its own victim session: the ring must stop, the err eventfd ring, and the
   * connection go on.
   */
  private Outcome guestErrors(Guest guest, List<Variant> variants) {
    boolean reported = true;
    List<String> lines = new ArrayList<>();
    for (Variant v : variants) {
      try (Victim victim = Victim.open(config, guest).prime()) {
        v.breaker().breakRing(victim);
        Victim.Check check = victim.guestErrorCheck(true);
        reported &= check.ok();
        lines.add(v.label() + ": " + check.text());
      } catch (Exception e) {
        reported = false;
        lines.add(v.label() + ": could not be carried out: " + describe(e));
      }
    }
    return new Outcome(
        reported,
        (guest.equals(config.guest()) ? "" : "[" + guest + "] ") + String.join("; ", lines));
  }

  private static Variant buffer(String label, long address, long length) {
    return new Variant(
        label + " " + Ranges.describe(address, length), v -> v.post(address, length, true));
  }

  private Outcome descPastMemory() {
    Guest g = config.guest();
    return guestErrors(
        g,
        List.of(
            buffer("the first byte after memory", g.sharedEnd(), 64),
            buffer("1 MiB past memory", g.sharedEnd() + (1 << 20), 4096)));
  }

  private Outcome descSpanningMemoryEnd() {
    Guest g = config.guest();
    return guestErrors(
        g,
        List.of(
            buffer("32 bytes in memory, 32 past it", g.sharedEnd() - 32, 64),
            buffer("32 bytes before memory, 32 in it", g.sharedStart() - 32, 64)));
  }

  private Outcome descWrapping() {
    Guest g = config.guest();
    return guestErrors(
        g,
        List.of(
            new Variant("address 0xffffffffffffffc0 length 0x80", v -> v.post(-0x40L, 0x80, true)),
            new Variant("address 0xffffffffffffffff length 2", v -> v.post(-1L, 2, false)),
            new Variant(
                "address 2^64 - 4 KiB + memory start, length 4 GiB - 1",
                v -> v.post(g.sharedStart() - 4096, 0xffff_ffffL, true))));
  }

  private Outcome descOutsidePool() {
    Guest g = config.guest().withPool();
    long inRam = g.poolStart() > g.ramStart() ? g.ramStart() : g.poolEnd();
    return guestErrors(
        g,
        List.of(
            buffer("guest RAM outside the pool", inRam, 4096),
            buffer("just below the pool", g.poolStart() - 64, 64),
            buffer("just past the pool", g.poolEnd(), 64),
            new Variant(
                "an indirect table in guest RAM outside the pool",
                v -> {
                  v.writeDescriptor(0, inRam, 32, Virtq.VIRTQ_DESC_F_INDIRECT, 0);
                  v.makeAvailable(0);
                  v.kick();
                })));
  }

  private Outcome descSpanningPoolEnd() {
    Guest g = config.guest().withPool();
    return guestErrors(
        g,
        List.of(
            buffer("across the pool's end", g.poolEnd() - 32, 64),
            buffer("across the pool's start", g.poolStart() - 32, 64),
            buffer("the whole pool and one byte more", g.poolStart(), g.poolSize() + 1)));
  }

  private Outcome chainLoop() {
    // Every descriptor of each loop is device-readable, so that any device walks into the loop
    // (the echo device reads all readable ones before writing): a loop past the point where a
    // device stops walking a chain goes unseen by a backend that validates as it walks.
    int next = Virtq.VIRTQ_DESC_F_NEXT;
    return guestErrors(
        config.guest(),
        List.of(
            new Variant(
                "descriptor 0 -> 0",
                v -> {
                  v.writeDescriptor(0, v.scratch(), 64, next, 0);
                  v.makeAvailable(0);
                  v.kick();
                }),
            new Variant(
                "descriptors 0 -> 1 -> 0",
                v -> {
                  v.writeDescriptor(0, v.scratch(), 64, next, 1);
                  v.writeDescriptor(1, v.scratch() + 64, 64, next, 0);
                  v.makeAvailable(0);
                  v.kick();
                }),
            new Variant(
                "indirect table entries 0 -> 1 -> 0",
                v -> {
                  long table = v.scratch() + 4096;
                  Victim.writeDescriptor(v.ram.at(table, 16), v.scratch(), 64, next, 1);
                  Victim.writeDescriptor(v.ram.at(table + 16, 16), v.scratch() + 64, 64, next, 0);
                  v.writeDescriptor(0, table, 32, Virtq.VIRTQ_DESC_F_INDIRECT, 0);
                  v.makeAvailable(0);
                  v.kick();
                })));
  }

  private Outcome indirectBad() {
    Guest g = config.guest();
    int indirect = Virtq.VIRTQ_DESC_F_INDIRECT;
    return guestErrors(
        g,
        List.of(
            new Variant(
                "a table past memory",
                v -> {
                  v.writeDescriptor(0, g.sharedEnd(), 64, indirect, 0);
                  v.makeAvailable(0);
                  v.kick();
                }),
            new Variant(
                "a table of 0 bytes",
                v -> {
                  v.writeDescriptor(0, v.scratch(), 0, indirect, 0);
                  v.makeAvailable(0);
                  v.kick();
                }),
            new Variant(
                "a table of 17 bytes",
                v -> {
                  v.writeDescriptor(0, v.scratch(), 17, indirect, 0);
                  v.makeAvailable(0);
                  v.kick();
                }),
            new Variant(
                "an indirect table inside an indirect table",
                v -> {
                  long table = v.scratch() + 4096;
                  Victim.writeDescriptor(v.ram.at(table, 16), v.scratch(), 16, indirect, 0);
                  v.writeDescriptor(0, table, 16, indirect, 0);
                  v.makeAvailable(0);
                  v.kick();
                })));
  }

  private Outcome availIndexAhead() {
    return guestErrors(
        config.guest(),
        List.of(
            new Variant(
                "avail.idx queue size + 1 ahead",
                v -> {
                  v.setAvailIndex(v.availIndex() + v.ring.size() + 1);
                  v.kick();
                }),
            new Variant(
                "avail.idx 0x8000 ahead",
                v -> {
                  v.setAvailIndex(v.availIndex() + 0x8000);
                  v.kick();
                }),
            new Variant(
                "avail.idx one behind (65535 ahead)",
                v -> {
                  v.setAvailIndex(v.availIndex() - 1);
                  v.kick();
                })));
  }

  private Outcome availHeadOutOfRange() {
    return guestErrors(
        config.guest(),
        List.of(
            new Variant(
                "head = queue size",
                v -> {
                  v.makeAvailable(v.ring.size());
                  v.kick();
                }),
            new Variant(
                "head = 0xffff",
                v -> {
                  v.makeAvailable(0xffff);
                  v.kick();
                })));
  }

  private Outcome ringOutsideMemory() {
    return guestErrors(
        config.guest(),
        List.of(
            new Variant(
                "SET_VRING_ADDR at frontend address 0x1000",
                v -> restart(v, new VringAddress(0, 0, 0x1000, 0x3000, 0x2000, 0))),
            new Variant(
                "SET_VRING_ADDR with the descriptor table 8 bytes off its alignment",
                v -> {
                  VringAddress a = v.ring.vringAddress();
                  restart(
                      v, new VringAddress(0, 0, a.descriptor() + 8, a.used(), a.available(), 0));
                })));
  }

  /** Stops ring 0 and starts it again at {@code address}. */
  private static void restart(Victim v, VringAddress address) throws IOException {
    FrontendChannel channel = v.channel();
    channel.call(FrontendRequest.GET_VRING_BASE, new VringState(0, 0)).close();
    channel.send(FrontendRequest.SET_VRING_ADDR, address, false);
    channel.send(
        FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), false, v.queue.kick().fd());
  }

  private Outcome memfdShrunk() throws Exception {
    try (Victim victim = Victim.open(config, config.guest()).prime()) {
      List<GuestRam.SharedRegion> shared = victim.ram.sharedRegions();
      try {
        for (GuestRam.SharedRegion r : shared) Libc.ftruncate(r.fd().value(), 0);
      } finally {
        shared.forEach(r -> r.fd().close());
      }
      // From here on nothing of guest memory may be touched, here either: it is gone.
      victim.kick();
      if (victim.awaitError()) {
        Victim.Check after = victim.afterError(false);
        return new Outcome(
            after.ok(), "treated as a guest error: err eventfd signalled" + after.text());
      }
      if (victim.channel().isClosedByPeer(config.timeout())) {
        return new Outcome(true, "the backend ended the connection");
      }
      return new Outcome(
          false,
          "neither the err eventfd nor the end of the connection within "
              + 2 * config.timeout().toMillis()
              + " ms after a kick on memory that faults");
    }
  }

  private Outcome secondFrontend() throws Exception {
    try (Victim first = Victim.open(config, config.guest()).prime()) {
      String second;
      try (FrontendChannel channel = FrontendChannel.connect(config.socket())) {
        channel.setReplyTimeout(config.timeout());
        try {
          channel.getU64(FrontendRequest.GET_FEATURES);
          second = "served alongside the first";
        } catch (FrontendChannel.ClosedByPeer e) {
          second = "turned away";
        }
      }
      Stats stats = new EchoDriver(first.session).run(100, 512, Duration.ofSeconds(10));
      boolean ok = stats.operations() == 100 && stats.errors() == 0;
      return new Outcome(
          ok,
          "the second connection was "
              + second
              + "; the first "
              + (ok
                  ? "echoed 100 more chains"
                  : "failed: " + stats.operations() + " echoed, " + stats.errors() + " errors"));
    }
  }

  // ---- the peer vanishes ----

  private static final String GONE =
      "nothing to report to a frontend that is gone; the survival check shows the backend let go of it";

  /** Sends each piece on a fresh connection and closes it at once. */
  private Outcome vanish(List<Probe> probes) throws IOException {
    List<String> lines = new ArrayList<>();
    for (Probe p : probes) {
      try (FrontendChannel channel =
          RawProbe.served(config.socket(), patience(config), config.timeout())) {
        channel.sendRaw(p.bytes(), p.fds());
        lines.add(p.label());
      } finally {
        for (Fd fd : p.fds()) fd.close();
      }
    }
    return new Outcome(true, "closed after " + String.join("; ", lines) + " (" + GONE + ")");
  }

  private Outcome vanishMidHeader() throws IOException {
    byte[] header = header(code(FrontendRequest.SET_FEATURES), NEED_REPLY, 8);
    return vanish(
        List.of(
            new Probe("1 byte of a header", 0, Arrays.copyOf(header, 1)),
            new Probe("6 bytes", 0, Arrays.copyOf(header, 6)),
            new Probe("11 bytes", 0, Arrays.copyOf(header, 11))));
  }

  private Outcome vanishMidPayload() throws IOException {
    MemoryTable table =
        new MemoryTable(
            List.of(new MemoryRegionDescription(DEFAULT_RAM_START, 4096, 0x7f00_0000_0000L, 0)));
    byte[] memTable = RawProbe.request(FrontendRequest.SET_MEM_TABLE, table, true);
    byte[] addr =
        RawProbe.request(
            FrontendRequest.SET_VRING_ADDR,
            new VringAddress(0, 0, 0x1000, 0x3000, 0x2000, 0),
            false);
    return vanish(
        List.of(
            new Probe(
                "a SET_MEM_TABLE header announcing " + table.size() + " bytes",
                0,
                Arrays.copyOf(memTable, Header.SIZE)),
            new Probe(
                "half of its payload", 0, Arrays.copyOf(memTable, Header.SIZE + table.size() / 2)),
            new Probe(
                "all but 1 byte of a SET_VRING_ADDR", 0, Arrays.copyOf(addr, addr.length - 1))));
  }

  private Outcome vanishWithFds() throws IOException {
    MemoryTable table =
        new MemoryTable(
            List.of(new MemoryRegionDescription(DEFAULT_RAM_START, 1 << 20, 0x7f00_0000_0000L, 0)));
    byte[] memTable = RawProbe.request(FrontendRequest.SET_MEM_TABLE, table, true);
    byte[] call =
        RawProbe.request(FrontendRequest.SET_VRING_CALL, new VringFdIndex(0, false), false);
    byte[] kick =
        RawProbe.request(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), false);
    List<Probe> probes = new ArrayList<>();
    try {
      probes.add(
          new Probe(
              "10 payload bytes of a SET_MEM_TABLE with its memfd",
              0,
              Arrays.copyOf(memTable, Header.SIZE + 10),
              memfd(1 << 20)));
      probes.add(
          new Probe(
              "4 payload bytes of a SET_VRING_CALL with its eventfd",
              0,
              Arrays.copyOf(call, Header.SIZE + 4),
              eventFd()));
      probes.add(
          new Probe(
              "a bare header with 8 eventfds", 0, Arrays.copyOf(call, Header.SIZE), eventFds(8)));
      probes.add(new Probe("a whole SET_VRING_KICK with its eventfd", 0, kick, eventFd()));
    } catch (NativeException | RuntimeException e) {
      probes.forEach(p -> Arrays.stream(p.fds()).forEach(Fd::close));
      throw e;
    }
    return vanish(probes);
  }

  private Outcome vanishMidTraffic() throws IOException {
    List<String> lines = new ArrayList<>();
    try (Victim victim = Victim.open(config, config.guest()).prime()) {
      DriverQueue ring = victim.ring;
      long buffer = victim.scratch();
      int posted = 0;
      while (ring.add(buffer, 16 * 1024, buffer + 16 * 1024, 16 * 1024, false)
          != DriverQueue.NO_SPACE) {
        posted++;
      }
      ring.publish();
      victim.kick();
      lines.add("with " + posted + " chains of 16 KiB posted and kicked");
    }
    try (Victim victim = Victim.open(config, config.guest()).prime()) {
      lines.add("with the rings started and idle");
    }
    return new Outcome(true, "closed " + String.join("; ", lines) + " (" + GONE + ")");
  }

  // ---- helpers ----

  private static int code(FrontendRequest request) {
    return request.code();
  }

  private static Fd eventFd() throws NativeException {
    EventFd e = EventFd.create();
    return e.fd();
  }

  private static Fd[] eventFds(int count) throws NativeException {
    Fd[] fds = new Fd[count];
    try {
      for (int i = 0; i < count; i++) fds[i] = eventFd();
      return fds;
    } catch (NativeException | RuntimeException e) {
      for (Fd fd : fds) if (fd != null) fd.close();
      throw e;
    }
  }

  private static Fd memfd(long size) throws NativeException {
    return Memfd.create("bounce-hostile", size).fd();
  }

  private static String describe(Exception e) {
    String message = e.getMessage();
    return message == null ? e.toString() : message;
  }
}
