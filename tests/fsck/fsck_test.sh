#!/bin/bash
# fsck_test.sh - fsck.virtuscale on real images: a filesystem the daemon
# filled and unmounted cleanly must check clean (exit 0, and a repair run
# writes nothing); a daemon killed with a file unlinked but open leaves an
# orphan that fsck -n accepts (0) and fsck frees (1), after which the files
# read back through a new mount; one flipped byte in a file's data page
# must exit 4 naming a checksum error, in both modes, without a write; a
# file that is not an image must exit 8, a usage error 16; a truncated
# image, a zeroed superblock and a damaged one are each named for what they
# are, with no advice to run mkfs.
# Needs VS_FSCK, VS_MKFS, VS_VIRTUSCALE and /dev/fuse, else exits 77.
set -u

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; [ -s "$T/out" ] && cat "$T/out"; exit 1; }

for v in VS_FSCK VS_MKFS VS_VIRTUSCALE; do
	[ -n "${!v:-}" ] && [ -x "${!v}" ] || skip "$v not set or not executable"
done
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v fusermount3 >/dev/null || skip "no fusermount3"

T=$(mktemp -d /tmp/vs-fsck.XXXXXX)
IMG=$T/img
MNT=$T/mnt
PID=
mkdir "$MNT"
cleanup() {
	if is_mounted; then fusermount3 -u -z "$MNT"; fi
	[ -n "$PID" ] && kill "$PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

is_mounted() { grep -q " $MNT " /proc/self/mountinfo; }

mount_fs() {
	"$VS_VIRTUSCALE" "$IMG" "$MNT" -f -o pool=64M >>"$T/daemon.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		is_mounted && return 0
		kill -0 "$PID" 2>/dev/null || { cat "$T/daemon.log"; skip "daemon could not mount"; }
		sleep 0.1
	done
	fail "not mounted after 10 s"
}

unmount_fs() {
	fusermount3 -u "$MNT" || fail "unmount"
	for _ in $(seq 300); do
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$PID" 2>/dev/null && fail "daemon still running 30 s after unmount"
	wait "$PID"
	PID=
}

sums() { (cd "$MNT" && md5sum a/small a/b/medium big d/marked d/hardlink && readlink symlink); }

"$VS_MKFS" "$IMG" --size 256M --quiet || fail "mkfs"
mount_fs

# A small tree touching every record type.
MARK=VSFSCK-MARKER-$$-$RANDOM-unique
mkdir -p "$MNT/a/b/c" "$MNT/d"
echo small >"$MNT/a/small"
head -c 5000 /dev/urandom >"$MNT/a/b/medium"
head -c 3000000 /dev/urandom >"$MNT/big"
# The marker sits alone in page 1 of a file of extents, so the byte we flip
# is file data and nothing else.
{ head -c 4096 /dev/zero; printf '%s' "$MARK"; head -c 8000 /dev/zero; } >"$MNT/d/marked"
truncate -s 10M "$MNT/sparse"
printf 'tail' | dd of="$MNT/sparse" bs=1 seek=9000000 conv=notrunc status=none
ln "$MNT/a/small" "$MNT/d/hardlink"
ln "$MNT/a/small" "$MNT/hardlink2"
ln -s a/b/medium "$MNT/symlink"
ln -s "$(printf 'x%.0s' $(seq 2000))" "$MNT/longlink"
setfattr -n user.k -v value "$MNT/a/small" 2>/dev/null
setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' v)" "$MNT/big" 2>/dev/null
mv "$MNT/a/b/c" "$MNT/d/c-renamed"
echo gone >"$MNT/gone"
rm "$MNT/gone"
mkfifo "$MNT/fifo" 2>/dev/null
sync
sums >"$T/sums" || fail "reading the files back"

# The daemon holds the image locked: fsck must refuse, not check a moving target.
"$VS_FSCK" "$IMG" >"$T/out" 2>&1
st=$?
[ $st = 8 ] || fail "fsck of a mounted image exited $st, expected 8"
grep -q "in use" "$T/out" || fail "fsck of a mounted image does not say it is in use"

unmount_fs

# ---- clean image -------------------------------------------------------------
sum0=$(md5sum <"$IMG")
"$VS_FSCK" -v "$IMG" >"$T/out" 2>&1
st=$?
cat "$T/out"
[ $st = 0 ] || fail "fsck of a clean image exited $st"
grep -q "^0 problems corrected, 0 left$" "$T/out" || fail "no summary line"
"$VS_FSCK" -n "$IMG" >"$T/out" 2>&1 || fail "fsck -n of a clean image exited $?"
[ "$(md5sum <"$IMG")" = "$sum0" ] || fail "fsck of a clean image changed it"
cp "$IMG" "$T/clean" # for the superblock cases at the end

# ---- an orphan: the daemon killed with an unlinked file open -------------------
mount_fs
if [ -w "$MNT/.virtuscale/control" ]; then
	exec 3<>"$MNT/held"
	head -c 100000 /dev/urandom >&3
	rm "$MNT/held"
	# The unlink and the orphan record reach the image.
	echo checkpoint >"$MNT/.virtuscale/control" || fail "checkpoint"
	kill -9 "$PID"
	wait "$PID" 2>/dev/null
	PID=
	exec 3>&-
	fusermount3 -u -z "$MNT" 2>/dev/null
	"$VS_FSCK" -n "$IMG" >"$T/out" 2>&1
	st=$?
	cat "$T/out"
	[ $st = 0 ] || fail "fsck -n after kill -9 exited $st (an orphan is not damage)"
	grep -q "1 inode on the orphan list" "$T/out" || fail "orphan not mentioned"
	"$VS_FSCK" "$IMG" >"$T/out" 2>&1
	st=$?
	cat "$T/out"
	[ $st = 1 ] || fail "fsck of an image with an orphan exited $st, expected 1"
	grep -q "^FIXED: inode [0-9]*: unlinked while open.*25 data pages freed" "$T/out" ||
		fail "no repair line for the orphan"
	grep -q "^1 problems corrected, 0 left$" "$T/out" || fail "summary line"
	"$VS_FSCK" -n "$IMG" >"$T/out" 2>&1 || { cat "$T/out"; fail "fsck -n after repair exited $?"; }
	mount_fs
	sums >"$T/sums2" || fail "reading the files back after the repair"
	cmp -s "$T/sums" "$T/sums2" || fail "files differ after the repair"
	[ -e "$MNT/held" ] && fail "the orphan came back"
else
	echo "control file not writable: orphan section skipped"
fi
unmount_fs

# ---- one flipped byte in file data -------------------------------------------
# The journal (before the data area) may hold a copy of the page too: the
# home copy is the last one.
off=$(grep -abo -- "$MARK" "$IMG" | tail -n 1 | cut -d: -f1)
echo "marker at byte $off (all: $(grep -abo -- "$MARK" "$IMG" | cut -d: -f1 | tr "\n" " "))"
[ -n "$off" ] || fail "marker not found in the image"
b=$(dd if="$IMG" bs=1 skip="$off" count=1 status=none | od -An -tx1 | tr -d ' ')
printf "\\x$(printf %02x $((0x$b ^ 0xff)))" |
	dd of="$IMG" bs=1 seek="$off" conv=notrunc status=none
page=$((off / 4096))
sum1=$(md5sum <"$IMG")
"$VS_FSCK" -n "$IMG" >"$T/out" 2>&1
st=$?
cat "$T/out"
[ $st = 4 ] || fail "fsck -n of a corrupted image exited $st, expected 4"
grep -q "page $page: checksum mismatch (data of inode [0-9]* (/d/marked) at file offset 4096" \
	"$T/out" || fail "no checksum error naming page $page of /d/marked"
# File data is not repaired: said again, nothing written.
"$VS_FSCK" "$IMG" >"$T/out" 2>&1
st=$?
cat "$T/out"
[ $st = 4 ] || fail "fsck of a corrupted image exited $st, expected 4"
grep -q "page $page: checksum" "$T/out" || fail "no checksum error named for page $page"
grep -q "^0 problems corrected, 1 left$" "$T/out" || fail "summary line"
[ "$(md5sum <"$IMG")" = "$sum1" ] || fail "fsck changed an image it cannot repair"

# ---- not an image --------------------------------------------------------------
head -c 1048576 /dev/urandom >"$T/random"
"$VS_FSCK" "$T/random" >"$T/out" 2>&1
st=$?
[ $st = 8 ] || fail "fsck of random bytes exited $st, expected 8"
"$VS_FSCK" "$T/missing" >"$T/out" 2>&1
st=$?
[ $st = 8 ] || fail "fsck of a missing file exited $st, expected 8"

# ---- usage errors: 16, as fsck(8) says ------------------------------------------
for args in "" "--no-such-option $IMG" "$IMG $IMG"; do
	"$VS_FSCK" $args >"$T/out" 2>&1
	st=$?
	[ $st = 16 ] || fail "fsck $args exited $st, expected 16 (usage error)"
done

# ---- a damaged superblock: named, no mkfs advice ---------------------------------
# Every case starts from a copy of the clean image.
no_mkfs() {
	! grep -qE "format it with|[(;] run mkfs" "$T/out" || fail "$1: advises mkfs: $(cat "$T/out")"
}
cp "$T/clean" "$T/trunc"
truncate -s 128M "$T/trunc"
"$VS_FSCK" "$T/trunc" >"$T/out" 2>&1
st=$?
[ $st = 8 ] || fail "fsck of a truncated image exited $st, expected 8"
grep -q "truncated: the image is 134217728 bytes, its superblock says 268435456" "$T/out" ||
	fail "fsck of a truncated image does not say it is truncated"
no_mkfs "truncated image"
cp "$T/clean" "$T/zeroed"
dd if=/dev/zero of="$T/zeroed" bs=4096 count=1 conv=notrunc status=none
"$VS_FSCK" -n "$T/zeroed" >"$T/out" 2>&1
st=$?
[ $st = 8 ] || fail "fsck of a zeroed superblock exited $st, expected 8"
grep -q "superblock is damaged (all zeros); the journal holds checkpoint" "$T/out" ||
	fail "fsck -n of a zeroed superblock does not say so, or that the journal has a copy: $(cat "$T/out")"
no_mkfs "zeroed superblock"
# The journal (at page 1) holds the last checkpoint's superblock: fsck
# restores it, and the files are all there.
"$VS_FSCK" "$T/zeroed" >"$T/out" 2>&1
st=$?
[ $st = 1 ] || fail "fsck of a zeroed superblock exited $st, expected 1 (restored): $(cat "$T/out")"
grep -q "^FIXED: superblock: damaged (all zeros): restored from the journal" "$T/out" ||
	fail "no repair line for the zeroed superblock: $(cat "$T/out")"
"$VS_FSCK" -n "$T/zeroed" >"$T/out" 2>&1 || fail "fsck -n after restoring a zeroed superblock exited $?"
# With the journal gone too, nothing can restore it: said so, no mkfs.
cp "$T/clean" "$T/zeroed2"
dd if=/dev/zero of="$T/zeroed2" bs=4096 count=2 conv=notrunc status=none
"$VS_FSCK" -n "$T/zeroed2" >"$T/out" 2>&1
[ $? = 8 ] || fail "fsck of a zeroed superblock and journal head did not exit 8"
grep -q "superblock (the first 4 KiB) is all zeros, and the journal holds no copy" "$T/out" ||
	fail "fsck of a zeroed superblock without a journal does not say so: $(cat "$T/out")"
no_mkfs "zeroed superblock and journal"
# One flipped byte in the superblock of a cleanly unmounted image: not a
# checkpoint cut short; the journal's copy restores it.
cp "$T/clean" "$T/sbflip"
b=$(dd if="$T/sbflip" bs=1 skip=100 count=1 status=none | od -An -tx1 | tr -d ' ')
printf "\\x$(printf %02x $((0x$b ^ 0xff)))" | dd of="$T/sbflip" bs=1 seek=100 conv=notrunc status=none
"$VS_FSCK" -n "$T/sbflip" >"$T/out" 2>&1
st=$?
[ $st = 8 ] || fail "fsck -n of a damaged superblock exited $st, expected 8"
grep -q "middle of a checkpoint" "$T/out" && fail "fsck -n blames a checkpoint: $(cat "$T/out")"
grep -q "superblock is damaged (checksum mismatch); the journal holds checkpoint" "$T/out" ||
	fail "fsck -n does not say the superblock is damaged: $(cat "$T/out")"
no_mkfs "damaged superblock"
"$VS_FSCK" "$T/sbflip" >"$T/out" 2>&1
st=$?
[ $st = 1 ] || fail "fsck of a damaged superblock exited $st, expected 1 (restored)"
grep -q "^FIXED: superblock: damaged (checksum mismatch): restored from the journal" "$T/out" ||
	fail "no repair line for the superblock: $(cat "$T/out")"
"$VS_FSCK" -n "$T/sbflip" >"$T/out" 2>&1 || fail "fsck -n after the superblock repair exited $?"
# 100 random bytes at the start of the allocation bitmap: the mount refuses
# and names fsck, fsck -n reports it, fsck rebuilds it, and the image is
# clean after.
cp "$T/clean" "$T/bmp"
bmstart=$(od -An -tu8 -j24 -N8 "$T/bmp" | tr -d ' ')
head -c 100 /dev/urandom | dd of="$T/bmp" bs=1 seek=$((bmstart * 4096)) conv=notrunc status=none
"$VS_FSCK" -n "$T/bmp" >"$T/out" 2>&1
st=$?
[ $st = 4 ] || fail "fsck -n of a damaged bitmap exited $st, expected 4: $(cat "$T/out")"
grep -q "allocation bitmap: [0-9]* metadata pages\? (the first [0-9]*) marked free (repairable)" "$T/out" ||
	fail "fsck -n does not report the damaged bitmap: $(cat "$T/out")"
"$VS_FSCK" "$T/bmp" >"$T/out" 2>&1
st=$?
[ $st = 1 ] || fail "fsck of a damaged bitmap exited $st, expected 1: $(cat "$T/out")"
"$VS_FSCK" -n "$T/bmp" >"$T/out" 2>&1 || fail "fsck -n after rebuilding the bitmap exited $?: $(cat "$T/out")"
echo "PASS"
