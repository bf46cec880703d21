/*
 * Randomized model test: a long run of mixed operations on one tree, each
 * checked against a simple reference model, in a pool far smaller than the
 * tree so that pages are evicted and read back all the time. Then the image
 * is closed, reopened, compared key by key and checked.
 *
 * The model: keys come from a fixed key space (key_of(id), lengths 1..1024,
 * some with long shared beginnings); the model keeps, per id, whether the
 * key is present and the (length, seed) that generates its value. A sorted
 * array of all ids in key order answers scans.
 *
 * VS_TEST_SCALE=N multiplies the number of operations (default 1,000,000;
 * 250,000 in ASan/TSan builds); a fraction shortens the run, but to no fewer
 * than 200,000, below which the tree may not outgrow the pool (tests/vm runs
 * 0.2 under emulation). VS_TEST_JOURNAL=1 runs it in journal mode, each
 * operation a transaction. VS_TEST_BACKEND picks the memory backend
 * (tests/lib/vt_bm.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "bt_test.h"

#define KEYSPACE 24000u
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define OPS_DEFAULT 250000u /* sanitizers slow every operation several times */
#else
#define OPS_DEFAULT 1000000u
#endif
#define SCAN_MAX   16u
#define HOT_WINDOW 2000u

struct model {
	uint8_t *present;
	uint16_t *vlen;
	uint32_t *seed;
	uint32_t *order; /* ids in key order */
	uint32_t *rank;	 /* position of each id in order */
	uint64_t count;
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	return x;
}

/* The key of @id: injective (every key ends with or contains the id) and
 * varied: short integer keys, path-like keys, keys with long shared runs,
 * and a few near BT_KEY_MAX. */
static unsigned key_of(uint32_t id, uint8_t *buf)
{
	uint64_t h = mix(id + 1);
	unsigned kind = (unsigned)(h % 100), n;
	switch (kind < 55 ? 0 : kind < 85 ? 1 : kind < 98 ? 2 : 3) {
	case 0:
		buf[0] = 'f';
		put_be64(buf + 1, id);
		return 9;
	case 1:
		n = (unsigned)snprintf((char *)buf, 64, "dir/%05u/name-%u", id % 97, id);
		return n;
	case 2:
		n = 1 + (unsigned)(h >> 8) % 300;
		memset(buf, 'x', n);
		put_be64(buf + n, id);
		return n + 8;
	default:
		n = 900 + (unsigned)(h >> 8) % (BT_KEY_MAX - 900 - 8 + 1);
		buf[0] = 'L';
		memset(buf + 1, 'q', n - 1);
		put_be64(buf + n, id);
		return n + 8;
	}
}

static int cmp_ids(const void *a, const void *b)
{
	uint8_t ka[BT_KEY_MAX], kb[BT_KEY_MAX];
	unsigned la = key_of(*(const uint32_t *)a, ka), lb = key_of(*(const uint32_t *)b, kb);
	int c = memcmp(ka, kb, la < lb ? la : lb);
	return c ? c : (la > lb) - (la < lb);
}

static void model_init(struct model *m)
{
	m->present = calloc(KEYSPACE, 1);
	m->vlen = calloc(KEYSPACE, sizeof(*m->vlen));
	m->seed = calloc(KEYSPACE, sizeof(*m->seed));
	m->order = malloc(KEYSPACE * sizeof(*m->order));
	m->rank = malloc(KEYSPACE * sizeof(*m->rank));
	assert_non_null(m->rank);
	for (uint32_t i = 0; i < KEYSPACE; i++)
		m->order[i] = i;
	qsort(m->order, KEYSPACE, sizeof(*m->order), cmp_ids);
	for (uint32_t i = 0; i < KEYSPACE; i++)
		m->rank[m->order[i]] = i;
	m->count = 0;
}

static void model_free(struct model *m)
{
	free(m->present);
	free(m->vlen);
	free(m->seed);
	free(m->order);
	free(m->rank);
}

