/* dtcounter: the workload of the nova-dt test guest (built static, runs as a child of /init).
 *
 * Makes epochs observable from outside the guest:
 *  - continues the counter stored on the disk (header sector 0) at last + 1, with a random boot id;
 *  - every period (20 ms): re-reads the header and checks that it still holds n-1, the value this
 *    process's memory believes was written last ("the guest's own check" that disk and memory are of
 *    the same epoch, e.g. after a checkpoint restore); on a mismatch it sends
 *    "MISMATCH mem=<n-1> disk=<x>" to the observer and carries on;
 *  - writes the record of n to sector 1 + n % 16384, then the header (value n) to sector 0, both
 *    O_DIRECT|O_SYNC, and only then sends "seq=<n> boot=<id>" to the observer over UDP.
 *
 * Configuration comes from /proc/cmdline (dt.observer=IP:PORT), overridable for host-side testing:
 *   dtcounter [--dev PATH] [--observer IP:PORT] [--period-ms N] [--count N] [--cmdline FILE]
 * A missing observer only disables the datagrams.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dtcounter.h"
#include "guest_args.h"

static uint64_t now_ns(clockid_t clk) {
  struct timespec ts;
  clock_gettime(clk, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "dtcounter: %s\n", buf);
}


static int sector_io(int fd, int write_op, uint64_t sector, struct dt_rec *buf) {
  off_t off = (off_t)(sector * DT_SECTOR);
  ssize_t r = write_op ? pwrite(fd, buf, DT_SECTOR, off) : pread(fd, buf, DT_SECTOR, off);
  if (r == (ssize_t)DT_SECTOR) return 0;
  if (r >= 0) errno = EIO;
  return -1;
}

/* The header's value: the last value written, 0 for a disk without a (valid) header. */
static uint64_t header_value(int fd, struct dt_rec *buf, int *ok) {
  *ok = 1;
  if (sector_io(fd, 0, 0, buf) != 0) {
    log_line("read header: %s", strerror(errno));
    *ok = 0;
    return 0;
  }
  int c = dt_rec_check(buf, DT_KIND_HEADER);
  if (c < 0) log_line("header sector corrupt (bad crc/kind), treating as 0");
  return c > 0 ? buf->value : 0;
}

int main(int argc, char **argv) {
  const char *dev = "/dev/vda";
  const char *cmdline_path = "/proc/cmdline";
  const char *observer_arg = NULL;
  long period_ms = 20;
  uint64_t count = 0; /* 0 = forever */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dev") && i + 1 < argc) dev = argv[++i];
    else if (!strcmp(argv[i], "--observer") && i + 1 < argc) observer_arg = argv[++i];
    else if (!strcmp(argv[i], "--period-ms") && i + 1 < argc) period_ms = atol(argv[++i]);
    else if (!strcmp(argv[i], "--count") && i + 1 < argc) count = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--cmdline") && i + 1 < argc) cmdline_path = argv[++i];
    else {
      fprintf(stderr,
              "usage: dtcounter [--dev PATH] [--observer IP:PORT] [--period-ms N] [--count N] "
              "[--cmdline FILE]\n");
      return 2;
    }
  }
  if (period_ms <= 0 || period_ms > 60000) period_ms = 20;

  char cmdline[4096] = "";
  FILE *cf = fopen(cmdline_path, "r");
  if (cf) {
    size_t n = fread(cmdline, 1, sizeof cmdline - 1, cf);
    cmdline[n] = '\0';
    fclose(cf);
  }
  char obs[128] = "";
  if (observer_arg) snprintf(obs, sizeof obs, "%s", observer_arg);
  else cmdline_get(cmdline, "dt.observer", obs, sizeof obs);

  struct sockaddr_in obs_sa;
  int sock = -1;
  if (obs[0]) {
    if (parse_observer(obs, &obs_sa) == 0) sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    else log_line("bad dt.observer '%s', not sending datagrams", obs);
  } else {
    log_line("no dt.observer, not sending datagrams");
  }

  int fd = -1;
  for (int tries = 0; tries < 100; tries++) { /* the device node may appear late: wait <= 10 s */
    fd = open(dev, O_RDWR | O_DIRECT | O_SYNC | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT) break;
    usleep(100000);
  }
  if (fd < 0) {
    log_line("open %s: %s", dev, strerror(errno));
    return 1;
  }

  struct dt_rec *buf;
  if (posix_memalign((void **)&buf, 4096, DT_SECTOR) != 0) return 1;

  uint64_t boot_id = 0;
  if (getrandom(&boot_id, sizeof boot_id, GRND_NONBLOCK) != (ssize_t)sizeof boot_id)
    boot_id = now_ns(CLOCK_REALTIME) ^ (now_ns(CLOCK_MONOTONIC) << 17) ^ (uint64_t)getpid();

  int ok;
  uint64_t last = header_value(fd, buf, &ok); /* what this process believes is on disk */
  uint64_t n = last + 1;
  log_line("start dev=%s value=%" PRIu64 " boot=%016" PRIx64 " observer=%s period=%ldms", dev, n,
           boot_id, obs[0] ? obs : "-", period_ms);

  const uint64_t period = (uint64_t)period_ms * 1000000ull;
  uint64_t next = now_ns(CLOCK_MONOTONIC);
  uint64_t written = 0;
  char msg[128];
  for (;;) {
    /* The guest's own check: disk and memory must be of the same epoch. */
    uint64_t disk = header_value(fd, buf, &ok);
    if (ok && disk != last) {
      int len = snprintf(msg, sizeof msg, "MISMATCH mem=%" PRIu64 " disk=%" PRIu64 "\n", last, disk);
      log_line("%.*s", len - 1, msg);
      if (sock >= 0)
        sendto(sock, msg, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&obs_sa, sizeof obs_sa);
    }

    uint64_t mono = now_ns(CLOCK_MONOTONIC);
    dt_rec_fill(buf, DT_KIND_RECORD, n, boot_id, mono);
    int werr = sector_io(fd, 1, dt_record_sector(n), buf);
    if (werr == 0) {
      dt_rec_fill(buf, DT_KIND_HEADER, n, boot_id, mono);
      werr = sector_io(fd, 1, 0, buf);
    }
    if (werr != 0) {
      log_line("write value %" PRIu64 ": %s", n, strerror(errno));
    } else {
      last = n;
      int len = snprintf(msg, sizeof msg, "seq=%" PRIu64 " boot=%016" PRIx64 "\n", n, boot_id);
      if (sock >= 0)
        sendto(sock, msg, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&obs_sa, sizeof obs_sa);
      if (n % 500 == 0 || written == 0) log_line("value=%" PRIu64, n);
      n++;
      written++;
      if (count && written >= count) break;
    }

    next += period;
    uint64_t t = now_ns(CLOCK_MONOTONIC);
    if (next <= t) next = t + period; /* fell behind (or the clock jumped): do not burst */
    struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
                          .tv_nsec = (long)(next % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
  }
  return 0;
}
