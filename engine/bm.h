/*
 * bm.h: the buffer manager. A vmcache-style pool of 4 KiB pages over an image.
 *
 * The image (a regular file or a block device) is an array of 4096-byte pages
 * numbered by page id (pid). The buffer manager reserves one virtual region as
 * large as the image, so page p always lives at bm_page(bm, p), and keeps at
 * most `pool_bytes / 4096` of them in memory. Pages come in on first use
 * (checksum verified), leave through batched clock eviction (dirty ones
 * written back together with io_uring first), and are reached only through
 * guards taken inside an operation.
 *
 * Image layout (page 0 first):
 *
 * *   +------------+---------+--------------+---------------+---------------+
 *   | superblock | journal | alloc bitmap | checksum table| pages ...     |
 *   +------------+---------+--------------+---------------+---------------+
 *
 * The bitmap and checksum table are held in memory while the image is open
 * and written back by bm_flush and bm_close. Checksums live in the table and
 * not inside each page so that a file-data page carries a full 4096 bytes.
 *
 * Crash safety (bm_config.journal): see bm_journal.c. In short: changes are
 * grouped in transactions (bm_txn_begin/end); pages changed since the last
 * checkpoint stay in the pool (no steal); a checkpoint, taken between
 * transactions, writes every changed page and the changed metadata first to
 * the journal, syncs, then writes them home and syncs again. After a crash
 * the image is as of the last checkpoint, replayed from the journal when the
 * crash hit the home writes. Without a journal, pages are written home
 * whenever eviction or bm_flush decides (fine for scratch data and benches).
 *
 * Operations and guards
 * ---------------------
 * All page access happens inside an operation started by bm_run(). An
 * operation is a function that may be run several times: when an optimistic
 * read turns out to have raced with a writer, when a page it reads is evicted
 * under it (SIGSEGV with the exmap backend), or when a lock it needs is busy,
 * bm_run releases every guard the operation holds and calls it again from the
 * top. The restart is a siglongjmp back into bm_run, so:
 *
 *   - the operation's own locals are re-derived on each run (they are, since
 *     the function is simply called again);
 *   - an operation must not allocate memory or take locks of its own between
 *     guards, nor change a page and then fix another one that might restart
 *     it: take every exclusive guard first, then modify;
 *   - side effects outside the pool (copying bytes out, counting) must be
 *     idempotent or done after the last validation.
 *
 *   O (optimistic)  bm_fix_o records the page version; reads are unprotected
 *                   and may see torn or zeroed bytes, so bound every index
 *                   by the page size and call bm_check() before trusting
 *                   (or acting on) anything read. Not in the held list.
 *   S (shared)      bm_fix_s; released by bm_unfix.
 *   X (exclusive)   bm_fix_x; bm_unfix bumps the version and marks the page
 *                   dirty. bm_upgrade_x turns O into X, or restarts.
 *
 * Errors inside an operation (a checksum mismatch while loading, an I/O
 * error, no space, no frame for BM_FRAME_WAIT_MS) end it through bm_fail():
 * held guards are released and bm_run returns the negative errno. Nothing
 * is retried.
 *
 * Waits: a fix may wait for a latch (bounded spins, then a restart when the
 * operation holds others) and for a frame (bm_load.c); it never waits for a
 * checkpoint. The whole lock order is in lockorder.h.
 *
 * Thread safety: everything here may be called from any number of threads.
 * No global lock is taken on the hit path of bm_fix_*.
 */
#ifndef VS_ENGINE_BM_H
#define VS_ENGINE_BM_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/lat_hist.h"
#include "engine/page_state.h"

#define BM_PAGE_SIZE  4096u
#define BM_PAGE_SHIFT 12
#define BM_MAX_HELD   16  /* S/X guards one operation may hold at once */
#define BM_SB_SLOTS   32  /* u64 slots in the superblock for the layers above */
#define BM_PID_NONE   UINT64_MAX

