#!/usr/bin/env bash
# stress.sh - the stress suite: for each pool size, a fresh image and mount,
# vs_stress (tests/stress/stress.c: a mixed, randomized load checked byte for
# byte against a model, with a hang watchdog), then unmount and wait for the
# daemon to exit, fsck.virtuscale -n, remount, verify every file the model
# says must exist (and no other), unmount, fsck -n again.
#
#   scripts/stress.sh [--long] [--seconds S] [--pools "8M 16M 64M"] [--threads N]
#                     [--build DIR] [--seed X] [--big-mb M] [--hang-seconds H] [--keep]
#
# Default: 3 pools x 40 s, 4 threads, a random seed (printed; the same seed
# gives every worker the same sequence of operations). --long: an hour per
# pool unless --seconds says otherwise. --keep keeps the images and logs of
# failed pools. Exit status: 0 pass, 1 a failure (the pool is named), 2
# usage, 77 no FUSE here or the binaries are not built. VS_TEST_OPTS in the
# environment adds mount options (e.g. uring=off).
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
seconds= long=0 pools="8M 16M 64M" threads=4 seed=$(((RANDOM << 15) | RANDOM))
big_mb=64 hang=30 keep=0
usage() {
	sed -n '8,9p' "$0" | sed 's/^# //' >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--long) long=1 ;;
	--keep) keep=1 ;;
	--seconds | --pools | --threads | --build | --seed | --big-mb | --hang-seconds)
		[ $# -ge 2 ] || usage
		case $1 in
		--seconds) seconds=$2 ;;
		--pools) pools=$2 ;;
		--threads) threads=$2 ;;
		--build) build=$2 ;;
		--seed) seed=$2 ;;
		--big-mb) big_mb=$2 ;;
		--hang-seconds) hang=$2 ;;
		esac
		shift ;;
	*) usage ;;
	esac
	shift
done
[ -n "$seconds" ] || { [ $long = 1 ] && seconds=3600 || seconds=40; }

VIRTUSCALE=${VS_VIRTUSCALE:-$build/fs/virtuscale}
MKFS=${VS_MKFS:-$build/tools/mkfs.virtuscale}
FSCK=${VS_FSCK:-$build/tools/fsck.virtuscale}
STRESS=${VS_STRESS:-$build/tests/stress/vs_stress}
for b in "$VIRTUSCALE" "$MKFS" "$FSCK" "$STRESS"; do
	[ -x "$b" ] || { echo "SKIP: $b not built (ninja -C $build)"; exit 77; }
done
[ -r /dev/fuse ] && [ -w /dev/fuse ] || { echo "SKIP: /dev/fuse not usable"; exit 77; }
command -v fusermount3 >/dev/null || { echo "SKIP: no fusermount3"; exit 77; }

# How long the driver may run past --seconds (its watchdog reports a hang
# after $hang s without progress; this catches the driver itself stuck),
# and how long the daemon may take to write back and exit after unmount.
driver_limit=$((seconds + 2 * hang + 120))
UNMOUNT_WAIT=300
VERIFY_LIMIT=600

work=$(mktemp -d /tmp/vs-stress.XXXXXX) || exit 1
chmod 755 "$work"
daemon= driver= mnt= log= why=

