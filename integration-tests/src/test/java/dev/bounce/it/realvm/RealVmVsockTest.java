package dev.bounce.it.realvm;

import dev.bounce.pool.testing.ProcessMaps;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.io.IOException;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * bounce vsock under QEMU 7.2 with a Linux 6.1 guest driver: the guest connects to a host listener
 * and a host application connects to a guest listener, bytes checked both ways on both sides. The
 * first test of a run on a fresh machine waits for scripts/realvm/prepare (packages, the arm64
 * kernel: minutes, once); a boot under TCG then takes seconds. Opt out locally (only) with
 * -Dsurefire.excludedGroups=realvm.
 */
@Tag("realvm")
@Timeout(value = 40, unit = TimeUnit.MINUTES) // the first one pays for the images
class RealVmVsockTest {
  private static final int HOST_PORT = 1234;
  private static final int GUEST_PORT = 5000;

  /** Enough to take many rounds of vsock credit (64 KiB) and rx buffers (3776 bytes) each way. */
  private static final long BYTES = 4L << 20;

  /** Covers the boot (5-7 s under TCG on an idle machine) on a busy one. */
  private static final Duration BOOT_AND_STEP = Duration.ofSeconds(180);

  private static final Duration STEP = Duration.ofSeconds(60);

  /** The guest's device-tree pool, given to bounce. */
  private static final String POOL =
      "0x" + Long.toHexString(Guest.POOL_BASE) + ":" + (Guest.POOL_SIZE >> 20) + "M";

