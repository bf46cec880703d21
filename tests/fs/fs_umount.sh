#!/bin/bash
# fs_umount.sh - an unmount returns only once the daemon has written
# everything back and released the image.  The kernel ends a FUSE unmount
# before the daemon has even seen it, so without umount.fuse.virtuscale (or
# vsctl MOUNTPOINT unmount) waiting for the daemon, what comes right after
# an unmount finds the image still locked or still being written:
# `fsck.virtuscale -n IMAGE` says "image is in use", a remount fails, a copy
# differs from the final image.
#
# 20 rounds of: write files, unmount, then at once either
#   (even rounds) cp IMAGE, fsck -n IMAGE, compare IMAGE with the copy (the
#   daemon is done, so nothing changed it since), fsck -n the copy;
#   (odd rounds) nothing: the remount that starts every round must succeed
#   immediately;
# and after the remount the data written is all there.  The rounds go two by
# two through the two ways users unmount:
#   fstab  a line like examples/fstab (LIBMOUNT_FSTAB), `mount MNT` through
#          mount.fuse3, `umount MNT`, which runs umount.fuse.virtuscale
#          because the line says helper=fuse.virtuscale
#   vsctl  the daemon started by hand, `vsctl MNT unmount`
#   hand   the daemon started by hand, plain `umount MNT`: the daemon notes
#          helper=fuse.virtuscale in utab itself (fs/main.c umount_note)
#
# umount(8) only runs helpers from /sbin and mount(8) only runs the daemon
# from a fixed PATH, so the test runs in a private mount namespace where
# overlays put the built helper in /sbin and the built daemon in
# /usr/local/bin, and a tmpfs holds /run/mount (utab).  Needs root.
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "unmounting needs the real daemon, not VS_TEST_DIR"
[ "$(id -u)" = 0 ] || vt_skip "needs root (mount(8), umount(8) and a private mount namespace)"
if [ -z "${VT_UMOUNT_NS:-}" ]; then
	command -v unshare >/dev/null || vt_skip "unshare (util-linux) not in PATH"
	# A chroot whose root is not a mount point cannot have its mounts made
	# private: the overlays below would then show outside. Nothing to test
	# there (a real machine, as CI's, has it).
	unshare -m --propagation private true 2>/dev/null ||
		vt_skip "no private mount namespace here (a chroot whose root is not a mount point?)"
	VT_UMOUNT_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi

vt_init
tools=$(dirname "${VS_VIRTUSCALE:-.}")/../tools
HELPER=${VS_UMOUNT_HELPER:-$tools/umount.fuse.virtuscale}
VSCTL=${VS_VSCTL:-$tools/vsctl}
FSCK=${VS_FSCK:-$tools/fsck.virtuscale}
for x in "$HELPER" "$VSCTL" "$FSCK"; do
	[ -x "$x" ] || vt_skip "$x not built"
done
command -v mount.fuse3 >/dev/null || [ -x /sbin/mount.fuse3 ] || vt_skip "mount.fuse3 not installed"

# ---- the namespace: our helper and daemon where umount and mount look ------
overlay() { # DIR FILE NAME: FILE appears as DIR/NAME, the rest of DIR as it was
	local dir upper
	dir=$(realpath "$1")
	upper=$(mktemp -d "$VT_BASE/overlay.XXXXXX")
	cp "$2" "$upper/$3"
	mount -t overlay vstest-overlay -o "lowerdir=$upper:$dir" "$dir" ||
		vt_skip "cannot put an overlay on $dir (no overlayfs?)"
}
overlay /sbin "$HELPER" umount.fuse.virtuscale
overlay /usr/local/bin "$VS_VIRTUSCALE" virtuscale
mkdir -p /run/mount && mount -t tmpfs -o size=1M vstest-utab /run/mount ||
	vt_fail "cannot mount a private /run/mount"
OPTS=pool=64M${VS_TEST_OPTS:+,$VS_TEST_OPTS}
printf '%s %s fuse.virtuscale %s,helper=fuse.virtuscale 0 0\n' \
	"$VT_IMAGE" "$VT_MNT" "$OPTS" >"$VT_BASE/fstab"
export LIBMOUNT_FSTAB=$VT_BASE/fstab

# ---- mounting and unmounting both ways -------------------------------------
mount_by() {
	case $1 in
	fstab) mount "$VT_MNT" ;;
	vsctl | hand) "$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -o "$OPTS" ;;
	esac >>"$VT_LOG" 2>"$VT_BASE/err" || {
		cat "$VT_BASE/err" >>"$VT_LOG"
		vt_fail "round $round: mounting ($1) right after the unmount failed:" \
			"$(cat "$VT_BASE/err")"
	}
	cat "$VT_BASE/err" >>"$VT_LOG"
	vt_is_mounted "$VT_MNT" || vt_fail "round $round: $1 mount left nothing mounted"
}

unmount_by() {
	case $1 in
	fstab | hand) umount "$VT_MNT" ;;
	vsctl) "$VSCTL" "$VT_MNT" unmount ;;
	esac >>"$VT_LOG" 2>&1 || vt_fail "round $round: unmounting ($1) failed"
	vt_is_mounted "$VT_MNT" && vt_fail "round $round: $1 unmount left $VT_MNT mounted"
}

vt_mkfs 128M
round=0
mode=fstab
mount_by $mode
grep -q "fuse.virtuscale" /proc/self/mountinfo || vt_fail "the mount is not of type fuse.virtuscale"
for round in $(seq 0 19); do
	case $((round / 2 % 3)) in 0) mode=fstab ;; 1) mode=vsctl ;; 2) mode=hand ;; esac
	if [ "$round" -gt 0 ]; then
		mount_by $mode
		[ "$(md5sum <"$VT_MNT/f$(((round - 1) % 3))")" = "$sum" ] ||
			vt_fail "round $round: the file written before the unmount came back different"
	fi
	# Enough written data that writing it back takes the daemon a while.
	head -c 16M /dev/urandom >"$VT_MNT/f$((round % 3))" || vt_fail "round $round: write"
	for i in $(seq 50); do echo "$round $i" >"$VT_MNT/small.$i"; done
	sum=$(md5sum <"$VT_MNT/f$((round % 3))")
	unmount_by $mode
	[ $((round % 2)) = 1 ] && continue

	cp "$VT_IMAGE" "$VT_BASE/copy" || vt_fail "round $round: cp"
	"$FSCK" -n "$VT_IMAGE" >"$VT_BASE/fsck.out" 2>&1 ||
		vt_fail "round $round ($mode): fsck -n of the image right after the unmount:" \
			"$(cat "$VT_BASE/fsck.out")"
	cmp -s "$VT_IMAGE" "$VT_BASE/copy" ||
		vt_fail "round $round ($mode): a copy taken right after the unmount differs" \
			"from the image a moment later: the daemon was still writing"
	"$FSCK" -n "$VT_BASE/copy" >"$VT_BASE/fsck.out" 2>&1 ||
		vt_fail "round $round ($mode): fsck -n of the copy: $(cat "$VT_BASE/fsck.out")"
	rm -f "$VT_BASE/copy"
done
round=20
mount_by vsctl
[ "$(md5sum <"$VT_MNT/f$((19 % 3))")" = "$sum" ] || vt_fail "the last file came back different"
"$VSCTL" "$VT_MNT" unmount -v >"$VT_BASE/out" 2>&1 || vt_fail "vsctl unmount -v"
grep -q "released" "$VT_BASE/out" || vt_fail "vsctl unmount -v does not say the image was released"
vt_note "20 rounds: every unmount returned with the image written back and free"