# A process is alive while one of its threads is not a zombie (no pgrep:
# minimal machines lack procps). Not the main thread alone: when it exits,
# threads stuck in FUSE requests keep the process (and its pipes) alive.
alive() {
	local t s
	for t in /proc/"$1"/task/*/stat; do
		s=$(cat "$t" 2>/dev/null) || continue
		s=${s##*) }
		[ "${s%% *}" != Z ] && return 0
	done
	return 1
}
is_mounted() {
	awk -v mp="$1" '$5 == mp { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# The daemon's own lock-holder table (engine/lockorder.h): SIGUSR2 makes it
# append one to $dir/locks (VS_LOCKDUMP, see mount_fs); shown from where the
# file ended, once its end line is there (5 s at most).
dump_locks() {
	local pid=$1 file=$dir/locks from
	alive "$pid" || return 0
	from=$(stat -c %s "$file" 2>/dev/null || echo 0)
	kill -USR2 "$pid" 2>/dev/null || return 0
	for _ in $(seq 50); do
		tail -c +$((from + 1)) "$file" 2>/dev/null | grep -q '^end of lock-holder table$' && break
		sleep 0.1
	done
	echo "==== lock-holder table of $pid"
	tail -c +$((from + 1)) "$file" 2>/dev/null
}

# Kernel stacks of every thread of a process, then (with "gdb", for the
# daemon) its lock-holder table and its user-space stacks: the table first,
# since gdb's attach ends waits (an io_uring wait returns EINTR) that the
# table should show. Not gdb on vs_stress: its threads stuck in FUSE
# requests never stop for ptrace, and gdb would wait for them for ever.
dump_stacks() {
	local pid=$1 t
	alive "$pid" || return 0
	echo "==== stacks of $pid ($(cat "/proc/$pid/comm" 2>/dev/null))"
	for t in /proc/"$pid"/task/*; do
		echo "--- task ${t##*/} $(cat "$t/comm" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)"
		cat "$t/stack" 2>/dev/null
	done
	[ "${2:-}" = gdb ] && dump_locks "$pid"
	if [ "${2:-}" = gdb ] && command -v gdb >/dev/null; then
		timeout -k 10 120 gdb -batch -ex 'thread apply all bt' "/proc/$pid/exe" "$pid" </dev/null 2>&1
	fi
}

# Ends whatever is left of this pool's run: driver, daemon, mount.
teardown() {
	if [ -n "$driver" ] && alive "$driver"; then kill -9 "$driver"; fi
	if [ -n "$daemon" ] && alive "$daemon"; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null
		for _ in $(seq 300); do alive "$daemon" || break; sleep 0.1; done
		alive "$daemon" && kill -9 "$daemon"
	fi
	# A driver stuck in a request dies once the daemon is gone.
	for _ in $(seq 100); do [ -n "$driver" ] && alive "$driver" || break; sleep 0.1; done
	if [ -n "$mnt" ] && is_mounted "$mnt"; then fusermount3 -u -z "$mnt" 2>/dev/null; fi
	wait 2>/dev/null
	daemon= driver=
}

