package dev.bounce.device.vsock;

import static dev.bounce.pool.LittleEndian.LE16;
import static dev.bounce.pool.LittleEndian.LE32;
import static dev.bounce.pool.LittleEndian.LE64;

import java.lang.foreign.MemorySegment;

/**
 * The 44-byte {@code struct virtio_vsock_hdr} (virtio 1.2 section 5.10.6), little endian, read and
 * written in place on a {@link MemorySegment} at an offset: nothing is allocated.
 *
 * <pre>
 *  0 le64 src_cid    8 le64 dst_cid   16 le32 src_port  20 le32 dst_port  24 le32 len
 * 28 le16 type      30 le16 op        32 le32 flags     36 le32 buf_alloc 40 le32 fwd_cnt
 * </pre>
 */
public final class VsockHeader {
  public static final int SIZE = 44;

  /** VIRTIO_VSOCK_TYPE_STREAM and VIRTIO_VSOCK_TYPE_SEQPACKET. */
  public static final int TYPE_STREAM = 1;

  public static final int TYPE_SEQPACKET = 2;

  /** VIRTIO_VSOCK_SHUTDOWN_RCV / _SEND: the flags of an {@link Op#SHUTDOWN}. */
  public static final int SHUTDOWN_RCV = 1;

  public static final int SHUTDOWN_SEND = 2;
  public static final int SHUTDOWN_BOTH = SHUTDOWN_RCV | SHUTDOWN_SEND;

  /** VIRTIO_VSOCK_SEQ_EOM / _EOR: the flags of a SEQPACKET {@link Op#RW}. */
  public static final int SEQ_EOM = 1;

  public static final int SEQ_EOR = 2;

  /** VMADDR_CID_HOST: the host's address; the guest's comes from the config space. */
  public static final long HOST_CID = 2;

  static final int SRC_CID = 0;
  static final int DST_CID = 8;
  static final int SRC_PORT = 16;
  static final int DST_PORT = 20;
  static final int LEN = 24;
  static final int TYPE = 28;
  static final int OP = 30;
  static final int FLAGS = 32;
  static final int BUF_ALLOC = 36;
  static final int FWD_CNT = 40;

  private VsockHeader() {}

  public static long srcCid(MemorySegment s, long at) {
    return s.get(LE64, at + SRC_CID);
  }

  public static long dstCid(MemorySegment s, long at) {
    return s.get(LE64, at + DST_CID);
  }

  /** Ports are u32; Java ints hold them bit for bit. */
  public static int srcPort(MemorySegment s, long at) {
    return s.get(LE32, at + SRC_PORT);
  }

  public static int dstPort(MemorySegment s, long at) {
    return s.get(LE32, at + DST_PORT);
  }

  /** The payload length: u32, so widened without sign. */
  public static long len(MemorySegment s, long at) {
    return Integer.toUnsignedLong(s.get(LE32, at + LEN));
  }

  public static int type(MemorySegment s, long at) {
    return Short.toUnsignedInt(s.get(LE16, at + TYPE));
  }

  public static int op(MemorySegment s, long at) {
    return Short.toUnsignedInt(s.get(LE16, at + OP));
  }

  public static int flags(MemorySegment s, long at) {
    return s.get(LE32, at + FLAGS);
  }

  /** buf_alloc and fwd_cnt: u32 values, kept as the int bits (credit math wraps mod 2^32). */
  public static int bufAlloc(MemorySegment s, long at) {
    return s.get(LE32, at + BUF_ALLOC);
  }

  public static int fwdCnt(MemorySegment s, long at) {
    return s.get(LE32, at + FWD_CNT);
  }

  /** Writes a whole header at {@code at}. */
  public static void write(
      MemorySegment s,
      long at,
      long srcCid,
      long dstCid,
      int srcPort,
      int dstPort,
      int len,
      int type,
      int op,
      int flags,
      int bufAlloc,
      int fwdCnt) {
    s.set(LE64, at + SRC_CID, srcCid);
    s.set(LE64, at + DST_CID, dstCid);
    s.set(LE32, at + SRC_PORT, srcPort);
    s.set(LE32, at + DST_PORT, dstPort);
    s.set(LE32, at + LEN, len);
    s.set(LE16, at + TYPE, (short) type);
    s.set(LE16, at + OP, (short) op);
    s.set(LE32, at + FLAGS, flags);
    s.set(LE32, at + BUF_ALLOC, bufAlloc);
    s.set(LE32, at + FWD_CNT, fwdCnt);
  }

  /** Whether {@code type} is one this device carries. */
  public static boolean knownType(int type) {
    return type == TYPE_STREAM || type == TYPE_SEQPACKET;
  }

  /** For logs: one header on one line. */
  public static String describe(MemorySegment s, long at) {
    return Op.name(op(s, at))
        + " "
        + srcCid(s, at)
        + ":"
        + Integer.toUnsignedString(srcPort(s, at))
        + " -> "
        + dstCid(s, at)
        + ":"
        + Integer.toUnsignedString(dstPort(s, at))
        + " type "
        + type(s, at)
        + " len "
        + len(s, at)
        + " flags 0x"
        + Integer.toHexString(flags(s, at));
  }
}
