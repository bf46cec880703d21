# bench/mount_lib.sh: sourced by the benchmarks that mount an image of their
# own (bench/evsim/scan.sh, reread.sh, metascan.sh, bench/cache_modes.sh).
# Needs $build, the build directory.
#
#   bench_dir NAME            $dir, a scratch directory under $TMPDIR (or
#                             /var/tmp) removed at exit with the mount;
#                             $mnt, the mount point in it
#   mount_fs OPTIONS [VAR=VALUE...]
#                             the daemon on $dir/img at $mnt in the
#                             foreground (its pid in $pid, its output in
#                             $dir/log), with -o OPTIONS and the variables
#                             in its environment; returns once mounted
#   umount_fs                 unmount and wait for the daemon to exit
#   fail MESSAGE              say it, named after the script, and exit 1

fail() { echo "$(basename "$0"): $*" >&2; exit 1; }

bench_cleanup() {
	if [ -n "$pid" ]; then fusermount3 -u "$mnt" 2>/dev/null; wait "$pid"; fi
	rm -rf "$dir"
}

bench_dir() {
	dir=$(mktemp -d "${TMPDIR:-/var/tmp}/$1.XXXXXX") || exit 1
	mnt=$dir/mnt
	pid=
	trap bench_cleanup EXIT
	trap 'exit 1' INT TERM
	mkdir "$mnt"
}

mount_fs() {
	_opts=$1
	shift
	env "$@" "$build/fs/virtuscale" "$dir/img" "$mnt" -f -o "$_opts" >>"$dir/log" 2>&1 &
	pid=$!
	for _ in $(seq 1000); do
		grep -q " $mnt " /proc/self/mounts && return 0
		kill -0 $pid 2>/dev/null || fail "the daemon exited: $(tail -3 "$dir/log")"
		sleep 0.01
	done
	fail "no mount"
}

umount_fs() {
	fusermount3 -u "$mnt" || fail "cannot unmount"
	wait $pid
	pid=
}
