#!/bin/sh
# The workload-aware eviction issue's metadata scan on a real mount: a tree
# of small files whose metadata is hot, while find and tar walk another tree
# four times the pool. 16 MiB pool (4,096 pages):
#   tree A   20,000 files of 100 bytes in 100 directories: inline files,
#            about 1,700 pages of tree (inodes, dirents and data in the
#            leaves), 42% of the pool
#   tree B   80,000 files of 600 bytes in 400 directories (still inline, so
#            a walk reads tree nodes only): about 18,400 pages, 4.5x the pool.
#            METASCAN_BSIZE=1024 makes them 1 KiB, past the inline limit:
#            one data page each, B's tree is then about 1.2x the pool and
#            only tar | cat reads the data (80,000 pages)
# After a remount (cold pool), with the kernel's dentries and inodes dropped
# before every walk (echo 2 > /proc/sys/vm/drop_caches) so that every
# listing and lookup reaches the daemon:
#   phase 1  A walked twice (os.walk + lstat: one readdirplus per directory
#            reads every inode)
#   phase 2  B four times: find B; tar cf /dev/null B (GNU tar reads no file
#            contents when the archive is /dev/null); tar cf - B | cat (it
#            does); find B -type f | xargs stat
#            (METASCAN_PASSES="find tar0 tarcat stat", the default, names
#            them; "find tar0 find tar0" is the issue's own: find and tar
#            cf /dev/null only)
#   phase 3  A walked once more: the pool's loads here are A's reloads
# Prints the pool's loads, hits and FUSE requests per walk (from the stats
# file), phase 3's loads as a share of A's pages (phase 1's first walk),
# then evsim's table for the recorded trace (a marker before each walk).
# Why 16 MiB: A must fit the pool with room beside it, and B must be four
# pools of metadata; with 64 MiB, B would be 320,000 files (a minute to
# create and a minute a pass) for the same ratios.
# Usage: metascan.sh BUILD_DIR [EXTRA_MOUNT_OPTIONS]   (root: drop_caches)
set -u
build=$(cd "${1:?usage: metascan.sh BUILD_DIR [OPTIONS]}" && pwd)
extra=${2:-}
[ -c /dev/fuse ] || { echo "metascan.sh: no /dev/fuse" >&2; exit 77; }
[ -w /proc/sys/vm/drop_caches ] || { echo "metascan.sh: needs root (drop_caches)" >&2; exit 77; }
. "$(dirname "$0")/../mount_lib.sh"
bench_dir evsim-metascan
opts="pool=16M${extra:+,$extra}"

bsize=${METASCAN_BSIZE:-600}
# The trees take about 38,000 pages with their copies (metadata dup), and
# 80,000 more with 1 KiB files.
"$build/tools/mkfs.virtuscale" "$dir/img" --size 1G >>"$dir/log" 2>&1 || fail "mkfs failed"
mount_fs "$opts"
python3 - "$mnt" "$bsize" <<'PY' || fail "cannot create the trees"
import os, sys
mnt, bsize = sys.argv[1], int(sys.argv[2])
def tree(name, dirs, files, size):
    data = name.encode() * size
    for d in range(dirs):
        dp = os.path.join(mnt, name, "d%03d" % d)
        os.makedirs(dp)
        for f in range(files):
            fd = os.open(os.path.join(dp, "f%03d" % f), os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, data)
            os.close(fd)
tree("A", 100, 200, 100)
tree("B", 400, 200, bsize)
PY
umount_fs
mount_fs "$opts" VS_EVICT_TRACE="$dir/trace" VS_EVICT_TRACE_SYNC=1

python3 - "$mnt" "$dir/trace" <<'PY' || fail "the experiment failed"
import os, struct, subprocess, sys, time
mnt, trace = sys.argv[1], sys.argv[2]

def stats():
    s = {}
    for line in open(os.path.join(mnt, ".virtuscale/stats")):
        if not line.startswith("#"):
            k, v = line.split()
            s[k.replace("virtuscale_", "")] = float(v)
    if "pool_loads_total" not in s:
        raise SystemExit("no pool_loads_total in the stats file")
    return s

def mark(n):
    with open(trace, "ab") as f:
        f.write(struct.pack("<Q", (3 << 56) | n))

def walk(root):
    for dp, _, files in os.walk(os.path.join(mnt, root)):
        for f in files:
            os.lstat(os.path.join(dp, f))

def sh(cmd):
    return lambda: subprocess.run(cmd, shell=True, cwd=mnt, check=True,
                                  stdout=subprocess.DEVNULL)

scans = {"find": ("find B", sh("find B")),
         "tar0": ("tar cf /dev/null B", sh("tar cf /dev/null B")),
         "tarcat": ("tar cf - B | cat", sh("tar cf - B | cat")),
         "stat": ("find B -type f | xargs stat", sh("find B -type f -print0 | xargs -0 stat"))}
walks = [("1", "walk A", lambda: walk("A")), ("1", "walk A again", lambda: walk("A"))]
walks += [("2",) + scans[w] for w in os.environ.get("METASCAN_PASSES", "find tar0 tarcat stat").split()]
walks += [("3", "walk A", lambda: walk("A"))]
req = lambda s, op: s['fuse_requests_total{op="%s"}' % op]
ops = ("lookup", "getattr", "readdirplus", "open", "read")
print("%-5s %-29s %5s %7s %9s %6s %7s %6s %6s %6s %7s %7s %6s %6s" %
      ("phase", "walk", "s", "loads", "hits", "lookup", "getattr", "rdplus", "open", "read",
       "promote", "drops", "ghost", "prob"))
loads = []
s0 = stats()
for n, (phase, name, fn) in enumerate(walks, 1):
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")
    mark(n)
    a = stats()
    t0 = time.monotonic()
    fn()
    t1 = time.monotonic()
    b = stats()
    d = lambda k: int(b[k] - a[k])
    loads.append(d("pool_loads_total"))
    print("%-5s %-29s %5.1f %7d %9d %6d %7d %6d %6d %6d %7d %7d %6d %6d" %
          (phase, name, t1 - t0, loads[-1], d("pool_hits_total"),
           *(int(req(b, o) - req(a, o)) for o in ops),
           d("pool_promotions_total"), d("pool_scan_drops_total"),
           d("pool_ghost_hits_total"), int(b['pool_queue_pages{queue="probation"}'])))
print("(open and read: the stats file's own; prob: pages in probation after the walk)")
print("pool %d pages (%s); A's pages (first walk) %d; B's (find B) %d = %.1fx the pool" %
      (b["pool_capacity_pages"], [k for k in b if k.startswith("evict_policy_info")][0]
       .split('"')[1], loads[0], loads[2], loads[2] / b["pool_capacity_pages"]))
if "pool_meta_loads_total" in b: # metadata first (s3clock): tree nodes among the loads
    print("tree nodes among the loads of the walks: %d of %d" %
          (b["pool_meta_loads_total"] - s0["pool_meta_loads_total"],
           b["pool_loads_total"] - s0["pool_loads_total"]))
print("phase 3 loads %d = %.1f%% of A's %d pages (the target: at most 5%%)" %
      (loads[6], 100.0 * loads[6] / loads[0], loads[0]))
PY
cap=$(awk '$1 == "virtuscale_pool_capacity_pages" { print $2 }' "$mnt/.virtuscale/stats")
umount_fs
"$build/bench/evsim/evsim" -c "$cap" "$dir/trace" || fail "evsim failed"
if [ -n "${EVSIM_KEEP:-}" ]; then cp "$dir/trace" "$EVSIM_KEEP" && echo "trace kept in $EVSIM_KEEP"; fi
