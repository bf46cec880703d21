/* Transactions, checkpoints, recovery and power loss (engine/bm_journal.c). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/bm.h"
#include "engine/bm_fault.h"
#include "vt_bm.h"

#define NPAGES 48

static char img[256];

static int setup(void **st)
{
	return vt_tmp_image(img, sizeof(img), "jr");
}

static int teardown(void **st)
{
	unlink(img);
	return 0;
}

static struct bm *jopen(struct bm_fault *f, uint64_t pool)
{
	struct bm *bm = NULL;
	struct bm_config cfg = { .path = img, .pool_bytes = pool, .journal = true,
				 .checkpoint_ms = 3600 * 1000, .fault = f };
	assert_int_equal(vt_bm_open(&cfg, &bm), 0); /* VS_TEST_BACKEND: tests/lib/vt_bm.h */
	return bm;
}

/* Pages hold a value in every word (vt_page_set: a torn page shows). */
static void set_page(struct bm *bm, uint64_t pid, uint64_t val)
{
	assert_int_equal(vt_page_set(bm, pid, val), 0);
}

/* @n new pages, each set to @val, in one transaction; returns the first. */
static uint64_t new_pages(struct bm *bm, uint64_t n, uint64_t val)
{
	uint64_t first;
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, n, BM_PID_NONE, &first), 0);
	for (uint64_t i = 0; i < n; i++)
		set_page(bm, first + i, val);
	bm_txn_end(bm);
	return first;
}

static uint64_t get_page(struct bm *bm, uint64_t pid)
{
	uint64_t v;
	assert_int_equal(vt_page_get(bm, pid, &v), 0);
	return v;
}

static void test_checkpoint_persists(void **st)
{
	uint64_t first;
	struct bm_stats s;
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	struct bm *bm = jopen(NULL, 1 << 20);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, NPAGES, BM_PID_NONE, &first), 0);
	for (uint64_t i = 0; i < NPAGES; i++)
		set_page(bm, first + i, 100 + i);
	bm_sb_set(bm, 5, 55);
	bm_txn_end(bm);
	assert_int_equal(bm_checkpoint(bm), 0);
	bm_stats_get(bm, &s);
	assert_int_equal(s.checkpoints, 1);
	assert_int_equal(s.dirty_pages, 0);
	/* new pages go home once, without the journal (test_ordered.c) */
	assert_true(s.log_bytes < NPAGES * 4096);
	assert_true(s.write_bytes >= NPAGES * 4096);
	assert_true(s.log_flushes >= 2);
	/* a second checkpoint with nothing new writes nothing */
	assert_int_equal(bm_checkpoint(bm), 0);
	bm_stats_get(bm, &s);
	assert_int_equal(s.checkpoints, 1);
	/* changes after the checkpoint are lost in a crash */
	bm_txn_begin(bm);
	set_page(bm, first, 999);
	uint64_t extra;
	assert_int_equal(bm_alloc(bm, 10, BM_PID_NONE, &extra), 0);
	bm_sb_set(bm, 5, 66);
	bm_txn_end(bm);
	bm_abandon(bm);

	bm = jopen(NULL, 1 << 20);
	assert_int_equal(bm_recovered_pages(bm), 0);
	assert_false(bm_was_clean(bm));
	for (uint64_t i = 0; i < NPAGES; i++)
		assert_int_equal(get_page(bm, first + i), 100 + i);
	assert_false(bm_is_allocated(bm, extra));
	assert_true(bm_is_allocated(bm, first));
	assert_int_equal(bm_sb_get(bm, 5), 55);
	assert_int_equal(bm_close(bm), 0);
	bm = jopen(NULL, 1 << 20);
	assert_true(bm_was_clean(bm));
	assert_int_equal(bm_close(bm), 0);
}

static void test_nested_transactions(void **st)
{
	uint64_t first;
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	struct bm *bm = jopen(NULL, 1 << 20);
	bm_txn_begin(bm);
	bm_txn_begin(bm); /* joins the outer one */
	assert_int_equal(bm_alloc(bm, 2, BM_PID_NONE, &first), 0);
	set_page(bm, first, 5);
	bm_txn_end(bm);
	/* still inside the outer transaction: a checkpoint would wait for
	 * our own lock, so it is refused */
	assert_int_equal(bm_checkpoint(bm), -EDEADLK);
	set_page(bm, first + 1, 6);
	bm_txn_end(bm);
	assert_int_equal(bm_checkpoint(bm), 0);
	bm_abandon(bm);
	bm = jopen(NULL, 1 << 20);
	assert_int_equal(get_page(bm, first), 5);
	assert_int_equal(get_page(bm, first + 1), 6);
	assert_int_equal(bm_close(bm), 0);
}

