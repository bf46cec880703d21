/*
 * Concurrency: four threads on one tree (and a second tree in the same
 * pool) under constant eviction.
 *
 * What each thread can know, and checks:
 *   - its own key range ("o" + thread + number): only it writes there, so
 *     every lookup and every scan of its own range must match its private
 *     model exactly;
 *   - the shared range ("s" + number): all threads insert, put and remove
 *     there, always with a value derived from the key and a version, so
 *     any reader can check that a value it sees belongs to its key and is
 *     whole (never a mix of two writes);
 *   - every scan, anywhere: keys strictly increasing (or decreasing), each
 *     delivered once, values whole.
 * At the end the tree must pass bt_check and hold exactly the own keys of
 * every model plus what a final scan of the shared range finds.
 *
 * VS_TEST_SCALE=N multiplies the operations per thread; VS_TEST_JOURNAL=1
 * runs in journal mode, each operation a transaction.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "bt_test.h"

#define THREADS	    4
#define OWN_KEYS    4000u
#define SHARED_KEYS 4000u
#if defined(__SANITIZE_THREAD__)
#define OPS_DEFAULT 10000u /* ThreadSanitizer runs everything 5-15 times slower */
#elif defined(__SANITIZE_ADDRESS__)
#define OPS_DEFAULT 20000u
#else
#define OPS_DEFAULT 50000u
#endif

struct shared {
	struct bt t, t2;
	uint64_t ops;
	_Atomic unsigned failures;
};

struct worker {
	struct shared *sh;
	unsigned id;
	uint8_t present[OWN_KEYS];
	uint16_t vlen[OWN_KEYS];
	uint32_t seed[OWN_KEYS];
	uint64_t count;
	char why[200];
};

#define CHECK(w, cond)                                                                             \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			if (!(w)->why[0])                                                          \
				snprintf((w)->why, sizeof((w)->why), "thread %u: %s (line %d)",    \
					 (w)->id, #cond, __LINE__);                                \
			(w)->sh->failures++;                                                       \
		}                                                                                  \
	} while (0)

static unsigned own_key(unsigned tid, unsigned n, uint8_t *key)
{
	key[0] = 'o';
	key[1] = (uint8_t)('0' + tid);
	put_be64(key + 2, n);
	return 10;
}

static unsigned shared_key(unsigned n, uint8_t *key)
{
	key[0] = 's';
	put_be64(key + 1, n);
	return 9;
}

/* Shared values: 8 bytes of key number, 4 of version, then bytes from
 * (number, version); the length from both too. Self-describing, so any
 * reader can tell a whole value of its key from anything else. */
static unsigned shared_value(uint64_t n, uint32_t version, uint8_t *val)
{
	unsigned len = 12 + (unsigned)((n * 31 + version * 7) % 300);
	if (version % 17 == 0)
		len = 1500; /* now and then an overflow value */
	put_be64(val, n);
	memcpy(val + 8, &version, 4);
	fill_bytes(val + 12, len - 12, n * 1000003u + version);
	return len;
}

static bool shared_value_ok(const uint8_t *key, unsigned klen, const uint8_t *val, unsigned vlen)
{
	uint8_t expect[BT_VAL_MAX];
	uint32_t version;
	if (klen != 9 || key[0] != 's' || vlen < 12)
		return false;
	uint64_t n = get_be64(key + 1);
	memcpy(&version, val + 8, 4);
	unsigned len = shared_value(n, version, expect);
	return len == vlen && memcmp(expect, val, vlen) == 0;
}

struct scan_ctx {
	struct worker *w;
	uint8_t last[BT_KEY_MAX];
	unsigned last_len, n, limit;
	bool desc;
	bool own_only; /* a scan of the own range: compare with the model */
	unsigned next; /* own scans: next expected own key number */
	unsigned own;  /* own scans: own keys delivered */
};

/* Next present own key from @n on (asc) or down from @n (desc). */
static unsigned model_next(struct worker *w, unsigned n, bool desc)
{
	if (!desc) {
		while (n < OWN_KEYS && !w->present[n])
			n++;
		return n;
	}
	while (n != UINT32_MAX && !w->present[n])
		n--;
	return n;
}

