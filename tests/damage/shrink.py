#!/usr/bin/env python3
"""shrink.py - shrink a fuzz_image input that fails, record by record.

    tests/damage/shrink.py [--timeout S] TARGET IN OUT

TARGET runs one input (the libFuzzer build, build-fuzz/tests/damage/
fuzz_image, does) and exits nonzero on the failure; the failure must keep
the same first "SUMMARY:" line (or exit status when there is none). Knows
fuzz_image.c's sparse format: drops whole page records, then cuts each
record's trailing bytes (a page is zero past its record), which libFuzzer's
byte-level minimizer rarely manages. Prints the size as it goes. A run
longer than --timeout seconds (default 60) counts as the failure "timeout":
for a hang, give the plain build and a few seconds.
"""
import os
import subprocess
import sys
import tempfile


def parse(data):
    hdr, recs, i = data[:3], [], 3
    while i + 4 <= len(data):
        n = min(data[i + 2] | data[i + 3] << 8, 4096, len(data) - i - 4)
        recs.append((data[i:i + 2], data[i + 4:i + 4 + n]))
        i += 4 + n
    return hdr, recs


def encode(hdr, recs):
    out = bytearray(hdr)
    for pid, body in recs:
        out += pid + bytes([len(body) & 0xff, len(body) >> 8]) + body
    return bytes(out)


TIMEOUT = 60


def signature(target, data):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    try:
        p = subprocess.run([target, f.name], capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        os.unlink(f.name)
    for line in p.stderr.decode(errors="replace").splitlines():
        if line.startswith("SUMMARY:"):
            return line
    return None if p.returncode == 0 else "exit %d" % p.returncode


def main():
    global TIMEOUT
    args = sys.argv[1:]
    if args[:1] == ["--timeout"]:
        TIMEOUT = float(args[1])
        args = args[2:]
    target, src, dst = args[:3]
    data = open(src, "rb").read()
    want = signature(target, data)
    if want is None:
        sys.exit("%s does not fail" % src)
    print("failure:", want)
    hdr, recs = parse(data)
    i = 0
    while i < len(recs):  # drop records
        trial = recs[:i] + recs[i + 1:]
        if signature(target, encode(hdr, trial)) == want:
            recs = trial
            print("dropped a record:", len(encode(hdr, recs)), "bytes")
        else:
            i += 1
    for i in range(len(recs)):  # cut records short
        lo, hi = 0, len(recs[i][1])
        while lo < hi:
            mid = (lo + hi) // 2
            trial = recs[:i] + [(recs[i][0], recs[i][1][:mid])] + recs[i + 1:]
            if signature(target, encode(hdr, trial)) == want:
                hi = mid
            else:
                lo = mid + 1
        recs[i] = (recs[i][0], recs[i][1][:lo])
    out = encode(hdr, recs)
    open(dst, "wb").write(out)
    print("%s: %d bytes (from %d)" % (dst, len(out), len(data)))


if __name__ == "__main__":
    main()
