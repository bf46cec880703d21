#!/bin/bash
# campaign.sh - a corruption campaign: how much of a filesystem survives one
# damaged page, for each kind of page and each kind of damage.
#
#   campaign.sh [--long | --quick] [--trials N] [--seed S] [--kinds "K..."]
#               [--damages "D..."] [--out FILE] [--assert[=LIST]] [--keep]
#               [--build DIR] [--metadata dup|single]
#
# Once: mkfs a 32 MiB image, mount it, build a known tree (a few hundred
# files of varied sizes, inline ones among them, directories, xattrs large
# and small, hard links, symlinks short and long, a fifo), unmount cleanly,
# check that fsck -n finds it clean, mount again to record every path's
# type, mode, owner, size, inode, link target, sha256 and xattrs, and map
# its pages by kind (dmg_tool map).
#
# Then for each kind of page (super journal bitmap csum inner leaf overflow
# data) and each damage (flip rand64 zero8 zero copy torn, see dmg_tool.c), N
# trials: copy the image, damage one page of that kind (picked by the
# seed), and
#   pre   mount a copy of the damaged image as it is and compare every
#         file with the record (is it mountable? does it serve wrong bytes?);
#   fsck  fsck.virtuscale -y on the damaged image;
#   post  mount it and compare every file again (skipped when fsck left
#         the image byte for byte as it was: the pre result stands).
# Every step has a timeout: a hang is an outcome. A trial's outcome, worst
# first:
#   fsck-crashed, fsck-hung        fsck died of a signal / timed out
#   daemon-crashed, daemon-hung    the daemon died of a signal (or a
#                                  sanitizer) / a mount, a read or the
#                                  unmount timed out
#   wrong-bytes                    a file read back without an error but
#                                  with other bytes (pre or post)
#   broken-by-fsck                 mountable before fsck, not after
#   unmountable                    not mountable after fsck
#   lost                           some paths missing or failing with an
#                                  error (counted: files, bytes)
#   moved                          nothing lost, but some paths are found
#                                  only under another name (/lost+found/#N:
#                                  the same inode, type and bytes), counted
#   clean                          nothing lost
# Besides: wrong-meta counts paths whose type, mode, owner, size, link
# target or xattrs changed without an error (link counts are not compared:
# fsck corrects them after a lost name).
#
# Prints the table (kind x damage -> outcome counts, files and bytes lost)
# and, with --out, writes it as Markdown with the command that made it.
# --assert checks the invariants in LIST (comma-separated; default all):
#   no-crash     no crash or hang of fsck or the daemon
#   no-wrong     no wrong bytes served without an error
#   no-wrong-except-csum   the same, for damage to any page but the
#                checksum table's (kept for comparison with format version
#                1, whose table had no seals: a zeroed entry read as zeros)
#   fsck-safe    fsck never makes a mountable image unmountable
#   data-local   damage to a file's data page loses only that file
#   inner-lossless  damage to an inner node (the root) loses nothing after
#                fsck (fsck rebuilds the tree from the leaves it finds)
#   leaf-local   damage to a leaf loses at most the inodes of its records:
#                lost inodes (files lost, not moved) <= the leaf's entries,
#                and the image mounts after fsck
#   meta-lossless  damage to any page but file data (superblock, journal,
#                bitmap, checksum table, inner node, leaf, overflow page)
#                loses nothing after fsck: the image keeps copies of tree
#                nodes and of the checksum table (--metadata dup, mkfs's
#                default)
# and exits 1 when one fails. --metadata is handed to mkfs (dup, the
# default, or single: tree nodes without copies, where salvage does the work).
#
# Default: one trial per cell (48 trials, 4 to 5 minutes). --quick (the
# registered test): each kind of page once, with one damage in turn, and
# data pages with every damage (13 trials). --long: 50 per cell (2400
# trials, some 3 hours; --trials overrides). Needs VS_MKFS, VS_FSCK,
# VS_VIRTUSCALE and VS_DMG_TOOL (or --build DIR), /dev/fuse, fusermount3
# and getfattr; else exits 77.
set -u

