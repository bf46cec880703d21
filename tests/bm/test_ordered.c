/*
 * Pages no checkpoint has seen in use go home without the journal
 * (engine/bm_journal.c, "New pages"): written once rather than twice, and
 * evictable while dirty. The checks: what the journal and the image get,
 * that such pages may leave the pool before any checkpoint, and that a page
 * freed and allocated again is NOT one of them, through crashes.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/bm.h"
#include "engine/bm_fault.h"
#include "vt_bm.h"

static char img[256];

static int setup(void **st)
{
	return vt_tmp_image(img, sizeof(img), "ord");
}

static int teardown(void **st)
{
	unlink(img);
	return 0;
}

static struct bm *jopen(struct bm_fault *f, uint64_t pool)
{
	struct bm *bm = NULL;
	struct bm_config cfg = {.path = img, .pool_bytes = pool, .journal = true,
				.checkpoint_ms = 3600 * 1000, .fault = f};
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	return bm;
}

/* Pages hold a value in every word (vt_page_set: a torn page shows). */
static void set_page(struct bm *bm, uint64_t pid, uint64_t val)
{
	assert_int_equal(vt_page_set(bm, pid, val), 0);
}

static uint64_t get_page(struct bm *bm, uint64_t pid)
{
	uint64_t v;
	assert_int_equal(vt_page_get(bm, pid, &v), 0);
	return v;
}

/* New pages are written once: home, not to the journal. */
static void test_new_pages_skip_journal(void **st)
{
	enum { N = 512 };
	struct bm_stats a, b;
	uint64_t first;

	assert_int_equal(bm_format(img, 64 << 20, true), 0);
	struct bm *bm = jopen(NULL, 16 << 20);
	bm_stats_get(bm, &a);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, N, BM_PID_NONE, &first), 0);
	for (uint64_t i = 0; i < N; i++)
		set_page(bm, first + i, 1000 + i);
	bm_txn_end(bm);
	assert_int_equal(bm_checkpoint(bm), 0);
	bm_stats_get(bm, &b);
	/* The journal got the bitmap, checksum-table and superblock pages and
	 * a descriptor; the image got the N pages once (plus those). */
	assert_true(b.log_bytes - a.log_bytes < (uint64_t)N * BM_PAGE_SIZE / 8);
	assert_true(b.write_bytes - a.write_bytes >= (uint64_t)N * BM_PAGE_SIZE);
	assert_true(b.write_bytes - a.write_bytes < (uint64_t)N * BM_PAGE_SIZE * 5 / 4);

	/* Changed again, they are in use in the committed state now: the
	 * journal takes them. */
	bm_txn_begin(bm);
	for (uint64_t i = 0; i < N; i++)
		set_page(bm, first + i, 2000 + i);
	bm_txn_end(bm);
	assert_int_equal(bm_checkpoint(bm), 0);
	bm_stats_get(bm, &a);
	assert_true(a.log_bytes - b.log_bytes >= (uint64_t)N * BM_PAGE_SIZE);
	assert_int_equal(bm_close(bm), 0);

	bm = jopen(NULL, 16 << 20);
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(get_page(bm, first + i), 2000 + i);
	assert_int_equal(bm_close(bm), 0);
}

/* New dirty pages may leave the pool before any checkpoint: one
 * transaction (no checkpoint can run inside it) writes four pools' worth of
 * them, and every byte comes back, before and after a reopen. Without the
 * rule the pool would fill with dirty pages it may not evict. */
static void test_new_pages_evict_without_checkpoint(void **st)
{
	const uint64_t pool = 2 << 20, n = 4 * (pool / BM_PAGE_SIZE);
	struct bm_stats s;
	uint64_t first;

	assert_int_equal(bm_format(img, 64 << 20, true), 0);
	struct bm *bm = jopen(NULL, pool);
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, n, BM_PID_NONE, &first), 0);
	for (uint64_t i = 0; i < n; i++)
		set_page(bm, first + i, 7000 + i);
	bm_txn_end(bm);
	bm_stats_get(bm, &s);
	assert_int_equal(s.checkpoints, 0);
	assert_true(s.evictions >= n - pool / BM_PAGE_SIZE);
	assert_true(s.writebacks >= n - pool / BM_PAGE_SIZE);
	assert_true(s.resident_pages <= pool / BM_PAGE_SIZE);
	for (uint64_t i = 0; i < n; i++)
		assert_int_equal(get_page(bm, first + i), 7000 + i);
	assert_int_equal(bm_close(bm), 0);
	bm = jopen(NULL, pool);
	for (uint64_t i = 0; i < n; i++)
		assert_int_equal(get_page(bm, first + i), 7000 + i);
	assert_int_equal(bm_close(bm), 0);
}

/*
 * The rule that keeps it safe: a page the committed state has in use is
 * never written home before a checkpoint, even after it was freed and
 * allocated again. Page P holds A in a checkpoint; P is freed, allocated
 * again and given B, the pool is emptied (eviction would write P home if it
 * took it for new), and the process dies. After the crash P must hold A.
 * Also the opposite: new pages written home early and lost with the crash
 * leave nothing behind that the image would read.
 */