static void test_no_steal(void **st)
{
	/* 256 frames, 100 dirty pages, 400 clean ones read through: eviction
	 * must never write home before the checkpoint a dirty page that the
	 * last checkpoint has in use (new pages may go: test_ordered.c). */
	uint64_t first;
	struct bm_stats s, s0;
	assert_int_equal(bm_format(img, 16 << 20, true), 0);
	struct bm *bm = jopen(NULL, 256 * 4096);
	bm_stats_get(bm, &s);
	assert_true(s.dirty_limit > 0 && s.dirty_limit <= 128);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, 500, BM_PID_NONE, &first), 0);
	bm_txn_end(bm);
	for (uint64_t i = 0; i < 100; i++) {
		bm_txn_begin(bm);
		set_page(bm, first + i, 1);
		bm_txn_end(bm);
	}
	assert_int_equal(bm_checkpoint(bm), 0);
	bm_stats_get(bm, &s0);
	bm_txn_begin(bm);
	for (uint64_t i = 0; i < 100 && i < s.dirty_limit; i++)
		set_page(bm, first + i, 7 + i);
	bm_txn_end(bm);
	for (uint64_t i = 100; i < 500; i++)
		assert_int_equal(get_page(bm, first + i), 0);
	bm_stats_get(bm, &s);
	assert_int_equal(s.writebacks, s0.writebacks);
	assert_int_equal(s.checkpoints, s0.checkpoints);
	assert_true(s.evictions > 0);
	assert_true(s.resident_pages <= 256);
	assert_int_equal(bm_close(bm), 0);
}

static void test_cluster_keeps_checkpoint(void **st)
{
	/* Eviction writes a dirty victim's marked dirty neighbours along with
	 * it (bm.c, write clustering), but with the journal only those that
	 * may go home: a page the last checkpoint has in use is never written
	 * home before the next checkpoint, neighbour of a victim or not. */
	uint64_t a, b;
	struct bm_stats s;
	assert_int_equal(bm_format(img, 16 << 20, true), 0);
	struct bm *bm = jopen(NULL, 256 * 4096);
	a = new_pages(bm, 64, 1);
	assert_int_equal(bm_checkpoint(bm), 0);
	/* One transaction (no checkpoint runs inside one): change a's pages,
	 * then fill 400 new pages right after them through 256 frames, so
	 * that eviction writes new pages next to the changed ones. */
	bm_txn_begin(bm);
	for (uint64_t i = 0; i < 64; i++)
		set_page(bm, a + i, 7 + i);
	assert_int_equal(bm_alloc(bm, 400, BM_PID_NONE, &b), 0);
	assert_int_equal(b, a + 64);
	for (uint64_t i = 0; i < 400; i++)
		set_page(bm, b + i, 1000 + i);
	bm_txn_end(bm);
	bm_stats_get(bm, &s);
	assert_true(s.cluster_writebacks > 0);
	assert_true(s.dirty_pages >= 64); /* a's pages wait for the checkpoint */
	bm_abandon(bm); /* a crash: the image must hold the checkpoint */

	bm = jopen(NULL, 256 * 4096);
	for (uint64_t i = 0; i < 64; i++)
		assert_int_equal(get_page(bm, a + i), 1);
	bm_stats_get(bm, &s);
	assert_int_equal(s.csum_errors, 0);
	assert_int_equal(bm_close(bm), 0);
}

/* test_steal_during_pool_checkpoint: two threads, each held at its first
 * page write until the test lets it go. */
struct hold {
	pthread_t thread;
	bool held, go;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct hold h[2];
	struct bm *bm;
	uint64_t first, n, rounds; /* the pages the reader reads */
	int r;
} hold = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void hold_on_write(struct bm_fault *f, uint64_t n)
{
	pthread_mutex_lock(&hold.mu);
	for (int i = 0; i < 2; i++) {
		struct hold *h = &hold.h[i];
		if (!pthread_equal(pthread_self(), h->thread) || h->held)
			continue;
		h->held = true;
		pthread_cond_broadcast(&hold.cv);
		while (!h->go)
			pthread_cond_wait(&hold.cv, &hold.mu);
	}
	pthread_mutex_unlock(&hold.mu);
}

