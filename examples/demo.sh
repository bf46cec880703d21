#!/bin/bash
# demo.sh: a tour of VirtuScale in a scratch directory.
#
#   examples/demo.sh [BUILD_DIR]
#
# Formats a small image, mounts it, copies files in, shows the pool through
# the stats file, evicts the pool and reads the data back from the image,
# shows per-file residency, unmounts, mounts again and checks the data.
# Needs root (or user_allow_other-free FUSE access), /dev/fuse and
# fusermount3. Exits 77 when something it needs is missing.
set -euo pipefail

build=${1:-${VS_BUILD:-build}}
vs=${VS_VIRTUSCALE:-$build/fs/virtuscale}
mkfs=${VS_MKFS:-$build/tools/mkfs.virtuscale}
vsctl=${VS_VSCTL:-$(dirname "$vs")/../tools/vsctl}
for x in "$vs" "$mkfs" "$vsctl"; do
	[ -x "$x" ] || { echo "demo: $x not built" >&2; exit 77; }
done
[ -c /dev/fuse ] && command -v fusermount3 >/dev/null || { echo "demo: no FUSE here" >&2; exit 77; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/vsdemo.XXXXXX")
img=$dir/image
mnt=$dir/mnt
mkdir "$mnt"
# The daemon writes back after the unmount and holds the image locked
# (flock) until it is done: vsctl unmount waits for that; after a bare
# fusermount3 -u, a probe of the lock (flock(1), util-linux) does.
wait_free() { for _ in $(seq 300); do flock -n "$img" true && return 0; sleep 0.1; done; return 1; }
cleanup() {
	if mountpoint -q "$mnt"; then
		"$vsctl" "$mnt" unmount || { fusermount3 -u "$mnt" && wait_free; } || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

metric() { awk -v m="virtuscale_$1" '$1 == m { print $2 }' "$mnt/.virtuscale/stats"; }

step() { printf '\n== %s\n' "$*"; }

step "format a 256 MiB image"
"$mkfs" "$img" --size 256M

step "mount it with a 64 MiB pool"
"$vs" "$img" "$mnt" -o pool=64M,exmap=auto
mount | grep -F "$mnt"

step "copy some files in"
src=/usr/include/linux
[ -d "$src" ] || src=/etc
cp -a "$src" "$mnt/src" 2>/dev/null || true
head -c 32M /dev/urandom > "$mnt/random.bin"
sum=$(md5sum < "$mnt/random.bin")
df -h "$mnt" | tail -1
echo "files: $(find "$mnt/src" | wc -l)"

step "the pool, from $mnt/.virtuscale/stats"
echo "capacity $(metric pool_capacity_pages) pages, resident $(metric pool_resident_pages)," \
	"dirty $(metric pool_dirty_pages), loads $(metric pool_loads_total)," \
	"evictions $(metric pool_evictions_total), backend:" \
	"$(grep -o 'backend="[a-z]*"' "$mnt/.virtuscale/stats")"

step "flush, then evict the whole pool"
echo flush > "$mnt/.virtuscale/control"
echo "dirty after flush: $(metric pool_dirty_pages)"
echo evict > "$mnt/.virtuscale/control"
echo "resident after evict: $(metric pool_resident_pages)"
echo "residency of random.bin (resident total): $(getfattr --only-values -n user.virtuscale.residency "$mnt/random.bin" 2>/dev/null || echo '?')"

step "read it back from the image"
loads=$(metric pool_loads_total)
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
[ "$(md5sum < "$mnt/random.bin")" = "$sum" ] && echo "random.bin intact"
echo "pages loaded for that: $(( $(metric pool_loads_total) - loads ))"
echo "residency now: $(getfattr --only-values -n user.virtuscale.residency "$mnt/random.bin" 2>/dev/null || echo '?')"

step "unmount, mount again, check"
"$vsctl" "$mnt" unmount # returns once the image is written back and free
"$vs" "$img" "$mnt" -o pool=64M
[ "$(md5sum < "$mnt/random.bin")" = "$sum" ] && echo "random.bin intact after remount"
diff -r --no-dereference "$src" "$mnt/src" >/dev/null 2>&1 && echo "$src copy intact after remount"
echo "mounted $(metric mounts_total) times"
echo
echo "demo done"
