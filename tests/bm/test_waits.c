/*
 * test_waits.c: the waits of engine/lockorder.h, each interleaving forced.
 *
 *  - a page load outside any transaction, by a thread holding a lock that a
 *    running transaction waits for, with dirty pages past the limit: it must
 *    not wait for a checkpoint (which waits for that transaction);
 *  - a page load that finds every frame dirty and no checkpoint able to run
 *    fails with -ENOMEM after frame_wait_ms instead of spinning for ever,
 *    and the pool works again once the checkpoint can run;
 *  - a freed page cannot be loaded back with its old bytes by a stale reader
 *    between its release and the reset of its checksum;
 *  - a page that eviction writes home and would drop while a starting
 *    checkpoint takes it in keeps its frame until the checkpoint has read it;
 *  - a transaction that waited for journal room does not begin, alone, with
 *    more dirty pages than dirty_limit;
 *  - debug builds abort on a checkpoint wait with an inode lock held.
 *
 * Each of these hung, lost data or handed back stale bytes before the
 * waits were reworked; each test fails (or times out, which the test turns
 * into a failure) without the fix it covers.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/bm.h"
#include "engine/bm_fault.h"
#include "engine/lockorder.h"
#include "tests/lib/vt_bm.h"

static char img[256];

static int setup(void **st)
{
	return vt_tmp_image(img, sizeof(img), "waits");
}

static int teardown(void **st)
{
	unlink(img);
	return 0;
}

static struct bm *jopen(struct bm_fault *f, uint64_t pool, unsigned frame_wait_ms)
{
	struct bm *bm = NULL;
	struct bm_config cfg = {.path = img,
				.pool_bytes = pool,
				.journal = true,
				.checkpoint_ms = 3600 * 1000,
				.frame_wait_ms = frame_wait_ms,
				.fault = f};
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	return bm;
}

static uint64_t get_page(struct bm *bm, uint64_t pid)
{
	uint64_t v;
	assert_int_equal(vt_page_get(bm, pid, &v), 0);
	return v;
}

/* @n new pages set to val + i, one transaction per 100, then a checkpoint:
 * in use in the committed state, so eviction may not steal them. */
static uint64_t committed_pages(struct bm *bm, uint64_t n, uint64_t val)
{
	uint64_t first;
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, n, BM_PID_NONE, &first), 0);
	bm_txn_end(bm);
	for (uint64_t i = 0; i < n; i += 100) {
		bm_txn_begin(bm);
		for (uint64_t j = i; j < i + 100 && j < n; j++)
			assert_int_equal(vt_page_set(bm, first + j, val + j), 0);
		bm_txn_end(bm);
	}
	assert_int_equal(bm_checkpoint(bm), 0);
	return first;
}

/* Join @t within @secs or fail the test: a hang is a failure, not a
 * timeout of the whole suite. */
static void join_within(pthread_t t, int secs, const char *what)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	int r = pthread_timedjoin_np(t, NULL, &ts);
	if (r == ETIMEDOUT)
		fail_msg("%s did not finish within %d s: a wait cycle", what, secs);
	assert_int_equal(r, 0);
}

/* ------------------------------------------------------------------ */
/* 1. The fault path never waits for a checkpoint                     */

static struct {
	struct bm *bm;
	pthread_rwlock_t inode; /* stands for an inode lock of fs/ */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stage;
	uint64_t first, n, cold;
	int load_r;
} cyc = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void stage_set(int s)
{
	pthread_mutex_lock(&cyc.mu);
	cyc.stage = s;
	pthread_cond_broadcast(&cyc.cv);
	pthread_mutex_unlock(&cyc.mu);
}

static void stage_wait(int s)
{
	pthread_mutex_lock(&cyc.mu);
	while (cyc.stage < s)
		pthread_cond_wait(&cyc.cv, &cyc.mu);
	pthread_mutex_unlock(&cyc.mu);
}

/* A transaction (a setattr): dirties pages past the limit (a running
 * transaction may), then wants the inode lock the looker holds. */
