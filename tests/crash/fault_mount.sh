#!/usr/bin/env bash
# fault_mount.sh: a failing disk and a full image under a real mount.
#
#   1. one write of the image fails (EIO): fsync reports it; the daemon goes
#      on serving (stat, reads of older files, new files); the next fsync
#      succeeds; unmount, fsck clean, everything is there after a remount
#   2. a sync fails after the journal was committed (EIO), then the daemon
#      is killed: fsync reported EIO, the remount checks the journal against
#      the home pages, fsck is clean, everything acknowledged before is there
#   3. every write fails from some point on (ENOSPC, the host's disk is
#      full): fsync and fsyncdir report it, reads and new requests go on,
#      the unmount fails (the daemon says so and exits 1), fsck is clean
#      and the image holds exactly what was acknowledged
#   4. the image itself fills up: 90 MiB of a 128 MiB image in 1 MiB writes
#      fsync fine; then writing reports ENOSPC, the daemon keeps serving,
#      deleting gives the space back, writing works again, fsck is clean
#
# The faults come from the daemon's test-only options -o fault_write_at=N,
# fault_sync_at=N, fault_err=EIO|ENOSPC, fault_sticky (fs/main.c).
# VS_TEST_OPTS (uring_wrap.sh sets uring=on) goes into every mount; with
# uring=on (or off) each mount must be served over that transport, as the
# stats file says: the fault_mount_uring variant fails on a silent fallback
# to /dev/fuse.
#   env: VS_VIRTUSCALE, VS_MKFS, VS_FSCK (set by meson), [VS_TEST_OPTS]
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "needs the daemon (fault injection)"
vt_init
[ -n "${VS_FSCK:-}" ] && [ -x "$VS_FSCK" ] || vt_skip "VS_FSCK not set to an executable"

want_transport=
case ",${VS_TEST_OPTS:-}," in
*,uring=on,*) want_transport=uring ;;
*,uring=off,*) want_transport=dev ;;
esac
# vt_mount, then check the transport the mount is served over.
mount_fs() {
	local got
	vt_mount "$@"
	[ -n "$want_transport" ] || return 0
	got=$(awk -F'"' '/^virtuscale_fuse_transport_info\{/ {print $2}' "$VT_MNT/.virtuscale/stats")
	[ "$got" = "$want_transport" ] ||
		vt_fail "mount -o $VT_OPTS served over '$got', VS_TEST_OPTS asks for $want_transport"
}

fsck_clean() {
	"$VS_FSCK" -n "$VT_IMAGE" >"$VT_BASE/fsck.log" 2>&1 ||
		{ cat "$VT_BASE/fsck.log" >&2; vt_fail "$1: fsck found the image damaged"; }
}

# Unmount, and expect the daemon to exit with status $1.
umount_expect() {
	local st
	fusermount3 -u "$VT_MNT" || vt_fail "fusermount3 -u"
	wait "$VT_PID"
	st=$?
	VT_PID=
	[ "$st" = "$1" ] || vt_fail "daemon exited with $st after unmount, expected $1"
}

kill_daemon() {
	kill -9 "$VT_PID"
	wait "$VT_PID" 2>/dev/null
	VT_PID=
	fusermount3 -u -z "$VT_MNT" 2>/dev/null
}

# fsync FILE (or fsyncdir DIR); echo the error text, if any; succeed iff it did.
fsync_of() {
	local out
	out=$(sync -- "$1" 2>&1) && return 0
	echo "$out"
	return 1
}

expect_fsync_error() { # PATH "Error text"
	local out
	out=$(fsync_of "$1") && vt_fail "fsync of $1 succeeded, expected: $2"
	case $out in
	*"$2"*) ;;
	*) vt_fail "fsync of $1: '$out', expected: $2" ;;
	esac
}

same() { # FILE REFERENCE
	cmp -s "$1" "$2" || vt_fail "$1 differs from what was written"
}

mkdata() { head -c "$2" /dev/urandom >"$VT_BASE/$1"; }

vt_mkfs 128M
mkdata a 3000000
mkdata b 700000
mkdata c 500000
mkdata d 20000

# -- 1. one failed write ------------------------------------------------------
mount_fs pool=64M
cp "$VT_BASE/a" "$VT_MNT/a" && fsync_of "$VT_MNT/a" >/dev/null || vt_fail "write a"
vt_umount

mount_fs pool=64M,fault_write_at=3,fault_err=EIO
cp "$VT_BASE/b" "$VT_MNT/b" || vt_fail "write b"
expect_fsync_error "$VT_MNT/b" "Input/output error"
# still serving: old data, the new file, new requests
same "$VT_MNT/a" "$VT_BASE/a"
same "$VT_MNT/b" "$VT_BASE/b"
stat "$VT_MNT/a" >/dev/null || vt_fail "stat a"
mkdir "$VT_MNT/dir" && cp "$VT_BASE/d" "$VT_MNT/dir/d" || vt_fail "new requests after EIO"
# the disk is fine again
fsync_of "$VT_MNT/b" >/dev/null || vt_fail "the second fsync of b failed"
vt_umount
fsck_clean "one failed write"
mount_fs pool=64M
same "$VT_MNT/a" "$VT_BASE/a"
same "$VT_MNT/b" "$VT_BASE/b"
same "$VT_MNT/dir/d" "$VT_BASE/d"
vt_umount
vt_note "1: EIO from fsync, served on, fsync again, all there"