/* The format version this build reads and writes. 2: the checksum table
 * carries a seal per page and is written twice. */
#define BM_FORMAT_VERSION 2

struct bm;
struct bm_thread;

enum bm_backend_mode {
	BM_BACKEND_AUTO = 0, /* exmap when /dev/exmap works, else plain */
	BM_BACKEND_PLAIN,    /* anonymous memory, pread, madvise(MADV_DONTNEED) */
	BM_BACKEND_EXMAP,    /* /dev/exmap or fail */
};

/* Eviction policy (engine/bm_evict.c, "Policies"). */
enum bm_evict_policy {
	BM_EVICT_DEFAULT = 0, /* the environment's VS_EVICT (clock|s3clock) if
			       * set, else BM_EVICT_S3CLOCK */
	BM_EVICT_CLOCK,       /* one clock over the resident set (vmcache's) */
	BM_EVICT_S3CLOCK,     /* a probation FIFO in front of the clock, with a
			       * ghost: one pass over cold data leaves the
			       * pages used twice alone (S3-FIFO's split) */
};

struct bm_config {
	const char *path;          /* image file or block device */
	uint64_t pool_bytes;       /* physical pool; rounded down to pages; >= 1 MiB */
	enum bm_backend_mode backend;
	unsigned evict_batch;      /* pages per eviction batch; 0 = default (64) */
	int evict_cluster;         /* neighbours an eviction takes along with each
				    * victim, per side: dirty ones written in the
				    * same run, clean ones dropped with it (bm.c,
				    * clustering); 0 = default (32), negative = none */
	bool read_only;            /* open without writing anything, ever */
	bool no_direct;            /* do not try O_DIRECT on the image */
	bool journal;              /* transactions and atomic checkpoints (no steal) */
	unsigned checkpoint_ms;    /* journal: checkpoint at least this often when
				    * anything changed; 0 = default (5000) */
	unsigned frame_wait_ms;    /* how long a page load waits for a frame when
				    * nothing can be evicted before it fails with
				    * -ENOMEM; 0 = default (BM_FRAME_WAIT_MS) */
	struct bm_fault *fault;    /* tests: fault injection (bm_fault.h), or NULL */
	bool bitmap_repair;        /* fsck: open an image whose allocation bitmap
				    * says a metadata page is free (it is set in
				    * memory, with a warning) so that the tree
				    * walk can rebuild the rest; without it such
				    * an image is refused (-EUCLEAN) */
	const char *evict_trace;   /* append every hit, load and eviction to this
				    * file (bench/evsim/evsim.h's binary format,
				    * for bench/evsim), or NULL: then the
				    * environment's VS_EVICT_TRACE if set */
	enum bm_evict_policy evict_policy; /* which pages eviction takes first */
	bool (*is_meta)(const void *page); /* s3clock: metadata first. A page read
				    * from the image for which this says true
				    * (the file system passes bt_page_is_node),
				    * and a page from bm_alloc_node, gets a
				    * second round of the main clock before it
				    * goes. NULL: all pages alike. The
				    * environment's VS_EVICT_META=off turns it
				    * off (for measuring) */
};

/* Format @path as an empty image of @size_bytes (a regular file is created or
 * resized to that size; for a block device 0 means the whole device).
 * @flags: BM_FORMAT_FORCE, or it fails with -EEXIST when the path already
 * holds an image; BM_FORMAT_SINGLE, or tree nodes get copies (bm_alloc_node).
 * Errors: -EINVAL (size too small: fewer than 64 pages), -errno of I/O. */
#define BM_FORMAT_FORCE  1u /* format over an existing image */
#define BM_FORMAT_SINGLE 2u /* tree nodes without copies (bm_dup.c) */
int bm_format(const char *path, uint64_t size_bytes, unsigned flags);

