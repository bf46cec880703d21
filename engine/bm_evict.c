/*
 * bm_evict.c: write-back and eviction: the I/O door for page writes, the
 * clock, clustering, flush, and the handshake with checkpoints.
 *
 * Eviction (bm_evict_batch) walks the resident set from the clock hand:
 * it marks unused pages and takes those still marked at its next pass. A
 * clean victim is locked exclusively and its frame dropped; a dirty one is
 * held shared, written back (its checksum set, its dirty bit cleared), then
 * upgraded to exclusive and dropped. With the journal a dirty page goes
 * home only when no committed or committing checkpoint has it in use
 * (bm_home_free: a "steal" of a new page); others wait for a checkpoint.
 *
 * The handshake with checkpoints, whole (the other half is ckpt_take in
 * bm_journal.c):
 *
 *   - A frame is dropped only by a thread that holds its page exclusively
 *     (here, bm_free, load failures). So whoever holds a page shared can
 *     read its frame.
 *   - A checkpoint takes every page it writes shared (ckpt_take) before it
 *     reads the page, and keeps it until it no longer reads the frame:
 *     until its copy is made (small checkpoints), or until its home writes
 *     are done (large ones, which write from the pool). A page found
 *     evicted or clean by then is not taken: whoever cleaned it wrote it
 *     home, checksum and all, before clearing the dirty bit, so the
 *     checkpoint's metadata pages (taken after) carry that checksum.
 *   - Eviction writes a dirty page while holding it shared, clears the
 *     dirty bit, and drops the frame only if it can upgrade to exclusive,
 *     which it cannot while a checkpoint holds the page too: the page then
 *     stays resident, clean. Both wrote the same bytes (no writer can
 *     change a page while anyone holds it shared).
 *   - A page a checkpoint has in its bitmap is no longer bm_home_free (it
 *     ORs the bitmap into cbitmap before it lets transactions go on), so
 *     eviction steals none of its pages after that; a steal that chose its
 *     page before still holds it shared throughout, as above.
 *
 * No lock is held by eviction while it waits for its writes but the shared
 * latches of the pages it writes; it never waits for a checkpoint, and it
 * takes every latch with a try (never waits for one).
 *
 * Which pages go first is the policy's ("Policies" below): the clock
 * (vmcache's), or s3clock, which puts a probation queue in front of it.
 * Either way victims are taken with the same tries and the same rules as
 * above; the policy only changes the order in which pages are looked at.
 */
#include "engine/bm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "engine/log.h"

/* The policy a pool gets when its configuration and VS_EVICT say nothing
 * (bm_evict_policy_set): see docs/bench.md for the measurements. */
#define BM_EVICT_POLICY_DEFAULT BM_EVICT_S3CLOCK

/* The eviction trace (bm_internal.h). */
int bm_trace_open(struct bm *bm, const char *path)
{
	struct stat st;
	bm->trace_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (bm->trace_fd < 0 || fstat(bm->trace_fd, &st) < 0) {
		int r = -errno;
		vs_log(VS_LOG_ERR, "cannot open the eviction trace %s: %s", path, strerror(-r));
		if (bm->trace_fd >= 0)
			close(bm->trace_fd);
		bm->trace_fd = -1;
		return r;
	}
	/* "VSEVTR01": bench/evsim/evsim.h; a trace appended to keeps its own. */
	if (st.st_size == 0 && bm_pwrite_all(bm->trace_fd, "VSEVTR01", 8, 0) < 0) {
		vs_log(VS_LOG_ERR, "cannot write the eviction trace %s", path);
		close(bm->trace_fd);
		bm->trace_fd = -1;
		return -EIO;
	}
	const char *sync = getenv("VS_EVICT_TRACE_SYNC");
	bm->trace_recs = sync && strcmp(sync, "1") == 0 ? 1 : BM_TRACE_RECS;
	vs_log(VS_LOG_INFO, "recording hits, loads and evictions to %s", path);
	return 0;
}

static void trace_write(struct bm *bm, struct bm_thread *t)
{
	size_t len = (size_t)t->trace_n * 8;
	t->trace_n = 0;
	if (len == 0 || bm->trace_fd < 0)
		return;
	ssize_t w = write(bm->trace_fd, t->trace, len); /* O_APPEND: one piece */
	if (w != (ssize_t)len)
		vs_log(VS_LOG_WARN, "eviction trace: a write of %zu bytes failed", len);
}

void bm_trace_flush(struct bm *bm, struct bm_thread *t)
{
	if (t->trace)
		trace_write(bm, t);
	free(t->trace);
	t->trace = NULL;
}

void bm_trace_push(struct bm *bm, struct bm_thread *t, unsigned kind, uint64_t pid)
{
	if (!t->trace) {
		t->trace = malloc(BM_TRACE_RECS * sizeof(*t->trace));
		if (!t->trace)
			return; /* a gap in the trace, not a failure of the pool */
	}
	/* Little endian on disk: the hosts this runs on are. */
	t->trace[t->trace_n++] = (pid & ((UINT64_C(1) << 56) - 1)) | ((uint64_t)kind << 56);
	if (t->trace_n >= bm->trace_recs)
		trace_write(bm, t);
}

static bool ring_ready(struct bm_thread *t)
{
	if (t->ring_ok)
		return true;
	if (t->ring_failed)
		return false;
	if (io_uring_queue_init(BM_BATCH_MAX, &t->ring, 0) == 0) {
		t->ring_ok = true;
		return true;
	}
	t->ring_failed = true;
	vs_log(VS_LOG_WARN, "io_uring unavailable, writing back with pwrite");
	return false;
}

/*
 * The one door for page writes: @n pages from @bufs to their home offsets,
 * submitted together with io_uring when there is a ring and no fault
 * injection, else one pwrite at a time. res[i] gets 0 or a negative errno.
 * Runs of consecutive pids go out as one writev: the disk takes one 256 KiB
 * write far faster than 64 scattered 4 KiB ones, and sequential workloads
 * fill eviction batches and checkpoints with neighbours.
 */
