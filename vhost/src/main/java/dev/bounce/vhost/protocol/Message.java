package dev.bounce.vhost.protocol;

import dev.bounce.pool.Fd;
import java.util.List;
import java.util.Objects;

/**
 * One decoded, validated message: its header, what the request code means on its channel, the
 * payload, and the fds that came with it, in order (for SET_MEM_TABLE, one per region).
 *
 * <p>The message owns its fds until they are taken: {@link #close()} closes every fd still owned,
 * so a session that fails half way through handling a message leaks nothing. To keep one, {@link
 * #takeFd(int)} moves it to a new owner.
 *
 * @param <R> {@link FrontendRequest} on the main socket, {@link BackendRequest} on the back-end
 *     channel
 */
public record Message<R extends Request>(Header header, R request, Payload payload, List<Fd> fds)
    implements AutoCloseable {

  public Message {
    Objects.requireNonNull(header, "header");
    Objects.requireNonNull(request, "request");
    Objects.requireNonNull(payload, "payload");
    fds = List.copyOf(fds);
  }

  /** Whether the sender set NEED_REPLY. */
  public boolean needsReply() {
    return header.needsReply();
  }

  public boolean isReply() {
    return header.isReply();
  }

  /**
   * The payload as {@code type}; the request fixes the layout, so a mismatch is a caller's bug.
   *
   * @throws IllegalStateException when the payload is another layout
   */
  public <P extends Payload> P payload(Class<P> type) {
    if (!type.isInstance(payload)) {
      throw new IllegalStateException(
          request.label()
              + " carries "
              + payload.getClass().getSimpleName()
              + ", not "
              + type.getSimpleName());
    }
    return type.cast(payload);
  }

  /**
   * Moves fd {@code index} to a new owner: the returned Fd is the caller's to close, and this
   * message's {@link #close()} no longer touches it.
   *
   * @throws IllegalStateException when it was already taken or closed
   */
  public Fd takeFd(int index) {
    return Fd.adopt(fds.get(index).release());
  }

  /** Closes every fd not taken. Idempotent. */
  @Override
  public void close() {
    for (Fd fd : fds) fd.close();
  }

  /**
   * One line for the log, in the recorded sequences' words: "SET_VRING_ADDR index=0 flags=0x0
   * desc=0x... used=0x... avail=0x... log=0x0", "SET_MEM_TABLE need_reply nregions=2 region[0] ...
   * fds=2", "GET_VRING_BASE reply index=0 num=0".
   */
  public String describe() {
    StringBuilder s = new StringBuilder(request.label());
    if (header.isReply()) {
      s.append(" reply");
    } else if (header.needsReply()) {
      s.append(" need_reply");
    }
    String fields = fields();
    if (!fields.isEmpty()) s.append(' ').append(fields);
    if (!fds.isEmpty()) s.append(" fds=").append(fds.size());
    return s.toString();
  }

  private String fields() {
    if (!(payload instanceof U64(long value))) return payload.describe();
    if (header.isReply() && request.replyPayload() == null) {
      return value == 0 ? "ack=0" : "ack=" + Format.hex(value) + " (failure)";
    }
    if (!(request instanceof FrontendRequest frontend)) return payload.describe();
    return switch (frontend) {
      case GET_FEATURES, SET_FEATURES -> "features=" + Format.hex(value);
      case GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES ->
          "protocol_features=" + Format.hex(value) + " [" + ProtocolFeature.describe(value) + "]";
      case GET_STATUS, SET_STATUS -> "status=" + Format.hex(value);
      case GET_QUEUE_NUM -> "queue_num=" + Long.toUnsignedString(value);
      case GET_MAX_MEM_SLOTS -> "max_mem_slots=" + Long.toUnsignedString(value);
      case NET_SET_MTU -> "mtu=" + Long.toUnsignedString(value);
      default -> payload.describe();
    };
  }

  @Override
  public String toString() {
    return describe();
  }
}
