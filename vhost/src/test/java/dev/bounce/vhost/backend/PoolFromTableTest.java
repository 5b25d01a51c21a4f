package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * --pool-from-table takes whatever one region the frontend shares as the pool: an operator who
 * points it at a frontend that shares all of guest RAM would restrict nothing, so a region far
 * larger than restricted pools are is said in the log.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class PoolFromTableTest {
  private static final RestrictedDma POOL_FROM_TABLE =
      new RestrictedDma(RestrictedDma.Policy.PREFERRED, new RestrictedDma.SharedRegion());

  @TempDir Path dir;

  @Test
  void aRegionLargerThanAnyRestrictedPoolIsTakenWithAWarning() throws Exception {
    long size = BackendSession.LARGE_POOL_FROM_TABLE + (2 << 20);
    assertEquals(
        1,
        poolWarnings(TestMemory.single(TestFrontend.GUEST_BASE, size, TestFrontend.USER_BASE))
            .size());
  }

  @Test
  void aPoolSizedRegionIsTakenQuietly() throws Exception {
    assertEquals(List.of(), poolWarnings(TestFrontend.defaultMemory()));
  }

  /** Shares {@code memory} as the one region and echoes on it; the pool warnings logged. */
  private List<String> poolWarnings(TestMemory memory) throws Exception {
    Path socket = dir.resolve("backend.sock");
    try (BackendFixture backend =
            BackendFixture.listen(
                socket,
                new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE),
                POOL_FROM_TABLE);
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(socket), memory)) {
      frontend.negotiate(true);
      frontend.shareMemory();
      for (int i = 0; i < TestFrontend.QUEUES; i++) {
        frontend.setUpRing(i, TestFrontend.ringAddress(i));
      }
      frontend.echo(0); // the one region serves as the pool
      List<String> warnings =
          backend.warnings().stream().filter(l -> l.contains("--pool-from-table")).toList();
      assertTrue(backend.loopFailures().isEmpty(), backend.loopFailures().toString());
      return warnings;
    }
  }
}
