#!/bin/sh
# bench/sidebyside.sh: the engine benchmark vsbench and vmcache (Leis et
# al., "Virtual-Memory Assisted Buffer Management", SIGMOD 2023) on the same
# configurations, back to back, printed as ratios. See docs/bench.md,
# "Engine: side by side with vmcache".
#
#   bench/sidebyside.sh --vmcache PATH [--quick] [-B BUILD] [-o CSV]
#                       [-d WORKDIR] [--runfor S] [--warmup S] [--rounds N]
#                       [--rows REGEX] [--keep]
#
# The project does not ship vmcache: build it from its upstream repository
# and pass the binary with --vmcache or $VMCACHE. Both programs read the same
# environment (BLOCK VIRTGB PHYSGB THREADS DATASIZE RUNFOR RNDREAD EXMAP
# BATCH) and print the same CSV, one line a second. Needs sh, awk and
# coreutils only (git, if present, names the revision).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

quick=0
vmcache=${VMCACHE:-}
build=
csv=
workdir=/var/tmp
opt_runfor=
opt_warm=
rounds=1
rows_re=.
keep=0

usage() {
	awk 'NR >= 2 && NR <= 15 { sub(/^# ?/, ""); print }' "$0"
	cat <<EOF

options:
  --vmcache PATH  the vmcache binary (default: \$VMCACHE)
  --quick         in-memory rows only, short runs (under 3 minutes)
  -B BUILD        build directory holding bench/vsbench (default: build-rel,
                  else build)
  -o CSV          results, one line per row (default
                  bench/results/sidebyside-<stamp>.csv); the printed table
                  (.txt) and every per-second line of every run (.raw.csv)
                  go beside it
  -d WORKDIR      where the images go (default /var/tmp; the out-of-memory
                  rows write several GB there)
  --runfor S      RUNFOR of every run (default: per row, 20 s; quick 4 s;
                  60 s for TPC-C out of memory)
  --warmup S      first seconds of each run left out of the medians
                  (default: per row, 3 s; quick 1 s; 30 s for TPC-C out of
                  memory)
  --rounds N      run every row N times; odd rounds start with VirtuScale,
                  even rounds with vmcache (default 1)
  --rows REGEX    only rows whose name matches (an awk regular expression)
  --keep          leave the work directory (per-run output) behind
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--vmcache) vmcache=$2; shift ;;
	--quick) quick=1 ;;
	-B) build=$2; shift ;;
	-o) csv=$2; shift ;;
	-d) workdir=$2; shift ;;
	--runfor) opt_runfor=$2; shift ;;
	--warmup) opt_warm=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--rows) rows_re=$2; shift ;;
	--keep) keep=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "sidebyside.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

die() { echo "sidebyside.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# ------------------------------------------------------------ the rows
# name rndread threads datasize physgb virtgb runfor warmup
#
# PHYSGB and VIRTGB are whole numbers: vmcache reads every variable through
# a u64 (PHYSGB=0.5 would give it a pool of 0 bytes). In memory the pool
# holds everything. Out of memory the 1 GB pool holds about a third of the
# 2e7 tuples (2.7-2.9 GB in either program), and of 20 warehouses a quarter
# or less in vmcache (3.7-4.6 GB after the load: fixed-size records) and
# 37-48% here (2.1-2.7 GB).
#
# TPC-C runs one thread per warehouse: vsbench gives thread i the home
# warehouse i % DATASIZE + 1 for the whole run, vmcache draws a warehouse
# at random for every transaction. Only with THREADS = DATASIZE do both
# touch every warehouse alike (with 2 threads on 20 warehouses vsbench
# would work on 2 of them, which fit the pool).
#
# The last two columns are RUNFOR and the seconds left out (--runfor and
# --warmup override them). Out of memory TPC-C needs a long warm-up: after
# the load the pool holds the pages loaded last, and the rate climbs for
# tens of seconds while the run's hot pages (items, districts, the popular
# customers and stock) move in.
if [ $quick = 1 ]; then
	rows='rndread-mem-1t 1 1 1e6 4 4 4 1
rndread-mem-2t 1 2 1e6 4 4 4 1
tpcc-mem-1t 0 1 1 4 4 4 1
tpcc-mem-2t 0 2 2 4 4 4 1'
else
	rows='rndread-mem-1t 1 1 1e6 4 4 20 3
rndread-mem-2t 1 2 1e6 4 4 20 3
rndread-oom-1t 1 1 2e7 1 4 20 3
tpcc-mem-1t 0 1 1 4 4 20 3
tpcc-mem-2t 0 2 2 4 4 20 3
tpcc-oom-20t 0 20 20 1 16 60 30'
fi
case $opt_runfor$opt_warm$rounds in *[!0-9]*) die "--runfor, --warmup and --rounds take whole numbers" ;; esac
[ "$rounds" -ge 1 ] || die "--rounds must be at least 1"
echo "$rows" | awk -v re="$rows_re" '$1 ~ re { f = 1 } END { exit !f }' ||
	die "no row matches '$rows_re'"

