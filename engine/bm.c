/*
 * bm.c: the buffer manager: residency, guards, operations, eviction, space.
 *
 * The design follows vmcache (Leis et al., SIGMOD 2023): page p sits at
 * base + p*4096 for the life of the pool; a page-state word per pid (see
 * page_state.h) is the only synchronisation on the hit path; a hash set of
 * resident pids doubles as the clock for eviction. What we add: checksums
 * kept in a table beside the pages, a persistent allocator that reuses
 * freed pages, write-back with io_uring, and an explicit restart protocol for
 * C (bm_run / siglongjmp) in place of C++ exceptions.
 *
 * Frame accounting: bm->resident counts frames in use. A thread that needs a
 * frame reserves one by compare-and-swap below bm->capacity, evicting a
 * batch first when there is none; so the pool never holds more than
 * capacity frames, and no lock is held while waiting for I/O.
 */
#include "engine/bm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "engine/bm_fault.h"
#include "engine/log.h"

#define RSET_EMPTY UINT64_MAX
#define RSET_TOMB  (UINT64_MAX - 1)

/* Restart causes passed through siglongjmp. */
enum { JUMP_RESTART = 1, JUMP_FAIL = 2, JUMP_SEGV = 3 };

/* Spins on a busy lock before an operation that holds other guards gives
 * up and restarts (so two operations can never wait on each other). */
#define SPIN_LIMIT 1024
/* Restarts for an out-of-range pid before we call it corruption. */
#define BAD_PID_LIMIT 64

static _Thread_local struct bm_op *tls_op;
static _Thread_local uint64_t tls_bm_id;
static _Thread_local struct bm_thread *tls_thread;
static _Atomic uint64_t bm_next_id = 1;

static struct sigaction segv_previous;
static pthread_mutex_t segv_mu = PTHREAD_MUTEX_INITIALIZER;

static inline ps_word *state_of(struct bm *bm, uint64_t pid)
{
	return &bm->state[pid];
}

void *bm_page(struct bm *bm, uint64_t pid)
{
	return bm->base + (pid << BM_PAGE_SHIFT);
}

uint64_t bm_page_count(const struct bm *bm)
{
	return bm->page_count;
}

uint64_t bm_pool_pages(const struct bm *bm)
{
	return bm->capacity;
}

uint64_t bm_first_data_pid(const struct bm *bm)
{
	return bm->first_data;
}

bool bm_was_clean(const struct bm *bm)
{
	return bm->was_clean;
}

static void cpu_relax(unsigned spins)
{
	if (spins < 64)
		__builtin_ia32_pause();
	else
		sched_yield();
}

/* ------------------------------------------------------------------ */
/* Resident set                                                       */

static uint64_t rset_hash(uint64_t pid)
{
	/* A multiplicative hash spreads consecutive pids (extents, tree
	 * levels allocated together) over the table. */
	return (pid * UINT64_C(0x9E3779B97F4A7C15)) >> 11;
}

static int rset_init(struct bm_rset *rs, uint64_t frames)
{
	uint64_t n = 64;
	while (n < frames + frames / 2)
		n <<= 1;
	rs->slots = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rs->slots == MAP_FAILED) {
		rs->slots = NULL;
		return -ENOMEM;
	}
	memset((void *)rs->slots, 0xff, n * 8);
	rs->mask = n - 1;
	atomic_init(&rs->clock, 0);
	return 0;
}

static void rset_free(struct bm_rset *rs)
{
	if (rs->slots)
		munmap((void *)rs->slots, (rs->mask + 1) * 8);
}

static void rset_insert(struct bm_rset *rs, uint64_t pid)
{
	uint64_t i = rset_hash(pid) & rs->mask;
	for (;;) {
		uint64_t cur = atomic_load_explicit(&rs->slots[i], memory_order_relaxed);
		if ((cur == RSET_EMPTY || cur == RSET_TOMB) &&
		    atomic_compare_exchange_strong(&rs->slots[i], &cur, pid))
			return;
		i = (i + 1) & rs->mask;
	}
}

static void rset_remove(struct bm_rset *rs, uint64_t pid)
{
	uint64_t i = rset_hash(pid) & rs->mask;
	for (uint64_t n = 0; n <= rs->mask; n++) {
		uint64_t cur = atomic_load_explicit(&rs->slots[i], memory_order_relaxed);
		if (cur == RSET_EMPTY)
			break;
		if (cur == pid) {
			atomic_store_explicit(&rs->slots[i], RSET_TOMB, memory_order_relaxed);
			return;
		}
		i = (i + 1) & rs->mask;
	}
	vs_log(VS_LOG_ERR, "internal: pid %llu missing from the resident set",
	       (unsigned long long)pid);
	abort();
}

/* ------------------------------------------------------------------ */
/* Threads                                                            */

static void counters_add(struct bm_counters *dst, const struct bm_counters *src)
{
#define ADD(f) atomic_fetch_add_explicit(&dst->f, atomic_load(&src->f), memory_order_relaxed)
	ADD(hits); ADD(loads); ADD(zero_loads); ADD(evictions); ADD(evict_batches);
	ADD(read_through); ADD(write_through);
	ADD(writebacks); ADD(cluster_writebacks); ADD(read_bytes); ADD(write_bytes);
	ADD(csum_errors); ADD(io_errors);
	ADD(restarts); ADD(segv_restarts);
#undef ADD
}