static bool scan_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct scan_ctx *c = ctx;
	struct worker *w = c->w;
	const uint8_t *k = key;
	if (c->n > 0) {
		int cmp = memcmp(c->last, key, klen < c->last_len ? klen : c->last_len);
		if (cmp == 0)
			cmp = (c->last_len > klen) - (c->last_len < klen);
		CHECK(w, c->desc ? cmp > 0 : cmp < 0);
	}
	memcpy(c->last, key, klen);
	c->last_len = klen;
	c->n++;
	if (k[0] == 's') {
		CHECK(w, shared_value_ok(k, klen, val, vlen));
	} else if (k[0] == 'o' && klen == 10 && k[1] == '0' + w->id) {
		/* Own key: exactly the model's next present key and value. */
		uint64_t n = get_be64(k + 2);
		CHECK(w, n < OWN_KEYS && w->present[n]);
		if (n < OWN_KEYS && w->present[n]) {
			uint8_t expect[BT_VAL_MAX];
			fill_bytes(expect, w->vlen[n], w->seed[n]);
			CHECK(w, vlen == w->vlen[n] && memcmp(val, expect, vlen) == 0);
		}
		if (c->own_only) {
			CHECK(w, n == c->next);
			c->own++;
			c->next =
			    model_next(w, c->desc ? (unsigned)n - 1 : (unsigned)n + 1, c->desc);
		}
	} else if (k[0] == 'o') {
		CHECK(w, klen == 10 && vlen >= 1 && vlen <= BT_VAL_MAX);
	} else {
		CHECK(w, !"a key nobody wrote");
	}
	if (c->own_only && !(k[0] == 'o' && k[1] == '0' + w->id))
		return false; /* left the own range */
	return c->n < c->limit;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	uint64_t rng = 1000 + w->id;
	uint8_t key[BT_KEY_MAX], val[BT_VAL_MAX], got[BT_VAL_MAX];
	struct scan_ctx *sc = malloc(sizeof(*sc));
	unsigned len;

	for (uint64_t i = 0; i < sh->ops && sh->failures == 0; i++) {
		uint64_t r = rng_next(&rng), r2 = rng_next(&rng);
		unsigned op = (unsigned)(r % 100);
		unsigned n = (unsigned)((r >> 8) % OWN_KEYS), klen;
		int rc;
		bm_txn_begin(sh->t.bm); /* a no-op without a journal */
		if (op < 20) { /* own insert / put */
			klen = own_key(w->id, n, key);
			unsigned vlen = (unsigned)(r2 % 50 == 0 ? 1100 + r2 % 2000 : r2 % 500);
			uint32_t seed = (uint32_t)(r2 >> 32);
			fill_bytes(val, vlen, seed);
			rc = (op & 1) ? bt_put(&sh->t, key, klen, val, vlen)
				      : bt_insert(&sh->t, key, klen, val, vlen);
			if (op & 1 || !w->present[n]) {
				CHECK(w, rc == 0);
				w->count += !w->present[n];
				w->present[n] = 1;
				w->vlen[n] = (uint16_t)vlen;
				w->seed[n] = seed;
			} else {
				CHECK(w, rc == -EEXIST);
			}
		} else if (op < 32) { /* own remove */
			klen = own_key(w->id, n, key);
			rc = bt_remove(&sh->t, key, klen);
			CHECK(w, rc == (w->present[n] ? 0 : -ENOENT));
			w->count -= w->present[n];
			w->present[n] = 0;
		} else if (op < 55) { /* own lookup */
			klen = own_key(w->id, n, key);
			rc = bt_lookup(&sh->t, key, klen, got, sizeof(got), &len);
			if (w->present[n]) {
				fill_bytes(val, w->vlen[n], w->seed[n]);
				CHECK(w, rc == 0 && len == w->vlen[n] && !memcmp(got, val, len));
			} else {
				CHECK(w, rc == -ENOENT);
			}
		} else if (op < 75) { /* shared write */
			unsigned sn = (unsigned)((r >> 8) % SHARED_KEYS);
			klen = shared_key(sn, key);
			unsigned vlen = shared_value(sn, (uint32_t)r2, val);
			if (op < 62)
				rc = bt_put(&sh->t, key, klen, val, vlen);
			else if (op < 66)
				rc = bt_insert(&sh->t, key, klen, val, vlen);
			else
				rc = bt_remove(&sh->t, key, klen);
			CHECK(w, rc == 0 || rc == -EEXIST || rc == -ENOENT);
		} else if (op < 85) { /* shared lookup */
			unsigned sn = (unsigned)((r >> 8) % SHARED_KEYS);
			klen = shared_key(sn, key);
			rc = bt_lookup(&sh->t, key, klen, got, sizeof(got), &len);
			CHECK(w,
			      rc == -ENOENT || (rc == 0 && shared_value_ok(key, klen, got, len)));
		} else if (op < 93) { /* scan of the own range, from the model */
			bool desc = op & 1;
			klen = own_key(w->id, n, key);
			memset(sc, 0, sizeof(*sc));
			sc->w = w;
			sc->desc = desc;
			sc->own_only = true;
			sc->limit = 1 + (unsigned)(r2 % 40);
			sc->next = model_next(w, n, desc);
			/* The callback follows the model key by key; the
			 * count must come out as the model says. */
			unsigned expect_n = 0, m = sc->next;
			while (m < OWN_KEYS && expect_n < sc->limit) {
				expect_n++;
				m = model_next(w, desc ? m - 1 : m + 1, desc);
			}
			rc = desc ? bt_scan_desc(&sh->t, key, klen, scan_fn, sc)
				  : bt_scan_asc(&sh->t, key, klen, scan_fn, sc);
			CHECK(w, rc == 0);
			CHECK(w, sc->own == expect_n);
		} else if (op < 98) { /* scan anywhere, either way */
			bool desc = op & 1;
			memset(sc, 0, sizeof(*sc));
			sc->w = w;
			sc->desc = desc;
			sc->limit = 1 + (unsigned)(r2 % 100);
			klen =
			    (r2 >> 8) % 3 == 0 ? shared_key(n, key) : own_key(r2 % THREADS, n, key);
			rc = desc ? bt_scan_desc(&sh->t, key, klen, scan_fn, sc)
				  : bt_scan_asc(&sh->t, key, klen, scan_fn, sc);
			CHECK(w, rc == 0);
		} else { /* the second tree: own keys only, checked at once */
			klen = own_key(w->id, n, key);
			put_be64(val, n);
			rc = bt_put(&sh->t2, key, klen, val, 8);
			CHECK(w, rc == 0);
			rc = bt_lookup(&sh->t2, key, klen, got, sizeof(got), &len);
			CHECK(w, rc == 0 && len == 8 && get_be64(got) == n);
		}
		bm_txn_end(sh->t.bm);
	}
	free(sc);
	return NULL;
}

