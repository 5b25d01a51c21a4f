package dev.bounce.pool;

/**
 * An anonymous memory file (memfd_create(2)): the memory a VMM shares with a backend. Created
 * close-on-exec and sealable.
 */
public final class Memfd implements AutoCloseable {
  public static final int F_SEAL_SEAL = 0x1;
  public static final int F_SEAL_SHRINK = 0x2;
  public static final int F_SEAL_GROW = 0x4;

  private final Fd fd;
  private final long size;

  private Memfd(Fd fd, long size) {
    this.fd = fd;
    this.size = size;
  }

  /**
   * Creates a memfd of {@code size} bytes (zero-filled, allocated lazily).
   *
   * @throws IllegalArgumentException when size is not positive
   * @throws NativeException when the kernel refuses (for example EFBIG for a size beyond its limit)
   */
  public static Memfd create(String name, long size) throws NativeException {
    if (size <= 0) throw new IllegalArgumentException("memfd size must be positive: " + size);
    Fd fd = Fd.adopt(Libc.memfdCreate(name, Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING));
    try {
      Libc.ftruncate(fd.value(), size);
      return new Memfd(fd, size);
    } catch (NativeException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  /**
   * A memory file a peer created and sent (a device-owned pool): {@code fd} is owned from now on,
   * closed with this. Its size is what the peer said; mapping past the file's end would fault, so
   * the size is checked against the file's.
   *
   * @throws IllegalArgumentException when the file is smaller than {@code size} (fd closed)
   */
  public static Memfd adopt(Fd fd, long size) throws NativeException {
    try {
      long actual = Libc.fstat(fd.value()).size();
      if (size <= 0 || actual < size) {
        throw new IllegalArgumentException(
            "the memory file has " + actual + " bytes, fewer than the " + size + " announced");
      }
      return new Memfd(fd, size);
    } catch (NativeException | RuntimeException e) {
      fd.close();
      throw e;
    }
  }

  public Fd fd() {
    return fd;
  }

  public long size() {
    return size;
  }

  /**
   * Adds seals (F_SEAL_*). Sealing against shrinking protects the mappings of whoever the memfd is
   * shared with: a peer that could shrink it would turn their next access into SIGBUS.
   */
  public void seal(int seals) throws NativeException {
    Libc.fcntl(fd.value(), Libc.F_ADD_SEALS, seals);
  }

  public int seals() throws NativeException {
    return Libc.fcntl(fd.value(), Libc.F_GET_SEALS, 0);
  }

  /**
   * A new close-on-exec fd for the same file, owned by the caller: what is handed to a peer (or to
   * a mapping that closes its fd) while this memfd stays open.
   */
  public Fd duplicate() throws NativeException {
    return Libc.dup(fd.value());
  }

  /** Maps {@code size} bytes at {@code offset} of this memfd; see {@link Mapping#map}. */
  public Mapping map(long offset, long size) throws NativeException {
    return Mapping.map(fd, offset, size);
  }

  @Override
  public void close() {
    fd.close();
  }

  @Override
  public String toString() {
    return "memfd(" + fd + ", " + size + " bytes)";
  }
}
