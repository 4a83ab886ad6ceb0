#!/usr/bin/env bash
# Spike (docs/restore-spike.md): the backup host restores a checkpointed guest THROUGH ITS OWN
# libvirtd, with QEMU mapping a guest-RAM file that already holds the replica RAM.
#
# Procedure per round (source host S, destination host D; rounds alternate a->b, b->a, ...):
#   S: QMP through libvirt: migrate-set-capabilities x-ignore-shared; stop; copy RAM file + disk
#      (stand-ins for the agent's replica); getfd (file fd passed with
#      virDomainQemuMonitorCommandWithFiles) + migrate fd:NAME -> CPU/device state (~650 KB); cont.
#   S's guest keeps running (checked), then is destroyed (simulated primary failure).
#   D: replica RAM sits in D's RAM tmpfs at /var/lib/libvirt/qemu/ram/nova-dt/<uuid>.ram, armed by
#      <uuid>.arm. virDomainCreateXML(restore XML = normal XML + <qemu:commandline> -incoming defer,
#      VIR_DOMAIN_START_PAUSED). libvirt's qemu hook ("prepare begin", which already knows the domain
#      id) hard-links the replica to /var/lib/libvirt/qemu/ram/<id>-<name>/pc.ram, the path libvirt
#      then hands QEMU as mem-path. The tool checks the inode, then QMP migrate-set-capabilities
#      x-ignore-shared; getfd (device-state fd); migrate-incoming fd:NAME; query-migrate until
#      completed; virDomainResume. Then virDomainDefineXML(clean XML) makes it persistent.
# Checks: observer sees checkpoint+1 next, same boot id, contiguous, no MISMATCH; disk replica ok.
#
# Usage: tests/rig/spike-restore.sh   (root; env: RIG_NAME (default spkr), ROUNDS (default 3))
# Bounded: every step has a timeout, a watchdog ends the script after SPIKE_TIMEOUT (240 s), and
# the EXIT trap always runs `rig down`.
set -euo pipefail

export RIG_NAME="${RIG_NAME:-spkr}"
ROUNDS="${ROUNDS:-3}"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
RIG="$REPO/tests/rig/rig"
GUEST_DIR="${RIG_GUEST_DIR:-$REPO/build/guest}"
NAME=g1
UUID="$(cat /proc/sys/kernel/random/uuid)"
W="$(mktemp -d /tmp/spike-restore.XXXXXX)"
SHM="$(mktemp -d /dev/shm/spike-restore.XXXXXX)"
WATCHDOG=""