static void thread_release(struct bm_thread *t)
{
	struct bm *bm = t->bm;
	counters_add(&bm->retired, &t->c);
	if (t->prev)
		t->prev->next = t->next;
	else
		bm->threads = t->next;
	if (t->next)
		t->next->prev = t->prev;
	if (t->ring_ok)
		io_uring_queue_exit(&t->ring);
	mem_thread_detach(bm->mem, t->iface);
	free(t->staging);
	free(t);
}

static void thread_destructor(void *p)
{
	struct bm_thread *t = p;
	struct bm *bm = t->bm;
	pthread_mutex_lock(&bm->threads_mu);
	thread_release(t);
	pthread_mutex_unlock(&bm->threads_mu);
}

struct bm_thread *bm_thread_get(struct bm *bm)
{
	struct bm_thread *t;

	if (tls_bm_id == bm->id)
		return tls_thread;
	t = pthread_getspecific(bm->key);
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t || posix_memalign((void **)&t->staging, BM_PAGE_SIZE,
					 (size_t)bm->wb_max * BM_PAGE_SIZE)) {
			vs_log(VS_LOG_ERR, "out of memory for a thread context");
			abort();
		}
		t->bm = bm;
		t->iface = mem_thread_attach(bm->mem);
		if (t->iface < 0) {
			vs_log(VS_LOG_ERR, "no backend interface left for a new thread");
			abort();
		}
		pthread_mutex_lock(&bm->threads_mu);
		t->next = bm->threads;
		if (t->next)
			t->next->prev = t;
		bm->threads = t;
		pthread_mutex_unlock(&bm->threads_mu);
		pthread_setspecific(bm->key, t);
	}
	tls_bm_id = bm->id;
	tls_thread = t;
	return t;
}

/* ------------------------------------------------------------------ */
/* Operations                                                         */

static void hold_add(struct bm_op *op, uint64_t pid, enum bm_mode mode)
{
	if (op->nheld == BM_MAX_HELD) {
		vs_log(VS_LOG_ERR, "internal: an operation holds more than %d guards",
		       BM_MAX_HELD);
		abort();
	}
	op->held[op->nheld].pid = pid;
	op->held[op->nheld].mode = mode;
	op->nheld++;
}

static void hold_remove(struct bm_op *op, uint64_t pid)
{
	for (int i = op->nheld - 1; i >= 0; i--) {
		if (op->held[i].pid == pid) {
			op->held[i] = op->held[op->nheld - 1];
			op->nheld--;
			return;
		}
	}
	vs_log(VS_LOG_ERR, "internal: releasing page %llu that the operation does not hold",
	       (unsigned long long)pid);
	abort();
}

/* Remember that @pid turned dirty, for the next checkpoint (journal only:
 * nothing else drains the list). On a failed allocation the list is
 * dropped and bm->dl_lost makes the checkpoint walk the pool instead. */
void bm_dirty_note(struct bm *bm, uint64_t pid)
{
	pthread_mutex_lock(&bm->dl_mu);
	if (bm->dl_n == bm->dl_cap && !bm->dl_lost) {
		size_t cap = bm->dl_cap ? 2 * bm->dl_cap : 1024;
		uint64_t *p = realloc(bm->dl, cap * sizeof(*p));
		if (p) {
			bm->dl = p;
			bm->dl_cap = cap;
		} else {
			bm->dl_lost = true;
		}
	}
	if (!bm->dl_lost)
		bm->dl[bm->dl_n++] = pid;
	pthread_mutex_unlock(&bm->dl_mu);
}

static void unlock_x(struct bm *bm, uint64_t pid, bool dirty)
{
	if (ps_unlock_x(state_of(bm, pid), dirty)) {
		atomic_fetch_add_explicit(&bm->dirty, 1, memory_order_relaxed);
		if (bm->journal)
			bm_dirty_note(bm, pid);
	}
}

/* Release every guard the operation holds. An X guard is released dirty:
 * the contract says nothing was changed before a restart, but a failure
 * may come after changes that must not be lost. */
static void release_all(struct bm_op *op)
{
	while (op->nheld > 0) {
		op->nheld--;
		uint64_t pid = op->held[op->nheld].pid;
		if (op->held[op->nheld].mode == BM_S)
			ps_unlock_s(state_of(op->bm, pid));
		else
			unlock_x(op->bm, pid, true);
	}
}

static void segv_handler(int sig, siginfo_t *si, void *uctx)
{
	struct bm_op *op = tls_op;
	uint8_t *addr = si->si_addr;

	if (op && addr >= op->bm->base &&
	    addr < op->bm->base + (op->bm->page_count << BM_PAGE_SHIFT)) {
		BM_COUNT(op->thread, segv_restarts, 1);
		siglongjmp(op->env, JUMP_SEGV);
	}
	/* Not ours: put the previous disposition back and return, so the
	 * instruction faults again and the process dies (or the previous
	 * handler, e.g. a sanitizer's, reports it) as it would without us. */
	sigaction(SIGSEGV, &segv_previous, NULL);
}

/* Install the handler unless it is in place already. Checked at every open,
 * not once per process: a test harness or a library may have put its own
 * handler in since (ours then chains to it for faults outside the pool). */
