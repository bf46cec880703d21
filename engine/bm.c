/*
 * bm.c: the buffer manager: the resident set, threads, operations and
 * guards, space, open and close. Faulting pages in is in bm_load.c,
 * write-back and eviction in bm_evict.c, transactions and checkpoints in
 * bm_journal.c; the locks of all of them are in lockorder.h.
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
#include "engine/lockorder.h"
#include "engine/log.h"


/* Restart causes passed through siglongjmp. */
enum { JUMP_RESTART = 1, JUMP_FAIL = 2, JUMP_SEGV = 3 };

/* Spins on a busy lock before an operation that holds other guards gives
 * up and restarts (so two operations can never wait on each other). */
#define SPIN_LIMIT 1024
/* Restarts for an out-of-range pid before we call it corruption. */
#define BAD_PID_LIMIT 64

/* A latch wait that SPIN_LIMIT spins did not end, with nothing held (so no
 * restart will end it), goes into the lock-holder table (lockorder.h)
 * until the loop ends or the operation restarts (bm_run). */
static inline void latch_wait_note(unsigned spins, unsigned nheld, uint64_t pid)
{
	if (__builtin_expect(spins == SPIN_LIMIT, 0) && nheld == 0)
		lo_wait_begin(LO_WAIT_LATCH, pid);
}

static inline void latch_wait_over(unsigned spins)
{
	if (__builtin_expect(spins >= SPIN_LIMIT, 0))
		lo_wait_end();
}

static _Thread_local struct bm_op *tls_op;
static _Thread_local uint64_t tls_bm_id;
static _Thread_local struct bm_thread *tls_thread;
static _Atomic uint64_t bm_next_id = 1;

static struct sigaction segv_previous;
static pthread_mutex_t segv_mu = PTHREAD_MUTEX_INITIALIZER;

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

void bm_rset_insert(struct bm *bm, uint64_t pid)
{
	struct bm_rset *rs = &bm->rset;
	uint64_t i = rset_hash(pid) & rs->mask;
	for (;;) {
		uint64_t cur = atomic_load_explicit(&rs->slots[i], memory_order_relaxed);
		if ((cur == RSET_EMPTY || cur == RSET_TOMB) &&
		    atomic_compare_exchange_strong(&rs->slots[i], &cur, pid))
			break;
		i = (i + 1) & rs->mask;
	}
	if (bm->s3) /* every load and prefetch comes through here */
		bm_s3_loaded(bm, pid);
}

