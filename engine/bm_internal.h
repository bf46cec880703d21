/*
 * bm_internal.h: structures shared by the buffer manager's files (bm.c, the
 * I/O and metadata code in bm_meta.c). Nothing outside engine/ includes it.
 */
#ifndef VS_ENGINE_BM_INTERNAL_H
#define VS_ENGINE_BM_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "engine/bm.h"
#include "exmap/mem.h"

/*
 * Superblock (pid 0). Integers little-endian (the image is not meant to move
 * between machines of different byte order; the magic would tell).
 *
 *   OFFSET SIZE MEANING
 *        0    8 magic "VSCALEFS"
 *        8    4 format version (BM_FORMAT_VERSION)
 *       12    4 page size (4096)
 *       16    8 page count: pages in the image
 *       24    8 first pid of the allocation bitmap
 *       32    8 pages of the allocation bitmap (1 bit per page, 1 = in use)
 *       40    8 first pid of the checksum table
 *       48    8 pages of the checksum table (see below)
 *       56    8 first data pid: first page bm_alloc may hand out
 *       64    8 free pages when the superblock was written
 *       72    8 mount count: bumped at every open for writing
 *       80    4 flags: bit 0 = closed cleanly, bit 1 = tree nodes have
 *                copies (metadata dup, bm_dup.c)
 *       84    4 reserved, zero
 *       88    8 first pid of the journal (always 1)
 *       96    8 pages of the journal
 *      104    8 sequence number of the last checkpoint written home
 *      112    8 first pid of the checksum table's copy (as many pages)
 *      120    8 reserved, zero
 *      128  256 slots: 32 u64 values for the layers above (bm_sb_get)
 *      384 3704 reserved, zero
 *     4088    8 XXH3-64 of bytes 0..4087
 *
 * Checksum table: page i holds the entries of pids 511*i .. 511*i+510, 8
 * bytes each, and at offset 4088 the XXH3-64 of its first 4088 bytes (its
 * seal), so that damage to the table is seen as such and not as damage to
 * the pages it covers. The table is written twice, at cs_start and at
 * cs2_start, in the same checkpoint (so through the journal: after a crash
 * both are replayed); a page whose seal fails is read from its copy.
 *
 * Entry for pid p: 0 means the page was never written (or was freed) and
 * reads as zeros without any I/O; BM_CSUM_COPY means the page holds the
 * copy of page p - 1 (bm_dup.c) and is checked with that page's entry;
 * BM_CSUM_UNKNOWN means the entry was lost
 * (both copies of its table page damaged) and the page cannot be verified:
 * it fails to load, as a mismatch does, until fsck re-verifies it;
 * otherwise the XXH3-64 of the page's 4096 bytes, with 0, BM_CSUM_COPY
 * and BM_CSUM_UNKNOWN mapped to other values (bm_page_csum).
 */
#define BM_MAGIC        "VSCALEFS"
#define SB_OFF_VERSION  8
#define SB_OFF_PAGESIZE 12
#define SB_OFF_PAGES    16
#define SB_OFF_BMSTART  24
#define SB_OFF_BMPAGES  32
#define SB_OFF_CSSTART  40
#define SB_OFF_CSPAGES  48
#define SB_OFF_DATA     56
#define SB_OFF_FREE     64
#define SB_OFF_MOUNTS   72
#define SB_OFF_FLAGS    80
#define SB_OFF_JRSTART  88
#define SB_OFF_JRPAGES  96
#define SB_OFF_APPLIED  104
#define SB_OFF_CS2START 112
#define SB_OFF_SLOTS    128
#define SB_OFF_CSUM     4088
#define SB_FLAG_CLEAN   1u
#define SB_FLAG_DUP     2u /* tree nodes have a copy (bm_dup.c) */

#define BM_BATCH_MAX     256
#define BM_MAX_THREADS   128 /* interfaces asked of the exmap backend */
#define BM_PIDS_PER_CS   (BM_PAGE_SIZE / 8 - 1) /* and the seal */
#define BM_CS_SEAL_OFF   (BM_PAGE_SIZE - 8)
#define BM_CSUM_UNKNOWN  UINT64_MAX
#define BM_CSUM_COPY     (UINT64_MAX - 1) /* the page is the copy of the one
					   * before it (bm_dup.c) */
#define BM_PIDS_PER_BMP  (BM_PAGE_SIZE * 8)

