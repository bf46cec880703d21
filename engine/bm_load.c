/*
 * bm_load.c: faulting pages in: frames, loads, prefetch, reads and writes
 * past the pool.
 *
 * Frames. bm->resident counts the frames in use. A thread that needs one
 * reserves it by compare-and-swap below bm->capacity (frame_reserve),
 * evicting a batch first when there is none (bm_evict.c), so the pool never
 * holds more than capacity frames.
 *
 * A load may find nothing to evict: every frame held by a guard, or dirty
 * and, with the journal, waiting for a checkpoint (no steal). The loader
 * never runs a checkpoint and never waits for one: it may hold page
 * latches, and its caller inode locks, that a running transaction waits
 * for, and a checkpoint waits for every running transaction
 * (lockorder.h). It asks the background checkpointer instead
 * (bm_checkpoint_kick) and sleeps a little; after FRAME_SPINS_HELD such
 * rounds an operation that holds latches restarts, which releases them
 * (someone may need one of them to end the transaction that the
 * checkpoint waits for), and after BM_FRAME_WAIT_MS in all the load fails
 * with -ENOMEM, logged once, rather than wait for ever.
 *
 * What keeps frames available at all: the journal keeps dirty pages below
 * jr_room (at most five eighths of the pool, bm_journal.c), and callers
 * that hold many pages at once across nested operations (a read reply
 * straight from the pool) take them from a pin budget first (bm_pin_try,
 * an eighth of the pool), and copy instead when it is spent. What is left
 * is clean and unpinned but for the few guards each running operation
 * holds (BM_MAX_HELD at most per level).
 */
#include "engine/bm_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "engine/lockorder.h"
#include "engine/log.h"

/* Fruitless rounds (nothing to evict) before an operation that holds
 * latches restarts to release them. */
#define FRAME_SPINS_HELD 16

static bool frame_take(struct bm *bm)
{
	uint64_t n = atomic_load_explicit(&bm->resident, memory_order_relaxed);
	while (n < bm->capacity)
		if (atomic_compare_exchange_weak(&bm->resident, &n, n + 1))
			return true;
	return false;
}

static void frame_sleep(unsigned us)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000};
	bm_about_to_wait();
	nanosleep(&ts, NULL);
}

/*
 * Reserve a frame (see the top). May do write-back I/O (an eviction batch)
 * and sleep; never waits for a checkpoint. @op is the operation the frame
 * is for, or NULL for a prefetch, which gives up (-EAGAIN) rather than
 * sleep. May hold: page latches, the caller's inode locks, a transaction.
 * Returns 0, 1 when @op should restart to release its latches (it has
 * waited FRAME_SPINS_HELD rounds), or -ENOMEM after bm->frame_wait_ms.
 */
static int frame_reserve(struct bm *bm, struct bm_thread *t, struct bm_op *op)
{
	uint64_t t0 = op ? op->frame_wait_ns : 0;
	unsigned sleep_us = 50;
	bool waiting = false; /* in the lock-holder table (lockorder.h) */

	for (unsigned round = 0;; round++) {
		if (frame_take(bm))
			break;
		unsigned dropped = bm_evict_batch(bm, t);
		if (frame_take(bm))
			break;
		if (dropped > 0)
			continue; /* taken by others meanwhile: evict again */
		if (round < 4) {
			cpu_relax(64); /* another evictor may be mid-batch */
			continue;
		}
		if (!op)
			return -EAGAIN; /* a prefetch, a hint: not worth a wait */
		/* Nothing to evict: every frame is held, or dirty. */
		uint64_t now = lh_now_ns();
		if (t0 == 0) {
			t0 = now;
			atomic_fetch_add_explicit(&bm->frame_waits, 1, memory_order_relaxed);
		}
		bm_checkpoint_kick(bm);
		if (op && op->nheld > 0 && round >= FRAME_SPINS_HELD) {
			op->frame_wait_ns = t0; /* the bound counts across restarts */
			if (waiting)
				lo_wait_end();
			return 1;
		}
		if (now - t0 > (uint64_t)bm->frame_wait_ms * 1000000) {
			atomic_fetch_add_explicit(&bm->frame_fails, 1, memory_order_relaxed);
			if (!atomic_exchange(&bm->frame_fail_logged, true))
				vs_log(VS_LOG_ERR,
				       "%s: no frame came free in %u ms: the pool (%llu pages) is all "
				       "held or dirty; failing the access with ENOMEM (logged once)",
				       bm->path, bm->frame_wait_ms, (unsigned long long)bm->capacity);
			if (op)
				op->frame_wait_ns = 0;
			if (waiting)
				lo_wait_end();
			return -ENOMEM;
		}
		if (!waiting)
			lo_wait_begin_at(LO_WAIT_FRAME, 0, t0);
		waiting = true;
		frame_sleep(sleep_us);
		if (sleep_us < 5000)
			sleep_us *= 2;
	}
	if (op)
		op->frame_wait_ns = 0;
	if (waiting)
		lo_wait_end();
	return 0;
}

