/* The latency histogram (engine/lat_hist.h) and the buffer manager's use of
 * it: bucket edges, percentile arithmetic on known distributions, concurrent
 * recording, and the fault / eviction-batch histograms of a real pool. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/bm.h"
#include "engine/lat_hist.h"
#include "vt_bm.h"

static void record_n(struct lat_hist *h, uint64_t ns, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		lh_record(h, ns);
}

/* |got - want| <= rel * want */
static void assert_near(double got, double want, double rel)
{
	double d = got > want ? got - want : want - got;
	if (d > rel * want)
		fail_msg("got %.1f, expected %.1f within %.0f%%", got, want, rel * 100);
}

static void test_bucket_edges(void **st)
{
	/* The underflow bucket holds everything up to 1 us, edges included. */
	assert_int_equal(lh_bucket_of(0), 0);
	assert_int_equal(lh_bucket_of(1), 0);
	assert_int_equal(lh_bucket_of(1000), 0);
	/* Then (1000, 1250], (1250, 1500], ... four per power of two. */
	assert_int_equal(lh_bucket_of(1001), 1);
	assert_int_equal(lh_bucket_of(1250), 1);
	assert_int_equal(lh_bucket_of(1251), 2);
	assert_int_equal(lh_bucket_of(2000), 4);
	assert_int_equal(lh_bucket_of(2001), 5);
	assert_int_equal(lh_bucket_of(2500), 5);
	assert_int_equal(lh_bucket_of(4001), 9);
	assert_int_equal(lh_bucket_upper(4), 2000);
	assert_int_equal(lh_bucket_upper(8), 4000);
	assert_int_equal(lh_bucket_upper(5), 2500);
	/* The last finite edge is 2^27 us; above it, overflow. */
	assert_int_equal(lh_bucket_upper(LH_BUCKETS - 2), UINT64_C(1000) << LH_OCTAVES);
	assert_int_equal(lh_bucket_of(UINT64_C(1000) << LH_OCTAVES), LH_BUCKETS - 2);
	assert_int_equal(lh_bucket_of((UINT64_C(1000) << LH_OCTAVES) + 1), LH_BUCKETS - 1);
	assert_int_equal(lh_bucket_of(UINT64_MAX), LH_BUCKETS - 1);
	assert_int_equal(lh_bucket_upper(LH_BUCKETS - 1), UINT64_MAX);

	/* Every edge belongs to the bucket below it; buckets tile the line
	 * and none is more than 25% wider than its lower edge. */
	for (unsigned i = 0; i + 1 < LH_BUCKETS; i++) {
		uint64_t hi = lh_bucket_upper(i);
		assert_int_equal(lh_bucket_of(hi), i);
		assert_int_equal(lh_bucket_of(hi + 1), i + 1);
		assert_int_equal(lh_bucket_lower(i + 1), hi);
		if (i > 0) {
			uint64_t lo = lh_bucket_lower(i);
			assert_true(hi > lo);
			assert_true((hi - lo) * 4 <= lo);
			assert_int_equal(lh_bucket_of(lo + (hi - lo) / 2), i);
		}
	}
	/* Octave edges (what the stats file prints as le) are bucket edges. */
	for (unsigned k = 0; k <= LH_OCTAVES; k++)
		assert_int_equal(lh_bucket_upper(k ? 4 * k : 0), UINT64_C(1000) << k);
}