/* Open an image. Errors: -ENOENT, -EACCES (the path); -EBUSY (another
 * process has held the image for BM_LOCK_WAIT_MS: images are locked with
 * flock, and a lock let go within that time is taken); -EUCLEAN (not a
 * VirtuScale image, or its superblock is damaged); -EPROTONOSUPPORT (an image
 * of another format version); -ENODEV (exmap requested but unavailable);
 * -ENOMEM (pool or reservation). A message saying which is logged. */
#define BM_LOCK_WAIT_MS 1000
int bm_open(const struct bm_config *cfg, struct bm **ret_bm);

/* The embedder's hook for "the calling thread is about to wait": called
 * before a synchronous read or write of the image, before a checkpoint,
 * and before waiting for journal room or for the transaction lock. A FUSE
 * daemon hands the reading of requests to another thread there
 * (fs/wire.c). NULL, the default: nothing. Process-wide. */
void bm_set_wait_hook(void (*fn)(void));

/* Write every dirty page, the allocator bitmap, the checksum table and the
 * superblock (marked clean), then release everything. Accepts NULL.
 * Returns the first write error, after releasing everything anyway. */
int bm_close(struct bm *bm);

/* Write back every dirty page and the allocator and checksum metadata, then
 * fdatasync the image. Pages stay resident. */
int bm_flush(struct bm *bm);

/* Journal mode: a transaction groups changes that must reach the image all
 * together or not at all. Every operation that changes pages runs between
 * bm_txn_begin and bm_txn_end. Transactions nest within one thread (the
 * inner ones join the outer one). bm_txn_begin first runs a checkpoint when
 * too many pages are dirty. When that checkpoint fails (the disk fails) the
 * transaction still begins, but may only read: every exclusive fix in it
 * (bm_fix_x, bm_fix_x_new, bm_upgrade_x) ends its operation with the
 * checkpoint's error (-EIO, -ENOSPC), before anything was changed; the next
 * transaction tries the checkpoint again. A transaction should change at
 * most BM_TXN_PAGES pages: each running one holds that much room in the
 * next checkpoint, and bm_txn_begin waits for others to end when the
 * journal could not take one more. Without a journal both are no-ops. */
#define BM_TXN_PAGES 320 /* 1 MiB of data (the largest FUSE write) and records */
void bm_txn_begin(struct bm *bm);
void bm_txn_end(struct bm *bm);

/* Make every transaction that ended before this call durable, and its
 * pages clean (written home). Concurrent callers share checkpoints (group
 * commit): a caller that arrives while one runs waits for the next, and
 * returns when that one is over. Without a journal: bm_flush.
 * Must not be called inside a transaction (-EDEADLK).
 * Errors: -EIO (and the first write error) when a write or sync failed; the
 * image is then as of the previous checkpoint, or, when only the home
 * writes failed, the journal holds this one and recovery brings it home. */
int bm_checkpoint(struct bm *bm);

/* A caller of bm_checkpoint_notify, told once when its changes are
 * durable (@fn gets 0) or cannot be made so (a negative errno). */
struct bm_durable {
	void (*fn)(struct bm_durable *d, int r);
	bool told; /* false before the call; the engine sets it */
};

/* bm_checkpoint that tells @d as soon as the caller's changes are durable:
 * at the commit sync of the checkpoint that covers them, before its home
 * writes and the second sync. When another caller runs it, this one
 * returns then; when this one runs it, it returns when it is over, with
 * its result. @d is told exactly once before the return, so a
 * request can be answered from @d->fn while the thread goes on with the
 * home writes. An error after the commit reaches only the return value
 * (the changes are durable: the journal holds them). */
int bm_checkpoint_notify(struct bm *bm, struct bm_durable *d);

/* Callers of bm_checkpoint waiting for a running checkpoint to end. */
unsigned bm_checkpoint_waiters(struct bm *bm);

/* Journal mode: were pages replayed from the journal when the image was
 * opened? (The image had been left in the middle of a checkpoint.) */
uint64_t bm_recovered_pages(const struct bm *bm);