cleanup() {
	local rc=$?
	teardown
	if [ $keep = 1 ] && [ $rc != 0 ]; then
		echo "stress: keeping $work"
	else
		rm -rf --one-file-system "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private copies: a rebuild during a long run must not swap the daemon
# between pools or hide its symbols from gdb.
mkdir "$work/bin"
cp "$VIRTUSCALE" "$MKFS" "$FSCK" "$STRESS" "$work/bin/" || exit 1
VIRTUSCALE=$work/bin/${VIRTUSCALE##*/} MKFS=$work/bin/${MKFS##*/}
FSCK=$work/bin/${FSCK##*/} STRESS=$work/bin/${STRESS##*/}
# Which daemon this is: its hash, and the state of the tree it was built from.
src=$(sed -n 's/.*"source": *"\([^"]*\)".*/\1/p' "$build/meson-info/meson-info.json" 2>/dev/null)
echo "stress: daemon $(sha256sum <"$VIRTUSCALE" | cut -c1-12) built in $build from" \
	"${src:-?} ($(git -C "${src:-$root}" describe --always --dirty 2>/dev/null || echo 'not a git tree'))"

mount_fs() {
	VS_LOCKDUMP=$dir/locks "$VIRTUSCALE" "$img" "$mnt" -f -o "pool=$pool${VS_TEST_OPTS:+,$VS_TEST_OPTS}" >>"$log" 2>&1 &
	daemon=$!
	for _ in $(seq 300); do
		is_mounted "$mnt" && return 0
		alive "$daemon" || { why="daemon exited before mounting"; return 1; }
		sleep 0.1
	done
	why="not mounted after 30 s"
	return 1
}

# fusermount3 -u, then wait until the daemon has written back and exited
# with status 0.
unmount_fs() {
	local t0=$SECONDS st
	for _ in $(seq 50); do
		fusermount3 -u "$mnt" 2>>"$log" && break
		sleep 0.2
	done
	is_mounted "$mnt" && { why="fusermount3 -u $mnt keeps failing"; return 1; }
	while alive "$daemon"; do
		if ((SECONDS - t0 > UNMOUNT_WAIT)); then
			why="daemon still running ${UNMOUNT_WAIT} s after unmount"
			dump_stacks "$daemon" gdb
			return 1
		fi
		sleep 0.1
	done
	wait "$daemon"
	st=$?
	daemon=
	[ $st = 0 ] || { why="daemon exited with status $st after unmount"; return 1; }
	echo "stress: pool=$pool: unmounted, daemon exited after $((SECONDS - t0)) s"
}

fsck_image() {
	"$FSCK" -n "$img" >"$dir/fsck.log" 2>&1 && return 0
	why="fsck.virtuscale -n exited $? ($1)"
	cat "$dir/fsck.log"
	return 1
}

# Runs a command (vs_stress) with its output shown and kept in driver.log,
# for at most $1 seconds. A hang the driver reported (exit 3), or one of the
# driver itself, leaves requests the daemon never answers: killing the
# daemon fails them, so that the driver can exit.
run_driver() {
	local limit=$1 t0=$SECONDS rc
	shift
	"$@" > >(tee -a "$dir/driver.log") 2>&1 &
	driver=$!
	while alive "$driver"; do
		if grep -q '^HANG: end of report' "$dir/driver.log" 2>/dev/null; then
			sleep 10
			alive "$driver" && { echo "stress: driver stuck after its report; killing the daemon"; kill -9 "$daemon"; }
			break
		fi
		if ((SECONDS - t0 > limit)); then
			echo "HANG: vs_stress still running after $limit s"
			dump_stacks "$driver"
			dump_stacks "$daemon" gdb
			kill -9 "$daemon" "$driver" 2>/dev/null
			break
		fi
		sleep 1
	done
	wait "$driver"
	rc=$?
	driver=
	case $rc in
	0) return 0 ;;
	3) why="HANG (stacks above)" ;;
	137) why="HANG: driver did not finish within $limit s (stacks above)" ;;
	*) why="vs_stress exited $rc (mismatch or error above)" ;;
	esac
	return 1
}

run_pool() {
	dir=$work/pool-$pool img=$work/pool-$pool/image mnt=$work/pool-$pool/mnt
	log=$work/pool-$pool/daemon.log
	mkdir -p "$mnt"
	"$MKFS" "$img" --size 2G --sparse --quiet >>"$log" 2>&1 || { why="mkfs failed"; return 1; }
	mount_fs || return 1
	echo "stress: pool=$pool: daemon $daemon, $threads threads, $seconds s, seed $seed"
	run_driver "$driver_limit" "$STRESS" "$mnt" --seconds "$seconds" --threads "$threads" \
		--seed "$seed" --daemon-pid "$daemon" --big-mb "$big_mb" --hang-seconds "$hang" \
		--manifest "$dir/manifest" --lock-dump "$dir/locks" || return 1
	unmount_fs || return 1
	fsck_image "after the run" || return 1
	mount_fs || return 1
	run_driver "$VERIFY_LIMIT" "$STRESS" "$mnt" --verify "$dir/manifest" || return 1
	unmount_fs || return 1
	fsck_image "after the verifying mount" || return 1
	rm -f "$img"
}

failed=
results=
for pool in $pools; do
	why= t0=$SECONDS
	if run_pool; then
		results+="  pool=$pool: PASS ($((SECONDS - t0)) s)"$'\n'
	else
		echo "FAIL: pool=$pool: $why"
		if [ -s "$log" ]; then
			echo "---- daemon log (tail) ----"
			tail -n 30 "$log"
		fi
		teardown
		failed+=" $pool"
		results+="  pool=$pool: FAIL ($((SECONDS - t0)) s): $why"$'\n'
	fi
done
echo "stress summary (seed $seed, $threads threads, $seconds s per pool):"
printf '%s' "$results"
if [ -n "$failed" ]; then
	echo "FAIL: pools:$failed; reproduce with:"
	for p in $failed; do
		echo "  scripts/stress.sh --pools $p --seconds $seconds --threads $threads --seed $seed --big-mb $big_mb --build $build"
	done
	exit 1
fi
echo "stress: PASS"