static void test_quantiles_known(void **st)
{
	struct lat_hist *h = calloc(1, sizeof(*h));
	struct lat_snap s;
	assert_non_null(h);

	/* Empty. */
	lh_snapshot(h, &s);
	assert_int_equal(s.count, 0);
	assert_true(lh_quantile(&s, 0.5) == 0);
	assert_true(lh_mean(&s) == 0);

	/* One value, many times: every quantile is inside its bucket and
	 * none above the value itself. */
	record_n(h, 7777, 100);
	lh_snapshot(h, &s);
	assert_int_equal(s.count, 100);
	assert_int_equal(s.sum_ns, 777700);
	assert_int_equal(s.max_ns, 7777);
	assert_true(lh_mean(&s) == 7777);
	for (double q = 0; q <= 1; q += 0.125) {
		double v = lh_quantile(&s, q);
		assert_true(v >= 7000 && v <= 7777);
	}
	assert_true(lh_quantile(&s, 1) == 7777);

	/* Uniform 1..100 us, ten of each: quantiles within a bucket's width
	 * of the exact ones, and much closer in the middle of the range. */
	memset(h, 0, sizeof(*h));
	for (unsigned us = 1; us <= 100; us++)
		record_n(h, us * 1000, 10);
	lh_snapshot(h, &s);
	assert_int_equal(s.count, 1000);
	assert_near(lh_quantile(&s, 0.5), 50000, 0.05);
	assert_near(lh_quantile(&s, 0.9), 90000, 0.05);
	assert_near(lh_quantile(&s, 0.99), 99000, 0.05);
	assert_true(lh_quantile(&s, 1) == 100000);
	assert_near(lh_quantile(&s, 0.1), 10000, 0.125);
	assert_true(lh_mean(&s) == 50500);
	/* Cumulative counts at octave edges are exact: values <= 2^k us. */
	assert_int_equal(lh_count_le(&s, 1000), 10);
	assert_int_equal(lh_count_le(&s, 2000), 20);
	assert_int_equal(lh_count_le(&s, 32000), 320);
	assert_int_equal(lh_count_le(&s, 64000), 640);
	assert_int_equal(lh_count_le(&s, 128000), 1000);
	assert_int_equal(lh_count_le(&s, 999), 0); /* not an edge: the edge below */

	/* Bimodal: 99% fast, 1% slow. The median and p98 see the fast mode,
	 * p99.5 the slow one. */
	memset(h, 0, sizeof(*h));
	record_n(h, 10000, 990);
	record_n(h, 10000000, 10);
	lh_snapshot(h, &s);
	assert_near(lh_quantile(&s, 0.5), 10000, 0.25);
	assert_near(lh_quantile(&s, 0.98), 10000, 0.25);
	assert_near(lh_quantile(&s, 0.995), 10000000, 0.25);
	assert_true(lh_quantile(&s, 0.999) <= 10000000);

	/* Overflow: beyond the last edge the maximum stands in. */
	memset(h, 0, sizeof(*h));
	lh_record(h, UINT64_C(500) * 1000000000);
	lh_snapshot(h, &s);
	assert_int_equal(s.bucket[LH_BUCKETS - 1], 1);
	assert_true(lh_quantile(&s, 0.5) == 500e9);
	free(h);
}

static void test_snap_sub(void **st)
{
	struct lat_hist *h = calloc(1, sizeof(*h));
	struct lat_snap *a = malloc(3 * sizeof(*a)), *b = a + 1, *d = a + 2;
	assert_non_null(h);
	assert_non_null(a);
	record_n(h, 3000, 50);
	record_n(h, 900000, 1);
	lh_snapshot(h, a);
	record_n(h, 20000, 40);
	lh_snapshot(h, b);
	lh_snap_sub(b, a, d);
	assert_int_equal(d->count, 40);
	assert_int_equal(d->sum_ns, 40 * 20000);
	assert_int_equal(d->max_ns, 0); /* the maximum was set before */
	assert_near(lh_quantile(d, 0.5), 20000, 0.125);
	assert_true(lh_quantile(d, 1) <= 20000);
	record_n(h, 5000000, 1);
	lh_snapshot(h, a);
	lh_snap_sub(a, b, d);
	assert_int_equal(d->count, 1);
	assert_int_equal(d->max_ns, 5000000);
	assert_near(lh_quantile(d, 0.5), 5000000, 0.25);
	assert_true(lh_quantile(d, 1) == 5000000);
	free(a);
	free(h);
}

#define NREC 4

struct rec_arg {
	struct lat_hist *h;
	unsigned id, n;
};

static uint64_t rec_value(unsigned id, unsigned i)
{
	return (uint64_t)(i % 1000) * 997 + id * 100003 + 1;
}

static void *rec_main(void *p)
{
	struct rec_arg *a = p;
	for (unsigned i = 0; i < a->n; i++)
		lh_record(a->h, rec_value(a->id, i));
	return NULL;
}

static void test_concurrent_recording(void **st)
{
	struct lat_hist *h = calloc(1, sizeof(*h));
	struct lat_snap *s = malloc(2 * sizeof(*s)), *want = s + 1;
	struct rec_arg a[NREC];
	pthread_t th[NREC];
	unsigned n = 200000;

	assert_non_null(h);
	assert_non_null(s);
	memset(want, 0, sizeof(*want));
	for (unsigned t = 0; t < NREC; t++) {
		a[t] = (struct rec_arg){.h = h, .id = t, .n = n};
		for (unsigned i = 0; i < n; i++) {
			uint64_t v = rec_value(t, i);
			want->bucket[lh_bucket_of(v)]++;
			want->sum_ns += v;
			want->count++;
			if (v > want->max_ns)
				want->max_ns = v;
		}
	}
	for (unsigned t = 0; t < NREC; t++)
		assert_int_equal(pthread_create(&th[t], NULL, rec_main, &a[t]), 0);
	/* A reader snapshots while they record: counts never run ahead. */
	for (unsigned r = 0; r < 100; r++) {
		lh_snapshot(h, s);
		assert_true(s->count <= want->count);
	}
	for (unsigned t = 0; t < NREC; t++)
		pthread_join(th[t], NULL);
	lh_snapshot(h, s);
	assert_int_equal(s->count, (uint64_t)NREC * n);
	assert_int_equal(s->sum_ns, want->sum_ns);
	assert_int_equal(s->max_ns, want->max_ns);
	assert_memory_equal(s->bucket, want->bucket, sizeof(s->bucket));
	free(s);
	free(h);
}

