/* bm_prefetch: read-ahead of evicted pages and frames for new ones. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "engine/bm.h"
#include "vt_bm.h"

#define NPAGES 64

static char img[256];

static int setup(void **st)
{
	return vt_tmp_image(img, sizeof(img), "prefetch");
}

static int teardown(void **st)
{
	unlink(img);
	return 0;
}

/* A 16 MiB image, a 2 MiB pool (512 frames: NPAGES is an eighth). */
static struct bm *open_fresh(void)
{
	struct bm *bm = NULL;
	struct bm_config cfg = {.path = img, .pool_bytes = 2u << 20};
	assert_int_equal(bm_format(img, 16u << 20, true), 0);
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	return bm;
}

struct pages {
	uint64_t pid[NPAGES];
	unsigned n;
	uint8_t seed;
	int seen_bad; /* read_op: index of the first page that differs, or -1 */
};

static uint8_t pattern(uint64_t pid, size_t i, uint8_t seed)
{
	return (uint8_t)(pid * 131 + i * 7 + seed);
}

static int fill_op(struct bm_op *op, void *arg)
{
	struct pages *p = arg;
	for (unsigned k = 0; k < p->n; k++) {
		struct bm_guard g;
		uint8_t *b = bm_fix_x_new(op, p->pid[k], &g);
		for (size_t i = 0; i < BM_PAGE_SIZE; i++)
			b[i] = pattern(p->pid[k], i, p->seed);
		bm_unfix(op, &g);
	}
	return 0;
}

static int read_op(struct bm_op *op, void *arg)
{
	struct pages *p = arg;
	p->seen_bad = -1;
	for (unsigned k = 0; k < p->n; k++) {
		struct bm_guard g;
		const uint8_t *b = bm_fix_s(op, p->pid[k], &g);
		for (size_t i = 0; i < BM_PAGE_SIZE && p->seen_bad < 0; i++)
			if (b[i] != pattern(p->pid[k], i, p->seed))
				p->seen_bad = (int)k;
		bm_unfix(op, &g);
	}
	return 0;
}

static int zero_op(struct bm_op *op, void *arg)
{
	struct pages *p = arg;
	p->seen_bad = -1;
	for (unsigned k = 0; k < p->n; k++) {
		struct bm_guard g;
		const uint8_t *b = bm_fix_s(op, p->pid[k], &g);
		for (size_t i = 0; i < BM_PAGE_SIZE && p->seen_bad < 0; i++)
			if (b[i] != 0)
				p->seen_bad = (int)k;
		bm_unfix(op, &g);
	}
	return 0;
}

static void alloc_pages(struct bm *bm, struct pages *p)
{
	uint64_t first;
	assert_int_equal(bm_alloc(bm, NPAGES, BM_PID_NONE, &first), 0);
	for (unsigned k = 0; k < NPAGES; k++)
		p->pid[k] = first + k;
	p->n = NPAGES;
}

static unsigned resident(struct bm *bm, const struct pages *p)
{
	unsigned n = 0;
	for (unsigned k = 0; k < p->n; k++)
		n += bm_is_resident(bm, p->pid[k]);
	return n;
}

/* New pages: frames without a read, zeros inside, counted as zero loads. */
static void test_fresh(void **st)
{
	struct bm *bm = open_fresh();
	struct pages p = {.seed = 1};
	struct bm_stats a, b;

	alloc_pages(bm, &p);
	assert_int_equal(resident(bm, &p), 0);
	bm_stats_get(bm, &a);
	bm_prefetch(bm, p.pid, p.n, true);
	bm_stats_get(bm, &b);
	assert_int_equal(resident(bm, &p), NPAGES);
	assert_int_equal(b.zero_loads - a.zero_loads, NPAGES);
	assert_int_equal(b.loads - a.loads, 0);
	assert_int_equal(b.read_bytes - a.read_bytes, 0);

	/* The fixes find them in the pool, as zeros; then they take data. */
	assert_int_equal(bm_run(bm, zero_op, &p), 0);
	assert_int_equal(p.seen_bad, -1);
	bm_stats_get(bm, &a);
	assert_int_equal(a.zero_loads, b.zero_loads);
	assert_int_equal(bm_run(bm, fill_op, &p), 0);
	assert_int_equal(bm_run(bm, read_op, &p), 0);
	assert_int_equal(p.seen_bad, -1);
	assert_int_equal(bm_close(bm), 0);
}

/* A "fresh" prefetch takes only pages never written: one that holds data
 * (here written back and evicted) is left alone, and reads back as it was,
 * not as zeros; never-written pages among them still get their frames. */
static void test_fresh_skips_written(void **st)
{
	struct bm *bm = open_fresh();
	struct pages p = {.seed = 9};
	struct bm_stats a, b;

	alloc_pages(bm, &p);
	p.n = NPAGES / 2; /* the first half holds data, the second never did */
	assert_int_equal(bm_run(bm, fill_op, &p), 0);
	assert_true(bm_evict_all(bm, true) >= (int64_t)p.n);
	p.n = NPAGES;
	assert_int_equal(resident(bm, &p), 0);
	bm_stats_get(bm, &a);
	bm_prefetch(bm, p.pid, p.n, true);
	bm_stats_get(bm, &b);
	assert_int_equal(b.zero_loads - a.zero_loads, NPAGES / 2);
	for (unsigned k = 0; k < NPAGES; k++)
		assert_int_equal(bm_is_resident(bm, p.pid[k]), k >= NPAGES / 2);
	p.n = NPAGES / 2;
	assert_int_equal(bm_run(bm, read_op, &p), 0);
	assert_int_equal(p.seen_bad, -1);
	assert_int_equal(bm_close(bm), 0);
}

