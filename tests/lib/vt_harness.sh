# vt_harness.sh - sourced by the shell mount-level tests (bash).
#
# Same environment as vt_harness.h: VS_VIRTUSCALE, VS_MKFS (set by meson),
# VS_TEST_DIR (run against a plain directory), VS_TEST_OPTS, VS_TEST_TMP,
# VS_TEST_KEEP.
#
#   vt_init               checks, private temp dir; sets VT_BASE VT_IMAGE VT_MNT
#                         VT_LOG VT_EXTERNAL; cleans up on exit
#   vt_mkfs SIZE          format VT_IMAGE
#   vt_mount [OPTS]       start the daemon on VT_IMAGE/VT_MNT and wait (VT_PID)
#   vt_umount             fusermount3 -u, wait for the daemon, require status 0
#   vt_remount            both
#   vt_is_mounted DIR     true if DIR is a mountpoint now
#   vt_fail MSG / vt_skip MSG / vt_note MSG
#   VT_SCRATCH            space-separated directories removed on exit

VT_SKIP=77
VT_PID=
VT_OPTS=
VT_EXTERNAL=0

vt_note() { echo "# $*"; }

vt_dump_log() {
	if [ -n "${VT_LOG:-}" ] && [ -s "$VT_LOG" ]; then
		echo "---- daemon log ($VT_LOG, tail) ----" >&2
		tail -n 40 "$VT_LOG" >&2
		echo "---- end of daemon log ----" >&2
	fi
}

vt_fail() {
	echo "FAIL: $*" >&2
	vt_dump_log
	exit 1
}

vt_skip() {
	echo "SKIP: $*"
	exit $VT_SKIP
}

vt_is_mounted() {
	local real
	real=$(realpath -- "$1" 2>/dev/null) || return 1
	awk -v mp="$real" '$5 == mp { found = 1 } END { exit !found }' /proc/self/mountinfo
}

vt_cleanup() {
	local rc=$?
	# Scratch directories a test registered (on other filesystems).
	[ -n "${VT_SCRATCH:-}" ] && rm -rf --one-file-system $VT_SCRATCH
	if [ "$VT_EXTERNAL" = 1 ]; then
		[ -n "${VS_TEST_KEEP:-}" ] || rm -rf --one-file-system "$VT_MNT"
		exit $rc
	fi
	if [ -n "$VT_PID" ] && kill -0 "$VT_PID" 2>/dev/null; then
		fusermount3 -u "$VT_MNT" 2>/dev/null || fusermount3 -u -z "$VT_MNT" 2>/dev/null
		# The daemon writes back before exiting; give it time, then force.
		for _ in $(seq 300); do kill -0 "$VT_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$VT_PID" 2>/dev/null
	fi
	# Mountpoints a test made besides VT_MNT (VT_EXTRA_MNTS) must go too.
	for m in "$VT_MNT" ${VT_EXTRA_MNTS:-}; do
		vt_is_mounted "$m" && fusermount3 -u -z "$m" 2>/dev/null
	done
	if [ -n "${VS_TEST_KEEP:-}" ]; then
		echo "# keeping $VT_BASE"
	elif [ -n "${VT_BASE:-}" ] && ! vt_is_mounted "$VT_MNT"; then
		rm -rf --one-file-system "$VT_BASE"
	fi
	exit $rc
}

vt_init() {
	if [ -n "${VS_TEST_DIR:-}" ]; then
		VT_EXTERNAL=1
		VT_MNT=$(mktemp -d "$VS_TEST_DIR/vt.XXXXXX") || vt_fail "mktemp in $VS_TEST_DIR"
		chmod 755 "$VT_MNT"
		VT_BASE=
		trap vt_cleanup EXIT
		trap 'exit 1' INT TERM
		return 0
	fi
	[ -r /dev/fuse ] && [ -w /dev/fuse ] || vt_skip "/dev/fuse not usable"
	command -v fusermount3 >/dev/null || vt_skip "fusermount3 not in PATH"
	[ -n "${VS_VIRTUSCALE:-}" ] && [ -x "$VS_VIRTUSCALE" ] &&
		[ -n "${VS_MKFS:-}" ] && [ -x "$VS_MKFS" ] ||
		vt_skip "VS_VIRTUSCALE/VS_MKFS not set to executables (daemon not built yet?)"
	VT_BASE=$(mktemp -d "${VS_TEST_TMP:-/tmp}/vstest.XXXXXX") || vt_fail "mktemp"
	chmod 755 "$VT_BASE"
	VT_IMAGE=$VT_BASE/image
	VT_MNT=$VT_BASE/mnt
	VT_LOG=$VT_BASE/daemon.log
	mkdir "$VT_MNT"
	trap vt_cleanup EXIT
	trap 'exit 1' INT TERM
}

vt_mkfs() {
	"$VS_MKFS" "$VT_IMAGE" --size "$1" >>"$VT_LOG" 2>&1 ||
		vt_fail "$VS_MKFS $VT_IMAGE --size $1 failed"
}

vt_mount() {
	[ "$VT_EXTERNAL" = 1 ] && return 0
	VT_OPTS=${1:-pool=64M}${VS_TEST_OPTS:+,$VS_TEST_OPTS}
	"$VS_VIRTUSCALE" "$VT_IMAGE" "$VT_MNT" -f -o "$VT_OPTS" >>"$VT_LOG" 2>&1 &
	VT_PID=$!
	for _ in $(seq 3000); do
		vt_is_mounted "$VT_MNT" && return 0
		kill -0 "$VT_PID" 2>/dev/null || {
			wait "$VT_PID"
			local st=$?
			VT_PID=
			vt_fail "daemon exited with status $st before mounting"
		}
		sleep 0.01
	done
	vt_fail "$VT_MNT not mounted after 30 s"
}

vt_umount() {
	[ "$VT_EXTERNAL" = 1 ] && { sync; return 0; }
	local ok=0 st
	for _ in $(seq 50); do
		if fusermount3 -u "$VT_MNT"; then ok=1; break; fi
		sleep 0.1
	done
	[ $ok = 1 ] || vt_fail "fusermount3 -u $VT_MNT keeps failing"
	wait "$VT_PID"
	st=$?
	VT_PID=
	[ $st = 0 ] || vt_fail "daemon exited with status $st after unmount"
}

vt_remount() {
	vt_umount
	vt_mount "$VT_OPTS"
}