static void hold_wait(int i)
{
	pthread_mutex_lock(&hold.mu);
	while (!hold.h[i].held)
		pthread_cond_wait(&hold.cv, &hold.mu);
	pthread_mutex_unlock(&hold.mu);
}

static void hold_release(int i)
{
	pthread_mutex_lock(&hold.mu);
	hold.h[i].go = true;
	pthread_cond_broadcast(&hold.cv);
	pthread_mutex_unlock(&hold.mu);
}

static void *reader_thread(void *arg)
{
	for (uint64_t r = 0; r < hold.rounds; r++)
		for (uint64_t i = 0; i < hold.n; i++)
			if (vt_page_get(hold.bm, hold.first + i, &(uint64_t){0}) != 0)
				return (void *)1;
	return NULL;
}

static void *checkpoint_thread(void *arg)
{
	hold.r = bm_checkpoint(hold.bm);
	return NULL;
}

static void test_steal_during_pool_checkpoint(void **st)
{
	/* A checkpoint of more than 4096 pages writes them from their frames
	 * (no copies), holding transactions off but not readers, whose loads
	 * evict. A new page may be stolen (written home and dropped) by a
	 * reader's eviction. When the checkpoint took it in while that write
	 * was under way, the page must keep its frame until the checkpoint is
	 * done, or the checkpoint writes home whatever the dropped frame reads
	 * as, under the page's real checksum. So: a reader evicts until its
	 * first steal's write, held there; the checkpoint starts (takes its
	 * pages, the stolen ones among them) and is held at its first write;
	 * the reader goes on evicting (its stolen pages, their neighbours,
	 * thousands of others); then the checkpoint finishes, and every new
	 * page must read back from the image as it was written. */
	enum { NEW = 4200, OTHER = 16000, FRAMES = 12288 };
	struct bm_fault f;
	uint64_t a, b;
	struct bm_stats s;
	void *rr;

	bm_fault_init(&f);
	f.on_write = hold_on_write;
	assert_int_equal(bm_format(img, 256 << 20, true), 0);
	struct bm *bm = jopen(&f, FRAMES * 4096);
	bm_stats_get(bm, &s);
	assert_true(s.dirty_limit > NEW); /* readers do not wait for a checkpoint */
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, NEW, BM_PID_NONE, &a), 0);
	assert_int_equal(bm_alloc(bm, OTHER, BM_PID_NONE, &b), 0);
	bm_txn_end(bm);
	for (uint64_t i = 0; i < NEW; i += 100) {
		bm_txn_begin(bm);
		for (uint64_t j = i; j < i + 100 && j < NEW; j++)
			set_page(bm, a + j, 5000 + j);
		bm_txn_end(bm);
	}
	bm_stats_get(bm, &s);
	assert_true(s.dirty_pages >= NEW);

	hold.bm = bm;
	hold.first = b;
	hold.n = OTHER;
	hold.rounds = 3;
	memset(hold.h, 0, sizeof(hold.h));
	pthread_t reader, ckpt;
	pthread_mutex_lock(&hold.mu);
	assert_int_equal(pthread_create(&reader, NULL, reader_thread, NULL), 0);
	hold.h[0].thread = reader;
	pthread_mutex_unlock(&hold.mu);
	hold_wait(0); /* the reader is writing a stolen page */
	pthread_mutex_lock(&hold.mu);
	assert_int_equal(pthread_create(&ckpt, NULL, checkpoint_thread, NULL), 0);
	hold.h[1].thread = ckpt;
	pthread_mutex_unlock(&hold.mu);
	hold_wait(1); /* the checkpoint took its pages, writes from the pool */
	hold_release(0);
	assert_int_equal(pthread_join(reader, &rr), 0);
	assert_null(rr);
	bm_stats_get(bm, &s);
	assert_true(s.evictions > OTHER);
	hold_release(1);
	assert_int_equal(pthread_join(ckpt, NULL), 0);
	assert_int_equal(hold.r, 0);

	f.on_write = NULL;
	assert_true(bm_evict_all(bm, true) > 0);
	for (uint64_t i = 0; i < NEW; i++)
		assert_int_equal(get_page(bm, a + i), 5000 + i);
	bm_stats_get(bm, &s);
	assert_int_equal(s.csum_errors, 0);
	assert_int_equal(bm_close(bm), 0);
	bm_fault_fini(&f);
}