/* Per-thread counters. Each is written by its own thread only, read by
 * bm_stats_get from any thread: relaxed atomics, no lock prefix needed. */
struct bm_counters {
	_Atomic uint64_t hits, loads, zero_loads, evictions, evict_batches, writebacks,
		cluster_writebacks;
	_Atomic uint64_t read_through, write_through;
	_Atomic uint64_t read_bytes, write_bytes, csum_errors, io_errors, restarts,
		segv_restarts, copy_reads, copy_writes;
};

#define BM_COUNT(t, field, n)                                                                  \
	atomic_store_explicit(&(t)->c.field,                                                   \
			      atomic_load_explicit(&(t)->c.field, memory_order_relaxed) + (n),  \
			      memory_order_relaxed)

struct bm_thread {
	struct bm *bm;
	struct bm_thread *next, *prev; /* bm->threads, under threads_mu */
	struct bm_counters c;
	int iface;       /* backend interface */
	bool ring_ok;    /* ring set up (lazily, on first write-back) */
	bool ring_failed;
	struct io_uring ring;
	uint8_t *staging; /* bm->wb_max aligned pages for write-back */
	uint64_t alloc_floor; /* bm_alloc leaves this many pages free */
	uint64_t *trace;      /* eviction trace records not yet written (bm_trace_note) */
	unsigned trace_n;
	/* s3clock (bm_evict.c): pages this thread loaded since its last
	 * outermost operation ended, marked then (bm_s3_young_mark). */
	unsigned young_n;
	unsigned s3_ops; /* outermost operations ended, for s3clock's clock */
	uint64_t young[BM_BATCH_MAX];
};

/* The set of resident pids, an open-addressing hash table (vmcache's
 * ResidentPageSet): lock-free insert and remove, and a clock hand that
 * hands out batches of slots to evicting threads. */
#define RSET_EMPTY UINT64_MAX
#define RSET_TOMB  (UINT64_MAX - 1)

struct bm_rset {
	_Atomic uint64_t *slots;
	uint64_t mask;
	_Atomic uint64_t clock;
};

struct bm {
	int fd;
	bool read_only;
	bool bitmap_repair; /* bm_config */
	uint64_t meta_unmarked, meta_unmarked_first; /* bm_bitmap_unmarked */
	bool was_clean;
	uint64_t id; /* unique per open, for the thread-context cache */
	char *path;
	uint64_t page_count;
	int trace_fd;      /* eviction trace (bm_config.evict_trace), or -1: read by
			    * every fix, so it sits with what a fix reads anyway */
	unsigned trace_recs; /* records a thread buffers: BM_TRACE_RECS, or 1
			      * with VS_EVICT_TRACE_SYNC=1 */
	struct bm_s3 *s3;  /* the s3clock policy's queues (bm_evict.c), or NULL
			    * for the plain clock: read by every load */
	uint64_t capacity; /* frames */
	unsigned batch;
	unsigned cluster;  /* eviction clustering: neighbours per side, 0 = off */
	unsigned wb_max;   /* pages one eviction batch may write: the staging area */
	struct mem *mem;
	uint8_t *base;
	ps_word *state;          /* page_count words */
	_Atomic uint64_t *csum;  /* checksum table, one entry per pid (the seals
				  * are made at write time, bm_cs_page_fill) */
	uint64_t cs_start, cs_pages;
	uint64_t cs2_start;      /* the table's copy, cs_pages pages */
	uint64_t cs_fixed;       /* table pages read from the copy at open */
	uint64_t cs_lost, cs_lost_first; /* ... damaged in both copies */
	bool dup;                /* tree nodes have copies (SB_FLAG_DUP) */
	_Atomic unsigned copy_logged; /* copies read, as far as the log says */
	uint64_t *replayed;      /* pids recovery wrote home before the table was
				  * loaded: their copies follow (bm_dup.c) */
	uint64_t replayed_n, replayed_cap;
	bool replayed_lost;
	uint64_t *bitmap;        /* allocation bitmap, page aligned */
	/* The allocation bitmap of the last completed checkpoint, OR'ed with
	 * that of the checkpoint in flight (bm_journal.c): a page whose bit is
	 * clear is free in every state a crash can bring back, so its home may
	 * be written at any time (bm_home_free). Words read and written with
	 * relaxed atomics. */
	_Atomic uint64_t *cbitmap;
	uint64_t bmp_start, bmp_pages;
	uint64_t first_data;
	_Atomic uint8_t *cs_dirty;  /* per checksum-table page: needs writing */
	uint8_t *bmp_dirty;         /* per bitmap page, under alloc_mu */
	struct bm_rset rset;
	_Atomic uint64_t resident;
	_Atomic int64_t dirty;