void bm_io_write_batch(struct bm *bm, struct bm_thread *t, void *const *bufs,
		       const uint64_t *pids, unsigned n, int *res)
{
	unsigned order[BM_BATCH_MAX], run_at[BM_BATCH_MAX], run_len[BM_BATCH_MAX];
	struct iovec iov[BM_BATCH_MAX];

	if (bm->fault || !ring_ready(t)) {
		for (unsigned i = 0; i < n; i++)
			res[i] = bm_io_write(bm, bufs[i], BM_PAGE_SIZE, pids[i] << BM_PAGE_SHIFT);
		return;
	}
	for (unsigned base = 0; base < n; base += BM_BATCH_MAX) {
		unsigned m = n - base < BM_BATCH_MAX ? n - base : BM_BATCH_MAX, nruns = 0;
		for (unsigned i = 0; i < m; i++) { /* insertion sort by pid: m is small */
			unsigned j = i;
			while (j > 0 && pids[base + order[j - 1]] > pids[base + i]) {
				order[j] = order[j - 1];
				j--;
			}
			order[j] = i;
		}
		for (unsigned k = 0; k < m; k++) {
			unsigned i = base + order[k];
			iov[k].iov_base = bufs[i];
			iov[k].iov_len = BM_PAGE_SIZE;
			res[i] = 0;
			if (nruns > 0 && pids[base + order[k - 1]] + 1 == pids[i]) {
				run_len[nruns - 1]++;
				continue;
			}
			run_at[nruns] = k;
			run_len[nruns] = 1;
			nruns++;
		}
		for (unsigned r = 0; r < nruns; r++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
			io_uring_prep_writev(sqe, bm->fd, &iov[run_at[r]], run_len[r],
					     pids[base + order[run_at[r]]] << BM_PAGE_SHIFT);
			io_uring_sqe_set_data64(sqe, r);
		}
		bm_about_to_wait();
		int rr = io_uring_submit_and_wait(&t->ring, nruns);
		/* The kernel stops submitting at an SQE it cannot take and
		 * leaves the rest in the ring: wait only for what went in (a
		 * wait for the others would never end), and write the rest
		 * the plain way below. */
		unsigned submitted = rr < 0 ? 0 : (unsigned)rr < nruns ? (unsigned)rr : nruns;
		if (rr >= 0 && submitted < nruns)
			rr = -EAGAIN;
		for (unsigned done = 0; done < submitted; done++) {
			struct io_uring_cqe *cqe;
			int wr = io_uring_wait_cqe(&t->ring, &cqe);
			if (wr < 0) {
				rr = wr;
				break;
			}
			unsigned r = (unsigned)io_uring_cqe_get_data64(cqe);
			if (cqe->res != (int)(run_len[r] * BM_PAGE_SIZE)) {
				/* An error, or a short write: finish page by page. */
				for (unsigned k = run_at[r]; k < run_at[r] + run_len[r]; k++) {
					unsigned i = base + order[k];
					res[i] = cqe->res < 0 ? cqe->res
							      : bm_pwrite_all(bm->fd, bufs[i], BM_PAGE_SIZE,
									      pids[i] << BM_PAGE_SHIFT);
				}
			}
			io_uring_cqe_seen(&t->ring, cqe);
		}
		if (rr < 0) {
			/* The ring itself failed: nothing is known of this
			 * batch, so write it again the plain way. */
			for (unsigned i = 0; i < m; i++)
				res[base + i] = bm_io_write(bm, bufs[base + i], BM_PAGE_SIZE,
							    pids[base + i] << BM_PAGE_SHIFT);
			io_uring_queue_exit(&t->ring);
			t->ring_ok = false;
			t->ring_failed = true;
		}
	}
}

/*
 * Write back @n pages the caller holds shared (their bytes cannot change),
 * together: copy each into the thread's staging area, checksum the copy,
 * write the batch. Sets res[i] to 0 or a negative errno. On success the
 * checksum table entry is updated and the dirty bit cleared.
 */
static void write_pages(struct bm *bm, struct bm_thread *t, const uint64_t *pids, unsigned n,
			int *res)
{
	uint64_t sums[BM_BATCH_MAX];
	void *bufs[BM_BATCH_MAX] = { 0 };

	for (unsigned i = 0; i < n; i++) {
		bufs[i] = t->staging + (size_t)i * BM_PAGE_SIZE;
		memcpy(bufs[i], bm_page(bm, pids[i]), BM_PAGE_SIZE);
		sums[i] = bm_page_csum(bufs[i]);
	}
	bm_io_write_pages(bm, t, bufs, pids, n, res); /* and the copies of nodes */
	for (unsigned i = 0; i < n; i++) {
		if (res[i] < 0) {
			BM_COUNT(t, io_errors, 1);
			vs_log(VS_LOG_ERR, "%s: cannot write page %llu: %s", bm->path,
			       (unsigned long long)pids[i], strerror(-res[i]));
			continue;
		}
		bm_csum_set(bm, pids[i], sums[i]);
		uint64_t old = atomic_fetch_and_explicit(state_of(bm, pids[i]), ~PS_DIRTY,
							 memory_order_acq_rel);
		if (old & PS_DIRTY)
			atomic_fetch_sub_explicit(&bm->dirty, 1, memory_order_relaxed);
		BM_COUNT(t, writebacks, 1);
		BM_COUNT(t, write_bytes, BM_PAGE_SIZE);
	}
	/* With the journal these were new pages (steals): their checksums are
	 * for the next checkpoint to commit. */
	if (bm->journal)
		atomic_store(&bm->meta_dirty, true);
}

/* Sort @n pids (insertion sort: n is a batch, and often nearly sorted). */
static void pids_sort(uint64_t *pids, unsigned n)
{
	for (unsigned i = 1; i < n; i++) {
		uint64_t v = pids[i];
		unsigned j = i;
		for (; j > 0 && pids[j - 1] > v; j--)
			pids[j] = pids[j - 1];
		pids[j] = v;
	}
}

static void s3_leave_all(struct bm *bm, const uint64_t *pids, unsigned n, bool evicting);

/* Drop the frames of @n pages the caller holds exclusively and clean
 * (@evicting: chosen by eviction, not freed or emptied by bm_evict_all).
 * Returns how many were dropped (all or, when the backend fails, none). */
static unsigned drop_frames(struct bm *bm, struct bm_thread *t, uint64_t *pids, unsigned n,
			    bool evicting)
{
	if (n == 0)
		return 0;
	pids_sort(pids, n); /* runs of neighbours: one range each for the backend */
	int r = mem_free(bm->mem, t->iface, pids, n);
	if (r < 0) {
		/* The frames stay mapped: the pages stay resident. */
		vs_log(VS_LOG_ERR, "cannot release %u frames: %s", n, strerror(-r));
		for (unsigned i = 0; i < n; i++)
			ps_unlock_x(state_of(bm, pids[i]), false);
		return 0;
	}
	if (bm->s3)
		s3_leave_all(bm, pids, n, evicting);
	for (unsigned i = 0; i < n; i++) {
		bm_rset_remove(bm, pids[i]);
		ps_unlock_evicted(state_of(bm, pids[i]));
		bm_trace_note(bm, t, BM_TRACE_EVICT, pids[i]);
	}
	atomic_fetch_sub(&bm->resident, n);
	BM_COUNT(t, evictions, n);
	return n;
}

