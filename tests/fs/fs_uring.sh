#!/bin/bash
# fs_uring.sh - FUSE over io_uring (fs/uring.c), run through uring_wrap.sh
# (the kernel parameter on, VS_TEST_OPTS=uring=on):
#   - the stats file names the transport, uring, and has one request counter
#     per possible CPU; work pinned to each CPU makes that CPU's count grow
#     (the kernel queues a request on the CPU that issued it)
#   - uring=off and uring=auto beside it: dev and uring
#   - uring_depth=1 still serves parallel work (one thread per entry)
#   - an entry the kernel refuses: auto goes on over /dev/fuse, on stops
#   - an fsync is answered when its reply is written, not when its thread
#     is done (the checkpoint's home writes after the commit): with
#     VS_URING_FAULT=slow_fsync each fsync's thread lingers 3 s after the
#     reply; with uring_depth=1 the fsync must still return at once, and
#     requests from its CPU must not wait behind the lingering thread;
#     unmount, abort and kill -9 while such a thread lingers end cleanly
#   - the daemon exits 0 after an unmount, after a lazy unmount
#     (fusermount3 -u -z), and after the connection is aborted
#     (/sys/fs/fuse/connections/N/abort); after kill -9 the image mounts
#     again with every fsync'd file intact
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "needs the real daemon, not VS_TEST_DIR"
case ",${VS_TEST_OPTS:-}," in
*,uring=on,*) ;;
*) vt_skip "run through uring_wrap.sh (VS_TEST_OPTS must hold uring=on)" ;;
esac
# The abort needs /sys/fs/fuse/connections (fusectl): mount it, when the
# machine has not, in a private mount namespace.
if ! mountpoint -q /sys/fs/fuse/connections && [ -z "${VT_URING_NS:-}" ]; then
	[ "$(id -u)" = 0 ] && command -v unshare >/dev/null ||
		vt_skip "fusectl is not mounted and cannot be (needs root and unshare)"
	# (a chroot whose root is not a mount point cannot have a private one)
	unshare -m --propagation private true 2>/dev/null ||
		vt_skip "fusectl is not mounted and no private mount namespace can be made here"
	VT_URING_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
mountpoint -q /sys/fs/fuse/connections ||
	mount -t fusectl fusectl /sys/fs/fuse/connections || vt_fail "cannot mount fusectl"
vt_init
vt_mkfs 256M
S=$VT_MNT/.virtuscale/stats

transport() { awk -F'"' '/^virtuscale_fuse_transport_info\{/ {print $2}' "$S"; }
queue_count() { # QID
	awk -v k="virtuscale_fuse_uring_requests_total{queue=\"$1\"}" '$1 == k {print $2}' "$S"
}

# ---- transport and per-queue counters -------------------------------------
vt_mount
[ "$(transport)" = uring ] || vt_fail "transport: '$(transport)', want uring"
ncpu=$(awk -F- '{print $NF + 1}' /sys/devices/system/cpu/possible)
nq=$(grep -c '^virtuscale_fuse_uring_requests_total{queue=' "$S")
[ "$nq" = "$ncpu" ] || vt_fail "$nq queue counters for $ncpu possible CPUs"
for cpu in $(seq 0 $((ncpu - 1))); do
	taskset -c "$cpu" true 2>/dev/null || continue # not ours to run on
	before=$(queue_count "$cpu")
	taskset -c "$cpu" bash -c '
		for i in $(seq 50); do echo "$i" >"$1/f$2.$i"; stat "$1/f$2.$i" >/dev/null; done
		rm -f "$1"/f$2.*' _ "$VT_MNT" "$cpu" || vt_fail "work on CPU $cpu failed"
	after=$(queue_count "$cpu")
	[ -n "$before" ] && [ -n "$after" ] || vt_fail "queue $cpu: no counter"
	[ $((after - before)) -ge 150 ] ||
		vt_fail "queue $cpu served $((after - before)) requests of CPU $cpu's 150+"
	vt_note "queue $cpu: $before -> $after"
done
vt_umount

# ---- off and auto ----------------------------------------------------------
VS_TEST_OPTS=${VS_TEST_OPTS/uring=on/uring=off} vt_mount
[ "$(transport)" = dev ] || vt_fail "uring=off: transport '$(transport)', want dev"
grep -q '^virtuscale_fuse_uring_requests_total' "$S" && vt_fail "uring=off shows queue counters"
echo x >"$VT_MNT/off" || vt_fail "uring=off: write"
vt_umount
VS_TEST_OPTS=${VS_TEST_OPTS/uring=on/uring=auto} vt_mount
[ "$(transport)" = uring ] || vt_fail "uring=auto with the kernel's on: '$(transport)'"
vt_umount