log() { echo "spike-restore: $*" >&2; }
fail() { echo "spike-restore: FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -z "$WATCHDOG" ]] || kill "$WATCHDOG" 2>/dev/null || true
  if [[ "${SPIKE_KEEP:-0}" != 1 ]]; then
    timeout 90 "$RIG" down >/dev/null 2>&1 || echo "spike-restore: WARNING: rig down failed" >&2
    rm -rf "$W" "$SHM"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# watchdog (its sleep dies with it, so no stray process keeps the caller's pipes open)
bash -c 'sleep "$1" & s=$!; trap "kill $s; exit 0" TERM; wait $s || exit 0
  echo "spike-restore: watchdog: timeout after $1 s" >&2; kill -TERM "$2"' _ "${SPIKE_TIMEOUT:-240}" $$ &
WATCHDOG=$!

[[ $EUID == 0 ]] || fail "must run as root"
[[ -f "$GUEST_DIR/vmlinux" && -x "$GUEST_DIR/dtcounter-read" ]] || fail "no test guest in $GUEST_DIR"

# ---------------------------------------------------------------------------------------------
# The agent stand-in: libvirt C API + QMP pass-through with file descriptors.
cat >"$W/rtool.c" <<'EOF'
#define _GNU_SOURCE
#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void die(const char *m) { virErrorPtr e = virGetLastError(); fprintf(stderr, "rtool: %s: %s\n", m, e ? e->message : "?"); exit(1); }
/* One QMP command through libvirt; fd >= 0 is passed along (SCM_RIGHTS) for getfd. */
static char *qmp(virDomainPtr d, const char *cmd, int fd) {
  char *res = NULL; int fds[1] = {fd}; unsigned int n = fd >= 0;
  if (virDomainQemuMonitorCommandWithFiles(d, cmd, n, n ? fds : NULL, NULL, NULL, &res, 0) < 0) die(cmd);
  if (strstr(res, "\"error\"")) { fprintf(stderr, "rtool: QMP %s -> %s\n", cmd, res); exit(1); }
  return res;
}
static void wait_migrate(virDomainPtr d) {
  for (int i = 0; i < 10000; i++) { /* <= ~10 s */
    char *r = qmp(d, "{\"execute\":\"query-migrate\"}", -1);
    int done = strstr(r, "\"completed\"") != NULL, bad = strstr(r, "\"failed\"") || strstr(r, "\"cancelled\"");
    if (bad) { fprintf(stderr, "rtool: migration failed: %s\n", r); exit(1); }
    free(r);
    if (done) return;
    usleep(1000);
  }
  fprintf(stderr, "rtool: migration did not complete\n"); exit(1);
}
static void copyfile(const char *src, const char *dst) {
  static char buf[1 << 20]; ssize_t n;
  int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (in < 0 || out < 0) { perror(in < 0 ? src : dst); exit(1); }
  while ((n = read(in, buf, sizeof buf)) > 0) if (write(out, buf, n) != n) { perror(dst); exit(1); }
  close(in); close(out);
}
static char *slurp(const char *p) {
  FILE *f = fopen(p, "r"); if (!f) { perror(p); exit(1); }
  char *b = calloc(1, 1 << 20); size_t n = fread(b, 1, (1 << 20) - 1, f); b[n] = 0; fclose(f); return b;
}
static const char *CAPS = "{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":"
                          "[{\"capability\":\"x-ignore-shared\",\"state\":true}]}}";

int main(int argc, char **argv) {
  virConnectPtr c = virConnectOpen("qemu:///system"); if (!c) die("connect");
  if (argc == 8 && !strcmp(argv[1], "checkpoint")) { /* DOM DEVOUT RAMSRC RAMDST DISKSRC DISKDST */
    virDomainPtr d = virDomainLookupByName(c, argv[2]); if (!d) die("lookup");
    int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0600); if (fd < 0) { perror(argv[3]); return 1; }
    free(qmp(d, CAPS, -1));
    double t0 = now();
    free(qmp(d, "{\"execute\":\"stop\"}", -1));
    double t1 = now();
    copyfile(argv[4], argv[5]);
    copyfile(argv[6], argv[7]);
    double t2 = now();
    free(qmp(d, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"dtsave\"}}", fd));
    close(fd);
    free(qmp(d, "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"fd:dtsave\"}}", -1));
    wait_migrate(d);
    double t3 = now();
    free(qmp(d, "{\"execute\":\"cont\"}", -1));
    double t4 = now();
    struct stat sb; stat(argv[3], &sb);
    printf("checkpoint: stop %.1f ms, copy ram+disk %.1f ms, device state %.1f ms (%lld bytes), cont %.1f ms\n",
           (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (long long)sb.st_size, (t4 - t3) * 1e3);
    printf("t_cont=%.6f\n", t3); /* before cont: the guest may send before libvirt returns the reply */
    return 0;
  }
  if (argc == 6 && !strcmp(argv[1], "restore")) { /* RESTOREXML DEVIN REPLICA_RAM CLEANXML */
    char *xml = slurp(argv[2]), *clean = slurp(argv[5]);
    int fd = open(argv[3], O_RDONLY); if (fd < 0) { perror(argv[3]); return 1; }
    struct stat rep; if (stat(argv[4], &rep) < 0) { perror(argv[4]); return 1; }
    double t0 = now();
    virDomainPtr d = virDomainCreateXML(c, xml, VIR_DOMAIN_START_PAUSED);
    if (!d) die("virDomainCreateXML");
    double t1 = now();
    /* QEMU must have mapped OUR replica: libvirt's mem-path is ram/<id>-<name (<=20 chars)>/pc.ram */
    char path[512]; struct stat mp;
    snprintf(path, sizeof path, "/var/lib/libvirt/qemu/ram/%u-%.20s/pc.ram", virDomainGetID(d), virDomainGetName(d));
    if (stat(path, &mp) < 0 || mp.st_ino != rep.st_ino || mp.st_dev != rep.st_dev) {
      fprintf(stderr, "rtool: %s is not the replica RAM file; destroying\n", path);
      virDomainDestroy(d); return 1;
    }
    free(qmp(d, CAPS, -1));
    free(qmp(d, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"dtload\"}}", fd));
    close(fd);
    free(qmp(d, "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"fd:dtload\"}}", -1));
    wait_migrate(d);
    double t2 = now();
    if (virDomainResume(d) < 0) die("virDomainResume");
    double t3 = now();
    virDomainPtr p = virDomainDefineXML(c, clean); /* persistent again, without the restore-only args */
    if (!p) die("virDomainDefineXML");
    int st = -1, rs = -1; virDomainGetState(d, &st, &rs, 0);
    printf("restore: id %u, create(paused,incoming) %.1f ms, device state %.1f ms, resume %.1f ms, start->running %.1f ms, state=%d persistent=%d\n",
           virDomainGetID(d), (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3, st, virDomainIsPersistent(d));
    printf("t_restore_start=%.6f\nt_running=%.6f\n", t0, t3);
    return 0;
  }
  fprintf(stderr, "usage: rtool checkpoint DOM DEVOUT RAMSRC RAMDST DISKSRC DISKDST | restore RESTOREXML DEVIN REPLICA_RAM CLEANXML\n");
  return 2;
}
EOF
gcc -O2 -Wall -o "$W/rtool" "$W/rtool.c" -lvirt -lvirt-qemu || fail "cannot build rtool (libvirt-dev?)"

# libvirt qemu hook: at "prepare begin" the domain XML on stdin already carries id='N', and
# libvirt has not yet created ram/<id>-<name>/; link the armed replica there. Fast, fs-only.
cat >"$W/hook-qemu" <<'EOF'
#!/bin/sh
[ "$2" = prepare ] && [ "$3" = begin ] || exit 0
xml=$(cat)
store=/var/lib/libvirt/qemu/ram/nova-dt
id=$(printf '%s\n' "$xml" | sed -n "1s/^<domain [^>]* id='\([0-9]*\)'.*/\1/p")
uuid=$(printf '%s\n' "$xml" | sed -n 's|^ *<uuid>\(.*\)</uuid>.*|\1|p' | head -n1)
[ -n "$id" ] && [ -n "$uuid" ] && [ -f "$store/$uuid.arm" ] || exit 0
short=$(printf '%.20s' "$1")
dir="/var/lib/libvirt/qemu/ram/$id-$short"
# QEMU runs as libvirt-qemu: the directory as libvirt would make it (the replica RAM is its already)
mkdir -m 0700 -p "$dir" && chown libvirt-qemu:libvirt-qemu "$dir" &&
  ln -f "$store/$uuid.ram" "$dir/pc.ram" && rm -f "$store/$uuid.arm" || exit 1
echo "$(date +%s.%N) hook: linked $store/$uuid.ram -> $dir/pc.ram" >>"$HOOK_LOG_DIR/hook.log"
EOF
sed -i "s|\$HOOK_LOG_DIR|$W|" "$W/hook-qemu"
chmod +x "$W/hook-qemu"
# libvirtd reads the hook directory at start: install the hook inside each host, then exec libvirtd.
cat >"$W/libvirtd-wrap" <<EOF
#!/bin/sh
mkdir -p /etc/libvirt/hooks && cp "$W/hook-qemu" /etc/libvirt/hooks/qemu
exec libvirtd "\$@"
EOF
chmod +x "$W/libvirtd-wrap"

# ---------------------------------------------------------------------------------------------
log "rig up ($RIG_NAME)"
RIG_LIBVIRTD="$W/libvirtd-wrap" timeout 120 "$RIG" up >/dev/null 2>"$W/up.err" || { cat "$W/up.err" >&2; fail "rig up"; }
RIG_DIR="$(cat "/run/nova-dt-rig/$RIG_NAME.dir")"
OBS="$RIG_DIR/observer.log"
timeout 30 "$RIG" observer start >/dev/null 2>&1 || fail "observer"

# Burn domain ids on b so the restored domain's id (and so its RAM path) is not predictable.
timeout 60 "$RIG" boot-guest b junk >/dev/null 2>&1 && timeout 30 "$RIG" virsh b destroy junk >/dev/null || true
timeout 60 "$RIG" boot-guest b junk2 >/dev/null 2>&1 && timeout 30 "$RIG" virsh b destroy junk2 >/dev/null || true

timeout 60 "$RIG" boot-guest a "$NAME" "$UUID" >/dev/null 2>&1 || fail "boot guest on a"

for h in a b; do
  "$RIG" guest-xml "$h" "$NAME" "$UUID" >"$W/clean-$h.xml"
  sed -e "s|<domain type='qemu'>|<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>|" \
      -e "s|</domain>|  <qemu:commandline>\n    <qemu:arg value='-incoming'/>\n    <qemu:arg value='defer'/>\n  </qemu:commandline>\n</domain>|" \
      "$W/clean-$h.xml" >"$W/restore-$h.xml"
done

# observer lines after unix time $1: "time seq boot"
obs_after() { awk -v t="$1" '$1 > t { split($3, s, "="); split($4, b, "="); print $1, s[2], b[2] }' "$OBS"; }
wait_obs() { # wait_obs T COUNT TIMEOUT_S: until COUNT values arrived after T
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    (($(obs_after "$1" | wc -l) >= $2)) && return 0
    sleep 0.05
  done
  return 1
}

wait_obs 0 20 20 || fail "no values from the guest on a"
BOOT="$(obs_after 0 | tail -n1 | cut -d' ' -f3)"
log "guest $NAME ($UUID) running on a, boot id $BOOT"

src=a dst=b
for ((r = 1; r <= ROUNDS; r++)); do
  sleep 1
  sid="$(timeout 10 "$RIG" virsh "$src" domid "$NAME" | tr -d '[:space:]')"
  # --- checkpoint on the source (guest paused for the whole capture, then continues)
  out="$(timeout 60 "$RIG" exec "$src" "$W/rtool" checkpoint "$NAME" "$SHM/dev.bin" \
    "/var/lib/libvirt/qemu/ram/$sid-$NAME/pc.ram" "$SHM/ram.img" \
    "/var/lib/libvirt/images/$NAME.raw" "$SHM/disk.raw")" || fail "checkpoint on $src"
  ck_line="$(grep '^checkpoint' <<<"$out")"
  t_cont="$(sed -n 's/^t_cont=//p' <<<"$out")"
  ck="$("$GUEST_DIR/dtcounter-read" "$SHM/disk.raw" | sed -n 's/^last=//p')"
  wait_obs "$t_cont" 10 10 || fail "guest on $src did not continue after the checkpoint"
  after="$(obs_after "$t_cont" | head -n1 | cut -d' ' -f2)"
  # The guest writes n to its disk and only then sends it: a pause between the two leaves n on the
  # disk but unsent, and the guest sends n right after cont (as tests/integration/restore_test.cc
  # allows). Either way the checkpoint fixes the next value: the restored guest must send it first.
  ((after == ck || after == ck + 1)) || { awk -v t="$t_cont" '$1 > t - 1 && $1 < t + 0.2' "$OBS" >&2; echo "t_cont=$t_cont $out" >&2
    fail "source continued with $after, expected $ck or $((ck + 1))"; }
  next=$after
  # --- replica onto the destination (not timed: the agent keeps it there all along)
  cp --sparse=never "$SHM/disk.raw" "$RIG_DIR/$dst/lib/images/$NAME.raw"
  timeout 60 "$RIG" exec "$dst" sh -ec "mkdir -p /var/lib/libvirt/qemu/ram/nova-dt
    cp '$SHM/ram.img' /var/lib/libvirt/qemu/ram/nova-dt/$UUID.ram
    chown libvirt-qemu:libvirt-qemu /var/lib/libvirt/qemu/ram/nova-dt/$UUID.ram
    chmod 0600 /var/lib/libvirt/qemu/ram/nova-dt/$UUID.ram
    touch /var/lib/libvirt/qemu/ram/nova-dt/$UUID.arm" || fail "staging replica on $dst"
  # --- primary failure
  timeout 30 "$RIG" virsh "$src" destroy "$NAME" >/dev/null || fail "destroy on $src"
  last_src="$(obs_after "$t_cont" | tail -n1 | cut -d' ' -f2)"
  sleep 0.3
  # --- restore on the destination through its libvirtd
  rout="$(timeout 60 "$RIG" exec "$dst" "$W/rtool" restore "$W/restore-$dst.xml" "$SHM/dev.bin" \
    "/var/lib/libvirt/qemu/ram/nova-dt/$UUID.ram" "$W/clean-$dst.xml")" || fail "restore on $dst"
  t0="$(sed -n 's/^t_restore_start=//p' <<<"$rout")"
  t_run="$(sed -n 's/^t_running=//p' <<<"$rout")"
  wait_obs "$t0" 50 10 || fail "no values from the restored guest on $dst"
  first="$(obs_after "$t0" | head -n1)"
  fval="$(cut -d' ' -f2 <<<"$first")" fboot="$(cut -d' ' -f3 <<<"$first")" ftime="$(cut -d' ' -f1 <<<"$first")"
  ((fval == next)) || fail "restored guest continued with $fval, expected $next"
  [[ "$fboot" == "$BOOT" ]] || fail "boot id changed ($fboot != $BOOT): the guest rebooted"
  obs_after "$t0" | head -n50 | awk -v s="$((next - 1))" '{ if ($2 != s + NR) { print "gap at " $2; exit 1 } }' ||
    fail "values after the restore are not contiguous"
  awk -v t="$t0" '$1 > t && /MISMATCH/ { bad = 1 } END { exit bad }' "$OBS" || fail "guest reported MISMATCH"
  ms_run="$(awk -v a="$t0" -v b="$t_run" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"
  ms_first="$(awk -v a="$t0" -v b="$ftime" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"
  echo "round $r $src->$dst: checkpoint value $ck (source went on to $last_src before it was destroyed)"
  echo "  $ck_line"
  echo "  $(grep '^restore' <<<"$rout")"
  echo "  start->running ${ms_run} ms, start->first new value ${ms_first} ms (value $fval, same boot id, 50 contiguous, no MISMATCH)"
  timeout 10 "$RIG" exec "$dst" rm -f "/var/lib/libvirt/qemu/ram/nova-dt/$UUID.ram"
  tmp="$src" src="$dst" dst="$tmp"
done
echo "hook log:"; sed 's/^/  /' "$W/hook.log"
echo "PASS: $ROUNDS restores through libvirt from a pre-filled RAM file + device state"