static void *writer_fn(void *arg)
{
	bm_txn_begin(cyc.bm);
	for (uint64_t i = 0; i < cyc.n; i++)
		if (vt_page_set(cyc.bm, cyc.first + i, 77 + i) != 0)
			abort();
	stage_set(1);
	stage_wait(2);
	pthread_rwlock_wrlock(&cyc.inode);
	pthread_rwlock_unlock(&cyc.inode);
	bm_txn_end(cyc.bm);
	return NULL;
}

/* A lookup: no transaction, the inode lock held, a page to load. */
static void *looker_fn(void *arg)
{
	uint64_t v;
	stage_wait(1);
	pthread_rwlock_rdlock(&cyc.inode);
	stage_set(2);
	usleep(100 * 1000); /* the writer now waits for the inode lock */
	cyc.load_r = vt_page_get(cyc.bm, cyc.cold, &v);
	pthread_rwlock_unlock(&cyc.inode);
	return NULL;
}

static void test_fault_path_never_checkpoints(void **st)
{
	struct bm_stats s;
	pthread_t w, l;

	assert_int_equal(bm_format(img, 64 << 20, true), 0);
	struct bm *bm = jopen(NULL, 4 << 20, 0);
	bm_stats_get(bm, &s);
	cyc.bm = bm;
	cyc.n = s.dirty_limit + 20;
	cyc.first = committed_pages(bm, cyc.n, 1);
	cyc.cold = committed_pages(bm, 1, 5);
	assert_true(bm_evict_all(bm, true) > 0); /* the cold page is evicted */
	assert_false(bm_is_resident(bm, cyc.cold));
	cyc.stage = 0;
	pthread_rwlock_init(&cyc.inode, NULL);
	assert_int_equal(pthread_create(&w, NULL, writer_fn, NULL), 0);
	assert_int_equal(pthread_create(&l, NULL, looker_fn, NULL), 0);
	join_within(l, 20, "the lookup");
	join_within(w, 20, "the transaction");
	assert_int_equal(cyc.load_r, 0);
	bm_stats_get(bm, &s);
	assert_true(s.dirty_pages > s.dirty_limit); /* the case the old code checkpointed */
	assert_int_equal(get_page(bm, cyc.cold), 5);
	assert_int_equal(bm_close(bm), 0);
	pthread_rwlock_destroy(&cyc.inode);
}

/* ------------------------------------------------------------------ */
/* 2. No frame: a bounded wait, then -ENOMEM                          */

static struct {
	struct bm *bm;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool in, out;
} blocker = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* A transaction that stays open until told: no checkpoint can run. */
static void *blocker_fn(void *arg)
{
	bm_txn_begin(blocker.bm);
	pthread_mutex_lock(&blocker.mu);
	blocker.in = true;
	pthread_cond_broadcast(&blocker.cv);
	while (!blocker.out)
		pthread_cond_wait(&blocker.cv, &blocker.mu);
	pthread_mutex_unlock(&blocker.mu);
	bm_txn_end(blocker.bm);
	return NULL;
}