/* Evicted pages come back in runs, every byte and checksum right, and count
 * as loads exactly once; the fixes after them are hits. */
static void test_readahead(void **st)
{
	struct bm *bm = open_fresh();
	struct pages p = {.seed = 2};
	struct bm_stats a, b;

	alloc_pages(bm, &p);
	assert_int_equal(bm_run(bm, fill_op, &p), 0);
	assert_true(bm_evict_all(bm, true) >= NPAGES);
	assert_int_equal(resident(bm, &p), 0);

	/* Every other page of the first half: runs of one, then a run. */
	struct pages some = {.seed = 2};
	for (unsigned k = 0; k < NPAGES / 2; k += 2)
		some.pid[some.n++] = p.pid[k];
	for (unsigned k = NPAGES / 2; k < NPAGES; k++)
		some.pid[some.n++] = p.pid[k];
	bm_stats_get(bm, &a);
	bm_prefetch(bm, some.pid, some.n, false);
	bm_stats_get(bm, &b);
	assert_int_equal(resident(bm, &some), some.n);
	assert_int_equal(resident(bm, &p), some.n);
	assert_int_equal(b.loads - a.loads, some.n);
	assert_int_equal(b.read_bytes - a.read_bytes, (uint64_t)some.n * BM_PAGE_SIZE);

	/* A second prefetch of resident pages does nothing. */
	bm_prefetch(bm, some.pid, some.n, false);
	bm_stats_get(bm, &a);
	assert_int_equal(a.loads, b.loads);

	assert_int_equal(bm_run(bm, read_op, &p), 0);
	assert_int_equal(p.seen_bad, -1);
	bm_stats_get(bm, &b);
	assert_int_equal(b.loads - a.loads, NPAGES - some.n); /* only the rest */
	assert_int_equal(bm_close(bm), 0);
}

/* A page that fails its checksum is left evicted for its fix to report;
 * the pages around it in the same run still come in. */
static void test_bad_page_left_to_fix(void **st)
{
	struct bm *bm = open_fresh();
	struct pages p = {.seed = 3};
	struct bm_stats a, b;

	alloc_pages(bm, &p);
	assert_int_equal(bm_run(bm, fill_op, &p), 0);
	assert_true(bm_evict_all(bm, true) >= NPAGES);

	uint64_t bad = p.pid[NPAGES / 2];
	int fd = open(img, O_WRONLY);
	assert_true(fd >= 0);
	uint8_t junk[16];
	memset(junk, 0xA5, sizeof(junk));
	assert_int_equal(pwrite(fd, junk, sizeof(junk), (off_t)(bad * BM_PAGE_SIZE + 100)),
			 (ssize_t)sizeof(junk));
	close(fd);

	bm_stats_get(bm, &a);
	bm_prefetch(bm, p.pid, p.n, false);
	bm_stats_get(bm, &b);
	assert_false(bm_is_resident(bm, bad));
	assert_int_equal(resident(bm, &p), NPAGES - 1);
	/* every page was read (the counters say what the disk did) ... */
	assert_int_equal(b.loads - a.loads, NPAGES);
	assert_int_equal(b.read_bytes - a.read_bytes, (uint64_t)NPAGES * BM_PAGE_SIZE);
	assert_int_equal(b.csum_errors, a.csum_errors); /* ... the fix reports it */

	struct pages one = {.pid = {bad}, .n = 1, .seed = 3};
	assert_int_equal(bm_run(bm, read_op, &one), -EUCLEAN);
	bm_stats_get(bm, &a);
	assert_int_equal(a.csum_errors, b.csum_errors + 1);
	assert_int_equal(a.loads, b.loads + 1); /* read again, by the fix */
	bm_close(bm);
}

/* Out-of-range pids and holes are skipped; a request larger than a quarter
 * of the pool is ignored rather than evicting what it brings in. */
static void test_limits(void **st)
{
	struct bm *bm = open_fresh();
	struct pages p = {.seed = 4};
	struct bm_stats a, b, s;

	alloc_pages(bm, &p);
	assert_int_equal(bm_run(bm, fill_op, &p), 0);
	assert_true(bm_evict_all(bm, true) >= NPAGES);

	uint64_t odd[4] = {BM_PID_NONE, 0, bm_page_count(bm) + 5, p.pid[0]};
	bm_stats_get(bm, &a);
	bm_prefetch(bm, odd, 4, false);
	bm_stats_get(bm, &b);
	assert_int_equal(b.loads - a.loads, 1);
	assert_true(bm_is_resident(bm, p.pid[0]));

	bm_stats_get(bm, &s);
	uint64_t quarter = s.capacity_pages / 4;
	uint64_t *many = calloc(quarter + 1, sizeof(*many));
	assert_non_null(many);
	for (uint64_t k = 0; k <= quarter; k++)
		many[k] = p.pid[1 + k % (NPAGES - 1)];
	bm_prefetch(bm, many, (unsigned)(quarter + 1), false);
	bm_stats_get(bm, &a);
	assert_int_equal(a.loads, b.loads);
	free(many);
	assert_int_equal(bm_close(bm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fresh_skips_written, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readahead, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_page_left_to_fix, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
