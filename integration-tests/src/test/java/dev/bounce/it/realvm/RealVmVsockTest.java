package dev.bounce.it.realvm;

import java.io.IOException;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
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

  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"X86_Q35", "ARM64_VIRT"})
  void bytesFlowBothWaysBetweenGuestAndHost(Guest guest) throws Exception {
    try (RealVm vm = new RealVm(guest)) {
      exchangeBothWays(vm);
    }
  }

  /**
   * The guest bounces every vring and buffer of the device through a restricted DMA pool at
   * 0x5c000000 (16 MiB). Today bounce maps all of guest memory; the restricted-DMA work adds {@code
   * --pool 0x5c000000:16M --restricted-dma preferred} to {@link RealVm#startBounce}'s command for
   * this guest, and then bounce maps only the pool.
   */
  @Test
  void bytesFlowThroughARestrictedDmaPool() throws Exception {
    try (RealVm vm = new RealVm(Guest.ARM64_VIRT_RESTRICTED_POOL)) {
      exchangeBothWays(vm);
      String pool = "created restricted DMA pool at 0x000000005c000000, size 16 MiB";
      if (!vm.consoleHas(pool)) throw vm.failure("the guest did not log '" + pool + "'");
    }
  }

  private static void exchangeBothWays(RealVm vm) throws Exception {
    Transfer pattern = Transfer.ofPattern(BYTES);
    HostEcho echo = vm.hostEcho(HOST_PORT);
    vm.startBounce();
    vm.boot("connect:" + HOST_PORT + ":" + BYTES + ",listen:" + GUEST_PORT + ":" + BYTES);

    Map<String, String> connect = vm.awaitResult("connect", BOOT_AND_STEP);
    vm.assertSame(pattern, Transfer.of(connect, "sent"), "guest to host: what the guest sent");
    vm.assertSame(pattern, echo.received(), "guest to host: what the host application received");
    vm.assertSame(pattern, Transfer.of(connect, "received"), "host to guest: the echo");
    if (echo.error() != null) throw vm.failure("the host application failed: " + echo.error());

    vm.awaitListening(GUEST_PORT, STEP);
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
}