/* Read past the pool. Of the @n pages @pids, each one that is evicted
 * (not resident, in the data area) is read from the image into
 * @buf + i * BM_PAGE_SIZE and checked against its checksum, and got[i] set;
 * the others (resident, or loaded while this read) are left to the caller,
 * to be fixed as usual. Nothing enters the pool: this is for streaming
 * reads of more data than the pool holds, which would otherwise evict a
 * page for every page they load. Runs of consecutive pids take one read.
 * Counted as loads (and read_through). @n <= BM_READ_THROUGH_MAX; @buf
 * page-aligned. Returns 0, -EIO (a read failed) or -EUCLEAN (a checksum
 * mismatch, logged with the pid and offset). */
#define BM_READ_THROUGH_MAX 512
int bm_read_through(struct bm *bm, const uint64_t *pids, unsigned n, uint8_t *buf, bool *got);

/* Write past the pool: of the @n pages @pids, each one that was never
 * written (no checksum), is not resident and, with the journal, holds
 * nothing a crash can bring back (free in the last checkpoint) gets the
 * whole page at @buf + i * BM_PAGE_SIZE written to its home address and
 * its checksum set, and done[i] set; it stays out of the pool (what
 * eviction would have done with it anyway, after mapping a frame for it).
 * The others are left to the caller. Runs of consecutive pids take one
 * write. For streaming writes of new data larger than the pool. @buf
 * page-aligned, @n <= BM_READ_THROUGH_MAX. Returns 0, or the first write
 * error: the pages of that run and those after it are not done (they keep
 * no checksum and read as zeros), so the caller can write them the usual
 * way. */
int bm_write_through(struct bm *bm, const uint64_t *pids, unsigned n, const uint8_t *buf,
		     bool *done);

/* The pin budget. A caller that will hold more than BM_MAX_HELD pages at
 * once, across nested operations (a read reply sent straight from the
 * pool), first takes that many from a budget of an eighth of the pool, so
 * that such holds can never take every frame (bm_load.c); when the budget
 * is spent it does without (copies). Never waits. */
bool bm_pin_try(struct bm *bm, unsigned n);
void bm_pin_release(struct bm *bm, unsigned n);

/* How long a page load waits for a frame when nothing can be evicted
 * (every frame held or dirty) before it fails with -ENOMEM, by default
 * (bm_config.frame_wait_ms). */
#define BM_FRAME_WAIT_MS 20000

/* Pages the pool holds at most. */
uint64_t bm_pool_pages(const struct bm *bm);

/* Drop every clean, unlocked resident page (dirty ones are written first when
 * @write_dirty). Returns the number of pages dropped. */
int64_t bm_evict_all(struct bm *bm, bool write_dirty);

/* Superblock slots for the layers above (tree roots, counters). Stored by
 * bm_flush and bm_close. Slot values of a fresh image are 0. */
uint64_t bm_sb_get(struct bm *bm, unsigned slot);
void bm_sb_set(struct bm *bm, unsigned slot, uint64_t value);

/* Was the image closed cleanly the last time it was open? */
bool bm_was_clean(const struct bm *bm);

/* The free page count the superblock recorded when it was last written (for
 * fsck: the allocator recounts the bitmap at open and keeps its own count, so
 * a difference means the bitmap or the superblock was changed behind the
 * engine's back). An image opened for writing has rewritten it already. */
uint64_t bm_sb_free_recorded(struct bm *bm);

/* ------------------------------------------------------------------ */
/* Space                                                              */

/* Allocate @n contiguous pages near @hint (BM_PID_NONE: anywhere). The pages
 * read as zeros on their first fix. Errors: -ENOSPC. */
int bm_alloc(struct bm *bm, uint64_t n, uint64_t hint, uint64_t *ret_first);

/* From now on, bm_alloc in the calling thread fails with -ENOSPC rather than
 * leave fewer than @pages pages free (0, the default: it may take the last
 * one). The layer above sets it for each request, so that reserves (room for
 * metadata when data has filled the image, room for root) stay for the
 * requests allowed to spend them. Returns the previous floor. */
