#!/bin/bash
# fsck_test.sh - fsck.virtuscale on real images: a filesystem the daemon
# filled and unmounted cleanly must check clean (exit 0, and a repair run
# writes nothing); a daemon killed with a file unlinked but open leaves an
# orphan that fsck -n accepts (0) and fsck frees (1), after which the files
# read back through a new mount; one flipped byte in a file's data page
# must exit 4 naming a checksum error, in both modes, without a write; a
# file that is not an image must exit 8, a usage error 16; a truncated
# image, a zeroed superblock and a damaged one are each named for what they
# are, with no advice to run mkfs. A tree of an inner root over many leaves,
# its root zeroed, then each of three leaves in turn: fsck rebuilds the
# tree (1), fsck -n is clean after, the image mounts, and every file reads
# back with its sha256 at its path or, its name lost, as /lost+found/#INODE,
# but for at most as many as the damaged leaf had entries. A damaged leaf
# with a sound copy, a damaged copy, a damaged page of the checksum table
# or of its copy: fsck -n names it (4), fsck -y makes it whole (1), nothing
# lost; both copies of a table page lost: the nodes it covered are
# re-verified, the files it covered fail to read or read back exact.
# Needs VS_FSCK, VS_MKFS, VS_VIRTUSCALE and /dev/fuse, else exits 77; the
# salvage section needs VS_DMG_TOOL (tests/damage/dmg_tool.c) too.
# VS_TEST_OPTS (say uring=off) goes into every mount.
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