# ------------------------------------------------------------ the programs
[ -n "$vmcache" ] || die "no vmcache binary: pass --vmcache PATH or set VMCACHE (docs/bench.md says how to build one)"
[ -x "$vmcache" ] || die "$vmcache is not an executable file"
case $vmcache in /*) ;; *) vmcache=$(pwd)/$vmcache ;; esac
if [ -z "$build" ]; then
	for b in build-rel build; do
		if [ -x "$top/$b/bench/vsbench" ]; then build=$top/$b; break; fi
	done
	[ -n "$build" ] || die "no build-rel/bench/vsbench or build/bench/vsbench: build first (meson setup build-rel --buildtype=release && ninja -C build-rel) or pass -B"
fi
vsbench=$build/bench/vsbench
[ -x "$vsbench" ] || die "$vsbench not found (ninja -C $build)"
case $vsbench in /*) ;; *) vsbench=$(pwd)/$vsbench ;; esac

stamp=$(date +%Y%m%d-%H%M%S)
if [ -z "$csv" ]; then
	mkdir -p "$top/bench/results"
	csv=$top/bench/results/sidebyside-$stamp.csv
fi
base=${csv%.csv}
txt=$base.txt
raw=$base.raw.csv
: >"$txt"

work=$(mktemp -d "$workdir/sidebyside.XXXXXX") || die "cannot make a directory in $workdir"
pid=
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || :; wait "$pid" 2>/dev/null || :; fi
	rm -f "$work"/*.img
	if [ $keep = 0 ]; then rm -rf "$work"; else log "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

hz=$(getconf CLK_TCK 2>/dev/null || echo 100)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# sleep_near S: sleep until 0.4 s before S seconds from now (S may be <= 0).
sleep_near() { sleep "$(awk -v s="$1" 'BEGIN { print (s > 0.5) ? s - 0.4 : 0 }')"; }

# The polling below uses shell builtins only (read, arithmetic): on a
# 2-CPU machine a few processes forked ten times a second cost the measured
# program a visible share of a CPU.

# count_lines FILE: nl = complete lines in FILE.
count_lines() {
	nl=0
	while IFS= read -r _l; do nl=$((nl + 1)); done <"$1"
}

# proc_ticks PID: pstate = the process's state (X: gone), pticks = its CPU
# time (utime + stime) in clock ticks, from /proc/PID/stat: after the
# command name, which may hold spaces, state is the 1st field, utime the
# 12th and stime the 13th.
proc_ticks() {
	pstate=X
	pticks=0
	{ IFS= read -r _s <"/proc/$1/stat"; } 2>/dev/null || return 0
	set -- ${_s##*) }
	pstate=$1
	pticks=$((${12} + ${13}))
}

# wait_lines N INTERVAL: poll every INTERVAL seconds until the run's CSV
# ($out.csv) has N lines, then return 0 with pticks read at that moment;
# return 1 once the process has exited.
wait_lines() {
	while :; do
		proc_ticks "$pid"
		case $pstate in Z | X) return 1 ;; esac
		count_lines "$out.csv"
		[ "$nl" -lt "$1" ] || return 0
		sleep "$2"
	done
}

# Machine facts, into the table's header.
facts() {
	rev=unknown
	if command -v git >/dev/null 2>&1; then
		rev=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
		[ -z "$(git -C "$top" status --porcelain --untracked-files=no 2>/dev/null)" ] || rev="$rev (uncommitted changes)"
	fi
	echo "date:        $(date '+%Y-%m-%d %H:%M:%S %z')"
	echo "machine:     $(uname -sr), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "virtuscale:  $vsbench (built $(date -r "$vsbench" "+%Y-%m-%d %H:%M")), source tree at git $rev"
	echo "vmcache:     $vmcache (sha256 $(sha256sum "$vmcache" | cut -c1-16))"
	echo "runs:        $rounds round(s), image in $workdir"
}

# ------------------------------------------------------------ one run
# run_one SYSTEM ROUND: run one program on the current row ($row $rnd $thr
# $ds $phys $virt), append its per-second lines to $raw and one summary line
# to $work/runs: row,round,system,rc,load_s,load_rate,window_tx,cpu_s,window_s
#
# While the program runs, its CPU time (utime + stime) is read twice: when
# the line of second $warm-1 appears and when the line of second $runfor-2
# does. The transactions between the two readings over the CPU seconds
# between them are the rate per CPU-second, which the other tenants of a
# shared machine disturb far less than the rate per wall second.
run_one() {
	sys=$1
	round=$2
	out=$work/$row.$round.$sys
	img=$work/$sys.img
	rm -f "$img"
	# Both images exist before the run, with all their blocks (as
	# mkfs.virtuscale makes them): a write into a hole costs the host
	# filesystem an allocation under the file's lock, which the two
	# programs would pay differently (vmcache inline, io_uring in a
	# worker), and which no preallocated image pays. vmcache opens BLOCK
	# without O_CREAT; vsbench formats what it finds, keeping the blocks.
	fallocate -l "${virt}G" "$img" 2>/dev/null || truncate -s "${virt}G" "$img"
	if [ "$sys" = vmcache ]; then
		bin=$vmcache
	else
		bin=$vsbench
	fi
	log "$row round $round: $sys"
	: >"$out.csv"
	t0=$(now)
	env BLOCK="$img" VIRTGB="$virt" PHYSGB="$phys" RNDREAD="$rnd" THREADS="$thr" \
		DATASIZE="$ds" RUNFOR="$runfor" BATCH=64 EXMAP=0 "$bin" >"$out.csv" 2>"$out.err" &
	pid=$!
	load_s=
	na=
	ca=
	nb=
	cb=
	if wait_lines 1 0.2; then
		load_s=$(since "$t0")
		sleep_near "$warm"
		if wait_lines $((warm + 1)) 0.05; then
			na=$nl
			ca=$pticks
			sleep_near $((runfor - na))
			if wait_lines "$runfor" 0.05; then
				nb=$nl
				cb=$pticks
			fi
		fi
	fi
	wait_lines 1000000 0.2 || :
	rc=0
	wait "$pid" || rc=$?
	pid=
	rm -f "$img"
	if [ $rc != 0 ]; then
		log "$sys exited $rc; the end of its stderr:"
		tail -n 5 "$out.err" >&2
	fi
	# The window is lines na-1 .. nb-2 (0-based ts); it is void when the
	# second reading came only after the last line (the run was over).
	awk -F, -v row="$row" -v round="$round" 'NR > 1 { print row "," round "," $0 }' "$out.csv" >>"$raw"
	wtx=$(awk -F, -v a="${na:-0}" -v b="${nb:-0}" -v last="$runfor" '
		NR > 1 && b > a && b <= last && $1 >= a - 1 && $1 <= b - 2 { s += $2 }
		END { print (b > a && b <= last) ? s + 0 : "" }' "$out.csv")
	cpu_s=
	win_s=
	if [ -n "$wtx" ]; then
		cpu_s=$(awk -v a="$ca" -v b="$cb" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
		win_s=$((nb - na))
	fi
	# vsbench reports its load on stderr: tuples/s for RNDREAD=1, seconds
	# for RNDREAD=0. vmcache reports nothing; load_s (start to CSV
	# header) is measured here for both.
	lrate=$(awk '/^load: [0-9]+ tuples in/ { for (i = 1; i < NF; i++) if ($(i + 1) == "tuples/s") print $i }' "$out.err")
	echo "$row,$round,$sys,$rc,$load_s,$lrate,$wtx,$cpu_s,$win_s" >>"$work/runs"
}

# ------------------------------------------------------------ the report
# row_report NAME: one table line and one CSV line for a row, from every
# second of every round (medians) and every run's CPU window (sums).
row_report() {
	awk -F, -v row="$1" -v warm="$warm" -v rnd="$rnd" -v thr="$thr" -v ds="$ds" \
		-v phys="$phys" -v virt="$virt" -v csv="$csv" -v runfor="$runfor" -v rounds="$rounds" '
	function median(a, n,   i, j, t) {
		if (n == 0) return ""
		for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function ratio(x, y) { return (x != "" && y != "" && y > 0) ? sprintf("%.2f", x / y) : "-" }
	function num(x, fmt) { return x == "" ? "-" : sprintf(fmt, x) }
	FILENAME ~ /runs$/ {
		if ($1 != row) next
		s = $3
		if ($4 != 0) fail[s] = 1
		if ($5 != "") { load[s] += $5; nload[s]++ }
		if ($6 != "") lrate[s] = $6
		if ($7 != "") { wtx[s] += $7; cpu[s] += $8; win[s] += $9; nwin[s]++ }
		next
	}
	$1 == row && $3 >= warm {
		s = ($7 == "virtuscale") ? "vs" : "vmcache"
		tx[s, ++n[s]] = $4; rmb[s, n[s]] = $5; wmb[s, n[s]] = $6
	}
	END {
		for (k = 1; k <= 2; k++) {
			s = k == 1 ? "vs" : "vmcache"
			split("", a); for (i = 1; i <= n[s]; i++) a[i] = tx[s, i]; med[s] = median(a, n[s] + 0)
			split("", a); for (i = 1; i <= n[s]; i++) a[i] = rmb[s, i]; mr[s] = median(a, n[s] + 0)
			split("", a); for (i = 1; i <= n[s]; i++) a[i] = wmb[s, i]; mw[s] = median(a, n[s] + 0)
			if (fail[s]) med[s] = ""
			pc[s] = (nwin[s] && cpu[s] > 0 && !fail[s]) ? wtx[s] / cpu[s] : ""
			cu[s] = (nwin[s] && win[s] > 0) ? cpu[s] / win[s] : ""
			ld[s] = nload[s] ? load[s] / nload[s] : ""
		}
		wl = rnd == 1 ? "rndread" : "tpcc"
		pool = phys "G"
		printf "%-15s %-7s %3s %8s %4s %11s %11s %6s | %11s %11s %6s | %4s %4s | %6s %6s %10s | %7s %7s\n", \
			row, wl, thr, ds, pool, num(med["vs"], "%.0f"), num(med["vmcache"], "%.0f"), ratio(med["vs"], med["vmcache"]), \
			num(pc["vs"], "%.0f"), num(pc["vmcache"], "%.0f"), ratio(pc["vs"], pc["vmcache"]), \
			num(cu["vs"], "%.2f"), num(cu["vmcache"], "%.2f"), num(ld["vs"], "%.1f"), num(ld["vmcache"], "%.1f"), \
			num(lrate["vs"], "%.0f"), num(mr["vs"], "%.0f") "/" num(mw["vs"], "%.0f"), num(mr["vmcache"], "%.0f") "/" num(mw["vmcache"], "%.0f")
		printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", \
			row, wl, thr, ds, phys, virt, runfor, warm, rounds, med["vs"], med["vmcache"], \
			(ratio(med["vs"], med["vmcache"]) == "-" ? "" : ratio(med["vs"], med["vmcache"])), \
			pc["vs"] == "" ? "" : sprintf("%.0f", pc["vs"]), pc["vmcache"] == "" ? "" : sprintf("%.0f", pc["vmcache"]), \
			(ratio(pc["vs"], pc["vmcache"]) == "-" ? "" : ratio(pc["vs"], pc["vmcache"])), \
			cu["vs"] == "" ? "" : sprintf("%.2f", cu["vs"]), cu["vmcache"] == "" ? "" : sprintf("%.2f", cu["vmcache"]), \
			ld["vs"], ld["vmcache"], lrate["vs"], mr["vs"], mw["vs"], mr["vmcache"], mw["vmcache"], \
			(fail["vs"] || fail["vmcache"]) ? "failed" : "ok" >> csv
	}' "$work/runs" "$raw"
}

# ------------------------------------------------------------ the run
{
	facts
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$txt"

echo "row,workload,threads,datasize,physgb,virtgb,runfor,warmup,rounds,vs_tx_s,vmcache_tx_s,ratio,vs_tx_cpu_s,vmcache_tx_cpu_s,cpu_ratio,vs_cpus,vmcache_cpus,vs_load_s,vmcache_load_s,vs_load_tuples_s,vs_rmb_s,vs_wmb_s,vmcache_rmb_s,vmcache_wmb_s,status" >"$csv"
echo "row,round,ts,tx,rmb,wmb,system,threads,datasize,workload,batch" >"$raw"
: >"$work/runs"

header=$(printf "%-15s %-7s %3s %8s %4s %11s %11s %6s | %11s %11s %6s | %4s %4s | %6s %6s %10s | %7s %7s" \
	row workload thr datasize pool "vs tx/s" "vmc tx/s" ratio "vs tx/cpu" "vmc tx/cpu" ratio vs vmc "vs ld" "vmc ld" "vs tup/s" "vs r/w" "vmc r/w")
printf '\n%s\n' "$header" | tee -a "$txt"

failed=0
# (a here-document, not a pipe: the loop must run in this shell, whose
# EXIT trap kills the program under way)
while read -r row rnd thr ds phys virt rf wu; do
	awk -v r="$row" -v re="$rows_re" 'BEGIN { exit !(r ~ re) }' || continue
	runfor=${opt_runfor:-$rf}
	warm=${opt_warm:-$wu}
	[ "$runfor" -ge $((warm + 2)) ] || die "$row: RUNFOR $runfor must be at least the warm-up ($warm s) + 2"
	r=1
	while [ $r -le "$rounds" ]; do
		if [ $((r % 2)) = 1 ]; then
			run_one vs $r
			run_one vmcache $r
		else
			run_one vmcache $r
			run_one vs $r
		fi
		r=$((r + 1))
	done
	row_report "$row" | tee -a "$txt"
done <<EOF
$rows
EOF

{
	echo
	echo "load average at end:   $(cut -d' ' -f1-3 /proc/loadavg)"
	cat <<EOF
columns: tx/s = median transactions (lookups for rndread) per wall second,
  the seconds after the warm-up (csv: runfor, warmup) of every run;
  ratio = VirtuScale / vmcache
  (> 1: VirtuScale is faster); tx/cpu = transactions per CPU-second of the
  process over the middle of the run (less disturbed by other load on the
  machine); vs/vmc = CPUs the process got (of THREADS wanted); ld = seconds
  from start to the first CSV line (the load phase); tup/s = load rate
  vsbench reports (RNDREAD=1); r/w = median MB/s read/written to the image.
EOF
	echo "results: $csv"
} | tee -a "$txt"
awk -F, '$NF == "failed" { f = 1 } END { exit !f }' "$csv" && failed=1
exit $failed