static void segv_install(void)
{
	struct sigaction sa, cur;
	pthread_mutex_lock(&segv_mu);
	sigaction(SIGSEGV, NULL, &cur);
	if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == segv_handler) {
		pthread_mutex_unlock(&segv_mu);
		return;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = segv_handler;
	/* NODEFER: we leave the handler by siglongjmp without restoring the
	 * mask (sigsetjmp(env, 0)), so SIGSEGV must not be blocked in it. */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &segv_previous);
	pthread_mutex_unlock(&segv_mu);
}

int bm_run(struct bm *bm, bm_op_fn fn, void *arg)
{
	/* The op lives in memory (its address escapes to fn and tls_op), so
	 * its fields are re-read after a siglongjmp, not kept in registers. */
	struct bm_op op;
	int jr, r;

	op.bm = bm;
	op.thread = bm_thread_get(bm);
	op.outer = tls_op;
	op.nheld = 0;
	op.err = 0;
	op.restarts = 0;
	tls_op = &op;

	jr = sigsetjmp(op.env, 0);
	if (jr != 0) {
		tls_op = &op;
		release_all(&op);
		if (jr == JUMP_FAIL) {
			tls_op = op.outer;
			return op.err;
		}
		if (jr == JUMP_SEGV) {
			/* SA_NODEFER keeps SIGSEGV unblocked when we leave the
			 * handler by jumping, but a wrapper between the kernel
			 * and us (a sanitizer's) may have blocked it; a blocked
			 * SIGSEGV at the next fault would kill the process. One
			 * syscall, on this rare path only. */
			sigset_t segv;
			sigemptyset(&segv);
			sigaddset(&segv, SIGSEGV);
			pthread_sigmask(SIG_UNBLOCK, &segv, NULL);
		}
		op.restarts++;
		BM_COUNT(op.thread, restarts, 1);
		if (op.restarts > 8)
			cpu_relax(op.restarts);
	}
	r = fn(&op, arg);
	if (op.nheld != 0) {
		vs_log(VS_LOG_ERR, "internal: an operation returned holding %d guards", op.nheld);
		abort();
	}
	tls_op = op.outer;
	return r;
}

_Noreturn void bm_restart(struct bm_op *op)
{
	siglongjmp(op->env, JUMP_RESTART);
}

_Noreturn void bm_fail(struct bm_op *op, int err)
{
	op->err = err;
	siglongjmp(op->env, JUMP_FAIL);
}

/* A pid read from a page may be garbage when the read was optimistic; a
 * restart re-reads it. When it stays out of range the page itself is bad. */
static void check_pid(struct bm_op *op, uint64_t pid)
{
	if (pid < op->bm->page_count && pid != 0)
		return;
	if (op->restarts < BAD_PID_LIMIT)
		bm_restart(op);
	bm_fail(op, VS_CORRUPT("reference to page %llu outside the image (%llu pages)",
			       (unsigned long long)pid,
			       (unsigned long long)op->bm->page_count));
}

/* ------------------------------------------------------------------ */
/* Faulting in                                                        */

static void evict_batch(struct bm *bm, struct bm_thread *t);

/* Reserve a frame, evicting while the pool is full. */
static void frame_reserve(struct bm *bm, struct bm_thread *t)
{
	bm_journal_pressure(bm);
	for (unsigned spins = 0;; spins++) {
		uint64_t n = atomic_load_explicit(&bm->resident, memory_order_relaxed);
		if (n < bm->capacity) {
			if (atomic_compare_exchange_weak(&bm->resident, &n, n + 1))
				return;
			continue;
		}
		evict_batch(bm, t);
		if (spins > 4)
			cpu_relax(spins);
	}
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
 * On failure the page is put back as evicted and the operation fails. */
static void page_load(struct bm_op *op, uint64_t pid, bool fresh)
{
	struct bm *bm = op->bm;
	struct bm_thread *t = op->thread;
	uint64_t want = atomic_load_explicit(&bm->csum[pid], memory_order_relaxed);
	bool from_image = !fresh && want != 0;
	uint64_t t0;
	int r;

	frame_reserve(bm, t);
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
		evict_batch(bm, t);
	}
	uint64_t got;
	if (r == 0 && from_image) {
		if (!load_verify(bm, t, pid, want, t0, &got)) {
			csum_mismatch(bm, t, pid, want, got);
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
	rset_insert(&bm->rset, pid);
}

/* Load an evicted page we just locked, and leave it locked. */
static inline void *fix_loaded_x(struct bm_op *op, uint64_t pid, bool fresh)
{
	page_load(op, pid, fresh);
	return bm_page(op->bm, pid);
}

const void *bm_fix_o(struct bm_op *op, uint64_t pid, struct bm_guard *g)
{
	struct bm *bm = op->bm;
	ps_word *ps;

	check_pid(op, pid);
	ps = state_of(bm, pid);
	/* The state word and the page's first lines are two independent cache
	 * misses on a tree descent; start the page's now so they overlap. A
	 * prefetch never faults, even on a page without a frame. */
	__builtin_prefetch(bm_page(bm, pid));
	__builtin_prefetch((const char *)bm_page(bm, pid) + 64);
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		unsigned s = ps_state(w);
		if (s == PS_EVICTED) {
			if (ps_try_lock_x(ps, w)) {
				fix_loaded_x(op, pid, false);
				ps_unlock_x(ps, false);
			}
			continue;
		}
		if (s == PS_LOCKED) {
			if (op->nheld > 0 && spins > SPIN_LIMIT)
				bm_restart(op);
			cpu_relax(spins);
			continue;
		}
		if (s == PS_MARKED)
			ps_clear_mark(ps, w);
		BM_COUNT(op->thread, hits, 1);
		g->pid = pid;
		g->version = w;
		g->mode = BM_O;
		g->page = bm_page(bm, pid);
		return g->page;
	}
}

void bm_check(struct bm_op *op, const struct bm_guard *g)
{
	/* Everything read from the page must be read before the state word
	 * is looked at again. */
	atomic_thread_fence(memory_order_acquire);
	uint64_t w = atomic_load_explicit(state_of(op->bm, g->pid), memory_order_relaxed);
	if (w == g->version)
		return;
	if (ps_version(w) == ps_version(g->version)) {
		unsigned s = ps_state(w);
		if (s != PS_EVICTED && s != PS_LOCKED)
			return; /* only readers came and went, or the mark moved */
	}
	bm_restart(op);
}

/* Record a shared or exclusive guard in @g and in the operation's list. */
static void *guard_hold(struct bm_op *op, struct bm_guard *g, uint64_t pid, enum bm_mode mode)
{
	hold_add(op, pid, mode);
	g->pid = pid;
	g->mode = mode;
	g->version = 0;
	g->page = bm_page(op->bm, pid);
	return g->page;
}

const void *bm_fix_s(struct bm_op *op, uint64_t pid, struct bm_guard *g)
{
	struct bm *bm = op->bm;
	ps_word *ps;

	check_pid(op, pid);
	ps = state_of(bm, pid);
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		unsigned s = ps_state(w);
		if (s == PS_EVICTED) {
			if (ps_try_lock_x(ps, w)) {
				fix_loaded_x(op, pid, false);
				ps_unlock_x(ps, false);
			}
			continue;
		}
		if (ps_try_lock_s(ps, w)) {
			BM_COUNT(op->thread, hits, 1);
			break;
		}
		if (op->nheld > 0 && spins > SPIN_LIMIT)
			bm_restart(op);
		cpu_relax(spins);
	}
	return guard_hold(op, g, pid, BM_S);
}

