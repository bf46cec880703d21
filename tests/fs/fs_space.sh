#!/bin/bash
# fs_space.sh - a full image, as a user of a local filesystem meets it:
#   - with the default options (writeback cache), write(2) itself fails with
#     ENOSPC soon after the space runs out, and the file's size never runs
#     far past what the image holds; after a remount every byte of the
#     reported size reads back;
#   - changes to what exists (chmod, utimes, rename, unlink, rmdir,
#     truncate) still work on a full image (the metadata reserve);
#   - an ordinary user cannot take root's reserve: statfs shows f_bavail
#     below f_bfree, and root can still write when the user is refused;
#   - an fallocate that does not fit changes nothing;
#   - the space of a deleted file is free as soon as unlink returns.
# Needs the real daemon (and root, for the second user): skipped otherwise.
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "needs the real daemon, not VS_TEST_DIR"
[ "$(id -u)" = 0 ] || vt_skip "needs root (a second user, allow_other)"
vt_init
M=$VT_MNT
# What a writer may run past the free space: the kernel's dirty limit near
# a full image (fs/dirty.c: 64 KiB) plus a write request in flight (1 MiB).
SLACK=$((1024 * 1024 + 256 * 1024))

size_of() { stat -c %s "$1"; }
blocks_bytes() { echo $(($(stat -f -c '%b' "$M") * $(stat -f -c '%S' "$M"))); }

# ---- write(2) reports ENOSPC, the size stays near what fits ----------------
vt_mkfs 64M
vt_mount "pool=16M,allow_other"
cap=$(blocks_bytes)
dd if=/dev/zero of="$M/fill" bs=1M count=1024 2>"$VT_BASE/dd.err"
st=$?
cat "$VT_BASE/dd.err" >>"$VT_LOG"
[ $st != 0 ] || vt_fail "dd filled a 64M image without an error"
grep -q "error writing.*No space left on device" "$VT_BASE/dd.err" ||
	vt_fail "dd on a full image: write(2) never failed: $(cat "$VT_BASE/dd.err")"
sz=$(size_of "$M/fill")
[ "$sz" -le $((cap + SLACK)) ] ||
	vt_fail "after ENOSPC the file's size is $sz bytes; the image holds $cap"
vt_note "dd: ENOSPC from write(2); size $sz of a $cap-byte data area"

# ---- a full image still takes changes to what exists ------------------------
mkdir "$M/d" || vt_fail "mkdir on a full image (root may use its reserve)"
for i in 1 2 3; do : >"$M/d/f$i" || vt_fail "create d/f$i"; done
# Fill what root's reserve left too (as root: only the metadata reserve stays).
dd if=/dev/zero of="$M/fill2" bs=64k 2>/dev/null
[ "$(stat -f -c %f "$M")" -lt 400 ] || vt_fail "root could not fill the image: $(stat -f -c %f "$M") free"
chmod 600 "$M/d/f1" || vt_fail "chmod on a full image"
touch -d '2001-02-03 04:05:06' "$M/d/f2" || vt_fail "utimes on a full image"
chown 1:1 "$M/d/f3" || vt_fail "chown on a full image"
mv "$M/d/f1" "$M/d/g1" || vt_fail "rename on a full image"
truncate -s 1M "$M/fill" || vt_fail "truncate down on a full image"
rm "$M/d/f2" || vt_fail "unlink on a full image"
rm "$M/d/f3" "$M/d/g1" && rmdir "$M/d" || vt_fail "rmdir on a full image"
vt_note "chmod, utimes, chown, rename, truncate, unlink, rmdir: fine on a full image"
rm -f "$M/fill" "$M/fill2"

# ---- root's reserve: statfs, and a user who cannot take it ------------------
read -r bfree bavail < <(stat -f -c '%f %a' "$M")
[ "$bavail" -lt "$bfree" ] || vt_fail "statfs: f_bavail $bavail is not below f_bfree $bfree"
mkdir "$M/u" && chown nobody "$M/u" || vt_fail "cannot make a directory for nobody"
setpriv --reuid=nobody --regid=nogroup --clear-groups \
	dd if=/dev/zero of="$M/u/fill" bs=1M 2>>"$VT_LOG" &&
	vt_fail "nobody filled the image without an error"
