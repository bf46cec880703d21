#!/usr/bin/env bash
# kill -9 test: a workload that writes, renames, truncates and fsyncs runs on
# the mount; the daemon is killed with SIGKILL at a random moment; after a
# remount every file whose fsync returned is there byte for byte, and fsck
# (when built) finds the image clean. Fixed seeds; VS_TEST_SCALE=N runs N
# times more rounds. VS_TEST_OPTS (uring_wrap.sh sets uring=on) is added to
# every mount; with uring=on each mount must be served over FUSE over
# io_uring (the stats file names the transport), so that a silent fallback
# to /dev/fuse fails the test instead of testing the other transport twice.
#   env: VS_VIRTUSCALE, VS_MKFS, [VS_FSCK], [VS_TEST_OPTS]
set -u
[ -e /dev/fuse ] && command -v fusermount3 >/dev/null || { echo "no FUSE here"; exit 77; }
[ -x "${VS_VIRTUSCALE:-}" ] && [ -x "${VS_MKFS:-}" ] || { echo "binaries not built"; exit 77; }

rounds=$((10 * ${VS_TEST_SCALE:-1}))
work=$(mktemp -d /tmp/vs-kill9.XXXXXX)
img=$work/img mnt=$work/mnt acked=$work/acked
mkdir -p "$mnt"
daemon=
cleanup() {
	[ -n "$daemon" ] && kill -9 "$daemon" 2>/dev/null
	fusermount3 -u -z "$mnt" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*"
	# the daemon's log since its last start
	[ -f "$work/daemon.log" ] && tac "$work/daemon.log" | sed '/^=== round/q' | tac | tail -40
	exit 1
}

mounted() { grep -q " $mnt " /proc/self/mountinfo; }
want_transport=
case ",${VS_TEST_OPTS:-}," in
*,uring=on,*) want_transport=uring ;;
*,uring=off,*) want_transport=dev ;;
esac
# The transport the mount is served over, as its stats file says.
transport() {
	awk -F'"' '/^virtuscale_fuse_transport_info\{/ {print $2}' "$mnt/.virtuscale/stats"
}
check_transport() {
	local got
	[ -n "$want_transport" ] || return 0
	got=$(transport)
	[ "$got" = "$want_transport" ] ||
		fail "round ${round:-0}: served over '$got', VS_TEST_OPTS asks for $want_transport"
}
# Start the daemon and wait for its mount, for as long as it is alive and
# busy starting (journal replay, orphan reclaim and several syncs come
# first; on a loaded machine that is seconds), up to VS_MOUNT_WAIT seconds
# (default 120). A daemon that exits says how (its status, its log for this
# start); one still starting at the deadline shows where it is.
mount_fs() {
	local deadline st
	echo "=== round ${round:-0}: mount" >>"$work/daemon.log"
	"$VS_VIRTUSCALE" "$img" "$mnt" -f -o "pool=64M${VS_TEST_OPTS:+,$VS_TEST_OPTS}" \
		>>"$work/daemon.log" 2>&1 &
	daemon=$!
	deadline=$((SECONDS + ${VS_MOUNT_WAIT:-120}))
	while ! mounted; do
		if ! kill -0 "$daemon" 2>/dev/null; then
			wait "$daemon"; st=$?
			daemon=
			fail "the daemon exited with status $st$([ $st -gt 128 ] && echo " (SIG$(kill -l $((st - 128))))")" \
				"before its mount appeared"
		fi
		if [ $SECONDS -ge "$deadline" ]; then
			echo "daemon $daemon still starting after ${VS_MOUNT_WAIT:-120} s:"
			for t in /proc/"$daemon"/task/*; do
				echo "-- ${t##*/} $(cat "$t/comm" 2>/dev/null) $(cat "$t/wchan" 2>/dev/null)"
				cat "$t/stack" 2>/dev/null
			done
			command -v gdb >/dev/null &&
				gdb -batch -p "$daemon" -ex 'thread apply all bt' 2>/dev/null | grep -E '^(Thread|#)'
			fail "mount did not appear"
		fi
		sleep 0.05
	done
	check_transport
}
# Unmount and wait for the daemon to exit, with the same deadline.
umount_fs() {
	local st
	fusermount3 -u "$mnt" || fail "unmount"
	for _ in $(seq $((20 * ${VS_MOUNT_WAIT:-120}))); do
		kill -0 "$daemon" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$daemon" 2>/dev/null; then
		command -v gdb >/dev/null &&
			gdb -batch -p "$daemon" -ex 'thread apply all bt' 2>/dev/null | grep -E '^(Thread|#)'
		fail "round $round: the daemon did not exit after the unmount"
	fi
	wait "$daemon"; st=$?
	daemon=
	[ "$st" = 0 ] || fail "round $round: the daemon exited with status $st after the unmount"
}

"$VS_MKFS" "$img" --size 256M >/dev/null || fail "mkfs"
: >"$acked"
RANDOM=4242
for round in $(seq "$rounds"); do
	mount_fs
	# The workload: each step's effect is recorded in $acked only after
	# the fsync that covers it has returned.
	(
		i=0
		while :; do
			i=$((i + 1))
			f="r${round}_$i"
			n=$(( (RANDOM % 300) + 1 ))
			head -c $((n * 1024)) /dev/urandom >"$work/src" || exit
			dd if="$work/src" of="$mnt/$f.tmp" bs=64k conv=fsync status=none || exit
			mv "$mnt/$f.tmp" "$mnt/$f" || exit
			if [ $((i % 3)) = 0 ]; then
				truncate -s $((n * 512)) "$mnt/$f" || exit
				head -c $((n * 512)) "$work/src" >"$work/cut"
				mv "$work/cut" "$work/src"
			fi
			# fsync after the rename and truncate: a checkpoint covers all
			dd if=/dev/null of="$mnt/$f" oflag=append conv=notrunc,fsync status=none || exit
			echo "$f $(md5sum <"$work/src" | cut -d' ' -f1)" >>"$acked"
		done
	) 2>/dev/null & # the kill makes the workload's last step fail: expected
	load=$!
	sleep "$(( RANDOM % 2 )).$(( (RANDOM % 9) + 1 ))$(( RANDOM % 10 ))"
	kill -9 "$daemon"
	wait "$daemon" 2>/dev/null
	daemon=
	kill "$load" 2>/dev/null
	wait "$load" 2>/dev/null
	fusermount3 -u -z "$mnt" 2>/dev/null

	mount_fs
	while read -r f sum; do
		[ -f "$mnt/$f" ] || fail "round $round: acknowledged $f is missing"
		got=$(md5sum <"$mnt/$f" | cut -d' ' -f1)
		[ "$got" = "$sum" ] || fail "round $round: acknowledged $f differs"
	done <"$acked"
	# nothing half applied: no file is visible under both names
	for t in "$mnt"/*.tmp; do
		[ -e "$t" ] || continue
		[ -e "${t%.tmp}" ] && fail "round $round: $t and ${t%.tmp} both exist"
	done
	umount_fs
	if [ -x "${VS_FSCK:-}" ]; then
		"$VS_FSCK" -n "$img" >"$work/fsck.log" 2>&1 || { cat "$work/fsck.log"; fail "round $round: fsck"; }
	fi
	echo "round $round: $(wc -l <"$acked") acknowledged files intact"
done
echo "kill -9${want_transport:+ over $want_transport}: $rounds rounds," \
	"$(wc -l <"$acked") acknowledged files," \
	"$(grep -c 'recovery: replayed' "$work/daemon.log") journal replays"
