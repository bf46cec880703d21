#!/bin/bash
# fs_uring_off.sh - with the kernel's FUSE over io_uring off
# (/sys/module/fuse/parameters/enable_uring = 0), uring=on refuses to mount
# and says why and how to turn it on, and uring=auto (the default) mounts
# over /dev/fuse. The parameter is machine-wide: meson runs this test
# alone (is_parallel false) and it puts the value it found back.
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "needs the real daemon, not VS_TEST_DIR"
P=/sys/module/fuse/parameters/enable_uring
[ -e "$P" ] || vt_skip "this kernel has no FUSE over io_uring ($P missing)"
[ -w "$P" ] || vt_fail "cannot write $P (needs root)"
vt_init
was=$(cat "$P")
restore() { case "$was" in Y | 1) echo 1 >"$P" ;; *) echo 0 >"$P" ;; esac; }
trap 'restore; vt_cleanup' EXIT
vt_mkfs 128M
echo 0 >"$P"

out=$("$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o pool=64M,uring=on 2>&1)
st=$?
[ "$st" != 0 ] || vt_fail "uring=on with the kernel's off: exit status 0"
vt_is_mounted "$VT_MNT" && vt_fail "uring=on with the kernel's off: mounted anyway"
case "$out" in
*uring=on*enable_uring*) ;;
*) vt_fail "uring=on with the kernel's off: message '$out' does not name enable_uring" ;;
esac
vt_note "refused: $out"

VS_TEST_OPTS= vt_mount pool=64M,uring=auto
t=$(awk -F'"' '/^virtuscale_fuse_transport_info\{/ {print $2}' "$VT_MNT/.virtuscale/stats")
[ "$t" = dev ] || vt_fail "uring=auto with the kernel's off: transport '$t', want dev"
echo x >"$VT_MNT/a" && [ "$(cat "$VT_MNT/a")" = x ] || vt_fail "uring=auto: write/read"
vt_umount