static void test_frame_wait_bounded(void **st)
{
	enum { FRAMES = 256, WAIT_MS = 300 };
	struct bm_stats s;
	pthread_t b;
	int r = 0;
	uint64_t i;

	assert_int_equal(bm_format(img, 32 << 20, true), 0);
	struct bm *bm = jopen(NULL, FRAMES * 4096, WAIT_MS);
	uint64_t first = committed_pages(bm, 2 * FRAMES, 1);
	blocker.bm = bm;
	blocker.in = blocker.out = false;
	assert_int_equal(pthread_create(&b, NULL, blocker_fn, NULL), 0);
	pthread_mutex_lock(&blocker.mu);
	while (!blocker.in)
		pthread_cond_wait(&blocker.cv, &blocker.mu);
	pthread_mutex_unlock(&blocker.mu);
	/* Outside any transaction (a tool would), change committed pages until
	 * the pool is all dirty: none may go home before a checkpoint, and
	 * none can run while the blocker's transaction is open. */
	time_t t0 = time(NULL);
	for (i = 0; i < 2 * FRAMES && r == 0; i++)
		r = vt_page_set(bm, first + i, 900 + i);
	assert_int_equal(r, -ENOMEM);
	assert_true(time(NULL) - t0 < 10);
	bm_stats_get(bm, &s);
	assert_true(s.frame_fails >= 1);
	assert_true(s.frame_waits >= 1);
	/* The checkpoint can run once the transaction ends (the starved load
	 * asked the checkpointer for one): the pool works again. */
	pthread_mutex_lock(&blocker.mu);
	blocker.out = true;
	pthread_cond_broadcast(&blocker.cv);
	pthread_mutex_unlock(&blocker.mu);
	join_within(b, 10, "the blocking transaction");
	for (uint64_t k = i - 1; k < 2 * FRAMES; k++)
		assert_int_equal(vt_page_set(bm, first + k, 900 + k), 0);
	for (uint64_t k = 0; k < 2 * FRAMES; k++)
		assert_int_equal(get_page(bm, first + k), 900 + k);
	assert_int_equal(bm_close(bm), 0);
}

/* ------------------------------------------------------------------ */
/* 3. A freed page never comes back with its old bytes                */

static struct {
	struct bm *bm;
	uint64_t pid;
	uint64_t seen;
	int r;
	bool looked;
} stale;

/* bm_free has just released the evicted page: a stale optimistic reader
 * (one that followed a pointer read before the free) loads it now. */
static void stale_reader(struct bm_fault *f, uint64_t pid)
{
	if (pid != stale.pid)
		return;
	stale.r = vt_page_get(stale.bm, pid, &stale.seen);
	stale.looked = true;
}

static void test_free_forgets_before_release(void **st)
{
	struct bm_fault f;
	uint8_t buf[4096];

	bm_fault_init(&f);
	f.on_discard = stale_reader;
	assert_int_equal(bm_format(img, 32 << 20, true), 0);
	struct bm *bm = jopen(&f, 1 << 20, 0);
	uint64_t p = committed_pages(bm, 1, 0x5ec7e7);
	assert_true(bm_evict_all(bm, true) > 0);
	assert_false(bm_is_resident(bm, p));
	stale.bm = bm;
	stale.pid = p;
	stale.looked = false;
	bm_txn_begin(bm);
	bm_free(bm, p, 1);
	bm_txn_end(bm);
	assert_true(stale.looked);
	assert_int_equal(stale.r, 0);
	assert_int_equal(stale.seen, 0); /* zeros, not the old file's bytes */
	/* The next owner of the page starts from zeros even when it writes
	 * only part of it. */
	uint64_t q;
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, 1, p, &q), 0);
	assert_int_equal(q, p);
	bm_txn_end(bm);
	assert_int_equal(vt_page_get(bm, q, &stale.seen), 0);
	assert_int_equal(stale.seen, 0);
	memcpy(buf, bm_page(bm, q), sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(bm_close(bm), 0);
	bm_fault_fini(&f);
}

/* ------------------------------------------------------------------ */
/* 4. Eviction and a starting checkpoint                              */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t evictor;
	bool evictor_held, evictor_go, ckpt_held, ckpt_go;
	struct bm *bm;
	uint64_t first, n;
	int ckpt_r;
} ev = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void wait_flag(bool *flag)
{
	pthread_mutex_lock(&ev.mu);
	while (!*flag)
		pthread_cond_wait(&ev.cv, &ev.mu);
	pthread_mutex_unlock(&ev.mu);
}

static void set_flag(bool *flag)
{
	pthread_mutex_lock(&ev.mu);
	*flag = true;
	pthread_cond_broadcast(&ev.cv);
	pthread_mutex_unlock(&ev.mu);
}

/* The evictor's first page write (a steal) is held until the checkpoint
 * has taken its pages. */