LONG=0 QUICK=0 TRIALS= SEED=1 OUT= ASSERT= KEEP=0
KINDS="super journal bitmap csum inner leaf overflow data"
DAMAGES="flip rand64 zero8 zero copy torn"
ALL_ASSERTS="no-crash,no-wrong,no-wrong-except-csum,fsck-safe,data-local,inner-lossless,leaf-local,meta-lossless"
METADATA=dup
CMDLINE="tests/damage/campaign.sh $*"
while [ $# -gt 0 ]; do
	case $1 in
	--long) LONG=1 ;;
	--quick) QUICK=1 ;;
	--trials) TRIALS=$2; shift ;;
	--seed) SEED=$2; shift ;;
	--kinds) KINDS=$2; shift ;;
	--damages) DAMAGES=$2; shift ;;
	--out) OUT=$2; shift ;;
	--assert) ASSERT=$ALL_ASSERTS ;;
	--assert=*) ASSERT=${1#--assert=} ;;
	--keep) KEEP=1 ;;
	--metadata) METADATA=$2; shift ;;
	--build)
		VS_MKFS=$2/tools/mkfs.virtuscale VS_FSCK=$2/tools/fsck.virtuscale
		VS_VIRTUSCALE=$2/fs/virtuscale VS_DMG_TOOL=$2/tests/damage/dmg_tool
		shift ;;
	-h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "campaign.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$TRIALS" ] || { [ $LONG = 1 ] && TRIALS=50 || TRIALS=1; }

skip() { echo "SKIP: $*"; exit 77; }
die() { echo "FAIL: $*"; exit 1; }
for v in VS_MKFS VS_FSCK VS_VIRTUSCALE VS_DMG_TOOL; do
	[ -n "${!v:-}" ] && [ -x "${!v}" ] || skip "$v not set or not executable"
done
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v fusermount3 >/dev/null || skip "no fusermount3"
command -v getfattr >/dev/null && command -v setfattr >/dev/null || skip "no getfattr/setfattr (attr)"

FSCK_TO=${VS_DAMAGE_FSCK_TIMEOUT:-120}
MOUNT_TO=${VS_DAMAGE_MOUNT_TIMEOUT:-30}
READ_TO=${VS_DAMAGE_READ_TIMEOUT:-120}
UMOUNT_TO=${VS_DAMAGE_UMOUNT_TIMEOUT:-60}
# VS_TEST_OPTS (say uring=off) goes into every mount, as in tests/crash.
POOL=pool=32M${VS_TEST_OPTS:+,$VS_TEST_OPTS}

