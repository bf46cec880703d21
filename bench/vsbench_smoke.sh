#!/bin/sh
# Smoke test of vsbench: a tiny random-read run in a private temporary
# directory must print the CSV header and at least one line with tx > 0;
# the unimplemented TPC-C-like mode must exit 2 and a bad value must fail
# with a message naming the variable.
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

BLOCK=$dir/image RNDREAD=0 "$vsbench" >/dev/null 2>"$dir/err"
rc=$?
[ $rc -eq 2 ] || fail "RNDREAD=0 exited $rc, expected 2"
grep -q "not implemented" "$dir/err" || fail "RNDREAD=0 gave no clear message"

BLOCK=$dir/image RNDREAD=1 PHYSGB=lots "$vsbench" >/dev/null 2>"$dir/err"
rc=$?
[ $rc -eq 1 ] || fail "PHYSGB=lots exited $rc, expected 1"
grep -q "PHYSGB" "$dir/err" || fail "PHYSGB=lots gave no message naming PHYSGB"
exit 0