# mount_fs [IMAGE]: $IMG by default.
mount_fs() {
	"$VS_VIRTUSCALE" "${1:-$IMG}" "$MNT" -f -o "pool=64M${VS_TEST_OPTS:+,$VS_TEST_OPTS}" \
		>>"$T/daemon.log" 2>&1 &
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

# ---- a damaged tree: salvaged ----------------------------------------------------
# "INODE SHA256 PATH" of every file under the mount, sorted.
record() {
	(cd "$MNT" && find . -type f -printf '%i %P\n' | while read -r ino p; do
		echo "$ino $(sha256sum <"$p" | cut -c1-64) $p"
	done) | sort
}

# zero_node IMAGE PID: zero a tree node, and its copy when the image keeps
# one in the page after it (the same bytes): past what the copy repairs.
zero_node() {
	local n=1
	cmp -s <(dd if="$1" bs=4096 skip="$2" count=1 status=none) \
		<(dd if="$1" bs=4096 skip=$(($2 + 1)) count=1 status=none) && n=2
	dd if=/dev/zero of="$1" bs=4096 seek="$2" count=$n conv=notrunc status=none
}

# check_salvaged IMAGE WHAT ENTRIES: after fsck of IMAGE (its output in
# $T/out), each file of $T/base is intact where it was, or intact in
# /lost+found, or gone; at most ENTRIES (the damaged leaf's entries) are
# gone. A file whose name and inode record were both in the leaf leaves no
# trace; the others that are gone are named by inode on fsck's lines.
check_salvaged() {
	local img=$1 what=$2 entries=$3 named=0 untraced=0 moved=0 ino sum p
	"$VS_FSCK" -n "$img" >"$T/out2" 2>&1 || { cat "$T/out2"; fail "$what: fsck -n after the repair exited $?"; }
	mount_fs "$img"
	record >"$T/after" || fail "$what: reading the files back"
	unmount_fs
	while read -r ino sum p; do
		grep -qxF "$ino $sum $p" "$T/after" && continue
		if grep -q "^$ino $sum lost+found/" "$T/after"; then
			moved=$((moved + 1))
			continue
		fi
		if grep -qE "inode $ino[ ):]" "$T/out"; then
			named=$((named + 1))
		else
			untraced=$((untraced + 1))
		fi
	done <"$T/base"
	echo "$what: $moved files moved to /lost+found, $named named as lost, $untraced gone without a trace ($entries entries in the page)"
	[ $((named + untraced)) -le "$entries" ] ||
		fail "$what: $((named + untraced)) files lost, more than the damaged leaf's $entries entries"
}

if [ -n "${VS_DMG_TOOL:-}" ] && [ -x "$VS_DMG_TOOL" ]; then
	S=$T/salv
	"$VS_MKFS" "$S" --size 64M --quiet || fail "mkfs (salvage)"
	mount_fs "$S"
	for d in 0 1 2 3 4 5; do
		mkdir -p "$MNT/d$d/sub"
		for i in $(seq 40); do
			head -c $((RANDOM % 9000)) /dev/urandom >"$MNT/d$d/file-with-a-long-name-$i"
		done
		for i in 1 2 3; do echo "inner $d $i" >"$MNT/d$d/sub/g$i"; done
	done
	setfattr -n user.big -v "$(head -c 1800 /dev/zero | tr '\0' b)" "$MNT/d1/sub/g1" 2>/dev/null
	record >"$T/base" || fail "recording the salvage tree"
	unmount_fs
	"$VS_FSCK" -n "$S" >"$T/out" 2>&1 || { cat "$T/out"; fail "the salvage image is not clean"; }
	"$VS_DMG_TOOL" map "$S" >"$T/map" || fail "dmg_tool map"
	inner=$(awk '$1 == "inner" { print $2; exit }' "$T/map")
	[ -n "$inner" ] || fail "the salvage tree has no inner node"
	cp --sparse=always "$S" "$T/salv-clean"

	# The root zeroed: every leaf is found by scanning, nothing lost.
	zero_node "$S" "$inner"
	sum1=$(md5sum <"$S")
	"$VS_FSCK" -n "$S" >"$T/out" 2>&1
	st=$?
	[ $st = 4 ] || { cat "$T/out"; fail "fsck -n of a zeroed root exited $st, expected 4"; }
	grep -q "^salvage: would rebuild the tree" "$T/out" || fail "fsck -n does not say it would rebuild the tree"
	[ "$(md5sum <"$S")" = "$sum1" ] || fail "fsck -n wrote to the image"
	"$VS_FSCK" -y "$S" >"$T/out" 2>&1
	st=$?
	cat "$T/out"
	[ $st = 1 ] || fail "fsck -y of a zeroed root exited $st, expected 1"
	grep -q "^FIXED: tree: rebuilt from" "$T/out" || fail "no rebuild line"
	grep -q "^salvage: 0 paths lost, 0 values lost, 0 inodes without a name" "$T/out" ||
		fail "a zeroed root lost something"
	check_salvaged "$S" "zeroed root" 0
	mount_fs "$S"
	[ -e "$MNT/lost+found" ] && fail "a zeroed root put something in /lost+found"
	[ "$(getfattr --only-values -n user.big "$MNT/d1/sub/g1" 2>/dev/null | wc -c)" = 1800 ] ||
		fail "the overflow xattr did not survive the rebuild"
	unmount_fs

	# One leaf zeroed, three leaves in turn: first, middle, last.
	mapfile -t leaves < <(awk '$1 == "leaf" { print $2 }' "$T/map")
	for leaf in "${leaves[0]}" "${leaves[${#leaves[@]} / 2]}" "${leaves[${#leaves[@]} - 1]}"; do
		cp --sparse=always "$T/salv-clean" "$S"
		entries=$(od -An -tu2 -j $((leaf * 4096 + 2)) -N2 "$S" | tr -d ' ')
		zero_node "$S" "$leaf"
		"$VS_FSCK" -y "$S" >"$T/out" 2>&1
		st=$?
		cat "$T/out"
		[ $st = 1 ] || fail "fsck -y of zeroed leaf $leaf exited $st, expected 1"
		grep -q "^FIXED: tree: rebuilt from" "$T/out" || fail "leaf $leaf: no rebuild line"
		check_salvaged "$S" "leaf $leaf" "$entries"
	done

	# ---- copies: of a node (mkfs --metadata dup), of the checksum table ----
	# page IMAGE PID: the page's bytes, as hex on one line
	page() { dd if="$1" bs=4096 skip="$2" count=1 status=none | od -An -tx1 -v | tr -d ' \n'; }
	junk() { head -c 4096 /dev/urandom | dd of="$1" bs=4096 seek="$2" conv=notrunc status=none; }
	# repaired WHAT PATTERN: fsck -n finds PATTERN and writes nothing; fsck -y
	# exits 1; fsck -n is clean after; every file reads back as it was.
	repaired() {
		local sum
		sum=$(md5sum <"$S")
		"$VS_FSCK" -n "$S" >"$T/out" 2>&1
		st=$?
		[ $st = 4 ] || { cat "$T/out"; fail "$1: fsck -n exited $st, expected 4"; }
		grep -q -- "$2" "$T/out" || { cat "$T/out"; fail "$1: fsck -n does not say '$2'"; }
		[ "$(md5sum <"$S")" = "$sum" ] || fail "$1: fsck -n wrote to the image"
		"$VS_FSCK" -y "$S" >"$T/out" 2>&1
		st=$?
		cat "$T/out"
		[ $st = 1 ] || fail "$1: fsck -y exited $st, expected 1"
		"$VS_FSCK" -n "$S" >"$T/out" 2>&1 || { cat "$T/out"; fail "$1: not clean after fsck -y"; }
		mount_fs "$S"
		record >"$T/after" || fail "$1: reading the files back"
		unmount_fs
		cmp -s "$T/base" "$T/after" || fail "$1: files differ after the repair"
		echo "$1: repaired, nothing lost"
	}
	leaf=${leaves[${#leaves[@]} / 2]}
	cp --sparse=always "$T/salv-clean" "$S"
	[ "$(page "$S" "$leaf")" = "$(page "$S" $((leaf + 1)))" ] ||
		fail "leaf $leaf has no copy in the next page (mkfs makes copies by default)"
	junk "$S" "$leaf"
	repaired "a damaged leaf with a sound copy" "differs from its copy"
	[ "$(page "$S" "$leaf")" = "$(page "$S" $((leaf + 1)))" ] || fail "the leaf is not its copy again"

	cp --sparse=always "$T/salv-clean" "$S"
	junk "$S" $((leaf + 1))
	repaired "a damaged copy of a leaf" "differs from its copy"
	[ "$(page "$S" "$leaf")" = "$(page "$S" $((leaf + 1)))" ] || fail "the copy is not the leaf again"

	# The checksum table: dmg_tool lists each page of it, then its copy.
	read -r cs0 cs0copy < <(awk '$1 == "csum" { printf "%s ", $2 } END { print "" }' "$T/map")
	cp --sparse=always "$T/salv-clean" "$S"
	junk "$S" "$cs0"
	repaired "a damaged checksum-table page" "read from the table's copy"
	cp --sparse=always "$T/salv-clean" "$S"
	junk "$S" "$cs0copy"
	repaired "a damaged page of the checksum table's copy" "of its copy damaged"

	# Both copies of the table page that covers the root: the nodes among
	# its pages get their checksums back; file data it covers cannot be
	# verified and fails to read (never read unchecked).
	cp --sparse=always "$T/salv-clean" "$S"
	cs_start=$(od -An -tu8 -j 40 -N8 "$S" | tr -d ' ') # superblock: the table's
	cs_pages=$(od -An -tu8 -j 48 -N8 "$S" | tr -d ' ') # first page and length
	tpage=$((cs_start + inner / 511))                   # 511 entries a page
	dd if=/dev/zero of="$S" bs=4096 seek="$tpage" count=1 conv=notrunc status=none
	dd if=/dev/zero of="$S" bs=4096 seek=$((tpage + cs_pages)) count=1 conv=notrunc status=none
	"$VS_FSCK" -n "$S" >"$T/out" 2>&1
	grep -q "damaged in both copies" "$T/out" || { cat "$T/out"; fail "fsck -n does not see the table page lost"; }
	grep -q "tree nodes that hold together" "$T/out" || { cat "$T/out"; fail "fsck -n finds no node to re-verify"; }
	"$VS_FSCK" -y "$S" >"$T/out" 2>&1
	st=$?
	cat "$T/out"
	# 1 (nodes re-verified) | 4 (file data left unverifiable), as fsck(8) ORs them
	[ $st = 1 ] || [ $st = 5 ] || fail "fsck -y of a lost table page exited $st"
	grep -q "checksums* made again from nodes that verify" "$T/out" || fail "no node re-verified"
	"$VS_FSCK" -n "$S" >"$T/out" 2>&1
	grep -q "tree nodes that hold together" "$T/out" && { cat "$T/out"; fail "a node still to re-verify after fsck -y"; }
	mount_fs "$S"
	good=0 failed=0
	while read -r ino sum p; do
		if got=$(sha256sum <"$MNT/$p" 2>/dev/null); then
			[ "${got:0:64}" = "$sum" ] || fail "lost table page: $p read back with other bytes"
			good=$((good + 1))
		else
			failed=$((failed + 1))
		fi
	done <"$T/base"
	unmount_fs
	echo "lost table page: $good files intact, $failed failing to read (data it covered)"
	[ $good -gt 0 ] || fail "lost table page: no file readable"
else
	echo "VS_DMG_TOOL not set: salvage section skipped"
fi
echo "PASS"
