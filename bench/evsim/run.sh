#!/bin/sh
# Replay the workload-aware eviction issue's scenarios through every policy
# of evsim and print the tables (hit ratios, misses per phase, misses as a
# ratio of the engine clock's, queue sizes). Checks the targets on
# the simulated policies and exits 1 when s3clock misses one:
#   scan    16 MiB hot file read at random, 256 MiB scanned once, the hot
#           file again: s3clock reloads at most 5% of the hot pages
#   seq     a sequential reread that fits: no policy misses after pass 1
#   zipf    Zipf 0.9, the hot set moving every 4 pools' worth of accesses
#   loop    a sequential loop 1.25x the pool (where LRU gets nothing)
# Usage: run.sh [--quick] [PATH_TO_EVSIM]   (--quick: a quarter the size)
set -u
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
evsim=${1:-evsim}
dir=$(mktemp -d "${TMPDIR:-/tmp}/evsim.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
pool=16384 hot=4096 scan=65536
if [ $quick = 1 ]; then pool=4096 hot=1024 scan=16384; fi

"$evsim" gen scan -H $hot -S $scan -B >"$dir/scan" || exit 1
"$evsim" gen seq -n $((pool * 3 / 4)) -P 4 -B >"$dir/seq" || exit 1
"$evsim" gen zipf -n $((pool * 4)) -m $((pool * 4)) -l $((pool * 40)) -B >"$dir/zipf" || exit 1
"$evsim" gen seq -n $((pool * 5 / 4)) -P 4 -B >"$dir/loop" || exit 1
rc=0
for t in scan seq zipf loop; do
	echo "== $t (pool $pool pages)"
	"$evsim" -c $pool "$dir/$t" | tee "$dir/$t.out" || rc=1
	echo
done
# Phase 3 of the scan trace is the hot file's second pass.
awk -v hot=$hot '/^queues/ { done = 1 }
	!done && $1 == "s3clock" { found = 1; if ($7 > hot * 0.05) bad = 1 }
	END { exit !(found && !bad) }' "$dir/scan.out" ||
	{ echo "run.sh: s3clock reloads more than 5% of the hot file after the scan" >&2; rc=1; }
awk '/^queues/ { done = 1 }
	!done && $1 ~ /^(clock|lru|2q|s3fifo|s3clock)$/ && ($6 != 0 || $7 != 0 || $8 != 0) { bad = 1 }
	END { exit bad }' "$dir/seq.out" ||
	{ echo "run.sh: a policy misses on a reread that fits" >&2; rc=1; }
exit $rc