/* Position in key order of the first key >= @key. */
static uint32_t model_lower_bound(const struct model *m, const uint8_t *key, unsigned klen)
{
	uint32_t lo = 0, hi = KEYSPACE;
	uint8_t k[BT_KEY_MAX];
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		unsigned l = key_of(m->order[mid], k);
		int c = memcmp(k, key, l < klen ? l : klen);
		if (c == 0)
			c = (l > klen) - (l < klen);
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static unsigned value_len(uint64_t r)
{
	unsigned k = (unsigned)(r % 100);
	if (k < 70)
		return (unsigned)(r >> 8) % 65;
	if (k < 95)
		return 64 + (unsigned)(r >> 8) % 337;
	return 400 + (unsigned)(r >> 8) % (BT_VAL_MAX - 400 + 1);
}

struct scan_check {
	const struct model *m;
	uint32_t expect[SCAN_MAX]; /* ids, in scan order */
	unsigned nexpect, n, limit;
	bool bad;
};

static bool scan_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct scan_check *c = ctx;
	uint8_t k[BT_KEY_MAX], v[BT_VAL_MAX];
	if (c->n >= c->nexpect) {
		c->bad = true;
		return false;
	}
	uint32_t id = c->expect[c->n++];
	unsigned l = key_of(id, k);
	fill_bytes(v, c->m->vlen[id], c->m->seed[id]);
	if (l != klen || memcmp(k, key, l) != 0 || vlen != c->m->vlen[id] ||
	    memcmp(v, val, vlen) != 0)
		c->bad = true;
	return c->n < c->limit;
}

struct upd_ctx {
	const uint8_t *old;
	unsigned old_len;
	uint32_t new_seed;
	unsigned calls;
	bool bad;
};

static int upd_fn(void *ctx, void *val, unsigned vlen)
{
	struct upd_ctx *u = ctx;
	u->calls++;
	if (vlen != u->old_len || memcmp(val, u->old, vlen) != 0)
		u->bad = true;
	fill_bytes(val, vlen, u->new_seed);
	return 7;
}

/* A start key for a scan: an existing or absent key, a key just above or
 * below one, or something before all / after all keys. */
static unsigned scan_start(uint64_t r, uint8_t *key)
{
	uint32_t id = (uint32_t)((r >> 8) % KEYSPACE);
	unsigned l;
	switch (r % 8) {
	case 0:
		key[0] = 0;
		return 1;
	case 1:
		memset(key, 0xff, 3);
		return 3;
	case 2:
		l = key_of(id, key);
		return l > 1 ? l - 1 : l; /* a prefix: just below */
	case 3:
		l = key_of(id, key);
		if (l < BT_KEY_MAX)
			key[l++] = 0; /* just above */
		return l;
	default:
		return key_of(id, key);
	}
}

