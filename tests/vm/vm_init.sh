#!/bin/busybox sh
# tests/vm/vm_init.sh: /init of the test VM (see run.sh). Runs every test,
# prints "VMTEST <name> rc=<n>" per test and one "VMTEST-VERDICT PASS|FAIL"
# line, then powers off. Everything between VMTEST-BEGIN and VMTEST-END is
# what run.sh shows.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=1g tmpfs /tmp
export TMPDIR=/tmp

fail=0
echo "VMTEST-BEGIN"
echo "# guest kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, $(free -m | awk '/Mem:/ { print $2 }') MiB"

# run.sh's VM_ONLY arrives as vs.only=a,b on the kernel command line.
only=$(sed -n 's/.*vs\.only=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
want() {
	[ -z "$only" ] && return 0
	for w in $only; do [ "$w" = "$1" ] && return 0; done
	return 1
}

run() { # name command...
	name=$1
	shift
	want "$name" || return 0
	echo "# --- $name: $*"
	t0=$(date +%s)
	"$@" 2>&1
	rc=$?
	echo "VMTEST $name rc=$rc ($(($(date +%s) - t0)) s)"
	[ $rc = 0 ] || fail=1
}

# Run a program for at most $1 seconds; when it takes longer, print where
# each of its threads is (kernel stack, state) and kill it (exit 124).
bounded() { # seconds command...
	secs=$1
	shift
	"$@" &
	bpid=$!
	n=0
	while kill -0 $bpid 2>/dev/null; do
		if [ $n -ge $((secs * 5)) ]; then
			echo "# timed out after $secs s; threads of pid $bpid:"
			for t in /proc/$bpid/task/*; do
				echo "# task ${t##*/}: $(cut -d' ' -f3 $t/stat) wchan $(cat $t/wchan 2>/dev/null)"
				sed 's/^/#   /' $t/stack 2>/dev/null
			done
			kill -9 $bpid
			wait $bpid
			return 124
		fi
		n=$((n + 1))
		sleep 0.2
	done
	wait $bpid
}

# The engine's random-read benchmark out of memory: a B-tree several times
# the pool on a block device, random lookups, exmap then madvise in the same
# VM; prints the two rates and their ratio.
vsbench_oom() { # store
	for ex in 1 0; do
		BLOCK=$1 VIRTGB=0.5 PHYSGB=$VSB_POOL EXMAP=$ex RNDREAD=1 DATASIZE=$VSB_TUPLES \
			RUNFOR=$VSB_RUNFOR THREADS=1 /t/vsbench >/tmp/vsb$ex.csv 2>/tmp/vsb$ex.err
		rc=$?
		sed "s/^/# EXMAP=$ex: /" /tmp/vsb$ex.err
		[ $rc = 0 ] || return 1
	done
	ex=$(sed -n 's/^lookups: .*: \([0-9.]*\) \/s .*/\1/p' /tmp/vsb1.err)
	pl=$(sed -n 's/^lookups: .*: \([0-9.]*\) \/s .*/\1/p' /tmp/vsb0.err)
	[ -n "$ex" ] && [ -n "$pl" ] || { echo "# no lookup rates in the output"; return 1; }
	# The tree must be several times the pool, or this is not out of memory.
	sed -n 's/^space: \([0-9.]*\) GB of tree.*pool \([0-9.]*\) GB.*/\1 \2/p' /tmp/vsb1.err |
		awk '{ printf "# tree %.0f MiB, pool %.0f MiB: %.1fx\n", $1 * 1024, $2 * 1024, $1 / $2;
		       exit ($1 < 2.5 * $2) }' || { echo "# the tree is not several times the pool"; return 1; }
	echo "vsbench out-of-memory: exmap $ex/s, madvise $pl/s, ratio $(awk "BEGIN { printf \"%.2f\", $ex / $pl }") (TCG emulation: indicative only)"
}

# The mounted filesystem with exmap=on: copy files in through FUSE with a
# pool smaller than the data, evict, read them back and compare.
fs_copy_compare() {
	mkdir -p /tmp/src /mnt/vs
	for i in 1 2 3 4; do
		dd if=/dev/urandom of=/tmp/src/f$i bs=1M count=6 2>/dev/null || return 1
	done
	echo small >/tmp/src/small
	/t/mkfs.virtuscale /tmp/fs.img --size 256M --quiet || return 1
	/t/virtuscale /tmp/fs.img /mnt/vs -f -o exmap=on,pool=8M >/tmp/daemon.log 2>&1 &
	dpid=$!
	n=0
	until grep -q " /mnt/vs " /proc/mounts; do
		n=$((n + 1))
		if [ $n -gt 100 ] || ! kill -0 $dpid 2>/dev/null; then
			cat /tmp/daemon.log
			return 1
		fi
		sleep 0.2
	done
	rc=0
	cp -r /tmp/src /mnt/vs/ && sync || rc=1
	echo evict >/mnt/vs/.virtuscale/control 2>/dev/null || echo "# (no evict control)"
	# Read back through the daemon, not the kernel's page cache.
	echo 3 >/proc/sys/vm/drop_caches
	for f in /tmp/src/*; do
		cmp "$f" "/mnt/vs/src/${f##*/}" || { echo "# differs: $f"; rc=1; }
	done
	grep -E "backend_info|evictions_total|loads_total|restarts_total" /mnt/vs/.virtuscale/stats | grep -v "^#"
	grep -q "backend=\"exmap\"" /mnt/vs/.virtuscale/stats || { echo "# exmap not on in stats"; rc=1; }
	umount /mnt/vs || rc=1
	wait $dpid || { echo "# daemon exit $?"; rc=1; }
	cat /tmp/daemon.log
	return $rc
}

