/*
 * bounce-guest: the program the real-VM tests run inside the Linux guest (scripts/realvm builds it
 * static for x86_64 and arm64 and puts it in the initramfs; /init runs it once per step).
 *
 *   bounce-guest connect PORT BYTES [CID]
 *                                     connects to the host (CID 2), or to another guest's CID, on
 *                                     PORT, sends BYTES of the pattern and reads BYTES back (the
 *                                     peer echoes)
 *   bounce-guest listen PORT BYTES     listens on PORT, prints a READY line, accepts one connection,
 *                                     reads BYTES and echoes them as they come
 *   bounce-guest net-send IFACE FRAMES sends FRAMES Ethernet frames on IFACE (AF_PACKET), each
 *                                     carrying the next NET_PAYLOAD bytes of the pattern, and
 *                                     waits until the device has taken them all
 *   bounce-guest net-echo IFACE FRAMES the same, for a backend that sends every frame back on the
 *                                     port it came from: receives each one back (NET_WINDOW in
 *                                     flight at most, so the guest's receive buffers never run out)
 *
 * Both directions are counted and checksummed (CRC-32, as java.util.zip.CRC32) so the host can
 * check them against its own side. The lengths are fixed in advance, so neither side depends on
 * half-close. Result lines (one write each, parsed by dev.bounce.it.realvm.RealVm):
 *   BOUNCE-READY mode=listen port=P
 *   BOUNCE-RESULT mode=M port=P sent=N sent_crc=X received=N received_crc=X ok
 *   BOUNCE-RESULT mode=M iface=I mac=A sent=N sent_crc=X received=N received_crc=X ok
 *   BOUNCE-RESULT mode=M port=P ... error=<what failed>: <strerror>
 * (net: sent and received count payload bytes; the frame headers are not in the CRC.)
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <linux/vm_sockets.h>

#define TIMEOUT_SECONDS 120

/* IEEE 802's local experimental EtherType: nothing else in the guest sends or takes it. */
#define NET_ETHERTYPE 0x88b5
#define NET_PAYLOAD 1024
#define NET_WINDOW 32
/* How long a frame may take to come back, or the device to take what was sent. */
#define NET_WAIT_MS 10000

/* The byte at offset i of every stream the tests send; TestPattern in the Java harness is the same. */
static uint8_t pattern(uint64_t i) { return (uint8_t)(i * 31 + (i >> 8) + 7); }

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[n] = c;
  }
}