T=$(mktemp -d /tmp/vs-damage.XXXXXX) || die "mktemp"
MNT=$T/mnt
mkdir "$MNT"
DPID=
cleanup() {
	if is_mounted; then fusermount3 -u -z "$MNT" 2>/dev/null; fi
	[ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null
	if [ $KEEP = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

is_mounted() { grep -q " $MNT " /proc/self/mountinfo; }

# mount_img IMAGE LOG: 0 mounted, 1 refused (the daemon exited with an
# error), 2 crashed (a signal or a sanitizer report), 3 hung.
mount_img() {
	local img=$1 log=$2 i
	: >"$log"
	"$VS_VIRTUSCALE" "$img" "$MNT" -f -o "$POOL" >>"$log" 2>&1 &
	DPID=$!
	for ((i = 0; i < MOUNT_TO * 10; i++)); do
		is_mounted && return 0
		if ! kill -0 "$DPID" 2>/dev/null; then
			wait "$DPID"
			local rc=$?
			DPID=
			crashed "$rc" "$log" && return 2
			return 1
		fi
		sleep 0.1
	done
	kill -9 "$DPID" 2>/dev/null
	wait "$DPID" 2>/dev/null
	DPID=
	is_mounted && fusermount3 -u -z "$MNT"
	return 3
}

# Did a process that exited with $1 (log $2) crash?
crashed() {
	[ "$1" -ge 128 ] || grep -q "AddressSanitizer\|runtime error:\|LeakSanitizer" "$2"
}

# umount_img LOG: 0 the daemon exited cleanly, 2 crashed, 3 hung.
umount_img() {
	local log=$1 i
	fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null
	for ((i = 0; i < UMOUNT_TO * 10; i++)); do
		kill -0 "$DPID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$DPID" 2>/dev/null; then
		kill -9 "$DPID"
		wait "$DPID" 2>/dev/null
		DPID=
		return 3
	fi
	wait "$DPID"
	local rc=$?
	DPID=
	crashed "$rc" "$log" && return 2
	return 0
}

# snap DIR OUT: one line per path under DIR:
#   path TAB type mode uid gid size TAB inode TAB nlink TAB target TAB
#   sha256 or - TAB xattr digest or - TAB error (1: reading it failed)
# Returns 3 when a step timed out (the daemon hung).
snap() {
	local dir=$1 out=$2 rc=0
	: >"$out.sum"
	: >"$out.xattr"
	(
		cd "$dir" || exit 1
		export LC_ALL=C # plain quotes in error messages
		# A path find cannot read is an error of that path (in .err),
		# not the end of the snapshot; only a timeout is.
		timeout -s KILL "$READ_TO" find . -mindepth 1 \
			-printf '%P\t%y %m %U %G %s\t%i\t%n\t%l\n' >"$out.meta" 2>"$out.err"
		[ $? = 137 ] && exit 137
		timeout -s KILL "$READ_TO" sh -c \
			'find . -mindepth 1 -type f -printf "%P\0" | xargs -0 -r sha256sum --' \
			>"$out.sum" 2>>"$out.err"
		[ $? = 137 ] && exit 137
		timeout -s KILL "$READ_TO" getfattr -R -P -h -d -m - -e hex . \
			>"$out.xattr" 2>>"$out.err"
		[ $? = 137 ] && exit 137
		exit 0
	)
	rc=$?
	[ $rc = 137 ] && return 3
	awk -F'\t' -v OFS='\t' '
		FILENAME ~ /\.meta$/ { meta[$1] = $2; ino[$1] = $3; nl[$1] = $4; tgt[$1] = $5; order[++n] = $1; next }
		FILENAME ~ /\.sum$/ {
			# "HASH  PATH" (a backslash first when the name needed escaping)
			h = substr($0, 1, index($0, " ") - 1); p = substr($0, index($0, " ") + 2)
			sub(/^\\/, "", h); sum[p] = h; next }
		FILENAME ~ /\.xattr$/ {
			if ($0 ~ /^# file: /) { cur = substr($0, 9); sub(/^\.\//, "", cur); next }
			if ($0 != "") xa[cur] = xa[cur] $0 ";"
			next }
		FILENAME ~ /\.err$/ {
			# "tool: ./PATH: Error text" (find: also for what is below it)
			line = $0; sub(/^[a-z0-9]+: /, "", line); gsub(/\047/, "", line)
			sub(/^\.\//, "", line)
			i = index(line, ": "); if (i > 0) err[substr(line, 1, i - 1)] = 1
			next }
		END {
			for (i = 1; i <= n; i++) {
				p = order[i]
				e = (p in err) ? 1 : 0
				for (q in err) if (index(p, q "/") == 1) e = 1
				printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", p, meta[p], ino[p], nl[p],
					tgt[p], (p in sum) ? sum[p] : "-", (p in xa) ? xa[p] : "-", e
			}
		}' "$out.meta" "$out.sum" "$out.xattr" "$out.err" | LC_ALL=C sort >"$out"
	return 0
}

# compare BASE NEW: print "lost_files lost_bytes wrong_bytes wrong_meta
# lost_inodes(comma list) moved_files" and the details to NEW.diff. A path
# missing from NEW whose inode NEW has under another name, with the same
# type and bytes, was moved (fsck's /lost+found), not lost.
compare() {
	awk -F'\t' '
		NR == FNR { base[$1] = $0; next }
		{ now[$1] = $0; split($2, m, " "); byino[$3] = m[1] "\t" $6 "\t" $8 }
		END {
			for (p in base) {
				split(base[p], b, "\t"); split(b[2], bm, " ")
				if (!(p in now)) {
					why = "missing"
					if ((b[3] in byino) && byino[b[3]] == bm[1] "\t" b[6] "\t0") why = "moved"
				} else {
					split(now[p], c, "\t"); split(c[2], cm, " ")
					# a regular file without a digest could not be read
					if (c[8] == 1 || (cm[1] == "f" && c[6] == "-")) why = "error"
					else if (b[6] != c[6] && bm[1] == "f" && cm[1] == "f") why = "wrong-bytes"
					else if (b[2] != c[2] || b[5] != c[5] || b[7] != c[7]) why = "wrong-meta"
					else continue
				}
				printf "%s\t%s\t%s\t%s\n", why, p, bm[5], b[3] > DIFF
				if (why == "wrong-bytes") wrong++
				else if (why == "wrong-meta") meta++
				else if (why == "moved") moved++
				else { lost++; bytes += (bm[1] == "f") ? bm[5] : 0; inos[b[3]] = 1 }
			}
			list = ""
			for (i in inos) list = list (list == "" ? "" : ",") i
			printf "%d %d %d %d %s %d\n", lost, bytes, wrong, meta, (list == "" ? "-" : list), moved
		}' DIFF="$2.diff" "$1" "$2"
}

# check_mount IMAGE TAG: mount, snapshot, compare, unmount. Sets M_STATE
# (ok, refused, crashed, hung) and M_RES (compare's line).
check_mount() {
	local img=$1 tag=$2 r
	M_RES="0 0 0 0 - 0"
	mount_img "$img" "$T/$tag.log"
	case $? in
	1) M_STATE=refused; return ;;
	2) M_STATE=crashed; return ;;
	3) M_STATE=hung; return ;;
	esac
	snap "$MNT" "$T/$tag.snap"
	r=$?
	if [ $r = 3 ]; then
		fusermount3 -u -z "$MNT"
		kill -9 "$DPID" 2>/dev/null
		wait "$DPID" 2>/dev/null
		DPID=
		M_STATE=hung
		return
	fi
	M_RES=$(compare "$T/base.snap" "$T/$tag.snap")
	umount_img "$T/$tag.log"
	case $? in
	0) M_STATE=ok ;;
	2) M_STATE=crashed ;;
	3) M_STATE=hung ;;
	esac
}

