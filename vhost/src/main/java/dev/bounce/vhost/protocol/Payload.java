package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/**
 * A decoded message payload, one record per layout in vhost-user.rst. Records validate on
 * construction (IllegalArgumentException: building a bad one is our bug); decoding checks the same
 * rules first and reports the peer's bad values as {@link ProtocolException}s instead.
 *
 * <p>Unsigned u32 fields are held in longs (0 to 2^32-1) so that comparisons such as {@code index <
 * queues} cannot be fooled by a sign; u64 fields are longs read as unsigned.
 */
public sealed interface Payload
    permits Empty,
        U64,
        VringState,
        VringAddress,
        VringFdIndex,
        MemoryTable,
        SingleMemoryRegion,
        ConfigSpace,
        LogDescription,
        DeviceStateTransfer,
        SharedObject,
        ShmemConfig,
        ShmemMapping,
        VringArea,
        Opaque {

  /** Bytes on the wire, the header's size field. */
  int size();

  /** Writes exactly {@link #size()} bytes, little endian. */
  void encode(ByteBuf out);

  /** The fields for a log line, e.g. "index=0 num=256"; empty for no payload. */
  String describe();
}
