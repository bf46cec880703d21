#!/bin/bash
# Who caches file data (mount option cache=both|pool|kernel), measured on a
# real mount with a 512 MiB pool. For each mode, on a fresh image: write a
# 256 MiB file, remount (the pool cold), drop the kernel's caches, read the
# file twice with buffered 1 MiB reads (dd), then 4 KiB random buffered
# reads for 5 s (fio, psync, the caches left as the two reads left them).
# Prints one row per mode:
#   kpages   the file's pages in the kernel's page cache after the two reads
#            (cachestat(2); fincore on kernels before 6.5, which maps the
#            file and so empties the cache of a direct_io file: cache=pool)
#   pool     the pool's resident pages then (the stats file)
#   rss      the daemon's VmRSS then (MiB)
#   cold     MB/s of the first read, warm of the second
#   rand4k   fio's 4 KiB random-read IOPS
#   drops    drop_caches run by others meanwhile (/proc/vmstat): the shell
#            holds the file open from the cold read to fio's end, so that
#            a drop of dentries and inodes (echo 2) leaves its pages, but a
#            drop of the page cache (1 or 3) would make `warm` cold again
#   load     the 1-minute load average at the end of the row
# Usage: cache_modes.sh BUILD_DIR [MODES]   (needs /dev/fuse, fio, python3;
# dropping the caches needs root: without it the cold read says so)
set -u
build=$(cd "${1:?usage: cache_modes.sh BUILD_DIR [MODES]}" && pwd)
modes=${2:-both pool kernel}
[ -c /dev/fuse ] || { echo "cache_modes.sh: no /dev/fuse" >&2; exit 77; }
for t in fio python3 dd; do
	command -v $t >/dev/null || { echo "cache_modes.sh: $t not in PATH" >&2; exit 77; }
done
. "$(dirname "$0")/mount_lib.sh"
bench_dir cache-modes
opts="pool=512M"
stat_of() { awk -v n="$1" '$1 == n { print $2 }' "$mnt/.virtuscale/stats"; }
kpages() {
	python3 - "$1" <<'PY'
import ctypes, os, subprocess, sys
class Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]
class Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64)
                for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
r, s = Range(0, 0), Stat()
if libc.syscall(451, fd, ctypes.byref(r), ctypes.byref(s), 0) == 0:
    print(s.cache)
else:
    out = subprocess.run(["fincore", "-n", "-o", "PAGES", sys.argv[1]],
                         capture_output=True, text=True, check=True).stdout
    print(out.split()[0])
PY
}
# MB/s of one buffered read of FILE with 1 MiB reads.
read_mbs() {
	local t0 t1
	t0=$(date +%s%N)
	dd if="$1" of=/dev/null bs=1M status=none || fail "cannot read $1"
	t1=$(date +%s%N)
	awk -v b="$(stat -c %s "$1")" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", b / ns * 1000 }'
}

drops() { awk '$1 == "drop_pagecache" || $1 == "drop_slab" { n += $2 } END { print n }' /proc/vmstat; }

dropped=yes
printf '%-7s %8s %8s %8s %8s %8s %8s %6s %6s\n' mode kpages pool rss cold warm rand4k drops load
for mode in $modes; do
	rm -f "$dir/img"
	"$build/tools/mkfs.virtuscale" "$dir/img" --size 1G >>"$dir/log" 2>&1 || fail "mkfs failed"
	mount_fs "$opts,cache=$mode"
	dd if=/dev/urandom of="$mnt/file" bs=1M count=256 conv=fsync status=none ||
		fail "cannot write the file"
	umount_fs
	mount_fs "$opts,cache=$mode"
	sync
	echo 3 2>/dev/null >/proc/sys/vm/drop_caches || dropped=no
	d0=$(drops)
	exec 3<"$mnt/file"
	cold=$(read_mbs "$mnt/file")
	warm=$(read_mbs "$mnt/file")
	k=$(kpages "$mnt/file")
	res=$(stat_of virtuscale_pool_resident_pages)
	rss=$(awk '$1 == "VmRSS:" { printf "%.0f", $2 / 1024 }' /proc/$pid/status)
	iops=$(fio --name=rand4k --filename="$mnt/file" --rw=randread --bs=4k --ioengine=psync \
		--direct=0 --invalidate=0 --size=256M --runtime=5 --time_based \
		--output-format=json 2>>"$dir/log" |
		python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))') ||
		fail "fio failed: $(tail -3 "$dir/log")"
	exec 3<&-
	printf '%-7s %8s %8s %8s %8s %8s %8s %6s %6s\n' "$mode" "$k" "$res" "$rss" "$cold" "$warm" \
		"$iops" $(($(drops) - d0)) "$(cut -d' ' -f1 /proc/loadavg)"
	umount_fs
done
echo "# 256 MiB file = 65536 pages; pool=512M = 131072 pages; rss in MiB, cold/warm in MB/s"
[ $dropped = yes ] || echo "# the kernel's caches were not dropped (not root): cold is not cold"
