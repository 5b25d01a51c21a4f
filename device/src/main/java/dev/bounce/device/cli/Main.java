package dev.bounce.device.cli;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.List;

/** {@code bounce <command> [flags]}: the one entry point of the jar that scripts/bounce runs. */
public final class Main {
  /** A command of the launcher; {@code hidden} ones are internal (a second process of the demo). */
  record Command(String name, String summary, boolean hidden, Action action) {}

  @FunctionalInterface
  interface Action {
    int run(List<String> args) throws Exception;
  }

  static final List<Command> COMMANDS =
      List.of(
          new Command(
              "demo",
              "runs bounce vsock as a second process and the fake frontend against it: checksummed"
                  + " streams both ways between guest sockets and host applications, through a"
                  + " DMA pool",
              false,
              VsockDemo::run),
          new Command(
              "frontend",
              "the built-in fake frontend (a VMM and a guest driver in one): drives any vhost-user"
                  + " backend over its socket and reports operations, throughput and latency",
              false,
              FrontendCommand::run),
          new Command(
              "vsock",
              "the virtio-vsock device for QEMU's vhost-user-vsock, a drop-in for"
                  + " vhost-device-vsock (its flags, --vm, --config and Unix-socket protocol)",
              false,
              VsockCommand::run),
          new Command(
              "echo-backend",
              "serves the engine's test device (echo) on a socket, for trying a frontend",
              false,
              EchoBackendCommand::run),
          new Command(
              "help", "prints this help; help <command> prints that command's", false, Main::help));

  private Main() {}

  public static void main(String[] args) {
    Logging.configure();
    System.exit(run(Arrays.asList(args)));
  }

  static int run(List<String> args) {
    if (args.isEmpty()) {
      help(System.err);
      return 2;
    }
    if (List.of("-h", "--help").contains(args.getFirst())) return help(System.out);
    String name = args.getFirst();
    Command command = find(name);
    if (command == null) {
      System.err.println("bounce: unknown command '" + name + "'");
      help(System.err);
      return 2;
    }
    try {
      return command.action().run(args.subList(1, args.size()));
    } catch (UsageException e) {
      System.err.println("bounce " + name + ": " + e.getMessage());
      return 2;
    } catch (Exception e) {
      // An exception without a message is a bug: its type says more than "null".
      System.err.println("bounce " + name + ": " + (e.getMessage() == null ? e : e.getMessage()));
      return 1;
    }
  }

  /** {@code bounce help [command]}: this help, or the command's own (its --help). */
  private static int help(List<String> args) throws Exception {
    if (args.isEmpty()) return help(System.out);
    if (args.size() > 1) throw new UsageException("give one command to print the help of");
    Command command = find(args.getFirst());
    if (command == null || command.hidden()) {
      throw new UsageException(
          "unknown command '" + args.getFirst() + "' (bounce help lists them)");
    }
    return command.action().run(List.of("--help"));
  }

  private static Command find(String name) {
    return COMMANDS.stream().filter(c -> c.name().equals(name)).findFirst().orElse(null);
  }

  static int help(PrintStream out) {
    out.println("usage: bounce <command> [flags]   (bounce <command> --help for its flags)");
    out.println();
    out.println("commands:");
    for (Command command : COMMANDS) {
      if (!command.hidden()) out.printf("  %-13s %s%n", command.name(), command.summary());
    }
    return 0;
  }
}
