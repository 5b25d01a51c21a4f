package dev.bounce.device.cli;

import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.backend.RestrictedDma;
import dev.bounce.vhost.backend.RingPolling;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.testdevice.EchoDevice;
import dev.bounce.vhost.virtq.Virtq;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Stream;

/**
 * {@code bounce echo-backend}: the engine's test device served on a socket, for trying the fake
 * frontend or a frontend of one's own without a VM. Runs until SIGTERM or Ctrl-C.
 */
final class EchoBackendCommand {
  private static final Flags FLAGS =
      new Flags(
          "bounce echo-backend --socket PATH [--queues N] [--queue-size N] [--client]"
              + " [--pool GPA:SIZE | --pool-from-table | --device-pool SIZE]"
              + " [--restricted-dma POLICY] [--max-guest-memory SIZE] [--ring-poll US[:MAX]]",
          Stream.concat(
                  Stream.of(
                      new Flags.Flag(
                          "socket", "PATH", "the vhost-user socket to listen on (required)"),
                      new Flags.Flag("queues", "N", "how many queues, 1 to 256 (default 1)"),
                      new Flags.Flag(
                          "queue-size",
                          "N",
                          "the largest queue size offered, a power of two up to 32768 (default"
                              + " 1024)"),
                      new Flags.Flag(
                          "client", null, "connect to a frontend listening at --socket")),
                  Stream.concat(
                      DmaFlags.FLAGS.stream(), Stream.of(GuestMemoryFlag.FLAG, RingPollFlag.FLAG)))
              .toList());

  /** vhost-user numbers a ring in 8 bits (VHOST_USER_VRING_IDX_MASK). */
  private static final int MAX_QUEUES = (int) VringFdIndex.INDEX_MASK + 1;

  private EchoBackendCommand() {}

  static int run(List<String> args) throws Exception {
    if (!FLAGS.parse(args)) return 0;
    Path socket = Path.of(FLAGS.require("socket"));
    if (!FLAGS.has("client")) Flags.directoryExists("--socket", socket);
    RestrictedDma dma = DmaFlags.restrictedDma(FLAGS);
    long maxGuestMemory = GuestMemoryFlag.maxGuestMemory(FLAGS);
    RingPolling polling = RingPollFlag.ringPolling(FLAGS);
    // Checked here: the engine would take them and fail the first frontend that connects.
    long queues = FLAGS.number("queues", 1);
    if (queues < 1 || queues > MAX_QUEUES) {
      throw new UsageException("--queues " + queues + " is not between 1 and " + MAX_QUEUES);
    }
    long queueSize = FLAGS.number("queue-size", 1024);
    if (!Virtq.isQueueSize(queueSize)) {
      throw new UsageException(
          "--queue-size " + queueSize + " is not a power of two up to " + Virtq.MAX_QUEUE_SIZE);
    }
    EchoDevice device = new EchoDevice((int) queues, (int) queueSize);
    CountDownLatch stopped = new CountDownLatch(1);
    try (EventLoops control = new EventLoops(1, "bounce-control");
        EventLoops data = new EventLoops(1, "bounce-data")) {
      BackendServer.Config config =
          new BackendServer.Config(
              "echo", device, control.next(), data.next(), dma, maxGuestMemory, polling);
      BackendServer server =
          FLAGS.has("client")
              ? BackendServer.connect(socket, config)
              : BackendServer.listen(socket, config);
      Runtime.getRuntime()
          .addShutdownHook(
              new Thread(
                  () -> {
                    server.close();
                    stopped.countDown();
                  }));
      System.err.println("bounce echo-backend: serving the test device on " + socket + ", " + dma);
      stopped.await();
    }
    return 0;
  }
}