/* crc is the running value, starting at 0 (as CRC32.update, with the final xor folded in). */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n) {
  crc = ~crc;
  while (n--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

struct result {
  const char *mode;
  char where[96]; /* port=P, or iface=I mac=A */
  uint64_t sent, received;
  uint32_t sent_crc, received_crc;
};

static void report(const struct result *r, const char *failed) {
  int error = errno; /* of the call that failed, before anything here can change it */
  char line[512];
  int n = snprintf(line, sizeof line,
                   "BOUNCE-RESULT mode=%s %s sent=%llu sent_crc=%08x received=%llu "
                   "received_crc=%08x",
                   r->mode, r->where, (unsigned long long)r->sent, r->sent_crc,
                   (unsigned long long)r->received, r->received_crc);
  if (failed)
    n += snprintf(line + n, sizeof line - n, " error=%s: %s\n", failed, strerror(error));
  else
    n += snprintf(line + n, sizeof line - n, " ok\n");
  if (write(1, line, n) < 0) exit(3);
}

/*
 * Moves bytes both ways on fd until `total` were received and `total` sent. connect sends the
 * pattern; listen (echo) sends back what it received, so it never sends ahead of what it has.
 */
static const char *exchange(int fd, struct result *r, uint64_t total, int echo) {
  static uint8_t in[65536], out[65536];
  uint64_t echo_end = 0; /* bytes received and not yet echoed end at in[echo_end] */
  uint64_t echo_at = 0;
  while (r->received < total || r->sent < total) {
    struct pollfd p = {.fd = fd, .events = 0};
    if (r->received < total && (!echo || echo_end == echo_at)) p.events |= POLLIN;
    if (r->sent < total && (!echo || echo_at < echo_end)) p.events |= POLLOUT;
    int ready = poll(&p, 1, TIMEOUT_SECONDS * 1000);
    if (ready == 0) {
      errno = ETIMEDOUT;
      return "poll";
    }
    if (ready < 0) return "poll";
    if (p.revents & POLLIN) {
      uint64_t want = total - r->received;
      ssize_t n = read(fd, in, want < sizeof in ? want : sizeof in);
      if (n < 0) return "read";
      if (n == 0) {
        errno = ECONNRESET;
        return "read (end of stream early)";
      }
      r->received_crc = crc_update(r->received_crc, in, n);
      r->received += n;
      echo_at = 0;
      echo_end = n;
    }
    if (p.revents & POLLOUT) {
      const uint8_t *from;
      size_t len;
      if (echo) {
        from = in + echo_at;
        len = echo_end - echo_at;
      } else {
        uint64_t left = total - r->sent;
        len = left < sizeof out ? left : sizeof out;
        for (size_t i = 0; i < len; i++) out[i] = pattern(r->sent + i);
        from = out;
      }
      ssize_t n = write(fd, from, len);
      if (n < 0) return "write";
      r->sent_crc = crc_update(r->sent_crc, from, n);
      r->sent += n;
      if (echo) echo_at += n;
      /* connect regenerates the unsent rest of the pattern next time: nothing to keep */
    }
    if ((p.revents & (POLLERR | POLLHUP)) && !(p.revents & POLLIN)) {
      errno = ECONNRESET;
      return "poll (connection closed)";
    }
  }
  return NULL;
}

/*
 * Sends `frames` frames from iface's own MAC address to itself (so a frame sent back is addressed
 * to the guest) and, with echo, takes each one back, checking its header and length. The socket
 * bypasses the qdisc: a frame the device cannot take now (no carrier yet, ring full) fails with
 * ENOBUFS and is sent again, instead of being dropped silently.
 */
static const char *net(int fd, struct result *r, const char *iface, uint64_t frames, int echo) {
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface);
  if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) return "SIOCGIFINDEX";
  int index = ifr.ifr_ifindex;
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) return "SIOCGIFHWADDR";
  const uint8_t *mac = (const uint8_t *)ifr.ifr_hwaddr.sa_data;
  snprintf(r->where, sizeof r->where, "iface=%s mac=%02x:%02x:%02x:%02x:%02x:%02x", iface, mac[0],
           mac[1], mac[2], mac[3], mac[4], mac[5]);
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0)
    return "PACKET_QDISC_BYPASS";
  struct sockaddr_ll me = {.sll_family = AF_PACKET,
                           .sll_protocol = htons(NET_ETHERTYPE),
                           .sll_ifindex = index};
  if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) return "bind";

  static uint8_t out[ETH_HLEN + NET_PAYLOAD], in[ETH_FRAME_LEN + 64];
  memcpy(out, mac, ETH_ALEN);
  memcpy(out + ETH_ALEN, mac, ETH_ALEN);
  out[12] = NET_ETHERTYPE >> 8;
  out[13] = NET_ETHERTYPE & 0xff;
  uint64_t sent = 0, received = 0;
  while (sent < frames || (echo && received < frames)) {
    if (sent < frames && (!echo || sent - received < NET_WINDOW)) {
      for (int i = 0; i < NET_PAYLOAD; i++) out[ETH_HLEN + i] = pattern(r->sent + i);
      if (send(fd, out, sizeof out, 0) < 0) {
        if (errno != ENOBUFS) return "send";
        usleep(1000);
        continue;
      }
      r->sent_crc = crc_update(r->sent_crc, out + ETH_HLEN, NET_PAYLOAD);
      r->sent += NET_PAYLOAD;
      sent++;
      continue;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, NET_WAIT_MS);
    if (ready == 0) errno = ETIMEDOUT;
    if (ready <= 0) return "poll (waiting for a frame to come back)";
    struct sockaddr_ll from;
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)&from, &from_len);
    if (n < 0) return "recvfrom";
    if (from.sll_pkttype == PACKET_OUTGOING) continue;
    if (n != (ssize_t)sizeof out || memcmp(in, out, ETH_HLEN) != 0) {
      errno = EBADMSG;
      return "recvfrom (a frame that is not one the guest sent)";
    }
    r->received_crc = crc_update(r->received_crc, in + ETH_HLEN, NET_PAYLOAD);
    r->received += NET_PAYLOAD;
    received++;
  }
  /* What the socket still holds is in frames the device has not given back yet. */
  for (int waited = 0;; waited += 10) {
    int queued;
    if (ioctl(fd, SIOCOUTQ, &queued) < 0) return "SIOCOUTQ";
    if (queued == 0) return NULL;
    if (waited >= NET_WAIT_MS) {
      errno = ETIMEDOUT;
      return "SIOCOUTQ (the device did not take every frame)";
    }
    usleep(10000);
  }
}

