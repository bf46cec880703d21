#!/bin/bash
# fs_mount.sh - how the daemon and mkfs behave at the edges: a file that is
# not an image, a second daemon on a mounted image, SIGTERM, mkfs over an
# existing image, unknown or bad options (each value has a range), generic
# mount options (each one mounts), remount, where the log goes, a busy
# unmount.  Each refusal must
# exit non-zero (not by a signal), say something on stderr, and leave
# nothing mounted.  Needs the real daemon: skipped under VS_TEST_DIR.
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "mount behaviour needs the real daemon, not VS_TEST_DIR"
vt_init
OPTS=pool=64M${VS_TEST_OPTS:+,$VS_TEST_OPTS}
M2=$VT_BASE/mnt2
mkdir "$M2"
VT_EXTRA_MNTS=$M2

# expect_refusal WHAT MOUNTPOINT CMD...: CMD must exit non-zero (not killed by
# a signal, not hang), print an error on stderr, and not mount anything.
# The stderr text is left in $VT_BASE/err for further checks.
expect_refusal() {
	local what=$1 mp=$2 st
	shift 2
	timeout 30 "$@" >"$VT_BASE/out" 2>"$VT_BASE/err"
	st=$?
	cat "$VT_BASE/err" >>"$VT_LOG"
	[ $st = 124 ] && vt_fail "$what: still running after 30 s (should have refused)"
	[ $st = 0 ] && vt_fail "$what: exited 0 (should have refused)"
	[ $st -ge 128 ] && vt_fail "$what: killed by signal $((st - 128))"
	[ -s "$VT_BASE/err" ] || vt_fail "$what: no message on stderr"
	if vt_is_mounted "$mp"; then
		fusermount3 -u -z "$mp"
		vt_fail "$what: refused, but left $mp mounted"
	fi
	vt_note "$what: refused (exit $st): $(head -n 1 "$VT_BASE/err")"
}

# ---- mkfs ------------------------------------------------------------------
vt_mkfs 256M
[ -s "$VT_IMAGE" ] || vt_fail "mkfs made no image"
sum0=$(sha256sum <"$VT_IMAGE")
expect_refusal "mkfs over an existing image without --force" "$VT_MNT" \
	"$VS_MKFS" "$VT_IMAGE" --size 256M
[ "$(sha256sum <"$VT_IMAGE")" = "$sum0" ] || vt_fail "refused mkfs still changed the image"
expect_refusal "mkfs with a bad size" "$VT_MNT" "$VS_MKFS" "$VT_BASE/badsize.img" --size banana
expect_refusal "mkfs of a 4M image" "$VT_MNT" "$VS_MKFS" "$VT_BASE/tiny.img" --size 4M
grep -q "at least 16M" "$VT_BASE/err" || vt_fail "mkfs 4M: the message does not say the minimum"
[ -e "$VT_BASE/tiny.img" ] && vt_fail "a refused mkfs left $VT_BASE/tiny.img behind"
expect_refusal "mkfs without arguments" "$VT_MNT" "$VS_MKFS"
# A file image gets all its blocks (a full host shows now, not as write
# errors later), unless --sparse.
used_kib() { du -k "$1" | cut -f1; }
[ "$(used_kib "$VT_IMAGE")" -ge $((256 * 1024)) ] ||
	vt_fail "mkfs did not preallocate: $(used_kib "$VT_IMAGE") KiB of 256 MiB in use"
"$VS_MKFS" "$VT_BASE/sparse.img" --size 256M --sparse >>"$VT_LOG" 2>&1 || vt_fail "mkfs --sparse"
[ "$(used_kib "$VT_BASE/sparse.img")" -lt $((64 * 1024)) ] ||
	vt_fail "mkfs --sparse allocated $(used_kib "$VT_BASE/sparse.img") KiB"
rm -f "$VT_BASE/sparse.img"
if [ "$(id -u)" = 0 ]; then
	mkdir "$VT_BASE/small"
	mount -t tmpfs -o size=20M vstest-small "$VT_BASE/small" || vt_fail "tmpfs for the ENOSPC case"
	expect_refusal "mkfs of a 32M image on a 20M filesystem" "$VT_MNT" \
		"$VS_MKFS" "$VT_BASE/small/big.img" --size 32M
	grep -q "too full" "$VT_BASE/err" || vt_fail "mkfs ENOSPC: the message does not say why"
	[ -e "$VT_BASE/small/big.img" ] && vt_fail "mkfs left a half-made image on a full host"
	umount "$VT_BASE/small"
