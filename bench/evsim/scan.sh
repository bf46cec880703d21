#!/bin/sh
# The workload-aware eviction issue's scan experiment on a real mount, with
# the pool's eviction trace recorded and replayed through evsim:
#   phase 1  a 16 MiB hot file read at random (4 KiB O_DIRECT reads, 4x its
#            pages, then every page once in random order): it is resident
#   phase 2  one sequential pass of 64 KiB O_DIRECT reads over a 256 MiB
#            cold file (64 KiB requests stay below the fs's streaming size,
#            so they go through the pool)
#   phase 3  the hot file once more, every page in random order: the
#            pool's loads here are the hot file's reloads
# on a 64 MiB pool. O_DIRECT keeps the kernel's page cache out of it.
# Prints the pool's loads per phase (from the stats file), then evsim's
# table for the recorded trace (markers between the phases, appended by
# this script: the daemon writes each record at once, VS_EVICT_TRACE_SYNC).
# Usage: scan.sh BUILD_DIR [EXTRA_MOUNT_OPTIONS]   (needs /dev/fuse)
set -u
build=$(cd "${1:?usage: scan.sh BUILD_DIR [OPTIONS]}" && pwd)
extra=${2:-}
[ -c /dev/fuse ] || { echo "scan.sh: no /dev/fuse" >&2; exit 77; }
. "$(dirname "$0")/../mount_lib.sh"
bench_dir evsim-scan
opts="pool=64M${extra:+,$extra}"

"$build/tools/mkfs.virtuscale" "$dir/img" --size 640M >>"$dir/log" 2>&1 || fail "mkfs failed"
mount_fs "$opts"
head -c 16M /dev/urandom >"$mnt/hot" || fail "cannot write the hot file"
head -c 256M /dev/zero | tr '\0' 'x' >"$mnt/cold" || fail "cannot write the cold file"
umount_fs
mount_fs "$opts" VS_EVICT_TRACE="$dir/trace" VS_EVICT_TRACE_SYNC=1

python3 - "$mnt" "$dir/trace" <<'PY' || fail "the experiment failed"
import mmap, os, random, struct, sys
mnt, trace = sys.argv[1], sys.argv[2]
rnd = random.Random(1)
buf = mmap.mmap(-1, 65536)

def loads():
    for line in open(os.path.join(mnt, ".virtuscale/stats")):
        if line.startswith("virtuscale_pool_loads_total "):
            return int(line.split()[1])
    raise SystemExit("no pool_loads_total in the stats file")

def mark(n):
    with open(trace, "ab") as f:
        f.write(struct.pack("<Q", (3 << 56) | n))

def read_pages(path, order, size):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    view = memoryview(buf)[:size]
    for p in order:
        if os.preadv(fd, [view], p * 4096) != size:
            raise SystemExit("short read")
    os.close(fd)

hot = os.path.join(mnt, "hot")
cold = os.path.join(mnt, "cold")
pages = 4096
res = []
mark(1)
l0 = loads()
read_pages(hot, [rnd.randrange(pages) for _ in range(4 * pages)], 4096)
perm = list(range(pages)); rnd.shuffle(perm)
read_pages(hot, perm, 4096)
res.append(loads() - l0)
mark(2)
l0 = loads()
read_pages(cold, range(0, 65536, 16), 65536)
res.append(loads() - l0)
mark(3)
l0 = loads()
rnd.shuffle(perm)
read_pages(hot, perm, 4096)
res.append(loads() - l0)
print("pool loads: phase 1 (hot, random) %d, phase 2 (scan) %d, phase 3 (hot again) %d "
      "= %.1f%% of the hot file's %d pages" % (res[0], res[1], res[2], 100.0 * res[2] / pages, pages))
PY
umount_fs
"$build/bench/evsim/evsim" -c 16384 "$dir/trace" || fail "evsim failed"
if [ -n "${EVSIM_KEEP:-}" ]; then cp "$dir/trace" "$EVSIM_KEEP" && echo "trace kept in $EVSIM_KEEP"; fi
