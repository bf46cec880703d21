/*
 * dirty.c: how much written data the kernel may hold for this mount, fitted
 * to the free space.
 *
 * With the writeback cache, write(2) copies into the kernel's page cache
 * and returns; the daemon sees the data only when the kernel writes it
 * back, and a write-back that finds no space fails fsync and close, and
 * (op_getattr) the writer's next write(2). So what the kernel may hold
 * dirty for this mount is how far a writer can run past the end of the
 * free space before it hears ENOSPC.
 *
 * The knobs are the mount's bdi (/sys/class/bdi/MAJ:MIN/, Linux 6.2+):
 * max_bytes, and strict_limit, without which max_bytes holds only once the
 * whole machine has much dirty data: up to the machine's dirty limit
 * (vm.dirty_ratio or dirty_bytes; gigabytes here) may then sit in the
 * mount's cache.
 *
 *   ample  ordinary writers have at least twice the machine's dirty limit
 *          left: max_bytes = dirty_cache (default: the pool's size), not
 *          strict. A writer is throttled only by the kernel's global
 *          limits, as on a local filesystem (rewriting a 256 MiB file in
 *          the cache: about 10x the speed of the strict 1% FUSE default).
 *   tight  otherwise: strict, max_bytes = half of what ordinary writers
 *          have left, rounded down to a power of two (so that it changes
 *          rarely), at least 64 KiB, and at most dirty_cache if one was
 *          given. What is cached always fits what is free.
 *
 * dirty_cache=0 leaves the kernel's limits alone (strict, 1% of the
 * machine's). Each WRITE the kernel sends, and each open for writing,
 * refits (a mutex and a compare when nothing changes). A writer near a
 * full image is throttled to the write-back's speed: the price of hearing
 * ENOSPC in time. Root only; a user mount keeps the kernel's limits
 * (logged once). The knobs go away with the mount: nothing to undo.
 */
#include "fs/fuse_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/log.h"

#define DIRTY_MIN (64 * 1024)

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = 0;
}

/* The device numbers of the last FUSE mount at @mnt; false if none. */
static bool mount_dev(const char *mnt, unsigned *maj, unsigned *min)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char point[PATH_MAX], type[64];
		unsigned a, b;
		/* id parent maj:min root point options [optional...] - type ... */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, point) != 3)
			continue;
		char *dash = strstr(line, " - ");
		if (!dash || sscanf(dash + 3, "%63s", type) != 1 || strncmp(type, "fuse", 4) != 0)
			continue;
		unescape(point);
		if (strcmp(point, mnt) == 0) {
			*maj = a;
			*min = b;
			found = true;
		}
	}
	fclose(f);
	return found;
}

static int knob_write(const struct fs_dirty *d, const char *knob, uint64_t v)
{
	char path[96], buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", v);
	int r = 0;

	snprintf(path, sizeof(path), "%s%s", d->dir, knob);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, buf, (size_t)n) != n)
		r = -errno;
	if (fd >= 0)
		close(fd);
	return r;
}

/* The machine's dirty limit in bytes (mm/page-writeback.c). */
static uint64_t dirty_thresh_bytes(void)
{
	FILE *f = fopen("/proc/vmstat", "re");
	char name[64];
	uint64_t v, thresh = 0;

	if (!f)
		return 0;
	while (fscanf(f, "%63s %" SCNu64, name, &v) == 2)
		if (strcmp(name, "nr_dirty_threshold") == 0)
			thresh = v;
	fclose(f);
	return thresh * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Find the mount's bdi: once. */
static bool dirty_find(struct fs_fuse *f)
{
	struct fs_dirty *d = &f->dirty;
	int expect = 0;
	unsigned maj, min;
	char probe[96];

	if (atomic_load_explicit(&d->state, memory_order_acquire) == 1)
		return true;
	if (!atomic_compare_exchange_strong(&d->state, &expect, 2))
		return false; /* unavailable, or another thread is looking */
	/* The mount point is absolute (main.c); a stat of it would be a
	 * request to ourselves, so the mount table says which device it is. */
	if (f->mountpoint && mount_dev(f->mountpoint, &maj, &min)) {
		snprintf(d->dir, sizeof(d->dir), "/sys/class/bdi/%u:%u/", maj, min);
		snprintf(probe, sizeof(probe), "%sstrict_limit", d->dir);
		d->thresh = dirty_thresh_bytes();
		if (d->thresh && access(probe, W_OK) == 0) {
			atomic_store_explicit(&d->state, 1, memory_order_release);
			return true;
		}
	}
	vs_log(VS_LOG_INFO,
	       "the kernel's dirty limits of this mount stay as they are (%s): near a full "
	       "image a writer can run past the free space by what the kernel holds before "
	       "it hears ENOSPC",
	       d->dir[0] ? d->dir : "the mount was not found in the mount table");
	atomic_store(&d->state, -1);
	return false;
}

static uint64_t dirty_target(const struct fs_fuse *f, uint64_t free_bytes)
{
	if (free_bytes / 2 >= f->dirty.thresh)
		return UINT64_MAX; /* ample */
	uint64_t t = DIRTY_MIN;
	while (t * 2 <= free_bytes / 2)
		t *= 2;
	if (f->opts.dirty_capped && t > f->opts.dirty_bytes)
		t = f->opts.dirty_bytes;
	return t;
}

static void dirty_apply(struct fs_dirty *d, uint64_t want, uint64_t dirty_cache)
{
	int r;

	if (want == UINT64_MAX) {
		/* More than the kernel's whole dirty limit is refused (EINVAL):
		 * the mount may then use all of it. */
		r = knob_write(d, "max_bytes", dirty_cache);
		if (r == -EINVAL)
			r = knob_write(d, "max_ratio", 100);
		if (r == 0)
			r = knob_write(d, "strict_limit", 0);
	} else {
		/* max_bytes first: never a moment unbounded and strict off. */
		r = knob_write(d, "max_bytes", want);
		if (r == 0)
			r = knob_write(d, "strict_limit", 1);
	}
	if (r < 0)
		vs_log(VS_LOG_WARN, "%s: cannot set the dirty limit: %s", d->dir, strerror(-r));
}

void fs_dirty_fit(struct fs_fuse *f)
{
	struct fs_dirty *d = &f->dirty;

	if (!f->opts.writeback_cache || f->opts.dirty_bytes == 0 || !dirty_find(f))
		return;
	uint64_t want = dirty_target(f, fs_space_user_free(f->fs) * BM_PAGE_SIZE);
	uint64_t was = atomic_load_explicit(&d->set, memory_order_relaxed);
	if (want == was || !atomic_compare_exchange_strong(&d->set, &was, want))
		return;
	dirty_apply(d, want, f->opts.dirty_bytes);
}
