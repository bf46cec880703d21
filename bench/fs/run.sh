#!/bin/sh
# bench/fs/run.sh: fio on a fresh VirtuScale mount and on a tmpfs, in the
# same run, printed as ratios (issue 7). See docs/bench.md.
#
#   bench/fs/run.sh [--quick] [-o CSV] [-B BUILD] [-d WORKDIR] [--pool MIB]
#                   [--runtime SEC] [--threads N] [--rows REGEX] [--keep]
#                   [--passthrough]
#
# Needs: fio (>= 3.x, json output, filecreate/filestat/filedelete engines),
# jq, awk, fusermount3; gnuplot for the PNG (skipped with a warning if
# missing). Runs as root for the tmpfs mount and the dentry-cache drop
# before the stat row; without root it uses a directory under /dev/shm.
#
# Every row runs on VirtuScale first and then on tmpfs, back to back, so that
# a machine whose load changes during the run still gives a fair ratio.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

quick=0
csv=
build=
work=
pool=
runtime=
threads=
rows_re=.
keep=0
pt=0
report_csv=

usage() {
	sed -n "2,15p" "$0" | sed 's/^# \{0,1\}//'
	cat <<EOF

options:
  --quick         short runs, small sizes, fewer rows (under two minutes)
  -o CSV          write the results here (default bench/fs/results/<stamp>.csv);
                  the PNG chart, the printed table (.txt) and the per-row pool
                  counter deltas (.stats) go beside it
  -B BUILD        build directory with fs/virtuscale and tools/mkfs.virtuscale
                  (default: \$VS_BUILD, else build-fsb, build, build-release)
  -d WORKDIR      where the image and the mount points go (default /var/tmp)
  --pool MIB      pool size in MiB (default 512, quick 64)
  --runtime SEC   seconds per time-based row (default 10, quick 1)
  --threads N     -o threads=N for the daemon (default: the daemon's default)
  --rows REGEX    run only rows whose name matches (grep -E)
  --keep          leave the work directory (image, fio json) behind
  --report CSV    no run: print the tables and draw the chart again from an
                  earlier CSV (e.g. one an interrupted run left behind)
  --passthrough   also run every row on libfuse's passthrough_ll example over
                  the tmpfs (built from /usr/share/doc/libfuse3-dev/examples):
                  the FUSE cost on this machine, measured in the same run
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	-o) csv=$2; shift ;;
	-B) build=$2; shift ;;
	-d) work=$2; shift ;;
	--pool) pool=$2; shift ;;
	--runtime) runtime=$2; shift ;;
	--threads) threads=$2; shift ;;
	--rows) rows_re=$2; shift ;;
	--keep) keep=1 ;;
	--passthrough) pt=1 ;;
	--report) report_csv=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

for t in fio jq awk fusermount3; do
	command -v $t >/dev/null 2>&1 || die "$t not found (apt-get install -y fio jq fuse3)"
done
have_gnuplot=1
command -v gnuplot >/dev/null 2>&1 || have_gnuplot=0