# ---- the known tree -----------------------------------------------------
build_tree() {
	local m=$1 i d f size class n=0
	RANDOM=$SEED
	for d in 0 1 2 3 4 5 6 7; do
		mkdir -p "$m/d$d/s0/t0" "$m/d$d/s1" "$m/d$d/s2" || return 1
	done
	mkdir "$m/empty" "$m/d0/empty"
	for ((i = 0; i < 320; i++)); do
		d=$m/d$((RANDOM % 8))/s$((RANDOM % 3))
		[ $((i % 5)) = 0 ] && d=${d%/s*}
		[ $((i % 17)) = 0 ] && d=$m/d$((RANDOM % 8))/s0/t0
		class=$((RANDOM % 100))
		if [ $class -lt 40 ]; then size=$((RANDOM % 1001))
		elif [ $class -lt 82 ]; then size=$((1001 + RANDOM % 31767))
		elif [ $class -lt 97 ]; then size=$((32768 + RANDOM * 3))
		else size=$((262144 + RANDOM * 16)); fi
		f=$d/f$i
		"$VS_DMG_TOOL" gen "$f" "$size" "$((SEED * 100000 + i))" || return 1
		n=$((n + size))
		[ $((i % 7)) = 0 ] && setfattr -n user.k$i -v "value-$i" "$f"
		# 1800 bytes: an overflow page each, no two alike
		[ $((i % 41)) = 0 ] &&
			setfattr -n user.big -v "big$i$(head -c 1790 /dev/zero | tr '\0' a)" "$f"
		[ $((i % 23)) = 0 ] && ln "$f" "$m/d$((RANDOM % 8))/hard$i"
		[ $((i % 13)) = 0 ] && ln -s "../d$((RANDOM % 8))/f$i" "$d/sym$i"
		chmod $((RANDOM % 2 ? 644 : 600)) "$f"
	done
	ln -s "$(head -c 1500 /dev/zero | tr '\0' 'x')" "$m/d1/longsym"
	ln -s "$(head -c 3000 /dev/zero | tr '\0' 'y')/z" "$m/d2/longersym"
	setfattr -n user.dir -v dirvalue "$m/d3"
	mkfifo "$m/d4/fifo"
	: >"$m/d5/empty-file"
	echo "$n bytes in 320 files"
}