static void test_reused_page_waits_for_checkpoint(void **st)
{
	enum { NEW = 1024 }; /* the pool holds 256 */
	struct bm_fault f;
	uint64_t p, q, first_new;

	for (unsigned round = 0; round < 20; round++) {
		bm_fault_init(&f);
		f.record = true;
		assert_int_equal(bm_format(img, 16 << 20, true), 0);
		struct bm *bm = jopen(&f, 1 << 20);
		bm_txn_begin(bm);
		assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &p), 0);
		set_page(bm, p, 0xA000 + round);
		bm_txn_end(bm);
		assert_int_equal(bm_checkpoint(bm), 0);

		bm_txn_begin(bm);
		bm_free(bm, p, 1);
		assert_int_equal(bm_alloc(bm, 1, p, &q), 0);
		assert_int_equal(q, p); /* the hint gives it back */
		set_page(bm, q, 0xB000 + round);
		/* and four pools of new pages, which go home as the clock
		 * passes over them: P must not go with them */
		assert_int_equal(bm_alloc(bm, NEW, BM_PID_NONE, &first_new), 0);
		for (uint64_t i = 0; i < NEW; i++)
			set_page(bm, first_new + i, 0xC000 + i);
		bm_txn_end(bm);
		assert_true(bm_is_resident(bm, p)); /* dirty and in use: stays */
		bm_abandon(bm);
		assert_true(bm_fault_power_loss(&f, img, round, round % 2 == 1) >= 0);
		bm_fault_fini(&f);

		bm = jopen(NULL, 1 << 20);
		assert_int_equal(get_page(bm, p), 0xA000 + round);
		assert_true(bm_is_allocated(bm, p));
		for (uint64_t i = 0; i < NEW; i++)
			assert_false(bm_is_allocated(bm, first_new + i));
		assert_int_equal(bm_close(bm), 0);
	}
}

/* Power loss in the middle of checkpoints that carry new pages home: the
 * image comes back as one checkpoint or the next, never a mix, and every
 * page of it reads (checksums hold). */
static void test_power_loss_with_new_pages(void **st)
{
	enum { N = 96 };
	struct bm_fault f;
	uint64_t first, second;

	for (unsigned round = 0; round < 40; round++) {
		bm_fault_init(&f);
		assert_int_equal(bm_format(img, 16 << 20, true), 0);
		struct bm *bm = jopen(&f, 4 << 20);
		bm_txn_begin(bm);
		assert_int_equal(bm_alloc(bm, N, BM_PID_NONE, &first), 0);
		for (uint64_t i = 0; i < N; i++)
			set_page(bm, first + i, 100 + i);
		bm_sb_set(bm, 3, 1);
		bm_txn_end(bm);
		assert_int_equal(bm_checkpoint(bm), 0);

		/* The second checkpoint: new pages and changed old ones; cut
		 * at a different write each round. */
		f.record = true;
		bm_txn_begin(bm);
		assert_int_equal(bm_alloc(bm, N, BM_PID_NONE, &second), 0);
		for (uint64_t i = 0; i < N; i++) {
			set_page(bm, second + i, 500 + i);
			set_page(bm, first + i, 300 + i);
		}
		bm_sb_set(bm, 3, 2);
		bm_txn_end(bm);
		pthread_mutex_lock(&f.mu);
		f.fail_write_at = f.writes + 1 + round * 7;
		f.fail_write_err = EIO;
		f.fail_writes_after = true;
		pthread_mutex_unlock(&f.mu);
		int r = bm_checkpoint(bm);
		bm_abandon(bm);
		assert_true(bm_fault_power_loss(&f, img, round, true) >= 0);
		bm_fault_fini(&f);

		bm = jopen(NULL, 4 << 20);
		uint64_t state = bm_sb_get(bm, 3);
		assert_true(state == 1 || state == 2);
		if (r == 0)
			assert_int_equal(state, 2); /* acknowledged: must be there */
		for (uint64_t i = 0; i < N; i++)
			assert_int_equal(get_page(bm, first + i), (state == 1 ? 100 : 300) + i);
		for (uint64_t i = 0; i < N; i++) {
			if (state == 2)
				assert_int_equal(get_page(bm, second + i), 500 + i);
			else
				assert_false(bm_is_allocated(bm, second + i));
		}
		assert_int_equal(bm_close(bm), 0);
	}
}

/* A checkpoint after every new page went home by eviction: no dirty page
 * is left, yet the allocation bits and checksums of those pages changed and
 * must be committed (a checkpoint that took "no dirty pages" for "nothing
 * changed" lost them). */
static void test_checkpoint_after_all_stolen(void **st)
{
	enum { R = 2048, F = 8 };
	struct bm_stats s;
	uint64_t r0, f0;

	assert_int_equal(bm_format(img, 64 << 20, true), 0);
	struct bm *bm = jopen(NULL, 1 << 20); /* 256 frames */
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, R, BM_PID_NONE, &r0), 0);
	for (uint64_t i = 0; i < R; i++)
		set_page(bm, r0 + i, 10 + i);
	bm_txn_end(bm);
	assert_int_equal(bm_checkpoint(bm), 0);

	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, F, BM_PID_NONE, &f0), 0);
	for (uint64_t i = 0; i < F; i++)
		set_page(bm, f0 + i, 900 + i);
	bm_txn_end(bm);
	for (unsigned pass = 0; pass < 2; pass++) /* the clock passes twice */
		for (uint64_t i = 0; i < R; i++)
			assert_int_equal(get_page(bm, r0 + i), 10 + i);
	bm_stats_get(bm, &s);
	assert_int_equal(s.dirty_pages, 0);
	for (uint64_t i = 0; i < F; i++)
		assert_false(bm_is_resident(bm, f0 + i));

	assert_int_equal(bm_checkpoint(bm), 0);
	bm_abandon(bm);
	bm = jopen(NULL, 1 << 20);
	for (uint64_t i = 0; i < F; i++) {
		assert_true(bm_is_allocated(bm, f0 + i));
		assert_int_equal(get_page(bm, f0 + i), 900 + i);
	}
	assert_int_equal(bm_close(bm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_new_pages_skip_journal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_new_pages_evict_without_checkpoint, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_reused_page_waits_for_checkpoint, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_power_loss_with_new_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_after_all_stolen, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
