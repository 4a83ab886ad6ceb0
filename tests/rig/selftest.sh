#!/usr/bin/env bash
# Self-test of the two-host rig and the test guest (non-interactive, as root; ~1-2 minutes).
#
#   tests/rig/selftest.sh            (RIG_NAME default "ndtst"; RIG_GUEST_DIR default build/guest)
#
#  1. a `rig up` killed (SIGKILL, whole process group) half way, then `rig down`: nothing left;
#  2. a `rig up` that fails (bad --netem): it tears itself down, nothing left;
#  3. `rig up`, observer, test guest booted on host a through a's libvirtd: the observer receives
#     an increasing counter within 15 s (the boot-to-first-value time is printed), QMP
#     query-status answers through `rig exec a virsh qemu-monitor-command`, the guest RAM file
#     exists under a's private /var/lib/libvirt/qemu/ram/, the disk holds what the observer saw;
#     then `rig down`: nothing left;
#  4. `rig up --netem "delay 20ms"`: hosts a and b reach each other with the delay; `rig down`:
#     nothing left.
# "Nothing left": no namespace of the rig, no mount under RIG_DIR (/proc/self/mountinfo), no
# process in the rig's namespaces or naming RIG_DIR, no RIG_DIR.
# A trap always runs `rig down`. Exits non-zero with the reason on the first failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export RIG_NAME="${RIG_NAME:-ndtst}"
export RIG_DIR="${RIG_DIR:-/tmp/nova-dt-rig-$RIG_NAME}"
export RIG_GUEST_DIR="${RIG_GUEST_DIR:-$repo/build/guest}"
rig="$here/rig"
guest=dtst
t_start=$(date +%s)