static void test_dirty_limit_triggers_checkpoint(void **st)
{
	uint64_t first;
	struct bm_stats s;
	assert_int_equal(bm_format(img, 16 << 20, true), 0);
	struct bm *bm = jopen(NULL, 256 * 4096);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, 1000, BM_PID_NONE, &first), 0);
	bm_txn_end(bm);
	for (uint64_t i = 0; i < 1000; i++) {
		bm_txn_begin(bm);
		set_page(bm, first + i, i);
		bm_txn_end(bm);
	}
	bm_stats_get(bm, &s);
	/* one checkpoint each time more than dirty_limit pages are dirty */
	assert_true(s.checkpoints >= 1000 / (s.dirty_limit + 1) - 1);
	assert_true(s.dirty_pages <= s.dirty_limit + 1);
	for (uint64_t i = 0; i < 1000; i++)
		assert_int_equal(get_page(bm, first + i), i);
	assert_int_equal(bm_close(bm), 0);
}

struct gc {
	struct bm *bm;
	uint64_t pid;
	int n;
};

static void *gc_main(void *arg)
{
	struct gc *g = arg;
	for (int i = 0; i < g->n; i++) {
		bm_txn_begin(g->bm);
		set_page(g->bm, g->pid, (uint64_t)i);
		bm_txn_end(g->bm);
		assert_int_equal(bm_checkpoint(g->bm), 0);
	}
	return NULL;
}

