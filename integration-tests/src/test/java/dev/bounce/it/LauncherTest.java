package dev.bounce.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** scripts/bounce as a user runs it: the README's main command and the launcher's help. */
class LauncherTest {
  private static final Path ROOT = Path.of("..").toAbsolutePath().normalize();

  record Run(int status, String out, String err) {}

  static Run launch(String... args) throws IOException, InterruptedException {
    List<String> command =
        new java.util.ArrayList<>(List.of(ROOT.resolve("scripts/bounce").toString()));
    command.addAll(List.of(args));
    Path out = Files.createTempFile("bounce-out", ".txt");
    Path err = Files.createTempFile("bounce-err", ".txt");
    try {
      Process process =
          new ProcessBuilder(command)
              .directory(ROOT.toFile())
              .redirectOutput(out.toFile())
              .redirectError(err.toFile())
              .start();
      if (!process.waitFor(120, TimeUnit.SECONDS)) {
        process.destroyForcibly();
        throw new AssertionError("scripts/bounce " + String.join(" ", args) + " did not finish");
      }
      return new Run(
          process.exitValue(),
          Files.readString(out, StandardCharsets.UTF_8),
          Files.readString(err, StandardCharsets.UTF_8));
    } finally {
      Files.deleteIfExists(out);
      Files.deleteIfExists(err);
    }
  }

  @Test
  void helpListsTheCommands() throws Exception {
    Run run = launch("--help");
    assertEquals(0, run.status(), run.err());
    assertTrue(run.out().contains("demo "), run.out());
    assertTrue(run.out().startsWith("usage: bounce <command>"), run.out());
  }

  @Test
  void unknownCommandIsAUsageError() throws Exception {
    Run run = launch("no-such-command");
    assertEquals(2, run.status());
    assertTrue(run.err().contains("unknown command 'no-such-command'"), run.err());
  }

  @Test
  void unknownFlagIsAUsageError() throws Exception {
    Run run = launch("demo", "--frobnicate");
    assertEquals(2, run.status());
    assertTrue(run.err().contains("unknown flag --frobnicate"), run.err());
  }

  @Test
  void demoSharesTheMemfdAndTheBackendMapsOnlyThePool() throws Exception {
    Run run = launch("demo");
    assertEquals(0, run.status(), run.out() + run.err());
    String out = run.out();
    assertTrue(out.contains("[backend] read \"hello from the VMM\" at guest 0x43000000"), out);
    assertTrue(out.contains("[vmm    ] read \"hello from the backend\" at guest 0x43001000"), out);
    assertTrue(out.contains("mapped by the backend: 4 MiB (the pool only"), out);
    assertTrue(
        out.contains(
            "refused: guest address 0x40000000 length 64 is outside the restricted pool"
                + " [0x43000000, 0x43400000)"),
        out);
    assertTrue(out.contains("result: OK"), out);
  }
}