unsigned bm_drop_frames(struct bm *bm, struct bm_thread *t, uint64_t *pids, unsigned n)
{
	return drop_frames(bm, t, pids, n, false);
}

/*
 * Clustering. The clock hands out victims in the order of the resident set,
 * a hash, so the pages of a batch lie scattered over the image: 64
 * scattered 4 KiB writes, which this disk takes far slower than one long
 * one, and 64 backend calls to drop them, each with its own TLB flush (with
 * madvise, 8 us a page alone on its CPU and ten times that with another
 * thread of the process running). So a victim takes along its neighbours
 * that the clock has marked too (unused since the hand last passed: they
 * would go next anyway), up to bm->cluster on each side:
 *
 *  - a dirty victim its dirty neighbours, held shared and written in the
 *    same batch (cluster_add; bm_io_write_batch merges each run into one
 *    write). They stay resident, clean and marked (cluster_release): when
 *    the hand comes back to them, dropping them costs no write. With the
 *    journal only pages that may go home are taken, as for victims.
 *  - a clean victim its clean neighbours, locked exclusively and dropped
 *    with it (drop_frames sorts the batch, the backend drops each run with
 *    one call).
 *
 * Pages in use (unmarked) are left alone: a hot page written now would be
 * dirty again soon, and its writers would wait for the write. The pool a
 * bulk load leaves behind is the case this is for: full of dirty pages with
 * consecutive pids, written back by the lookups that follow. vmcache
 * evicts each victim alone.
 */

/* Lock the marked neighbours of @pid that are @dirty (shared) or clean
 * (exclusive) into @out, nearest first on each side, stopping at the first
 * that does not qualify. Returns how many, at most @room. */
static unsigned neighbours(struct bm *bm, uint64_t pid, bool dirty, uint64_t *out, unsigned room)
{
	unsigned n = 0;

	for (int side = 0; side < 2; side++) {
		for (uint64_t k = 1; k <= bm->cluster && n < room; k++) {
			if (side == 0 ? k > pid : pid + k >= bm->page_count)
				break;
			uint64_t q = side == 0 ? pid - k : pid + k;
			ps_word *ps = state_of(bm, q);
			uint64_t w = ps_load(ps);
			if (ps_state(w) != PS_MARKED || ps_dirty(w) != dirty)
				break;
			if (dirty ? (bm->journal && !bm_home_free(bm, q)) || !ps_try_lock_s(ps, w)
				  : !ps_try_lock_x(ps, w))
				break;
			out[n++] = q;
		}
	}
	return n;
}

/* Append the dirty neighbours of the @nv victims in @pids after them;
 * returns the new count (at most @room). */
static unsigned cluster_add(struct bm *bm, uint64_t *pids, unsigned nv, unsigned room)
{
	unsigned n = nv;
	for (unsigned i = 0; i < nv && n < room; i++)
		n += neighbours(bm, pids[i], true, pids + n, room - n);
	return n;
}

/* The neighbours cluster_add took are written (or not: they stay dirty):
 * release them, marked again for the clock. */
static void cluster_release(struct bm *bm, struct bm_thread *t, const uint64_t *pids,
			    const int *res, unsigned n)
{
	unsigned written = 0;
	for (unsigned i = 0; i < n; i++) {
		ps_unlock_s_marked(state_of(bm, pids[i]));
		written += res[i] == 0;
	}
	BM_COUNT(t, cluster_writebacks, written);
}