/* One operation of kind @op on key @id, checked against the model. */
static void run_one(struct bt *t, struct model *m, struct scan_check *sc, unsigned op, uint32_t id,
		    uint8_t *key, unsigned klen, uint64_t r, uint8_t *val, uint8_t *got)
{
	unsigned len;
	int rc;

	if (op < 25) { /* insert */
		unsigned vlen = value_len(r);
		uint32_t seed = (uint32_t)(r >> 32);
		fill_bytes(val, vlen, seed);
		rc = bt_insert(t, key, klen, val, vlen);
		assert_int_equal(rc, m->present[id] ? -EEXIST : 0);
		if (!m->present[id]) {
			m->present[id] = 1;
			m->vlen[id] = (uint16_t)vlen;
			m->seed[id] = seed;
			m->count++;
		}
	} else if (op < 40) { /* put */
		unsigned vlen = value_len(r);
		uint32_t seed = (uint32_t)(r >> 32);
		fill_bytes(val, vlen, seed);
		assert_int_equal(bt_put(t, key, klen, val, vlen), 0);
		m->count += !m->present[id];
		m->present[id] = 1;
		m->vlen[id] = (uint16_t)vlen;
		m->seed[id] = seed;
	} else if (op < 45) { /* update in place */
		struct upd_ctx u = {.old = val, .new_seed = (uint32_t)(r >> 32)};
		if (m->present[id]) {
			u.old_len = m->vlen[id];
			fill_bytes(val, u.old_len, m->seed[id]);
		}
		rc = bt_update(t, key, klen, upd_fn, &u);
		if (m->present[id]) {
			assert_int_equal(rc, 7);
			assert_int_equal(u.calls, 1);
			assert_false(u.bad);
			m->seed[id] = u.new_seed;
		} else {
			assert_int_equal(rc, -ENOENT);
			assert_int_equal(u.calls, 0);
		}
	} else if (op < 65) { /* remove */
		rc = bt_remove(t, key, klen);
		assert_int_equal(rc, m->present[id] ? 0 : -ENOENT);
		m->count -= m->present[id];
		m->present[id] = 0;
	} else if (op < 90) { /* lookup */
		rc = bt_lookup(t, key, klen, got, BT_VAL_MAX, &len);
		if (!m->present[id]) {
			assert_int_equal(rc, -ENOENT);
			return;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(len, m->vlen[id]);
		fill_bytes(val, len, m->seed[id]);
		assert_memory_equal(got, val, len);
	} else { /* scan a few entries, either way */
		bool desc = op >= 95;
		klen = scan_start(r, key);
		if (desc && r % 16 == 5)
			klen = 0; /* from the very last key */
		sc->m = m;
		sc->n = sc->nexpect = 0;
		sc->bad = false;
		sc->limit = 1 + (unsigned)(r >> 40) % SCAN_MAX;
		uint32_t pos = klen ? model_lower_bound(m, key, klen) : KEYSPACE;
		if (!desc) {
			for (; pos < KEYSPACE && sc->nexpect < sc->limit; pos++)
				if (m->present[m->order[pos]])
					sc->expect[sc->nexpect++] = m->order[pos];
		} else {
			/* Last key <= start: include an exact match. */
			uint8_t k2[BT_KEY_MAX];
			if (pos < KEYSPACE && klen) {
				unsigned l2 = key_of(m->order[pos], k2);
				if (l2 == klen && memcmp(k2, key, klen) == 0)
					pos++;
			}
			for (; pos > 0 && sc->nexpect < sc->limit; pos--)
				if (m->present[m->order[pos - 1]])
					sc->expect[sc->nexpect++] = m->order[pos - 1];
		}
		rc = desc ? bt_scan_desc(t, key, klen, scan_fn, sc)
			  : bt_scan_asc(t, key, klen, scan_fn, sc);
		assert_int_equal(rc, 0);
		assert_false(sc->bad);
		assert_int_equal(sc->n, sc->nexpect);
	}
}

static void run_ops(struct bt *t, struct model *m, uint64_t ops, uint64_t *rng)
{
	uint8_t key[BT_KEY_MAX], val[BT_VAL_MAX], got[BT_VAL_MAX];
	struct scan_check *sc = malloc(sizeof(*sc));

	for (uint64_t i = 0; i < ops; i++) {
		uint64_t r = rng_next(rng);
		/* Nine ops in ten fall in a window of the key space that
		 * slides along (a working set that moves, as a real one does:
		 * some hits, and eviction all the time); the rest anywhere.
		 * Every miss costs a read and an eviction, which is most of
		 * this test's time. */
		uint32_t id = (uint32_t)((r >> 16) % KEYSPACE);
		if ((r >> 8) % 10 != 0)
			id = (uint32_t)((i / 64 + (r >> 16) % HOT_WINDOW) % KEYSPACE);
		unsigned klen = key_of(id, key), op = (unsigned)(r % 100);
		r = rng_next(rng);
		/* A no-op unless the pool runs with a journal. */
		bm_txn_begin(t->bm);
		run_one(t, m, sc, op, id, key, klen, r, val, got);
		bm_txn_end(t->bm);
	}
	free(sc);
}

struct full_scan {
	const struct model *m;
	uint32_t pos; /* in key order */
	bool bad;
};

static bool full_scan_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct full_scan *f = ctx;
	uint8_t k[BT_KEY_MAX], v[BT_VAL_MAX];
	while (f->pos < KEYSPACE && !f->m->present[f->m->order[f->pos]])
		f->pos++;
	if (f->pos == KEYSPACE) {
		f->bad = true;
		return false;
	}
	uint32_t id = f->m->order[f->pos++];
	unsigned l = key_of(id, k);
	fill_bytes(v, f->m->vlen[id], f->m->seed[id]);
	if (l != klen || memcmp(k, key, l) || vlen != f->m->vlen[id] || memcmp(v, val, vlen))
		f->bad = true;
	return !f->bad;
}

