#!/usr/bin/env bash
# stress_lockdump.sh - vs_stress's hang report carries the daemon's own
# lock-holder table (engine/lockorder.h). A real mount, the daemon started
# as scripts/stress.sh starts it (VS_LOCKDUMP), vs_stress with a 3 s hang
# limit; the driver is stopped (SIGSTOP) so that no operation completes,
# and its watchdog (a process of its own) must report the hang with the
# table between the daemon's kernel and gdb stacks.
#
#   tests/stress/stress_lockdump.sh BUILD_DIR
# Exit status: 0 pass, 1 fail, 77 no FUSE or not built.
set -u
build=${1:?usage: $0 BUILD_DIR}
VIRTUSCALE=$build/fs/virtuscale MKFS=$build/tools/mkfs.virtuscale
STRESS=$build/tests/stress/vs_stress
for b in "$VIRTUSCALE" "$MKFS" "$STRESS"; do
	[ -x "$b" ] || { echo "SKIP: $b not built"; exit 77; }
done
[ -r /dev/fuse ] && [ -w /dev/fuse ] || { echo "SKIP: /dev/fuse not usable"; exit 77; }
command -v fusermount3 >/dev/null || { echo "SKIP: no fusermount3"; exit 77; }

work=$(mktemp -d /tmp/vs-lockdump.XXXXXX) || exit 1
mnt=$work/mnt daemon= driver=
mkdir "$mnt"
cleanup() {
	local rc=$?
	[ -n "$driver" ] && kill -CONT "$driver" 2>/dev/null && kill -9 "$driver" 2>/dev/null
	if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null
		for _ in $(seq 300); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$daemon" 2>/dev/null
	fi
	wait 2>/dev/null
	rm -rf --one-file-system "$work"
	exit $rc
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*"
	echo "---- vs_stress output ----"
	cat "$work/out"
	exit 1
}

"$MKFS" "$work/image" --size 1G --sparse --quiet || fail "mkfs"
VS_LOCKDUMP=$work/locks "$VIRTUSCALE" "$work/image" "$mnt" -f -o pool=32M >>"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
	awk -v mp="$mnt" '$5 == mp { f = 1 } END { exit !f }' /proc/self/mountinfo && break
	sleep 0.1
done
"$STRESS" "$mnt" --seconds 60 --threads 2 --seed 1 --daemon-pid "$daemon" --big-mb 4 \
	--hang-seconds 3 --lock-dump "$work/locks" >"$work/out" 2>&1 &
driver=$!
sleep 2
kill -STOP "$driver"
for _ in $(seq 1800); do
	grep -q '^HANG: end of report' "$work/out" && break
	sleep 0.1
done
grep -q '^HANG: end of report' "$work/out" || fail "no hang report within 180 s"
kill -CONT "$driver"
wait "$driver"
st=$?
driver=
[ $st = 3 ] || fail "vs_stress exited $st, not 3 (hang)"
# The hang report: the table between the daemon's kernel and gdb stacks.
report=$(sed -n '/^HANG: no operation/,/^HANG: end of report/p' "$work/out")
table=$(printf '%s\n' "$report" | sed -n "/^==== daemon $daemon: lock-holder table\$/,/^==== daemon $daemon: gdb/p")
[ -n "$table" ] || fail "no lock-holder table section in the hang report"
printf '%s\n' "$table" | grep -q "^lock-holder table of pid $daemon " || fail "the section holds no table header"
printf '%s\n' "$table" | grep -q '^end of lock-holder table$' || fail "the table is not whole"
printf '%s\n' "$table" | awk '/^lock-holder table of pid/ { t = 1; next } /^end of lock-holder table$/ { t = 0 }
	t && !/^tid [0-9]+: (holds|waits for) / { print "malformed: " $0; bad = 1 } END { exit bad }' ||
	fail "malformed lines in the table"
echo "PASS"
