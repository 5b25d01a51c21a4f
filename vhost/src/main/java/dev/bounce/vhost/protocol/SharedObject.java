package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;
import java.util.Objects;
import java.util.UUID;

/**
 * VhostUserShared: a 16-byte UUID "whose first three components ... are stored in big endian", that
 * is the RFC 4122 byte order, which is also java.util.UUID's. The one big-endian field in the
 * protocol.
 */
public record SharedObject(UUID uuid) implements Payload {
  public static final int SIZE = 16;

  public SharedObject {
    Objects.requireNonNull(uuid, "uuid");
  }

  static SharedObject decode(ByteBuf in) {
    return new SharedObject(new UUID(in.readLong(), in.readLong()));
  }

  @Override
  public int size() {
    return SIZE;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeLong(uuid.getMostSignificantBits());
    out.writeLong(uuid.getLeastSignificantBits());
  }

  @Override
  public String describe() {
    return "uuid=" + uuid;
  }
}