/* Every key of the key space against the model, and a full scan that
 * must see exactly the present keys in order. */
static void compare_all(struct bt *t, struct model *m)
{
	struct full_scan f = {.m = m};
	assert_int_equal(bt_scan_asc(t, NULL, 0, full_scan_fn, &f), 0);
	assert_false(f.bad);
	while (f.pos < KEYSPACE && !m->present[m->order[f.pos]])
		f.pos++;
	assert_int_equal(f.pos, KEYSPACE);

	uint8_t key[BT_KEY_MAX], val[BT_VAL_MAX], got[BT_VAL_MAX];
	unsigned len;
	for (uint32_t id = 0; id < KEYSPACE; id++) {
		unsigned klen = key_of(id, key);
		int rc = bt_lookup(t, key, klen, got, sizeof(got), &len);
		if (!m->present[id]) {
			assert_int_equal(rc, -ENOENT);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(len, m->vlen[id]);
		fill_bytes(val, len, m->seed[id]);
		assert_memory_equal(got, val, len);
	}
	struct bt_info info;
	assert_int_equal(bt_check(t, &info), 0);
	assert_int_equal(info.entries, m->count);
}

#define OPS_MIN 200000u /* below this the tree may not outgrow the pool */

static void test_model(void **state)
{
	struct tenv env;
	struct model m;
	uint64_t rng = 0x5eed;
	uint64_t ops = vt_test_scaled(OPS_DEFAULT, OPS_MIN), root;
	struct timespec t0, t1;

	assert_int_equal(tenv_open_txn(&env, 512u << 20, 1u << 20, true), 0);
	model_init(&m);
	assert_int_equal(bt_create(env.bm, &root), 0);
	bm_sb_set(env.bm, 0, root);
	struct bt t = bt_open(env.bm, root);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	const unsigned rounds = 10;
	for (unsigned i = 0; i < rounds; i++) {
		run_ops(&t, &m, ops / rounds, &rng);
		struct bt_info info;
		assert_int_equal(bt_check(&t, &info), 0);
		assert_int_equal(info.entries, m.count);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);

	struct bt_info info;
	struct bm_stats s;
	assert_int_equal(bt_check(&t, &info), 0);
	bm_stats_get(env.bm, &s);
	print_message("%llu ops in %.1f s: %llu keys, height %u, %llu leaves, %llu inner, "
		      "%llu overflow pages; pool %llu pages, %llu evictions, %llu loads, "
		      "%llu restarts\n",
		      (unsigned long long)ops,
		      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
		      (unsigned long long)m.count, info.height, (unsigned long long)info.leaves,
		      (unsigned long long)info.inners, (unsigned long long)info.overflow_pages,
		      (unsigned long long)s.capacity_pages, (unsigned long long)s.evictions,
		      (unsigned long long)s.loads, (unsigned long long)s.restarts);
	/* The tree must be much larger than the pool for this to mean much. */
	assert_true(info.leaves + info.inners + info.overflow_pages > 2 * s.capacity_pages);
	assert_true(s.evictions > ops / 10);

	/* Pages in use are exactly the tree's (each with its copy on an image
	 * that keeps them): nothing leaked or lost. */
	uint64_t used = s.page_count - bm_first_data_pid(env.bm) - s.free_pages;
	assert_int_equal(used, (info.leaves + info.inners + info.overflow_pages) *
				       (bm_metadata_dup(env.bm) ? 2 : 1));

	assert_int_equal(tenv_reopen(&env), 0);
	assert_true(bm_was_clean(env.bm));
	t = bt_open(env.bm, bm_sb_get(env.bm, 0));
	compare_all(&t, &m);

	model_free(&m);
	tenv_close(&env);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_model)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