else
	vt_note "not root: the full-host mkfs case needs a small tmpfs, skipped"
fi

# ---- not an image ----------------------------------------------------------
head -c 1048576 /dev/urandom >"$VT_BASE/random.img"
cp "$VT_BASE/random.img" "$VT_BASE/random.copy"
expect_refusal "mounting random bytes" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_BASE/random.img" "$VT_MNT" -f -o "$OPTS"
grep -qiE 'image|magic|superblock|format|virtuscale' "$VT_BASE/err" ||
	vt_fail "mounting random bytes: the message does not say what is wrong: $(cat "$VT_BASE/err")"
printf 'hello, I am a text file\n' >"$VT_BASE/text.img"
expect_refusal "mounting a text file" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_BASE/text.img" "$VT_MNT" -f -o "$OPTS"
: >"$VT_BASE/empty.img"
expect_refusal "mounting an empty file" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_BASE/empty.img" "$VT_MNT" -f -o "$OPTS"
expect_refusal "mounting a missing file" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_BASE/missing.img" "$VT_MNT" -f -o "$OPTS"
[ -e "$VT_BASE/missing.img" ] && vt_fail "mounting a missing image created it"
# A refused file must be left exactly as it was.
cmp -s "$VT_BASE/random.img" "$VT_BASE/random.copy" ||
	vt_fail "the refused random file was modified"

# ---- options ----------------------------------------------------------------
expect_refusal "unknown -o option" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$OPTS,bogus_option_xyz=1"
grep -q 'bogus_option_xyz' "$VT_BASE/err" ||
	vt_fail "unknown option: the message does not name it: $(cat "$VT_BASE/err")"
expect_refusal "pool=banana" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o pool=banana
expect_refusal "dirty_cache=lots" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$OPTS,dirty_cache=lots"
grep -q 'dirty_cache=lots' "$VT_BASE/err" ||
	vt_fail "dirty_cache=lots: the message does not name it: $(cat "$VT_BASE/err")"
expect_refusal "missing mountpoint" "$VT_BASE/nowhere" \
	"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_BASE/nowhere" -f -o "$OPTS"
expect_refusal "no arguments" "$VT_MNT" "$VS_VIRTUSCALE"

# ---- a mounted image is not mounted twice -----------------------------------
vt_mount "$OPTS"
echo "first mount" >"$VT_MNT/hello" || vt_fail "write on the first mount"
expect_refusal "second daemon on the same image" "$M2" \
	"$VS_VIRTUSCALE" "$VT_IMAGE" "$M2" -f -o "$OPTS"
[ "$(cat "$VT_MNT/hello")" = "first mount" ] || vt_fail "first mount broken by the second daemon"
echo "still fine" >"$VT_MNT/hello2" || vt_fail "first mount not writable after the refusal"
# mkfs --force on a mounted image would pull the floor from under the daemon.
if timeout 30 "$VS_MKFS" "$VT_IMAGE" --size 256M --force >>"$VT_LOG" 2>&1; then
	vt_fail "mkfs --force on a mounted image succeeded"
fi
[ "$(cat "$VT_MNT/hello2")" = "still fine" ] || vt_fail "mount broken after refused mkfs --force"

# ---- busy unmount -----------------------------------------------------------
exec 9<"$VT_MNT/hello"
if fusermount3 -u "$VT_MNT" 2>>"$VT_LOG"; then
	exec 9<&-
	wait "$VT_PID"
	VT_PID=
	vt_fail "fusermount3 -u succeeded with a file open"
fi
vt_is_mounted "$VT_MNT" || vt_fail "a refused unmount left the mount gone"
exec 9<&-