/*
 * Policies.
 *
 * clock (BM_EVICT_CLOCK): vmcache's. The hand walks the resident set (a
 * hash table: no useful order), marks unlocked pages and takes those still
 * marked when it comes back; a fix clears the mark of a page it uses (the
 * one write a hit may make, and only to a marked page). One pass over cold
 * data larger than the pool marks and takes everything, hot pages too.
 *
 * s3clock (BM_EVICT_S3CLOCK): S3-FIFO's split of the cache (Yang et al.,
 * SOSP'23) built from the clock's own mark, so that a hit costs what it
 * costs with the clock (bm_fix_* run the same code: no list move, no
 * counter, one state-word access). Modelled first in bench/evsim (policy
 * s3clock).
 *
 *  - Probation. A page that comes in (bm_rset_insert -> bm_s3_loaded) goes
 *    to the head of a FIFO ring of pids, unless the ghost knows it. Its
 *    first use is the operation that loaded it, or for a read-ahead the
 *    next operation of the same thread: when the thread's outermost
 *    operation ends (bm_run), the pages it loaded since are marked and
 *    SEEN (bm_s3_young_mark). A later use clears the mark, as with the
 *    clock: that is the second use S3-FIFO's reference bit records.
 *  - While probation holds its target or more, eviction takes from its tail
 *    first (s3_collect), until it is a batch below: a page SEEN and still
 *    marked was not used again: it goes, into the ghost; one SEEN and not
 *    marked was: it moves to main (its flag cleared, nothing else moves);
 *    one not SEEN (held when its loader ended, or a read-ahead no
 *    operation followed) is marked now and goes round once more.
 *  - Uses soon after the first count as the first (2Q's correlated
 *    references): a walk of a directory uses each leaf of inodes once per
 *    file in it, in requests one after the other (find, tar, ls -l), and a
 *    page used only so is not hot; let it count, and a walk over a tree
 *    larger than the pool moves that tree into main, past everything hot.
 *    So probation has a clock of operations: every BM_S3_TICK outermost
 *    operations of a thread it moves on a tick (bm_s3_tick), and each ring
 *    entry carries the tick of its push. An entry S3_CORRELATED ticks old
 *    (2,048 operations) has its page marked again, once (REMARKED;
 *    s3_remark, run at each tick and by eviction, a cursor over the ring
 *    in push order): only a use after that moves it to main. A page whose
 *    uses keep coming is used after it too; one used in a burst is not.
 *    An entry that reaches the tail younger than that is judged on all
 *    its uses, as before (a scan that fills probation faster than the
 *    window is judged per page as S3-FIFO would). Measured with
 *    bench/evsim/metascan.sh; the tick costs each operation a thread-local
 *    increment, and each 64th a shared one and a mutex try.
 *  - Main is the clock as it was, over the resident set, skipping the pages
 *    in probation. It gives victims when probation is below its target, or
 *    could not give enough.
 *  - The ghost: 4-byte fingerprints of the pages probation dropped unused,
 *    in a direct-mapped table of the power of two at or above the pool's
 *    pages; a newer entry overwrites an older one in its slot, which ages
 *    it out, and a false hit (1 in 2^31) costs only a page in main. A load
 *    the ghost knows goes straight to main and grows the target.
 *  - Metadata first (bm_config.is_meta; the file system passes
 *    bt_page_is_node): a page whose bytes, when read from the image, are
 *    a tree node, or that bm_alloc_node handed out, is META. Probation
 *    treats it as any page (a walk over another tree is still a scan);
 *    main's hand gives it a spare round: when it marks a META page it
 *    also sets SPARE, and when it finds one still marked with SPARE set
 *    it only clears SPARE. An unused node so goes after two passes of the
 *    hand, file data after one (GCLOCK with a weight of 2 for nodes): a
 *    lookup that misses costs a page fault per level, and every request
 *    descends the tree. The flags are written by the hand and on loads,
 *    never on a hit. A data page that happens to look like a node gets
 *    the spare round too: a hint, nothing more.
 *  - The target adapts between 5% and 50% of the pool, from 10%: a ghost
 *    hit grows it by 2 pages, a page dropped into the ghost shrinks it by a
 *    quarter of one (evsim's s3clock_adapt). A scan shrinks it to the
 *    minimum; a hot set that moves, or a loop a little larger than the
 *    pool, grows it.
 *
 * Memory, per pool page: the ring, 8 bytes times the power of two at or
 * above 1.5 pool pages (12 to 24 bytes); the ghost, 4 times the power of
 * two at or above the pool (4 to 8 bytes): at most 32 bytes, 0.8% of the
 * pool's memory (the ghost alone at most 0.2%). And one byte of flags per
 * page of the image (qflag), mapped as the state array is: only the bytes
 * of pages that were used are touched, an eighth of the state array's.
 *
 * Concurrency. qflag bytes change by atomic read-modify-write, and the
 * probation count moves with the SMALL bit (whoever clears it counts it
 * out): a loader sets SMALL and drop_frames clears it (each holds the page
 * exclusively), s3_collect clears it on a promotion and when it takes a
 * victim. The ring: producers (loads, and s3_collect
 * putting a page back) claim a slot by compare-and-swap on the head, then
 * write the pid into it; the consumer, s3_collect under s3->mu, takes from
 * the tail and stops at a slot claimed but not yet written. s3->mu is a
 * leaf mutex (lockorder.h level 6): its holder only tries page latches and
 * waits for nothing. A pid has at most one entry (RINGED): a page that
 * left probation another way (freed, taken along as a neighbour) keeps its
 * entry, which a reload of the page reuses, or s3_collect drops when it
 * comes up. Marks and flags are hints: a race costs a page its place in a
 * queue, never a wrong eviction, because every victim is still taken with
 * the clock's tries and rules (above: locked, written back first, no steal
 * past the journal); the state word's transitions are page_state.h's.
 */
#define S3_SMALL  1u /* in probation */
#define S3_SEEN   2u /* marked after its first use */
#define S3_RINGED 4u /* has an entry in the ring */
#define S3_META   8u /* a tree node: main's hand spares it a round */
#define S3_SPARE  16u /* META, and the hand has not used its spare round */
#define S3_REMARKED 32u /* marked again after the correlation window */
#define S3_PID_BITS 40 /* a ring entry: pid | tick of its push << 40 */
#define S3_PID_MASK ((UINT64_C(1) << S3_PID_BITS) - 1)
#define S3_TICK_MASK 0xffffffu /* the 24 bits of a tick above the pid */
#define S3_EMPTY  UINT64_MAX /* a ring slot not (yet) written */
#define S3_GOLDEN UINT64_C(0x9E3779B97F4A7C15)
#define S3_ADAPT_UP   512 /* 1/256 pages: a ghost hit grows the target by 2 */
#define S3_ADAPT_DOWN 64  /* a drop into the ghost shrinks it by 1/4 */

struct bm_s3 {
	_Atomic uint8_t *qflag;  /* page_count bytes: S3_* */
	size_t qflag_len;
	_Atomic uint64_t *ring;
	uint64_t ring_mask;
	_Atomic uint32_t *ghost;
	uint64_t ghost_mask;
	uint64_t min, max;       /* the target's bounds, pages */
	uint64_t window;         /* ticks: uses before are the first use's */
	bool (*is_meta)(const void *page); /* metadata first, or NULL */
	pthread_mutex_t mu;      /* the ring's consumer (s3_collect) */
	uint64_t mid;            /* under mu: entries below it were re-marked */
	char pad1[64];
	_Atomic uint64_t head;   /* claimed by producers */
	char pad2[64];
	_Atomic uint64_t tail;   /* moved by the consumer only */
	_Atomic uint64_t small;  /* pages in probation */
	_Atomic uint64_t target; /* its adapted size, 1/256 pages */
	_Atomic uint64_t ghost_n, promotions, ghost_hits, drops;
	_Atomic uint64_t meta_loads, meta_spares;
	_Atomic uint64_t now;    /* ticks (bm_s3_tick) */
};

static const char *policy_name(enum bm_evict_policy p)
{
	return p == BM_EVICT_S3CLOCK ? "s3clock" : "clock";
}

