#!/bin/bash
# fs_cache.sh - the mount option cache=both|pool|kernel: who caches file
# data, the kernel's page cache, the daemon's pool, or both.
#   - a bad value is refused with a message naming it, nothing mounted;
#   - cache=pool: an 8 MiB file read twice with buffered reads leaves no
#     page in the kernel's page cache, the second read comes to the daemon
#     again, the pool holds the file, the bytes are right; a shared
#     writable mmap works (FUSE_DIRECT_IO_ALLOW_MMAP, fs/wire.c) and what
#     it wrote reads back after msync and after a remount; a write moves
#     mtime, and the time stays across a remount; the stats file says pool;
#   - cache=kernel: a cold pool (after a remount) grows by far less than
#     the file while the kernel caches all of it; writes read back, also
#     after a remount;
#   - cache=both: both grow (the default, as before).
# The kernel's page cache is measured with cachestat(2) (Linux 6.5+):
# fincore maps the file, and the kernel drops the page cache of a direct_io
# file at every mmap, so under cache=pool it would see 0 whatever was
# cached. fincore is the fallback on older kernels.
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "needs the real daemon, not VS_TEST_DIR"
command -v python3 >/dev/null || vt_skip "python3 not in PATH (mmap and cachestat)"
vt_init
M=$VT_MNT
PAGES=2048 # the 8 MiB file

stat_of() { awk -v n="$1" '$1 == n { print $2 }' "$M/.virtuscale/stats"; }
reads() { stat_of 'virtuscale_fuse_requests_total{op="read"}'; }
resident() { stat_of virtuscale_pool_resident_pages; }

# Pages of FILE in the kernel's page cache just after a buffered read of
# it, measured through the descriptor that read it, the best of three
# tries: a test or benchmark beside this one may drop the machine's caches
# (echo 3, or 2, >/proc/sys/vm/drop_caches) at any moment, and the open
# descriptor keeps at least the inode (with its pages) from being pruned.
kcached() {
	python3 - "$1" <<'PY'
import ctypes, os, subprocess, sys
class Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]
class Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64)
                for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]
libc = ctypes.CDLL(None, use_errno=True)
path, best = sys.argv[1], 0
for _ in range(3):
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 1 << 20):
        pass
    r, s = Range(0, 0), Stat()
    if libc.syscall(451, fd, ctypes.byref(r), ctypes.byref(s), 0) == 0:
        n = s.cache
    else:
        out = subprocess.run(["fincore", "-n", "-o", "PAGES", path],
                             capture_output=True, text=True, check=True).stdout
        n = int(out.split()[0])
    os.close(fd)
    best = max(best, n)
    if best >= os.stat(path).st_size // 4096 * 9 // 10:
        break
print(best)
PY
}

# Two buffered reads of FILE, checked against REF.
read_twice() {
	cmp "$1" "$2" || vt_fail "$1 differs from what was written (first read)"
	cmp "$1" "$2" || vt_fail "$1 differs from what was written (second read)"
}

# ---- a bad value: refused, nothing mounted ----------------------------------
vt_mkfs 256M
"$VS_VIRTUSCALE" "$VT_IMAGE" "$M" -f -o cache=foo >"$VT_BASE/bad.out" 2>&1 &&
	vt_fail "cache=foo accepted"
grep -q "virtuscale: cache=foo: use both, pool or kernel" "$VT_BASE/bad.out" ||
	vt_fail "cache=foo: no clear message: $(cat "$VT_BASE/bad.out")"
vt_is_mounted "$M" && vt_fail "cache=foo: mounted anyway"
vt_note "cache=foo refused: $(cat "$VT_BASE/bad.out")"

REF=$VT_BASE/ref
head -c $((PAGES * 4096)) /dev/urandom >"$REF"

# ---- cache=pool -------------------------------------------------------------
vt_mount "pool=64M,cache=pool"
grep -q '^virtuscale_cache_mode_info{mode="pool"} 1$' "$M/.virtuscale/stats" ||
	vt_fail "stats: no cache_mode_info line saying pool"
cp "$REF" "$M/f" || vt_fail "cannot write $M/f"
vt_remount
r0=$(resident)
read_twice "$M/f" "$REF"
q0=$(reads)
cat "$M/f" >/dev/null
q1=$(reads)
k=$(kcached "$M/f")
r1=$(resident)
[ "$k" -le 16 ] || vt_fail "cache=pool: the kernel caches $k pages of the file"
[ $((q1 - q0)) -ge 8 ] ||
	vt_fail "cache=pool: a third read of 8 MiB took $((q1 - q0)) read requests (kernel cache?)"
[ $((r1 - r0)) -ge $((PAGES * 9 / 10)) ] ||
	vt_fail "cache=pool: the pool grew by $((r1 - r0)) pages reading $PAGES"
vt_note "cache=pool: kernel $k pages, pool +$((r1 - r0)), $((q1 - q0)) requests for a reread"

