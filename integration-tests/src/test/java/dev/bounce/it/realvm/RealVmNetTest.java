package dev.bounce.it.realvm;

import dev.bounce.it.TestPmd;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The net guests (x86 q35 with virtio-net-pci, arm64 virt with virtio-net-device on modern
 * virtio-mmio) under QEMU 7.2 with a Linux 6.1 guest driver, against DPDK 22.11's vhost backend
 * (dpdk-testpmd's net_vhost0) until bounce has a net device: that one then only swaps the backend.
 * The guest sends frames from an AF_PACKET socket (bounce-guest net-send/net-echo), each carrying
 * the next 1 KiB of the test pattern, counted and checksummed.
 */
@Tag("realvm")
@Timeout(value = 40, unit = TimeUnit.MINUTES) // the first one pays for the images
class RealVmNetTest {
  /** Eight rounds of the guest's 256-entry rings. */
  private static final int FRAMES = 2048;

  /** The pattern bytes in each frame (NET_PAYLOAD in bounce-guest.c). */
  private static final long PAYLOAD = 1024;

  /** Covers the boot (about 10 s for x86 under TCG on an idle machine) on a busy one. */
  private static final Duration BOOT_AND_STEP = Duration.ofSeconds(180);

  private static final Duration STEP = Duration.ofSeconds(60);

  private static final Transfer PATTERN = Transfer.ofPattern(FRAMES * PAYLOAD);

  /** rxonly: testpmd receives every frame the guest sent. */
  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"X86_Q35", "ARM64_VIRT"})
  void everyFrameTheGuestSendsReachesTheBackend(Guest guest) throws Exception {
    try (RealVm vm = new RealVm(guest)) {
      vm.startTestPmd("rxonly");
      vm.boot("net-send:eth0:" + FRAMES);
      Map<String, String> sent = vm.awaitResult("net-send", BOOT_AND_STEP);
      assertTheDevicesMac(vm, sent);
      vm.assertSame(PATTERN, Transfer.of(sent, "sent"), "what the guest sent");
      vm.awaitPoweroff(STEP);
      // More than FRAMES when the guest's own stack sent something too (IPv6 on x86, say).
      TestPmd.Result stats = vm.finishTestPmd();
      if (stats.nicRxPackets() < FRAMES) {
        throw vm.failure(
            "testpmd received " + stats.nicRxPackets() + " frames, the guest sent " + FRAMES);
      }
    }
  }

  /** io: testpmd sends every frame back, and the guest gets each one back intact and in order. */
  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"X86_Q35", "ARM64_VIRT"})
  void everyFrameComesBackIntact(Guest guest) throws Exception {
    try (RealVm vm = new RealVm(guest)) {
      vm.startTestPmd("io");
      vm.boot("net-echo:eth0:" + FRAMES);
      Map<String, String> echo = vm.awaitResult("net-echo", BOOT_AND_STEP);
      assertTheDevicesMac(vm, echo);
      vm.assertSame(PATTERN, Transfer.of(echo, "sent"), "guest to testpmd: what the guest sent");
      vm.assertSame(PATTERN, Transfer.of(echo, "received"), "testpmd to guest: what came back");
      vm.awaitPoweroff(STEP);
      TestPmd.Result stats = vm.finishTestPmd();
      if (stats.nicRxPackets() < FRAMES || stats.nicTxPackets() < FRAMES) {
        throw vm.failure(
            "testpmd received "
                + stats.nicRxPackets()
                + " and sent "
                + stats.nicTxPackets()
                + " frames; the guest sent and got back "
                + FRAMES);
      }
    }
  }

  /** The guest's interface has the MAC address QEMU's command line gave the device. */
  private static void assertTheDevicesMac(RealVm vm, Map<String, String> result) {
    if (!VhostUserDevice.MAC.equals(result.get("mac"))) {
      throw vm.failure(
          "the guest's interface has MAC " + result.get("mac") + ", not " + VhostUserDevice.MAC);
    }
  }
}
