package dev.bounce.device.vsock;

import io.netty.buffer.ByteBuf;
import java.lang.foreign.MemorySegment;

/** A Netty buffer's memory as a {@link MemorySegment}, so bytes move without another copy. */
final class NettyMemory {
  private NettyMemory() {}

  /** The whole of {@code buf}'s memory, index 0 at the buffer's index 0. */
  static MemorySegment of(ByteBuf buf) {
    if (buf.hasMemoryAddress()) {
      return MemorySegment.ofAddress(buf.memoryAddress()).reinterpret(buf.capacity());
    }
    return MemorySegment.ofBuffer(buf.nioBuffer(0, buf.capacity()));
  }
}