uint64_t bm_alloc_floor(struct bm *bm, uint64_t pages);

/* Unallocated pages right now (one atomic load: cheaper than bm_stats_get). */
uint64_t bm_free_pages(struct bm *bm);

/* Pages bm_alloc would give the calling thread right now (above its floor). */
uint64_t bm_alloc_room(struct bm *bm);

/* Return @n pages starting at @first. The caller guarantees nothing reachable
 * refers to them any more; optimistic readers still looking at them fail
 * their next bm_check. Must not be called while holding a guard on them. */
void bm_free(struct bm *bm, uint64_t first, uint64_t n);

/* Metadata pages the bitmap on disk said were free when the image was
 * opened (set in memory with bm_config.bitmap_repair); the first in
 * *ret_first. For fsck. */
uint64_t bm_bitmap_unmarked(struct bm *bm, uint64_t *ret_first);

/* Is @pid allocated? (For checks and tools.) */
bool bm_is_allocated(struct bm *bm, uint64_t pid);

/* A page for a tree node or an overflow value: on an image formatted with
 * metadata copies (the default), with a copy in the page after it, written
 * with it and read when it is damaged (engine/bm_dup.c); bm_free frees the
 * copy along. Errors as bm_alloc. */
int bm_alloc_node(struct bm *bm, uint64_t *ret_pid);

/* Does the image keep copies of tree nodes? Is @pid such a copy (allocated,
 * and referenced only through the page before it)? */
bool bm_metadata_dup(const struct bm *bm);
bool bm_is_copy(struct bm *bm, uint64_t pid);

/* fsck, on an idle pool: compare every node that has a copy with its copy,
 * both against the node's checksum. Returns how many pairs have one good
 * and one damaged page, or a negative errno (a pair damaged in both is not
 * counted: loading the node fails, and says so); with @repair on a writable
 * pool, the good one is written over the bad one, counted in *ret_fixed. */
int64_t bm_dup_scrub(struct bm *bm, bool repair, uint64_t *ret_fixed);

/* The checksum table's damage found at open: returns how many of its pages
 * were damaged in both copies (the checksums of the allocated pages they
 * cover are lost: those pages fail to load with -EUCLEAN); *ret_fixed gets
 * how many were read from the copy instead (nothing lost). */
uint64_t bm_csum_table_damage(struct bm *bm, uint64_t *ret_fixed);

/* Read the checksum table's copy (which an open reads only where the table
 * itself is damaged) and compare it with the table: returns how many copy
 * pages are damaged or differ, or a negative errno. They are written again
 * with the next checkpoint of a writable open. For fsck. */
int64_t bm_csum_table_scrub(struct bm *bm);

/* Is @pid's checksum lost with its checksum-table page? */
bool bm_csum_unknown(struct bm *bm, uint64_t pid);

/* fsck: page @pid's bytes as the image holds them, unverified, into @buf
 * (BM_PAGE_SIZE bytes). 0 or a negative errno. */
int bm_read_raw(struct bm *bm, uint64_t pid, void *buf);

/* fsck: take @page, the bytes bm_read_raw gave for @pid, as that page's
 * content, because the caller has checked them by other means (a tree node
 * that is sound): its checksum becomes theirs, written with the next
 * checkpoint. Only for a page whose checksum is lost (bm_csum_unknown) and
 * that is not resident; -EINVAL otherwise. */
int bm_csum_adopt(struct bm *bm, uint64_t pid, const void *page);

/* ------------------------------------------------------------------ */
/* Operations and guards                                              */

enum bm_mode { BM_O = 1, BM_S = 2, BM_X = 3 };

struct bm_guard {
	uint64_t pid;
	uint64_t version; /* the state word seen at fix time (O guards) */
	enum bm_mode mode;
	void *page;
};

