#!/bin/bash
# tests/vm/run.sh: test the exmap path for real, in a VM.
#
# Builds exmap/kmod (vsexmap.ko) against the installed Debian kernel package
# (not the host's running kernel), packs a busybox initramfs with the module,
# the kernel's own fuse/loop/null_blk modules, the test binaries and their
# shared libraries, boots it with qemu-system-x86_64 under TCG, runs the tests
# inside and turns the serial log into an exit code:
#
#   0   every test in the VM passed and dmesg shows no WARNING/Oops/BUG
#   1   something failed (the serial log is printed)
#   77  skipped: no qemu or no Debian kernel packages and no way to install them
#
# Usage:
#   tests/vm/run.sh [--bin DIR] [--daemon PATH --mkfs PATH] [--extra PATH]...
#                   [--keep]
#     --bin DIR      where vm_exmap_abi, vm_engine and vm_free_cost are
#                    (default: build them with meson in $VM_WORK/build, with
#                    the daemon, mkfs, the engine tests and vsbench)
#     --daemon, --mkfs  the virtuscale daemon and mkfs.virtuscale, for the
#                    mounted-filesystem test (skipped in the VM without them)
#     --extra PATH   one more program for /t in the VM: test_bm, test_journal,
#                    test_btree_model (run there with VS_TEST_BACKEND=exmap)
#                    and vsbench (the out-of-memory random-read benchmark);
#                    each is skipped in the VM when not given
#     --keep         keep the work directory ($VM_WORK, default a mktemp dir)
# Environment: VM_TIMEOUT (seconds for the whole boot, default 720),
#              VM_NO_APT=1 (never apt-get install, skip instead),
#              VM_KMOD_DIR (module source to build, default exmap/kmod: for
#              before/after comparisons of a module change),
#              VM_ONLY="name ..." (run only these tests in the VM, e.g.
#              "free-cost bench-evict"; the verdict covers what ran).
set -u

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
bindir=""
daemon=""
mkfs=""
keep=0
extras=()
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) bindir=$2; shift 2 ;;
	--daemon) daemon=$2; shift 2 ;;
	--mkfs) mkfs=$2; shift 2 ;;
	--extra) extras+=("$2"); shift 2 ;;
	--keep) keep=1; shift ;;
	*) echo "usage: $0 [--bin DIR] [--daemon PATH --mkfs PATH] [--extra PATH]... [--keep]" >&2
	   exit 2 ;;
	esac
done

skip() { echo "SKIP: $*"; exit 77; }
die() { echo "FAIL: $*"; exit 1; }

# ------------------------------------------------------------------
# Packages

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static ||
	{ dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static); }
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v modinfo >/dev/null || need_pkgs+=(kmod)
ls /boot/vmlinuz-6.1.*-amd64 >/dev/null 2>&1 || need_pkgs+=(linux-image-amd64)
ls -d /usr/src/linux-headers-6.1*-amd64 >/dev/null 2>&1 || need_pkgs+=(linux-headers-amd64)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ "${VM_NO_APT:-0}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		skip "missing ${need_pkgs[*]} and cannot install them"
	fi
	echo "# installing ${need_pkgs[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
		"${need_pkgs[@]}" >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null 2>&1 &&
		  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
			"${need_pkgs[@]}" >/dev/null 2>&1; } ||
		skip "apt-get install ${need_pkgs[*]} failed"
fi
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"

# The newest Debian 6.1 kernel that has both an image and headers.
kver=""
for k in $(ls -d /lib/modules/6.1.*-amd64 2>/dev/null | xargs -rn1 basename | sort -V -r); do
	if [ -f "/boot/vmlinuz-$k" ] && [ -e "/lib/modules/$k/build/Makefile" -o -d "/usr/src/linux-headers-$k" ]; then
		kver=$k
		break
	fi
done
[ -n "$kver" ] || skip "no Debian 6.1 kernel with matching headers"
kdir=/lib/modules/$kver/build
[ -e "$kdir/Makefile" ] || kdir=/usr/src/linux-headers-$kver
echo "# kernel $kver, headers $kdir"

work=${VM_WORK:-$(mktemp -d /tmp/vsvm.XXXXXX)}
mkdir -p "$work"
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

# ------------------------------------------------------------------
# The module, built out of tree in a copy (the source tree stays clean)

rm -rf "$work/kmod"
cp -r "${VM_KMOD_DIR:-$src/exmap/kmod}" "$work/kmod"
make -C "$kdir" M="$work/kmod" modules >"$work/kmod.log" 2>&1 ||
	{ cat "$work/kmod.log"; die "module build failed"; }
grep -E "warning:" "$work/kmod.log" && die "module build has warnings"
echo "# built vsexmap.ko"

# ------------------------------------------------------------------
# Test binaries

