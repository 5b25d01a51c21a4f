package dev.bounce.vhost.backend;

import dev.bounce.pool.Fd;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.RestrictedPool;
import dev.bounce.vhost.protocol.ShmemConfig;
import dev.bounce.vhost.protocol.ShmemMapping;
import java.util.List;

/**
 * A bounce pool the backend owns (RESTRICTED-DMA.md, "Device-owned"; virtio-spec #248
 * VIRTIO_F_DMB): a memfd created per session and handed to the frontend as VIRTIO Shared Memory
 * Region {@link #SHMID} (vhost-user.rst: GET_SHMEM_CONFIG reports its size, BACKEND_SHMEM_MAP hands
 * over the fd, all of it read-write at offset 0).
 *
 * <p>The address convention: every address the device sees, descriptor buffers, indirect tables and
 * the three ring addresses of SET_VRING_ADDR alike, is an offset into the pool. The engine maps it
 * as a {@link RestrictedPool} at guest address 0 whose one region has frontend address 0 too, so
 * the same translation and the same overflow-safe bounds checks serve both kinds of address.
 *
 * <p>The memfd is sealed against shrinking and growing before the frontend sees it: a frontend that
 * truncated it would turn the backend's next access into SIGBUS.
 */
final class DevicePool implements AutoCloseable {
  /** The VIRTIO Shared Memory Region id of the pool. */
  static final int SHMID = 0;

  /** The memfd's name, as /proc/PID/maps shows it (memfd:bounce-device-pool). */
  static final String MEMFD_NAME = "bounce-device-pool";

  private final Memfd memfd;

  private DevicePool(Memfd memfd) {
    this.memfd = memfd;
  }

  static DevicePool create(long size) throws NativeException {
    Memfd memfd = Memfd.create(MEMFD_NAME, size);
    try {
      memfd.seal(Memfd.F_SEAL_SHRINK | Memfd.F_SEAL_GROW | Memfd.F_SEAL_SEAL);
      return new DevicePool(memfd);
    } catch (NativeException | RuntimeException e) {
      memfd.close();
      throw e;
    }
  }

  long size() {
    return memfd.size();
  }

  /** The engine's view: the whole pool mapped, at guest and frontend address 0. */
  RestrictedPool memory() throws NativeException {
    return RestrictedPool.at(0, size())
        .withRegion(new MemoryRegionDescription(0, size(), 0, 0), memfd.duplicate());
  }

  /** The GET_SHMEM_CONFIG reply: one region, {@link #SHMID}, of the pool's size. */
  ShmemConfig config() {
    return new ShmemConfig(List.of(size()));
  }

  /** The BACKEND_SHMEM_MAP request: all of the memfd, read-write, at offset 0 of the region. */
  ShmemMapping mapping() {
    return new ShmemMapping(SHMID, 0, 0, size(), ShmemMapping.FLAG_WRITABLE);
  }

  /** The memfd, to send (the kernel passes a duplicate). */
  Fd fd() {
    return memfd.fd();
  }

  @Override
  public void close() {
    memfd.close();
  }
}