	pthread_mutex_t alloc_mu;
	_Atomic uint64_t free_pages; /* changed under alloc_mu; read anywhere */
	uint64_t alloc_next;  /* next-fit hint, under alloc_mu */

	uint8_t *sb;          /* superblock image, page aligned, under sb_mu */
	pthread_mutex_t sb_mu;

	pthread_key_t key;
	pthread_mutex_t threads_mu;
	struct bm_thread *threads;
	struct bm_counters retired; /* counters of threads that have exited */
	pthread_mutex_t flush_mu;   /* one bm_flush at a time */

	/* journal (bm_journal.c) */
	bool journal;
	uint64_t jr_start, jr_pages;
	uint64_t dirty_limit;        /* dirty pages that trigger a checkpoint */
	pthread_rwlock_t txn_lock;   /* transactions shared, checkpoint exclusive */
	pthread_mutex_t ckpt_mu;     /* guards ckpt_busy and the waits */
	pthread_cond_t ckpt_cv;      /* ckpt_busy cleared or ckpt_durable moved */
	bool ckpt_busy;              /* a checkpoint runs: one at a time */
	_Atomic unsigned ckpt_waiters; /* callers waiting for it (ckpt_lead) */
	struct bm_durable *ckpt_durable_cb; /* the running one's caller, told at
					     * the commit; ckpt_busy's holder's */
	_Atomic uint64_t ckpt_seq;   /* last checkpoint started */
	_Atomic uint64_t ckpt_durable; /* last checkpoint committed (journal synced) */
	_Atomic uint64_t ckpt_done;  /* last checkpoint completed (home synced) */
	uint64_t jr_room;            /* dirty pages a checkpoint can take */
	_Atomic uint64_t room_held;  /* room held by running transactions */
	_Atomic unsigned room_waiters;
	pthread_mutex_t room_mu;     /* waiting for room (bm_txn_begin) */
	pthread_cond_t room_cv;
	bool jr_unapplied;           /* the journal holds a committed checkpoint whose
				      * home writes failed; the running
				      * checkpoint's (ckpt_busy) */
	uint64_t jr_unapplied_seq;
	uint64_t jr_home_seq;        /* open: the journal found already home, or 0 */
	unsigned ckpt_ms;
	bool ckpt_thread_on, ckpt_stop;
	pthread_t ckpt_thread;
	pthread_mutex_t ckpt_wait_mu;
	pthread_cond_t ckpt_wait_cv;
	_Atomic uint64_t n_checkpoints, log_bytes, log_flushes;
	uint64_t recovered_pages;

	_Atomic bool meta_dirty;     /* superblock slots, or the checksums of pages
				      * eviction wrote home, changed since the
				      * checkpoint */
	_Atomic bool dirty_drift_logged; /* bm_journal.c: the count was off once */
	_Atomic bool ckpt_kicked;     /* the checkpointer was asked to run now
				      * (bm_checkpoint_kick) */
	/* Frames (bm_load.c). */
	_Atomic uint64_t pinned;     /* pin budget in use (bm_pin_try) */
	uint64_t pin_max;
	unsigned frame_wait_ms;
	_Atomic uint64_t frame_waits;   /* frame reservations that had to sleep */
	_Atomic uint64_t frame_fails;   /* ... and gave up (-ENOMEM) */
	_Atomic bool frame_fail_logged;
	/* Journal: the pages that turned dirty since the last checkpoint took
	 * the list (unlock_x adds them; a page may appear twice, or be clean
	 * again by then), so that a checkpoint visits those and not every
	 * frame of the pool. */
	pthread_mutex_t dl_mu;
	uint64_t *dl;
	size_t dl_n, dl_cap;
	bool dl_lost;                /* out of memory once: walk the pool */
	struct bm_fault *fault;
	int fault_fd;                /* plain descriptor for reading undo bytes */

	/* Latency (bm_latency_get), written by every faulting and evicting
	 * thread: kept off the cache lines of the fields above. */
	char lat_pad[64];
	struct lat_hist fault_lat, evict_lat;
	_Atomic uint64_t evict_lat_pages;
};

