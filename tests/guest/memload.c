/* memload: optional memory-writing workload of the nova-dt test guest (built static, started by
 * /init only when the kernel command line has dt.memload=MIB[:RATE]).
 *
 * Keeps writing a region of MIB MiB (anonymous memory, populated up front): one 64-bit word per
 * 4 KiB page, page after page, pass after pass; each write stores a value never stored in that
 * page before (pass number and page index), so every written page really changes (a hash-scan
 * dirty tracker sees it). RATE (pages per second) bounds the pace; 0 or absent = as fast as it can.
 * Runs at nice 19, so the 50 Hz dtcounter keeps its pace.
 *
 * Reports its own throughput once per second (guest CLOCK_MONOTONIC) to the observer, as one UDP
 * line (never containing "seq=", so the counter protocol is untouched):
 *   memload pages=<pages written since start> t_ms=<guest monotonic ms> pages_per_s=<last interval>
 *           mib=<region MiB> rate=<bound, 0 = none>
 * and every 10 s to the console ("memload: ...").
 *
 * Host-side testing: memload [--mib N] [--rate N] [--observer IP:PORT] [--seconds N]
 *                            [--cmdline FILE]
 * (--mib/--rate override dt.memload; --seconds ends it after N seconds, 0 = never.)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "guest_args.h"

#define PAGE 4096u
#define REPORT_NS 1000000000ull

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}


/* "MIB" or "MIB:RATE" -> *mib, *rate; -1 when malformed. */
static int parse_spec(const char *s, long *mib, long *rate) {
  char *end;
  *mib = strtol(s, &end, 10);
  *rate = 0;
  if (end == s) return -1;
  if (*end == ':') {
    const char *r = end + 1;
    *rate = strtol(r, &end, 10);
    if (end == r) return -1;
  }
  return *end == '\0' ? 0 : -1;
}

int main(int argc, char **argv) {
  const char *cmdline_path = "/proc/cmdline";
  const char *observer_arg = NULL;
  long mib = -1, rate = -1, seconds = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = atol(argv[++i]);
    else if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = atol(argv[++i]);
    else if (!strcmp(argv[i], "--observer") && i + 1 < argc) observer_arg = argv[++i];
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atol(argv[++i]);
    else if (!strcmp(argv[i], "--cmdline") && i + 1 < argc) cmdline_path = argv[++i];
    else {
      fprintf(stderr,
              "usage: memload [--mib N] [--rate PAGES_PER_S] [--observer IP:PORT] [--seconds N] "
              "[--cmdline FILE]\n");
      return 2;
    }
  }

  char cmdline[4096] = "";
  FILE *cf = fopen(cmdline_path, "r");
  if (cf) {
    size_t n = fread(cmdline, 1, sizeof cmdline - 1, cf);
    cmdline[n] = '\0';
    fclose(cf);
  }
  char spec[64] = "";
  if (cmdline_get(cmdline, "dt.memload", spec, sizeof spec)) {
    long m, r;
    if (parse_spec(spec, &m, &r) != 0) {
      fprintf(stderr, "memload: bad dt.memload '%s' (expected MIB[:RATE])\n", spec);
      return 2;
    }
    if (mib < 0) mib = m;
    if (rate < 0) rate = r;
  }
  if (rate < 0) rate = 0;
  if (mib <= 0 || mib > 65536) {
    fprintf(stderr, "memload: region size %ld MiB out of range 1..65536\n", mib);
    return 2;
  }

  char obs[128] = "";
  if (observer_arg) snprintf(obs, sizeof obs, "%s", observer_arg);
  else cmdline_get(cmdline, "dt.observer", obs, sizeof obs);
  struct sockaddr_in obs_sa;
  int sock = -1;
  if (obs[0] && parse_observer(obs, &obs_sa) == 0) sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  else if (obs[0]) fprintf(stderr, "memload: bad observer '%s', not sending reports\n", obs);

  (void)setpriority(PRIO_PROCESS, 0, 19);

  const size_t size = (size_t)mib << 20;
  const size_t pages = size / PAGE;
  volatile uint64_t *region = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (region == MAP_FAILED) {
    perror("memload: mmap");
    return 1;
  }
  fprintf(stderr, "memload: start region=%ldMiB pages=%zu rate=%ld%s observer=%s\n", mib, pages,
          rate, rate ? " pages/s" : " (unbounded)", obs[0] ? obs : "-");

  const uint64_t start = now_ns();
  const uint64_t end = seconds > 0 ? start + (uint64_t)seconds * 1000000000ull : 0;
  uint64_t total = 0, pass = 1, last_total = 0, last_t = start, next_report = start + REPORT_NS;
  unsigned reports = 0;
  size_t page = 0;
  char msg[192];
  for (;;) {
    /* How many pages this round may write: a batch when unbounded, the rate's due otherwise. */
    uint64_t batch = 4096;
    if (rate > 0) {
      uint64_t due = (uint64_t)((double)(now_ns() - start) * (double)rate / 1e9);
      batch = due > total ? due - total : 0;
      if (batch > 65536) batch = 65536;
    }
    for (uint64_t i = 0; i < batch; i++) {
      region[page * (PAGE / sizeof(uint64_t))] = (pass << 32) ^ page;
      if (++page == pages) {
        page = 0;
        pass++;
      }
    }
    total += batch;

    uint64_t t = now_ns();
    if (t >= next_report) {
      uint64_t rate_now = t > last_t ? (total - last_total) * 1000000000ull / (t - last_t) : 0;
      int len = snprintf(msg, sizeof msg,
                         "memload pages=%" PRIu64 " t_ms=%" PRIu64 " pages_per_s=%" PRIu64
                         " mib=%ld rate=%ld\n",
                         total, (uint64_t)(t / 1000000u), rate_now, mib, rate);
      if (sock >= 0)
        sendto(sock, msg, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&obs_sa, sizeof obs_sa);
      if (reports++ % 10 == 0) fprintf(stderr, "memload: %.*s\n", len - 9, msg + 8);
      last_total = total;
      last_t = t;
      next_report += REPORT_NS;
      if (next_report <= t) next_report = t + REPORT_NS; /* fell behind: no report bursts */
    }
    if (end && t >= end) break;
    if (rate > 0) {
      struct timespec ts = {0, 10 * 1000 * 1000}; /* 10 ms between rate batches */
      nanosleep(&ts, NULL);
    }
  }
  return 0;
}
