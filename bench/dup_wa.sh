#!/bin/bash
# bench/dup_wa.sh: what copies of tree nodes (mkfs --metadata dup, the
# default) cost in bytes written, against --metadata single, workload by
# workload, in the same run. See docs/damage.md ("The price of the copies").
#
#   bench/dup_wa.sh [BUILD] [SIZE]      (defaults: build, 1G)
#
# Each workload runs on a fresh image of each kind (single, then dup); the
# figure is the difference of the daemon's virtuscale_store_written_bytes_total
# (journal, pages home, copies, metadata) from after the mount to after a
# checkpoint that follows the workload. Prints one row per workload: MiB written with single, with
# dup, the ratio, and the share of dup's bytes that were copies.
#
# Workloads: seqwrite (one 256 MiB file, 1 MiB writes), randwrite (16,384
# random 4 KiB writes into a 64 MiB file, fsync every 256), smallfiles (4,000
# files of 1-8 KiB in 40 directories), untar (this source tree, 3 times),
# meta (2,000 creates, renames, chmods and unlinks).
set -eu
BUILD=${1:-build}
SIZE=${2:-1G}
VS=$BUILD/fs/virtuscale
MKFS=$BUILD/tools/mkfs.virtuscale
[ -x "$VS" ] && [ -x "$MKFS" ] || { echo "dup_wa: build first (ninja -C $BUILD)" >&2; exit 77; }
[ -e /dev/fuse ] || { echo "dup_wa: no /dev/fuse" >&2; exit 77; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/vs-dupwa.XXXXXX)
trap 'fusermount3 -u -z "$W/m" 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W/m"
tar -C "$SRC" --exclude='./build*' --exclude=./.git -cf "$W/src.tar" .

workload() {
	local m=$1
	case $2 in
	seqwrite)
		dd if=/dev/urandom of="$W/rand" bs=1M count=256 status=none
		dd if="$W/rand" of="$m/f" bs=1M conv=fsync status=none
		;;
	randwrite)
		python3 - "$m/f" <<'EOF'
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 64 << 20)
rnd = random.Random(7)
buf = os.urandom(4096)
for i in range(16384):
    os.pwrite(fd, buf, rnd.randrange(16384) * 4096)
    if i % 256 == 255:
        os.fsync(fd)
os.close(fd)
EOF
		;;
	smallfiles)
		python3 - "$m" <<'EOF'
import os, random, sys
rnd = random.Random(11)
for d in range(40):
    os.mkdir(f"{sys.argv[1]}/d{d}")
    for i in range(100):
        with open(f"{sys.argv[1]}/d{d}/f{i}", "wb") as f:
            f.write(os.urandom(rnd.randrange(1024, 8193)))
EOF
		sync -f "$m"
		;;
	untar)
		for i in 1 2 3; do mkdir "$m/t$i" && tar -C "$m/t$i" -xf "$W/src.tar"; done
		sync -f "$m"
		;;
	meta)
		python3 - "$m" <<'EOF'
import os, sys
m = sys.argv[1]
os.mkdir(f"{m}/a"); os.mkdir(f"{m}/b")
for i in range(2000):
    open(f"{m}/a/f{i}", "w").close()
for i in range(2000):
    os.rename(f"{m}/a/f{i}", f"{m}/b/g{i}")
    os.chmod(f"{m}/b/g{i}", 0o600)
for i in range(0, 2000, 2):
    os.unlink(f"{m}/b/g{i}")
EOF
		sync -f "$m"
		;;
	esac
}

# written KIND WORKLOAD: bytes the daemon wrote for WORKLOAD on a fresh
# image of KIND, and on a second line the copies' share.
written() {
	local img=$W/img
	rm -f "$img"
	"$MKFS" -q --force --metadata "$1" --size "$SIZE" "$img"
	"$VS" "$img" "$W/m" -o pool=256M,uring=off
	local b0 c0
	b0=$(awk '/^virtuscale_store_written_bytes_total /{print $2}' "$W/m/.virtuscale/stats")
	c0=$(awk '/^virtuscale_node_copy_written_bytes_total /{print $2}' "$W/m/.virtuscale/stats")
	workload "$W/m" "$2"
	echo checkpoint >"$W/m/.virtuscale/control"
	local b1 c1
	b1=$(awk '/^virtuscale_store_written_bytes_total /{print $2}' "$W/m/.virtuscale/stats")
	c1=$(awk '/^virtuscale_node_copy_written_bytes_total /{print $2}' "$W/m/.virtuscale/stats")
	"$BUILD/tools/vsctl" "$W/m" unmount >/dev/null
	echo $((b1 - b0)) $((c1 - c0))
}

printf '%-11s %12s %12s %7s %13s\n' workload "single MiB" "dup MiB" ratio "copies share"
for w in seqwrite randwrite smallfiles untar meta; do
	read -r s _ < <(written single "$w")
	read -r d c < <(written dup "$w")
	awk -v w="$w" -v s="$s" -v d="$d" -v c="$c" 'BEGIN {
		printf "%-11s %12.1f %12.1f %6.3fx %12.1f%%\n", w, s / 1048576, d / 1048576,
		       s ? d / s : 0, d ? 100 * c / d : 0 }'
done