say() { echo "selftest[$(($(date +%s) - t_start))s]: $*"; }
fail() {
  echo "selftest: FAIL: $*" >&2
  # diagnostics before the trap's `rig down` removes them
  local f
  for f in "$RIG_DIR/a/libvirtd.out" "$RIG_DIR/a/log/libvirtd.log" \
    "$RIG_DIR/a/log/$guest-console.log" "$RIG_DIR/a/log/qemu/$guest.log" "$RIG_DIR/observer.out"; do
    if [[ -s "$f" ]]; then echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; fi
  done
  exit 1
}
cleanup() {
  local rc=$?
  trap - EXIT
  "$rig" down >/dev/null 2>&1 || "$rig" down || true
  if ((rc == 0)); then echo "selftest: PASS (all checks, $(($(date +%s) - t_start)) s)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

[[ $EUID == 0 ]] || fail "must run as root"

# Namespace inodes of the running rig (for the "no process left" check after down).
ns_inodes() {
  local f
  for f in "/run/netns/$RIG_NAME-net" "/run/netns/$RIG_NAME-a" "/run/netns/$RIG_NAME-b" \
    "$RIG_DIR/a/mntns" "$RIG_DIR/b/mntns"; do
    if [[ "$(stat -f -c %T "$f" 2>/dev/null)" == nsfs ]]; then stat -L -c %i "$f"; fi
  done
}

assert_gone() { # assert_gone WHAT "INODES"
  local what="$1" inodes="$2" n i
  for n in "$RIG_NAME-net" "$RIG_NAME-a" "$RIG_NAME-b"; do
    if ip netns list | awk '{print $1}' | grep -qx "$n"; then fail "$what: network namespace $n left"; fi
    [[ ! -e "/run/netns/$n" ]] || fail "$what: /run/netns/$n left"
  done
  if grep -qF "$RIG_DIR" /proc/self/mountinfo; then
    fail "$what: mounts left: $(grep -F "$RIG_DIR" /proc/self/mountinfo)"
  fi
  [[ ! -e "$RIG_DIR" ]] || fail "$what: $RIG_DIR left"
  [[ ! -e "/run/nova-dt-rig/$RIG_NAME.dir" ]] || fail "$what: /run/nova-dt-rig/$RIG_NAME.dir left"
  # processes: by namespace (any thread), and by command line naming RIG_DIR (not zombies)
  local left=""
  if [[ -n "${inodes// /}" ]]; then
    left="$( { stat -L -c '%n %i' /proc/[0-9]*/task/[0-9]*/ns/net /proc/[0-9]*/task/[0-9]*/ns/mnt 2>/dev/null || true; } |
      awk -v inos=" $inodes " 'index(inos, " " $2 " ") { split($1, f, "/"); print f[3] }' | sort -u | tr '\n' ' ')"
  fi
  for i in /proc/[0-9]*; do
    [[ "$i" == "/proc/$$" || "$i" == "/proc/$BASHPID" ]] && continue
    if tr '\0' ' ' 2>/dev/null <"$i/cmdline" | grep -qF "$RIG_DIR"; then left+="${i#/proc/} "; fi
  done
  [[ -z "${left// /}" ]] || fail "$what: processes left: $left ($(ps -o pid,stat,args -p "${left// /,}" 2>/dev/null | tail -n +2))"
  say "$what: nothing left (namespaces, mounts, processes, $RIG_DIR)"
}

# --- 0. the guest ---------------------------------------------------------------------------
"$repo/scripts/build-test-guest" "$RIG_GUEST_DIR" >/dev/null 2>&1 ||
  "$repo/scripts/build-test-guest" "$RIG_GUEST_DIR" || fail "scripts/build-test-guest failed"
reader="$RIG_GUEST_DIR/dtcounter-read"
"$rig" down >/dev/null 2>&1 || true # a leftover of an earlier, killed run

# --- 1. killed half-up ----------------------------------------------------------------------
say "1: rig up, killed with SIGKILL half way"
# (started from a subshell, so this shell does not report the job's death)
up_pid="$( (setsid "$rig" up >"/tmp/nova-dt-selftest-$RIG_NAME.log" 2>&1 </dev/null & echo $!) )"
for ((i = 0; i < 100; i++)); do # until the mount namespaces exist (libvirtd is starting), <= 10 s
  [[ "$(stat -f -c %T "$RIG_DIR/b/mntns" 2>/dev/null)" == nsfs ]] && break
  sleep 0.1
done
sleep 1
inodes="$(ns_inodes | tr '\n' ' ')"
[[ -n "${inodes// /}" ]] || fail "1: the killed rig up never created its namespaces: $(cat "/tmp/nova-dt-selftest-$RIG_NAME.log")"
kill -KILL -- "-$up_pid" 2>/dev/null || fail "1: rig up had already finished (could not kill it half way)"
for ((i = 0; i < 50; i++)); do [[ -e "/proc/$up_pid" ]] || break; sleep 0.1; done
rm -f "/tmp/nova-dt-selftest-$RIG_NAME.log"
"$rig" down || fail "1: rig down after a killed up failed"
assert_gone "1" "$inodes"

# --- 2. failed up -----------------------------------------------------------------------------
say "2: rig up with a bad --netem must fail and clean up after itself"
if "$rig" up --netem "bogus 1" >/dev/null 2>&1; then fail "2: rig up --netem 'bogus 1' succeeded"; fi
assert_gone "2" ""

# --- 3. the full sequence with the guest --------------------------------------------------------
say "3: rig up + observer + guest on host a"
"$rig" up || fail "3: rig up failed"
inodes="$(ns_inodes | tr '\n' ' ')"
"$rig" observer start || fail "3: observer start failed"
t0=$(date +%s.%N)
"$rig" boot-guest a "$guest" >/dev/null || fail "3: boot-guest failed"
first=""
for ((i = 0; i < 150; i++)); do # <= 15 s
  first="$("$rig" observer values | head -n1)"
  [[ -n "$first" ]] && break
  sleep 0.1
done
[[ -n "$first" ]] || fail "3: no counter value at the observer within 15 s of the guest's start"
t_first="$(awk '/ seq=/ {print $1; exit}' "$("$rig" observer path)")"
boot_s="$(awk -v a="$t0" -v b="$t_first" 'BEGIN { printf "%.2f", b - a }')"
say "3: boot-to-first-counter-value: $boot_s s (first value $first)"
[[ "$first" == 1 ]] || fail "3: first value is $first, expected 1 on a fresh disk"
for ((i = 0; i < 100; i++)); do # 50 values (~1 s), <= 10 s
  (($("$rig" observer values | wc -l) >= 50)) && break
  sleep 0.1
done
values="$("$rig" observer values)"
n="$(wc -l <<<"$values")"
((n >= 50)) || fail "3: only $n values after 10 s"
awk 'NR > 1 && $1 != prev + 1 { print "gap/disorder after " prev ": " $1; bad = 1 } { prev = $1 } END { exit bad }' \
  <<<"$values" || fail "3: the counter is not strictly increasing by 1: $(head -c 300 <<<"$values" | tr '\n' ' ')"
boots="$(awk '/ seq=/ { sub(/.*boot=/, ""); print }' "$("$rig" observer path)" | sort -u | wc -l)"
((boots == 1)) || fail "3: $boots different boot ids (the guest restarted?)"
! grep -q MISMATCH "$("$rig" observer path)" || fail "3: the guest reported a MISMATCH"
say "3: observer received $n values 1..$(tail -n1 <<<"$values"), increasing by 1, one boot id"

qmp="$("$rig" exec a virsh qemu-monitor-command "$guest" '{"execute":"query-status"}')" ||
  fail "3: qemu-monitor-command failed"
grep -q '"running":true' <<<"${qmp// /}" || fail "3: unexpected query-status answer: $qmp"
say "3: QMP query-status: $qmp"

ram="$("$rig" exec a find /var/lib/libvirt/qemu/ram -name pc.ram -size +1M)"
[[ -n "$ram" ]] || fail "3: no guest RAM file under a's /var/lib/libvirt/qemu/ram"
[[ ! -e "$ram" ]] || fail "3: $ram is visible outside host a's mount namespace"
[[ -z "$("$rig" exec b find /var/lib/libvirt/qemu/ram -name pc.ram)" ]] || fail "3: host b sees a RAM file"
say "3: guest RAM file $ram (private to host a)"

# QEMU runs as on a real Debian compute host: as libvirt-qemu, its RAM and disk given to it, the
# kernel booted from the rig's copy (README "Each host").
qemu_pid="$(cat "$RIG_DIR/a/run/qemu/$guest.pid")"
qemu_user="$(ps -o user= -p "$qemu_pid")"
[[ "$qemu_user" == libvirt-qemu ]] || fail "3: QEMU runs as '$qemu_user', expected libvirt-qemu"
ram_owner="$("$rig" exec a stat -c %U "$ram")"
[[ "$ram_owner" == libvirt-qemu ]] || fail "3: $ram belongs to $ram_owner, expected libvirt-qemu"
disk_owner="$(stat -c %U "$RIG_DIR/a/lib/images/$guest.raw")"
[[ "$disk_owner" == libvirt-qemu ]] || fail "3: the disk belongs to $disk_owner (no dynamic ownership?)"
# Captured first: `virsh ... | grep -q` fails under pipefail when grep exits before virsh writes all.
xml="$("$rig" virsh a dumpxml "$guest")" || fail "3: virsh dumpxml failed"
grep -q "<kernel>$RIG_DIR/boot/" <<<"$xml" || fail "3: the guest does not boot the rig's copy of the kernel"
say "3: QEMU (pid $qemu_pid) runs as libvirt-qemu; RAM file and disk are libvirt-qemu's"

disk="$RIG_DIR/a/lib/images/$guest.raw"
last_seen="$(tail -n1 <<<"$values")"
"$reader" "$disk" --has "$last_seen" || fail "3: record $last_seen (seen by the observer) is not on the disk"
last_disk="$("$reader" "$disk" | sed -n 's/^last=//p')"
((last_disk >= last_seen)) || fail "3: disk header $last_disk < last value seen $last_seen"
say "3: disk header last=$last_disk, record $last_seen present"

"$rig" exec a busybox ping -c 1 -W 2 198.18.0.2 >/dev/null || fail "3: host a cannot reach host b"
"$rig" exec b busybox ping -c 1 -W 2 198.18.0.50 >/dev/null || fail "3: host b cannot reach the guest"

"$rig" down || fail "3: rig down failed"
assert_gone "3" "$inodes"

# --- 4. netem -------------------------------------------------------------------------------
say "4: rig up --netem 'delay 20ms'"
"$rig" up --netem "delay 20ms" || fail "4: rig up --netem failed"
inodes="$(ns_inodes | tr '\n' ' ')"
rtt="$("$rig" exec a busybox ping -c 3 -i 0.3 -W 2 198.18.0.2 | sed -n 's#.*= [0-9.]*/\([0-9.]*\)/.*#\1#p')"
[[ -n "$rtt" ]] || fail "4: host a cannot reach host b through the delayed links"
# a -> b crosses a's and b's links: 2 x 20 ms each way
awk -v r="$rtt" 'BEGIN { exit !(r >= 75 && r < 200) }' || fail "4: RTT a<->b is $rtt ms, expected ~80"
"$rig" netem a clear || fail "4: netem clear a failed"
"$rig" netem b clear || fail "4: netem clear b failed"
rtt2="$("$rig" exec a busybox ping -c 2 -i 0.3 -W 2 198.18.0.2 | sed -n 's#.*= [0-9.]*/\([0-9.]*\)/.*#\1#p')"
awk -v r="${rtt2:-999}" 'BEGIN { exit !(r < 20) }' || fail "4: RTT after netem clear is ${rtt2:-none} ms"
say "4: RTT a<->b with delay 20ms per link: $rtt ms; after clear: $rtt2 ms"
"$rig" down || fail "4: rig down failed"
assert_gone "4" "$inodes"