/* bm_set_wait_hook's function: call before anything that may block. */
extern _Atomic(void (*)(void)) bm_wait_hook;
static inline void bm_about_to_wait(void)
{
	void (*fn)(void) = atomic_load_explicit(&bm_wait_hook, memory_order_relaxed);
	if (fn)
		fn();
}

/* May page @pid be written home before the next checkpoint commits? (It is
 * free in the committed state and in the one being committed.) */
static inline bool bm_home_free(struct bm *bm, uint64_t pid)
{
	uint64_t w = atomic_load_explicit(&bm->cbitmap[pid / 64], memory_order_relaxed);
	return !((w >> (pid % 64)) & 1);
}

static inline ps_word *state_of(struct bm *bm, uint64_t pid)
{
	return &bm->state[pid];
}

/* Wait a little for someone else's short critical section: spin, then yield. */
static inline void cpu_relax(unsigned spins)
{
	if (spins < 64)
		__builtin_ia32_pause();
	else
		sched_yield();
}

/* bm.c */
void bm_rset_insert(struct bm *bm, uint64_t pid);
void bm_rset_remove(struct bm *bm, uint64_t pid);
/* Page latches (S and X guards) the calling thread holds, over all of its
 * nested operations. */
unsigned bm_thread_latches(void);
/* Transactions the calling thread has open (nesting depth), in any pool. */
unsigned bm_thread_txn_depth(void);

/* bm_load.c: faulting in. Load evicted page @pid, which the caller has
 * locked (PS_LOCKED, taken from EVICTED), and leave it locked and resident;
 * on failure it is evicted again and the operation fails (or restarts, to
 * release its guards while frames are short). */
void bm_page_load(struct bm_op *op, uint64_t pid, bool fresh);

/* bm_evict.c: the eviction trace (bm_config.evict_trace; the format is
 * bench/evsim/evsim.h's binary one). bm_trace_note appends a record to the
 * thread's buffer, written out (one append write) when full, when the
 * thread leaves the pool and at close: when no trace is asked for it costs
 * one predictable branch on a field read with the pool's others. Records
 * of different threads interleave by buffer (BM_TRACE_RECS at a time);
 * with VS_EVICT_TRACE_SYNC=1 in the environment each is written at once,
 * in order, so that a program can append its own markers between the
 * phases of an experiment (bench/evsim/scan.sh). */
#define BM_TRACE_ACCESS 0 /* a hit */
#define BM_TRACE_LOAD   1 /* a load (a fault, or a prefetch) */
#define BM_TRACE_EVICT  2
#define BM_TRACE_PREFETCH 4 /* a load ahead of use (bm_prefetch) */
#define BM_TRACE_RECS   4096
int bm_trace_open(struct bm *bm, const char *path);
void bm_trace_push(struct bm *bm, struct bm_thread *t, unsigned kind, uint64_t pid);
void bm_trace_flush(struct bm *bm, struct bm_thread *t); /* and frees the buffer */
static inline void bm_trace_note(struct bm *bm, struct bm_thread *t, unsigned kind, uint64_t pid)
{
	if (__builtin_expect(bm->trace_fd >= 0, 0))
		bm_trace_push(bm, t, kind, pid);
}

/* bm_evict.c: the s3clock policy (bm_config.evict_policy; "Policies"
 * there). bm_s3_loaded: a page just became resident (called by
 * bm_rset_insert, its loader holding it exclusively). bm_s3_young_mark: the
 * calling thread's outermost operation ended: mark the pages it loaded
 * since the last one, so that a later use shows. */
int bm_evict_policy_set(struct bm *bm, const struct bm_config *cfg); /* bm_open */
void bm_s3_free(struct bm *bm);
void bm_s3_loaded(struct bm *bm, uint64_t pid);
/* bm_alloc: pages [@first, @first + @n) were handed out, as tree nodes
 * (bm_alloc_node) when @node: metadata from their first load. */
void bm_s3_born(struct bm *bm, uint64_t first, uint64_t n, bool node);
void bm_s3_young_mark(struct bm *bm, struct bm_thread *t);
/* Every BM_S3_TICK outermost operations of a thread: s3clock's clock of
 * operations moves on, and probation marks again the pages that have been
 * in it long enough (bm_evict.c, "Uses soon after the first"). */
#define BM_S3_TICK 64u
void bm_s3_tick(struct bm *bm);
void bm_s3_stats(struct bm *bm, struct bm_stats *ret);

