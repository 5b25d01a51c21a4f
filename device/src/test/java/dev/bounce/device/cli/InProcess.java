package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** {@code bounce args} run in this process ({@link Main#run}), its output captured. */
record InProcess(int status, String out, String err) {
  static InProcess run(String... args) {
    PrintStream out = System.out;
    PrintStream err = System.err;
    ByteArrayOutputStream outBytes = new ByteArrayOutputStream();
    ByteArrayOutputStream errBytes = new ByteArrayOutputStream();
    int status;
    try {
      System.setOut(new PrintStream(outBytes, true, StandardCharsets.UTF_8));
      System.setErr(new PrintStream(errBytes, true, StandardCharsets.UTF_8));
      status = Main.run(List.of(args));
    } finally {
      System.setOut(out);
      System.setErr(err);
    }
    return new InProcess(
        status,
        outBytes.toString(StandardCharsets.UTF_8),
        errBytes.toString(StandardCharsets.UTF_8));
  }

  /**
   * A flag for every guest: both device commands (and vsock's --vm form) list {@code usage} in
   * their help, and refuse {@code flag value} with status 2 and a line naming both, before they
   * serve anything (sockets would go in {@code dir}).
   */
  static void takenByBothDeviceCommands(Path dir, String usage, String flag, String value) {
    String socket = dir.resolve("vhost.sock").toString();
    List<List<String>> commands =
        List.of(
            List.of("echo-backend", "--socket", socket),
            List.of("vsock", "--socket", socket, "--uds-path", dir.resolve("vm.vsock").toString()),
            List.of("vsock", "--vm", "socket=" + socket + ",uds-path=" + dir.resolve("vm.vsock")));
    for (List<String> command : commands) {
      InProcess help = run("help", command.getFirst());
      assertEquals(0, help.status(), help.err());
      assertTrue(help.out().contains(usage), help.out());
      List<String> args = new ArrayList<>(command);
      args.addAll(List.of(flag, value));
      InProcess refused = run(args.toArray(String[]::new));
      assertEquals(2, refused.status(), refused.out() + refused.err());
      String line = "bounce " + command.getFirst() + ": " + flag + " " + value + ": ";
      assertTrue(refused.err().startsWith(line), refused.err());
      for (String path : List.of("vhost.sock", "vm.vsock")) {
        assertFalse(Files.exists(dir.resolve(path)), path + " was created before the refusal");
      }
    }
  }
}