struct count_ctx {
	uint64_t n;
};

static bool count_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	((struct count_ctx *)ctx)->n++;
	return true;
}

static void test_concurrent(void **state)
{
	struct tenv env;
	struct shared sh = {.ops = (uint64_t)OPS_DEFAULT * test_scale()};
	struct worker *w[THREADS];
	pthread_t th[THREADS];
	uint64_t root, root2;

	/* 1 MiB pool: 256 frames for a tree of over a thousand pages. */
	assert_int_equal(tenv_open_txn(&env, 256u << 20, 1u << 20, true), 0);
	assert_int_equal(bt_create(env.bm, &root), 0);
	assert_int_equal(bt_create(env.bm, &root2), 0);
	sh.t = bt_open(env.bm, root);
	sh.t2 = bt_open(env.bm, root2);
	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = calloc(1, sizeof(*w[i]));
		w[i]->sh = &sh;
		w[i]->id = i;
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, w[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < THREADS; i++)
		if (w[i]->why[0])
			print_error("%s\n", w[i]->why);
	assert_int_equal(sh.failures, 0);

	/* Quiet now: the structure and the exact contents. */
	struct bt_info info;
	assert_int_equal(bt_check(&sh.t, &info), 0);
	uint64_t own = 0;
	uint8_t key[16], val[BT_VAL_MAX], got[BT_VAL_MAX];
	unsigned len;
	for (unsigned i = 0; i < THREADS; i++) {
		own += w[i]->count;
		for (unsigned n = 0; n < OWN_KEYS; n++) {
			unsigned klen = own_key(i, n, key);
			int rc = bt_lookup(&sh.t, key, klen, got, sizeof(got), &len);
			if (!w[i]->present[n]) {
				assert_int_equal(rc, -ENOENT);
				continue;
			}
			assert_int_equal(rc, 0);
			fill_bytes(val, w[i]->vlen[n], w[i]->seed[n]);
			assert_int_equal(len, w[i]->vlen[n]);
			assert_memory_equal(got, val, len);
		}
	}
	struct count_ctx shared = {0};
	assert_int_equal(bt_scan_asc(&sh.t, "s", 1, count_fn, &shared), 0);
	assert_int_equal(info.entries, own + shared.n);
	struct bt_info info2;
	assert_int_equal(bt_check(&sh.t2, &info2), 0);

	struct bm_stats s;
	bm_stats_get(env.bm, &s);
	print_message(
	    "%u threads x %llu ops: %llu entries, height %u, %llu leaves; %llu evictions, "
	    "%llu restarts\n",
	    THREADS, (unsigned long long)sh.ops, (unsigned long long)(own + shared.n), info.height,
	    (unsigned long long)info.leaves, (unsigned long long)s.evictions,
	    (unsigned long long)s.restarts);
	assert_true(s.evictions > 0);
	for (unsigned i = 0; i < THREADS; i++)
		free(w[i]);
	tenv_close(&env);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_concurrent)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
