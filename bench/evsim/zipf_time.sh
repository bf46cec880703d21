#!/bin/sh
# The hot set moves: the pool's hit ratio second by second under a Zipf
# random read whose popular keys move every ZIPF_MOVE seconds, for the
# engine's two policies (VS_EVICT=clock, =s3clock), and the same seconds
# replayed through evsim (clock, LRU, 2Q, S3-FIFO, s3clock, s3clock with
# its probation fixed at 10% and 50%) from the eviction trace the s3clock
# run recorded (vsbench puts a marker in it at each second: evsim -w 0).
#
# Usage: zipf_time.sh VSBENCH [SECONDS [CSV [SVG]]]
#   VSBENCH  a release build's bench/vsbench (evsim is looked for beside
#            it, in evsim/evsim, or given as $EVSIM)
#   SECONDS  of each run (default 60)
#   CSV      where the result goes (default zipf-time.csv): one line per
#            second and policy,
#              second,policy,hit_ratio,hits,fixes,lookups_per_s,move,probation
#            policy "engine:clock", "engine:s3clock" (lookups_per_s and
#            s3clock's probation target from vsbench), "evsim:NAME" (hits
#            and fixes are the trace's accesses in that second)
#   SVG      if given, the plot too (plot_svg.py, python3)
# Then prints the table of docs/bench.md ("The hot set moves") on stdout
# (--table CSV prints it again from a CSV), and the simulated policies'
# totals against the engine's on stderr.
#
# Environment: ZIPF (0.9), ZIPF_MOVE (10), ZIPF_SCATTER (0: the hot keys
# packed, so that page popularity is Zipf 0.9 too; 1 spreads them), THREADS (1:
# one thread loads the tree, so both runs get the same tree, page for page,
# and look up the same keys in the same order), DATASIZE (1,800,000 tuples:
# 64,300 leaves of 28, 3.9x the pool; the image holds twice that, the
# nodes' copies), PHYSGB (0.0625: 64 MiB, 16,384 pages), TMPDIR (the image
# and the traces, about 0.7 GB; default /var/tmp), KEEP=DIR (keep the runs'
# output there), TRACE_SYNC (1; 0: buffered trace, faster, the seconds
# blurred by up to 4,096 accesses).
# bench/evsim/plot_svg.py CSV SVG draws the plot.
set -u
usage="usage: zipf_time.sh VSBENCH [SECONDS [CSV [SVG]]]   or: zipf_time.sh --table CSV"
move=${ZIPF_MOVE:-10}

# The table: each policy's hit ratio (hits / fixes over the seconds named)
# at the end of the intervals between moves (their last 3 seconds) and in
# the first 1, 2 and 5 seconds after each move, summed over the moves; in
# brackets its misses over those seconds as a ratio of the best fixed
# policy's (the simulated policy other than the adaptive s3clock with the
# most hits after the first move). The engine's s3clock replayed the same
# accesses as the simulated policies; its clock is the other run.
table() { # CSV
awk -F, -v move="$move" '
NR == 1 { next }
{
	s = $1; p = $2; if (!(p in seen)) { seen[p] = 1; order[++n] = p }
	o = s % move
	if (o >= move - 3) { h["end", p] += $4; f["end", p] += $5 }
	if (s >= move) {
		h["all", p] += $4; f["all", p] += $5
		if (o < 1) { h[1, p] += $4; f[1, p] += $5 }
		if (o < 2) { h[2, p] += $4; f[2, p] += $5 }
		if (o < 5) { h[5, p] += $4; f[5, p] += $5 }
	}
	if ($6 != "") { tx[p] += $6; nt[p]++ }
}
function r(k, p) { return f[k, p] ? h[k, p] / f[k, p] : 0 }
function cell(k, p) { return sprintf("%.4f (%.3f)", r(k, p), (1 - r(k, p)) / (1 - r(k, best))) }
END {
	for (i = 1; i <= n; i++) {
		p = order[i]
		if (p ~ /^evsim:/ && p != "evsim:s3clock" && (best == "" || r("all", p) > r("all", best)))
			best = p
	}
	printf "| policy | end of the intervals (last 3 s) | first 1 s after a move | first 2 s | first 5 s | lookups/s |\n"
	printf "|---|---|---|---|---|---|\n"
	for (i = 1; i <= n; i++) {
		p = order[i]
		printf "| %s | %s | %s | %s | %s | %s |\n", p, cell("end", p), cell(1, p), cell(2, p),
			cell(5, p), nt[p] ? sprintf("%.0f", tx[p] / nt[p]) : ""
	}
	printf "\n(hit ratio, and in brackets misses / %s'"'"'s over the same seconds; moves every %d s)\n",
		best, move
}' "$1"
}

if [ "${1:-}" = "--table" ]; then
	table "${2:?$usage}"
	exit