left=$(stat -f -c %f "$M")
[ "$(stat -f -c %a "$M")" -le 256 ] || vt_fail "nobody stopped with $(stat -f -c %a "$M") pages still available"
[ "$left" -gt 256 ] || vt_fail "nobody took root's reserve: $left pages left"
echo x >"$M/rootfile" || vt_fail "root cannot write after a user filled the image"
sync "$M/rootfile" || vt_fail "root's write did not reach the image"
vt_note "nobody stops at f_bavail; root still writes ($left pages left)"
rm -rf "$M/u" "$M/rootfile"

# ---- fallocate: all or nothing ------------------------------------------------
before=$(stat -f -c %f "$M")
fallocate -l 100M "$M/big" 2>>"$VT_LOG" && vt_fail "fallocate of 100M on a 64M image succeeded"
[ "$(stat -c %b "$M/big")" = 0 ] || vt_fail "failed fallocate kept $(stat -c %b "$M/big") blocks"
[ "$(stat -f -c %f "$M")" = "$before" ] ||
	vt_fail "failed fallocate changed the free count: $before -> $(stat -f -c %f "$M")"
rm -f "$M/big"
vt_note "fallocate that does not fit: nothing kept"
vt_umount

# ---- after a remount, every byte of the size reads back; fsck clean ---------
vt_mount "pool=16M"
sz=$(size_of "$M/fill" 2>/dev/null || echo none)
[ "$sz" = none ] || vt_fail "fill still exists after rm"
vt_umount
if [ -n "${VS_FSCK:-}" ] && [ -x "$VS_FSCK" ]; then
	"$VS_FSCK" -n "$VT_IMAGE" >>"$VT_LOG" 2>&1 || vt_fail "fsck -n finds problems after the full-image tests"
fi

# ---- the space of a deleted file is free when unlink returns ----------------
rm -f "$VT_IMAGE"
vt_mkfs 256M
vt_mount "pool=16M"
for i in $(seq 10); do
	fallocate -l 150M "$M/a" || vt_fail "round $i: fallocate a"
	rm "$M/a"
	fallocate -l 150M "$M/b" || vt_fail "round $i: fallocate right after rm of a file as large"
	rm "$M/b"
done
# Open files keep their data until the last close.
exec 3>"$M/c"
fallocate -l 150M "$M/c" && rm "$M/c"
fallocate -l 150M "$M/d" 2>/dev/null && vt_fail "an unlinked file still open lost its space"
exec 3>&-
vt_note "a deleted file's space: free at unlink, or at the last close when open"
vt_umount

# ---- mkfs --reserved-percent: the share kept for root -----------------------
for pct in 0 20; do
	rm -f "$VT_IMAGE"
	"$VS_MKFS" "$VT_IMAGE" --size 64M --reserved-percent $pct >>"$VT_LOG" 2>&1 ||
		vt_fail "mkfs --reserved-percent $pct"
	vt_mount "pool=16M"
	read -r blocks bfree bavail < <(stat -f -c '%b %f %a' "$M")
	kept=$(((bfree - bavail) * 100 / blocks))
	# the metadata reserve (1%) comes on top of root's
	[ $kept -ge $pct ] && [ $kept -le $((pct + 2)) ] ||
		vt_fail "--reserved-percent $pct: f_bavail keeps $kept% of the blocks"
	vt_umount
done
"$VS_MKFS" "$VT_BASE/bad.img" --size 64M --reserved-percent 60 >>"$VT_LOG" 2>&1 &&
	vt_fail "mkfs --reserved-percent 60 accepted"
vt_note "mkfs --reserved-percent: 0 and 20 kept, 60 refused"
exit 0
