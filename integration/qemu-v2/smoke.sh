#!/bin/sh
# Stage 2 of the VM (busybox sh, pid 1 on a tmpfs root, pure cgroup v2):
# the cgroup v2 smoke checks, through the real buildcell binary. Prints
# `PASS name`, `FAIL name (detail)`, `GAP name (detail)` (a known limitation,
# not counted) and finally `SMOKE-DONE passed=N failed=M`, then powers off.
# run.sh on the host parses these lines from the serial console.
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo 3 > /proc/sys/kernel/printk # keep kernel messages (OOM reports) off the console

# busybox timeout execs the command itself: its exit status is kept
BC="timeout 60 buildcell --root /run/buildcell"
CG=/sys/fs/cgroup
B=/bundles
passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1 ($2)"; failed=$((failed + 1)); }
# check NAME DETAIL CONDITION...: PASS when the condition holds
check() {
  name=$1 detail=$2
  shift 2
  if "$@"; then pass "$name"; else fail "$name" "$detail"; fi
}
# cat a cgroup file, "<missing>" when absent
rd() { cat "$1" 2>/dev/null | tr '\n' ' ' | sed 's/ $//' || true; [ -e "$1" ] || printf '<missing>'; }
status() { $BC state "$1" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }
# wait_for SECONDS COMMAND...: poll every 0.1 s
wait_for() {
  n=$(($1 * 10))
  shift
  while [ "$n" -gt 0 ]; do
    "$@" && return 0
    sleep 0.1
    n=$((n - 1))
  done
  return 1
}
cleanup() { $BC delete --force "$1" >/dev/null 2>&1 || true; }
# Each section says when it starts: if the guest stops answering, the last
# INFO line on the console names the section it stopped in.
section() { echo "INFO section $1, up $(cut -d' ' -f1 /proc/uptime)s"; }

echo # the console line SeaBIOS left unterminated
echo "INFO kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime)s, cgroup2 controllers: $(cat $CG/cgroup.controllers)"
if grep -q ' cgroup ' /proc/mounts || [ ! -e $CG/cgroup.controllers ]; then
  fail layout "not a pure cgroup v2 VM: $(grep cgroup /proc/mounts | tr '\n' ';')"
fi

# --- (0) looks-like-root on this kernel ------------------------------------
section "(0) looks-like-root on this kernel"
# A root bundle without a user namespace gets one by default, and needs an
# idmapped rootfs. This VM's root is a tmpfs, which has idmapped mounts only
# from Linux 6.3 (Debian 12's kernel is 6.1): the default is refused there
# in one line naming tmpfs, and the cgroup v2 checks below run as runc runs
# them (container root = host root), under the VM's profile smoke-no-userns
# (engine-compat without a required user namespace; see run.sh).
kv=$(uname -r | sed 's/^\([0-9]*\)\.\([0-9]*\).*/\1 \2/')
set -- $kv
if [ "$1" -lt 6 ] || { [ "$1" = 6 ] && [ "$2" -lt 3 ]; }; then
  out=$($BC run --bundle $B/oom llr 2>&1)
  rc=$?
  refused() {
    [ "$rc" = 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] &&
      case $out in *"is on tmpfs"*user_namespace*) true ;; *) false ;; esac
  }
  check looks-like-root-refused-on-tmpfs "rc $rc: $out" refused
fi
BC0=$BC
BC="$BC --profile smoke-no-userns"

# --- (1) memory limit + OOM: exit 137 -------------------------------------
section "(1) memory limit + OOM: exit 137"
ooms() { sed -n 's/^oom_kill //p' /proc/vmstat; }
oom_before=$(ooms)
$BC run --bundle $B/oom oom >/tmp/oom.out 2>&1
rc=$?
check oom-exit-137 "run exited $rc, want 137: $(tail -n 3 /tmp/oom.out | tr '\n' ' ')" [ "$rc" = 137 ]
check oom-killed "oom_kill in /proc/vmstat: $oom_before before, $(ooms) after" [ "$(ooms)" -gt "$oom_before" ]
check run-removes-cgroup "$CG/smoke/oom still exists after run" [ ! -d $CG/smoke/oom ]