fi
bin=${1:?$usage}
secs=${2:-60}
csv=${3:-zipf-time.csv}
svg=${4:-}
evsim=${EVSIM:-$(dirname "$bin")/evsim/evsim}
zipf=${ZIPF:-0.9}
scatter=${ZIPF_SCATTER:-0}
threads=${THREADS:-1}
datasize=${DATASIZE:-1800000}
phys=${PHYSGB:-0.0625}
sync=${TRACE_SYNC:-1}
[ -x "$bin" ] || { echo "zipf_time.sh: $bin: not executable" >&2; exit 2; }
[ -x "$evsim" ] || { echo "zipf_time.sh: no evsim at $evsim (set EVSIM)" >&2; exit 2; }
[ "$move" -gt 0 ] && [ "$secs" -gt "$move" ] ||
	{ echo "zipf_time.sh: SECONDS must exceed ZIPF_MOVE ($move)" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/zipf-time.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT

# POLICY: one run of vsbench, its eviction trace recorded, each record
# written as it is made (VS_EVICT_TRACE_SYNC=1, in both runs: a system call
# per page fix) so that every access falls between the markers of its
# second; buffered, up to 4,096 of them would land past a marker. The two
# runs go at the same time, one core each on a 2-core machine, so that
# whatever else the machine runs slows both alike: a second of a slower
# run holds fewer lookups, so less of a move's recovery.
run() {
	VS_EVICT=$1 VS_EVICT_TRACE=$dir/trace.$1 VS_EVICT_TRACE_SYNC=$sync BLOCK=$dir/img.$1 \
		VIRTGB=1 PHYSGB=$phys DATASIZE=$datasize RUNFOR=$secs RNDREAD=1 THREADS=$threads ZIPF=$zipf \
		ZIPF_MOVE=$move ZIPF_SCATTER=$scatter "$bin" >"$dir/csv.$1" 2>"$dir/err.$1"
	echo $? >"$dir/rc.$1"
	rm -f "$dir/img.$1"
}
echo "zipf_time.sh: clock and s3clock at once, $secs s each ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
run clock &
run s3clock &
wait
for p in clock s3clock; do
	[ "$(cat "$dir/rc.$p")" = 0 ] ||
		{ echo "zipf_time.sh: $bin failed ($p):" >&2; cat "$dir/err.$p" >&2; exit 1; }
	grep -E '^(space|tree|zipf|lookups):' "$dir/err.$p" | sed "s/^/    $p: /" >&2
done

cap=$(awk '/^zipf: skew/ { for (i = 1; i < NF; i++) if ($(i + 1) == "pages,") print $i }' \
	"$dir/err.s3clock")
[ -n "$cap" ] || { echo "zipf_time.sh: no pool size in vsbench's output" >&2; exit 1; }

{
	echo "second,policy,hit_ratio,hits,fixes,lookups_per_s,move,probation"
	for p in clock s3clock; do
		# ts,tx,rmb,wmb,system,threads,datasize,workload,batch,hit,loads,fixes,move,probation
		awk -F, -v p="$p" 'NR > 1 { printf "%d,engine:%s,%s,%d,%d,%d,%d,%d\n",
			$1, p, $10, $12 - $11, $12, $2, $13, $14 }' "$dir/csv.$p"
	done
	# trace,window,phase,first,accesses,policy,hits,hit_ratio; phase s + 1
	# is run second s, phase 0 the load.
	evcsv() { # LABEL-SUFFIX EVSIM-OPTIONS...
		suffix=$1
		shift
		"$evsim" -c "$cap" -w 0 "$@" "$dir/trace.s3clock" |
			awk -F, -v sfx="$suffix" -v move="$move" 'NR > 1 && $3 > 0 && $6 != "recorded" {
				s = $3 - 1
				printf "%d,evsim:%s%s,%.6f,%d,%d,,%d,\n", s, $6, sfx, $8, $7, $5, int(s / move) }'
	}
	evcsv "" -p clock,lru,2q,s3fifo,s3clock
	evcsv "-fixed10" -p s3clock -F -s 0.1
	evcsv "-fixed50" -p s3clock -F -s 0.5
} >"$csv" || exit 1

# The check: the simulated clock on the clock run's trace, the simulated
# s3clock on the s3clock run's, against the loads each pool recorded (the
# whole trace, the load included).
for p in clock s3clock; do
	"$evsim" -c "$cap" -p "$p" "$dir/trace.$p" |
		awk -v p="$p" '/^queues/ { exit } $1 == p { sim = $3 } $1 == "recorded" { rec = $3 }
			END { printf "zipf_time.sh: %s simulated on its own run'"'"'s trace: %d misses, the pool recorded %d (%.4f)\n", p, sim, rec, rec ? sim / rec : 0 }' >&2
done
if [ -n "${KEEP:-}" ]; then
	mkdir -p "$KEEP" && cp "$dir"/csv.* "$dir"/err.* "$dir"/trace.* "$KEEP"/
fi

table "$csv"
echo "zipf_time.sh: wrote $csv" >&2
if [ -n "$svg" ]; then
	python3 "$(dirname "$0")/plot_svg.py" "$csv" "$svg" \
		--title "Zipf $zipf lookups, hot set moving every $move s" \
		--subtitle "vsbench, $datasize tuples, pool $cap pages, $threads thread(s) a run, both runs at once; evsim: the s3clock run's trace" \
		--pool "$cap" && echo "zipf_time.sh: wrote $svg" >&2
fi
