package dev.bounce.vhost.virtq;

import dev.bounce.pool.AddressKind;
import dev.bounce.pool.GuestAccessException;
import dev.bounce.pool.PoolViolationException;
import dev.bounce.pool.Ranges;

/**
 * The guest broke a virtqueue rule: the queue that saw it is broken and pops nothing until reset;
 * the caller signals the ring's error eventfd, counts, and logs {@link #getMessage()}, a line that
 * names the queue, the rule (with its section of the virtio 1.2 specification) and the address and
 * length where there is one. Other queues go on (ARCHITECTURE.md, "Errors").
 *
 * <p>No stack trace: it describes guest input, not a bug in bounce, and a hostile guest must not
 * make bounce spend time building traces.
 */
public final class VirtqueueException extends Exception {
  /** The rule broken. */
  public enum Reason {
    RING_MISALIGNED("ring part misaligned", "2.7.1 Driver Requirements: Virtqueues"),
    RING_OUTSIDE_MEMORY(
        "ring part outside shared memory or the pool",
        "2.7 Split Virtqueues, and the restricted pool"),
    AVAIL_INDEX_TOO_FAR(
        "available index runs more than the queue size ahead of the last one consumed",
        "2.7.13 Supplying Buffers to The Device; 2.7.6.1 Driver Requirements: The Virtqueue"
            + " Available Ring"),
    HEAD_OUT_OF_RANGE(
        "chain head index is not below the queue size", "2.7.5 The Virtqueue Descriptor Table"),
    NEXT_OUT_OF_RANGE(
        "next index is not below the table size", "2.7.5 The Virtqueue Descriptor Table"),
    CHAIN_TOO_LONG(
        "descriptor chain longer than its table (a loop)",
        "2.7.5.2 Driver Requirements: The Virtqueue Descriptor Table; 2.7.5.3.1 Driver"
            + " Requirements: Indirect Descriptors"),
    CHAIN_LENGTH_OVERFLOW(
        "descriptor chain longer than 2^32 bytes in total",
        "2.7.5.2 Driver Requirements: The Virtqueue Descriptor Table"),
    READABLE_AFTER_WRITABLE(
        "device-readable descriptor after a device-writable one",
        "2.7.4.2 Driver Requirements: Message Framing"),
    DESCRIPTOR_OUTSIDE_MEMORY(
        "descriptor buffer outside shared memory or the pool",
        "2.7.5 The Virtqueue Descriptor Table, and the restricted pool"),
    INDIRECT_NOT_NEGOTIATED(
        "indirect descriptor but VIRTIO_F_INDIRECT_DESC was not negotiated",
        "2.7.5.3.1 Driver Requirements: Indirect Descriptors"),
    INDIRECT_WITH_NEXT(
        "descriptor sets both INDIRECT and NEXT",
        "2.7.5.3.1 Driver Requirements: Indirect Descriptors"),
    NESTED_INDIRECT(
        "INDIRECT inside an indirect table", "2.7.5.3.1 Driver Requirements: Indirect Descriptors"),
    INDIRECT_TABLE_LENGTH(
        "indirect table length is 0 or not a multiple of 16", "2.7.5.3 Indirect Descriptors"),
    INDIRECT_TABLE_OUTSIDE_MEMORY(
        "indirect table outside shared memory or the pool",
        "2.7.5.3 Indirect Descriptors, and the restricted pool"),
    /**
     * An access to guest memory faulted although the address was inside a shared region: the
     * frontend truncated the memory file under the mapping (SIGBUS, which the JVM turns into an
     * InternalError). Not a rule of the spec; the frontend broke the memory it shared.
     */
    MEMORY_FAULT(
        "guest memory access faulted (has the frontend truncated the memory file it shared?)",
        "2.7 Split Virtqueues: the memory behind the rings and buffers must stay readable");

    private final String description;
    private final String section;

    Reason(String description, String section) {
      this.description = description;
      this.section = section;
    }

    /** What the guest did, in words. */
    public String description() {
      return description;
    }

    /** The section of the virtio 1.2 specification that forbids it. */
    public String section() {
      return section;
    }
  }

  private final Reason reason;
  private final int queueIndex;
  private final boolean hasAddress;
  private final long address;
  private final long length;

  private VirtqueueException(
      String message,
      GuestAccessException cause,
      Reason reason,
      int queueIndex,
      boolean hasAddress,
      long address,
      long length) {
    super(message, cause, false, false);
    this.reason = reason;
    this.queueIndex = queueIndex;
    this.hasAddress = hasAddress;
    this.address = address;
    this.length = length;
  }

  /** An error with no address: {@code detail} says what was seen. */
  static VirtqueueException of(Reason reason, int queueIndex, String detail) {
    return new VirtqueueException(
        message(reason, queueIndex, detail, null), null, reason, queueIndex, false, 0, 0);
  }

  /** An error about {@code [address, address + length)} in the address space {@code kind}. */
  static VirtqueueException at(
      Reason reason, int queueIndex, String detail, AddressKind kind, long address, long length) {
    String where =
        detail
            + " at "
            + kind.label()
            + " "
            + Ranges.hex(address)
            + " length "
            + Long.toUnsignedString(length);
    return new VirtqueueException(
        message(reason, queueIndex, where, null), null, reason, queueIndex, true, address, length);
  }

  /** An error whose range memory or the pool refused: the cause has the address and pool bounds. */
  static VirtqueueException refused(
      Reason reason, int queueIndex, String detail, GuestAccessException cause) {
    return new VirtqueueException(
        message(reason, queueIndex, detail, cause),
        cause,
        reason,
        queueIndex,
        true,
        cause.address(),
        cause.length());
  }

  private static String message(
      Reason reason, int queueIndex, String detail, GuestAccessException cause) {
    StringBuilder s =
        new StringBuilder("virtqueue ")
            .append(queueIndex)
            .append(" stopped: ")
            .append(reason.description)
            .append(": ")
            .append(detail);
    if (cause != null) s.append(": ").append(cause.getMessage());
    return s.append(" (virtio 1.2 section ").append(reason.section).append(')').toString();
  }

  public Reason reason() {
    return reason;
  }

  /** The queue's index in its device (the vring index of vhost-user). */
  public int queueIndex() {
    return queueIndex;
  }

  /** Whether {@link #address()} and {@link #length()} name a guest range. */
  public boolean hasAddress() {
    return hasAddress;
  }

  /** The guest (or, for a ring part, frontend) address concerned; 0 without {@link #hasAddress}. */
  public long address() {
    return address;
  }

  /** The length at {@link #address()}, unsigned; 0 without {@link #hasAddress}. */
  public long length() {
    return length;
  }

  /** The translation failure behind this error, with address, length and kind; else null. */
  public GuestAccessException accessFailure() {
    return (GuestAccessException) getCause();
  }

  /** The restricted pool the range fell outside of, when that is why; else null. */
  public PoolViolationException poolViolation() {
    return getCause() instanceof PoolViolationException p ? p : null;
  }
}
