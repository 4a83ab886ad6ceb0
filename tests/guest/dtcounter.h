/* On-disk format of the dtcounter test workload, shared by the guest program (dtcounter.c) and the
 * host-side reader (dtcounter_read.c).
 *
 * The disk is an array of 512-byte sectors:
 *   sector 0                      header: the last value written (kind DT_KIND_HEADER)
 *   sector 1 + (n % DT_RING)      record of value n            (kind DT_KIND_RECORD)
 * Every sector holds one struct dt_rec; all integers are little endian (x86_64 guest and host).
 * A zeroed disk has no header: its last value is 0 and the counter starts at 1.
 */
#ifndef NOVA_DT_DTCOUNTER_H
#define NOVA_DT_DTCOUNTER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Shared with C++ test code on the host. */
#ifdef __cplusplus
#define DT_STATIC_ASSERT static_assert
#else
#define DT_STATIC_ASSERT _Static_assert
#endif

#define DT_SECTOR 512u
#define DT_RING 16384u /* records kept: sectors 1 .. 16384 (8 MiB + 512 B of the 16 MiB disk) */
#define DT_MAGIC "DTCNT001"
#define DT_KIND_HEADER 1u
#define DT_KIND_RECORD 2u

struct dt_rec {
  char magic[8];     /* "DTCNT001", no NUL */
  uint64_t value;    /* counter value */
  uint64_t boot_id;  /* random id of the dtcounter run that wrote it */
  uint64_t mono_ns;  /* guest CLOCK_MONOTONIC when written (diagnostics only) */
  uint32_t kind;     /* DT_KIND_HEADER or DT_KIND_RECORD */
  uint32_t crc;      /* crc32 (IEEE, zlib-compatible) of the bytes before this field */
  uint8_t pad[DT_SECTOR - 40];
};
DT_STATIC_ASSERT(sizeof(struct dt_rec) == DT_SECTOR, "dt_rec must be one sector");
DT_STATIC_ASSERT(offsetof(struct dt_rec, crc) == 36, "dt_rec layout");

static inline uint32_t dt_crc32(const void *data, size_t len) {
  const uint8_t *p = (const uint8_t *)data;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < len; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

static inline void dt_rec_fill(struct dt_rec *r, uint32_t kind, uint64_t value, uint64_t boot_id,
                               uint64_t mono_ns) {
  memset(r, 0, sizeof *r);
  memcpy(r->magic, DT_MAGIC, 8);
  r->value = value;
  r->boot_id = boot_id;
  r->mono_ns = mono_ns;
  r->kind = kind;
  r->crc = dt_crc32(r, offsetof(struct dt_rec, crc));
}

/* 1 = valid record of that kind, 0 = no magic (e.g. zeroed sector), -1 = magic but corrupt. */
static inline int dt_rec_check(const struct dt_rec *r, uint32_t kind) {
  if (memcmp(r->magic, DT_MAGIC, 8) != 0) return 0;
  if (r->crc != dt_crc32(r, offsetof(struct dt_rec, crc)) || r->kind != kind) return -1;
  return 1;
}

static inline uint64_t dt_record_sector(uint64_t value) { return 1u + value % DT_RING; }

#endif
