#!/usr/bin/env bash
# Build and run the whole test suite (the README's test command).
#   scripts/test.sh            normal build, every suite
#   scripts/test.sh asan       the same under AddressSanitizer + UBSan
#   scripts/test.sh tsan       the engine suite under ThreadSanitizer
# VS_TEST_SCALE=N makes the randomized tests run N times longer.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-plain}
case "$mode" in
plain) dir=build; opts=() ;;
asan)  dir=build-asan; opts=(-Db_sanitize=address,undefined -Db_lundef=false) ;;
tsan)  dir=build-tsan; opts=(-Db_sanitize=thread -Db_lundef=false) ;;
*) echo "usage: $0 [plain|asan|tsan]" >&2; exit 2 ;;
esac
# UBSan reports but goes on by default: make a finding fail the test.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
if [ ! -d "$dir" ]; then
	meson setup "$dir" "${opts[@]}"
fi
ninja -C "$dir"
if [ "$mode" = tsan ]; then
	meson test -C "$dir" --print-errorlogs --suite engine
	exit 0
fi
# The uring suite turns the kernel's FUSE over io_uring on (root, where the
# kernel has it), and every mount with the default uring=auto would then use
# it. So the rest runs first, on the transport the machine was set to, and
# the parameter is put back as it was at the end.
param=/sys/module/fuse/parameters/enable_uring
was=$(cat "$param" 2>/dev/null || true)
restore() { [ -n "$was" ] && [ -w "$param" ] && echo "$was" >"$param" 2>/dev/null || true; }
trap restore EXIT
meson test -C "$dir" --print-errorlogs --no-suite uring
meson test -C "$dir" --print-errorlogs --suite uring