static void test_group_commit(void **st)
{
	uint64_t first;
	struct bm_stats s;
	struct gc g[4];
	pthread_t th[4];
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	struct bm *bm = jopen(NULL, 1 << 20);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, 4, BM_PID_NONE, &first), 0);
	bm_txn_end(bm);
	for (int i = 0; i < 4; i++) {
		g[i] = (struct gc){ bm, first + (uint64_t)i, 50 };
		pthread_create(&th[i], NULL, gc_main, &g[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	bm_stats_get(bm, &s);
	/* 200 durable commits; concurrent ones shared checkpoints */
	assert_true(s.checkpoints <= 200);
	print_message("group commit: 200 commits in %llu checkpoints\n",
		      (unsigned long long)s.checkpoints);
	assert_int_equal(bm_close(bm), 0);
	bm = jopen(NULL, 1 << 20);
	for (int i = 0; i < 4; i++)
		assert_int_equal(get_page(bm, first + (uint64_t)i), 49);
	assert_int_equal(bm_close(bm), 0);
}

/* A gate at one sync (bm_fault.on_sync): the thread that reaches sync
 * number `at` waits there until the test opens it. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t at;
	bool held, open;
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, false };

static void gate_on_sync(struct bm_fault *f, uint64_t n)
{
	(void)f;
	pthread_mutex_lock(&gate.mu);
	if (n == gate.at) {
		gate.held = true;
		pthread_cond_broadcast(&gate.cv);
		while (!gate.open)
			pthread_cond_wait(&gate.cv, &gate.mu);
	}
	pthread_mutex_unlock(&gate.mu);
}

struct committer {
	struct bm *bm;
	uint64_t pid, val;
	int r;
};

static void committer_told(struct bm_durable *d, int r)
{
	(void)d;
	(void)r;
}

/* Commits the way an fsync does: told at the commit (bm_checkpoint_notify). */
static void *committer_main(void *arg)
{
	struct committer *c = arg;
	struct bm_durable d = { .fn = committer_told };
	bm_txn_begin(c->bm);
	set_page(c->bm, c->pid, c->val);
	bm_txn_end(c->bm);
	c->r = bm_checkpoint_notify(c->bm, &d);
	assert_true(d.told);
	return NULL;
}

/* Group commit releases the callers a checkpoint covers when its journal is
 * synced, not when its home writes are: held at the commit sync of one
 * checkpoint, two callers queue for the next; it commits, then its home
 * sync fails with the disk gone. The caller that ran it gets the error, the
 * other one success, and after a power cut both changes are there (the
 * journal is replayed). Before, the second waited for the home sync too,
 * found the checkpoint failed, ran its own and failed. */
static void test_follower_durable_at_commit(void **st)
{
	uint64_t first;
	struct bm_fault f;
	struct committer c[3];
	pthread_t th[3];

	bm_fault_init(&f);
	f.record = true;
	f.on_sync = gate_on_sync;
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	struct bm *bm = jopen(&f, 1 << 20);
	first = new_pages(bm, 3, 1);
	assert_int_equal(bm_checkpoint(bm), 0);

	pthread_mutex_lock(&f.mu);
	uint64_t s0 = f.syncs;
	pthread_mutex_unlock(&f.mu);
	gate.at = s0 + 1; /* checkpoint X's commit */
	c[0] = (struct committer){ bm, first, 10, 1 };
	pthread_create(&th[0], NULL, committer_main, &c[0]);
	pthread_mutex_lock(&gate.mu);
	while (!gate.held)
		pthread_cond_wait(&gate.cv, &gate.mu);
	pthread_mutex_unlock(&gate.mu);

	for (int i = 1; i < 3; i++) {
		c[i] = (struct committer){ bm, first + (uint64_t)i, 10 + (uint64_t)i, 1 };
		pthread_create(&th[i], NULL, committer_main, &c[i]);
	}
	while (bm_checkpoint_waiters(bm) < 2)
		usleep(1000);

	/* X: commit s0+1, home s0+2; Y: commit s0+3, home s0+4: the disk
	 * goes away there. */
	pthread_mutex_lock(&f.mu);
	f.fail_sync_at = s0 + 4;
	f.fail_sync_err = EIO;
	f.fail_syncs_after = true;
	pthread_mutex_unlock(&f.mu);
	pthread_mutex_lock(&gate.mu);
	gate.open = true;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(c[0].r, 0);
	assert_true((c[1].r == 0 && c[2].r == -EIO) || (c[1].r == -EIO && c[2].r == 0));

	bm_abandon(bm);
	assert_true(bm_fault_power_loss(&f, img, 77, true) >= 0);
	bm_fault_fini(&f);
	bm = jopen(NULL, 1 << 20);
	assert_true(bm_recovered_pages(bm) > 0);
	for (uint64_t i = 0; i < 3; i++)
		assert_int_equal(get_page(bm, first + i), 10 + i);
	assert_int_equal(bm_close(bm), 0);
}

struct told {
	struct bm_durable d; /* first */
	_Atomic int r;
	atomic_bool told;
};

static void told_fn(struct bm_durable *d, int r)
{
	struct told *t = (struct told *)d;
	atomic_store(&t->r, r);
	atomic_store(&t->told, true);
}

struct notifier {
	struct bm *bm;
	struct told t;
	int r;
};

static void *notifier_main(void *arg)
{
	struct notifier *n = arg;
	n->r = bm_checkpoint_notify(n->bm, &n->t.d);
	return NULL;
}

/* bm_checkpoint_notify tells its caller at the commit sync, before the home
 * sync: held at the home sync, the caller has been told already; a covered
 * caller and one with nothing to write are told too, once, before the
 * return. */
static void test_notify_at_commit(void **st)
{
	uint64_t first;
	struct bm_fault f;
	struct notifier n = { 0 };
	pthread_t th;

	bm_fault_init(&f);
	f.on_sync = gate_on_sync;
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	struct bm *bm = jopen(&f, 1 << 20);
	first = new_pages(bm, 1, 1);
	assert_int_equal(bm_checkpoint(bm), 0);

	bm_txn_begin(bm);
	set_page(bm, first, 2);
	bm_txn_end(bm);
	pthread_mutex_lock(&f.mu);
	uint64_t s0 = f.syncs;
	pthread_mutex_unlock(&f.mu);
	pthread_mutex_lock(&gate.mu);
	gate.at = s0 + 2; /* the home sync */
	gate.held = gate.open = false;
	pthread_mutex_unlock(&gate.mu);
	n.bm = bm;
	n.t.d.fn = told_fn;
	pthread_create(&th, NULL, notifier_main, &n);
	pthread_mutex_lock(&gate.mu);
	while (!gate.held)
		pthread_cond_wait(&gate.cv, &gate.mu);
	pthread_mutex_unlock(&gate.mu);
	assert_true(atomic_load(&n.t.told)); /* before the home sync */
	assert_int_equal(atomic_load(&n.t.r), 0);
	assert_true(n.t.d.told);
	pthread_mutex_lock(&gate.mu);
	gate.open = true;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
	pthread_join(th, NULL);
	assert_int_equal(n.r, 0);

	/* nothing changed since: told 0 all the same */
	struct told t2 = { .d = { .fn = told_fn } };
	assert_int_equal(bm_checkpoint_notify(bm, &t2.d), 0);
	assert_true(atomic_load(&t2.told));
	assert_int_equal(bm_close(bm), 0);
	bm_fault_fini(&f);
	bm = jopen(NULL, 1 << 20);
	assert_int_equal(get_page(bm, first), 2);
	assert_int_equal(bm_close(bm), 0);
}

static void test_write_error_keeps_image(void **st)
{
	uint64_t first;
	struct bm_fault f = { 0 };
	bm_fault_init(&f);
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	struct bm *bm = jopen(&f, 1 << 20);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, 8, BM_PID_NONE, &first), 0);
	for (uint64_t i = 0; i < 8; i++)
		set_page(bm, first + i, 1);
	bm_txn_end(bm);
	assert_int_equal(bm_checkpoint(bm), 0);

	for (int errv = 0; errv < 2; errv++) {
		int e = errv ? ENOSPC : EIO;
		bm_txn_begin(bm);
		for (uint64_t i = 0; i < 8; i++)
			set_page(bm, first + i, 2 + (uint64_t)errv);
		bm_txn_end(bm);
		f.fail_write_at = f.writes + 3;
		f.fail_write_err = e;
		assert_int_equal(bm_checkpoint(bm), -e);
		f.fail_write_at = 0;
		/* the data is still in the pool, and the next try succeeds */
		assert_int_equal(get_page(bm, first), 2 + (uint64_t)errv);
		assert_int_equal(bm_checkpoint(bm), 0);
	}
	/* a failing sync is reported too */
	bm_txn_begin(bm);
	set_page(bm, first, 9);
	bm_txn_end(bm);
	f.fail_sync_at = f.syncs + 1;
	f.fail_sync_err = EIO;
	assert_int_equal(bm_checkpoint(bm), -EIO);
	f.fail_sync_at = 0;
	assert_int_equal(bm_close(bm), 0);
	bm_fault_fini(&f);
	bm = jopen(NULL, 1 << 20);
	assert_int_equal(get_page(bm, first), 9);
	assert_int_equal(get_page(bm, first + 7), 3);
	assert_int_equal(bm_close(bm), 0);
}

