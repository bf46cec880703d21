#!/bin/sh
# Smoke test of vsbench, in a private temporary directory: a tiny
# random-read run and two tiny TPC-C-like runs must print the CSV header and
# lines with tx > 0, the TPC-C runs must pass their consistency checks, and
# a bad value must fail with a message naming the variable.
# Usage: vsbench_smoke.sh PATH_TO_VSBENCH
set -u
vsbench=$1
dir=$(mktemp -d "${TMPDIR:-/tmp}/vsbench-smoke.XXXXXX") || exit 77
trap 'rm -rf "$dir"' EXIT
fail() { echo "vsbench_smoke: $*" >&2; exit 1; }

BLOCK=$dir/image VIRTGB=0.25 PHYSGB=0.0625 DATASIZE=20000 RUNFOR=1 RNDREAD=1 THREADS=2 BTCHECK=1 \
	"$vsbench" >"$dir/out" 2>"$dir/err"
rc=$?
cat "$dir/err" >&2
cat "$dir/out"
[ $rc -eq 0 ] || fail "random-read run exited $rc"
[ "$(head -n 1 "$dir/out")" = "ts,tx,rmb,wmb,system,threads,datasize,workload,batch" ] ||
	fail "missing or wrong CSV header"
awk -F, 'NR > 1 && $2 > 0 && $5 == "virtuscale" && $6 == 2 && $7 == 20000 &&
	 $8 == "rndread" && $9 == 64 { ok = 1 } END { exit !ok }' "$dir/out" ||
	fail "no CSV line with tx > 0"
grep -q "^load: 20000 tuples" "$dir/err" || fail "no load throughput on stderr"
grep -q "^tree: height" "$dir/err" || fail "BTCHECK=1 printed no tree shape"

# TPC-C-like: one warehouse with the full population, one thread; then two
# warehouses (remote stock and payments) scaled down, with three threads so
# that two share a home warehouse. Each must print the CSV and pass every
# consistency check.
tpcc() {
	name=$1
	shift
	env BLOCK="$dir/image" VIRTGB=0.5 PHYSGB=0.25 RNDREAD=0 RUNFOR=2 "$@" "$vsbench" \
		>"$dir/out" 2>"$dir/err"
	rc=$?
	cat "$dir/err" >&2
	cat "$dir/out"
	[ $rc -eq 0 ] || fail "$name: exited $rc"
	[ "$(head -n 1 "$dir/out")" = "ts,tx,rmb,wmb,system,threads,datasize,workload,batch" ] ||
		fail "$name: missing or wrong CSV header"
	[ "$(wc -l <"$dir/out")" -eq 3 ] || fail "$name: expected 2 CSV lines for RUNFOR=2"
	grep -q "^load: " "$dir/err" || fail "$name: no load time on stderr"
	[ "$(grep -c "^check [0-9].*: PASS$" "$dir/err")" -ge 4 ] ||
		fail "$name: fewer than 4 consistency checks passed"
	! grep -q "FAIL" "$dir/err" || fail "$name: a consistency check failed"
}
tpcc "tpcc 1 warehouse" DATASIZE=1 THREADS=1
awk -F, 'NR > 1 && $2 > 0 && $5 == "virtuscale" && $6 == 1 && $7 == 1 &&
	 $8 == "tpcc" && $9 == 64 { ok = 1 } END { exit !ok }' "$dir/out" ||
	fail "tpcc 1 warehouse: no CSV line with tx > 0"
tpcc "tpcc 2 warehouses" DATASIZE=2 THREADS=3 TPCCSCALE=10
grep -q "scaled down by TPCCSCALE" "$dir/err" || fail "TPCCSCALE=10 not reported"
awk -F, 'NR > 1 && $2 > 0 && $6 == 3 && $7 == 2 && $8 == "tpcc" { ok = 1 } END { exit !ok }' \
	"$dir/out" || fail "tpcc 2 warehouses: no CSV line with tx > 0"

BLOCK=$dir/image RNDREAD=0 DATASIZE=70000 "$vsbench" >/dev/null 2>"$dir/err"
rc=$?
[ $rc -eq 1 ] || fail "DATASIZE=70000 with RNDREAD=0 exited $rc, expected 1"
grep -q "DATASIZE" "$dir/err" || fail "DATASIZE=70000 gave no message naming DATASIZE"

BLOCK=$dir/image RNDREAD=1 PHYSGB=lots "$vsbench" >/dev/null 2>"$dir/err"
rc=$?
[ $rc -eq 1 ] || fail "PHYSGB=lots exited $rc, expected 1"
grep -q "PHYSGB" "$dir/err" || fail "PHYSGB=lots gave no message naming PHYSGB"
exit 0