static void ev_on_write(struct bm_fault *f, uint64_t n)
{
	pthread_mutex_lock(&ev.mu);
	if (pthread_equal(pthread_self(), ev.evictor) && !ev.evictor_held) {
		ev.evictor_held = true;
		pthread_cond_broadcast(&ev.cv);
		while (!ev.evictor_go)
			pthread_cond_wait(&ev.cv, &ev.mu);
	}
	pthread_mutex_unlock(&ev.mu);
}

/* The checkpoint, its pages taken and not yet read, waits while the
 * evictor finishes its write-back and drops what it can. */
static void ev_on_ckpt_taken(struct bm_fault *f)
{
	set_flag(&ev.ckpt_held);
	set_flag(&ev.evictor_go);
	wait_flag(&ev.ckpt_go);
}

/* Loads other pages through a full pool: eviction steals new pages. */
static void *ev_evictor_fn(void *arg)
{
	uint64_t v;
	for (uint64_t r = 0; r < 3; r++)
		for (uint64_t i = 0; i < ev.n; i++)
			if (vt_page_get(ev.bm, ev.first + i, &v) != 0)
				return (void *)1;
	return NULL;
}

static void *ev_ckpt_fn(void *arg)
{
	ev.ckpt_r = bm_checkpoint(ev.bm);
	return NULL;
}

static void test_eviction_meets_checkpoint(void **st)
{
	/* A small checkpoint (copied, below CKPT_COPY_MAX pages) of new pages
	 * that eviction may steal: the evictor is held at its first steal's
	 * write, holding the page shared and still dirty; the checkpoint
	 * starts and takes its pages, that one among them, and is held; the
	 * evictor writes, cleans and tries to drop it, and goes on evicting;
	 * then the checkpoint reads its pages. Each must reach the image as
	 * written: a frame dropped under the checkpoint reads as zeros. */
	enum { NEW = 400, OTHER = 3000, FRAMES = 1024 };
	struct bm_fault f;
	uint64_t a;
	pthread_t e, c;

	bm_fault_init(&f);
	assert_int_equal(bm_format(img, 64 << 20, true), 0);
	struct bm *bm = jopen(&f, FRAMES * 4096, 0);
	ev.first = committed_pages(bm, OTHER, 1);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, NEW, BM_PID_NONE, &a), 0);
	bm_txn_end(bm);
	for (uint64_t i = 0; i < NEW; i += 100) {
		bm_txn_begin(bm);
		for (uint64_t j = i; j < i + 100; j++)
			assert_int_equal(vt_page_set(bm, a + j, 5000 + j), 0);
		bm_txn_end(bm);
	}
	ev.bm = bm;
	ev.n = OTHER;
	ev.evictor_held = ev.evictor_go = ev.ckpt_held = ev.ckpt_go = false;
	f.on_write = ev_on_write;
	f.on_ckpt_taken = ev_on_ckpt_taken;
	pthread_mutex_lock(&ev.mu);
	assert_int_equal(pthread_create(&e, NULL, ev_evictor_fn, NULL), 0);
	ev.evictor = e;
	pthread_mutex_unlock(&ev.mu);
	wait_flag(&ev.evictor_held);
	assert_int_equal(pthread_create(&c, NULL, ev_ckpt_fn, NULL), 0);
	wait_flag(&ev.ckpt_held);
	/* The evictor goes on (ev_on_ckpt_taken let it) for a while. */
	usleep(200 * 1000);
	set_flag(&ev.ckpt_go);
	join_within(c, 30, "the checkpoint");
	join_within(e, 60, "the evictor");
	f.on_write = NULL;
	f.on_ckpt_taken = NULL;
	assert_int_equal(ev.ckpt_r, 0);
	bm_abandon(bm); /* a crash: what the checkpoint committed must be whole */

	bm = jopen(NULL, FRAMES * 4096, 0);
	for (uint64_t i = 0; i < NEW; i++)
		assert_int_equal(get_page(bm, a + i), 5000 + i);
	struct bm_stats s;
	bm_stats_get(bm, &s);
	assert_int_equal(s.csum_errors, 0);
	assert_int_equal(bm_close(bm), 0);
	bm_fault_fini(&f);
}