static void *fix_x(struct bm_op *op, uint64_t pid, struct bm_guard *g, bool fresh)
{
	struct bm *bm = op->bm;
	ps_word *ps;

	check_pid(op, pid);
	bm_txn_check(op);
	ps = state_of(bm, pid);
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		if (ps_try_lock_x(ps, w)) {
			if (ps_state(w) == PS_EVICTED)
				fix_loaded_x(op, pid, fresh);
			else
				BM_COUNT(op->thread, hits, 1);
			break;
		}
		if (op->nheld > 0 && spins > SPIN_LIMIT)
			bm_restart(op);
		cpu_relax(spins);
	}
	return guard_hold(op, g, pid, BM_X);
}

void *bm_fix_x(struct bm_op *op, uint64_t pid, struct bm_guard *g)
{
	return fix_x(op, pid, g, false);
}

void *bm_fix_x_new(struct bm_op *op, uint64_t pid, struct bm_guard *g)
{
	return fix_x(op, pid, g, true);
}

/* Load the @n evicted pages @pids, which the caller has locked, and leave
 * them resident and unlocked; a page that cannot be loaded goes back to
 * evicted. */
static void prefetch_locked(struct bm *bm, struct bm_thread *t, const uint64_t *pids,
			    unsigned n, bool fresh)
{
	bool ok[BM_BATCH_MAX];
	int r = 0;

	for (unsigned i = 0; i < n; i++)
		frame_reserve(bm, t);
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
		rset_insert(&bm->rset, pids[i]);
		ps_unlock_x(state_of(bm, pids[i]), false);
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

void bm_upgrade_x(struct bm_op *op, struct bm_guard *g)
{
	ps_word *ps = state_of(op->bm, g->pid);
	bm_txn_check(op);
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		if (ps_version(w) != ps_version(g->version))
			bm_restart(op);
		unsigned s = ps_state(w);
		if (ps_is_free(s)) {
			if (ps_cas(ps, &w, ps_with_state(w, PS_LOCKED)))
				break;
			continue;
		}
		if (s == PS_LOCKED || s == PS_EVICTED || spins > SPIN_LIMIT)
			bm_restart(op);
		cpu_relax(spins); /* readers will leave */
	}
	hold_add(op, g->pid, BM_X);
	g->mode = BM_X;
}

void bm_upgrade_s(struct bm_op *op, struct bm_guard *g)
{
	ps_word *ps = state_of(op->bm, g->pid);
	for (;;) {
		uint64_t w = ps_load(ps);
		if (ps_version(w) != ps_version(g->version))
			bm_restart(op);
		unsigned s = ps_state(w);
		if (s == PS_LOCKED || s == PS_EVICTED || s == PS_SHARED_MAX)
			bm_restart(op);
		if (ps_try_lock_s(ps, w))
			break;
	}
	hold_add(op, g->pid, BM_S);
	g->mode = BM_S;
}