struct bm_op {
	sigjmp_buf env;
	struct bm *bm;
	struct bm_thread *thread;
	struct bm_op *outer; /* the operation this one is nested in */
	int nheld;
	struct {
		uint64_t pid;
		enum bm_mode mode;
	} held[BM_MAX_HELD];
	int err;          /* set by bm_fail */
	unsigned restarts; /* runs of this operation so far, minus one */
	uint64_t frame_wait_ns; /* when it began to wait for a frame, or 0 */
};

typedef int (*bm_op_fn)(struct bm_op *op, void *arg);

/* Run @fn(op, @arg) until it returns without a restart. Returns what @fn
 * returned, or the error given to bm_fail. Operations may nest (an inner
 * bm_run restarts only itself), but an inner operation must not wait for a
 * page the outer one holds. */
int bm_run(struct bm *bm, bm_op_fn fn, void *arg);

/* Optimistic fix: wait while the page is locked exclusively, load it if
 * evicted, record its version. Returns the page address. */
const void *bm_fix_o(struct bm_op *op, uint64_t pid, struct bm_guard *g);

/* Restart the operation unless @g's page is unchanged since bm_fix_o. */
void bm_check(struct bm_op *op, const struct bm_guard *g);

/* Shared / exclusive fix; waits for conflicting holders. */
const void *bm_fix_s(struct bm_op *op, uint64_t pid, struct bm_guard *g);
void *bm_fix_x(struct bm_op *op, uint64_t pid, struct bm_guard *g);

/* Exclusive fix of a page the caller will overwrite in full: an evicted page
 * is not read from the image (it starts as zeros). */
void *bm_fix_x_new(struct bm_op *op, uint64_t pid, struct bm_guard *g);

/* Bring the evicted pages among @pids[0..n) in together, ahead of the fixes
 * that will want them: with @fresh (pages about to be written) only those
 * never written (no checksum: their content is zeros, allocated just now or
 * by an earlier fallocate), without reading; else from the image, one read
 * per run of consecutive pids and each page checked against its checksum. A
 * hint and nothing more: a page someone holds, or one that fails to load,
 * is left for its fix to deal with (and report); so is a "fresh" page the
 * journal will carry (reused since the last checkpoint), whose fix checks
 * the dirty limit first. Call it outside any bm_op. */
void bm_prefetch(struct bm *bm, const uint64_t *pids, unsigned n, bool fresh);

/* O -> S and O -> X. Restart the operation when the page changed. */
void bm_upgrade_s(struct bm_op *op, struct bm_guard *g);
void bm_upgrade_x(struct bm_op *op, struct bm_guard *g);

/* Release: O validates (restart on conflict), S unlocks, X unlocks with a
 * version bump and marks the page dirty. */
void bm_unfix(struct bm_op *op, struct bm_guard *g);

/* X release of a page that was not modified: no dirty mark. */
void bm_unfix_clean(struct bm_op *op, struct bm_guard *g);

/* Release everything and run the operation again. */
_Noreturn void bm_restart(struct bm_op *op);

/* Release everything and end the operation with @err (negative errno). */
_Noreturn void bm_fail(struct bm_op *op, int err);

/* Address of page @pid in the pool (valid for the life of the bm). */
void *bm_page(struct bm *bm, uint64_t pid);

/* ------------------------------------------------------------------ */
/* Introspection                                                      */

