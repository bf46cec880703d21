#!/bin/bash
# fs_tree.sh - a real tree through the filesystem: cp -a /usr/include in,
# compare contents (diff -r) and metadata (modes, owners, sizes, link counts,
# nanosecond mtimes, symlink targets); copy it again on the mount with a
# tar c | tar x pipe; unmount, remount, compare both copies; finally delete it
# all and check the space comes back.
#
# VS_TREE_SRC=<dir> copies another tree instead of /usr/include.
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

SRC=${VS_TREE_SRC:-/usr/include}
[ -d "$SRC" ] || vt_skip "$SRC does not exist"
vt_init
SCRATCH=$(mktemp -d "${VS_TEST_TMP:-/tmp}/vstree.XXXXXX") || vt_fail "mktemp"
VT_SCRATCH=$SCRATCH

if [ "$VT_EXTERNAL" = 0 ]; then
	vt_mkfs 1G
	vt_mount pool=64M
fi

# Metadata listing, sorted by path.  Directory sizes are the filesystem's
# business, so they are left out; atime too.
meta() {
	(
		cd "$1" || exit 1
		find . ! -type d -printf '%p %y %m %U:%G %s %n %T@ %l\n'
		find . -type d -printf '%p %y %m %U:%G %n %T@\n'
	) | LC_ALL=C sort
}

compare() {
	local what=$1 a=$2 b=$3
	diff -r --no-dereference "$a" "$b" >"$SCRATCH/diff.out" 2>&1 ||
		{ head -n 30 "$SCRATCH/diff.out" >&2; vt_fail "$what: diff -r $a $b differs"; }
	meta "$a" >"$SCRATCH/meta.a" || vt_fail "$what: listing $a"
	meta "$b" >"$SCRATCH/meta.b" || vt_fail "$what: listing $b"
	diff "$SCRATCH/meta.a" "$SCRATCH/meta.b" >"$SCRATCH/meta.diff" ||
		{ head -n 30 "$SCRATCH/meta.diff" >&2; vt_fail "$what: metadata of $b differs"; }
	vt_note "$what: $(wc -l <"$SCRATCH/meta.a") entries identical"
}

free_kb() { df -k --output=avail "$VT_MNT" | tail -n 1; }

sync
free0=$(free_kb)
start=$(date +%s)
cp -a "$SRC" "$VT_MNT/inc" || vt_fail "cp -a $SRC $VT_MNT/inc failed"
vt_note "cp -a took $(($(date +%s) - start)) s"
compare "after cp -a" "$SRC" "$VT_MNT/inc"

# Tree -> tree on the mount through a tar pipe (reads and creates at once).
# POSIX (pax) format keeps nanosecond mtimes, so the metadata comparison
# stays exact.
mkdir "$VT_MNT/untar" || vt_fail "mkdir untar"
tar --format=posix -C "$VT_MNT/inc" -cf - . | tar -C "$VT_MNT/untar" -xpf - ||
	vt_fail "tar pipe from the mount into the mount failed"

# One remount, then both copies are checked: persistence and the tar copy
# in one pass over the mount each.
vt_remount
compare "cp -a copy after remount" "$SRC" "$VT_MNT/inc"
compare "tar copy after remount" "$SRC" "$VT_MNT/untar"

# Deleting it all gives the space back.
rm -rf "$VT_MNT/inc" "$VT_MNT/untar" || vt_fail "rm -rf on the mount failed"
[ -z "$(ls -A "$VT_MNT")" ] || vt_fail "entries left after rm -rf: $(ls -A "$VT_MNT" | head)"
sync
if [ "$VT_EXTERNAL" = 0 ]; then
	# Releases are asynchronous; allow a little time and 2 MiB of slack.
	for _ in $(seq 50); do
		[ $(($(free_kb) + 2048)) -ge "$free0" ] && break
		sleep 0.1
	done
	[ $(($(free_kb) + 2048)) -ge "$free0" ] ||
		vt_fail "free space $(free_kb) KiB after deleting everything, was $free0 KiB"
	vt_umount
fi
vt_note "done in $(($(date +%s) - start)) s"
exit 0