  /** The line bounce logs when a session with a pool ends (DmaMetrics). */
  private static final Pattern SESSION_METRICS =
      Pattern.compile(
          "session over; restricted DMA: pool (\\d+) bytes, peak (\\d+) bytes in flight, pool"
              + " violations per queue \\[([\\d, ]*)\\]");

  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"X86_Q35", "ARM64_VIRT"})
  void bytesFlowBothWaysBetweenGuestAndHost(Guest guest) throws Exception {
    try (RealVm vm = new RealVm(guest)) {
      vm.startBounce();
      exchangeBothWays(vm, running -> {});
    }
  }

  /**
   * The guest bounces every vring and buffer of the device through a restricted DMA pool at
   * 0x5c000000 (16 MiB), and bounce is given that pool. Linux 6.1 does not know
   * VIRTIO_F_RESTRICTED_DMA (bit 27), so the policy is preferred. That every address bounce saw was
   * inside the pool is shown by bounce itself: while the guest runs it has mapped only the pool's
   * 16 MiB of guest RAM, and when the guest is gone its metrics show buffers held in the pool and
   * no address outside it on any queue.
   */
  @Test
  void bytesFlowThroughARestrictedDmaPool() throws Exception {
    try (RealVm vm = new RealVm(Guest.ARM64_VIRT_RESTRICTED_POOL)) {
      vm.startBounce("--pool", POOL, "--restricted-dma", "preferred");
      exchangeBothWays(vm, RealVmVsockTest::assertOnlyThePoolIsMapped);
      assertGuestCreatedThePool(vm);
      Matcher metrics = vm.awaitBounceLog(SESSION_METRICS, "the session's pool metrics", STEP);
      if (Long.parseLong(metrics.group(1)) != Guest.POOL_SIZE
          || Long.parseLong(metrics.group(2)) == 0
          || !Arrays.stream(metrics.group(3).split(", ")).allMatch("0"::equals)) {
        throw vm.failure(
            "bounce's pool metrics should show the 16 MiB pool, buffers in flight and no pool"
                + " violation: "
                + metrics.group());
      }
    }
  }

  /**
   * The same guest with {@code --restricted-dma required}: its driver does not accept bit 27, so
   * bounce refuses it. QEMU sends SET_FEATURES without asking for the answer and starts the rings
   * anyway, so the guest sees a vsock device that never answers (its connect times out). bounce
   * says why, serves no ring, and keeps serving the socket: the next frontend is offered the pool's
   * features again.
   */
  @Test
  void aGuestThatDoesNotAcceptRestrictedDmaIsRefusedWhenItIsRequired() throws Exception {
    try (RealVm vm = new RealVm(Guest.ARM64_VIRT_RESTRICTED_POOL)) {
      vm.hostEcho(HOST_PORT);
      vm.startBounce("--pool", POOL, "--restricted-dma", "required");
      vm.boot("connect:" + HOST_PORT + ":4096");
      Map<String, String> connect = vm.awaitOutcome("connect", BOOT_AND_STEP);
      if (!connect.containsKey("error")) {
        throw vm.failure(
            "the guest's vsock connect worked, but bounce with --restricted-dma required should"
                + " have refused its driver (Linux 6.1 does not accept VIRTIO_F_RESTRICTED_DMA)");
      }
      if (!connect.get("error").contains("timed out")) {
        throw vm.failure(
            "the guest's connect should time out on a device that never answers, but failed with "
                + connect.get("error"));
      }
      vm.awaitBounceLog(
          Pattern.compile(
              "SET_FEATURES .* failed: refusing the driver: it did not accept"
                  + " VIRTIO_F_RESTRICTED_DMA \\(bit 27.* run bounce with --restricted-dma"
                  + " preferred"),
          "the refusal, why and what to do",
          STEP);
      vm.awaitBounceLog(
          Pattern.compile(
              "not serving ring \\d+ nor any other: the driver's features were refused"),
          "that no ring is served",
          STEP);
      vm.awaitPoweroff(STEP);
      assertGuestCreatedThePool(vm);
      Matcher metrics = vm.awaitBounceLog(SESSION_METRICS, "the end of the session", STEP);
      if (!metrics.group(2).equals("0")) {
        throw vm.failure("a refused driver's buffers were served: " + metrics.group());
      }
      if (!vm.bounceRuns()) throw vm.failure("bounce ended after refusing a driver");
      assertOffersWhatIommuPlatformNeeds(vm);
    }
  }

  private static void exchangeBothWays(RealVm vm, Consumer<RealVm> whileTheGuestRuns)
      throws Exception {
    Transfer pattern = Transfer.ofPattern(BYTES);
    HostEcho echo = vm.hostEcho(HOST_PORT);
    vm.boot("connect:" + HOST_PORT + ":" + BYTES + ",listen:" + GUEST_PORT + ":" + BYTES);

    Map<String, String> connect = vm.awaitResult("connect", BOOT_AND_STEP);
    vm.assertSame(pattern, Transfer.of(connect, "sent"), "guest to host: what the guest sent");
    vm.assertSame(pattern, echo.received(), "guest to host: what the host application received");
    vm.assertSame(pattern, Transfer.of(connect, "received"), "host to guest: the echo");
    if (echo.error() != null) throw vm.failure("the host application failed: " + echo.error());

    vm.awaitListening(GUEST_PORT, STEP);
    whileTheGuestRuns.accept(vm); // it waits for the host's connection
    Transfer back;
    try {
      back = HostConnection.echo(vm.udsPath(), GUEST_PORT, BYTES, STEP);
    } catch (IOException e) {
      throw vm.failure("host to guest port " + GUEST_PORT + ": " + e.getMessage());
    }
    Map<String, String> listen = vm.awaitResult("listen", STEP);
    vm.assertSame(pattern, Transfer.of(listen, "received"), "host to guest: what the guest got");
    vm.assertSame(pattern, back, "guest to host: the echo the host application got");
    vm.awaitPoweroff(STEP);
  }

  /** All of guest RAM bounce has mapped is the pool: its 16 MiB at its offset in QEMU's memfd. */
  private static void assertOnlyThePoolIsMapped(RealVm vm) {
    List<ProcessMaps.Entry> mapped = vm.bounceMappingsOfGuestRam();
    long poolOffset = Guest.POOL_BASE - Guest.ARM64_RAM_BASE;
    boolean onlyPool =
        !mapped.isEmpty()
            && mapped.stream().mapToLong(ProcessMaps.Entry::size).sum() == Guest.POOL_SIZE
            && mapped.stream()
                .allMatch(
                    e ->
                        e.offset() >= poolOffset
                            && e.offset() + e.size() <= poolOffset + Guest.POOL_SIZE);
    if (!onlyPool) {
      throw vm.failure(
          "while the guest runs, bounce should have mapped only the pool of QEMU's guest RAM (16"
              + " MiB at memfd offset 0x"
              + Long.toHexString(poolOffset)
              + "); its /proc/PID/maps shows "
              + mapped.stream()
                  .map(e -> e.size() / 1024 + " KiB at offset 0x" + Long.toHexString(e.offset()))
                  .toList());
    }
  }

  private static void assertGuestCreatedThePool(RealVm vm) throws InterruptedException {
    String pool = "created restricted DMA pool at 0x000000005c000000, size 16 MiB";
    if (!vm.consoleHas(pool)) throw vm.failure("the guest did not log '" + pool + "'");
  }

  /**
   * What QEMU's iommu_platform=on needs from a backend (REAL-PEERS.md), asked as a new frontend: so
   * bounce also still serves its socket.
   */
  private static void assertOffersWhatIommuPlatformNeeds(RealVm vm) {
    try (FrontendChannel next = FrontendChannel.connect(vm.vhostUserSocket())) {
      long features = next.getU64(FrontendRequest.GET_FEATURES);
      long protocol = next.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
      if (!VirtioFeatures.has(features, VirtioFeatures.RESTRICTED_DMA)
          || !VirtioFeatures.has(features, VirtioFeatures.ACCESS_PLATFORM)
          || !ProtocolFeature.REPLY_ACK.in(protocol)
          || !ProtocolFeature.BACKEND_REQ.in(protocol)) {
        throw vm.failure(
            "with a pool bounce should offer bits 27 and 33 and REPLY_ACK and BACKEND_REQ; it"
                + " offers features 0x"
                + Long.toHexString(features)
                + ", protocol features "
                + ProtocolFeature.describe(protocol));
      }
    } catch (IOException e) {
      throw vm.failure("a new frontend cannot talk to bounce after the refusal: " + e);
    }
  }
}