# A shared writable mmap, read back with read(2) after msync and after a
# remount. Without FUSE_DIRECT_IO_ALLOW_MMAP (a kernel before 6.6, which
# the daemon's log says) the mmap fails with ENODEV, as the README says.
mmap_ok=1
grep -q "does not offer FUSE_DIRECT_IO_ALLOW_MMAP" "$VT_LOG" && mmap_ok=0
python3 - "$M/m" "$mmap_ok" <<'PY' || vt_fail "cache=pool: shared mmap (see above)"
import errno, mmap, os, sys
path, ok = sys.argv[1], sys.argv[2] == "1"
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 3 * 65536)
try:
    m = mmap.mmap(fd, 3 * 65536, mmap.MAP_SHARED)
except OSError as e:
    if not ok and e.errno == errno.ENODEV:
        sys.exit(0)
    sys.exit("mmap: %s" % e)
if not ok:
    sys.exit("mmap worked though the daemon said it would not")
m[10:20] = b"0123456789"
m[65536 + 7:65536 + 14] = b"mmapped"
m.flush()
got = os.pread(fd, 10, 10) + os.pread(fd, 7, 65536 + 7)
m.close()
os.close(fd)
if got != b"0123456789mmapped":
    sys.exit("read(2) after msync: %r" % got)
PY
# mtime: a write moves it (the daemon stamps: no writeback cache with
# cache=pool), and it is what the image keeps.
t0=$(stat -c %y "$M/f")
sleep 0.1
printf 'new bytes' | dd of="$M/f" bs=4096 seek=7 conv=notrunc status=none ||
	vt_fail "cache=pool: write into $M/f"
printf 'new bytes' | dd of="$REF" bs=4096 seek=7 conv=notrunc status=none
t1=$(stat -c %y "$M/f")
[ "$t1" != "$t0" ] || vt_fail "cache=pool: a write left mtime at $t0"
vt_remount
t2=$(stat -c %y "$M/f")
[ "$t2" = "$t1" ] || vt_fail "cache=pool: mtime $t1 before the remount, $t2 after"
cmp "$M/f" "$REF" || vt_fail "cache=pool: the write did not read back after a remount"
if [ $mmap_ok = 1 ]; then
	[ "$(dd if="$M/m" bs=1 skip=10 count=10 status=none)" = 0123456789 ] &&
		[ "$(dd if="$M/m" bs=1 skip=$((65536 + 7)) count=7 status=none)" = mmapped ] ||
		vt_fail "cache=pool: what the mmap wrote is gone after a remount"
	vt_note "cache=pool: shared mmap writes read back after msync and a remount"
else
	vt_note "cache=pool: this kernel has no FUSE_DIRECT_IO_ALLOW_MMAP; shared mmap: ENODEV"
fi
vt_note "cache=pool: mtime moves with a write ($t0 -> $t1) and stays across a remount"
vt_umount

# ---- cache=kernel -----------------------------------------------------------
vt_mount "pool=64M,cache=kernel"
grep -q '^virtuscale_cache_mode_info{mode="kernel"} 1$' "$M/.virtuscale/stats" ||
	vt_fail "stats: no cache_mode_info line saying kernel"
r0=$(resident)
read_twice "$M/f" "$REF"
r1=$(resident)
k=$(kcached "$M/f")
[ $((r1 - r0)) -le $((PAGES / 16)) ] ||
	vt_fail "cache=kernel: the pool grew by $((r1 - r0)) pages reading $PAGES"
[ "$k" -ge $((PAGES * 9 / 10)) ] || vt_fail "cache=kernel: the kernel caches $k of $PAGES pages"
vt_note "cache=kernel: kernel $k pages, pool +$((r1 - r0))"
# Writes (small, unaligned, and whole pages) read back, now and after a remount.
head -c 100000 /dev/urandom >"$VT_BASE/patch"
for at in 12345 3000000; do
	dd if="$VT_BASE/patch" of="$M/f" bs=1 seek=$at conv=notrunc status=none ||
		vt_fail "cache=kernel: write at $at"
	dd if="$VT_BASE/patch" of="$REF" bs=1 seek=$at conv=notrunc status=none
done
dd if="$VT_BASE/patch" of="$M/f" bs=4096 count=16 seek=1000 conv=notrunc status=none
dd if="$VT_BASE/patch" of="$REF" bs=4096 count=16 seek=1000 conv=notrunc status=none
cmp "$M/f" "$REF" || vt_fail "cache=kernel: writes do not read back"
vt_remount
cmp "$M/f" "$REF" || vt_fail "cache=kernel: writes do not read back after a remount"
vt_note "cache=kernel: writes read back, also after a remount"
vt_umount

# ---- cache=both (the default) -----------------------------------------------
vt_mount "pool=64M"
grep -q '^virtuscale_cache_mode_info{mode="both"} 1$' "$M/.virtuscale/stats" ||
	vt_fail "stats: no cache_mode_info line saying both"
r0=$(resident)
read_twice "$M/f" "$REF"
r1=$(resident)
k=$(kcached "$M/f")
[ $((r1 - r0)) -ge $((PAGES * 9 / 10)) ] ||
	vt_fail "cache=both: the pool grew by $((r1 - r0)) pages reading $PAGES"
[ "$k" -ge $((PAGES * 9 / 10)) ] || vt_fail "cache=both: the kernel caches $k of $PAGES pages"
vt_note "cache=both: kernel $k pages, pool +$((r1 - r0))"
vt_umount
exit 0