# --- (2) pids limit: fork fails; limits visible in the cgroup -------------
section "(2) pids limit: fork fails; limits visible in the cgroup"
d=$CG/smoke/pids
if $BC create --bundle $B/pids pids >/tmp/pids.out 2>&1 && $BC start pids >>/tmp/pids.out 2>&1; then
  wait_for 30 grep -q loop-ended /tmp/pids.out
  check pids-fork-refused "container output: $(tr '\n' ' ' </tmp/pids.out)" grep -qi "fork" /tmp/pids.out
  ev=$(sed -n 's/^max //p' $d/pids.events 2>/dev/null)
  check pids-events-max "pids.events: $(rd $d/pids.events)" [ "${ev:-0}" -ge 1 ]
  cur=$(cat $d/pids.current 2>/dev/null)
  check pids-current-capped "pids.current=${cur:-<missing>}" [ "${cur:-99}" -le 10 ]
  check pids-max-10 "pids.max=$(rd $d/pids.max)" [ "$(rd $d/pids.max)" = 10 ]
  check pids-memory-max "memory.max=$(rd $d/memory.max), want 67108864" [ "$(rd $d/memory.max)" = 67108864 ]
else
  fail pids-create "$(tr '\n' ' ' </tmp/pids.out)"
fi
cleanup pids

# --- (3) cpu shares -> cpu.weight, quota/period -> cpu.max, cpuset --------
section "(3) cpu shares -> cpu.weight, quota/period -> cpu.max, cpuset"
d=$CG/smoke/cpu
if $BC create --bundle $B/cpu cpu >/tmp/cpu.out 2>&1; then
  check cpu-weight "cpu.weight=$(rd $d/cpu.weight), want 20 (shares 512)" [ "$(rd $d/cpu.weight)" = 20 ]
  check cpu-max "cpu.max=$(rd $d/cpu.max), want '50000 100000'" [ "$(rd $d/cpu.max)" = "50000 100000" ]
  check cpuset-cpus "cpuset.cpus=$(rd $d/cpuset.cpus), want 0" [ "$(rd $d/cpuset.cpus)" = 0 ]
  check controllers-enabled "smoke/cgroup.subtree_control=$(rd $CG/smoke/cgroup.subtree_control)" \
    sh -c "for c in cpu cpuset memory pids; do grep -qw \$c $CG/smoke/cgroup.subtree_control || exit 1; done"
else
  fail cpu-create "$(tr '\n' ' ' </tmp/cpu.out)"
fi
cleanup cpu

