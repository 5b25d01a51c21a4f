/*
 * vsock-guest: the program the real-VM tests run inside the Linux guest (scripts/realvm builds it
 * static for x86_64 and arm64 and puts it in the initramfs; /init runs it once per step).
 *
 *   vsock-guest connect PORT BYTES   connects to the host (CID 2) on PORT, sends BYTES of the
 *                                    pattern and reads BYTES back (the host echoes)
 *   vsock-guest listen PORT BYTES    listens on PORT, prints a READY line, accepts one connection,
 *                                    reads BYTES and echoes them as they come
 *
 * Both directions are counted and checksummed (CRC-32, as java.util.zip.CRC32) so the host can
 * check them against its own side. The lengths are fixed in advance, so neither side depends on
 * half-close. Result lines (one write each, parsed by dev.bounce.it.realvm.RealVm):
 *   BOUNCE-READY mode=listen port=P
 *   BOUNCE-RESULT mode=M port=P sent=N sent_crc=X received=N received_crc=X ok
 *   BOUNCE-RESULT mode=M port=P ... error=<what failed>: <strerror>
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define TIMEOUT_SECONDS 120

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
  unsigned port;
  uint64_t sent, received;
  uint32_t sent_crc, received_crc;
};

static void report(const struct result *r, const char *failed) {
  int error = errno; /* of the call that failed, before anything here can change it */
  char line[512];
  int n = snprintf(line, sizeof line,
                   "BOUNCE-RESULT mode=%s port=%u sent=%llu sent_crc=%08x received=%llu "
                   "received_crc=%08x",
                   r->mode, r->port, (unsigned long long)r->sent, r->sent_crc,
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

static char timeout_line[256];

static void timed_out(int signal) {
  (void)signal;
  if (write(1, timeout_line, strlen(timeout_line)) < 0) _exit(3);
  _exit(1);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: vsock-guest connect|listen PORT BYTES\n");
    return 2;
  }
  crc_init();
  struct result r = {.mode = argv[1], .port = (unsigned)strtoul(argv[2], NULL, 10)};
  uint64_t total = strtoull(argv[3], NULL, 10);
  int listening = strcmp(argv[1], "listen") == 0;
  if (!listening && strcmp(argv[1], "connect") != 0) {
    fprintf(stderr, "vsock-guest: unknown mode %s\n", argv[1]);
    return 2;
  }
  /* A step stuck in connect or accept must still end in a result line. */
  snprintf(timeout_line, sizeof timeout_line,
           "BOUNCE-RESULT mode=%s port=%u error=timeout: no progress in %d s\n", r.mode, r.port,
           TIMEOUT_SECONDS);
  signal(SIGALRM, timed_out);
  alarm(TIMEOUT_SECONDS);

  int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (fd < 0) return report(&r, "socket"), 1;
  if (listening) {
    struct sockaddr_vm me = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = r.port};
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) return report(&r, "bind"), 1;
    if (listen(fd, 1) < 0) return report(&r, "listen"), 1;
    printf("BOUNCE-READY mode=listen port=%u\n", r.port);
    fflush(stdout);
    int conn = accept(fd, NULL, NULL);
    if (conn < 0) return report(&r, "accept"), 1;
    close(fd);
    fd = conn;
  } else {
    struct sockaddr_vm host = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = r.port};
    if (connect(fd, (struct sockaddr *)&host, sizeof host) < 0) return report(&r, "connect"), 1;
  }
  const char *failed = exchange(fd, &r, total, listening);
  report(&r, failed);
  close(fd);
  return failed ? 1 : 0;
}