/* Power loss at every phase of a checkpoint, many times over: the image
 * must come back as one of the states a checkpoint could have left, never
 * a mixture, never a torn page. */
static void test_power_loss(void **st)
{
	/* at least 20: every crash phase (it % 4) with every round count
	 * (1 + it % 5) */
	unsigned iters = (unsigned)vt_test_scaled(60, 20);
	uint64_t committed[NPAGES], current[NPAGES];
	unsigned replays = 0;

	for (unsigned it = 0; it < iters; it++) {
		uint64_t seed = 1000 + it, first;
		struct bm_fault f = { 0 };
		bm_fault_init(&f);
		f.record = true;
		assert_int_equal(bm_format(img, 8 << 20, true), 0);
		struct bm *bm = jopen(&f, 1 << 20);
		bm_txn_begin(bm);
		assert_int_equal(bm_alloc(bm, NPAGES, BM_PID_NONE, &first), 0);
		for (unsigned i = 0; i < NPAGES; i++)
			set_page(bm, first + i, committed[i] = current[i] = 1);
		bm_txn_end(bm);
		assert_int_equal(bm_checkpoint(bm), 0);

		unsigned rounds = 1 + it % 5;
		for (unsigned rd = 0; rd < rounds; rd++) {
			bm_txn_begin(bm);
			for (unsigned k = 0; k < 1 + (it + rd) % 20; k++) {
				unsigned i = (unsigned)((seed * 31 + k * 7 + rd * 13) % NPAGES);
				set_page(bm, first + i, current[i] = 100 * rd + k + 2 + it);
			}
			bm_txn_end(bm);
			if (rd + 1 < rounds) {
				assert_int_equal(bm_checkpoint(bm), 0);
				memcpy(committed, current, sizeof(current));
			}
		}
		/* the crash: 0 before any checkpoint write, 1 at the commit sync,
		 * 2 at the home sync (the journal is durable) */
		int phase = (int)(it % 3);
		if (phase > 0) {
			f.fail_sync_at = f.syncs + (uint64_t)phase;
			f.fail_sync_err = EIO;
			assert_int_equal(bm_checkpoint(bm), -EIO);
		}
		bm_abandon(bm);
		assert_true(bm_fault_power_loss(&f, img, seed, true) >= 0);
		bm_fault_fini(&f);

		bm = jopen(NULL, 1 << 20);
		replays += bm_recovered_pages(bm) > 0;
		bool is_old = true, is_new = true;
		for (unsigned i = 0; i < NPAGES; i++) {
			uint64_t v = get_page(bm, first + i);
			assert_int_not_equal(v, UINT64_MAX); /* never torn */
			is_old &= v == committed[i];
			is_new &= v == current[i];
		}
		assert_true(is_old || is_new);
		if (phase >= 2)
			assert_true(is_new); /* the journal was durable */
		if (phase == 0)
			assert_true(is_old);
		assert_int_equal(bm_close(bm), 0);
	}
	print_message("power loss: %u crashes, %u journal replays\n", iters, replays);
	assert_true(replays > 0);
}

