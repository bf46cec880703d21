/*
 * stats.c: the control directory /.virtuscale: the stats file (Prometheus
 * text exposition format) and the control file.
 *
 *   /.virtuscale           FS_INO_CTLDIR   dr-xr-xr-x root
 *   /.virtuscale/stats     FS_INO_STATS    -r--r--r-- root  size 0, read with
 *                                          direct_io: every read renders it
 *                                          afresh
 *   /.virtuscale/control   FS_INO_CONTROL  --w------- root  "flush", "evict"
 *
 * The directory is not listed by readdir of the root (tools that walk the
 * tree, cp -a, du, find, should not see it) but lookup finds it, and its own
 * listing shows both files. These inodes have no records; their attributes
 * are made up here.
 */
#include "fs/fs_internal.h"
#include "fs/uring.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const req_names[FS_REQ_COUNT] = {
    [FS_REQ_LOOKUP] = "lookup",
    [FS_REQ_FORGET] = "forget",
    [FS_REQ_GETATTR] = "getattr",
    [FS_REQ_SETATTR] = "setattr",
    [FS_REQ_READLINK] = "readlink",
    [FS_REQ_MKNOD] = "mknod",
    [FS_REQ_MKDIR] = "mkdir",
    [FS_REQ_UNLINK] = "unlink",
    [FS_REQ_RMDIR] = "rmdir",
    [FS_REQ_SYMLINK] = "symlink",
    [FS_REQ_RENAME] = "rename",
    [FS_REQ_LINK] = "link",
    [FS_REQ_OPEN] = "open",
    [FS_REQ_READ] = "read",
    [FS_REQ_WRITE] = "write",
    [FS_REQ_FLUSH] = "flush",
    [FS_REQ_RELEASE] = "release",
    [FS_REQ_FSYNC] = "fsync",
    [FS_REQ_OPENDIR] = "opendir",
    [FS_REQ_READDIR] = "readdir",
    [FS_REQ_READDIRPLUS] = "readdirplus",
    [FS_REQ_RELEASEDIR] = "releasedir",
    [FS_REQ_FSYNCDIR] = "fsyncdir",
    [FS_REQ_STATFS] = "statfs",
    [FS_REQ_SETXATTR] = "setxattr",
    [FS_REQ_GETXATTR] = "getxattr",
    [FS_REQ_LISTXATTR] = "listxattr",
    [FS_REQ_REMOVEXATTR] = "removexattr",
    [FS_REQ_CREATE] = "create",
    [FS_REQ_FALLOCATE] = "fallocate",
    [FS_REQ_LSEEK] = "lseek",
    [FS_REQ_COPY_FILE_RANGE] = "copy_file_range",
};

