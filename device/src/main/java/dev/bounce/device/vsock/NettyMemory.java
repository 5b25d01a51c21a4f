package dev.bounce.device.vsock;

import io.netty.buffer.ByteBuf;
import java.lang.foreign.MemorySegment;

/**
 * A Netty buffer's memory as a {@link MemorySegment}, so bytes move without another copy. Direct
 * buffers (what the host channels read into and write from) cost nothing per buffer: their bytes
 * are addressed in one segment spanning native memory, at the buffer's memory address, instead of
 * through a new segment per buffer (one object per host read or write otherwise).
 */
final class NettyMemory {
  private static final MemorySegment NATIVE = MemorySegment.NULL.reinterpret(Long.MAX_VALUE);

  private NettyMemory() {}

  /** The segment holding {@code buf}'s bytes; see {@link #offset} for where. */
  static MemorySegment of(ByteBuf buf) {
    if (buf.hasMemoryAddress()) return NATIVE;
    return MemorySegment.ofBuffer(buf.nioBuffer(0, buf.capacity()));
  }

  /** {@code buf}'s readable bytes as a segment of their own (a new object: not for hot paths). */
  static MemorySegment readable(ByteBuf buf) {
    return of(buf).asSlice(offset(buf, buf.readerIndex()), buf.readableBytes());
  }

  /** Where {@code buf}'s byte at {@code index} is in {@link #of}{@code (buf)}. */
  static long offset(ByteBuf buf, int index) {
    return buf.hasMemoryAddress() ? buf.memoryAddress() + index : index;
  }
}
