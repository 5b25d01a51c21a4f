package dev.bounce.it.realvm;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The harness's own check: with a backend that drops every reply (bounce behind {@link
 * DropRepliesRelay}), a real-VM test fails within its time limit, saying what did not happen and
 * showing the console, bounce's log and what the relay dropped.
 */
@Tag("realvm")
@Timeout(value = 40, unit = TimeUnit.MINUTES) // may be the first to wait for the guest images
class RealVmBrokenBackendTest {
  private static final Duration LIMIT = Duration.ofSeconds(10);

  /** How long QEMU may take to start and connect (through the relay) on a busy machine. */
  private static final Duration QEMU_CONNECTS = Duration.ofSeconds(120);

  @Test
  void aBackendThatDropsEveryReplyFailsWithAClearMessage() throws Exception {
    try (RealVm vm = new RealVm(Guest.X86_Q35)) {
      vm.hostEcho(1234);
      vm.startBounce();
      vm.dropRepliesFromBounce();
      vm.boot("connect:1234:4096");
      // QEMU connects before it starts the guest, and then waits for replies that never come: once
      // bounce has logged the connection, the guest can print no result line however long it is
      // given, and the failure must name that connection.
      vm.awaitBounceLog(
          Pattern.compile("frontend connected"),
          "QEMU's connection (through the relay)",
          QEMU_CONNECTS);
      long started = System.nanoTime();
      AssertionError failure =
          assertThrows(AssertionError.class, () -> vm.awaitResult("connect", LIMIT));
      long seconds = TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - started);
      String message = failure.getMessage();
      // The point is that it fails rather than hangs: the bound only has to tell the two apart on
      // a loaded machine that runs QEMU, so it leaves a minute beyond the limit.
      assertTrue(seconds < LIMIT.toSeconds() + 60, "took " + seconds + " s:\n" + message);
      for (String expected :
          List.of(
              "the guest printed no result line for its connect step within 10 s",
              "dropped ",
              "--- guest console (QEMU output) ---",
              "--- bounce's log ---",
              "frontend connected")) {
        assertTrue(message.contains(expected), "no '" + expected + "' in:\n" + message);
      }
    }
  }
}