# -- 2. a sync after the commit fails, then kill -9 --------------------------
# The syncs of a checkpoint: 1 commits the journal, 2 the home pages (the
# superblock among them). An fsync is answered at the commit: c is durable
# then, so the fsync succeeds although the home sync fails after it.
mount_fs pool=64M,fault_sync_at=2,fault_err=EIO
cp "$VT_BASE/c" "$VT_MNT/c" || vt_fail "write c"
fsync_of "$VT_MNT/c" >/dev/null || vt_fail "fsync of c (durable at the commit) failed"
same "$VT_MNT/a" "$VT_BASE/a"
kill_daemon
grep -q "journal is replayed before the next one" "$VT_LOG" ||
	vt_fail "the daemon did not see the checkpoint as committed"
mount_fs pool=64M
# The home writes were done, only their sync failed: the remount finds them
# home (a power cut instead would have it replay them: crash_fs, test_journal).
grep -qE "recovery: (replayed|checkpoint [0-9]+ was home already)" "$VT_LOG" ||
	vt_fail "the remount did not look at the committed journal"
same "$VT_MNT/a" "$VT_BASE/a"
same "$VT_MNT/b" "$VT_BASE/b"
# c: committed to the journal before the failed sync, so it came back
same "$VT_MNT/c" "$VT_BASE/c"
vt_umount
fsck_clean "failed sync and kill -9"
vt_note "2: EIO after the commit, kill -9, journal checked, all there"

# -- 3. the disk fails for good (ENOSPC on every write) -----------------------
mount_fs pool=64M,fault_write_at=1,fault_err=ENOSPC,fault_sticky
cp "$VT_BASE/d" "$VT_MNT/e" || vt_fail "write e"
expect_fsync_error "$VT_MNT/e" "No space left on device"
expect_fsync_error "$VT_MNT" "No space left on device" # fsyncdir
same "$VT_MNT/a" "$VT_BASE/a"
same "$VT_MNT/e" "$VT_BASE/d"
ls "$VT_MNT/dir" >/dev/null && stat "$VT_MNT/c" >/dev/null || vt_fail "stat/readdir"
echo more >"$VT_MNT/f" || vt_fail "a new small file"
expect_fsync_error "$VT_MNT/f" "No space left on device"
umount_expect 1
grep -q "writing the image back failed: No space left on device" "$VT_LOG" ||
	vt_fail "the daemon did not say that the unmount failed"
fsck_clean "a dead disk"
mount_fs pool=64M
same "$VT_MNT/a" "$VT_BASE/a"
same "$VT_MNT/b" "$VT_BASE/b"
same "$VT_MNT/c" "$VT_BASE/c"
[ -e "$VT_MNT/e" ] || [ -e "$VT_MNT/f" ] && vt_fail "files never acknowledged came back"
rm -f "$VT_MNT/a" "$VT_MNT/b" "$VT_MNT/c"
vt_umount
vt_note "3: ENOSPC for good: fsync and fsyncdir fail, served on, unmount fails, image as acknowledged"

# -- 4. the image fills up -----------------------------------------------------
mount_fs pool=64M
# First most of it in 1 MiB requests, a dozen at a time from the kernel's
# writeback: what they change together must fit one checkpoint's journal
# (16 MiB here), or no fsync can ever succeed again.
mkdata big1 $((90 << 20))
dd if="$VT_BASE/big1" of="$VT_MNT/big1" bs=1M conv=fsync status=none ||
	vt_fail "90 MiB in a 128 MiB image"
same "$VT_MNT/big1" "$VT_BASE/big1"
rm "$VT_MNT/big1" "$VT_BASE/big1" && fsync_of "$VT_MNT" >/dev/null || vt_fail "rm big1"
free_before=$(stat -f -c %f "$VT_MNT")
out=$(dd if=/dev/urandom of="$VT_MNT/big" bs=1M count=200 conv=fsync status=none 2>&1) &&
	vt_fail "200 MiB fit in a 128 MiB image"
case $out in
*"No space left on device"*) ;;
*) vt_fail "filling the image: '$out', expected ENOSPC" ;;
esac
size=$(stat -c %s "$VT_MNT/big")
[ "$size" -gt $((64 << 20)) ] || vt_fail "only $size bytes written before ENOSPC"
free_full=$(stat -f -c %f "$VT_MNT")
[ "$free_full" -lt $((free_before / 20)) ] || vt_fail "$free_full blocks free after the fill"
same "$VT_MNT/dir/d" "$VT_BASE/d"
echo x >"$VT_MNT/dir/x" 2>/dev/null # may fail: the image is full
rm "$VT_MNT/big" || vt_fail "rm big"
fsync_of "$VT_MNT" >/dev/null || vt_fail "fsyncdir after rm"
free_after=$(stat -f -c %f "$VT_MNT")
[ "$free_after" -gt $((free_before - 100)) ] ||
	vt_fail "$free_after blocks free after rm, $free_before before"
mkdata big2 $((40 << 20))
cp "$VT_BASE/big2" "$VT_MNT/big2" && fsync_of "$VT_MNT/big2" >/dev/null ||
	vt_fail "writing after the space came back"
same "$VT_MNT/big2" "$VT_BASE/big2"
vt_umount
fsck_clean "a full image"
mount_fs pool=64M
same "$VT_MNT/big2" "$VT_BASE/big2"
same "$VT_MNT/dir/d" "$VT_BASE/d"
vt_umount
fsck_clean "a full image, remounted"
vt_note "4: filled ($size bytes, ENOSPC), served on, rm, written again"
echo "fault_mount${want_transport:+ over $want_transport}: all passed"