for m in configfs loop fuse; do
	[ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
[ -f /lib/modules/null_blk.ko ] &&
	insmod /lib/modules/null_blk.ko nr_devices=1 memory_backed=1 bs=4096 gb=1 2>/dev/null

insmod /lib/modules/vsexmap.ko
rc=$?
echo "VMTEST insmod rc=$rc"
[ $rc = 0 ] || fail=1
[ -c /dev/exmap ] && echo "# /dev/exmap: $(ls -l /dev/exmap)" || { echo "# no /dev/exmap"; fail=1; }

if [ $fail = 0 ]; then
	# The ABI, on a regular file (tmpfs: buffered) and on a loop device (O_DIRECT).
	run abi-file /t/vm_exmap_abi /tmp/store.img
	dd if=/dev/zero of=/tmp/loop.img bs=4096 count=256 2>/dev/null
	if losetup /dev/loop0 /tmp/loop.img 2>/dev/null; then
		run abi-loop /t/vm_exmap_abi /dev/loop0
	else
		echo "# no loop device: abi-loop not run"
	fi

	# The engine with exmap on a regular file, and on a block device.
	run engine-exmap-file /t/vm_engine /tmp/engine.img exmap
	if [ -b /dev/nullb0 ]; then
		run engine-exmap-nullblk /t/vm_engine /dev/nullb0 exmap
	else
		dd if=/dev/zero of=/tmp/loop1.img bs=1M count=64 2>/dev/null
		losetup /dev/loop1 /tmp/loop1.img 2>/dev/null &&
			run engine-exmap-loop /t/vm_engine /dev/loop1 exmap
	fi
	run engine-plain-file /t/vm_engine /tmp/engine2.img plain
	run bench-evict /t/vm_engine /tmp/bench.img bench
	# What one FREE batch costs per page, by batch size and layout.
	run free-cost /t/vm_free_cost

	# The engine's own cmocka tests with every pool on /dev/exmap
	# (VS_TEST_BACKEND=exmap: a pool that cannot open there fails the test).
	# VS_TEST_SCALE=0.2 shortens their long loops for emulation (the model
	# test runs 200,000 operations here, 1,000,000 on the host).
	for t in test_bm test_journal test_btree_model; do
		if [ -x /t/$t ]; then
			run engine-$t bounded 300 env VS_TEST_BACKEND=exmap VS_TEST_SCALE=0.2 /t/$t
		else
			echo "# no $t given: engine-$t not run"
		fi
	done

	# The random-read benchmark with the data several times the pool: a
	# 32 MiB pool, 800,000 tuples (a 113 MiB tree), 5 s of lookups each.
	VSB_POOL=0.03125 VSB_TUPLES=800000 VSB_RUNFOR=5
	vsb_store=/tmp/vsbench.img
	[ -b /dev/nullb0 ] && vsb_store=/dev/nullb0
	if [ -x /t/vsbench ]; then
		run vsbench-oom vsbench_oom $vsb_store
	else
		echo "# no vsbench given: vsbench-oom not run"
	fi
	if [ -x /t/virtuscale ] && [ -c /dev/fuse ]; then
		run fs-exmap fs_copy_compare
	else
		echo "# no daemon or no /dev/fuse: fs-exmap not run"
	fi
fi

rmmod vsexmap 2>&1 && echo "# rmmod vsexmap ok" || { echo "# rmmod vsexmap failed"; fail=1; }

# The module must not have upset the kernel.
if dmesg | grep -E "WARNING|Oops|BUG|Call Trace|general protection" >/tmp/bad; then
	echo "# kernel log problems:"
	cat /tmp/bad
	dmesg | tail -60
	echo "VMTEST dmesg rc=1"
	fail=1
else
	echo "VMTEST dmesg rc=0"
fi
echo "# dmesg lines about the module:"
dmesg | grep -i -E "vsexmap|exmap" | head -5
echo "VMTEST-END"
if [ $fail = 0 ]; then
	echo "VMTEST-VERDICT PASS"
else
	echo "VMTEST-VERDICT FAIL"
fi
sync
poweroff -f
