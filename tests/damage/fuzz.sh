#!/bin/bash
# fuzz.sh - build and run the image fuzz target (fuzz_image.c).
#
#   tests/damage/fuzz.sh [--afl] [SECONDS] [CORPUS]
#
# libFuzzer (default): a clang build in build-fuzz with ASan + UBSan and
# -Dfuzz=true; runs fuzz_image for SECONDS (default 300) over CORPUS
# (default /tmp/vs-fuzz-corpus), seeded by fuzz_seed. Crashes, leaks and
# timeouts land in tests/damage/found/ (crash-*, leak-*, timeout-*); UBSan
# findings already reported are skipped (known.supp). Shrink
# them (fuzz_image -minimize_crash=1 -runs=2000 FILE), and keep each as
# tests/damage/regress/NAME.bin once it is fixed, listed in
# tests/damage/meson.build (replayed by the fuzz_replay test).
#
# --afl: the same target built with afl-clang-fast (Debian's afl++) in
# build-afl, run under afl-fuzz; findings in CORPUS-afl/default/crashes
# and hangs.
#
# Replay one input through the plain build: build-dm/tests/damage/fuzz_image
# FILE (VS_FUZZ_VERBOSE=1 says what each step did).
set -eu
cd "$(dirname "$0")/../.."
AFL=0
if [ "${1:-}" = --afl ]; then AFL=1; shift; fi
SECS=${1:-300}
CORPUS=${2:-/tmp/vs-fuzz-corpus}
FOUND=tests/damage/found
mkdir -p "$FOUND" "$CORPUS"
# The images of the inputs (a job killed at its time limit leaves its own).
export VS_FUZZ_TMP=$(mktemp -d "${VS_FUZZ_TMP:-/dev/shm}/vs-fuzz.XXXXXX")
trap 'rm -rf "$VS_FUZZ_TMP"' EXIT

if [ $AFL = 0 ]; then
	B=build-fuzz
	if [ ! -d $B ]; then
		CC=clang meson setup $B -Dfuzz=true -Db_sanitize=address,undefined \
			-Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
	fi
	ninja -C $B tests/damage/fuzz_image tests/damage/fuzz_seed >/dev/null
	$B/tests/damage/fuzz_seed "$CORPUS"
	export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
	export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$PWD/tests/damage/known.supp
	# Fork mode goes on after a finding (each one is written to $FOUND).
	$B/tests/damage/fuzz_image -fork=${VS_FUZZ_JOBS:-1} -ignore_crashes=1 -ignore_timeouts=1 \
		-ignore_ooms=1 -max_total_time="$SECS" -timeout=10 -rss_limit_mb=4096 \
		-max_len=262144 -artifact_prefix="$FOUND/" -print_final_stats=1 "$CORPUS"
else
	B=build-afl
	command -v afl-clang-fast >/dev/null || { echo "no afl-clang-fast (apt-get install afl++)"; exit 77; }
	if [ ! -d $B ]; then
		CC=afl-clang-fast meson setup $B -Dfuzz=true >/dev/null
	fi
	ninja -C $B tests/damage/fuzz_image tests/damage/fuzz_seed >/dev/null
	mkdir -p "$CORPUS-seeds"
	$B/tests/damage/fuzz_seed "$CORPUS-seeds"
	export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
	timeout -s INT "$SECS" afl-fuzz -i "$CORPUS-seeds" -o "$CORPUS-afl" -t 20000 -m none \
		-- $B/tests/damage/fuzz_image
fi