void fs_count(struct fs *fs, enum fs_req req)
{
	if ((unsigned)req < FS_REQ_COUNT)
		atomic_fetch_add_explicit(&fs->requests[req], 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* The pseudo-inodes                                                  */

bool fs_is_ctl_ino(uint64_t ino)
{
	return ino == FS_INO_CTLDIR || ino == FS_INO_STATS || ino == FS_INO_CONTROL;
}

int fs_ctl_getattr(struct fs *fs, uint64_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_blksize = BM_PAGE_SIZE;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
	switch (ino) {
	case FS_INO_CTLDIR:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	case FS_INO_STATS:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		return 0;
	case FS_INO_CONTROL:
		st->st_mode = S_IFREG | 0200;
		st->st_nlink = 1;
		return 0;
	}
	return -ENOENT;
}

int fs_ctl_lookup(struct fs *fs, uint64_t parent, const char *name, struct stat *ret)
{
	if (parent == FS_INO_ROOT && strcmp(name, ".virtuscale") == 0)
		return fs_ctl_getattr(fs, FS_INO_CTLDIR, ret);
	if (parent != FS_INO_CTLDIR)
		return -ENOTDIR;
	if (strcmp(name, "stats") == 0)
		return fs_ctl_getattr(fs, FS_INO_STATS, ret);
	if (strcmp(name, "control") == 0)
		return fs_ctl_getattr(fs, FS_INO_CONTROL, ret);
	return -ENOENT;
}

int fs_ctl_readdir(struct fs *fs, uint64_t cookie, bool plus, fs_dirent_fn fn, void *ctx)
{
	static const struct {
		const char *name;
		uint64_t ino;
	} ents[] = {
	    {".", FS_INO_CTLDIR},
	    {"..", FS_INO_ROOT},
	    {"stats", FS_INO_STATS},
	    {"control", FS_INO_CONTROL},
	};
	struct stat st;

	for (uint64_t i = cookie; i < sizeof(ents) / sizeof(ents[0]); i++) {
		bool real = i >= 2;
		if (real)
			fs_ctl_getattr(fs, ents[i].ino, &st);
		else
			memset(&st, 0, sizeof(st));
		mode_t type = real ? (st.st_mode & S_IFMT) : S_IFDIR;
		if (!fn(ctx, ents[i].name, ents[i].ino, type, i + 1, plus && real ? &st : NULL))
			break;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* The stats file                                                     */

struct out {
	char *buf;
	size_t cap, len;
	bool full;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len)
		o->full = true;
	else
		o->len += (size_t)n;
}

static void metric(struct out *o, const char *name, const char *type, const char *help,
		   uint64_t value)
{
	put(o, "# HELP virtuscale_%s %s\n# TYPE virtuscale_%s %s\nvirtuscale_%s %llu\n", name, help,
	    name, type, name, (unsigned long long)value);
}

/*
 * Latency histograms. The `le` bounds are the histogram's own octave edges
 * (lat_hist.h), 1 us doubling up to 2^22 us = 4.19 s: every cumulative count
 * is exact (no value is split across an `le`), 23 lines and +Inf per
 * histogram, and a quantile read from them (histogram_quantile, vsstat) is
 * within a factor of two. Values above the last bound show in +Inf and _sum.
 */
#define LAT_LE_OCTAVES 22

/* @us microseconds as seconds, exactly and without trailing zeros. */
static void fmt_le(char *buf, size_t cap, uint64_t us)
{
	int n = snprintf(buf, cap, "%llu.%06llu", (unsigned long long)(us / 1000000),
			 (unsigned long long)(us % 1000000));
	while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.')
		buf[--n] = '\0';
}

static void histogram(struct out *o, const char *name, const char *help, const struct lat_snap *s)
{
	char le[32];

	put(o, "# HELP virtuscale_%s %s\n# TYPE virtuscale_%s histogram\n", name, help, name);
	for (unsigned k = 0; k <= LAT_LE_OCTAVES; k++) {
		uint64_t us = UINT64_C(1) << k;
		fmt_le(le, sizeof(le), us);
		put(o, "virtuscale_%s_bucket{le=\"%s\"} %llu\n", name, le,
		    (unsigned long long)lh_count_le(s, us * 1000));
	}
	put(o,
	    "virtuscale_%s_bucket{le=\"+Inf\"} %llu\nvirtuscale_%s_sum %.9f\n"
	    "virtuscale_%s_count %llu\n",
	    name, (unsigned long long)s->count, name, (double)s->sum_ns / 1e9, name,
	    (unsigned long long)s->count);
}

ssize_t fs_stats_render(struct fs *fs, char *buf, size_t cap)
{
	struct out o = {.buf = buf, .cap = cap};
	struct bm_stats s;
	struct bm_latency lat;
	struct timespec now;

	bm_stats_get(fs->bm, &s);
	bm_latency_get(fs->bm, &lat);
	fs_now(&now);
	metric(&o, "pool_capacity_pages", "gauge", "Pages the buffer pool can hold.",
	       s.capacity_pages);
	metric(&o, "pool_capacity_bytes", "gauge", "Bytes the buffer pool can hold.",
	       s.capacity_pages * BM_PAGE_SIZE);
	metric(&o, "pool_resident_pages", "gauge", "Pages in the pool now.", s.resident_pages);
	metric(&o, "pool_dirty_pages", "gauge", "Resident pages not yet written back.",
	       s.dirty_pages);
	metric(&o, "pool_free_pages", "gauge", "Pool frames not holding a page.",
	       s.capacity_pages > s.resident_pages ? s.capacity_pages - s.resident_pages : 0);
	metric(&o, "pool_loads_total", "counter", "Pages read into the pool (page faults).",
	       s.loads);
	metric(&o, "pool_zero_loads_total", "counter",
	       "Never-written pages brought in without a read.", s.zero_loads);
	metric(&o, "pool_read_through_pages_total", "counter",
	       "Pages a streaming read took from the image without loading them "
	       "(counted in loads too).", s.read_through);
	metric(&o, "pool_write_through_pages_total", "counter",
	       "New pages a streaming write put straight into the image without a frame "
	       "(counted in write-backs too).", s.write_through);
	metric(&o, "pool_hits_total", "counter", "Page fixes that found the page resident.",
	       s.hits);
	metric(&o, "pool_evictions_total", "counter", "Pages dropped from the pool.", s.evictions);
	metric(&o, "pool_evict_batches_total", "counter", "Eviction batches.", s.evict_batches);
	metric(&o, "pool_writebacks_total", "counter", "Pages written back to the image.",
	       s.writebacks);
	metric(&o, "pool_cluster_writebacks_total", "counter",
	       "Write-backs of dirty neighbours an eviction wrote along with a dirty page "
	       "(counted in write-backs too; the pages stay resident).",
	       s.cluster_writebacks);
	metric(&o, "pool_restarts_total", "counter", "Buffer-manager operation restarts.",
	       s.restarts);
	metric(&o, "pool_frame_waits_total", "counter",
	       "Page loads that found nothing to evict (every frame held or dirty) and waited.",
	       s.frame_waits);
	metric(&o, "pool_frame_failures_total", "counter",
	       "Page loads that gave up waiting for a frame (ENOMEM to the caller).",
	       s.frame_fails);
	/* The eviction policy's queues (engine/bm_evict.c, "Policies"). The
	 * total stays in pool_resident_pages, unlabeled, as the tools read it. */
	put(&o,
	    "# HELP virtuscale_evict_policy_info The pool's eviction policy (mount option "
	    "evict).\n"
	    "# TYPE virtuscale_evict_policy_info gauge\n"
	    "virtuscale_evict_policy_info{policy=\"%s\"} 1\n",
	    s.evict_policy ? s.evict_policy : "unknown");
	put(&o,
	    "# HELP virtuscale_pool_queue_pages Resident pages by eviction queue: probation "
	    "(loaded, not yet used twice; what eviction takes first) and main (the rest; "
	    "with evict=clock, all of them).\n"
	    "# TYPE virtuscale_pool_queue_pages gauge\n"
	    "virtuscale_pool_queue_pages{queue=\"probation\"} %llu\n"
	    "virtuscale_pool_queue_pages{queue=\"main\"} %llu\n",
	    (unsigned long long)s.probation_pages,
	    (unsigned long long)(s.resident_pages - s.probation_pages));
	metric(&o, "pool_probation_target_pages", "gauge",
	       "The size probation adapts to (5% to 50% of the pool; 0 with evict=clock).",
	       s.probation_target);
	metric(&o, "pool_ghost_pages", "gauge",
	       "Pages probation dropped that it still remembers (4-byte fingerprints): one "
	       "that comes back goes straight to main.", s.ghost_pages);
	metric(&o, "pool_scan_drops_total", "counter",
	       "Pages evicted from probation without a use after the one that brought them in "
	       "(what a scan loads and leaves).", s.probation_drops);
	metric(&o, "pool_promotions_total", "counter",
	       "Pages moved from probation to main because they were used again.", s.promotions);
	metric(&o, "pool_ghost_hits_total", "counter",
	       "Loads of pages the ghost remembered (each grows probation's target).",
	       s.ghost_hits);
	metric(&o, "pool_meta_loads_total", "counter",
	       "Pages read from the image that were tree nodes (inodes, directories, extents; "
	       "the rest of pool_loads is file data). 0 with evict=clock.", s.meta_loads);
	metric(&o, "pool_meta_spares_total", "counter",
	       "Times main's clock let an unused tree node stay one more round (metadata "
	       "first: a node goes after two rounds unused, file data after one).",
	       s.meta_spares);
	metric(&o, "pool_pinned_pages", "gauge",
	       "Frames held by read replies sent straight from the pool (the pin budget in use).",
	       s.pinned_pages);
	histogram(&o, "page_fault_seconds",
		  "Time to bring one page in from the image (read and checksum check).",
		  &lat.fault);
	histogram(&o, "evict_batch_seconds",
		  "Time of one eviction batch (clock selection, write-back, frame drop).",
		  &lat.evict);
	metric(&o, "evict_batch_pages_total", "counter",
	       "Pages dropped by the batches in virtuscale_evict_batch_seconds.", lat.evict_pages);
	metric(&o, "store_read_bytes_total", "counter", "Bytes read from the image.", s.read_bytes);
	metric(&o, "store_written_bytes_total", "counter", "Bytes written to the image.",
	       s.write_bytes);
	metric(&o, "checksum_errors_total", "counter", "Pages that failed their checksum.",
	       s.csum_errors);
	metric(&o, "node_copy_reads_total", "counter",
	       "Damaged tree nodes read from their copy (metadata dup) and rewritten.",
	       s.copy_reads);
	metric(&o, "node_copy_written_bytes_total", "counter",
	       "Bytes of copies of tree nodes written (metadata dup; in "
	       "virtuscale_store_written_bytes_total).",
	       s.copy_writes * 4096);
	metric(&o, "io_errors_total", "counter", "Failed reads and writes of the image.",
	       s.io_errors);
	metric(&o, "checkpoints_total", "counter",
	       "Checkpoints completed (fsync, timer, "
	       "dirty limit, control).",
	       s.checkpoints);
	metric(&o, "log_bytes_total", "counter", "Bytes written to the journal.", s.log_bytes);
	metric(&o, "log_flushes_total", "counter", "Syncs of the image.", s.log_flushes);
	metric(&o, "recovered_pages", "gauge",
	       "Pages replayed from the journal when this mount began.", s.recovered_pages);
	metric(&o, "dirty_limit_pages", "gauge", "Dirty pages that trigger a checkpoint.",
	       s.dirty_limit);
	metric(&o, "image_pages", "gauge", "Pages in the image.", s.page_count);
	metric(&o, "image_free_pages", "gauge", "Unallocated pages in the image.", s.free_pages);
	metric(&o, "inodes", "gauge", "Inodes in the filesystem.", atomic_load(&fs->inode_count));
	metric(&o, "open_files", "gauge", "Files open through the mount.",
	       atomic_load(&fs->open_files));
	metric(&o, "mounts_total", "counter", "Times this image has been mounted.", fs->mounts);
	metric(&o, "uptime_seconds", "gauge", "Seconds since the filesystem was mounted.",
	       (uint64_t)(now.tv_sec - fs->mount_time.tv_sec));
	/* How an unmount finds the process to wait for: the image is written
	 * back and released when it exits (tools/unmount.h). */
	metric(&o, "daemon_pid", "gauge",
	       "Process id of the daemon serving this mount (it writes everything back and "
	       "releases the image after the unmount, then exits).",
	       (uint64_t)getpid());
	put(&o,
	    "# HELP virtuscale_backend_info The pool's memory backend.\n"
	    "# TYPE virtuscale_backend_info gauge\n"
	    "virtuscale_backend_info{backend=\"%s\"} 1\n",
	    s.backend ? s.backend : "unknown");
	put(&o,
	    "# HELP virtuscale_cache_mode_info Who caches file data (mount option cache): "
	    "the kernel's page cache and the pool (both), the pool only (pool: files are "
	    "opened direct_io), or the kernel only (kernel: reads go around the pool).\n"
	    "# TYPE virtuscale_cache_mode_info gauge\n"
	    "virtuscale_cache_mode_info{mode=\"%s\"} 1\n",
	    fs_cache_mode_name(fs_cache_mode_get()));
	struct fs_wire_counters w;
	fs_wire_counters_get(&w);
	put(&o,
	    "# HELP virtuscale_fuse_reads_total Requests the daemon read from the kernel while "
	    "polling (mount option poll), by whether the reading thread was awake (it had "
	    "not slept since its last request) or had to be woken.\n"
	    "# TYPE virtuscale_fuse_reads_total counter\n"
	    "virtuscale_fuse_reads_total{thread=\"awake\"} %llu\n"
	    "virtuscale_fuse_reads_total{thread=\"woken\"} %llu\n",
	    (unsigned long long)w.reads_awake, (unsigned long long)w.reads_woken);
	put(&o,
	    "# HELP virtuscale_fuse_reader_handoffs_total Times the polling thread passed "
	    "the reading of requests to another before a wait: one the engine announced "
	    "(disk, checkpoint), or one the watchdog found.\n"
	    "# TYPE virtuscale_fuse_reader_handoffs_total counter\n"
	    "virtuscale_fuse_reader_handoffs_total{why=\"wait\"} %llu\n"
	    "virtuscale_fuse_reader_handoffs_total{why=\"watchdog\"} %llu\n",
	    (unsigned long long)w.handoffs_wait, (unsigned long long)w.handoffs_watchdog);
	put(&o,
	    "# HELP virtuscale_fuse_transport_info How requests reach the daemon: FUSE over "
	    "io_uring (mount option uring) or /dev/fuse.\n"
	    "# TYPE virtuscale_fuse_transport_info gauge\n"
	    "virtuscale_fuse_transport_info{transport=\"%s\"} 1\n",
	    fs_uring_transport());
	if (fs_uring_queue_count() > 0)
		put(&o, "# HELP virtuscale_fuse_uring_requests_total Requests served from the "
			"io_uring queue of each CPU.\n"
			"# TYPE virtuscale_fuse_uring_requests_total counter\n");
	for (unsigned q = 0; q < fs_uring_queue_count(); q++)
		put(&o, "virtuscale_fuse_uring_requests_total{queue=\"%u\"} %llu\n", q,
		    (unsigned long long)fs_uring_queue_requests(q));
	if (fs_uring_queue_count() > 0)
		put(&o,
		    "# HELP virtuscale_fuse_uring_fsync_handoffs_total Ring entries of answered "
		    "fsyncs handed to a spare thread while their checkpoint went on.\n"
		    "# TYPE virtuscale_fuse_uring_fsync_handoffs_total counter\n"
		    "virtuscale_fuse_uring_fsync_handoffs_total %llu\n",
		    (unsigned long long)fs_uring_handoffs());
	put(&o, "# HELP virtuscale_fuse_requests_total FUSE requests served, by operation.\n"
		"# TYPE virtuscale_fuse_requests_total counter\n");
	for (unsigned i = 0; i < FS_REQ_COUNT; i++)
		put(&o, "virtuscale_fuse_requests_total{op=\"%s\"} %llu\n", req_names[i],
		    (unsigned long long)atomic_load_explicit(&fs->requests[i],
							     memory_order_relaxed));
	if (o.full)
		return -ENOBUFS;
	return (ssize_t)o.len;
}

int fs_control(struct fs *fs, const char *cmd, size_t len)
{
	while (len > 0 && (cmd[len - 1] == '\n' || cmd[len - 1] == ' ' || cmd[len - 1] == '\t' ||
			   cmd[len - 1] == '\r' || cmd[len - 1] == 0))
		len--;
	if ((len == 5 && memcmp(cmd, "flush", 5) == 0) ||
	    (len == 10 && memcmp(cmd, "checkpoint", 10) == 0))
		return fs_sync(fs); /* both: a checkpoint through the journal */
	if (len == 5 && memcmp(cmd, "evict", 5) == 0) {
		int64_t n = bm_evict_all(fs->bm, true);
		return n < 0 ? (int)n : 0;
	}
	return -EINVAL;
}
