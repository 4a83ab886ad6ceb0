/* dtcounter-read: host-side reader of a dtcounter disk image (see dtcounter.h).
 *
 *   dtcounter-read DISK              prints "last=<n>" (0 for a disk without header); exit 0,
 *                                    exit 2 if the header has the magic but a bad checksum
 *   dtcounter-read DISK --has N      exit 0 if the record of value N is present with a valid
 *                                    checksum, 1 if not (a later value N + k*16384 overwrote it,
 *                                    or it was never written)
 *   dtcounter-read DISK --verbose    also prints the header's boot id and guest time
 * Exit 3 on usage or I/O errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtcounter.h"

static int read_sector(int fd, uint64_t sector, struct dt_rec *r) {
  ssize_t n = pread(fd, r, DT_SECTOR, (off_t)(sector * DT_SECTOR));
  if (n == (ssize_t)DT_SECTOR) return 0;
  if (n >= 0) memset(r, 0, sizeof *r); /* short image: treat the missing part as zeroes */
  return n >= 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  const char *disk = NULL;
  int verbose = 0, has = 0;
  uint64_t has_value = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--has") && i + 1 < argc) {
      char *end;
      has = 1;
      has_value = strtoull(argv[++i], &end, 10);
      if (*end || argv[i][0] == '\0' || argv[i][0] == '-') {
        fprintf(stderr, "dtcounter-read: bad value '%s'\n", argv[i]);
        return 3;
      }
    } else if (!strcmp(argv[i], "--verbose")) {
      verbose = 1;
    } else if (!disk && argv[i][0] != '-') {
      disk = argv[i];
    } else {
      disk = NULL;
      break;
    }
  }
  if (!disk) {
    fprintf(stderr, "usage: dtcounter-read DISK [--has N] [--verbose]\n");
    return 3;
  }
  int fd = open(disk, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "dtcounter-read: open %s: %s\n", disk, strerror(errno));
    return 3;
  }
  struct dt_rec r;
  if (has) {
    if (read_sector(fd, dt_record_sector(has_value), &r) != 0) {
      fprintf(stderr, "dtcounter-read: read: %s\n", strerror(errno));
      return 3;
    }
    int ok = dt_rec_check(&r, DT_KIND_RECORD) == 1 && r.value == has_value;
    if (verbose) {
      if (ok) printf("record=%" PRIu64 " boot=%016" PRIx64 " mono_ns=%" PRIu64 "\n", r.value,
                     r.boot_id, r.mono_ns);
      else printf("record=%" PRIu64 " absent\n", has_value);
    }
    return ok ? 0 : 1;
  }
  if (read_sector(fd, 0, &r) != 0) {
    fprintf(stderr, "dtcounter-read: read: %s\n", strerror(errno));
    return 3;
  }
  int c = dt_rec_check(&r, DT_KIND_HEADER);
  if (c < 0) {
    fprintf(stderr, "dtcounter-read: %s: header has the magic but a bad checksum\n", disk);
    return 2;
  }
  printf("last=%" PRIu64 "\n", c > 0 ? r.value : 0);
  if (verbose && c > 0) printf("boot=%016" PRIx64 "\nmono_ns=%" PRIu64 "\n", r.boot_id, r.mono_ns);
  return 0;
}
