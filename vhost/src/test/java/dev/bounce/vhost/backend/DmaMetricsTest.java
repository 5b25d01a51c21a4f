package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.backend.RestrictedDma.Policy;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The pool size {@link DmaMetrics} report: a {@code --pool} window counts only once the frontend's
 * memory table shares some of it. Regions that miss the window are remembered but never mapped, so
 * a session whose table misses it has no pool at all, and reporting the window's size would claim
 * one that bounce never had.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class DmaMetricsTest {
  private static final long POOL_SIZE = 1 << 20;

  @TempDir Path dir;

  @Test
  void aWindowTheMemoryTableMissesCountsNoPool() throws Exception {
    // The shared region is TestFrontend.MEMORY_SIZE at GUEST_BASE; the window starts where it ends.
    long window = TestFrontend.GUEST_BASE + TestFrontend.MEMORY_SIZE;
    Shared shared = share(window, 0);
    assertEquals(0, shared.poolSize());
    assertTrue(
        shared.warnings().stream().anyMatch(l -> l.contains("shares none of the restricted pool")),
        "the operator is told: " + shared.warnings());
  }

  /** A frontend's reset loop spends the budget of reset lines, not that of this warning. */
  @Test
  void aWindowTheMemoryTableMissesIsToldAfterAResetLoop() throws Exception {
    Shared shared = share(TestFrontend.GUEST_BASE + TestFrontend.MEMORY_SIZE, 50);
    assertTrue(
        shared.warnings().stream().anyMatch(l -> l.contains("shares none of the restricted pool")),
        "the operator is told: " + shared.warnings());
  }

  @Test
  void aWindowInsideTheMemoryTableCountsThePool() throws Exception {
    long window = TestFrontend.GUEST_BASE + TestFrontend.MEMORY_SIZE - POOL_SIZE;
    Shared shared = share(window, 0);
    assertEquals(POOL_SIZE, shared.poolSize());
    assertTrue(
        shared.warnings().stream().noneMatch(l -> l.contains("of the restricted pool")),
        "nothing to warn of: " + shared.warnings());
  }

  /** The pool size reported once the frontend shared its memory, and the warnings logged. */
  record Shared(long poolSize, List<String> warnings) {}

  /**
   * With a {@code POOL_SIZE} window at guest address {@code window}, what is reported after the
   * frontend shares its default memory after {@code resets} RESET_OWNERs; before it shares any, no
   * pool is reported.
   */
  private Shared share(long window, int resets) throws Exception {
    Path socket = dir.resolve("backend.sock");
    RestrictedDma dma =
        new RestrictedDma(Policy.PREFERRED, new RestrictedDma.Window(window, POOL_SIZE));
    try (BackendFixture backend =
            BackendFixture.listen(
                socket, new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE), dma);
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(socket))) {
      frontend.negotiate(true);
      for (int i = 0; i < resets; i++) frontend.channel.ack(FrontendRequest.RESET_OWNER);
      DmaMetrics before = backend.server.session().dmaMetrics();
      assertEquals(0, before.poolSize(), "no memory table yet: " + before);
      frontend.shareMemory();
      DmaMetrics after = backend.server.session().dmaMetrics();
      assertEquals(List.of(), backend.loopFailures(), "nothing escaped into a loop");
      return new Shared(after.poolSize(), backend.warnings());
    }
  }
}