/* ------------------------------------------------------------------ */
/* The pool's histograms                                              */

static char img[256];

static int setup(void **st)
{
	return vt_tmp_image(img, sizeof(img), "lat");
}

static int teardown(void **st)
{
	unlink(img);
	return 0;
}

struct pages {
	uint64_t first, n;
};

static int op_write(struct bm_op *op, void *arg)
{
	struct pages *p = arg;
	for (uint64_t pid = p->first; pid < p->first + p->n; pid++) {
		struct bm_guard g;
		uint64_t *d = bm_fix_x(op, pid, &g);
		d[0] = pid;
		bm_unfix(op, &g);
	}
	return 0;
}

static int op_read(struct bm_op *op, void *arg)
{
	struct pages *p = arg;
	int bad = 0;
	for (uint64_t pid = p->first; pid < p->first + p->n; pid++) {
		struct bm_guard g;
		const uint64_t *d = bm_fix_s(op, pid, &g);
		bad += d[0] != pid;
		bm_unfix(op, &g);
	}
	return bad;
}

static void test_pool_histograms(void **st)
{
	struct bm *bm = NULL;
	/* VS_TEST_BACKEND picks the backend (madvise unless told). */
	struct bm_config cfg = {.path = img, .pool_bytes = 256 * 4096};
	struct bm_latency *l0 = malloc(2 * sizeof(*l0)), *l1 = l0 + 1;
	struct bm_stats s0, s1;
	struct pages p = {.n = 1024};

	assert_non_null(l0);
	assert_int_equal(bm_format(img, 16 << 20, true), 0);
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	bm_latency_get(bm, l0);
	assert_int_equal(l0->fault.count, 0);
	assert_int_equal(l0->evict.count, 0);

	/* Writing 1024 never-written pages through 256 frames: no page comes
	 * from the image (zero loads do not count as faults), but the pool
	 * evicts in batches, each timed with its page count. */
	assert_int_equal(bm_alloc(bm, p.n, BM_PID_NONE, &p.first), 0);
	bm_stats_get(bm, &s0);
	assert_int_equal(bm_run(bm, op_write, &p), 0);
	bm_stats_get(bm, &s1);
	bm_latency_get(bm, l1);
	assert_int_equal(l1->fault.count, s1.loads - s0.loads);
	assert_true(s1.evict_batches > s0.evict_batches);
	assert_int_equal(l1->evict.count - l0->evict.count, s1.evict_batches - s0.evict_batches);
	assert_int_equal(l1->evict_pages - l0->evict_pages, s1.evictions - s0.evictions);
	assert_true(l1->evict.sum_ns > 0);

	/* Force everything out, read it back: the fault histogram rises by
	 * exactly the pages loaded from the image. */
	assert_true(bm_evict_all(bm, true) > 0);
	bm_stats_get(bm, &s0);
	bm_latency_get(bm, l0);
	assert_int_equal(s0.resident_pages, 0);
	p.n = 200; /* fits the pool: no eviction while reading */
	assert_int_equal(bm_run(bm, op_read, &p), 0);
	bm_stats_get(bm, &s1);
	bm_latency_get(bm, l1);
	assert_int_equal(s1.loads - s0.loads, 200);
	assert_int_equal(l1->fault.count - l0->fault.count, 200);
	assert_true(l1->fault.sum_ns > l0->fault.sum_ns);
	assert_true(l1->fault.max_ns > 0);
	/* bm_evict_all is not an eviction batch. */
	assert_int_equal(l1->evict.count, l0->evict.count);

	/* Hits record nothing. */
	assert_int_equal(bm_run(bm, op_read, &p), 0);
	bm_latency_get(bm, l0);
	assert_int_equal(l0->fault.count, l1->fault.count);
	assert_int_equal(bm_close(bm), 0);
	free(l0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bucket_edges),
	    cmocka_unit_test(test_quantiles_known),
	    cmocka_unit_test(test_snap_sub),
	    cmocka_unit_test(test_concurrent_recording),
	    cmocka_unit_test_setup_teardown(test_pool_histograms, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
