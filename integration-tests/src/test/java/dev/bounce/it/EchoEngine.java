package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.fail;

import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;

/**
 * The engine serving its test device in this process, as {@code bounce echo-backend} does: control
 * and data on loops of their own (two threads), listening at a path or, in client mode, connecting
 * to a frontend that listens. Optionally with a restricted pool, so that the engine maps only the
 * pool's window of whatever memory the frontend shares.
 */
final class EchoEngine implements AutoCloseable {
  static final int QUEUES = 1;
  static final int MAX_QUEUE_SIZE = 1024;

  final EchoDevice device;
  final BackendServer server;
  private final EventLoops loops;
  private final boolean ownLoops;

  private EchoEngine(EventLoops loops, boolean ownLoops, EchoDevice device, BackendServer server) {
    this.device = device;
    this.loops = loops;
    this.ownLoops = ownLoops;
    this.server = server;
  }

  /** No pool: the engine maps whatever the frontend shares. */
  static RestrictedDma anyMemory() {
    return RestrictedDma.OFF;
  }

  /**
   * A restricted pool at guest {@code [start, start + size)} (policy preferred): only its window is
   * ever mapped.
   */
  static RestrictedDma pool(long start, long size) {
    return new RestrictedDma(RestrictedDma.Policy.PREFERRED, new RestrictedDma.Window(start, size));
  }

  static EchoEngine listen(Path socket, RestrictedDma memory) throws IOException {
    EventLoops loops = new EventLoops(2, "it-engine");
    try {
      return listen(loops, true, socket, memory);
    } catch (IOException | RuntimeException e) {
      loops.close();
      throw e;
    }
  }

  /** On loops the caller owns (and closes after this). */
  static EchoEngine listen(EventLoops loops, Path socket, RestrictedDma memory) throws IOException {
    return listen(loops, false, socket, memory);
  }

  /** Listening with {@code queues} echo queues, on loops of its own. */
  static EchoEngine listen(Path socket, RestrictedDma dma, int queues) throws IOException {
    EventLoops loops = new EventLoops(2, "it-engine");
    try {
      EchoDevice device = new EchoDevice(queues, MAX_QUEUE_SIZE);
      return new EchoEngine(
          loops, true, device, BackendServer.listen(socket, config(loops, device, dma)));
    } catch (IOException | RuntimeException e) {
      loops.close();
      throw e;
    }
  }

  private static EchoEngine listen(EventLoops loops, boolean own, Path socket, RestrictedDma memory)
      throws IOException {
    EchoDevice device = new EchoDevice(QUEUES, MAX_QUEUE_SIZE);
    BackendServer server = BackendServer.listen(socket, config(loops, device, memory));
    return new EchoEngine(loops, own, device, server);
  }

  /**
   * Client mode: connects to a frontend listening at {@code socket}, retrying until it is there.
   */
  static EchoEngine connect(Path socket) {
    EventLoops loops = new EventLoops(2, "it-engine");
    EchoDevice device = new EchoDevice(QUEUES, MAX_QUEUE_SIZE);
    return new EchoEngine(
        loops, true, device, BackendServer.connect(socket, config(loops, device, anyMemory())));
  }

  private static BackendServer.Config config(
      EventLoops loops, EchoDevice device, RestrictedDma memory) {
    return new BackendServer.Config("it-echo", device, loops.next(), loops.next(), memory);
  }

  /** Waits until no frontend is served: the last session has released all it held. */
  void awaitNoSession(Duration timeout) throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (server.session() != null) {
      if (System.nanoTime() - deadline > 0) {
        fail("the engine still serves " + server.session() + " after " + timeout);
      }
      Thread.sleep(2);
    }
  }

  @Override
  public void close() {
    try {
      server.close();
    } finally {
      if (ownLoops) loops.close();
    }
  }
}
