package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;
import java.util.Arrays;

/**
 * A payload bounce does not interpret (IOTLB messages, crypto sessions, inflight descriptions),
 * kept as bytes. Its size is bounded by {@link Header#MAX_PAYLOAD} like any other.
 */
public record Opaque(byte[] bytes) implements Payload {
  public Opaque {
    bytes = bytes.clone();
    if (bytes.length > Header.MAX_PAYLOAD) {
      throw new IllegalArgumentException(
          "payload of " + bytes.length + " bytes, at most " + Header.MAX_PAYLOAD);
    }
  }

  static Opaque decode(ByteBuf in, int size) {
    byte[] bytes = new byte[size];
    in.readBytes(bytes);
    return new Opaque(bytes);
  }

  /** A copy of the bytes. */
  @Override
  public byte[] bytes() {
    return bytes.clone();
  }

  @Override
  public int size() {
    return bytes.length;
  }

  @Override
  public void encode(ByteBuf out) {
    out.writeBytes(bytes);
  }

  @Override
  public String describe() {
    return "bytes=" + Format.bytes(bytes);
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof Opaque other && Arrays.equals(other.bytes, bytes);
  }

  @Override
  public int hashCode() {
    return Arrays.hashCode(bytes);
  }

  @Override
  public String toString() {
    return "Opaque[" + describe() + "]";
  }
}