struct bm_stats {
	uint64_t page_count;     /* pages in the image */
	uint64_t capacity_pages; /* pool size in pages */
	uint64_t resident_pages;
	uint64_t dirty_pages;
	uint64_t free_pages;     /* unallocated pages in the image */
	uint64_t hits;           /* fixes that found the page resident */
	uint64_t loads;          /* fixes that read the page from the image */
	uint64_t zero_loads;     /* fixes of never-written pages (no read) */
	uint64_t read_through;   /* pages read past the pool (bm_read_through) */
	uint64_t write_through;  /* pages written past the pool (bm_write_through) */
	uint64_t evictions;      /* pages dropped from the pool */
	uint64_t evict_batches;
	uint64_t writebacks;     /* pages written back */
	uint64_t cluster_writebacks; /* of those, neighbours written along with an
				      * eviction's dirty page (still resident) */
	uint64_t read_bytes;     /* bytes read from the image */
	uint64_t write_bytes;    /* bytes written to the image */
	uint64_t csum_errors;
	uint64_t io_errors;
	uint64_t restarts;       /* operation restarts, all causes */
	uint64_t segv_restarts;  /* restarts caused by a fault in the pool */
	uint64_t copy_reads;     /* damaged nodes read from their copy (bm_dup.c) */
	uint64_t copy_writes;    /* pages written as copies of nodes (in write_bytes) */
	uint64_t checkpoints;    /* journal: checkpoints completed */
	uint64_t log_bytes;      /* journal: bytes written to the journal */
	uint64_t log_flushes;    /* journal: syncs of the image */
	uint64_t recovered_pages; /* journal: pages replayed at open */
	uint64_t dirty_limit;    /* journal: dirty pages that trigger a checkpoint */
	uint64_t frame_waits;    /* page loads that found nothing to evict and slept */
	uint64_t frame_fails;    /* ... and gave up after BM_FRAME_WAIT_MS (-ENOMEM) */
	uint64_t pinned_pages;   /* pin budget in use (bm_pin_try) */
	const char *backend;     /* "madvise" or "exmap" */
	/* Eviction policy (bm_evict.c). With s3clock: pages in probation
	 * now (the main queue has the rest of resident_pages) and its adapted
	 * target; fingerprints in the ghost; pages promoted from probation to
	 * main; loads the ghost knew (sent straight to main); pages dropped
	 * from probation unused since their first use (what a scan brings
	 * in). Metadata first (bm_config.is_meta): pages read from the image
	 * that it called metadata, and the rounds the main clock let a
	 * metadata page stay that it would have taken. With clock all are 0. */
	const char *evict_policy; /* "clock" or "s3clock" */
	uint64_t probation_pages, probation_target, ghost_pages;
	uint64_t promotions, ghost_hits, probation_drops;
	uint64_t meta_loads, meta_spares;
};

void bm_stats_get(struct bm *bm, struct bm_stats *ret);

/* Latency of the pool's two slow paths since bm_open (lat_hist.h):
 *
 *   fault  one page brought in from the image: from the moment it has a
 *          frame to the moment it is usable (the read and the checksum
 *          check). Only pages read from the image count: not never-written
 *          pages (zero_loads), not bm_fix_x_new, not failed loads. The frame
 *          reservation before it (and the eviction batch it may run) is
 *          not in it; that shows in `evict`. (With exmap, an eviction to
 *          retry a read the backend refused for want of frames is.)
 *   evict  one eviction batch, end to end: clock selection, write-back of
 *          the dirty candidates, dropping the frames. Batches that found
 *          nothing to drop count too (their pages are 0). bm_evict_all and
 *          bm_free are not eviction batches.
 *
 * Recording costs two clock readings per fault or batch and a few relaxed
 * atomic adds; hits cost nothing. */
struct bm_latency {
	struct lat_snap fault;
	struct lat_snap evict;
	uint64_t evict_pages; /* pages dropped by the batches in `evict` */
};

void bm_latency_get(struct bm *bm, struct bm_latency *ret);

/* Is @pid resident right now? (Racy by nature; for residency reports.) */
bool bm_is_resident(struct bm *bm, uint64_t pid);

uint64_t bm_page_count(const struct bm *bm);

/* First pid that bm_alloc may hand out. */
uint64_t bm_first_data_pid(const struct bm *bm);

/* Parse a size such as "4096", "64M", "2G", "0.25GiB", "1.5g". Returns 0 or
 * -EINVAL. Suffixes K, M, G, T (powers of 1024), optional "iB" or "B". */
int bm_parse_size(const char *s, uint64_t *ret_bytes);

#endif