# ---- SIGTERM: clean unmount, data kept --------------------------------------
head -c 3000000 /dev/urandom >"$VT_BASE/payload"
cp "$VT_BASE/payload" "$VT_MNT/payload" || vt_fail "copy onto the mount"
mkdir -p "$VT_MNT/d/e" && ln -s ../payload "$VT_MNT/d/link" || vt_fail "mkdir/symlink"
# An unlinked file still open when the daemon stops is an orphan: the next
# mount must free its space.
avail() { df -k --output=avail "$VT_MNT" | tail -n 1; }
sync
avail0=$(avail)
head -c 20971520 /dev/urandom >"$VT_MNT/orphan" || vt_fail "writing the orphan"
exec 8<"$VT_MNT/orphan"
rm "$VT_MNT/orphan"
sync
[ $(($(avail) + 15360)) -le "$avail0" ] ||
	vt_fail "an open unlinked 20 MiB file does not hold its space ($avail0 -> $(avail) KiB)"
kill -TERM "$VT_PID"
for _ in $(seq 600); do kill -0 "$VT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$VT_PID" 2>/dev/null && vt_fail "daemon still running 60 s after SIGTERM"
wait "$VT_PID"
st=$?
VT_PID=
[ $st = 0 ] || vt_fail "daemon exited with status $st after SIGTERM"
vt_is_mounted "$VT_MNT" && vt_fail "still mounted after the daemon exited on SIGTERM"
exec 8<&-
vt_mount "$OPTS"
cmp "$VT_BASE/payload" "$VT_MNT/payload" || vt_fail "payload differs after SIGTERM + remount"
[ $(($(avail) + 2048)) -ge "$avail0" ] ||
	vt_fail "the orphan's space was not freed by the next mount ($avail0 -> $(avail) KiB)"
cmp "$VT_BASE/payload" "$VT_MNT/d/link" || vt_fail "symlink broken after SIGTERM + remount"
[ "$(cat "$VT_MNT/hello")" = "first mount" ] || vt_fail "hello lost after SIGTERM"
vt_umount

# ---- read-ahead: raised to 1 MiB by default, or as asked --------------------
# The daemon writes the mount's backing-device knob once the kernel has taken
# its INIT reply (which would lower it again). Root only: a user mount keeps
# the kernel's 128 KiB.
ra_of() { cat "/sys/class/bdi/$(mountpoint -d "$VT_MNT")/read_ahead_kb"; }
wait_ra() { # wait_ra KIB: the knob reaches KIB within 10 s
	for _ in $(seq 100); do [ "$(ra_of)" = "$1" ] && return 0; sleep 0.1; done
	return 1
}
if [ "$(id -u)" = 0 ]; then
	vt_mount "$OPTS"
	wait_ra 1024 || vt_fail "read-ahead is $(ra_of) KiB, not the default 1024"
	vt_umount
	vt_mount "$OPTS,readahead=4096"
	wait_ra 4096 || vt_fail "readahead=4096: read-ahead is $(ra_of) KiB"
	vt_umount
	vt_mount "$OPTS,readahead=0"
	sleep 1
	[ "$(ra_of)" = 128 ] || vt_fail "readahead=0 should keep the kernel's 128 KiB, got $(ra_of)"
	vt_umount
	vt_note "read-ahead: 1024 by default, 4096 and 0 as asked"
else
	vt_note "read-ahead: not checked (needs root)"
fi

