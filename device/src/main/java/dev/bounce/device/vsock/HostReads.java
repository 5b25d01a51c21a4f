package dev.bounce.device.vsock;

import dev.bounce.pool.IoVectors;
import dev.bounce.vhost.virtq.DescriptorChain;
import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.VirtqueueException;

/**
 * Host to guest with no copy in bounce, the twin of {@link VsockConnection#offer}: a stream's bytes
 * are read from its host socket with one readv(2) straight into as many of the guest's receive
 * buffers as they and the guest's credit fill, each then completed as one RW packet. Linux posts
 * 3776-byte buffers, so one read fills up to {@value #MAX_BUFFERS} of them, where a read into
 * bounce's memory and a copy per buffer cost two copies and a read per buffer (vhost-device-vsock)
 * a system call each. The host end says first how many bytes wait, so that only the buffers they
 * fill are popped; any the read did not reach after all go back to the ring ({@link
 * SplitQueue#unpop}).
 */
final class HostReads {
  static final int MAX_BUFFERS = 64;

  private final VsockDevice device;
  private final SplitQueue queue;
  private final DescriptorChain[] chains = new DescriptorChain[MAX_BUFFERS];
  private final long[] room = new long[MAX_BUFFERS];
  private final IoVectors pieces = new IoVectors(MAX_BUFFERS);
  private int popped; // chains[0, popped) are popped
  private int filled; // chains[0, filled) are completed

  HostReads(VsockDevice device, SplitQueue queue) {
    this.device = device;
    this.queue = queue;
    for (int i = 0; i < MAX_BUFFERS; i++) chains[i] = queue.newChain();
  }

  /**
   * Reads up to {@code credit} bytes of {@code c}'s host end into the rx queue's buffers. Buffers
   * not completed go back to the ring, also when the queue fails midway; bytes read that could not
   * reach the guest end the connection.
   *
   * @return false when the queue had no usable buffer (nothing was read)
   */
  boolean receive(VsockConnection c, long credit) throws VirtqueueException {
    int waiting = c.endpoint.bytesAtHost(c);
    if (waiting == 0) {
      c.bytesWaitAtHost = false;
      return true;
    }
    popped = 0;
    filled = 0;
    long read = 0;
    long delivered = 0;
    try {
      gather(Math.min(credit, waiting));
      if (popped == 0) return false;
      read = c.endpoint.readInto(c, pieces);
      if (read == HostSide.HostEndpoint.GUEST_MEMORY_FAULT) {
        read = 0;
        throw queue.memoryFault(
            new IllegalStateException("readv(2) into rx buffers: EFAULT (guest memory went away)"));
      }
      if (read < pieces.bytes()) c.bytesWaitAtHost = false;
      if (read > 0 && !c.isClosed()) {
        c.toGuest.passThrough((int) read);
        while (delivered < read) {
          int len = (int) Math.min(room[filled], read - delivered);
          boolean whole = device.completeData(queue, chains[filled], c, len);
          filled++; // completed (empty if not whole); one that threw instead goes back
          if (!whole) break;
          delivered += len;
        }
      }
      return true;
    } finally {
      for (int i = popped - 1; i >= filled; i--) queue.unpop(chains[i]);
      if (delivered < read && !c.isClosed()) c.reset(); // the stream lost bytes: it cannot go on
    }
  }

  /** Pops buffers and adds their payload room (after the header's) to {@link #pieces}. */
  private void gather(long credit) throws VirtqueueException {
    pieces.clear();
    long wanted = credit;
    while (popped < MAX_BUFFERS && wanted > 0 && pieces.hasRoom()) {
      DescriptorChain chain = chains[popped];
      if (!queue.pop(chain)) break;
      popped++;
      long got = 0;
      if (chain.skipWritable(VsockHeader.SIZE) == VsockHeader.SIZE) {
        got = chain.gatherWritable(pieces, Math.min(wanted, VsockDevice.MAX_PACKET_PAYLOAD));
      }
      if (got == 0) {
        // Too small for a header and data: the guest broke 5.10.6.3. Completed unused when no
        // buffer is held before it; otherwise given back, and met first on the next pass.
        if (popped > 1) {
          queue.unpop(chain);
          popped--;
          break;
        }
        device.unusable(queue, chain);
        popped = 0; // completed: nothing to give back
        continue;
      }
      room[popped - 1] = got;
      wanted -= got;
    }
  }
}