echo "campaign: $T, seed $SEED, $TRIALS trial(s) per cell"
BASE=$T/base.img
"$VS_MKFS" "$BASE" --size 32M --sparse -q --metadata "$METADATA" || die "mkfs"
mount_img "$BASE" "$T/build.log" || { cat "$T/build.log"; die "mounting the new image"; }
build_tree "$MNT" || die "building the tree"
umount_img "$T/build.log" || die "unmount after building"
"$VS_FSCK" -n "$BASE" >"$T/fsck0.out" 2>&1 || { cat "$T/fsck0.out"; die "the built image is not clean"; }
mount_img "$BASE" "$T/base.log" || die "remount"
snap "$MNT" "$T/base.snap" || die "recording the tree"
umount_img "$T/base.log" || die "unmount after recording"
[ "$(awk -F'\t' '$8 == 1' "$T/base.snap" | wc -l)" = 0 ] || die "errors reading the intact tree"
"$VS_DMG_TOOL" map "$BASE" >"$T/map" || die "dmg_tool map"
echo "recorded $(wc -l <"$T/base.snap") paths; pages by kind:" \
	$(awk '{ n[$1]++ } END { for (k in n) printf "%s=%d ", k, n[k] }' "$T/map")

# ---- trials -------------------------------------------------------------
RES=$T/results
: >"$RES"
trial=0
kind_no=0
for kind in $KINDS; do
	kind_no=$((kind_no + 1))
	mapfile -t pids < <(awk -v k="$kind" '$1 == k { print $2 }' "$T/map")
	mapfile -t owners < <(awk -v k="$kind" '$1 == k { print $3 }' "$T/map")
	mapfile -t spans < <(awk -v k="$kind" '$1 == k { print $4 }' "$T/map")
	mapfile -t others < <(awk -v k="$kind" '$1 != k { print $2 }' "$T/map")
	if [ ${#pids[@]} = 0 ]; then
		echo "no page of kind $kind in this image"
		continue
	fi
	dmg_no=0
	for dmg in $DAMAGES; do
		dmg_no=$((dmg_no + 1))
		if [ $QUICK = 1 ] && [ $kind != data ] &&
			[ $(((kind_no + SEED) % $(wc -w <<<"$DAMAGES"))) != $((dmg_no - 1)) ]; then
			continue
		fi
		for ((t = 0; t < TRIALS; t++)); do
			trial=$((trial + 1))
			RANDOM=$((SEED * 7919 + trial))
			idx=$(((RANDOM * 32768 + RANDOM) % ${#pids[@]}))
			pid=${pids[$idx]} owner=${owners[$idx]} span=${spans[$idx]}
			IMG=$T/trial.img
			cp --sparse=always "$BASE" "$IMG"
			# A copy or tear from a page with the same bytes changes
			# nothing: try other sources.
			for ((try = 0; try < 8; try++)); do
				if [ ${#pids[@]} -gt 1 ]; then
					src=${pids[$(((idx + 1 + RANDOM % (${#pids[@]} - 1)) % ${#pids[@]}))]}
				else
					src=${others[$((RANDOM % ${#others[@]}))]}
				fi
				what=$("$VS_DMG_TOOL" hit "$IMG" "$pid" "$dmg" "$((SEED * 1000 + trial + try))" \
					"$src" "$span")
				hit=$?
				[ $hit = 3 ] || break
			done
			[ $hit = 0 ] || [ $hit = 3 ] || die "dmg_tool hit $pid $dmg: exit $hit"
			if [ $hit = 3 ]; then
				echo "$kind $dmg pid $pid: the damage would change nothing (tried 8 times); trial skipped"
				continue
			fi
			cp --sparse=always "$IMG" "$T/damaged.img"
			cp --sparse=always "$IMG" "$T/pre.img"
			check_mount "$T/pre.img" pre
			pre_state=$M_STATE pre_res=$M_RES
			timeout -s KILL "$FSCK_TO" "$VS_FSCK" -y "$IMG" >"$T/fsck.out" 2>&1
			frc=$?
			fsck_state=ok
			if [ $frc = 137 ]; then fsck_state=hung
			elif crashed "$frc" "$T/fsck.out"; then fsck_state=crashed; fi
			if cmp -s "$IMG" "$T/damaged.img"; then
				post_state=$pre_state post_res=$pre_res
			else
				check_mount "$IMG" post
				post_state=$M_STATE post_res=$M_RES
			fi
			read -r lost bytes wrong meta inos moved <<<"$post_res"
			read -r _ _ pre_wrong pre_meta _ <<<"$pre_res"
			out=clean
			if [ $fsck_state != ok ]; then out=fsck-$fsck_state
			elif [ $pre_state = crashed ] || [ $post_state = crashed ]; then out=daemon-crashed
			elif [ $pre_state = hung ] || [ $post_state = hung ]; then out=daemon-hung
			elif [ "$wrong" -gt 0 ] || [ "$pre_wrong" -gt 0 ]; then out=wrong-bytes
			elif [ $pre_state = ok ] && [ $post_state = refused ]; then out=broken-by-fsck
			elif [ $post_state = refused ]; then out=unmountable
			elif [ "$lost" -gt 0 ]; then out=lost
			elif [ "$moved" -gt 0 ]; then out=moved
			fi
			# data-local: only the damaged page's file may be lost
			nonlocal=0
			if [ $kind = data ] && [ "$inos" != - ]; then
				for i in ${inos//,/ }; do [ "$i" = "$owner" ] || nonlocal=1; done
			fi
			[ $kind = data ] && [ $post_state = refused ] && nonlocal=1
			# inner-lossless, leaf-local: what fsck left of the tree
			if [ $kind = inner ] && { [ $post_state != ok ] || [ "$lost" -gt 0 ]; }; then
				nonlocal=1
			fi
			if [ $kind = leaf ]; then
				# the leaf's entry count: bytes 2-3 of the node (btree_node.h)
				entries=$(od -An -tu2 -j $((pid * 4096 + 2)) -N2 "$BASE" | tr -d ' ')
				ninos=0
				[ "$inos" != - ] && ninos=$(tr ',' '\n' <<<"$inos" | wc -l)
				if [ $post_state != ok ] || [ "$ninos" -gt "$entries" ]; then nonlocal=1; fi
			fi
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
				"$kind" "$dmg" "$pid" "$src" "$out" "$lost" "$bytes" "$wrong" \
				"$((meta > pre_meta ? meta : pre_meta))" "$frc" "$pre_state" \
				"$post_state" "$nonlocal" "$pre_wrong" "$what" "$moved" >>"$RES"
			printf '%-8s %-6s pid %-5s -> %-15s fsck %s, pre %s, post %s, lost %s files %s bytes, moved %s, wrong %s/%s, meta %s\n' \
				"$kind" "$dmg" "$pid" "$out" "$frc" "$pre_state" "$post_state" \
				"$lost" "$bytes" "$moved" "$pre_wrong" "$wrong" "$meta"
			# Keep what a bad outcome needs to be reproduced.
			case $out in
			clean|moved|lost|unmountable) ;;
			*)
				keep=$T/keep/$trial-$kind-$dmg
				mkdir -p "$keep"
				cp --sparse=always "$T/damaged.img" "$keep/damaged.img"
				cp "$T"/fsck.out "$T"/*.log "$T"/*.diff "$T"/*.snap* "$keep/" 2>/dev/null
				echo "$what" >"$keep/what"
				KEEP=1
				echo "    kept in $keep"
				;;
			esac
		done
	done
done

# ---- the table ----------------------------------------------------------
table() {
	awk -F'\t' '
		{
			c = $1 "\t" $2; if (!(c in n)) order[++cells] = c
			n[c]++; o[c, $5]++; lf[c] += $6; lb[c] += $7; wm[c] += ($9 > 0); mv[c] += $16
			tot[$5]++; N++; LF += $6; LB += $7; WM += ($9 > 0); MV += $16
		}
		END {
			split("clean moved lost unmountable broken-by-fsck wrong-bytes fsck-crashed fsck-hung daemon-crashed daemon-hung", k, " ")
			printf "| page | damage | trials |"
			for (i = 1; i <= 10; i++) printf " %s |", k[i]
			printf " files lost | KiB lost | files moved | wrong-meta |\n|---|---|---:|"
			for (i = 1; i <= 10; i++) printf "---:|"
			printf "---:|---:|---:|---:|\n"
			for (j = 1; j <= cells; j++) {
				c = order[j]; split(c, kd, "\t")
				printf "| %s | %s | %d |", kd[1], kd[2], n[c]
				for (i = 1; i <= 10; i++) printf " %s |", (o[c, k[i]] ? o[c, k[i]] : ".")
				printf " %d | %d | %d | %d |\n", lf[c], lb[c] / 1024, mv[c], wm[c]
			}
			printf "| **all** | | %d |", N
			for (i = 1; i <= 10; i++) printf " %s |", (tot[k[i]] ? tot[k[i]] : ".")
			printf " %d | %d | %d | %d |\n", LF, LB / 1024, MV, WM
		}' "$RES"
}

echo
table
FAILED=
check_inv() {
	local name=$1 count=$2 text=$3
	INV_LINES+="| $name | $text | $([ "$count" = 0 ] && echo holds || echo "**fails** ($count trials)") |"$'\n'
	if [ "$count" != 0 ] && [[ ",$ASSERT," == *",$name,"* ]]; then
		FAILED+=" $name"
	fi
}
INV_LINES=
check_inv no-crash "$(awk -F'\t' '$5 ~ /crashed|hung/' "$RES" | wc -l)" \
	"no crash or hang of fsck or the daemon"
check_inv no-wrong "$(awk -F'\t' '$5 == "wrong-bytes"' "$RES" | wc -l)" \
	"no wrong bytes served without an error (before or after fsck)"
check_inv no-wrong-except-csum "$(awk -F'\t' '$5 == "wrong-bytes" && $1 != "csum"' "$RES" | wc -l)" \
	"the same, for damage to any page but the checksum table's"
check_inv fsck-safe "$(awk -F'\t' '$5 == "broken-by-fsck"' "$RES" | wc -l)" \
	"fsck -y never makes a mountable image unmountable"
check_inv data-local "$(awk -F'\t' '$1 == "data" && $13 == 1' "$RES" | wc -l)" \
	"damage to a data page loses only that file"
check_inv inner-lossless "$(awk -F'\t' '$1 == "inner" && $13 == 1' "$RES" | wc -l)" \
	"damage to an inner node loses nothing after fsck"
check_inv leaf-local "$(awk -F'\t' '$1 == "leaf" && $13 == 1' "$RES" | wc -l)" \
	"damage to a leaf loses at most the inodes of its entries (fsck salvages the rest)"
check_inv meta-lossless "$(awk -F'\t' '$1 != "data" && $5 != "clean"' "$RES" | wc -l)" \
	"damage to any page but file data loses nothing after fsck (metadata $METADATA)"
echo
printf '%s' "$INV_LINES"

if [ -n "$OUT" ]; then
	{
		rev=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
		dirty=$(git -C "$(dirname "$0")" status --porcelain -- engine fs tools 2>/dev/null | wc -l)
		echo "## Results ($(date -u '+%Y-%m-%d %H:%M UTC'), seed $SEED, $trial trials)"
		echo
		note=
		[ "$dirty" = 0 ] || note=" with $dirty files of engine/, fs/ and tools/ changed in the working tree"
		echo "Binaries built from commit $rev$note."
		echo
		echo "Produced by: \`$CMDLINE\`"
		echo
		table
		echo
		echo "| invariant | meaning | result |"
		echo "|---|---|---|"
		printf '%s' "$INV_LINES"
	} >"$OUT"
	echo "table written to $OUT"
fi
cp "$RES" "${VS_DAMAGE_RESULTS:-/dev/null}" 2>/dev/null
[ -z "$FAILED" ] || die "invariants that do not hold:$FAILED"
echo "ok: $trial trials"
