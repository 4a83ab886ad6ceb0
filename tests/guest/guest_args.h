/* Kernel command line and address parsing shared by the test guest's programs (dtcounter.c,
 * memload.c). Header-only: each program is one static binary built from one .c file. */
#ifndef NOVA_DT_GUEST_ARGS_H
#define NOVA_DT_GUEST_ARGS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Finds "KEY=value" in the kernel command line; returns 1 and copies value into out. */
static inline int cmdline_get(const char *cmdline, const char *key, char *out, size_t outlen) {
  size_t klen = strlen(key);
  const char *p = cmdline;
  while (*p) {
    while (*p == ' ' || *p == '\n' || *p == '\t') p++;
    const char *start = p;
    while (*p && *p != ' ' && *p != '\n' && *p != '\t') p++;
    size_t len = (size_t)(p - start);
    if (len > klen && strncmp(start, key, klen) == 0 && start[klen] == '=') {
      size_t vlen = len - klen - 1;
      if (vlen >= outlen) vlen = outlen - 1;
      memcpy(out, start + klen + 1, vlen);
      out[vlen] = '\0';
      return 1;
    }
  }
  return 0;
}

/* "IP:PORT" into *sa; 0 on success, -1 when malformed. */
static inline int parse_observer(const char *s, struct sockaddr_in *sa) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port <= 0 || port > 65535) return -1;
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

#endif /* NOVA_DT_GUEST_ARGS_H */