# report: the tables, the target checks and the chart, from $csv (also
# what --report CSV runs on its own, e.g. after an interrupted run).
report() {

awk -F, -v quick=$quick '
function get(r, c) { return (r in V) ? (c == "v" ? V[r] : c == "t" ? T[r] : R[r]) : "" }
NR == 1 { next }
{ V[$1] = $3; T[$1] = $4; R[$1] = $5; P50[$1] = $6; P99[$1] = $7; P999[$1] = $8
  TP50[$1] = $9; TP99[$1] = $10; TP999[$1] = $11; WA[$1] = $15; PT[$1] = $20; PR[$1] = $21
  if ($20 != "") havept = 1
  rows[++n] = $1; U[$1] = $2 }
END {
	printf "\n%-34s %12s %12s %8s %-8s", "row", "virtuscale", "tmpfs", "ratio", "unit"
	if (havept) printf " %12s %8s", "passthrough", "vs/pt"
	printf "\n"
	for (i = 1; i <= n; i++) {
		r = rows[i]
		printf "%-34s %12s %12s %8s %-8s", r, V[r], T[r], R[r], U[r]
		if (havept) printf " %12s %8s", PT[r], PR[r]
		printf "\n"
	}
	printf "\nwrite amplification (bytes written to the image per byte fio wrote, after a flush):\n"
	for (i = 1; i <= n; i++) {
		r = rows[i]
		if (WA[r] != "") printf "  %-34s %8s\n", r, WA[r]
	}
	printf "\nfsync latency (fio sync percentiles, microseconds):\n"
	printf "  %-32s %10s %10s %10s   %s\n", "row", "p50", "p99", "p99.9", "(tmpfs p50/p99/p99.9)"
	for (i = 1; i <= n; i++) {
		r = rows[i]
		if (P50[r] != "") printf "  %-32s %10s %10s %10s   (%s/%s/%s)\n", r, P50[r], P99[r], P999[r], TP50[r], TP99[r], TP999[r]
	}
	printf "\ntargets:\n"
	chk("fit/seqread-1M-buf", "ratio", 0.5, "buffered seq read within 2x of tmpfs")
	chk("fit/seqwrite-1M-buf", "ratio", 0.5, "buffered seq write within 2x of tmpfs")
	chk("fit/seqwrite-1M-buf", "v", 800, "seq write 1M >= 800 MB/s (FUSE passthrough)")
	chk("fit/seqread-1M-buf", "v", 1400, "seq read 1M >= 1400 MB/s (FUSE passthrough)")
	chk("fit/randread-4K-buf", "v", 26000, "rand read 4K >= 26K IOPS (FUSE passthrough)")
	chk("fit/randread-4K-direct", "v", 43000, "rand read 4K O_DIRECT >= 43K IOPS (FUSE passthrough)")
	chk("fit/randwrite-4K-buf", "v", 28000, "rand write 4K >= 28K IOPS (FUSE passthrough)")
	chk("meta/create-shell-loop", "v", 5700, "creates from a shell loop >= 5,700/s (FUSE passthrough)")
	one = "fit/randwrite-4K-fsync"; four = "fit/randwrite-4K-4j-fsync"
	if ((one in V) && (four in V) && V[one] > 0) {
		g = V[four] / V[one]
		printf "  %-6s %-58s %s\n", (g > 2 ? "MET" : "NOT"), "4 fsync writers > 2x the fsyncs/s of 1 (group commit)", sprintf("%.2fx (%s vs %s /s)", g, V[four], V[one])
	}
}
function chk(r, what, bar, text,   x) {
	if (!(r in V) || V[r] == "") return
	x = (what == "ratio") ? R[r] : V[r]
	printf "  %-6s %-58s %s\n", (x + 0 >= bar ? "MET" : "NOT"), text, x
}' "$csv" | tee -a "$txt" >&2

# ------------------------------------------------------------- the chart

if [ $have_gnuplot -eq 1 ]; then
	awk -F, 'NR > 1 && $5 != "" && $5 + 0 > 0 { print $1, $5 }' "$csv" >"$work/ratios.dat"
	n=$(wc -l <"$work/ratios.dat")
	if [ "$n" -gt 0 ]; then
		gnuplot <<EOF 2>"$work/gnuplot.err" || { cat "$work/gnuplot.err" >&2; echo "run.sh: gnuplot failed" >&2; }
set terminal pngcairo size $((400 + n * 28)),700 font ",9"
set output "$png"
set title "VirtuScale / tmpfs (higher is better; 1 = tmpfs speed; pool ${pool} MiB, runtime ${runtime}s)"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set logscale y
set yrange [0.0001:2]
set ylabel "ratio (log scale)"
set grid ytics
set xtics rotate by -60 left noenhanced
set key off
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "black" dt 2
set arrow from graph 0, first 0.5 to graph 1, first 0.5 nohead lc rgb "red" dt 2
set bmargin 14
set rmargin 10
plot "$work/ratios.dat" using 2:xtic(1) lc rgb "#3a7bd5"
EOF
	fi
else
	echo "run.sh: gnuplot not found: no chart (apt-get install -y gnuplot-nox)" >&2
fi

}

