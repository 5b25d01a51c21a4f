package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.spi.VirtioFeatures;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * RESTRICTED-DMA.md, "Policy", for a driver that is not the connection's first: a guest that
 * reloads its driver sends SET_FEATURES again on the same connection, with no reset.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RefusedDriverTest {
  private static final long BIT_27 = VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA);
  private static final long FEATURES_OK = 0x8;

  @TempDir Path dir;

  @Test
  void underRequiredAReloadedDriverWithoutBit27IsNotServedThoughTheFirstWas() throws Exception {
    RestrictedDma required = TestFrontend.poolOverMemory(RestrictedDma.Policy.REQUIRED);
    try (BackendFixture backend =
            BackendFixture.listen(
                dir.resolve("reload.sock"),
                new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE),
                required);
        TestFrontend frontend = new TestFrontend(FrontendChannel.connect(backend.path))) {
      frontend.negotiate(true, TestFrontend.PROTOCOL_FEATURES, TestFrontend.FEATURES | BIT_27);
      frontend.shareMemory();
      frontend.setUpRing(0, TestFrontend.ringAddress(0));
      frontend.echo(0);
      assertEquals(1, frontend.stop(0));

      // The new driver does not accept bit 27: refused, and its ring is set up but not served.
      assertThrows(
          FrontendChannel.Refused.class,
          () -> frontend.channel.ack(FrontendRequest.SET_FEATURES, new U64(TestFrontend.FEATURES)));
      frontend.channel.ack(FrontendRequest.SET_STATUS, new U64(0xb)); // ACK|DRIVER|FEATURES_OK
      assertEquals(0, frontend.channel.getU64(FrontendRequest.GET_STATUS) & FEATURES_OK);
      frontend.setUpRing(0, TestFrontend.ringAddress(0));
      DriverRing ring = frontend.rings[0];
      ring.postEcho("not served".getBytes(StandardCharsets.UTF_8), 64);
      frontend.kick[0].signal();
      Thread.sleep(500);
      assertEquals(1, ring.usedIndex(), "nothing served after the refusal");
      assertEquals(1, frontend.stop(0), "the refused driver's chain was not consumed");

      // A driver that accepts bit 27 again is served, from where the ring stands.
      frontend.channel.ack(FrontendRequest.SET_FEATURES, new U64(TestFrontend.FEATURES | BIT_27));
      frontend.setUpRing(0, TestFrontend.ringAddress(0));
      frontend.kick[0].signal();
      long deadline = System.nanoTime() + TestFrontend.TIMEOUT.toNanos();
      while (ring.usedIndex() != 2 && System.nanoTime() < deadline) Thread.sleep(1);
      assertEquals(2, frontend.rings[0].usedIndex(), "served again");
    }
  }
}