/* ------------------------------------------------------------------ */
/* 5. A transaction alone never gets in past dirty_limit              */

static struct {
	struct bm *bm;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool go;
	uint64_t first, each;
	uint64_t dirty_at_begin;
} room = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* A running transaction: holds room, then changes its pages when told. */
static void *room_holder_fn(void *arg)
{
	uint64_t k = (uint64_t)(uintptr_t)arg;
	bm_txn_begin(room.bm);
	pthread_mutex_lock(&room.mu);
	while (!room.go)
		pthread_cond_wait(&room.cv, &room.mu);
	pthread_mutex_unlock(&room.mu);
	for (uint64_t i = 0; i < room.each; i++)
		if (vt_page_set(room.bm, room.first + k * room.each + i, 3) != 0)
			abort();
	bm_txn_end(room.bm);
	return NULL;
}

/* A transaction that finds no room and waits for the others to end. */
static void *room_waiter_fn(void *arg)
{
	struct bm_stats s;
	bm_txn_begin(room.bm);
	bm_stats_get(room.bm, &s);
	room.dirty_at_begin = s.dirty_pages;
	bm_txn_end(room.bm);
	return NULL;
}

static void test_alone_within_limit(void **st)
{
	/* Two transactions hold all the room; a third waits for it; the two
	 * change pages past dirty_limit and end. The third, alone now, must
	 * not begin with that many dirty pages (a checkpoint first): each
	 * transaction may add BM_TXN_PAGES more, and the pool must keep the
	 * rest of its frames for eviction. */
	struct bm_stats s;
	pthread_t h[2], w;

	assert_int_equal(bm_format(img, 64 << 20, true), 0);
	struct bm *bm = jopen(NULL, 4 << 20, 0);
	bm_stats_get(bm, &s);
	room.bm = bm;
	room.go = false;
	room.each = s.dirty_limit / 2 + 40;
	room.first = committed_pages(bm, 2 * room.each, 1);
	for (uintptr_t k = 0; k < 2; k++)
		assert_int_equal(pthread_create(&h[k], NULL, room_holder_fn, (void *)k), 0);
	usleep(100 * 1000);
	assert_int_equal(pthread_create(&w, NULL, room_waiter_fn, NULL), 0);
	usleep(200 * 1000); /* the third waits for room */
	pthread_mutex_lock(&room.mu);
	room.go = true;
	pthread_cond_broadcast(&room.cv);
	pthread_mutex_unlock(&room.mu);
	for (int k = 0; k < 2; k++)
		join_within(h[k], 20, "a transaction");
	join_within(w, 20, "the waiting transaction");
	assert_true(room.dirty_at_begin <= s.dirty_limit);
	assert_int_equal(bm_close(bm), 0);
}

/* ------------------------------------------------------------------ */
/* 6. The lock-order check                                            */

#ifndef NDEBUG
static void test_lockorder_check_fires(void **st)
{
	assert_int_equal(bm_format(img, 16 << 20, true), 0);
	struct bm *bm = jopen(NULL, 1 << 20, 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* An inode lock held, then a transaction begun: it could wait
		 * for a checkpoint. The check must stop the process. */
		lo_acquire(LO_INODE, 1, false);
		bm_txn_begin(bm);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	/* In order it passes. */
	bm_txn_begin(bm);
	lo_acquire(LO_INODE, 1, false);
	lo_release(LO_INODE, 1);
	bm_txn_end(bm);
	assert_int_equal(bm_close(bm), 0);
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fault_path_never_checkpoints, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_frame_wait_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_free_forgets_before_release, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eviction_meets_checkpoint, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alone_within_limit, setup, teardown),
#ifndef NDEBUG
	    cmocka_unit_test_setup_teardown(test_lockorder_check_fires, setup, teardown),
#endif
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