if [ -n "$report_csv" ]; then
	csv=$report_csv
	[ -r "$csv" ] || die "--report: cannot read $csv"
	base=${csv%.csv}
	txt=$base.report.txt
	png=$base.png
	pool=$(sed -n 's/^# pool \([0-9]*\) MiB.*/\1/p' "$base.txt" 2>/dev/null)
	runtime=$(sed -n 's/^# pool.*runtime \([0-9]*\)s.*/\1/p' "$base.txt" 2>/dev/null)
	: "${pool:=?}" "${runtime:=?}"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	: >"$txt"
	report
	log "table: $txt"
	[ -f "$png" ] && log "chart: $png"
	exit 0
fi

if [ -z "$build" ]; then
	for b in ${VS_BUILD:-} build-fsb build build-release; do
		if [ -x "$top/$b/fs/virtuscale" ] || [ -x "$b/fs/virtuscale" ]; then
			build=$b
			break
		fi
	done
fi
[ -n "$build" ] || die "no build directory with fs/virtuscale (use -B)"
case $build in /*) ;; *) [ -d "$build" ] || build=$top/$build ;; esac
daemon=$build/fs/virtuscale
mkfs=$build/tools/mkfs.virtuscale
[ -x "$daemon" ] && [ -x "$mkfs" ] || die "$build lacks fs/virtuscale or tools/mkfs.virtuscale"

# Sizes in MiB. "fit" is half the pool, "big" four times the pool.
if [ $quick -eq 1 ]; then
	: "${pool:=64}" "${runtime:=1}"
	nfiles=2000 nshell=1000
else
	: "${pool:=512}" "${runtime:=10}"
	nfiles=100000 nshell=20000
fi
fit=$((pool / 2))
big=$((pool * 4))
# Room for the 4x working set twice over (the one-job file is deleted before
# the four-job files are laid out, but freed pages may not be reused at
# once), the fit set, the write-amplification file and the small files.
# The image is sparse: only what is written takes disk space.
img_mib=$((big * 2 + fit * 3 + 2048))

stamp=$(date +%Y%m%d-%H%M%S)
[ -n "$csv" ] || csv=$here/results/$stamp.csv
mkdir -p "$(dirname "$csv")"
base=${csv%.csv}
txt=$base.txt
statsf=$base.stats
png=$base.png

work=${work:-/var/tmp}/vsbench-fs.$$
img=$work/vs.img
vsmnt=$work/vs
tmnt=$work/tmpfs
ptmnt=$work/pt
jdir=$work/json
mkdir -p "$vsmnt" "$tmnt" "$jdir"

# ---------------------------------------------------------------- mounts

vspid=
ptpid=
tmpfs_mounted=0
cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$vspid" ]; then
		fusermount3 -u "$vsmnt" 2>/dev/null || umount -l "$vsmnt" 2>/dev/null || true
		# The daemon writes everything back before it exits: give it time.
		i=0
		while kill -0 "$vspid" 2>/dev/null && [ $i -lt 300 ]; do
			sleep 0.2
			i=$((i + 1))
		done
		kill "$vspid" 2>/dev/null || true
		wait "$vspid" 2>/dev/null || true
	fi
	if [ -n "$ptpid" ]; then
		fusermount3 -u "$ptmnt" 2>/dev/null || umount -l "$ptmnt" 2>/dev/null || true
		kill "$ptpid" 2>/dev/null || true
		wait "$ptpid" 2>/dev/null || true
	fi
	if [ $tmpfs_mounted -eq 1 ]; then
		umount "$tmnt" 2>/dev/null || true
	else
		case $tmnt in /dev/shm/vsbench-fs.*) rm -rf "$tmnt" ;; esac
	fi
	if [ $keep -eq 1 ]; then
		echo "run.sh: work directory kept: $work" >&2
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

log "mkfs ${img_mib} MiB image, pool ${pool} MiB, fit ${fit} MiB, big ${big} MiB, runtime ${runtime}s"
"$mkfs" "$img" --size "${img_mib}M" --force >"$work/mkfs.log" 2>&1 || { cat "$work/mkfs.log" >&2; die "mkfs failed"; }
opts=pool=${pool}M${threads:+,threads=$threads}${VS_BENCH_OPTS:+,$VS_BENCH_OPTS}
"$daemon" "$img" "$vsmnt" -f -o "$opts" >"$work/daemon.log" 2>&1 &
vspid=$!
i=0
until [ -r "$vsmnt/.virtuscale/stats" ]; do
	kill -0 "$vspid" 2>/dev/null || { cat "$work/daemon.log" >&2; die "virtuscale exited"; }
	[ $i -lt 100 ] || die "virtuscale did not mount in 10 s"
	sleep 0.1
	i=$((i + 1))
done

if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=$(((img_mib + 1024) * (pt + 1)))m vsbench "$tmnt" 2>/dev/null; then
	tmpfs_mounted=1
else
	rmdir "$tmnt"
	tmnt=$(mktemp -d /dev/shm/vsbench-fs.XXXXXX)
	log "no tmpfs mount (not root?): using $tmnt"
fi
[ "$(stat -f -c %T "$tmnt")" = tmpfs ] || die "$tmnt is not a tmpfs"

# The passthrough reference: libfuse's passthrough_ll over a directory of the
# same tmpfs, with the kernel caching VirtuScale is mounted with (writeback
# cache, keep_cache and long timeouts: cache=always).
if [ $pt -eq 1 ]; then
	ex=/usr/share/doc/libfuse3-dev/examples
	[ -r $ex/passthrough_ll.c ] || die "--passthrough: $ex/passthrough_ll.c missing (apt-get install libfuse3-dev)"
	cc -O2 -I$ex -o "$work/passthrough_ll" $ex/passthrough_ll.c $(pkg-config --cflags --libs fuse3) \
		>"$work/pt-build.log" 2>&1 || { cat "$work/pt-build.log" >&2; die "cannot build passthrough_ll"; }
	mkdir -p "$tmnt/.ptsrc" "$ptmnt"
	# passthrough_ll keeps an O_PATH descriptor per inode the kernel knows:
	# 100,000 small files need more than the usual 1,024 or 20,000.
	(
		ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
		exec "$work/passthrough_ll" -f -o source="$tmnt/.ptsrc",writeback,cache=always "$ptmnt"
	) >"$work/pt.log" 2>&1 &
	ptpid=$!
	i=0
	until grep -q " $ptmnt fuse" /proc/mounts; do
		kill -0 "$ptpid" 2>/dev/null || { cat "$work/pt.log" >&2; die "passthrough_ll exited"; }
		[ $i -lt 100 ] || die "passthrough_ll did not mount in 10 s"
		sleep 0.1
		i=$((i + 1))
	done
fi

# --------------------------------------------------------------- helpers

ctl() { printf '%s\n' "$1" >"$vsmnt/.virtuscale/control"; }
snap() { awk '!/^#/ && NF == 2 { print $1, $2 }' "$vsmnt/.virtuscale/stats" >"$1"; }
# delta BEFORE AFTER NAME-REGEX: summed change of the matching counters
delta() {
	awk -v re="$3" 'FNR == NR { a[$1] = $2; next }
		$1 ~ re { s += $2 - a[$1] } END { printf "%.0f\n", s }' "$1" "$2"
}
drop_dentries() {
	[ "$(id -u)" -eq 0 ] || return 0
	sync
	echo 2 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

# jq programs over fio's json
jq_bw='([.jobs[] | (.read.bw_bytes + .write.bw_bytes)] | add // 0) / 1e6'
jq_iops='[.jobs[] | (.read.iops + .write.iops)] | add // 0'
jq_bytes='[.jobs[] | (.read.io_bytes + .write.io_bytes)] | add // 0'
jq_sync='.jobs[0].sync.lat_ns.percentile // {} |
	[.["50.000000"], .["99.000000"], .["99.900000"]] |
	map(if . == null then "" else (. / 1000 | floor | tostring) end) | join(",")'

# fio_row NAME FS DIR ARGS...: run fio, leave json in $jdir/NAME.FS.json
fio_row() {
	_n=$1 _fs=$2 _dir=$3
	shift 3
	_j=$jdir/$(echo "$_n" | tr / _).$_fs.json
	if ! (cd "$_dir" && fio --name=b --output-format=json --output="$_j" \
		--ioengine=psync --iodepth=1 "$@" </dev/null >"$_j.err" 2>&1); then
		echo "run.sh: fio failed: $_n on $_fs (see $_j.err)" >&2
		cat "$_j.err" >&2
		echo '{"jobs":[]}' >"$_j"
	fi
	# fio writes warnings before the json on some versions: keep the object
	sed -n '/^{/,$p' "$_j" >"$_j.clean" && mv "$_j.clean" "$_j"
	echo "$_j"
}

metric_of() { # UNIT JSON -> number
	case $1 in
	MB/s) jq -r "$jq_bw" "$2" 2>/dev/null || echo "" ;;
	*) jq -r "$jq_iops" "$2" 2>/dev/null || echo "" ;;
	esac
}

echo "row,unit,virtuscale,tmpfs,ratio,vs_sync_p50_us,vs_sync_p99_us,vs_sync_p999_us,tmpfs_sync_p50_us,tmpfs_sync_p99_us,tmpfs_sync_p999_us,vs_fio_bytes,vs_store_written_bytes,vs_wal_bytes,vs_write_amp,vs_store_read_bytes,vs_pool_loads,vs_pool_hits,vs_pool_evictions,passthrough,vs_per_passthrough" >"$csv"
: >"$statsf"

# record NAME UNIT VS TMPFS [VSSYNC TSYNC VSBYTES WRITTEN WAL READ LOADS HITS EVICT PT]
record() {
	_ratio=$(awk -v a="$3" -v b="$4" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print ""; else printf "%.3g", a / b }')
	_pr=$(awk -v a="$3" -v b="${14:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print ""; else printf "%.3g", a / b }')
	_wa=$(awk -v f="${7:-}" -v w="${8:-}" -v l="${9:-}" 'BEGIN { if (f == "" || f + 0 == 0) print ""; else printf "%.3f", (w + l) / f }')
	echo "$1,$2,$3,$4,$_ratio,${5:-,,},${6:-,,},${7:-},${8:-},${9:-},$_wa,${10:-},${11:-},${12:-},${13:-},${14:-},$_pr" >>"$csv"
	printf '%-34s %12s %12s %8s %s%s\n' "$1" "$3" "$4" "$_ratio" "$2" "${14:+  passthrough ${14} (vs/pt $_pr)}" >&2
}

# vs_measure NAME CMD...: flush, snapshot, run CMD, flush, snapshot; sets
# the globals d_written d_wal d_read d_loads d_hits d_evict
vs_measure() {
	_n=$1
	shift
	ctl flush
	snap "$work/s0"
	"$@"
	ctl flush
	snap "$work/s1"
	d_written=$(delta "$work/s0" "$work/s1" '^virtuscale_store_written_bytes_total$')
	# Journal bytes, once the stats file has them under a name with "wal"
	# and "bytes" in it. If the journal's writes are also counted in
	# store_written_bytes, this double counts: then drop it here.
	d_wal=$(delta "$work/s0" "$work/s1" 'wal.*bytes')
	d_read=$(delta "$work/s0" "$work/s1" '^virtuscale_store_read_bytes_total$')
	d_loads=$(delta "$work/s0" "$work/s1" '^virtuscale_pool_(zero_)?loads_total$')
	d_hits=$(delta "$work/s0" "$work/s1" '^virtuscale_pool_hits_total$')
	d_evict=$(delta "$work/s0" "$work/s1" '^virtuscale_pool_evictions_total$')
	awk -v row="$_n" 'FNR == NR { a[$1] = $2; next }
		($2 - a[$1]) != 0 && $1 !~ /uptime|_info/ { printf "%s %s %.0f\n", row, $1, $2 - a[$1] }' \
		"$work/s0" "$work/s1" >>"$statsf"
}

# bench NAME UNIT FIOARGS... : one row on both filesystems
bench() {
	_name=$1 _unit=$2
	shift 2
	echo "$_name" | grep -Eq -- "$rows_re" || return 0
	vs_measure "$_name" fio_row "$_name" vs "$vsmnt" "$@" >/dev/null
	_jv=$jdir/$(echo "$_name" | tr / _).vs.json
	_jt=$(fio_row "$_name" tmpfs "$tmnt" "$@")
	_p=
	if [ $pt -eq 1 ]; then
		_jp=$(fio_row "$_name" pt "$ptmnt" "$@")
		_p=$(printf '%.1f' "$(metric_of "$_unit" "$_jp")")
	fi
	_v=$(metric_of "$_unit" "$_jv")
	_t=$(metric_of "$_unit" "$_jt")
	_v=$(printf '%.1f' "${_v:-0}")
	_t=$(printf '%.1f' "${_t:-0}")
	_vs=$(jq -r "$jq_sync" "$_jv" 2>/dev/null || echo ",,")
	_ts=$(jq -r "$jq_sync" "$_jt" 2>/dev/null || echo ",,")
	[ -n "$_vs" ] || _vs=",,"
	[ -n "$_ts" ] || _ts=",,"
	_b=$(jq -r "$jq_bytes" "$_jv" 2>/dev/null || echo "")
	case $_name in *write*) ;; *) _b= ;; esac
	record "$_name" "$_unit" "$_v" "$_t" "$_vs" "$_ts" "$_b" "$d_written" "$d_wal" \
		"$d_read" "$d_loads" "$d_hits" "$d_evict" "$_p"
}

# --------------------------------------------------------------- the rows

tb="--time_based --runtime=$runtime"
{
	echo "# VirtuScale vs tmpfs, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# $(uname -sr), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%d MiB RAM", $2 / 1024 }' /proc/meminfo), loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# $(fio --version), build $build, git $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo ?)"
	echo "# pool ${pool} MiB, fit ${fit} MiB, 4x pool ${big} MiB, runtime ${runtime}s, mode $([ $quick -eq 1 ] && echo quick || echo full)$([ $pt -eq 1 ] && echo ", passthrough_ll column")"
} >"$txt"
cat "$txt" >&2
printf '%-34s %12s %12s %8s %s\n' row virtuscale tmpfs ratio unit >&2

full() { [ $quick -eq 1 ] || "$@"; }

wa_rows() {
	# Write amplification: fixed byte counts, not time-based, so that every
	# block is written once (fio's random map) and the ratio is clean.
	wa=$((fit / 2))
	[ $wa -ge 16 ] || wa=16
	bench "wa/seqwrite-1M-new" MB/s --filename=wa.seq --size=${wa}M --rw=write --bs=1M --end_fsync=1
	bench "wa/randwrite-4K-buf" IOPS --filename=ws.1 --size=${fit}M --io_size=$((wa / 4))M \
		--rw=randwrite --bs=4k --end_fsync=1
	full bench "wa/randwrite-4K-direct" IOPS --filename=ws.1 --size=${fit}M --io_size=$((wa / 8))M \
		--rw=randwrite --bs=4k --direct=1
}

# set_rows PREFIX MIB: the data rows over one working set
set_rows() {
	p=$1 ws=$2
	one="--filename=ws.1 --size=${ws}M"
	four="--filename_format=ws.4.\$jobnum --size=$((ws / 4))M --numjobs=4 --group_reporting"
	if [ $quick -eq 1 ] && [ "$p" = 4xpool ]; then
		# The quick run lays out 4x the pool once and reads it back.
		bench "$p/seqwrite-1M-direct" MB/s $one --rw=write --bs=1M --direct=1 $tb
		bench "$p/randread-4K-direct" IOPS $one --rw=randread --bs=4k --direct=1 $tb
		return 0
	fi
	bench "$p/seqwrite-1M-buf" MB/s $one --rw=write --bs=1M --end_fsync=1 $tb
	full bench "$p/seqwrite-1M-direct" MB/s $one --rw=write --bs=1M --direct=1 $tb
	bench "$p/seqread-1M-buf" MB/s $one --rw=read --bs=1M $tb
	full bench "$p/seqread-1M-direct" MB/s $one --rw=read --bs=1M --direct=1 $tb
	bench "$p/randread-4K-buf" IOPS $one --rw=randread --bs=4k $tb
	bench "$p/randread-4K-direct" IOPS $one --rw=randread --bs=4k --direct=1 $tb
	full bench "$p/randwrite-4K-buf" IOPS $one --rw=randwrite --bs=4k --end_fsync=1 $tb
	bench "$p/randwrite-4K-direct" IOPS $one --rw=randwrite --bs=4k --direct=1 $tb
	bench "$p/randwrite-4K-fsync" IOPS $one --rw=randwrite --bs=4k --fsync=1 $tb
	[ "$p" != fit ] || wa_rows
	# The four-job files are another working set of the same size: drop
	# the one-job file so that the two together do not fill the pool.
	rm -f "$vsmnt"/ws.1 "$vsmnt"/wa.* "$tmnt"/ws.1 "$tmnt"/wa.* "$tmnt"/.ptsrc/ws.1 "$tmnt"/.ptsrc/wa.*
	full bench "$p/randwrite-4K-4j-buf" IOPS $four --rw=randwrite --bs=4k --end_fsync=1 $tb
	full bench "$p/randwrite-4K-4j-direct" IOPS $four --rw=randwrite --bs=4k --direct=1 $tb
	bench "$p/randwrite-4K-4j-fsync" IOPS $four --rw=randwrite --bs=4k --fsync=1 $tb
	full bench "$p/randread-4K-4j-buf" IOPS $four --rw=randread --bs=4k $tb
	bench "$p/randread-4K-4j-direct" IOPS $four --rw=randread --bs=4k --direct=1 $tb
}

set_rows fit $fit

# Free the fit files so the big set is not competing with them in the pool.
rm -f "$vsmnt"/ws.* "$vsmnt"/wa.* "$tmnt"/ws.* "$tmnt"/wa.* "$tmnt"/.ptsrc/ws.* "$tmnt"/.ptsrc/wa.*
set_rows 4xpool $big
rm -f "$vsmnt"/ws.* "$tmnt"/ws.* "$tmnt"/.ptsrc/ws.*

# Metadata: N empty files in one directory. file_service_type=sequential
# matters: fio's default round robin over 100,000 files is quadratic.
# overwrite=0 + create_on_open=1 keep fio from laying the empty files out
# (open, write 4 KiB, fsync each) before the stat and delete rows.
md="--nrfiles=$nfiles --filesize=4k --bs=4k --openfiles=1 --file_service_type=sequential
	--fallocate=none --create_fsync=0 --overwrite=0 --create_on_open=1"
md_row() { # NAME ENGINE
	echo "$1" | grep -Eq -- "$rows_re" || return 0
	mkdir -p "$vsmnt/md" "$tmnt/md"
	[ $pt -eq 0 ] || mkdir -p "$ptmnt/md"
	[ "$2" = filestat ] && drop_dentries
	bench "$1" files/s --directory=md --filename_format='f.$jobnum.$filenum' --ioengine=$2 $md
}
md_row meta/create filecreate
md_row meta/stat filestat
md_row meta/delete filedelete

# A shell loop creating empty files (the reference figure is from one).
shell_create() { # DIR N -> files/s
	(
		cd "$1"
		t0=$(date +%s%N)
		i=0
		while [ $i -lt "$2" ]; do
			: >"s$i" || { echo "run.sh: shell loop failed at file $i" >&2; exit 0; }
			i=$((i + 1))
		done
		t1=$(date +%s%N)
		awk -v n="$2" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f\n", n / (ns / 1e9) }'
	)
}
if echo meta/create-shell-loop | grep -Eq -- "$rows_re"; then
	mkdir -p "$vsmnt/sh" "$tmnt/sh"
	vs_measure meta/create-shell-loop shell_create "$vsmnt/sh" $nshell >"$work/shv"
	tv=$(shell_create "$tmnt/sh" $nshell) || tv=
	pv=
	if [ $pt -eq 1 ]; then
		mkdir -p "$ptmnt/sh"
		pv=$(shell_create "$ptmnt/sh" $nshell) || pv=
	fi
	record meta/create-shell-loop files/s "$(cat "$work/shv")" "$tv" ",," ",," "" "$d_written" "$d_wal" \
		"$d_read" "$d_loads" "$d_hits" "$d_evict" "$pv"
	rm -rf "$vsmnt/sh" "$tmnt/sh" "$tmnt/.ptsrc/sh"
fi

# ---------------------------------------------------------- the summary

echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$txt"
report

log "csv:   $csv"
log "table: $txt"
log "pool counter deltas per row: $statsf"
[ -f "$png" ] && log "chart: $png"
exit 0
