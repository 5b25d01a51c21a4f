package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.fail;

import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.spi.VirtioDevice;
import io.netty.channel.IoEventLoop;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;

/**
 * A {@link BackendServer} on its own two loops (control and data on different threads, as in the
 * daemon), with the engine's log lines captured so that tests can require that nothing went wrong
 * quietly (a request without NEED_REPLY fails only in the log).
 */
final class BackendFixture implements AutoCloseable {
  final EventLoops loops;

  /** The loop the server's sessions handle messages on. */
  final IoEventLoop controlLoop;

  final BackendServer server;
  final Path path;
  private final Logger logger = Logger.getLogger("dev.bounce.vhost");

  /** Netty's loops log what escapes a task or an fd callback: an exception nobody handled. */
  private final Logger loopLogger = Logger.getLogger("io.netty");

  private final Capture capture = new Capture();

  private BackendFixture(
      EventLoops loops, IoEventLoop controlLoop, BackendServer server, Path path) {
    this.loops = loops;
    this.controlLoop = controlLoop;
    this.server = server;
    this.path = path;
    logger.addHandler(capture);
    loopLogger.addHandler(capture);
  }

  private static BackendServer.Config config(EventLoops loops, String name, VirtioDevice device) {
    return new BackendServer.Config(name, device, loops.next(), loops.next());
  }

  /** The backend listens at {@code path} (the frontend connects, as QEMU does). */
  static BackendFixture listen(Path path, VirtioDevice device) throws IOException {
    return listen(path, device, RestrictedDma.OFF);
  }

  /** {@link #listen(Path, VirtioDevice)} with a restricted-DMA configuration. */
  static BackendFixture listen(Path path, VirtioDevice device, RestrictedDma dma)
      throws IOException {
    return listen(path, device, dma, BackendServer.Config.DEFAULT_MAX_GUEST_MEMORY);
  }

  /** {@link #listen(Path, VirtioDevice, RestrictedDma)}, each session mapping at most that much. */
  static BackendFixture listen(
      Path path, VirtioDevice device, RestrictedDma dma, long maxGuestMemory) throws IOException {
    EventLoops loops = new EventLoops(2, "test-backend");
    try {
      BackendServer.Config config = config(loops, "test", device);
      return new BackendFixture(
          loops,
          config.controlLoop(),
          BackendServer.listen(
              path,
              new BackendServer.Config(
                  config.name(),
                  device,
                  config.controlLoop(),
                  config.dataLoop(),
                  dma,
                  maxGuestMemory)),
          path);
    } catch (IOException | RuntimeException e) {
      loops.close();
      throw e;
    }
  }

  /** The backend connects to a frontend listening at {@code path} (DPDK's server=1). */
  static BackendFixture connect(Path path, VirtioDevice device) {
    EventLoops loops = new EventLoops(2, "test-backend");
    BackendServer.Config config = config(loops, "test", device);
    return new BackendFixture(
        loops, config.controlLoop(), BackendServer.connect(path, config), path);
  }

  /** Waits until no frontend is being served (the last one's session has ended). */
  void awaitNoSession(Duration timeout) throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (server.session() != null) {
      if (System.nanoTime() - deadline > 0) {
        fail("the backend still serves " + server.session() + " after " + timeout);
      }
      Thread.sleep(1);
    }
  }

  /** Waits until a frontend is being served. */
  void awaitSession(Duration timeout) throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (server.session() == null) {
      if (System.nanoTime() - deadline > 0) fail("no session started within " + timeout);
      Thread.sleep(1);
    }
  }

  /** The loop that reads every session's messages. */
  IoEventLoop controlLoop() {
    return controlLoop;
  }

  /** Log lines at WARNING or above since the last {@link #clearLog()}. */
  List<String> warnings() {
    return capture.lines(Level.WARNING);
  }

  /**
   * Netty's warnings since the last {@link #clearLog()}: exceptions that escaped the engine into an
   * event loop.
   */
  List<String> loopFailures() {
    return warnings().stream()
        .filter(l -> l.contains(" io.netty") || l.contains(" dev.bounce.vhost.loop.FdWatch"))
        .toList();
  }

  /** Log lines at INFO or above since the last {@link #clearLog()}. */
  List<String> infos() {
    return capture.lines(Level.INFO);
  }

  void clearLog() {
    capture.clear();
  }

  @Override
  public void close() {
    try {
      server.close();
    } finally {
      loops.close();
      logger.removeHandler(capture);
      loopLogger.removeHandler(capture);
    }
  }

  private static final class Capture extends Handler {
    private final List<LogRecord> records = new ArrayList<>();
    private final SimpleFormatter formatter = new SimpleFormatter();

    @Override
    public synchronized void publish(LogRecord record) {
      records.add(record);
    }

    synchronized List<String> lines(Level atLeast) {
      return records.stream()
          .filter(r -> r.getLevel().intValue() >= atLeast.intValue())
          .map(r -> r.getLevel() + " " + r.getLoggerName() + ": " + formatter.formatMessage(r))
          .toList();
    }

    synchronized void clear() {
      records.clear();
    }

    @Override
    public void flush() {}

    @Override
    public void close() {}
  }
}