bool bm_pin_try(struct bm *bm, unsigned n)
{
	uint64_t cur = atomic_load_explicit(&bm->pinned, memory_order_relaxed);
	while (cur + n <= bm->pin_max)
		if (atomic_compare_exchange_weak(&bm->pinned, &cur, cur + n))
			return true;
	return false;
}

void bm_pin_release(struct bm *bm, unsigned n)
{
	atomic_fetch_sub_explicit(&bm->pinned, n, memory_order_relaxed);
}

/* A page just read from the image into its frame: count the read and check
 * the page against its checksum @want; a good one goes into the fault
 * histogram with the time since @t0. Returns whether it is good, and in
 * *ret_got what it hashes to. */
static bool load_verify(struct bm *bm, struct bm_thread *t, uint64_t pid, uint64_t want,
			uint64_t t0, uint64_t *ret_got)
{
	uint64_t got = bm_page_csum(bm_page(bm, pid));
	BM_COUNT(t, loads, 1);
	BM_COUNT(t, read_bytes, BM_PAGE_SIZE);
	if (got == want)
		lh_record(&bm->fault_lat, lh_now_ns() - t0);
	*ret_got = got;
	return got == want;
}

/* A page read from the image does not match its checksum: count and log
 * it (with its pid and offset); the caller fails the access. */
static void csum_mismatch(struct bm *bm, struct bm_thread *t, uint64_t pid, uint64_t want,
			  uint64_t got)
{
	BM_COUNT(t, csum_errors, 1);
	if (want == BM_CSUM_UNKNOWN) {
		vs_log(VS_LOG_ERR, "%s: page %llu cannot be verified: its checksum was lost with "
				   "a damaged checksum-table page (run fsck.virtuscale)",
		       bm->path, (unsigned long long)pid);
		return;
	}
	vs_log(VS_LOG_ERR, "%s: checksum mismatch on page %llu (image offset %llu): "
			   "expected %016llx, found %016llx", bm->path, (unsigned long long)pid,
	       (unsigned long long)(pid << BM_PAGE_SHIFT), (unsigned long long)want,
	       (unsigned long long)got);
}

/* Undo the loads of @n pages the caller locked from EVICTED and gave a
 * frame (and a count in bm->resident), not yet in the resident set: the
 * frames go back, the pages are evicted again. */
static void load_undo(struct bm *bm, struct bm_thread *t, const uint64_t *pids, unsigned n)
{
	if (n == 0)
		return;
	mem_free(bm->mem, t->iface, pids, n);
	atomic_fetch_sub(&bm->resident, n);
	for (unsigned i = 0; i < n; i++)
		ps_unlock_evicted(state_of(bm, pids[i]));
}

/* Bring page @pid in. The caller holds it PS_LOCKED (taken from EVICTED).
 * On failure the page is put back as evicted and the operation fails; when
 * frames are short, it may restart instead (frame_reserve). */