void bm_s3_free(struct bm *bm)
{
	struct bm_s3 *q = bm->s3;
	if (!q)
		return;
	bm->s3 = NULL;
	if (q->qflag)
		munmap((void *)q->qflag, q->qflag_len);
	free((void *)q->ring);
	free((void *)q->ghost);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

static int s3_init(struct bm *bm, bool (*is_meta)(const void *page), uint64_t window_ops)
{
	struct bm_s3 *q = calloc(1, sizeof(*q));
	uint64_t n = 64, g = 64;
	if (!q)
		return -ENOMEM;
	if (bm->page_count > S3_PID_MASK) {
		free(q);
		vs_log(VS_LOG_ERR, "s3clock: an image of %llu pages is too large for it: "
		       "using clock", (unsigned long long)bm->page_count);
		return 0;
	}
	while (n < bm->capacity + bm->capacity / 2)
		n <<= 1;
	while (g < bm->capacity)
		g <<= 1;
	pthread_mutex_init(&q->mu, NULL);
	bm->s3 = q;
	q->qflag_len = (bm->page_count + 4095) & ~(size_t)4095;
	q->qflag = mmap(NULL, q->qflag_len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (q->qflag == MAP_FAILED)
		q->qflag = NULL;
	q->ring_mask = n - 1;
	q->ring = malloc(n * sizeof(*q->ring));
	q->ghost_mask = g - 1;
	q->ghost = calloc(g, sizeof(*q->ghost));
	if (!q->qflag || !q->ring || !q->ghost) {
		bm_s3_free(bm);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < n; i++)
		atomic_init(&q->ring[i], S3_EMPTY);
	q->min = bm->capacity / 20 ? bm->capacity / 20 : 1;
	q->max = bm->capacity / 2;
	atomic_init(&q->target, (bm->capacity / 10) << 8);
	q->is_meta = is_meta;
	q->window = (window_ops + BM_S3_TICK - 1) / BM_S3_TICK;
	if (q->window > S3_TICK_MASK / 2)
		q->window = S3_TICK_MASK / 2; /* ages are taken modulo the mask */
	return 0;
}

int bm_evict_policy_set(struct bm *bm, const struct bm_config *cfg)
{
	enum bm_evict_policy policy = cfg->evict_policy;
	bool (*is_meta)(const void *page) = cfg->is_meta;
	const char *meta_env = getenv("VS_EVICT_META");
	const char *window_env = getenv("VS_EVICT_WINDOW");
	/* The window for uses that follow the first, in operations: longer
	 * than a walk's uses of one leaf, shorter than the time a hot set is
	 * in use (bench/evsim/metascan.sh and scan.sh: twice the pool's pages
	 * lost 11% of scan.sh's hot file to its scan). VS_EVICT_WINDOW=N to
	 * measure another. */
	uint64_t window_ops = 2048;

	if (meta_env && strcmp(meta_env, "off") == 0)
		is_meta = NULL;
	else if (meta_env && *meta_env && strcmp(meta_env, "on") != 0) {
		vs_log(VS_LOG_ERR, "VS_EVICT_META=%s: use on or off", meta_env);
		return -EINVAL;
	}
	if (window_env && *window_env) {
		char *end;
		errno = 0;
		window_ops = strtoull(window_env, &end, 10);
		if (errno || *end || *window_env == '-') {
			vs_log(VS_LOG_ERR, "VS_EVICT_WINDOW=%s: a number of operations", window_env);
			return -EINVAL;
		}
	}
	if (policy == BM_EVICT_DEFAULT) {
		const char *env = getenv("VS_EVICT");
		policy = BM_EVICT_POLICY_DEFAULT;
		if (env && *env) {
			if (strcmp(env, "clock") == 0) {
				policy = BM_EVICT_CLOCK;
			} else if (strcmp(env, "s3clock") == 0) {
				policy = BM_EVICT_S3CLOCK;
			} else {
				vs_log(VS_LOG_ERR, "VS_EVICT=%s: use clock or s3clock", env);
				return -EINVAL;
			}
		}
	}
	if (policy != BM_EVICT_CLOCK && policy != BM_EVICT_S3CLOCK) {
		vs_log(VS_LOG_ERR, "unknown eviction policy %d", (int)policy);
		return -EINVAL;
	}
	/* (no log line: the tools open pools too; the stats file says it) */
	return policy == BM_EVICT_S3CLOCK ? s3_init(bm, is_meta, window_ops) : 0;
}

static void s3_adapt(struct bm_s3 *q, bool ghost_hit)
{
	/* A lost update between two evictors costs a quarter page: no CAS. */
	uint64_t t = atomic_load_explicit(&q->target, memory_order_relaxed);
	t = ghost_hit ? t + S3_ADAPT_UP : t >= S3_ADAPT_DOWN ? t - S3_ADAPT_DOWN : 0;
	if (t < q->min << 8)
		t = q->min << 8;
	if (t > q->max << 8)
		t = q->max << 8;
	atomic_store_explicit(&q->target, t, memory_order_relaxed);
}

static _Atomic uint32_t *ghost_slot(struct bm_s3 *q, uint64_t pid, uint32_t *ret_fp)
{
	uint64_t h = pid * S3_GOLDEN;
	*ret_fp = (uint32_t)(h >> 32) | 1; /* 0 is an empty slot */
	return &q->ghost[(h >> 7) & q->ghost_mask];
}

static void ghost_add(struct bm_s3 *q, uint64_t pid)
{
	uint32_t fp;
	_Atomic uint32_t *g = ghost_slot(q, pid, &fp);
	if (atomic_exchange_explicit(g, fp, memory_order_relaxed) == 0)
		atomic_fetch_add_explicit(&q->ghost_n, 1, memory_order_relaxed);
}

static bool ghost_take(struct bm_s3 *q, uint64_t pid)
{
	uint32_t fp;
	_Atomic uint32_t *g = ghost_slot(q, pid, &fp);
	uint32_t cur = atomic_load_explicit(g, memory_order_relaxed);
	if (cur != fp || !atomic_compare_exchange_strong_explicit(g, &cur, 0, memory_order_relaxed,
								  memory_order_relaxed))
		return false;
	atomic_fetch_sub_explicit(&q->ghost_n, 1, memory_order_relaxed);
	return true;
}

/* Clear @bits of @pid's flags; counts the page out of probation if SMALL
 * went. Returns the flags before. */
static uint8_t s3_clear(struct bm_s3 *q, uint64_t pid, uint8_t bits)
{
	uint8_t old =
	    atomic_fetch_and_explicit(&q->qflag[pid], (uint8_t)~bits, memory_order_relaxed);
	if (old & bits & S3_SMALL)
		atomic_fetch_sub_explicit(&q->small, 1, memory_order_relaxed);
	return old;
}

/* Claim the ring's head slot and write @pid there. False when full. */
static bool ring_push(struct bm_s3 *q, uint64_t pid)
{
	uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
	for (;;) {
		/* The consumer emptied every slot below its tail before moving
		 * it (release): a slot a ring length below the tail is free. */
		uint64_t tl = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (h - tl > q->ring_mask)
			return false;
		if (atomic_compare_exchange_weak_explicit(&q->head, &h, h + 1, memory_order_relaxed,
							  memory_order_relaxed))
			break;
	}
	uint64_t tick = atomic_load_explicit(&q->now, memory_order_relaxed) & S3_TICK_MASK;
	atomic_store_explicit(&q->ring[h & q->ring_mask], pid | tick << S3_PID_BITS,
			      memory_order_release);
	return true;
}

/* s3_collect puts a page it popped back at the head (it keeps RINGED);
 * with the ring full (producers took the room) it goes to main. */
static void ring_back(struct bm_s3 *q, uint64_t pid)
{
	if (!ring_push(q, pid))
		s3_clear(q, pid, S3_SMALL | S3_SEEN | S3_RINGED);
}

void bm_s3_loaded(struct bm *bm, uint64_t pid)
{
	struct bm_s3 *q = bm->s3;
	_Atomic uint8_t *f = &q->qflag[pid];
	uint8_t meta = 0;
	if (q->is_meta) {
		/* A new node is META from bm_alloc_node (its frame is zeros
		 * now); a page read from the image, when it looks like one. */
		if (q->is_meta(bm->base + (pid << BM_PAGE_SHIFT))) {
			atomic_fetch_add_explicit(&q->meta_loads, 1, memory_order_relaxed);
			meta = S3_META;
		} else {
			meta = atomic_load_explicit(f, memory_order_relaxed) & S3_META;
		}
	}
	if (ghost_take(q, pid)) {
		/* Probation let it go and it came back: it goes to main (its
		 * flags are clear), and probation should be larger. */
		atomic_fetch_add_explicit(&q->ghost_hits, 1, memory_order_relaxed);
		s3_adapt(q, true);
		if (meta)
			atomic_fetch_or_explicit(f, S3_META, memory_order_relaxed);
		return;
	}
	uint8_t old = atomic_load_explicit(f, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(f, &old, S3_SMALL | S3_RINGED | meta,
						      memory_order_relaxed, memory_order_relaxed))
		;
	if (!(old & S3_SMALL))
		atomic_fetch_add_explicit(&q->small, 1, memory_order_relaxed);
	if (!(old & S3_RINGED) && !ring_push(q, pid)) {
		/* A full ring (stale entries, s3_collect drops them): main. */
		s3_clear(q, pid, S3_SMALL | S3_SEEN | S3_RINGED);
		return;
	}
	struct bm_thread *t = bm_thread_get(bm);
	if (t->young_n < BM_BATCH_MAX)
		t->young[t->young_n++] = pid;
	/* (else it is not SEEN: s3_collect marks it when it comes up) */
}

void bm_s3_born(struct bm *bm, uint64_t first, uint64_t n, bool node)
{
	struct bm_s3 *q = bm->s3;
	if (!q || !q->is_meta)
		return;
	for (uint64_t p = first; p < first + n; p++) {
		if (node)
			atomic_fetch_or_explicit(&q->qflag[p], S3_META, memory_order_relaxed);
		else
			atomic_fetch_and_explicit(&q->qflag[p], (uint8_t)~(S3_META | S3_SPARE),
						  memory_order_relaxed);
	}
}

void bm_s3_young_mark(struct bm *bm, struct bm_thread *t)
{
	struct bm_s3 *q = bm->s3;
	for (unsigned i = 0; q && i < t->young_n; i++) {
		uint64_t pid = t->young[i];
		if (!(atomic_load_explicit(&q->qflag[pid], memory_order_relaxed) & S3_SMALL))
			continue; /* gone already */
		ps_word *ps = state_of(bm, pid);
		/* Only an unlocked page: one held now is in use (a reply from
		 * the pool still going out), marked when it comes up. */
		if (ps_try_mark(ps, ps_load(ps)))
			atomic_fetch_or_explicit(&q->qflag[pid], S3_SEEN, memory_order_relaxed);
	}
	t->young_n = 0;
}

/* Under s3->mu: mark again the pages of the entries that are now
 * q->window ticks old (see "Uses soon after the first" above). */
static void s3_remark(struct bm *bm)
{
	struct bm_s3 *q = bm->s3;
	const uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
	const uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
	const uint64_t now = atomic_load_explicit(&q->now, memory_order_relaxed);
	if (q->mid < tail)
		q->mid = tail;
	for (; q->mid < head; q->mid++) {
		uint64_t e =
		    atomic_load_explicit(&q->ring[q->mid & q->ring_mask], memory_order_acquire);
		if (e == S3_EMPTY)
			break; /* claimed, not yet written: later */
		if (((now - (e >> S3_PID_BITS)) & S3_TICK_MASK) < q->window)
			break; /* younger, and so is what follows */
		uint64_t pid = e & S3_PID_MASK;
		uint8_t fl = atomic_load_explicit(&q->qflag[pid], memory_order_relaxed);
		if ((fl & (S3_SMALL | S3_SEEN | S3_REMARKED)) == (S3_SMALL | S3_SEEN)) {
			ps_word *ps = state_of(bm, pid);
			ps_try_mark(ps, ps_load(ps)); /* (held now: in use, a use) */
			atomic_fetch_or_explicit(&q->qflag[pid], S3_REMARKED,
						 memory_order_relaxed);
		}
	}
}

void bm_s3_tick(struct bm *bm)
{
	struct bm_s3 *q = bm->s3;
	atomic_fetch_add_explicit(&q->now, 1, memory_order_relaxed);
	if (pthread_mutex_trylock(&q->mu) == 0) { /* (else eviction has it: it re-marks) */
		s3_remark(bm);
		pthread_mutex_unlock(&q->mu);
	}
}

/* drop_frames: @n pages leave the pool; those in probation leave it, and
 * the ones eviction took unused since their first use go into the ghost. */
static void s3_leave_all(struct bm *bm, const uint64_t *pids, unsigned n, bool evicting)
{
	struct bm_s3 *q = bm->s3;
	for (unsigned i = 0; i < n; i++) {
		/* (RINGED stays: the entry is still in the ring) */
		uint8_t old = s3_clear(q, pids[i],
				       S3_SMALL | S3_SEEN | S3_META | S3_SPARE | S3_REMARKED);
		if (evicting && (old & (S3_SMALL | S3_SEEN)) == (S3_SMALL | S3_SEEN)) {
			/* a neighbour taken along, marked since its first use */
			ghost_add(q, pids[i]);
			atomic_fetch_add_explicit(&q->drops, 1, memory_order_relaxed);
			s3_adapt(q, false);
		}
	}
}

void bm_s3_stats(struct bm *bm, struct bm_stats *ret)
{
	struct bm_s3 *q = bm->s3;
	ret->evict_policy = policy_name(q ? BM_EVICT_S3CLOCK : BM_EVICT_CLOCK);
	if (!q)
		return;
	uint64_t small = atomic_load_explicit(&q->small, memory_order_relaxed);
	ret->probation_pages = small < ret->resident_pages ? small : ret->resident_pages;
	ret->probation_target = atomic_load_explicit(&q->target, memory_order_relaxed) >> 8;
	ret->ghost_pages = atomic_load_explicit(&q->ghost_n, memory_order_relaxed);
	ret->promotions = atomic_load_explicit(&q->promotions, memory_order_relaxed);
	ret->ghost_hits = atomic_load_explicit(&q->ghost_hits, memory_order_relaxed);
	ret->probation_drops = atomic_load_explicit(&q->drops, memory_order_relaxed);
	ret->meta_loads = atomic_load_explicit(&q->meta_loads, memory_order_relaxed);
	ret->meta_spares = atomic_load_explicit(&q->meta_spares, memory_order_relaxed);
}

/*
 * Victims from probation's tail into @clean (locked exclusively, with
 * their marked clean neighbours) and @dirty (held shared), up to @want in
 * all: when probation holds its target or more (or, @force, anything),
 * until it is a batch below it. Holds s3->mu, tries latches, waits for
 * nothing. Pages it cannot take now (held, dirty and waiting for a
 * checkpoint) go round again; after 4 * @want of those it gives up, and
 * main gives the rest.
 */
static void s3_collect(struct bm *bm, uint64_t *clean, unsigned *nc, uint64_t *dirty, unsigned *nd,
		       unsigned want, bool force)
{
	struct bm_s3 *q = bm->s3;
	const uint64_t target = atomic_load_explicit(&q->target, memory_order_relaxed) >> 8;
	const uint64_t low = force ? 0 : target > want ? target - want : 0;
	uint64_t small = atomic_load_explicit(&q->small, memory_order_relaxed);
	bool over = force || small >= target;

	pthread_mutex_lock(&q->mu);
	uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
	uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
	s3_remark(bm);
	/* Entries of pages no longer in probation pile up while nobody
	 * consumes (probation below its target): sweep them out then. */
	bool sweep = !over && head - tail > small + bm->capacity / 4;
	uint64_t budget = 2 * (head - tail) + want;
	unsigned stuck = 0;

	while ((over || sweep) && *nc + *nd < want && budget-- > 0 && stuck < 4 * want) {
		if (tail == head &&
		    tail == (head = atomic_load_explicit(&q->head, memory_order_acquire)))
			break;
		_Atomic uint64_t *slot = &q->ring[tail & q->ring_mask];
		uint64_t pid = atomic_load_explicit(slot, memory_order_acquire);
		if (pid == S3_EMPTY)
			break; /* claimed, not yet written */
		pid &= S3_PID_MASK;
		atomic_store_explicit(slot, S3_EMPTY, memory_order_relaxed);
		atomic_store_explicit(&q->tail, ++tail, memory_order_release);

		_Atomic uint8_t *f = &q->qflag[pid];
		uint8_t fl = atomic_load_explicit(f, memory_order_relaxed);
		/* Left probation since: the entry goes (unless a reload took
		 * it over meanwhile: then it is live). */
		if (!(fl & S3_SMALL) && atomic_compare_exchange_strong_explicit(
					    f, &fl, 0, memory_order_relaxed, memory_order_relaxed))
			continue;
		if (!(fl & S3_SMALL)) { /* flags moved under us: look again later */
			ring_back(q, pid);
			continue;
		}
		if (!over) { /* sweeping: a live entry keeps its place in turn */
			ring_back(q, pid);
			continue;
		}
		ps_word *ps = state_of(bm, pid);
		uint64_t w = ps_load(ps);
		unsigned s = ps_state(w);
		if (s == PS_LOCKED) {
			/* A writer's, or a neighbour this batch took (which goes
			 * with it, and its entry with the next pass): later. */
			ring_back(q, pid);
		} else if (!(fl & S3_SEEN)) {
			if (s == PS_MARKED || ps_try_mark(ps, w))
				atomic_fetch_or_explicit(f, S3_SEEN, memory_order_relaxed);
			else
				stuck++;
			ring_back(q, pid);
		} else if (s == PS_MARKED) {
			/* Unused since its first use: a victim, by the clock's
			 * rules (bm_evict_batch). */
			bool taken = false, clean_one = !ps_dirty(w);
			if (ps_dirty(w) && bm->journal && !bm_home_free(bm, pid))
				; /* no steal: it waits for a checkpoint */
			else if (ps_dirty(w) && ps_try_lock_s(ps, w))
				dirty[(*nd)++] = pid, taken = true;
			else if (clean_one && ps_try_lock_x(ps, w))
				clean[(*nc)++] = pid, taken = true;
			if (!taken) {
				stuck++;
				ring_back(q, pid);
				continue;
			}
			/* Out of probation now: should it stay after all (its
			 * write fails, a checkpoint holds it), it is main's. */
			s3_clear(q, pid, S3_SMALL | S3_SEEN | S3_RINGED);
			ghost_add(q, pid);
			atomic_fetch_add_explicit(&q->drops, 1, memory_order_relaxed);
			s3_adapt(q, false);
			if (clean_one)
				*nc += neighbours(bm, pid, false, clean + *nc, want - *nc - *nd);
		} else {
			/* Used again since its mark (or held shared right now):
			 * main's. */
			s3_clear(q, pid, S3_SMALL | S3_SEEN | S3_RINGED);
			atomic_fetch_add_explicit(&q->promotions, 1, memory_order_relaxed);
		}
		small = atomic_load_explicit(&q->small, memory_order_relaxed);
		over = force ? small > 0 : small > low;
	}
	pthread_mutex_unlock(&q->mu);
}

/*
 * One clock pass: walk the resident set from the clock hand, marking
 * unlocked pages and collecting pages that were already marked (nobody used
 * them since the hand last passed). Clean candidates are locked exclusively
 * at once; dirty ones shared, written back as one batch, then upgraded;
 * each takes its neighbours along (see Clustering above).
 */
unsigned bm_evict_batch(struct bm *bm, struct bm_thread *t)
{
	uint64_t clean[BM_BATCH_MAX], dirty[BM_BATCH_MAX];
	int res[BM_BATCH_MAX];
	unsigned nc = 0, nd = 0;
	const uint64_t want = bm->batch;
	const uint64_t slots = bm->rset.mask + 1;
	const uint64_t t0 = lh_now_ns();
	struct bm_s3 *q = bm->s3;

	if (q)
		s3_collect(bm, clean, &nc, dirty, &nd, (unsigned)want, false);
	for (uint64_t seen = 0; nc + nd < want && seen < 2 * slots;) {
		uint64_t start = atomic_fetch_add(&bm->rset.clock, 64);
		for (uint64_t k = 0; k < 64 && nc + nd < want; k++, seen++) {
			uint64_t pid = atomic_load_explicit(&bm->rset.slots[(start + k) & bm->rset.mask],
							    memory_order_relaxed);
			if (pid >= RSET_TOMB)
				continue;
			uint8_t fl = q ? atomic_load_explicit(&q->qflag[pid], memory_order_relaxed)
				       : 0;
			if (fl & S3_SMALL)
				continue; /* probation's */
			ps_word *ps = state_of(bm, pid);
			uint64_t w = ps_load(ps);
			if (ps_state(w) == PS_UNLOCKED) {
				if (ps_try_mark(ps, w) && (fl & (S3_META | S3_SPARE)) == S3_META)
					atomic_fetch_or_explicit(&q->qflag[pid], S3_SPARE,
								 memory_order_relaxed);
			} else if (ps_state(w) == PS_MARKED) {
				if ((fl & S3_SPARE) && (s3_clear(q, pid, S3_SPARE) & S3_SPARE)) {
					/* metadata first: its spare round */
					atomic_fetch_add_explicit(&q->meta_spares, 1,
								  memory_order_relaxed);
				} else if (ps_dirty(w) && bm->journal && !bm_home_free(bm, pid)) {
					/* no steal: the page waits for a checkpoint */
				} else if (ps_dirty(w)) {
					/* (a page no checkpoint has seen in use may
					 * go home now: bm_journal.c) */
					if (ps_try_lock_s(ps, w))
						dirty[nd++] = pid;
				} else if (ps_try_lock_x(ps, w)) {
					clean[nc++] = pid;
					nc += neighbours(bm, pid, false, clean + nc,
							 want - nc - nd);
				}
			}
		}
	}
	if (q && nc + nd == 0) /* main had nothing to give */
		s3_collect(bm, clean, &nc, dirty, &nd, (unsigned)want, true);
	if (nd > 0) {
		unsigned nw = cluster_add(bm, dirty, nd, bm->wb_max);
		write_pages(bm, t, dirty, nw, res);
		cluster_release(bm, t, dirty + nd, res + nd, nw - nd);
		for (unsigned i = 0; i < nd; i++) {
			ps_word *ps = state_of(bm, dirty[i]);
			/* Another reader (a checkpoint taking the page among
			 * them) keeps it resident. */
			if (res[i] != 0 || !ps_try_upgrade_sx(ps))
				ps_unlock_s(ps);
			else
				clean[nc++] = dirty[i];
		}
	}
	unsigned dropped = drop_frames(bm, t, clean, nc, true);
	BM_COUNT(t, evict_batches, 1);
	lh_record(&bm->evict_lat, lh_now_ns() - t0);
	atomic_fetch_add_explicit(&bm->evict_lat_pages, dropped, memory_order_relaxed);
	return dropped;
}


struct flush_ctx {
	struct bm_thread *t;
	uint64_t pids[BM_BATCH_MAX];
	int res[BM_BATCH_MAX];
	unsigned n;
	int err;
};

static void flush_batch(struct bm *bm, struct flush_ctx *f)
{
	write_pages(bm, f->t, f->pids, f->n, f->res);
	for (unsigned i = 0; i < f->n; i++) {
		if (f->res[i] < 0 && f->err == 0)
			f->err = f->res[i];
		ps_unlock_s(state_of(bm, f->pids[i]));
	}
	f->n = 0;
}

static void flush_one(struct bm *bm, uint64_t pid, void *arg)
{
	struct flush_ctx *f = arg;
	ps_word *ps = state_of(bm, pid);
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		if (!ps_dirty(w) || ps_state(w) == PS_EVICTED)
			return;
		if (ps_try_lock_s(ps, w))
			break;
		cpu_relax(spins); /* a writer holds it; it will be done soon */
	}
	f->pids[f->n++] = pid;
	if (f->n == bm->wb_max) /* what the staging area holds */
		flush_batch(bm, f);
}

int bm_write_dirty(struct bm *bm)
{
	struct flush_ctx *f = calloc(1, sizeof(*f));
	int r;
	if (!f)
		return -ENOMEM;
	f->t = bm_thread_get(bm);
	bm_rset_each(bm, flush_one, f);
	if (f->n)
		flush_batch(bm, f);
	r = f->err;
	free(f);
	return r;
}

int bm_flush(struct bm *bm)
{
	int r;
	if (bm->read_only)
		return 0;
	if (bm->journal)
		return bm_checkpoint(bm);
	pthread_mutex_lock(&bm->flush_mu);
	r = bm_write_dirty(bm);
	if (r == 0)
		r = bm_meta_write(bm, false);
	if (r == 0)
		r = bm_io_sync(bm);
	pthread_mutex_unlock(&bm->flush_mu);
	return r;
}

struct evict_all_ctx {
	struct bm_thread *t;
	uint64_t pids[BM_BATCH_MAX];
	unsigned n;
	int64_t dropped;
};

static void evict_all_one(struct bm *bm, uint64_t pid, void *arg)
{
	struct evict_all_ctx *e = arg;
	ps_word *ps = state_of(bm, pid);
	uint64_t w = ps_load(ps);
	if (ps_dirty(w) || !ps_is_free(ps_state(w)) || !ps_try_lock_x(ps, w))
		return;
	e->pids[e->n++] = pid;
	if (e->n == BM_BATCH_MAX) {
		bm_drop_frames(bm, e->t, e->pids, e->n);
		e->dropped += e->n;
		e->n = 0;
	}
}

int64_t bm_evict_all(struct bm *bm, bool write_dirty_first)
{
	struct evict_all_ctx *e;
	int64_t dropped;

	if (write_dirty_first && !bm->read_only) {
		int r = bm->journal ? bm_checkpoint(bm) : bm_write_dirty(bm);
		if (r < 0)
			return r;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->t = bm_thread_get(bm);
	bm_rset_each(bm, evict_all_one, e);
	bm_drop_frames(bm, e->t, e->pids, e->n);
	dropped = e->dropped + e->n;
	free(e);
	return dropped;
}
