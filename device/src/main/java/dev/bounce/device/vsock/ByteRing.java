package dev.bounce.device.vsock;

import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.lang.foreign.MemorySegment;

/**
 * One direction of a connection's bytes: a ring of at most {@code capacity} bytes (the vsock
 * buf_alloc, {@code --tx-buffer-size}), which starts small and grows only as data waits in it, so
 * that thousands of idle connections cost little. For SEQPACKET it also keeps where messages end
 * (at most one boundary per byte plus one, so bounded too). Not thread-safe: the data loop owns it.
 */
final class ByteRing {
  private static final int INITIAL = 4096;

  private final int capacity;
  private byte[] array;
  private MemorySegment bytes; // over array
  private long head; // absolute position of the first byte held
  private long tail; // absolute position after the last byte held

  // Message ends (absolute positions), a ring of longs that grows as needed.
  private long[] ends = new long[0];
  private int endsHead;
  private int endsCount;

  ByteRing(int capacity) {
    if (capacity < 1) throw new IllegalArgumentException("capacity " + capacity);
    this.capacity = capacity;
    this.array = new byte[Math.min(INITIAL, capacity)];
    this.bytes = MemorySegment.ofArray(array);
  }

  int capacity() {
    return capacity;
  }

  int size() {
    return (int) (tail - head);
  }

  int free() {
    return capacity - size();
  }

  boolean isEmpty() {
    return tail == head;
  }

  /** Bytes taken out since creation (the fwd_cnt or tx_cnt this ring accounts for). */
  long consumed() {
    return head;
  }

  /** Bytes put in since creation. */
  long produced() {
    return tail;
  }

  /** Messages whose end is in the ring (SEQPACKET). */
  int messages() {
    return endsCount;
  }

  /** Bytes up to the end of the first message held, or -1 when no end is held. */
  long firstMessageRemaining() {
    return endsCount == 0 ? -1 : ends[endsHead] - head;
  }

  private void ensure(int more) {
    long need = (long) size() + more;
    long old = bytes.byteSize();
    if (need <= old) return;
    long grown = old;
    while (grown < need) grown *= 2;
    grown = Math.min(grown, capacity);
    byte[] biggerArray = new byte[(int) grown];
    MemorySegment bigger = MemorySegment.ofArray(biggerArray);
    for (long p = head; p < tail; ) {
      long from = p % old;
      long to = p % grown;
      long run = Math.min(tail - p, Math.min(old - from, grown - to));
      MemorySegment.copy(bytes, from, bigger, to, run);
      p += run;
    }
    array = biggerArray;
    bytes = bigger;
  }

  private void copyOut(long from, MemorySegment dst, long dstOffset, int n) {
    long size = bytes.byteSize();
    for (int done = 0; done < n; ) {
      int at = (int) ((from + done) % size);
      int run = (int) Math.min(n - done, size - at);
      MemorySegment.copy(bytes, at, dst, dstOffset + done, run);
      done += run;
    }
  }

  /** Appends {@code n} bytes of {@code src}; the caller made sure they fit ({@link #free}). */
  void write(MemorySegment src, long srcOffset, int n) {
    if (n > free()) throw new IllegalStateException(n + " bytes do not fit in " + free());
    ensure(n);
    long size = bytes.byteSize();
    for (int done = 0; done < n; ) {
      int at = (int) ((tail + done) % size);
      int run = (int) Math.min(n - done, size - at);
      MemorySegment.copy(src, srcOffset + done, bytes, at, run);
      done += run;
    }
    tail += n;
  }

  /**
   * Appends exactly {@code n} readable bytes from {@code chain}'s cursor on.
   *
   * @return false (and nothing appended) when the chain held fewer
   */
  boolean writeFrom(DescriptorChain chain, int n) throws VirtqueueException {
    if (n > free()) throw new IllegalStateException(n + " bytes do not fit in " + free());
    ensure(n);
    long size = bytes.byteSize();
    for (int done = 0; done < n; ) {
      int at = (int) ((tail + done) % size);
      int run = (int) Math.min(n - done, size - at);
      long got = chain.read(bytes, at, run);
      done += (int) got;
      if (got < run) return false;
    }
    tail += n;
    return true;
  }