void bm_page_load(struct bm_op *op, uint64_t pid, bool fresh)
{
	struct bm *bm = op->bm;
	struct bm_thread *t = op->thread;
	uint64_t want = atomic_load_explicit(&bm->csum[pid], memory_order_relaxed);
	bool from_image = !fresh && want != 0;
	uint64_t t0;
	int r;

	r = frame_reserve(bm, t, op);
	if (r != 0) {
		ps_unlock_evicted(state_of(bm, pid));
		if (r > 0)
			bm_restart(op);
		bm_fail(op, r);
	}
	t0 = from_image ? lh_now_ns() : 0;
	/* -ENOMEM: the exmap backend ran out of frames (its free list lags our
	 * count while other threads' FREE batches are in flight): evict and
	 * retry. Upstream exmap also reports a failed read as a short read,
	 * which looks the same, so the retries are bounded. */
	if (from_image)
		bm_about_to_wait();
	for (unsigned tries = 0;; tries++) {
		if (!from_image)
			r = mem_alloc(bm->mem, t->iface, pid);
		else
			r = mem_read(bm->mem, t->iface, pid);
		if (r != -ENOMEM)
			break;
		if (tries == 100) {
			r = -EIO;
			break;
		}
		bm_evict_batch(bm, t);
	}
	uint64_t got;
	if (r == 0 && from_image) {
		if (!load_verify(bm, t, pid, want, t0, &got)) {
			csum_mismatch(bm, t, pid, want, got);
			if (!bm_dup_load(bm, t, pid, want))
				r = -EUCLEAN;
		}
	} else if (r == 0) {
		BM_COUNT(t, zero_loads, 1);
	} else {
		BM_COUNT(t, io_errors, 1);
		vs_log(VS_LOG_ERR, "%s: cannot read page %llu: %s", bm->path,
		       (unsigned long long)pid, strerror(-r));
	}
	if (r < 0) {
		load_undo(bm, t, &pid, 1);
		bm_fail(op, r == -EUCLEAN ? -EUCLEAN : -EIO);
	}
	bm_rset_insert(bm, pid);
	bm_trace_note(bm, t, BM_TRACE_LOAD, pid);
}


/* Load the @n evicted pages @pids, which the caller has locked, and leave
 * them resident and unlocked; a page that cannot be loaded goes back to
 * evicted. */
static void prefetch_locked(struct bm *bm, struct bm_thread *t, const uint64_t *pids,
			    unsigned n, bool fresh)
{
	bool ok[BM_BATCH_MAX];
	int r = 0;

	for (unsigned i = 0; i < n; i++) {
		if (frame_reserve(bm, t, NULL) < 0) {
			/* No frames: leave the pages to their fixes. */
			atomic_fetch_sub(&bm->resident, i);
			for (unsigned k = 0; k < n; k++)
				ps_unlock_evicted(state_of(bm, pids[k]));
			return;
		}
	}
	if (fresh) {
		r = mem_alloc_many(bm->mem, t->iface, pids, n);
		for (unsigned i = 0; i < n; i++)
			ok[i] = r == 0;
		if (r == 0)
			BM_COUNT(t, zero_loads, n);
	} else {
		/* Never-written pages read as zeros; the others in runs. */
		for (unsigned i = 0; i < n;) {
			uint64_t sum = atomic_load_explicit(&bm->csum[pids[i]], memory_order_relaxed);
			if (sum == 0) {
				ok[i] = mem_alloc(bm->mem, t->iface, pids[i]) == 0;
				if (ok[i])
					BM_COUNT(t, zero_loads, 1);
				i++;
				continue;
			}
			unsigned j = i + 1;
			while (j < n && pids[j] == pids[j - 1] + 1 &&
			       atomic_load_explicit(&bm->csum[pids[j]], memory_order_relaxed) != 0)
				j++;
			/* each page's fault time is the run's, to its check */
			bm_about_to_wait();
			uint64_t t0 = lh_now_ns(), got;
			r = mem_read_run(bm->mem, t->iface, pids[i], j - i);
			for (unsigned k = i; k < j; k++) {
				uint64_t want = atomic_load_explicit(&bm->csum[pids[k]],
								     memory_order_relaxed);
				ok[k] = r == 0 && load_verify(bm, t, pids[k], want, t0, &got);
			}
			i = j;
		}
	}
	uint64_t bad[BM_BATCH_MAX];
	unsigned nbad = 0;
	for (unsigned i = 0; i < n; i++) {
		if (!ok[i]) {
			bad[nbad++] = pids[i];
			continue;
		}
		bm_rset_insert(bm, pids[i]);
		ps_unlock_x(state_of(bm, pids[i]), false);
		bm_trace_note(bm, t, BM_TRACE_PREFETCH, pids[i]);
	}
	load_undo(bm, t, bad, nbad); /* left for their fixes to report */
}