# --- (4) pause/resume, (5) update, (8) kill --all, (7) delete -------------
section "(4) pause/resume, (5) update, (8) kill --all, (7) delete"
d=$CG/smoke/multi
if $BC create --bundle $B/multi multi >/tmp/multi.out 2>&1 && $BC start multi >>/tmp/multi.out 2>&1; then
  nprocs() { wc -l <$d/cgroup.procs; }
  wait_for 10 sh -c "[ \$(wc -l <$d/cgroup.procs) -ge 3 ]"
  check running "state says $(status multi)" [ "$(status multi)" = running ]
  out=$($BC pause multi 2>&1)
  check pause "pause: $out; state $(status multi)" [ "$(status multi)" = paused ]
  check pause-cgroup-freeze "cgroup.freeze=$(rd $d/cgroup.freeze)" [ "$(rd $d/cgroup.freeze)" = 1 ]
  check pause-events-frozen "cgroup.events: $(rd $d/cgroup.events)" grep -qx 'frozen 1' $d/cgroup.events
  out=$($BC resume multi 2>&1)
  check resume "resume: $out; state $(status multi)" [ "$(status multi)" = running ]
  check resume-thawed "cgroup.freeze=$(rd $d/cgroup.freeze); cgroup.events: $(rd $d/cgroup.events)" \
    sh -c "[ \"\$(cat $d/cgroup.freeze)\" = 0 ] && grep -qx 'frozen 0' $d/cgroup.events"

  before=$(rd $d/memory.max)
  out=$($BC update --memory 64m --pids-limit 20 --cpu-quota 20000 --cpu-period 100000 multi 2>&1)
  check update-memory "update: $out; memory.max $before -> $(rd $d/memory.max), want 67108864" \
    [ "$(rd $d/memory.max)" = 67108864 ]
  check update-pids "pids.max=$(rd $d/pids.max), want 20" [ "$(rd $d/pids.max)" = 20 ]
  check update-cpu-max "cpu.max=$(rd $d/cpu.max), want '20000 100000'" [ "$(rd $d/cpu.max)" = "20000 100000" ]

  out=$($BC update --cpu-shares 2048 multi 2>&1)
  check update-cpu-weight "update: $out; cpu.weight=$(rd $d/cpu.weight), want 79 (shares 2048)" [ "$(rd $d/cpu.weight)" = 79 ]
  out=$($BC update --cpu-period 50000 multi 2>&1)
  check update-period-keeps-quota "update: $out; cpu.max=$(rd $d/cpu.max), want '20000 50000'" [ "$(rd $d/cpu.max)" = "20000 50000" ]
  out=$($BC update --memory-swap 128m multi 2>&1)
  check update-swap "update: $out; memory.swap.max=$(rd $d/memory.swap.max), want 67108864 (128m - 64m)" \
    [ "$(rd $d/memory.swap.max)" = 67108864 ]

  pids=$($BC ps --format json multi 2>&1)
  check ps "ps: $pids; cgroup.procs: $(rd $d/cgroup.procs)" \
    [ "$(echo "$pids" | tr -d '[] ' | tr ',' '\n' | sort -n | tr '\n' ' ')" = "$(sort -n $d/cgroup.procs | tr '\n' ' ')" ]

  # a signal other than KILL goes through freeze, signal, thaw: the sleeps
  # die, sh (pid 1 of its namespace, no handler) ignores TERM, and the
  # cgroup must be thawed again
  n=$(nprocs)
  out=$($BC kill --all multi TERM 2>&1)
  wait_for 5 sh -c "[ \$(wc -l <$d/cgroup.procs) -lt $n ]"
  check kill-all-term-thawed "kill --all TERM: $out; $n -> $(nprocs) processes; cgroup.freeze=$(rd $d/cgroup.freeze); state $(status multi)" \
    sh -c "[ \$(wc -l <$d/cgroup.procs) -lt $n ] && [ \"\$(cat $d/cgroup.freeze)\" = 0 ]"

  n=$(nprocs)
  check kill-all-has-cgroup-kill "no $d/cgroup.kill (kernel < 5.14?)" [ -e $d/cgroup.kill ]
  out=$($BC kill --all multi KILL 2>&1)
  gone() { [ ! -s $d/cgroup.procs ] && [ "$(status multi)" = stopped ]; }
  check kill-all "kill --all: $out; $n processes before, cgroup.procs now: $(rd $d/cgroup.procs); state $(status multi)" \
    wait_for 5 gone
  check kill-all-events "cgroup.events: $(rd $d/cgroup.events)" grep -qx 'populated 0' $d/cgroup.events

  out=$($BC delete multi 2>&1)
  check delete-removes-cgroup "delete: $out; $d still there: $(ls $d 2>&1 | wc -l) entries" [ ! -e $d ]
  check delete-removes-state "state multi still answers" sh -c "! $BC state multi >/dev/null 2>&1"
  check delete-keeps-parent "$CG/smoke is gone (parents must stay)" [ -d $CG/smoke ]
else
  fail multi-create "$(tr '\n' ' ' </tmp/multi.out)"
fi
cleanup multi

# --- paused container: delete --force kills and removes it ---------------
section "paused container: delete --force kills and removes it"
d=$CG/smoke/multi
if $BC create --bundle $B/multi multi >/tmp/multi2.out 2>&1 && $BC start multi >>/tmp/multi2.out 2>&1 &&
  wait_for 10 sh -c "[ \$(wc -l <$d/cgroup.procs) -ge 3 ]" && $BC pause multi >>/tmp/multi2.out 2>&1; then
  out=$($BC delete --force multi 2>&1)
  check delete-force-paused "delete --force: $out; $d: $(ls -d $d 2>&1); state: $(status multi)" \
    sh -c "[ ! -e $d ] && ! $BC state multi >/dev/null 2>&1"
