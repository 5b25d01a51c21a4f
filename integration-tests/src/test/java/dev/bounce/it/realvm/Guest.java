package dev.bounce.it.realvm;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The guests the harness boots under QEMU 7.2 (TCG: KVM cannot run guests on these machines), each
 * with the vhost-user devices it is given ({@link VhostUserDevice}).
 * ../shared/reference/REAL-PEERS.md (not in the repo) records why each option is there.
 */
enum Guest {
  /** q35 (PCI devices) with Debian's amd64 kernel. */
  X86_Q35(Arch.X86_64, false),
  /** virt with devices on virtio-mmio (modern: force-legacy=false) and our arm64 kernel. */
  ARM64_VIRT(Arch.ARM64, false),
  /**
   * virt whose device tree puts a restricted-dma-pool on the device's transport, and the device
   * with iommu_platform=on: the guest bounces every vring and buffer through the pool.
   */
  ARM64_VIRT_RESTRICTED_POOL(Arch.ARM64, true);

  /** Where the restricted pool lies in guest memory (inside RAM, see {@link #ARM64_RAM_BASE}). */
  static final long POOL_BASE = 0x5c00_0000L;

  static final long POOL_SIZE = 16L << 20;

  /** Guest RAM; QEMU shares it with the backend as one memfd. */
  private static final String RAM = "512M";

  /** The name QEMU gives that memfd (its memory backend's type), as /proc/PID/maps shows it. */
  static final String RAM_MEMFD = "memory-backend-memfd";

  /** Where guest RAM starts in guest-physical space on arm64 virt. */
  static final long ARM64_RAM_BASE = 0x4000_0000L;

  enum Arch {
    X86_64("x86_64", "qemu-system-x86_64", "ttyS0", List.of("-machine", "q35,memory-backend=mem")),
    ARM64(
        "arm64",
        "qemu-system-aarch64",
        "ttyAMA0",
        List.of("-machine", "virt,memory-backend=mem", "-cpu", "cortex-a57"));

    final String dir;
    final String qemu;
    final String console;
    final List<String> machine;

    Arch(String dir, String qemu, String console, List<String> machine) {
      this.dir = dir;
      this.qemu = qemu;
      this.console = console;
      this.machine = machine;
    }
  }

  final Arch arch;
  private final boolean restrictedPool;

  Guest(Arch arch, boolean restrictedPool) {
    this.arch = arch;
    this.restrictedPool = restrictedPool;
  }

  /**
   * The QEMU command that boots this guest with {@code devices} (in that order) and makes it run
   * {@code steps} (the bounce.run= list scripts/realvm/init reads). Files it needs go to {@code
   * dir}. On the restricted-pool guest the pool is on the first device's transport, and that device
   * uses it (iommu_platform=on); any further device is outside the pool.
   */
  List<String> command(GuestImages images, List<VhostUserDevice> devices, String steps, Path dir)
      throws IOException, InterruptedException {
    List<String> command = machine();
    command.addAll(
        List.of(
            "-kernel",
            images.kernel(arch).toString(),
            "-initrd",
            images.initramfs(arch).toString(),
            "-append",
            "console=" + arch.console + " panic=-1 bounce.run=" + steps));
    if (arch == Arch.ARM64) command.addAll(List.of("-global", "virtio-mmio.force-legacy=false"));
    if (restrictedPool) command.addAll(List.of("-dtb", restrictedPoolDtb(dir).toString()));
    for (int i = 0; i < devices.size(); i++) {
      command.addAll(devices.get(i).qemuOptions(arch, restrictedPool && i == 0));
    }
    return command;
  }

  private List<String> machine() {
    List<String> command = new ArrayList<>(List.of(arch.qemu, "-accel", "tcg"));
    command.addAll(arch.machine);
    command.addAll(
        List.of(
            "-m",
            RAM,
            "-object",
            "memory-backend-memfd,id=mem,size=" + RAM + ",share=on",
            "-nographic",
            "-no-reboot"));
    return command;
  }

  /** QEMU's own device tree for exactly this machine, with the pool added to it. */
  private Path restrictedPoolDtb(Path dir) throws IOException, InterruptedException {
    Path virt = dir.resolve("virt.dtb");
    Path pool = dir.resolve("virt-restricted-pool.dtb");
    List<String> dump = machine();
    dump.addAll(List.of("-machine", "dumpdtb=" + virt));
    run(dump);
    run(
        List.of(
            GuestImages.ROOT.resolve("scripts/realvm/restricted-pool-dtb").toString(),
            virt.toString(),
            pool.toString(),
            Long.toString(POOL_BASE),
            Long.toString(POOL_SIZE)));
    return pool;
  }

  private static void run(List<String> command) throws IOException, InterruptedException {
    Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
    String output = new String(process.getInputStream().readAllBytes());
    if (!process.waitFor(30, TimeUnit.SECONDS) || process.exitValue() != 0) {
      process.destroyForcibly();
      throw new IOException(String.join(" ", command) + " failed:\n" + output);
    }
  }
}
