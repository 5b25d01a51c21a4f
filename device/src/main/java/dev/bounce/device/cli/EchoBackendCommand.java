package dev.bounce.device.cli;

import dev.bounce.vhost.backend.BackendServer;
import dev.bounce.vhost.loop.EventLoops;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;

/**
 * {@code bounce echo-backend}: the engine's test device served on a socket, for trying the fake
 * frontend or a frontend of one's own without a VM. Runs until SIGTERM or Ctrl-C.
 */
final class EchoBackendCommand {
  private static final Flags FLAGS =
      new Flags(
          "bounce echo-backend --socket PATH [--queues N] [--queue-size N] [--client]",
          List.of(
              new Flags.Flag("socket", "PATH", "the vhost-user socket to listen on (required)"),
              new Flags.Flag("queues", "N", "how many queues (default 1)"),
              new Flags.Flag("queue-size", "N", "the largest queue size offered (default 1024)"),
              new Flags.Flag("client", null, "connect to a frontend listening at --socket")));

  private EchoBackendCommand() {}

  static int run(List<String> args) throws Exception {
    if (!FLAGS.parse(args)) return 0;
    Path socket = Path.of(FLAGS.require("socket"));
    EchoDevice device =
        new EchoDevice((int) FLAGS.size("queues", 1), (int) FLAGS.size("queue-size", 1024));
    CountDownLatch stopped = new CountDownLatch(1);
    try (EventLoops control = new EventLoops(1, "bounce-control");
        EventLoops data = new EventLoops(1, "bounce-data")) {
      BackendServer.Config config =
          new BackendServer.Config("echo", device, control.next(), data.next());
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
      System.err.println("bounce echo-backend: serving the test device on " + socket);
      stopped.await();
    }
    return 0;
  }
}
