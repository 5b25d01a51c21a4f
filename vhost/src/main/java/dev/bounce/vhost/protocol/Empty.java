package dev.bounce.vhost.protocol;

import io.netty.buffer.ByteBuf;

/** No payload ("N/A" in the spec); the header size is 0. */
public record Empty() implements Payload {
  public static final Empty INSTANCE = new Empty();

  @Override
  public int size() {
    return 0;
  }

  @Override
  public void encode(ByteBuf out) {}

  @Override
  public String describe() {
    return "";
  }
}