else
  fail delete-force-paused-setup "$(tr '\n' ' ' </tmp/multi2.out)"
fi
cleanup multi

# --- (6) devices: the rules are a BPF device program on v2 ---------------
section "(6) devices: the rules are a BPF device program on v2"
if $BC create --bundle $B/devices devices >/tmp/devices.out 2>&1; then
  check devices-no-gap-annotation "state annotations: $($BC state devices 2>&1 | grep -A3 annotations | tr '\n' ' ')" \
    sh -c "! $BC state devices | grep -q org.buildcell.cgroup.devices"
  $BC start devices >>/tmp/devices.out 2>&1
  wait_for 10 grep -q MKNOD- /tmp/devices.out
  check devices-allowed "an allowed node (/dev/null, c 1:3): $(tr '\n' ' ' </tmp/devices.out)" \
    grep -q NULL-OK /tmp/devices.out
  check devices-enforced "deny-all rules: writing to /dev/kmsg (c 1:11, in linux.devices, no rule allows it) must fail: $(tr '\n' ' ' </tmp/devices.out)" \
    grep -q WRITE-DENIED /tmp/devices.out
  # mknod itself is allowed (the default rules allow mknod of any node, as
  # runc's), using the node is not.
  check devices-mknod-enforced "a node made with mknod (c 1:11) must not be writable: $(tr '\n' ' ' </tmp/devices.out)" \
    grep -q MKNOD-DENIED /tmp/devices.out
else
  fail devices-create "$(tr '\n' ' ' </tmp/devices.out)"
fi
cleanup devices

# --- (9) no cgroupsPath: <own cgroup>/<id>, from the root cgroup ---------
section "(9) no cgroupsPath: <own cgroup>/<id>, from the root cgroup"
if $BC create --bundle $B/relative relative >/tmp/relative.out 2>&1; then
  check relative-path "no $CG/relative; cgroup.procs of init: $(cat /proc/self/cgroup)" [ -d $CG/relative ]
  out=$($BC delete relative 2>&1)
  check relative-path-delete "delete: $out; $CG/relative still exists" [ ! -e $CG/relative ]
else
  fail relative-path-create "$(tr '\n' ' ' </tmp/relative.out)"
fi
cleanup relative

# --- (10) Landlock on this kernel's older ABI ------------------------------
section "(10) Landlock on this kernel's older ABI"
$BC0 --profile build-network create --bundle $B/landlock ll-req >/tmp/ll-req.out 2>&1
rc=$?
check landlock-require-refuses "exit $rc: $(tr '\n' ' ' </tmp/ll-req.out)" \
  grep -q 'needs TCP connect rules (Landlock ABI 4).*; this kernel has ABI 2' /tmp/ll-req.out
check landlock-require-leaves-nothing "ll-req exists after a refused create" [ -z "$($BC list -q | grep ll-req)" ]
cleanup ll-req
if $BC0 --profile network-best-effort create --bundle $B/landlock ll-best >/tmp/ll-best.out 2>&1; then
  $BC state ll-best >/tmp/ll-best.state 2>&1
  check landlock-best-effort-records "state: $(tr '\n' ' ' </tmp/ll-best.state)" \
    grep -q 'Landlock ABI 2;.*not enforced: tcp_connect' /tmp/ll-best.state
  $BC start ll-best >/tmp/ll-best.out 2>&1
  check landlock-best-effort-runs "start: $(tr '\n' ' ' </tmp/ll-best.out)" \
    wait_for 10 sh -c "[ \"\$($BC state ll-best 2>/dev/null | sed -n 's/.*\"status\": *\"\([a-z]*\)\".*/\1/p')\" = stopped ]"
else
  fail landlock-best-effort-create "$(tr '\n' ' ' </tmp/ll-best.out)"
fi
cleanup ll-best

if [ "${SMOKE_DEBUG:-0}" = 1 ]; then
  for f in /tmp/*.out; do sed "s|^|DEBUG $f: |" "$f"; done
fi
echo "INFO checks done at up $(cut -d' ' -f1 /proc/uptime)s"
echo "SMOKE-DONE passed=$passed failed=$failed"
sync
poweroff -f
