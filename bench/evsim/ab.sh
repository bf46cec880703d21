#!/bin/sh
# Two vsbench binaries side by side (the cost of a change on the hot path,
# such as the eviction trace's branch): in-memory random lookups, in pairs
# whose order alternates, printing each pair's ratio B/A of the median
# lookups per second, then the median and the ratio of the sums.
# Usage: ab.sh VSBENCH_A VSBENCH_B [PAIRS [SECONDS]]
set -u
a=${1:?usage: ab.sh VSBENCH_A VSBENCH_B [PAIRS [SECONDS]]}
b=${2:?usage: ab.sh VSBENCH_A VSBENCH_B [PAIRS [SECONDS]]}
pairs=${3:-8}
secs=${4:-6}
[ "$secs" -gt 3 ] || { echo "ab.sh: SECONDS must exceed 3 (the first 3 are warm-up)" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/evsim-ab.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
run() { # BINARY -> median lookups/s of the seconds after the third
	BLOCK=$dir/img VIRTGB=1 PHYSGB=0.5 DATASIZE=2000000 RUNFOR=$secs RNDREAD=1 THREADS=2 \
		"$1" >"$dir/csv" 2>/dev/null || { echo "ab.sh: $1 failed" >&2; exit 1; }
	rm -f "$dir/img"
	awk -F, 'NR > 3 { print $2 }' "$dir/csv" | sort -n |
		awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
for p in $(seq "$pairs"); do
	if [ $((p % 2)) = 1 ]; then ra=$(run "$a"); rb=$(run "$b")
	else rb=$(run "$b"); ra=$(run "$a"); fi
	echo "$p $ra $rb"
done | tee "$dir/pairs" | awk '{ printf "pair %d: A %d, B %d, B/A %.3f\n", $1, $2, $3, $3 / $2 }'
sums=$(awk '{ sa += $2; sb += $3 } END { printf "%.3f", sb / sa }' "$dir/pairs")
awk '{ printf "%.6f\n", $3 / $2 }' "$dir/pairs" | sort -n |
	awk -v sums="$sums" '{ r[NR] = $1 } END {
		m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
		printf "median B/A %.3f over %d pairs; sums B/A %s\n", m, NR, sums }'
