#!/bin/bash
# uring_wrap.sh TEST [ARGS...] - run a mount-level test over FUSE over
# io_uring: every mount the test makes gets uring=on (VS_TEST_OPTS, which
# tests/lib/vt_harness.{sh,c} add to each mount's options), after turning
# the kernel's FUSE over io_uring on (/sys/module/fuse/parameters/
# enable_uring; it is left on: tests running beside this one may rely on
# it). Skips (77) only when the kernel has no FUSE over io_uring at all.
# A TEST ending in .sh runs with bash.
set -u
P=/sys/module/fuse/parameters/enable_uring
[ -e /dev/fuse ] && modprobe fuse 2>/dev/null
if [ ! -e "$P" ]; then
	echo "SKIP: this kernel has no FUSE over io_uring ($P missing; Linux 6.14+ with CONFIG_FUSE_IO_URING)"
	exit 77
fi
case "$(cat "$P")" in
Y | y | 1) ;;
*)
	echo 1 >"$P" 2>/dev/null || {
		echo "FAIL: cannot turn on $P (needs root)" >&2
		exit 1
	}
	;;
esac
export VS_TEST_OPTS=${VS_TEST_OPTS:+$VS_TEST_OPTS,}uring=on
case "$1" in
*.sh) exec bash "$@" ;;
*) exec "$@" ;;
esac