# ---- depth 1: parallel requests, one thread per CPU -------------------------
vt_mount pool=64M,uring_depth=1
pids=
for j in 1 2 3 4; do
	(for i in $(seq 100); do echo "$j.$i" >"$VT_MNT/d$j.$i"; done; sync "$VT_MNT/d$j.1") &
	pids="$pids $!"
done
wait $pids
[ "$(ls "$VT_MNT" | grep -c '^d')" = 400 ] || vt_fail "uring_depth=1: $(ls "$VT_MNT" | grep -c '^d') of 400 files"
[ "$(cat "$VT_MNT/d3.77")" = 3.77 ] || vt_fail "uring_depth=1: d3.77 holds '$(cat "$VT_MNT/d3.77")'"
vt_umount

# ---- bad values, and a depth the machine cannot give -------------------------
for bad in uring=maybe uring_depth=0 uring_depth=65 uring_depth=x; do
	out=$("$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "pool=64M,$bad" 2>&1) &&
		vt_fail "-o $bad accepted"
	case "$out" in *"${bad%%=*}="*) ;; *) vt_fail "-o $bad: message '$out'" ;; esac
	vt_is_mounted "$VT_MNT" && vt_fail "-o $bad: mounted"
done
# 64 ring threads in all at most (engine contexts, exmap interfaces)
vt_mount pool=64M,uring_depth=64
[ "$(transport)" = uring ] || vt_fail "uring_depth=64: transport '$(transport)'" # INIT done
vt_umount
want=$((64 / ncpu)); [ "$want" -ge 1 ] || want=1
grep -qxF "virtuscale: serving requests through FUSE over io_uring: $ncpu queues of $want" "$VT_LOG" ||
	vt_fail "uring_depth=64 on $ncpu CPUs: not clamped to $want ($(tail -n 3 "$VT_LOG"))"

# ---- an entry the kernel refuses (VS_URING_FAULT: fs/uring.c) ---------------
# auto: the kernel falls back to /dev/fuse and the mount works on
VS_URING_FAULT=small_entry VS_TEST_OPTS=${VS_TEST_OPTS/uring=on/uring=auto} vt_mount
echo refused >"$VT_MNT/refused" && [ "$(cat "$VT_MNT/refused")" = refused ] ||
	vt_fail "uring=auto, entry refused: write/read"
[ "$(transport)" = dev ] || vt_fail "uring=auto, entry refused: transport '$(transport)'"
vt_umount
grep -q "the kernel refused the entry" "$VT_LOG" || vt_fail "uring=auto, entry refused: no message"
# on: the daemon stops with status 1, also with poll=0 (no read of /dev/fuse
# would ever end on its own)
VS_URING_FAULT=small_entry "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f \
	-o pool=64M,poll=0,uring=on >>"$VT_LOG" 2>&1 &
VT_PID=$!
for _ in $(seq 300); do kill -0 "$VT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$VT_PID" 2>/dev/null && vt_fail "uring=on, entry refused: the daemon still runs after 30 s"
wait "$VT_PID"
st=$?
VT_PID=
[ "$st" = 1 ] || vt_fail "uring=on, entry refused: exit status $st, want 1"
vt_is_mounted "$VT_MNT" && vt_fail "uring=on, entry refused: still mounted"
grep -q "refused the entry.*stopping" "$VT_LOG" || vt_fail "uring=on, entry refused: no message"

# ---- an fsync answered before its thread is done ------------------------------
# (fs/uring.c: the entry goes to a spare thread with the reply). The fault
# stands in for a checkpoint whose home writes are slow; one entry per CPU
# makes a held entry stall all of its CPU's requests.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
VS_URING_FAULT=slow_fsync vt_mount pool=64M,uring_depth=1
[ "$(transport)" = uring ] || vt_fail "slow_fsync: transport '$(transport)'"
echo x >"$VT_MNT/s0" && sync "$VT_MNT/s0" || vt_fail "slow_fsync: write s0"
sleep 3.5 # until the first fsync's thread is a spare again
cpu=$(taskset -cp $$ | awk -F': ' '{split($2, a, "[,-]"); print a[1]}')
t0=$(now_ms)
taskset -c "$cpu" sync "$VT_MNT/s0" || vt_fail "slow_fsync: fsync"
t1=$(now_ms)
vt_note "slow_fsync, uring_depth=1: fsync in $((t1 - t0)) ms (its thread lingers 3 s)"
[ $((t1 - t0)) -lt 1500 ] ||
	vt_fail "the fsync took $((t1 - t0)) ms: answered when its thread was done, not at its reply"
sleep 3.5
# requests from the fsync's CPU while its thread lingers
taskset -c "$cpu" sync "$VT_MNT/s0" &
bg=$!
sleep 0.3
t1=$(now_ms)
taskset -c "$cpu" bash -c '
	for i in $(seq 5); do echo "$i" >"$1/s.$i"; cat "$1/s.$i" >/dev/null; done' _ "$VT_MNT" ||
	vt_fail "slow_fsync: work beside the fsync"