# ---- written data the kernel may hold (fs/dirty.c) -------------------------
# With less free space than twice the machine's dirty limit: strict, and at
# most half the free space (capped by dirty_cache when given). With more
# (a sparse image): the strict 1% a FUSE mount gets is lifted and max_bytes
# is dirty_cache, the pool's size by default. dirty_cache=0: the kernel's.
bdi_of() { cat "/sys/class/bdi/$(mountpoint -d "$VT_MNT")/$1"; }
wait_bdi() { # wait_bdi KNOB VALUE
	for _ in $(seq 100); do [ "$(bdi_of "$1")" = "$2" ] && return 0; sleep 0.1; done
	return 1
}
near() { # near VALUE WANT PERCENT: the kernel rounds max_bytes to its ratio steps
	[ "$1" -ge $(($2 * (100 - $3) / 100)) ] && [ "$1" -le $(($2 * (100 + $3) / 100)) ]
}
if [ "$(id -u)" = 0 ] && ls /sys/class/bdi/*/max_bytes >/dev/null 2>&1; then
	vt_mount "$OPTS"
	wait_bdi strict_limit 1 || vt_fail "256M image: strict_limit is $(bdi_of strict_limit), not 1"
	mb=$(bdi_of max_bytes)
	half=$(($(stat -f -c '%a * %S' "$VT_MNT") / 2))
	[ "$mb" -le $((half * 101 / 100)) ] && [ "$mb" -ge $((half / 2 * 99 / 100)) ] ||
		vt_fail "256M image: max_bytes is $mb, not the power of two below half the free $((half * 2))"
	# and buffered writes still land: rewrite, fsync, remount, compare
	head -c 8M /dev/urandom >"$VT_BASE/dirty"
	for _ in 1 2 3; do cp "$VT_BASE/dirty" "$VT_MNT/dirty"; done
	sync "$VT_MNT/dirty"
	vt_umount
	vt_mount "$OPTS,dirty_cache=16M"
	cmp "$VT_BASE/dirty" "$VT_MNT/dirty" || vt_fail "dirty data lost across the remount"
	wait_bdi strict_limit 1 || vt_fail "dirty_cache=16M: strict_limit is $(bdi_of strict_limit)"
	near "$(bdi_of max_bytes)" $((16 << 20)) 10 || vt_fail "dirty_cache=16M: max_bytes is $(bdi_of max_bytes)"
	vt_umount
	vt_mount "$OPTS,dirty_cache=0"
	sleep 1
	[ "$(bdi_of strict_limit)" = 1 ] && ! near "$(bdi_of max_bytes)" $((64 << 20)) 10 ||
		vt_fail "dirty_cache=0 should keep the kernel's limits"
	vt_umount
	# Ample space: a sparse image of three times the machine's dirty limit.
	thresh=$(awk '$1 == "nr_dirty_threshold" {printf "%.0f", $2 * 4096}' /proc/vmstat)
	big=$VT_BASE/big.img
	"$VS_MKFS" "$big" --size $(((thresh * 3 >> 30) + 2))G --sparse >>"$VT_LOG" 2>&1 ||
		vt_fail "mkfs of a sparse image of $(((thresh * 3 >> 30) + 2))G"
	img=$VT_IMAGE
	VT_IMAGE=$big
	vt_mount "$OPTS"
	wait_bdi strict_limit 0 || vt_fail "ample space: strict_limit is $(bdi_of strict_limit), not lifted"
	# (the kernel keeps max_bytes as a share of its dirty limit, which moves
	# with free memory: the value read back drifts by a few percent)
	near "$(bdi_of max_bytes)" $((64 << 20)) 10 || vt_fail "ample space: max_bytes is $(bdi_of max_bytes), not the 64M pool"
	vt_umount
	# more than the kernel's whole dirty limit: all of it, and no crash
	vt_mount "$OPTS,dirty_cache=64T"
	wait_bdi strict_limit 0 || vt_fail "dirty_cache=64T: strict_limit is $(bdi_of strict_limit)"
	[ "$(bdi_of max_ratio)" = 100 ] || vt_fail "dirty_cache=64T: max_ratio is $(bdi_of max_ratio)"
	echo alive >"$VT_MNT/alive" && [ "$(cat "$VT_MNT/alive")" = alive ] ||
		vt_fail "dirty_cache=64T: the mount does not work"
	vt_umount
	VT_IMAGE=$img
	rm -f "$big"
	vt_note "dirty cache: half the free space when tight, the pool's size when ample, 16M and 0 as asked"
else
	vt_note "dirty cache: not checked (needs root and a kernel with max_bytes)"
fi

# ---- max_read: the kernel's option, which libfuse also wants from init() ----
# Before op_init passed it on, libfuse ended the session at FUSE_INIT
# ("init() and fuse_session_new() requested different maximum read size"):
# the mount was left with no daemon behind it.
vt_mount "$OPTS,max_read=131072"
head -c 3M /dev/urandom >"$VT_BASE/mr"
cp "$VT_BASE/mr" "$VT_MNT/mr" && sync "$VT_MNT/mr" || vt_fail "max_read=131072: cannot write"
vt_umount
vt_mount "$OPTS,max_read=131072"
dd if="$VT_MNT/mr" bs=1M iflag=direct 2>/dev/null | cmp - "$VT_BASE/mr" ||
	vt_fail "max_read=131072: O_DIRECT reads differ"
cmp "$VT_MNT/mr" "$VT_BASE/mr" || vt_fail "max_read=131072: buffered reads differ"
vt_umount
for bad in max_read=12 max_read=x max_read=; do
	expect_refusal "$bad" "$VT_MNT" "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$OPTS,$bad"
	grep -q "$bad: use a byte count" "$VT_BASE/err" || vt_fail "$bad: no clear message"
done
vt_note "max_read: honoured, bad values refused"

# ---- threads: bounded by the pool (each request may hold a few dozen pages) -
vt_mount "pool=8M,threads=64"
grep -q "threads=64: a pool of 8 MiB serves at most 16 threads at once; using 16" "$VT_LOG" ||
	vt_fail "threads=64 on an 8 MiB pool: no clamp, or no message"
head -c 2M /dev/urandom >"$VT_BASE/th"
cp "$VT_BASE/th" "$VT_MNT/th" && cmp "$VT_MNT/th" "$VT_BASE/th" || vt_fail "threads clamped: I/O fails"
vt_umount
vt_note "threads: bounded by the pool, with a message"

# ---- poll: on by default (t_polling in fs_pool), off with poll=0 ----------
vt_mount "$OPTS,poll=0"
dd if=/dev/zero of="$VT_MNT/p" bs=4k count=64 oflag=direct 2>/dev/null || vt_fail "poll=0: cannot write"
dd if="$VT_MNT/p" of=/dev/null bs=4k iflag=direct 2>/dev/null || vt_fail "poll=0: cannot read"
for c in 'reads_total{thread="awake"}' 'reads_total{thread="woken"}' \
	'reader_handoffs_total{why="wait"}'; do
	v=$(awk -v k="virtuscale_fuse_$c" '$1 == k {print $2}' "$VT_MNT/.virtuscale/stats")
	[ "$v" = 0 ] || vt_fail "poll=0: virtuscale_fuse_$c is '$v', not 0"
done
vt_umount
for bad in poll=20000 poll=x; do
	expect_refusal "$bad" "$VT_MNT" "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$OPTS,$bad"
	grep -q "$bad" "$VT_BASE/err" || vt_fail "$bad: the message does not name it"
done
vt_note "poll=0: no polling; bad values refused"

# ---- the stats file: one snapshot per open, however it is read -----------
# Read in 16-byte pieces, every piece is a FUSE read that counts itself. If
# the pieces came from one rendering (taken at the first read), the read
# counter it shows is at least one read per piece below what a fresh open
# shows after; if each piece were rendered afresh, the counter line (in the
# middle of the file) would show the reads before it, and the gap would be
# only the pieces after it.
vt_mount "$OPTS"
S=$VT_MNT/.virtuscale/stats
rc() { awk '$1 == "virtuscale_fuse_requests_total{op=\"read\"}" {print $2}'; }
pieces=$(dd if="$S" bs=16 2>/dev/null)
after=$(cat "$S" | rc)
before=$(printf '%s\n' "$pieces" | rc)
n=$(((${#pieces} + 15) / 16))
[ -n "$before" ] && [ -n "$after" ] || vt_fail "stats: no read counter in '$pieces'"
[ $((after - before)) -ge "$n" ] ||
	vt_fail "stats read in $n pieces shows $before reads, a fresh read $after: torn"
bad=$(printf '%s\n' "$pieces" | grep -Ev '^(# (HELP|TYPE) .*|[a-z_]+(\{[^}]*\})? -?[0-9][0-9.e+]*)$' | head -3)
[ -z "$bad" ] || vt_fail "stats read in pieces: malformed lines: $bad"
# Many readers opening, reading and closing at once: a release racing the
# reply of the last read must not free the snapshot under it (the daemon
# died of that; under ASan it is reported at once).
for _ in 1 2 3; do
	pids=
	for _ in $(seq 30); do
		(head -c 100 "$S" >/dev/null; dd if="$S" bs=16 of=/dev/null 2>/dev/null) &
		pids="$pids $!"
	done
	wait $pids
done
kill -0 "$VT_PID" 2>/dev/null && grep -q virtuscale_daemon_pid "$S" ||
	vt_fail "the daemon did not survive 90 concurrent readers of the stats file"
vt_umount
vt_note "stats file: one snapshot per open"

# ---- options: every value checked against its range before mounting ---------
# Each refusal names the option and the range (fs/main.c check_numbers).
while IFS='|' read -r opt want; do
	expect_refusal "$opt" "$VT_MNT" "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$OPTS,$opt"
	grep -qF "$want" "$VT_BASE/err" || vt_fail "$opt: the message is not '$want': $(cat "$VT_BASE/err")"
done <<'LIST'
readahead=-5|readahead=-5: use a size in KiB between 0 and 1048576
readahead=4G|readahead=4G: use a size in KiB between 0 and 1048576
threads=0|threads=0: use a number of threads between 1 and 1024
threads=-1|threads=-1: use a number of threads between 1 and 1024
threads=100000|threads=100000: use a number of threads between 1 and 1024
max_write=0|max_write=0: use a byte count between 4096 and 1048576
max_write=4194304|max_write=4194304: use a byte count between 4096 and 1048576
poll=-1|poll=-1: use microseconds between 0 and 10000
timeout=-1|timeout=-1: use seconds between 0 and 31536000
timeout=nan|timeout=nan: use seconds between 0 and 31536000
fault_write_at=-1|fault_write_at=-1: use a count of writes
log=|log=: name the file to append messages to
user_id=0|user_id=0: libfuse sets it; mount(8) passes it only with remount
LIST
expect_refusal "log= in a missing directory" "$VT_MNT" \
	"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$OPTS,log=$VT_BASE/nowhere/vs.log"
grep -q "log=$VT_BASE/nowhere/vs.log: No such file or directory" "$VT_BASE/err" ||
	vt_fail "log= in a missing directory: $(cat "$VT_BASE/err")"
# A pool larger than the image is cut to the image, and says so in one line.
: >"$VT_LOG.pool"
VT_LOG_SAVE=$VT_LOG VT_LOG=$VT_LOG.pool
vt_mount "pool=100T"
VT_LOG=$VT_LOG_SAVE
vt_umount
grep -q "pool=100T: more than the image holds (256 MiB); using 256 MiB" "$VT_LOG.pool" ||
	vt_fail "pool=100T: no line saying it was cut to the image: $(cat "$VT_LOG.pool")"
cat "$VT_LOG.pool" >>"$VT_LOG"
vt_note "options: out-of-range values refused, a pool cut to the image said"

# ---- generic mount options: taken as a kernel filesystem takes them ----------
# libfuse 3.14 refuses relatime, strictatime, nodiratime, lazytime, ...: the
# daemon applies them by a remount once mounted (root only). fstab's words
# are dropped. Of ro and rw the last one wins.
mi_opts() { # "<mount options> <superblock options>" of VT_MNT
	awk -v mp="$(realpath "$VT_MNT")" '$5 == mp {
		for (i = 7; i <= NF; i++) if ($i == "-") { s = $(i + 3); break }
		o = $6 " " s } END { print o }' /proc/self/mountinfo
}
wait_mi() { # wait_mi ERE: the mountinfo options of VT_MNT match within 5 s
	for _ in $(seq 50); do mi_opts | grep -qE "$1" && return 0; sleep 0.1; done
	return 1
}
vt_mount "$OPTS,defaults,auto,noauto,user,nouser,users,_netdev,nofail,x-systemd.automount,X-mount.mkdir,comment=vs,silent,loud"
vt_umount
vt_mount "$OPTS,atime,diratime,norelatime,nostrictatime,nolazytime,async,suid,dev,exec,symfollow"
vt_umount
while IFS='|' read -r opt want; do
	vt_mount "$OPTS,$opt"
	echo "$opt" >"$VT_MNT/generic" || vt_fail "$opt: the mount is not writable"
	if [ "$(id -u)" = 0 ]; then
		wait_mi "$want" || vt_fail "$opt: mountinfo shows '$(mi_opts)', not /$want/"
	fi
	vt_umount
done <<'LIST'
relatime|(^|,)relatime[, ]
noatime|(^|,)noatime[, ]
noatime,relatime|^([a-z]+,)*relatime[, ]
strictatime|^[a-z,]* 
nodiratime|(^|,)nodiratime[, ]
lazytime| (.*,)?lazytime(,|$)
nosymfollow|(^|,)nosymfollow[, ]
nosuid,nodev,noexec,sync,dirsync|nosuid,nodev,noexec.* (.*,)?sync,dirsync
LIST
if [ "$(id -u)" = 0 ]; then
	vt_mount "$OPTS,strictatime"
	sleep 1
	mi_opts | grep -qE "(^|,)(relatime|noatime)[, ]" && vt_fail "strictatime: $(mi_opts)"
	vt_umount
	vt_mount "$OPTS,noatime,relatime"
	wait_mi "relatime" && ! mi_opts | grep -q noatime || vt_fail "noatime,relatime: $(mi_opts)"
	vt_umount
fi
vt_mount "$OPTS,ro,rw"
echo rw >"$VT_MNT/last-wins" || vt_fail "ro,rw: the mount is not writable (the last one should win)"
vt_umount
vt_mount "$OPTS,rw,ro"
if echo ro >"$VT_MNT/last-wins-ro" 2>/dev/null; then vt_fail "rw,ro: the mount is writable"; fi
[ "$(cat "$VT_MNT/last-wins")" = rw ] || vt_fail "rw,ro: the file written before is gone"
vt_umount
vt_note "generic mount options: each mounts, flags applied, the last of ro/rw wins"

# ---- remount: what mount -o remount,... runs -------------------------------
# mount(8) on a mounted fuse.virtuscale runs mount.fuse3, which starts the
# daemon with the mount's options, `remount` among them. No second daemon:
# the mount flags change; the rest is kept, or refused when it cannot be.
if [ "$(id -u)" = 0 ]; then
	AS_MOUNT=ro,relatime,remount,user_id=0,group_id=0,default_permissions
	vt_mount "$OPTS"
	echo before >"$VT_MNT/rm" || vt_fail "remount: write before"
	timeout 30 "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -o "$AS_MOUNT" 2>"$VT_BASE/err" ||
		vt_fail "remount,ro refused: $(cat "$VT_BASE/err")"
	mi_opts | grep -q "^ro," || vt_fail "remount,ro: mountinfo shows $(mi_opts)"
	if echo x >"$VT_MNT/rm2" 2>/dev/null; then vt_fail "remount,ro: still writable"; fi
	[ "$(cat "$VT_MNT/rm")" = before ] || vt_fail "remount,ro: the file reads back wrong"
	timeout 30 "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -o "rw,remount,pool=1G" 2>"$VT_BASE/err" ||
		vt_fail "remount,rw refused: $(cat "$VT_BASE/err")"
	grep -q "pool=1G: not changed" "$VT_BASE/err" || vt_fail "remount,pool=1G: no line: $(cat "$VT_BASE/err")"
	echo after >"$VT_MNT/rm" || vt_fail "remount,rw: not writable again"
	expect_refusal "remount,allow_other" "$M2" \
		"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -o "rw,remount,allow_other"
	grep -q "allow_other: cannot change on a mounted FUSE filesystem" "$VT_BASE/err" ||
		vt_fail "remount,allow_other: $(cat "$VT_BASE/err")"
	expect_refusal "remount of a directory not mounted" "$M2" \
		"$VS_VIRTUSCALE" "$VT_IMAGE" "$M2" -o "rw,remount"
	# through mount.fuse3 itself, with our daemon first in PATH
	if [ -x /sbin/mount.fuse3 ]; then
		mkdir -p "$VT_BASE/bin" && ln -sf "$VS_VIRTUSCALE" "$VT_BASE/bin/virtuscale"
		PATH=$VT_BASE/bin:$PATH timeout 30 /sbin/mount.fuse3 "$VT_IMAGE" "$VT_MNT" \
			-t fuse.virtuscale -o "$AS_MOUNT,_netdev" 2>"$VT_BASE/err" ||
			vt_fail "mount.fuse3 remount,ro: $(cat "$VT_BASE/err")"
		mi_opts | grep -q "^ro," || vt_fail "mount.fuse3 remount,ro: mountinfo shows $(mi_opts)"
	fi
	vt_umount
	# a daemon that opened its image read-only cannot start writing
	vt_mount "$OPTS,ro"
	expect_refusal "remount,rw of a read-only daemon" "$M2" \
		"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -o "rw,remount"
	grep -q "opened $VT_IMAGE read-only; unmount and mount again without ro" "$VT_BASE/err" ||
		vt_fail "remount,rw of a read-only daemon: $(cat "$VT_BASE/err")"
	mi_opts | grep -q "^ro," || vt_fail "a refused remount changed the flags: $(mi_opts)"
	vt_umount
	vt_mount "$OPTS"
	[ "$(cat "$VT_MNT/rm")" = after ] || vt_fail "remount: the data written after remount,rw is gone"
	vt_umount
	vt_note "remount: flags applied, the daemon's options kept, the rest refused"
else
	vt_note "remount: not checked (needs root)"
fi

# ---- where messages go -------------------------------------------------------
# Nobody asked for exmap: no line about it. log=FILE gets timestamped lines,
# in the foreground and in the background; without it and without syslog the
# background daemon says, before it detaches, that its messages are lost.
"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$OPTS,log=$VT_BASE/fg.log" 2>"$VT_BASE/fg.err" &
VT_PID=$!
for _ in $(seq 300); do vt_is_mounted "$VT_MNT" && break; sleep 0.1; done
vt_umount
cat "$VT_BASE/fg.err" >>"$VT_LOG"
grep -qi exmap "$VT_BASE/fg.err" && vt_fail "a mount without exmap=on talks of exmap: $(cat "$VT_BASE/fg.err")"
grep -qE "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]+ virtuscale\[[0-9]+\]: mounted $VT_IMAGE on" "$VT_BASE/fg.log" ||
	vt_fail "log=FILE: no timestamped 'mounted' line: $(cat "$VT_BASE/fg.log")"
grep -q "unmounted; everything is written back" "$VT_BASE/fg.log" ||
	vt_fail "log=FILE: no line for the unmount: $(cat "$VT_BASE/fg.log")"
timeout 30 "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -o "$OPTS,log=$VT_BASE/bg.log" 2>"$VT_BASE/bg.err" ||
	vt_fail "background mount failed: $(cat "$VT_BASE/bg.err")"
vt_is_mounted "$VT_MNT" || vt_fail "background mount: not mounted"
[ -s "$VT_BASE/bg.err" ] && vt_fail "background mount with log=FILE printed: $(cat "$VT_BASE/bg.err")"
bg_umount() { # the daemon's threads may hold the mount a moment after start
	for _ in $(seq 50); do fusermount3 -u "$VT_MNT" 2>/dev/null && return 0; sleep 0.1; done
	vt_fail "unmounting the background daemon"
}
bg_umount
for _ in $(seq 300); do grep -q "unmounted" "$VT_BASE/bg.log" && break; sleep 0.1; done
grep -q "mounted $VT_IMAGE on" "$VT_BASE/bg.log" && grep -q "unmounted" "$VT_BASE/bg.log" ||
	vt_fail "log=FILE in the background: $(cat "$VT_BASE/bg.log")"
if [ ! -e /dev/log ]; then
	timeout 30 "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -o "$OPTS" 2>"$VT_BASE/bg.err" ||
		vt_fail "background mount failed: $(cat "$VT_BASE/bg.err")"
	bg_umount
	grep -q "no syslog on this machine (/dev/log): .* use -o log=FILE" "$VT_BASE/bg.err" ||
		vt_fail "no syslog, no log=: nothing said: $(cat "$VT_BASE/bg.err")"
	# the daemon writes back and lets go of the image
	for _ in $(seq 300); do flock -n "$VT_IMAGE" true && break; sleep 0.1; done
fi
vt_note "messages: log=FILE in both modes, no exmap line unasked"

# ---- mkfs --force really starts over ----------------------------------------
"$VS_MKFS" "$VT_IMAGE" --size 256M --force >>"$VT_LOG" 2>&1 || vt_fail "mkfs --force failed"
vt_mount "$OPTS"
[ -z "$(ls -A "$VT_MNT")" ] ||
	vt_fail "after mkfs --force the root is not empty: $(ls -A "$VT_MNT")"
vt_umount
vt_note "all mount/unmount checks passed"
exit 0