void bm_prefetch(struct bm *bm, const uint64_t *pids, unsigned n, bool fresh)
{
	struct bm_thread *t = bm_thread_get(bm);
	uint64_t got[BM_BATCH_MAX];
	unsigned m = 0;

	/* At most a quarter of the pool, so that a prefetch never evicts what
	 * it just brought in. */
	if ((uint64_t)n > bm->capacity / 4)
		return;
	for (unsigned i = 0; i < n; i++) {
		uint64_t pid = pids[i];
		if (pid < bm->first_data || pid >= bm->page_count)
			continue;
		/* A page the journal will have to carry (in use at the last
		 * checkpoint, freed and allocated again since) comes in through
		 * its fix, which first checks the dirty limit outside a
		 * transaction: taking many at once here would skip that check
		 * and could dirty more than the journal holds. */
		if (fresh && bm->journal && !bm_home_free(bm, pid))
			continue;
		/* A zero frame stands only for a page that was never written. */
		if (fresh && atomic_load_explicit(&bm->csum[pid], memory_order_relaxed) != 0)
			continue;
		ps_word *ps = state_of(bm, pid);
		uint64_t w = ps_load(ps);
		if (ps_state(w) != PS_EVICTED || !ps_try_lock_x(ps, w))
			continue; /* resident, or someone is at it */
		got[m++] = pid;
		if (m == BM_BATCH_MAX) {
			prefetch_locked(bm, t, got, m, fresh);
			m = 0;
		}
	}
	if (m > 0)
		prefetch_locked(bm, t, got, m, fresh);
}

/* Is @pid's state word still @w (evicted, and not loaded since)? */
static bool through_ok(struct bm *bm, uint64_t pid, uint64_t w)
{
	return ps_load(state_of(bm, pid)) == w;
}

/* The end of the run that starts at the selected page @i: the selected
 * pages after it whose pids follow on, one I/O for all. */
static unsigned run_end(const uint64_t *pids, const bool *sel, unsigned n, unsigned i)
{
	unsigned j = i + 1;
	while (j < n && sel[j] && pids[j] == pids[j - 1] + 1)
		j++;
	return j;
}

