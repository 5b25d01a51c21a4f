package dev.bounce.it.realvm;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A vhost-user device a guest gets, served by the backend listening on {@code socket}, and the QEMU
 * options that give it: a PCI device on x86 q35, a virtio-mmio one on arm64 virt (whose modern
 * virtio the guest's machine options select). A guest has at most one device of each kind.
 */
record VhostUserDevice(Kind kind, Path socket) {
  /** The MAC address of the guests' net device (QEMU's default prefix 52:54:00). */
  static final String MAC = "52:54:00:12:34:56";

  enum Kind {
    VSOCK,
    NET
  }

  static VhostUserDevice vsock(Path socket) {
    return new VhostUserDevice(Kind.VSOCK, socket);
  }

  static VhostUserDevice net(Path socket) {
    return new VhostUserDevice(Kind.NET, socket);
  }

  /**
   * Its QEMU options; {@code iommuPlatform} makes the guest use the DMA API for it (what a
   * restricted DMA pool needs).
   */
  List<String> qemuOptions(Guest.Arch arch, boolean iommuPlatform) {
    // vsock's chardev keeps the id of the README's command lines.
    String chardev = kind == Kind.VSOCK ? "vu" : "vu-net";
    List<String> options =
        new ArrayList<>(List.of("-chardev", "socket,id=" + chardev + ",path=" + socket));
    String device =
        switch (kind) {
          case VSOCK ->
              (arch == Guest.Arch.X86_64 ? "vhost-user-vsock-pci" : "vhost-user-vsock-device")
                  + ",chardev="
                  + chardev;
          case NET -> {
            options.addAll(List.of("-netdev", "vhost-user,id=net0,chardev=" + chardev));
            // vectors=0: with MSI-X, QEMU 7.2 under TCG segfaults when the guest sets DRIVER_OK.
            yield arch == Guest.Arch.X86_64
                ? "virtio-net-pci,netdev=net0,mac=" + MAC + ",vectors=0"
                : "virtio-net-device,netdev=net0,mac=" + MAC;
          }
        };
    options.addAll(List.of("-device", device + (iommuPlatform ? ",iommu_platform=on" : "")));
    return options;
  }
}
