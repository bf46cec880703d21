#!/bin/sh
# The two eviction policies side by side on vsbench's random lookups, in
# pairs whose order alternates (clock first in odd pairs, s3clock first in
# even ones): each run's median lookups per second over the seconds after
# the warm-up, each pair's ratio s3clock/clock, then the median ratio, and
# the page faults of each run (the misses). The same binary runs both:
# VS_EVICT picks the policy (engine/bm_evict.c).
# Usage: policy_ab.sh VSBENCH mem|oom [PAIRS [SECONDS]]
#   mem  2e6 tuples (0.39 GB of tree) in a 0.5 GB pool: no eviction at all
#   oom  the same tuples in a 64 MiB pool (a sixth of the tree)
set -u
bin=${1:?usage: policy_ab.sh VSBENCH mem|oom [PAIRS [SECONDS]]}
what=${2:?usage: policy_ab.sh VSBENCH mem|oom [PAIRS [SECONDS]]}
pairs=${3:-5}
secs=${4:-10}
case $what in
mem) phys=0.5 ;;
oom) phys=0.0625 ;;
*) echo "policy_ab.sh: mem or oom, not $what" >&2; exit 2 ;;
esac
[ "$secs" -gt 3 ] || { echo "policy_ab.sh: SECONDS must exceed 3 (the first 3 are warm-up)" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/evsim-pab.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
run() { # POLICY -> "median-lookups/s faults"
	VS_EVICT=$1 BLOCK=$dir/img VIRTGB=1 PHYSGB=$phys DATASIZE=2000000 RUNFOR=$secs RNDREAD=1 \
		THREADS=2 "$bin" >"$dir/csv" 2>"$dir/err" || { echo "policy_ab.sh: $bin failed" >&2; exit 1; }
	rm -f "$dir/img"
	m=$(awk -F, 'NR > 4 { print $2 }' "$dir/csv" | sort -n |
		awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
	f=$(awk '/^faults:/ { sub(/,/, "", $2); print $2 }' "$dir/err")
	# lookups of the whole run, and per CPU-second (less moved by a busy
	# machine than the rate)
	l=$(awk '/^lookups:/ { print $2 }' "$dir/err")
	c=$(awk '/^lookups:/ { for (i = 1; i < NF; i++) if ($(i + 1) == "per" && $(i + 2) == "CPU-second)") print $i }' "$dir/err")
	cp "$dir/err" "$dir/err.$1.$(date +%s)"
	echo "$m ${f:-0} ${l:-1} ${c:-0}"
}
for p in $(seq "$pairs"); do
	if [ $((p % 2)) = 1 ]; then a=$(run clock); b=$(run s3clock)
	else b=$(run s3clock); a=$(run clock); fi
	echo "$p $a $b $(cut -d' ' -f1-3 /proc/loadavg)"
done | tee "$dir/pairs" | awk '{ printf "pair %d: clock %d/s (%.3f faults/lookup, %d lookups/CPU-s), s3clock %d/s (%.3f faults/lookup, %d lookups/CPU-s), s3clock/clock %.3f, load %s %s %s\n", $1, $2, $3 / $4, $5, $6, $7 / $8, $9, $6 / $2, $10, $11, $12 }'
awk '{ printf "%.6f\n", $6 / $2 }' "$dir/pairs" | sort -n |
	awk -v what="$what" '{ r[NR] = $1 } END {
		m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
		printf "%s: median s3clock/clock %.3f over %d pairs\n", what, m, NR }'
awk '{ print $2; }' "$dir/pairs" | sort -n | awk '{ v[NR] = $1 } END { printf "median clock %d/s, ", v[int((NR + 1) / 2)] }'
awk '{ print $6; }' "$dir/pairs" | sort -n | awk '{ v[NR] = $1 } END { printf "median s3clock %d/s\n", v[int((NR + 1) / 2)] }'
awk '{ printf "%.6f\n", $9 / $5 }' "$dir/pairs" | sort -n |
	awk '{ r[NR] = $1 } END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
		printf "median s3clock/clock of lookups per CPU-second %.3f\n", m }'
awk '{ printf "%.6f\n", ($7 / $8) / ($3 / $4) }' "$dir/pairs" | sort -n |
	awk '{ r[NR] = $1 } END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
		printf "median s3clock/clock of faults per lookup %.3f\n", m }'