/* After a crash that followed a checkpoint's home sync the journal is found
 * home: nothing is replayed, and a read-only open works (fsck -n). When a
 * power cut lost home writes instead, it is replayed, and a read-only open
 * refuses until then. */
static void test_journal_found_home(void **st)
{
	uint64_t first;
	struct bm_fault f;
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	struct bm *bm = jopen(NULL, 1 << 20);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, NPAGES, BM_PID_NONE, &first), 0);
	for (uint64_t i = 0; i < NPAGES; i++)
		set_page(bm, first + i, 7 + i);
	bm_txn_end(bm);
	assert_int_equal(bm_close(bm), 0); /* now in use in the image: journaled */

	bm_fault_init(&f);
	f.record = true;
	bm = jopen(&f, 1 << 20);
	bm_txn_begin(bm);
	for (uint64_t i = 0; i < NPAGES; i++)
		set_page(bm, first + i, 1000 + i);
	bm_sb_set(bm, 3, 33);
	bm_txn_end(bm);
	assert_int_equal(bm_checkpoint(bm), 0);
	bm_abandon(bm); /* killed: every write reached the file */
	bm_fault_fini(&f);

	struct bm_config ro = { .path = img, .pool_bytes = 1 << 20, .read_only = true };
	assert_int_equal(vt_bm_open(&ro, &bm), 0);
	for (uint64_t i = 0; i < NPAGES; i++)
		assert_int_equal(get_page(bm, first + i), 1000 + i);
	assert_int_equal(bm_sb_get(bm, 3), 33);
	assert_int_equal(bm_close(bm), 0);
	bm = jopen(NULL, 1 << 20);
	assert_int_equal(bm_recovered_pages(bm), 0);
	assert_int_equal(bm_sb_get(bm, 3), 33);

	/* Again, but the home writes are lost (the sync of the home pages
	 * fails, then the power goes: seed 1 undoes some of them). */
	assert_int_equal(bm_close(bm), 0);
	bm_fault_init(&f);
	f.record = true;
	bm = jopen(&f, 1 << 20);
	bm_txn_begin(bm);
	for (uint64_t i = 0; i < NPAGES; i++)
		set_page(bm, first + i, 2000 + i);
	bm_txn_end(bm);
	pthread_mutex_lock(&f.mu);
	f.fail_sync_at = f.syncs + 2;
	f.fail_sync_err = EIO;
	pthread_mutex_unlock(&f.mu);
	assert_int_equal(bm_checkpoint(bm), -EIO);
	bm_abandon(bm);
	assert_true(bm_fault_power_loss(&f, img, 1, false) > 0);
	bm_fault_fini(&f);
	assert_int_equal(vt_bm_open(&ro, &bm), -EROFS);
	bm = jopen(NULL, 1 << 20);
	assert_true(bm_recovered_pages(bm) > 0);
	for (uint64_t i = 0; i < NPAGES; i++)
		assert_int_equal(get_page(bm, first + i), 2000 + i);
	assert_int_equal(bm_close(bm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_checkpoint_persists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nested_transactions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_steal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cluster_keeps_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_steal_during_pool_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dirty_limit_triggers_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_follower_durable_at_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notify_at_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error_keeps_image, setup, teardown),
		cmocka_unit_test_setup_teardown(test_power_loss, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_found_home, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