if [ -z "$bindir" ]; then
	bdir=$work/build
	if [ ! -d "$bdir" ]; then
		meson setup "$bdir" "$src" >"$work/meson.log" 2>&1 || { cat "$work/meson.log"; die "meson setup"; }
	fi
	ninja -C "$bdir" fs/virtuscale tools/mkfs.virtuscale >"$work/ninja-fs.log" 2>&1 &&
		daemon=$bdir/fs/virtuscale mkfs=$bdir/tools/mkfs.virtuscale
	for t in tests/bm/test_bm tests/bm/test_journal tests/btree/test_btree_model bench/vsbench; do
		ninja -C "$bdir" "$t" >>"$work/ninja-extra.log" 2>&1 && extras+=("$bdir/$t")
	done
	if ninja -C "$bdir" tests/vm/vm_exmap_abi tests/vm/vm_engine tests/vm/vm_free_cost \
		>"$work/ninja.log" 2>&1; then
		bindir=$bdir/tests/vm
	else
		# tests/vm not wired into the meson tree: build the two drivers
		# here against the layer libraries.
		ninja -C "$bdir" exmap/libvsexmap.a engine/libvsengine.a >"$work/ninja.log" 2>&1 ||
			{ tail -40 "$work/ninja.log"; die "build of the libraries failed"; }
		bindir=$work/bin
		mkdir -p "$bindir"
		cflags="-O2 -g -Wall -D_GNU_SOURCE -std=gnu11 -I$src"
		cc $cflags -o "$bindir/vm_exmap_abi" "$here/vm_exmap_abi.c" \
			"$bdir/exmap/libvsexmap.a" -lpthread &&
			cc $cflags -o "$bindir/vm_engine" "$here/vm_engine.c" \
				"$bdir/engine/libvsengine.a" "$bdir/exmap/libvsexmap.a" \
				-luring -lxxhash -lm -lpthread &&
			cc $cflags -o "$bindir/vm_free_cost" "$here/vm_free_cost.c" -lpthread ||
			die "build of the test binaries failed"
	fi
fi
bins=("$bindir/vm_exmap_abi" "$bindir/vm_engine" "$bindir/vm_free_cost")
for b in "${bins[@]}"; do [ -x "$b" ] || die "missing $b"; done
for b in "${extras[@]}"; do
	[ -x "$b" ] || die "missing $b"
	bins+=("$b")
done
if [ -n "$daemon" ] && [ -x "$daemon" ] && [ -n "$mkfs" ] && [ -x "$mkfs" ]; then
	bins+=("$daemon" "$mkfs")
else
	echo "# no daemon/mkfs given: the mounted-filesystem test will not run"
fi

# ------------------------------------------------------------------
# The initramfs

root=$work/root
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,mnt,lib/modules,t}
cp /bin/busybox "$root/bin/busybox"
cp "$work/kmod/vsexmap.ko" "$root/lib/modules/"
for m in configfs fuse loop null_blk; do
	f=$(modinfo -k "$kver" -n "$m" 2>/dev/null) || continue
	case "$f" in
	*.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
	*.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
	*.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
	*) ;; # builtin
	esac
done
for b in "${bins[@]}"; do
	cp "$b" "$root/t/"
	ldd "$b" | grep -o '/[^ ]*' | while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
done
# glibc dlopens libgcc_s for pthread_cancel/pthread_exit (libfuse uses them).
gcclib=$(gcc -print-file-name=libgcc_s.so.1 2>/dev/null)
[ -f "$gcclib" ] || gcclib=/lib/x86_64-linux-gnu/libgcc_s.so.1
if [ -f "$gcclib" ]; then
	mkdir -p "$root/lib/x86_64-linux-gnu"
	cp -L "$gcclib" "$root/lib/x86_64-linux-gnu/libgcc_s.so.1"
fi
cp "$here/vm_init.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"
echo "# initramfs $(du -h "$work/initrd.gz" | cut -f1)"

# ------------------------------------------------------------------
# Boot

log=$work/serial.log
start=$(date +%s)
timeout "${VM_TIMEOUT:-720}" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2G \
	-nographic -no-reboot -monitor none -serial "file:$log" \
	-kernel "/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 panic=-1 loglevel=4 no_timer_check vs.only=$(echo ${VM_ONLY:-} | tr ' ' ,)" \
	>"$work/qemu.out" 2>&1
qrc=$?
echo "# VM ran $(($(date +%s) - start)) s (qemu exit $qrc)"
tr -d '\r' <"$log" >"$log.txt"

# What ran and what it printed, for the meson log.
# (The console's escape sequences may precede the first marker.)
awk '/VMTEST-BEGIN/ { on = 1; next } /VMTEST-END/ { on = 0 } on' "$log.txt"
if grep -q '^VMTEST-VERDICT PASS' "$log.txt"; then
	echo "PASS: all VM tests passed"
	exit 0
fi
if ! grep -q '^VMTEST-VERDICT' "$log.txt"; then
	echo "--- serial log (tail) ---"
	tail -60 "$log.txt"
	[ $qrc = 124 ] && die "the VM timed out"
	die "the VM gave no verdict"
fi
die "a test in the VM failed (see above)"