void bm_unfix(struct bm_op *op, struct bm_guard *g)
{
	switch (g->mode) {
	case BM_O:
		bm_check(op, g);
		break;
	case BM_S:
		hold_remove(op, g->pid);
		ps_unlock_s(state_of(op->bm, g->pid));
		break;
	case BM_X:
		hold_remove(op, g->pid);
		unlock_x(op->bm, g->pid, true);
		break;
	}
	g->mode = 0;
}

void bm_unfix_clean(struct bm_op *op, struct bm_guard *g)
{
	if (g->mode != BM_X) {
		bm_unfix(op, g);
		return;
	}
	hold_remove(op, g->pid);
	unlock_x(op->bm, g->pid, false);
	g->mode = 0;
}

/* ------------------------------------------------------------------ */
/* Write-back and eviction                                            */

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
		for (unsigned done = 0; rr >= 0 && done < nruns; done++) {
			struct io_uring_cqe *cqe;
			rr = io_uring_wait_cqe(&t->ring, &cqe);
			if (rr < 0)
				break;
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
	bm_io_write_batch(bm, t, bufs, pids, n, res);
	/* A checkpoint too large to copy may have taken these pages in while
	 * they were dirty and be writing home from their frames (bm_journal.c):
	 * clean, they could be dropped under that write. They stay dirty, to
	 * wait for its end (which cleans what did not change) or another
	 * write-back. Read after the writes: a checkpoint that starts later
	 * finds them clean and does not take them. */
	bool keep_dirty = bm->journal && atomic_load(&bm->ckpt_pool_io);
	for (unsigned i = 0; i < n; i++) {
		if (res[i] < 0) {
			BM_COUNT(t, io_errors, 1);
			vs_log(VS_LOG_ERR, "%s: cannot write page %llu: %s", bm->path,
			       (unsigned long long)pids[i], strerror(-res[i]));
			continue;
		}
		bm_csum_set(bm, pids[i], sums[i]);
		uint64_t old = keep_dirty ? 0
					  : atomic_fetch_and_explicit(state_of(bm, pids[i]), ~PS_DIRTY,
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

/* Drop the frames of @n pages the caller holds exclusively and clean.
 * Returns how many were dropped (all or, when the backend fails, none). */
static unsigned drop_frames(struct bm *bm, struct bm_thread *t, uint64_t *pids, unsigned n)
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
	for (unsigned i = 0; i < n; i++) {
		rset_remove(&bm->rset, pids[i]);
		ps_unlock_evicted(state_of(bm, pids[i]));
	}
	atomic_fetch_sub(&bm->resident, n);
	BM_COUNT(t, evictions, n);
	return n;
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
 * One clock pass: walk the resident set from the clock hand, marking
 * unlocked pages and collecting pages that were already marked (nobody used
 * them since the hand last passed). Clean candidates are locked exclusively
 * at once; dirty ones shared, written back as one batch, then upgraded;
 * each takes its neighbours along (see Clustering above).
 */
static void evict_batch(struct bm *bm, struct bm_thread *t)
{
	uint64_t clean[BM_BATCH_MAX], dirty[BM_BATCH_MAX];
	int res[BM_BATCH_MAX];
	unsigned nc = 0, nd = 0;
	const uint64_t want = bm->batch;
	const uint64_t slots = bm->rset.mask + 1;
	const uint64_t t0 = lh_now_ns();

	for (uint64_t seen = 0; nc + nd < want && seen < 2 * slots;) {
		uint64_t start = atomic_fetch_add(&bm->rset.clock, 64);
		for (uint64_t k = 0; k < 64 && nc + nd < want; k++, seen++) {
			uint64_t pid = atomic_load_explicit(&bm->rset.slots[(start + k) & bm->rset.mask],
							    memory_order_relaxed);
			if (pid >= RSET_TOMB)
				continue;
			ps_word *ps = state_of(bm, pid);
			uint64_t w = ps_load(ps);
			if (ps_state(w) == PS_UNLOCKED) {
				ps_try_mark(ps, w);
			} else if (ps_state(w) == PS_MARKED) {
				if (ps_dirty(w) && bm->journal && !bm_home_free(bm, pid)) {
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
	if (nd > 0) {
		unsigned nw = cluster_add(bm, dirty, nd, bm->wb_max);
		write_pages(bm, t, dirty, nw, res);
		cluster_release(bm, t, dirty + nd, res + nd, nw - nd);
		for (unsigned i = 0; i < nd; i++) {
			ps_word *ps = state_of(bm, dirty[i]);
			if (res[i] != 0 || !ps_try_upgrade_sx(ps)) {
				ps_unlock_s(ps);
			} else if (ps_dirty(ps_load(ps))) {
				/* write_pages kept it dirty: a checkpoint may
				 * be writing from its frame */
				ps_unlock_x(ps, false);
			} else {
				clean[nc++] = dirty[i];
			}
		}
	}
	unsigned dropped = drop_frames(bm, t, clean, nc);
	BM_COUNT(t, evict_batches, 1);
	lh_record(&bm->evict_lat, lh_now_ns() - t0);
	atomic_fetch_add_explicit(&bm->evict_lat_pages, dropped, memory_order_relaxed);
}

/* Visit every resident pid (a snapshot: pages may come and go meanwhile). */
void bm_rset_each(struct bm *bm, void (*fn)(struct bm *, uint64_t, void *), void *arg)
{
	for (uint64_t i = 0; i <= bm->rset.mask; i++) {
		uint64_t pid = atomic_load_explicit(&bm->rset.slots[i], memory_order_relaxed);
		if (pid < RSET_TOMB)
			fn(bm, pid, arg);
	}
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

static int write_dirty(struct bm *bm)
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
	r = write_dirty(bm);
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
		drop_frames(bm, e->t, e->pids, e->n);
		e->dropped += e->n;
		e->n = 0;
	}
}

int64_t bm_evict_all(struct bm *bm, bool write_dirty_first)
{
	struct evict_all_ctx *e;
	int64_t dropped;

	if (write_dirty_first && !bm->read_only) {
		int r = bm->journal ? bm_checkpoint(bm) : write_dirty(bm);
		if (r < 0)
			return r;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->t = bm_thread_get(bm);
	bm_rset_each(bm, evict_all_one, e);
	drop_frames(bm, e->t, e->pids, e->n);
	dropped = e->dropped + e->n;
	free(e);
	return dropped;
}

/* ------------------------------------------------------------------ */
/* Space                                                              */

static bool bit_get(const uint64_t *bits, uint64_t i)
{
	return (bits[i / 64] >> (i % 64)) & 1;
}

static void bits_set(struct bm *bm, uint64_t first, uint64_t n, bool on)
{
	for (uint64_t i = first; i < first + n; i++) {
		if (on)
			bm->bitmap[i / 64] |= UINT64_C(1) << (i % 64);
		else
			bm->bitmap[i / 64] &= ~(UINT64_C(1) << (i % 64));
		bm->bmp_dirty[i / BM_PIDS_PER_BMP] = 1;
	}
}

/* Find @n clear bits in a row within [from, to); BM_PID_NONE if none. */
static uint64_t find_run(struct bm *bm, uint64_t from, uint64_t to, uint64_t n)
{
	uint64_t run = 0, start = from;
	for (uint64_t i = from; i < to;) {
		if (i % 64 == 0 && run == 0 && bm->bitmap[i / 64] == UINT64_MAX) {
			i += 64; /* a full word: skip it whole */
			start = i;
			continue;
		}
		if (bit_get(bm->bitmap, i)) {
			run = 0;
			start = ++i;
			continue;
		}
		if (++run == n)
			return start;
		i++;
	}
	return BM_PID_NONE;
}

int bm_alloc(struct bm *bm, uint64_t n, uint64_t hint, uint64_t *ret_first)
{
	uint64_t first;

	if (n == 0 || bm->read_only)
		return n == 0 ? -EINVAL : -EROFS;
	pthread_mutex_lock(&bm->alloc_mu);
	if (bm->free_pages < n) {
		pthread_mutex_unlock(&bm->alloc_mu);
		return -ENOSPC;
	}
	if (hint == BM_PID_NONE || hint < bm->first_data || hint >= bm->page_count)
		hint = bm->alloc_next;
	first = find_run(bm, hint, bm->page_count, n);
	if (first == BM_PID_NONE)
		first = find_run(bm, bm->first_data, hint + n < bm->page_count ? hint + n
									 : bm->page_count, n);
	if (first == BM_PID_NONE) {
		pthread_mutex_unlock(&bm->alloc_mu);
		return -ENOSPC; /* enough pages, but not in a row */
	}
	bits_set(bm, first, n, true);
	bm->free_pages -= n;
	bm->alloc_next = first + n < bm->page_count ? first + n : bm->first_data;
	pthread_mutex_unlock(&bm->alloc_mu);

	/* A reused page must read as zeros, not as what it held before. */
	for (uint64_t p = first; p < first + n; p++)
		if (atomic_load_explicit(&bm->csum[p], memory_order_relaxed) != 0)
			bm_csum_set(bm, p, 0);
	*ret_first = first;
	return 0;
}

/* Take one page out of the pool for good: wait until nobody holds it, drop
 * its frame without writing it, and bump its version. */
/* Take one page out of the pool for good: wait until nobody holds it and
 * lock it. Returns true when it is resident: the caller then drops its
 * frame (in a batch, see bm_free) without writing it. An evicted page is
 * released at once, with a version bump for optimistic readers. */
static bool page_discard(struct bm *bm, uint64_t pid)
{
	ps_word *ps = state_of(bm, pid);
	uint64_t w;
	for (unsigned spins = 0;; spins++) {
		w = ps_load(ps);
		if (ps_try_lock_x(ps, w))
			break;
		cpu_relax(spins);
	}
	if (ps_state(w) == PS_EVICTED) {
		ps_unlock_evicted(ps);
		return false;
	}
	if (ps_dirty(w))
		atomic_fetch_sub_explicit(&bm->dirty, 1, memory_order_relaxed);
	return true;
}

void bm_free(struct bm *bm, uint64_t first, uint64_t n)
{
	struct bm_thread *t = bm_thread_get(bm);

	if (first < bm->first_data || first + n > bm->page_count || n == 0) {
		vs_log(VS_LOG_ERR, "internal: freeing pages %llu+%llu outside the data area",
		       (unsigned long long)first, (unsigned long long)n);
		abort();
	}
	/* Frames go back a batch at a time: one TLB shootdown per batch
	 * rather than per page, which dominated deleting a large file. */
	uint64_t batch[BM_BATCH_MAX];
	unsigned nb = 0;
	for (uint64_t p = first; p < first + n; p++) {
		if (page_discard(bm, p))
			batch[nb++] = p;
		if (nb == BM_BATCH_MAX) {
			drop_frames(bm, t, batch, nb);
			nb = 0;
		}
		bm_csum_set(bm, p, 0);
	}
	drop_frames(bm, t, batch, nb);
	pthread_mutex_lock(&bm->alloc_mu);
	for (uint64_t p = first; p < first + n; p++) {
		if (!bit_get(bm->bitmap, p)) {
			vs_log(VS_LOG_ERR, "internal: double free of page %llu",
			       (unsigned long long)p);
			abort();
		}
	}
	bits_set(bm, first, n, false);
	bm->free_pages += n;
	pthread_mutex_unlock(&bm->alloc_mu);
}

bool bm_is_allocated(struct bm *bm, uint64_t pid)
{
	bool r;
	if (pid >= bm->page_count)
		return false;
	pthread_mutex_lock(&bm->alloc_mu);
	r = bit_get(bm->bitmap, pid);
	pthread_mutex_unlock(&bm->alloc_mu);
	return r;
}

bool bm_is_resident(struct bm *bm, uint64_t pid)
{
	if (pid >= bm->page_count)
		return false;
	return ps_state(ps_load(state_of(bm, pid))) != PS_EVICTED;
}

/* ------------------------------------------------------------------ */
/* Open and close                                                     */

void bm_stats_get(struct bm *bm, struct bm_stats *ret)
{
	struct bm_counters sum;
	memset(&sum, 0, sizeof(sum));
	pthread_mutex_lock(&bm->threads_mu);
	counters_add(&sum, &bm->retired);
	for (struct bm_thread *t = bm->threads; t; t = t->next)
		counters_add(&sum, &t->c);
	pthread_mutex_unlock(&bm->threads_mu);

	memset(ret, 0, sizeof(*ret));
	ret->page_count = bm->page_count;
	ret->capacity_pages = bm->capacity;
	ret->resident_pages = atomic_load(&bm->resident);
	int64_t d = atomic_load(&bm->dirty);
	ret->dirty_pages = d > 0 ? (uint64_t)d : 0;
	pthread_mutex_lock(&bm->alloc_mu);
	ret->free_pages = bm->free_pages;
	pthread_mutex_unlock(&bm->alloc_mu);
	ret->hits = sum.hits;
	ret->loads = sum.loads;
	ret->zero_loads = sum.zero_loads;
	ret->read_through = sum.read_through;
	ret->write_through = sum.write_through;
	ret->evictions = sum.evictions;
	ret->evict_batches = sum.evict_batches;
	ret->writebacks = sum.writebacks;
	ret->cluster_writebacks = sum.cluster_writebacks;
	ret->read_bytes = sum.read_bytes;
	ret->write_bytes = sum.write_bytes;
	ret->csum_errors = sum.csum_errors;
	ret->io_errors = sum.io_errors;
	ret->restarts = sum.restarts;
	ret->segv_restarts = sum.segv_restarts;
	ret->backend = mem_name(bm->mem);
	ret->checkpoints = atomic_load(&bm->n_checkpoints);
	ret->log_bytes = atomic_load(&bm->log_bytes);
	ret->log_flushes = atomic_load(&bm->log_flushes);
	ret->recovered_pages = bm->recovered_pages;
	ret->dirty_limit = bm->dirty_limit;
}

void bm_latency_get(struct bm *bm, struct bm_latency *ret)
{
	lh_snapshot(&bm->fault_lat, &ret->fault);
	lh_snapshot(&bm->evict_lat, &ret->evict);
	ret->evict_pages = atomic_load_explicit(&bm->evict_lat_pages, memory_order_relaxed);
}

static void bm_destroy(struct bm *bm)
{
	pthread_mutex_lock(&bm->threads_mu);
	while (bm->threads)
		thread_release(bm->threads);
	pthread_mutex_unlock(&bm->threads_mu);
	if (tls_bm_id == bm->id)
		tls_bm_id = 0;
	pthread_key_delete(bm->key);
	mem_close(bm->mem);
	if (bm->state)
		munmap((void *)bm->state, bm->page_count * sizeof(ps_word));
	rset_free(&bm->rset);
	free(bm->bitmap);
	free((void *)bm->cbitmap);
	free((void *)bm->csum);
	free(bm->bmp_dirty);
	free((void *)bm->cs_dirty);
	free(bm->sb);
	free(bm->dl);
	if (bm->fd >= 0)
		close(bm->fd);
	if (bm->fault_fd >= 0)
		close(bm->fault_fd);
	free(bm->path);
	free(bm);
}

_Atomic(void (*)(void)) bm_wait_hook;

void bm_set_wait_hook(void (*fn)(void))
{
	atomic_store(&bm_wait_hook, fn);
}

int bm_open(const struct bm_config *cfg, struct bm **ret_bm)
{
	struct bm *bm;
	int r, flags;

	bm = calloc(1, sizeof(*bm));
	if (!bm)
		return -ENOMEM;
	bm->fd = -1;
	bm->fault_fd = -1;
	bm->path = strdup(cfg->path);
	bm->read_only = cfg->read_only;
	bm->journal = cfg->journal && !cfg->read_only;
	bm->ckpt_ms = cfg->checkpoint_ms ? cfg->checkpoint_ms : 5000;
	bm->fault = cfg->fault;
	bm->fault_fd = -1;
	if (bm->fault) {
		bm->fault_fd = open(cfg->path, O_RDONLY | O_CLOEXEC);
		if (bm->fault_fd < 0) {
			r = -errno;
			goto fail;
		}
	}
	bm->id = atomic_fetch_add(&bm_next_id, 1);
	pthread_mutex_init(&bm->alloc_mu, NULL);
	pthread_mutex_init(&bm->sb_mu, NULL);
	pthread_mutex_init(&bm->threads_mu, NULL);
	pthread_mutex_init(&bm->flush_mu, NULL);
	pthread_mutex_init(&bm->dl_mu, NULL);
	pthread_mutex_init(&bm->ckpt_mu, NULL);
	pthread_cond_init(&bm->ckpt_cv, NULL);
	pthread_mutex_init(&bm->ckpt_wait_mu, NULL);
	pthread_cond_init(&bm->ckpt_wait_cv, NULL);
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* A waiting checkpoint must not starve behind a stream of
	 * transactions. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&bm->txn_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (pthread_key_create(&bm->key, thread_destructor)) {
		free(bm->path);
		free(bm);
		return -EAGAIN;
	}

	flags = (cfg->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	bm->fd = -1;
	if (!cfg->no_direct)
		bm->fd = open(cfg->path, flags | O_DIRECT);
	if (bm->fd < 0 && (cfg->no_direct || errno == EINVAL))
		bm->fd = open(cfg->path, flags); /* tmpfs and friends: no O_DIRECT */
	if (bm->fd < 0) {
		r = -errno;
		vs_log(VS_LOG_ERR, "%s: %s", cfg->path, strerror(errno));
		goto fail;
	}
	if (flock(bm->fd, (cfg->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		vs_log(VS_LOG_ERR, "%s: image is in use by another process", cfg->path);
		goto fail;
	}
	r = bm_meta_load(bm);
	if (r < 0)
		goto fail;

	bm->batch = cfg->evict_batch ? cfg->evict_batch : 64;
	if (bm->batch > BM_BATCH_MAX)
		bm->batch = BM_BATCH_MAX;
	bm->capacity = cfg->pool_bytes / BM_PAGE_SIZE;
	if (bm->capacity < 64) {
		vs_log(VS_LOG_ERR, "pool of %llu bytes is too small (at least 256 KiB)",
		       (unsigned long long)cfg->pool_bytes);
		r = -EINVAL;
		goto fail;
	}
	if (bm->capacity > bm->page_count)
		bm->capacity = bm->page_count;
	if (bm->batch > bm->capacity / 4)
		bm->batch = (unsigned)(bm->capacity / 4);
	bm->cluster = cfg->evict_cluster < 0 ? 0
		      : cfg->evict_cluster == 0 ? 32
						 : (unsigned)cfg->evict_cluster;
	if (bm->cluster > BM_BATCH_MAX)
		bm->cluster = BM_BATCH_MAX;
	/* Room for the neighbours: up to three times the victims (a
	 * default batch stages 1 MiB), within what a batch can submit. */
	bm->wb_max = bm->cluster ? 4 * bm->batch : bm->batch;
	if (bm->wb_max > BM_BATCH_MAX)
		bm->wb_max = BM_BATCH_MAX;

	/* The state array is sized to the image but only touched where pages
	 * are used: all-zero words are evicted pages. */
	bm->state = mmap(NULL, bm->page_count * sizeof(ps_word), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (bm->state == MAP_FAILED) {
		bm->state = NULL;
		r = -ENOMEM;
		goto fail;
	}
	r = rset_init(&bm->rset, bm->capacity);
	if (r < 0)
		goto fail;

	struct mem_config mc = {
		.fd = bm->fd,
		.virt_pages = bm->page_count,
		.frames = bm->capacity,
		.max_threads = BM_MAX_THREADS,
		.mode = cfg->backend == BM_BACKEND_PLAIN   ? MEM_PLAIN
			: cfg->backend == BM_BACKEND_EXMAP ? MEM_EXMAP
							   : MEM_AUTO,
	};
	r = mem_open(&mc, &bm->mem);
	if (r < 0) {
		if (r == -ENODEV)
			vs_log(VS_LOG_ERR, "exmap backend requested but /dev/exmap is not usable");
		goto fail;
	}
	bm->base = mem_base(bm->mem);
	segv_install();

	if (!bm->read_only) {
		r = bm_meta_mark_open(bm);
		if (r < 0)
			goto fail;
	}
	r = bm_journal_open(bm);
	if (r < 0)
		goto fail;
	*ret_bm = bm;
	return 0;
fail:
	bm_destroy(bm);
	return r;
}

void bm_abandon(struct bm *bm)
{
	if (!bm)
		return;
	bm_journal_close(bm);
	bm_destroy(bm);
}

int bm_close(struct bm *bm)
{
	int r = 0;
	if (!bm)
		return 0;
	bm_journal_close(bm);
	if (bm->journal) {
		r = bm_checkpoint_final(bm);
	} else if (!bm->read_only) {
		r = write_dirty(bm);
		int m = bm_meta_write(bm, r == 0);
		if (r == 0)
			r = m;
		m = bm_io_sync(bm);
		if (r == 0)
			r = m;
	}
	bm_destroy(bm);
	return r;
}
