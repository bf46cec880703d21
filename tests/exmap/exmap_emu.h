/*
 * exmap_emu.h: a stand-in for the exmap kernel module, for tests.
 *
 * The test executable is linked with -Wl,--wrap for open, close, ioctl, mmap
 * and pread (and the 64-bit-offset aliases, which is what the code calls with
 * _FILE_OFFSET_BITS=64). Calls on "/dev/exmap" and on the fd it returns are
 * served here; everything else passes through to libc.
 *
 * The emulation follows the upstream module where the fact sheet and its
 * source agree:
 *   - SETUP once (EBUSY after), max_interfaces <= 256 (EINVAL), optionally
 *     EBADF unless the backing fd is a block device;
 *   - interface pages at EXMAP_OFF_INTERFACE(i), the region at offset 0;
 *   - ACTION returns the number of failed iovs and writes {res, pages} per
 *     iov; an ALLOC that runs out of frames marks that iov and all later ones
 *     -ENOMEM without counting them;
 *   - a fault-in pread that cannot get every frame returns 0 (short), leaving
 *     whatever it had mapped in place;
 *   - recycled frames are not zeroed (they come up filled with EMU_JUNK).
 * A page of the region without a frame is PROT_NONE, so touching it faults
 * as it would with the module.
 */
#ifndef VS_TESTS_EXMAP_EMU_H
#define VS_TESTS_EXMAP_EMU_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exmap/exmap.h"

#define EMU_JUNK	0xa5 /* what a recycled frame holds */
#define EMU_MAX_ACTIONS 256
#define EMU_MAX_PREADS	256
#define EMU_MAX_IOV_LOG 8192

struct emu_action {
	unsigned iface, opcode, iov_len;
	int ret;
	size_t log_start; /* index of its first input iov in emu.iov_log */
};

struct emu_pread {
	uint64_t pos;
	size_t count;
	void *buf;
	long ret;
};

struct emu_mmap {
	uint64_t off;
	size_t len;
	int prot, flags;
	void *addr;
	unsigned seq;
};

struct emu {
	/* Knobs, set by a test before it opens. */
	bool absent;	    /* open fails with ENOENT */
	bool want_blockdev; /* SETUP fails EBADF unless the backing fd is a block device */
	int fail_iface_map; /* mmap of this interface fails (ENOMEM); -1: none */
	uint64_t fail_page; /* ALLOC/FREE of this page fails with fail_res; UINT64_MAX: none */
	int fail_res;
	bool fail_reads; /* the backing-store read fails: frames unmapped, short read */

	/* The device. */
	int fd;		   /* the fake device fd (a /dev/null fd); -1 when closed */
	int opens, closes; /* of the device */
	int open_flags;
	unsigned seq; /* counts calls, to check their order */
	int setup_calls;
	unsigned setup_seq;
	struct exmap_setup setup;
	bool setup_done;
	int iface_memfd;		     /* the kernel's view of the interface pages */
	struct exmap_user_interface *kiface; /* all interfaces, in one mapping */

	unsigned n_iface_maps;
	struct emu_mmap iface_maps[EXMAP_MAX_INTERFACES + 8];
	int region_maps;
	struct emu_mmap region_map;
	char *region;
	uint64_t region_pages;
	uint8_t *mapped; /* one byte per region page */
	uint64_t frames_free;

	/* What was asked of it. */
	unsigned n_actions;
	struct emu_action actions[EMU_MAX_ACTIONS];
	size_t n_iov_log;
	uint64_t iov_log[EMU_MAX_IOV_LOG];
	unsigned n_preads;
	struct emu_pread preads[EMU_MAX_PREADS];
	unsigned violations;  /* protocol errors by the caller (iov_len > 512 ...) */
	atomic_uint overlaps; /* two threads inside one interface at once */
	atomic_uint busy[EXMAP_MAX_INTERFACES];
};

extern struct emu emu;

/* Forget everything (unmapping nothing: the code under test owns the
 * mappings it was given) and set the knobs to their defaults. */
void emu_reset(void);

/* Frames the emulated module still has free, and whether @page has one. */
uint64_t emu_frames_free(void);
bool emu_page_mapped(uint64_t page);

/* The real libc calls, for tests that need them past the wrappers. */
int __real_open64(const char *path, int flags, ...);
long __real_pread64(int fd, void *buf, size_t count, long pos);

#endif
