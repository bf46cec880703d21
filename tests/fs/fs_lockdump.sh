#!/bin/bash
# fs_lockdump.sh - SIGUSR2 makes the daemon write its lock-holder table
# (engine/lockorder.h), wherever the daemon runs:
#   - in the foreground, to its stderr (here the daemon log), while a writer
#     keeps it busy: every table is whole (header, "tid N: holds .../waits
#     for ..." lines, end line), and the signals disturb nothing (the data
#     written meanwhile reads back, the daemon exits 0);
#   - with VS_LOCKDUMP=FILE, to that file, appended;
#   - in the background (stderr on /dev/null), to /tmp/virtuscale-locks.PID.
# Needs the real daemon: skipped otherwise.
set -u
. "$(dirname "$0")/../lib/vt_harness.sh"

[ -n "${VS_TEST_DIR:-}" ] && vt_skip "needs the real daemon, not VS_TEST_DIR"
vt_init
M=$VT_MNT

# Waits until FILE holds N end lines; fails after 10 s.
wait_tables() {
	local file=$1 n=$2
	for _ in $(seq 100); do
		[ "$(grep -c '^end of lock-holder table$' "$file" 2>/dev/null)" -ge "$n" ] && return 0
		sleep 0.1
	done
	vt_fail "$n lock-holder tables not in $file after 10 s: $(grep -c '^end of lock-holder table$' "$file" 2>/dev/null)"
}

# Every table in FILE is whole: a header, thread lines, an end line.
check_tables() {
	awk -v pid="$2" '
		/^lock-holder table of pid / {
			if (open) { print "header inside a table: " $0; bad = 1 }
			if ($5 != pid) { print "another pid: " $0; bad = 1 }
			open = 1; n++; next
		}
		/^end of lock-holder table$/ { if (!open) { print "end without header"; bad = 1 } open = 0; next }
		open && !/^tid [0-9]+: (holds [^;]+(; waits for .+ for [0-9]+\.[0-9] s)?|waits for .+ for [0-9]+\.[0-9] s)$/ {
			print "malformed: " $0; bad = 1
		}
		END { if (open) { print "table not ended"; bad = 1 } exit bad || n == 0 }
	' "$1" || vt_fail "malformed lock-holder tables in $1"
}

# ---- foreground: to stderr, while busy ----------------------------------------
vt_mkfs 256M
vt_mount "pool=16M"
head -c $((48 * 1024 * 1024)) /dev/urandom >"$VT_BASE/data"
cp "$VT_BASE/data" "$M/data" &
cp_pid=$!
sent=0
while kill -0 $cp_pid 2>/dev/null && [ $sent -lt 40 ]; do
	kill -USR2 "$VT_PID"
	sent=$((sent + 1))
	sleep 0.02
done
wait $cp_pid || vt_fail "cp onto the mount failed while SIGUSR2 came"
kill -USR2 "$VT_PID"
sent=$((sent + 1))
wait_tables "$VT_LOG" 1
sync "$M/data"
cmp "$VT_BASE/data" "$M/data" || vt_fail "data written during the dumps reads back wrong"
check_tables "$VT_LOG" "$VT_PID"
vt_note "$sent signals, $(grep -c '^end of lock-holder table$' "$VT_LOG") tables in the log"
vt_umount

# ---- VS_LOCKDUMP=FILE -------------------------------------------------------
export VS_LOCKDUMP=$VT_BASE/locks
vt_mount "pool=16M"
unset VS_LOCKDUMP
kill -USR2 "$VT_PID"
wait_tables "$VT_BASE/locks" 1
kill -USR2 "$VT_PID"
wait_tables "$VT_BASE/locks" 2 # appended, not replaced
check_tables "$VT_BASE/locks" "$VT_PID"
cmp "$VT_BASE/data" "$M/data" || vt_fail "data differs after a remount"
vt_umount

# ---- background: /tmp/virtuscale-locks.PID -------------------------------------
"$VS_VIRTUSCALE" "$VT_IMAGE" "$M" -o pool=16M >>"$VT_LOG" 2>&1 ||
	vt_fail "the daemon did not start in the background"
pid=$(awk '$1 == "virtuscale_daemon_pid" { print $2 }' "$M/.virtuscale/stats")
[ -n "$pid" ] && kill -0 "$pid" || vt_fail "no daemon pid in the stats file"
VT_PID=$pid # vt_cleanup ends it if we fail
dumpfile=/tmp/virtuscale-locks.$pid
rm -f "$dumpfile"
VT_SCRATCH="${VT_SCRATCH:-} $dumpfile"
kill -USR2 "$pid"
wait_tables "$dumpfile" 1
check_tables "$dumpfile" "$pid"
fusermount3 -u "$M" || vt_fail "fusermount3 -u $M"
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && vt_fail "the background daemon still runs 30 s after unmount"
VT_PID=
rm -f "$dumpfile"
echo "PASS"