t2=$(now_ms)
wait "$bg" || vt_fail "slow_fsync: the second fsync"
vt_note "slow_fsync, uring_depth=1: 5 files written and read on CPU $cpu in $((t2 - t1)) ms beside it"
[ $((t2 - t1)) -lt 1500 ] ||
	vt_fail "5 files beside the fsync took $((t2 - t1)) ms: their requests waited behind the fsync's thread"
sleep 3
handoffs=$(awk '/^virtuscale_fuse_uring_fsync_handoffs_total /{print $2}' "$VT_MNT/.virtuscale/stats")
vt_note "fsync hand-offs counted: $handoffs"
[ "${handoffs:-0}" -ge 2 ] || vt_fail "the stats file counts $handoffs fsync hand-offs, expected at least 2"
vt_umount

# ---- the ways a mount ends --------------------------------------------------
wait_exit() { # WHAT: the daemon must exit 0 within 30 s
	for _ in $(seq 300); do kill -0 "$VT_PID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$VT_PID" 2>/dev/null && vt_fail "$1: the daemon still runs after 30 s"
	wait "$VT_PID"
	local st=$?
	VT_PID=
	[ "$st" = 0 ] || vt_fail "$1: the daemon exited with status $st"
}

vt_mount
dd if=/dev/urandom of="$VT_MNT/keep" bs=64k count=16 conv=fsync status=none || vt_fail "write keep"
sum=$(md5sum <"$VT_MNT/keep")
fusermount3 -u -z "$VT_MNT" || vt_fail "fusermount3 -u -z"
wait_exit "lazy unmount"

vt_mount
[ "$(md5sum <"$VT_MNT/keep")" = "$sum" ] || vt_fail "keep changed across a lazy unmount"
conn=$(mountpoint -d "$VT_MNT" | cut -d: -f2)
[ -w "/sys/fs/fuse/connections/$conn/abort" ] || vt_fail "no connection $conn in /sys/fs/fuse/connections"
# a reader busy when the connection goes
(while cat "$VT_MNT/keep" >/dev/null 2>&1; do :; done) &
reader=$!
sleep 0.3
echo 1 >"/sys/fs/fuse/connections/$conn/abort"
wait_exit "abort"
kill "$reader" 2>/dev/null
wait "$reader" 2>/dev/null
vt_is_mounted "$VT_MNT" && fusermount3 -u -z "$VT_MNT" 2>/dev/null

vt_mount
[ "$(md5sum <"$VT_MNT/keep")" = "$sum" ] || vt_fail "keep changed across an abort"
echo synced >"$VT_MNT/synced" && sync "$VT_MNT/synced" || vt_fail "write synced"
kill -9 "$VT_PID"
wait "$VT_PID" 2>/dev/null
VT_PID=
fusermount3 -u -z "$VT_MNT" 2>/dev/null
vt_mount
[ "$(cat "$VT_MNT/synced")" = synced ] || vt_fail "kill -9 lost an fsync'd file"
[ "$(md5sum <"$VT_MNT/keep")" = "$sum" ] || vt_fail "keep changed across kill -9"
[ "$(transport)" = uring ] || vt_fail "after kill -9: transport '$(transport)'"
vt_umount

# ... and the same three while an fsync's thread is still busy after its
# reply, its entry handed to a spare (VS_URING_FAULT=slow_fsync): unmount,
# abort, kill -9; the fsync'd files are there after each
linger_mount() { VS_URING_FAULT=slow_fsync vt_mount pool=64M,uring_depth=1; }
linger_fsync() { # NAME
	echo "$1" >"$VT_MNT/$1" && sync "$VT_MNT/$1" || vt_fail "write and fsync $1"
}
linger_mount
linger_fsync l1
vt_umount
linger_mount
[ "$(cat "$VT_MNT/l1")" = l1 ] || vt_fail "l1 lost across an unmount with an fsync's thread busy"
linger_fsync l2
conn=$(mountpoint -d "$VT_MNT" | cut -d: -f2)
echo 1 >"/sys/fs/fuse/connections/$conn/abort"
wait_exit "abort with an fsync's thread busy"
vt_is_mounted "$VT_MNT" && fusermount3 -u -z "$VT_MNT" 2>/dev/null
linger_mount
[ "$(cat "$VT_MNT/l2")" = l2 ] || vt_fail "l2 lost across an abort with an fsync's thread busy"
linger_fsync l3
kill -9 "$VT_PID"
wait "$VT_PID" 2>/dev/null
VT_PID=
fusermount3 -u -z "$VT_MNT" 2>/dev/null
vt_mount
[ "$(cat "$VT_MNT/l3")" = l3 ] || vt_fail "l3 lost across kill -9 with an fsync's thread busy"
vt_umount
vt_note "uring: transport, queues, off/auto, depth 1, early fsync replies, lazy unmount, abort, kill -9"
