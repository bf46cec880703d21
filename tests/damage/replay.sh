#!/bin/bash
# replay.sh FUZZ_SEED FUZZ_IMAGE [INPUT...]: write the seed corpus to a
# scratch directory and run it, and every INPUT (tests/damage/regress), once
# through the fuzz target built as a plain program (fuzz_image.c's main).
# A crash, a sanitizer report or a hang (meson's timeout) fails the test.
set -u
seed=$1 target=$2
shift 2
T=$(mktemp -d /tmp/vs-replay.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
export VS_FUZZ_TMP=$T
mkdir "$T/seeds"
"$seed" "$T/seeds" || { echo "FAIL: fuzz_seed"; exit 1; }
"$target" "$T"/seeds/* "$@" || { echo "FAIL: fuzz_image exited $?"; exit 1; }
echo "ok: $(ls "$T/seeds" | wc -l) seeds and $# regression inputs replayed"