  /**
   * Takes back what was put in since {@link #produced} was {@code produced}, none of it read and no
   * message end marked after it: a packet that turned out short after its first bytes went in.
   */
  void truncate(long produced) {
    if (produced < head || produced > tail) {
      throw new IllegalArgumentException(produced + " is not in [" + head + ", " + tail + "]");
    }
    tail = produced;
  }

  /**
   * Counts {@code n} bytes as put in and taken out at once: they went between guest and host
   * without a stop here ({@link VsockConnection#offer}, {@link HostReads}), so the counters (rx_cnt
   * and fwd_cnt, or tx_cnt) stay exact. Only while empty, which keeps the bytes in order.
   */
  void passThrough(int n) {
    if (!isEmpty()) throw new IllegalStateException("bytes wait in the ring: " + size());
    head += n;
    tail += n;
  }

  /** Marks the end of a message at the current tail (SEQPACKET EOM). */
  boolean markEnd() {
    if (endsCount >= capacity + 1) return false;
    if (endsCount == ends.length) {
      long[] grown = new long[Math.max(8, Math.min(ends.length * 2, capacity + 1))];
      for (int k = 0; k < endsCount; k++) grown[k] = ends[(endsHead + k) % ends.length];
      ends = grown;
      endsHead = 0;
    }
    ends[(endsHead + endsCount) % ends.length] = tail;
    endsCount++;
    return true;
  }

  /**
   * Takes up to {@code max} bytes out into {@code dst}, never past the first message end held.
   *
   * @return the bytes taken
   */
  int read(MemorySegment dst, long dstOffset, int max) {
    int n = readable(max);
    copyOut(head, dst, dstOffset, n);
    head += n;
    return n;
  }

  /**
   * What looks at bytes where they are in the ring: {@code length} of {@code array} from {@code
   * offset}.
   */
  @FunctionalInterface
  interface Reader {
    void read(byte[] array, int offset, int length);
  }

  /**
   * Takes up to {@code max} bytes out, handing them to {@code reader} where they are (at most two
   * runs), never past the first message end held.
   *
   * @return the bytes taken
   */
  int read(Reader reader, int max) {
    int n = readable(max);
    int size = array.length;
    for (int done = 0; done < n; ) {
      int at = (int) ((head + done) % size);
      int run = Math.min(n - done, size - at);
      reader.read(array, at, run);
      done += run;
    }
    head += n;
    return n;
  }

  /** Takes up to {@code max} bytes out into {@code chain}'s writable part. */
  int readInto(DescriptorChain chain, int max) throws VirtqueueException {
    int n = readable(max);
    long size = bytes.byteSize();
    for (int done = 0; done < n; ) {
      int at = (int) ((head + done) % size);
      int run = (int) Math.min(n - done, size - at);
      long put = chain.write(bytes, at, run);
      done += (int) put;
      if (put < run) {
        n = done;
        break;
      }
    }
    head += n;
    return n;
  }

  /** How many bytes a read of at most {@code max} takes (stops at the first message end). */
  int readable(int max) {
    long n = Math.min(max, size());
    if (endsCount > 0) n = Math.min(n, ends[endsHead] - head);
    return (int) n;
  }

  /** Whether the head sits on a message end; if so, that end is dropped (the message is done). */
  boolean takeEnd() {
    if (endsCount > 0 && ends[endsHead] == head) {
      endsHead = (endsHead + 1) % ends.length;
      endsCount--;
      return true;
    }
    return false;
  }

  /** Drops everything held (RST, shutdown of the reading side); the counters keep counting. */
  void clear() {
    head = tail;
    endsCount = 0;
    endsHead = 0;
  }
}
