package dev.bounce.pool.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.testing.BlockedThreads.Syscall;
import java.lang.foreign.Arena;
import java.time.Duration;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** The helpers other modules rely on do what they say. */
class TestHelpersTest {
  @Test
  @DisplayName("ChildJvm: exit code, stdout and stderr of the child are captured")
  void capturesExitCodeAndOutput() throws Exception {
    try (ChildJvm child = ChildJvm.start(ChildJvmTestMain.class, "exit", "3", "to-out", "to-err")) {
      assertEquals(3, child.waitFor(Duration.ofSeconds(30)), child::describe);
      assertEquals("to-out", child.stdout().strip());
      assertTrue(child.stderr().contains("to-err"), child::describe);
      assertTrue(child.describe().contains("exit code 3"), child::describe);
    }
  }

  @Test
  @DisplayName("ChildJvm: waitFor times out on a child that does not exit; close destroys it")
  void timeoutAndClose() throws Exception {
    ProcessHandle handle;
    try (ChildJvm child = ChildJvm.start(ChildJvmTestMain.class, "sleep")) {
      handle = child.process().toHandle();
      long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
      while (!child.stdout().contains("sleeping") && System.nanoTime() < deadline) {
        Thread.sleep(10);
      }
      assertTrue(child.stdout().contains("sleeping"), child::describe);
      TimeoutException e =
          assertThrows(TimeoutException.class, () -> child.waitFor(Duration.ofMillis(100)));
      assertTrue(e.getMessage().contains("still running"), e.getMessage());
      assertTrue(child.isAlive());
    }
    assertFalse(handle.isAlive(), "close() left the child running");
  }

  @Test
  @DisplayName("OpenFds: counts one more per open fd and fails, listing it, until it is closed")
  void openFdsCountsExactly() throws Exception {
    int before = OpenFds.count();
    TestSyscalls.Pipe pipe = TestSyscalls.pipe();
    try {
      assertEquals(before + 2, OpenFds.count());
      AssertionError leak =
          assertThrows(
              AssertionError.class, () -> OpenFds.assertBackTo(before, Duration.ofMillis(50)));
      assertTrue(leak.getMessage().contains("leaked 2"), leak.getMessage());
      assertTrue(leak.getMessage().contains("pipe:"), leak.getMessage());
      assertTrue(OpenFds.target(pipe.readEnd().value()).startsWith("pipe:"));
    } finally {
      pipe.close();
    }
    OpenFds.assertBackTo(before);
    // Closed on another thread a little later: the assertion waits for it.
    TestSyscalls.Pipe late = TestSyscalls.pipe();
    Thread closer =
        Thread.ofPlatform()
            .start(
                () -> {
                  try {
                    Thread.sleep(100);
                  } catch (InterruptedException ignored) {
                    Thread.currentThread().interrupt();
                  }
                  late.close();
                });
    OpenFds.assertBackTo(before);
    closer.join();
  }

  @Test
  @DisplayName("BlockedThreads: sees a thread sleep in read(2) on its fd, and no other call")
  void blockedThreadsSeesTheCallAndTheFd() throws Exception {
    try (TestSyscalls.Pipe pipe = TestSyscalls.pipe();
        Arena arena = Arena.ofConfined()) {
      int fd = pipe.readEnd().value();
      Thread reader =
          BlockedThreads.start(
              () -> {
                try (Arena local = Arena.ofConfined()) {
                  Libc.read(fd, local.allocate(1), 1);
                } catch (NativeException e) {
                  throw new RuntimeException(e);
                }
              });
      BlockedThreads.awaitBlocked(reader, Syscall.READ, fd, Duration.ofSeconds(10));
      AssertionError other =
          assertThrows(
              AssertionError.class,
              () ->
                  BlockedThreads.awaitBlocked(reader, Syscall.RECVMSG, fd, Duration.ofMillis(50)));
      assertTrue(other.getMessage().contains("not blocked in RECVMSG"), other.getMessage());
      assertThrows(
          AssertionError.class,
          () ->
              BlockedThreads.awaitBlocked(
                  reader, Syscall.READ, pipe.writeEnd().value(), Duration.ofMillis(50)));
      assertEquals(1, Libc.write(pipe.writeEnd().value(), arena.allocate(1), 1));
      assertTrue(reader.join(Duration.ofSeconds(10)));
    }
  }
}