/* bm_dup.c: copies of tree nodes. bm_io_write_pages is bm_io_write_batch
 * with each page's copy written along (every write of pages home goes
 * through it); bm_dup_load reads a damaged page's copy into its frame (the
 * page held exclusively), true when it checks out; bm_dup_free_copy, under
 * alloc_mu in bm_free, gives back the copy of @pid, the last page of the
 * run freed; recovery notes what it wrote before the table was
 * loaded (bm_dup_note_replayed) and bm_dup_after_replay writes their copies. */
void bm_io_write_pages(struct bm *bm, struct bm_thread *t, void *const *bufs,
		       const uint64_t *pids, unsigned n, int *res);
bool bm_dup_load(struct bm *bm, struct bm_thread *t, uint64_t pid, uint64_t want);
uint64_t bm_dup_free_copy(struct bm *bm, uint64_t pid);
void bm_dup_note_replayed(struct bm *bm, uint64_t pid);
int bm_dup_after_replay(struct bm *bm);

/* bm_evict.c: write-back and eviction. */
unsigned bm_evict_batch(struct bm *bm, struct bm_thread *t);
unsigned bm_drop_frames(struct bm *bm, struct bm_thread *t, uint64_t *pids, unsigned n);
int bm_write_dirty(struct bm *bm);

/* bm_meta.c: superblock, bitmap and checksum-table I/O. */
int bm_meta_load(struct bm *bm);
int bm_meta_write(struct bm *bm, bool clean);
int bm_meta_mark_open(struct bm *bm);
void bm_csum_set(struct bm *bm, uint64_t pid, uint64_t csum);
uint64_t bm_page_csum(const void *page);
/* The image of checksum-table page @i (entries and seal) into @page. */
void bm_cs_page_fill(struct bm *bm, uint64_t i, uint8_t *page);
/* Is @pid a page of the checksum table or of its copy? Its index in *ret_i. */
bool bm_cs_page_of(const struct bm *bm, uint64_t pid, uint64_t *ret_i);
int bm_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/* The one door for writes and syncs of the image (fault injection hooks in
 * here). bm_io_write_batch writes @n pages from @bufs to page offsets
 * @pids, with io_uring when it can; res[i] gets 0 or a negative errno. */
int bm_io_write(struct bm *bm, const void *buf, size_t len, uint64_t off);
int bm_io_sync(struct bm *bm);
void bm_io_write_batch(struct bm *bm, struct bm_thread *t, void *const *bufs,
		       const uint64_t *pids, unsigned n, int *res);
struct bm_thread *bm_thread_get(struct bm *bm);
void bm_rset_each(struct bm *bm, void (*fn)(struct bm *, uint64_t, void *), void *arg);

/* bm_journal.c */
uint64_t bm_journal_pages_for(uint64_t image_pages);
/* Nonzero (a negative errno) while this thread runs a transaction that
 * bm_txn_begin refused: exclusive fixes fail with it (bm_txn_check). */
extern _Thread_local int bm_txn_refused;
static inline void bm_txn_check(struct bm_op *op)
{
	if (__builtin_expect(bm_txn_refused != 0, 0))
		bm_fail(op, bm_txn_refused);
}
/* Replay the journal when it holds a checkpoint newer than @applied (or
 * any valid one when the superblock is bad). Returns 1 when it replayed, 0
 * when there was nothing to do, or a negative errno. */
/* @damage: NULL when the superblock is sound, else what is wrong with it
 * ("checksum mismatch", "all zeros", ...), for the messages. */
int bm_journal_recover(struct bm *bm, uint64_t image_pages, const char *damage,
		       uint64_t applied);
int bm_journal_open(struct bm *bm);    /* recovery; background thread */
void bm_journal_close(struct bm *bm);  /* stop the thread */
int bm_checkpoint_final(struct bm *bm); /* at close: checkpoint, mark clean */
/* Ask the background checkpointer to run now; never waits. */
void bm_checkpoint_kick(struct bm *bm);

void bm_dirty_note(struct bm *bm, uint64_t pid); /* bm.c: add to bm->dl */
int bm_meta_sb_snapshot(struct bm *bm, uint8_t *page, bool clean, uint64_t applied);
void bm_meta_sb_set_applied(uint8_t *page, uint64_t applied);
int bm_pread_all(int fd, void *buf, size_t len, uint64_t off);

#endif
