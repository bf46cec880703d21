#!/bin/sh
# A sequential reread that fits the pool (issue 20: "a pure sequential
# reread of a file that fits the pool still hits"), on a real mount with a
# 64 MiB pool, 64 KiB O_DIRECT reads (the kernel's page cache kept out):
#   cold   a 48 MiB file read in order three times after the mount
#   warm   a 16 MiB file read at random until it is resident and then
#          some (every page 5 times), then the 48 MiB file three times:
#          it fits the pool, but not beside the 16 MiB that were used more
# Prints the pool's loads in each pass (from the stats file).
# Usage: reread.sh BUILD_DIR [EXTRA_MOUNT_OPTIONS]   (needs /dev/fuse)
set -u
build=$(cd "${1:?usage: reread.sh BUILD_DIR [OPTIONS]}" && pwd)
extra=${2:-}
[ -c /dev/fuse ] || { echo "reread.sh: no /dev/fuse" >&2; exit 77; }
. "$(dirname "$0")/../mount_lib.sh"
bench_dir evsim-reread
opts="pool=64M${extra:+,$extra}"
"$build/tools/mkfs.virtuscale" "$dir/img" --size 256M >>"$dir/log" 2>&1 || fail "mkfs failed"
mount_fs "$opts"
head -c 16M /dev/urandom >"$mnt/hot" || fail "cannot write the hot file"
head -c 48M /dev/urandom >"$mnt/file" || fail "cannot write the file"
for case in cold warm; do
	umount_fs
	mount_fs "$opts"
	python3 - "$mnt" "$case" <<'PY' || fail "the experiment failed"
import mmap, os, random, sys
mnt, case = sys.argv[1], sys.argv[2]
buf = mmap.mmap(-1, 65536)
def loads():
    for line in open(os.path.join(mnt, ".virtuscale/stats")):
        if line.startswith("virtuscale_pool_loads_total "):
            return int(line.split()[1])
def read(path, offs, size):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    v = memoryview(buf)[:size]
    for o in offs:
        os.preadv(fd, [v], o)
    os.close(fd)
if case == "warm":
    rnd = random.Random(1)
    read(os.path.join(mnt, "hot"), [rnd.randrange(4096) * 4096 for _ in range(5 * 4096)], 4096)
out = []
for p in range(3):
    l0 = loads()
    read(os.path.join(mnt, "file"), range(0, 48 << 20, 65536), 65536)
    out.append(loads() - l0)
print("%s: loads in the three passes over the 48 MiB file (12288 pages): %s" % (case, " ".join(map(str, out))))
PY
done