int bm_read_through(struct bm *bm, const uint64_t *pids, unsigned n, uint8_t *buf, bool *got)
{
	struct bm_thread *t = bm_thread_get(bm);
	uint64_t words[BM_READ_THROUGH_MAX];
	int r = 0;

	if (n > BM_READ_THROUGH_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		uint64_t pid = pids[i];
		got[i] = false;
		if (pid < bm->first_data || pid >= bm->page_count)
			continue;
		words[i] = ps_load(state_of(bm, pid));
		got[i] = ps_state(words[i]) == PS_EVICTED;
	}
	/* Runs of consecutive evicted pids, one read each. */
	for (unsigned i = 0; i < n && r == 0;) {
		if (!got[i]) {
			i++;
			continue;
		}
		unsigned j = run_end(pids, got, n, i);
		bm_about_to_wait();
		uint64_t t0 = lh_now_ns();
		r = bm_pread_all(bm->fd, buf + (size_t)i * BM_PAGE_SIZE,
				 (size_t)(j - i) * BM_PAGE_SIZE, pids[i] << BM_PAGE_SHIFT);
		if (r < 0) {
			BM_COUNT(t, io_errors, 1);
			vs_log(VS_LOG_ERR, "%s: cannot read pages %llu+%u: %s", bm->path,
			       (unsigned long long)pids[i], j - i, strerror(-r));
			r = -EIO;
			break;
		}
		uint64_t dt = (lh_now_ns() - t0) / (j - i);
		for (unsigned k = i; k < j; k++) {
			uint8_t *page = buf + (size_t)k * BM_PAGE_SIZE;
			uint64_t want = atomic_load_explicit(&bm->csum[pids[k]], memory_order_relaxed);
			if (want == 0) {
				/* never written: its content is zeros, whatever the
				 * image holds there */
				memset(page, 0, BM_PAGE_SIZE);
			} else {
				uint64_t have = bm_page_csum(page);
				BM_COUNT(t, loads, 1);
				BM_COUNT(t, read_bytes, BM_PAGE_SIZE);
				if (have != want && through_ok(bm, pids[k], words[k])) {
					csum_mismatch(bm, t, pids[k], want, have);
					r = -EUCLEAN;
					break;
				}
				lh_record(&bm->fault_lat, dt);
			}
			/* Loaded (and perhaps changed) meanwhile: the pool has it. */
			if (!through_ok(bm, pids[k], words[k]))
				got[k] = false;
			else
				BM_COUNT(t, read_through, 1);
		}
		i = j;
	}
	return r;
}

int bm_write_through(struct bm *bm, const uint64_t *pids, unsigned n, const uint8_t *buf,
		     bool *done)
{
	struct bm_thread *t = bm_thread_get(bm);
	bool locked[BM_READ_THROUGH_MAX];
	int r = 0;

	if (n > BM_READ_THROUGH_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		uint64_t pid = pids[i];
		done[i] = locked[i] = false;
		/* (a refused transaction may change nothing: bm_txn_begin) */
		if (pid < bm->first_data || pid >= bm->page_count || bm->read_only ||
		    bm_txn_refused)
			continue;
		/* never written, and nothing a crash can bring back (bm_journal.c) */
		if (atomic_load_explicit(&bm->csum[pid], memory_order_relaxed) != 0 ||
		    (bm->journal && !bm_home_free(bm, pid)))
			continue;
		ps_word *ps = state_of(bm, pid);
		uint64_t w = ps_load(ps);
		locked[i] = ps_state(w) == PS_EVICTED && ps_try_lock_x(ps, w);
	}
	/* Runs of consecutive locked pids, one write each. */
	for (unsigned i = 0; i < n;) {
		if (!locked[i]) {
			i++;
			continue;
		}
		unsigned j = run_end(pids, locked, n, i);
		int w = r < 0 ? r
			      : bm_io_write(bm, buf + (size_t)i * BM_PAGE_SIZE,
					    (size_t)(j - i) * BM_PAGE_SIZE, pids[i] << BM_PAGE_SHIFT);
		for (unsigned k = i; k < j; k++) {
			if (w == 0) {
				bm_csum_set(bm, pids[k],
					    bm_page_csum(buf + (size_t)k * BM_PAGE_SIZE));
				done[k] = true;
			}
			/* (a failed write leaves the checksum 0: the page reads
			 * as never written, zeros) */
			ps_unlock_evicted(state_of(bm, pids[k]));
		}
		if (w == 0) {
			BM_COUNT(t, writebacks, j - i);
			BM_COUNT(t, write_bytes, (uint64_t)(j - i) * BM_PAGE_SIZE);
			BM_COUNT(t, write_through, j - i);
		} else if (r == 0) {
			BM_COUNT(t, io_errors, 1);
			vs_log(VS_LOG_ERR, "%s: cannot write pages %llu+%u: %s", bm->path,
			       (unsigned long long)pids[i], j - i, strerror(-w));
			r = w;
		}
		i = j;
	}
	return r;
}