void bm_rset_remove(struct bm *bm, uint64_t pid)
{
	struct bm_rset *rs = &bm->rset;
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
	ADD(restarts); ADD(segv_restarts); ADD(copy_reads); ADD(copy_writes);
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
	bm_trace_flush(bm, t);
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
	op.frame_wait_ns = 0;
	tls_op = &op;

	jr = sigsetjmp(op.env, 0);
	if (jr != 0) {
		tls_op = &op;
		release_all(&op);
		lo_wait_end(); /* a latch or frame wait the jump left */
		if (jr == JUMP_FAIL) {
			tls_op = op.outer;
			if (op.thread->young_n && !op.outer)
				bm_s3_young_mark(bm, op.thread);
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
	if (!op.outer && bm->s3) {
		/* s3clock: the pages this operation loaded have had their
		 * first use; and its clock of operations */
		if (op.thread->young_n)
			bm_s3_young_mark(bm, op.thread);
		if (++op.thread->s3_ops % BM_S3_TICK == 0)
			bm_s3_tick(bm);
	}
	return r;
}

unsigned bm_thread_latches(void)
{
	unsigned n = 0;
	for (struct bm_op *op = tls_op; op; op = op->outer)
		n += (unsigned)op->nheld;
	return n;
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
	bool loaded = false; /* the trace has this access as the load */
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		unsigned s = ps_state(w);
		if (s == PS_EVICTED) {
			if (ps_try_lock_x(ps, w)) {
				bm_page_load(op, pid, false);
				ps_unlock_x(ps, false);
				loaded = true;
			}
			continue;
		}
		if (s == PS_LOCKED) {
			if (op->nheld > 0 && spins > SPIN_LIMIT)
				bm_restart(op);
			latch_wait_note(spins, op->nheld, pid);
			cpu_relax(spins);
			continue;
		}
		latch_wait_over(spins);
		if (s == PS_MARKED)
			ps_clear_mark(ps, w);
		if (!loaded) { /* (a fix that loaded its page counts as a load) */
			BM_COUNT(op->thread, hits, 1);
			bm_trace_note(bm, op->thread, BM_TRACE_ACCESS, pid);
		}
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
	bool loaded = false; /* the trace has this access as the load */
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		unsigned s = ps_state(w);
		if (s == PS_EVICTED) {
			if (ps_try_lock_x(ps, w)) {
				bm_page_load(op, pid, false);
				ps_unlock_x(ps, false);
				loaded = true;
			}
			continue;
		}
		if (ps_try_lock_s(ps, w)) {
			latch_wait_over(spins);
			if (!loaded) {
				BM_COUNT(op->thread, hits, 1);
				bm_trace_note(bm, op->thread, BM_TRACE_ACCESS, pid);
			}
			break;
		}
		if (op->nheld > 0 && spins > SPIN_LIMIT)
			bm_restart(op);
		latch_wait_note(spins, op->nheld, pid);
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
			latch_wait_over(spins);
			if (ps_state(w) == PS_EVICTED) {
				bm_page_load(op, pid, fresh);
			} else {
				BM_COUNT(op->thread, hits, 1);
				bm_trace_note(bm, op->thread, BM_TRACE_ACCESS, pid);
			}
			break;
		}
		if (op->nheld > 0 && spins > SPIN_LIMIT)
			bm_restart(op);
		latch_wait_note(spins, op->nheld, pid);
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

/* Visit every resident pid (a snapshot: pages may come and go meanwhile). */
void bm_rset_each(struct bm *bm, void (*fn)(struct bm *, uint64_t, void *), void *arg)
{
	for (uint64_t i = 0; i <= bm->rset.mask; i++) {
		uint64_t pid = atomic_load_explicit(&bm->rset.slots[i], memory_order_relaxed);
		if (pid < RSET_TOMB)
			fn(bm, pid, arg);
	}
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

uint64_t bm_alloc_floor(struct bm *bm, uint64_t pages)
{
	struct bm_thread *t = bm_thread_get(bm);
	uint64_t old = t->alloc_floor;

	t->alloc_floor = pages;
	return old;
}

uint64_t bm_free_pages(struct bm *bm)
{
	/* No lock: the FUSE layer asks at every write (fs/dirty.c), and a
	 * caller may hold a node-table mutex (fs_nospace_pending). */
	return atomic_load_explicit(&bm->free_pages, memory_order_relaxed);
}

uint64_t bm_alloc_room(struct bm *bm)
{
	uint64_t free = bm_free_pages(bm), floor = bm_thread_get(bm)->alloc_floor;

	return free > floor ? free - floor : 0;
}

int bm_alloc(struct bm *bm, uint64_t n, uint64_t hint, uint64_t *ret_first)
{
	uint64_t first, floor = bm_thread_get(bm)->alloc_floor;

	if (n == 0 || bm->read_only)
		return n == 0 ? -EINVAL : -EROFS;
	pthread_mutex_lock(&bm->alloc_mu);
	uint64_t free = bm->free_pages;
	if (free < n || free - n < floor) {
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
	bm_s3_born(bm, first, n, false);
	*ret_first = first;
	return 0;
}

/* Take one page out of the pool for good: wait until nobody holds it, lock
 * it, and forget its checksum while it is locked, so that nobody can load
 * what it held before (a stale optimistic reader that followed an old
 * pointer loads it as zeros: a page with no checksum was never written).
 * Returns true when it is resident: the caller then drops its frame (in a
 * batch, see bm_free) without writing it. An evicted page is released at
 * once, with a version bump for optimistic readers. */
static bool page_discard(struct bm *bm, uint64_t pid)
{
	ps_word *ps = state_of(bm, pid);
	uint64_t w;
	for (unsigned spins = 0;; spins++) {
		w = ps_load(ps);
		if (ps_try_lock_x(ps, w)) {
			latch_wait_over(spins);
			break;
		}
		latch_wait_note(spins, 0, pid);
		cpu_relax(spins);
	}
	if (atomic_load_explicit(&bm->csum[pid], memory_order_relaxed) != 0)
		bm_csum_set(bm, pid, 0);
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
		else if (bm->fault && bm->fault->on_discard)
			bm->fault->on_discard(bm->fault, p);
		if (nb == BM_BATCH_MAX) {
			bm_drop_frames(bm, t, batch, nb);
			nb = 0;
		}
	}
	bm_drop_frames(bm, t, batch, nb);
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
	/* The copy of a tree node (never resident) goes with it: the node is
	 * the run, or its last page (a copy inside the run went with it). */
	uint64_t c = bm->dup ? bm_dup_free_copy(bm, first + n - 1) : BM_PID_NONE;
	if (c != BM_PID_NONE && bit_get(bm->bitmap, c)) {
		bits_set(bm, c, 1, false);
		bm->free_pages++;
	}
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
	ret->copy_reads = sum.copy_reads;
	ret->copy_writes = sum.copy_writes;
	ret->backend = mem_name(bm->mem);
	ret->checkpoints = atomic_load(&bm->n_checkpoints);
	ret->log_bytes = atomic_load(&bm->log_bytes);
	ret->log_flushes = atomic_load(&bm->log_flushes);
	ret->recovered_pages = bm->recovered_pages;
	ret->dirty_limit = bm->dirty_limit;
	ret->frame_waits = atomic_load(&bm->frame_waits);
	ret->frame_fails = atomic_load(&bm->frame_fails);
	ret->pinned_pages = atomic_load(&bm->pinned);
	bm_s3_stats(bm, ret);
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
	if (bm->trace_fd >= 0)
		close(bm->trace_fd);
	bm_s3_free(bm);
	free(bm->replayed);
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
	bm->trace_fd = -1;
	bm->path = strdup(cfg->path);
	bm->read_only = cfg->read_only;
	bm->bitmap_repair = cfg->bitmap_repair;
	bm->journal = cfg->journal && !cfg->read_only;
	bm->ckpt_ms = cfg->checkpoint_ms ? cfg->checkpoint_ms : 5000;
	bm->fault = cfg->fault;
	bm->fault_fd = -1;
	if (cfg->evict_trace || getenv("VS_EVICT_TRACE")) {
		r = bm_trace_open(bm, cfg->evict_trace ? cfg->evict_trace : getenv("VS_EVICT_TRACE"));
		if (r < 0)
			goto fail;
	}
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
	/* A lock held for a moment more is waited for, briefly: a daemon
	 * killed a moment ago can hold the image after it is reaped (the
	 * kernel tears down its io_uring rings, whose writes hold the file,
	 * after the process is gone). Held longer, the image is in use. */
	for (unsigned ms = 0;; ms += 10) {
		if (flock(bm->fd, (cfg->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0)
			break;
		if (errno != EWOULDBLOCK || ms >= BM_LOCK_WAIT_MS) {
			r = errno == EWOULDBLOCK ? -EBUSY : -errno;
			vs_log(VS_LOG_ERR, "%s: image is in use by another process", cfg->path);
			goto fail;
		}
		usleep(10000);
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
	bm->pin_max = bm->capacity / 8;
	bm->frame_wait_ms = cfg->frame_wait_ms ? cfg->frame_wait_ms : BM_FRAME_WAIT_MS;
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
	r = bm_evict_policy_set(bm, cfg);
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
		r = bm_write_dirty(bm);
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