static char timeout_line[256];

static void timed_out(int signal) {
  (void)signal;
  if (write(1, timeout_line, strlen(timeout_line)) < 0) _exit(3);
  _exit(1);
}

/* From now on, a step stuck anywhere still ends in a result line saying where it was. */
static void arm_timeout(const struct result *r) {
  snprintf(timeout_line, sizeof timeout_line,
           "BOUNCE-RESULT mode=%s %s error=timeout: no progress in %d s\n", r->mode, r->where,
           TIMEOUT_SECONDS);
}

int main(int argc, char **argv) {
  if (argc != 4 && !(argc == 5 && strcmp(argv[1], "connect") == 0)) {
    fprintf(stderr,
            "usage: bounce-guest connect PORT BYTES [CID] | listen PORT BYTES"
            " | net-send|net-echo IFACE FRAMES\n");
    return 2;
  }
  crc_init();
  struct result r = {.mode = argv[1]};
  uint64_t total = strtoull(argv[3], NULL, 10);
  int listening = strcmp(argv[1], "listen") == 0;
  int net_echo = strcmp(argv[1], "net-echo") == 0;
  if (net_echo || strcmp(argv[1], "net-send") == 0) {
    snprintf(r.where, sizeof r.where, "iface=%s", argv[2]);
    arm_timeout(&r);
    signal(SIGALRM, timed_out);
    alarm(TIMEOUT_SECONDS);
    int fd = socket(AF_PACKET, SOCK_RAW, htons(NET_ETHERTYPE));
    if (fd < 0) return report(&r, "socket"), 1;
    const char *failed = net(fd, &r, argv[2], total, net_echo);
    report(&r, failed);
    return failed ? 1 : 0;
  }
  if (!listening && strcmp(argv[1], "connect") != 0) {
    fprintf(stderr, "bounce-guest: unknown mode %s\n", argv[1]);
    return 2;
  }
  unsigned port = (unsigned)strtoul(argv[2], NULL, 10);
  unsigned cid = argc == 5 ? (unsigned)strtoul(argv[4], NULL, 10) : VMADDR_CID_HOST;
  if (cid == VMADDR_CID_HOST) {
    snprintf(r.where, sizeof r.where, "port=%u", port);
  } else {
    snprintf(r.where, sizeof r.where, "port=%u cid=%u", port, cid);
  }
  arm_timeout(&r);
  signal(SIGALRM, timed_out);
  alarm(TIMEOUT_SECONDS);

  int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (fd < 0) return report(&r, "socket"), 1;
  if (listening) {
    struct sockaddr_vm me = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) return report(&r, "bind"), 1;
    if (listen(fd, 1) < 0) return report(&r, "listen"), 1;
    printf("BOUNCE-READY mode=listen port=%u\n", port);
    fflush(stdout);
    int conn = accept(fd, NULL, NULL);
    if (conn < 0) return report(&r, "accept"), 1;
    close(fd);
    fd = conn;
  } else {
    struct sockaddr_vm peer = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
    if (connect(fd, (struct sockaddr *)&peer, sizeof peer) < 0) return report(&r, "connect"), 1;
  }
  const char *failed = exchange(fd, &r, total, listening);
  report(&r, failed);
  close(fd);
  return failed ? 1 : 0;
}
