/* Tree-level tests of engine/btree.h over a real pool (small, so pages are
 * evicted and read back throughout). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "bt_test.h"
#include "engine/btree_node.h"
#include "engine/log.h"

#define IMAGE_BYTES (256u << 20)
#define POOL_BYTES  (256u << 10) /* 64 frames: the minimum */

struct fixture {
	struct tenv env;
	uint64_t free0; /* free pages before the test created anything */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f || tenv_open(&f->env, IMAGE_BYTES, POOL_BYTES) < 0)
		return -1;
	f->free0 = tenv_free_pages(&f->env);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	tenv_close(&f->env);
	free(f);
	return 0;
}

static struct bt new_tree(struct fixture *f)
{
	uint64_t root;
	assert_int_equal(bt_create(f->env.bm, &root), 0);
	return bt_open(f->env.bm, root);
}

static void check_tree(struct bt *t, struct bt_info *info)
{
	struct bt_info tmp;
	assert_int_equal(bt_check(t, info ? info : &tmp), 0);
}

static void expect_val(struct bt *t, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	uint8_t buf[BT_VAL_MAX];
	unsigned len = 12345;
	assert_int_equal(bt_lookup(t, key, klen, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, vlen);
	assert_memory_equal(buf, val, vlen);
}

static void test_basic(void **state)
{
	struct fixture *f = *state;
	struct bt t = new_tree(f);
	uint8_t buf[64];
	unsigned len = 0;

	assert_int_equal(bt_lookup(&t, "hello", 5, buf, sizeof(buf), &len), -ENOENT);
	assert_int_equal(bt_insert(&t, "hello", 5, "world", 5), 0);
	expect_val(&t, "hello", 5, "world", 5);
	assert_int_equal(bt_insert(&t, "hello", 5, "again", 5), -EEXIST);
	expect_val(&t, "hello", 5, "world", 5);
	/* Prefix keys are distinct keys. */
	assert_int_equal(bt_insert(&t, "hell", 4, "", 0), 0);
	assert_int_equal(bt_insert(&t, "hello!", 6, "x", 1), 0);
	expect_val(&t, "hell", 4, "", 0);
	/* put replaces, with a value of another length each time. */
	assert_int_equal(bt_put(&t, "hello", 5, "there!", 6), 0);
	expect_val(&t, "hello", 5, "there!", 6);
	assert_int_equal(bt_put(&t, "hello", 5, "abcdef", 6), 0);
	expect_val(&t, "hello", 5, "abcdef", 6);
	assert_int_equal(bt_put(&t, "new", 3, "n", 1), 0);
	expect_val(&t, "new", 3, "n", 1);
	/* Too small a buffer: -ENOBUFS and the needed length. */
	assert_int_equal(bt_lookup(&t, "hello", 5, buf, 3, &len), -ENOBUFS);
	assert_int_equal(len, 6);
	assert_int_equal(bt_lookup(&t, "hello", 5, NULL, 0, &len), -ENOBUFS);
	assert_int_equal(len, 6);
	assert_int_equal(bt_lookup(&t, "hell", 4, NULL, 0, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(bt_lookup(&t, "hello", 5, buf, sizeof(buf), NULL), 0);
	/* Remove. */
	assert_int_equal(bt_remove(&t, "hello", 5), 0);
	assert_int_equal(bt_remove(&t, "hello", 5), -ENOENT);
	assert_int_equal(bt_lookup(&t, "hello", 5, buf, sizeof(buf), &len), -ENOENT);
	expect_val(&t, "hello!", 6, "x", 1);
	struct bt_info info;
	check_tree(&t, &info);
	assert_int_equal(info.entries, 3);
	assert_int_equal(info.height, 1);
	assert_int_equal(bt_destroy(f->env.bm, t.root), 0);
	assert_int_equal(tenv_free_pages(&f->env), f->free0);
}

static int noop_update(void *ctx, void *val, unsigned vlen)
{
	return 0;
}

static bool noop_scan(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	return true;
}

static void test_invalid_lengths(void **state)
{
	struct fixture *f = *state;
	struct bt t = new_tree(f);
	static uint8_t big[BT_KEY_MAX + BT_VAL_MAX + 2];
	uint8_t buf[8];

	assert_int_equal(bt_insert(&t, big, 0, "v", 1), -EINVAL);
	assert_int_equal(bt_insert(&t, big, BT_KEY_MAX + 1, "v", 1), -EINVAL);
	assert_int_equal(bt_insert(&t, "k", 1, big, BT_VAL_MAX + 1), -EINVAL);
	assert_int_equal(bt_insert(&t, NULL, 1, "v", 1), -EINVAL);
	assert_int_equal(bt_put(&t, big, 0, "v", 1), -EINVAL);
	assert_int_equal(bt_put(&t, big, BT_KEY_MAX + 1, "v", 1), -EINVAL);
	assert_int_equal(bt_put(&t, "k", 1, big, BT_VAL_MAX + 1), -EINVAL);
	assert_int_equal(bt_put(&t, "k", 1, NULL, 3), -EINVAL);
	assert_int_equal(bt_lookup(&t, big, 0, buf, sizeof(buf), NULL), -EINVAL);
	assert_int_equal(bt_lookup(&t, big, BT_KEY_MAX + 1, buf, sizeof(buf), NULL), -EINVAL);
	assert_int_equal(bt_remove(&t, big, 0), -EINVAL);
	assert_int_equal(bt_remove(&t, big, BT_KEY_MAX + 1), -EINVAL);
	assert_int_equal(bt_update(&t, big, 0, noop_update, NULL), -EINVAL);
	assert_int_equal(bt_update(&t, big, BT_KEY_MAX + 1, noop_update, NULL), -EINVAL);
	assert_int_equal(bt_scan_asc(&t, big, BT_KEY_MAX + 1, noop_scan, NULL), -EINVAL);
	assert_int_equal(bt_scan_desc(&t, big, BT_KEY_MAX + 1, noop_scan, NULL), -EINVAL);
	/* The limits themselves are fine, inline and overflow alike. */
	memset(big, 'k', sizeof(big));
	assert_int_equal(bt_insert(&t, big, BT_KEY_MAX, big, BT_VAL_MAX), 0);
	assert_int_equal(bt_insert(&t, "k", 1, big, BT_VAL_MAX), 0);
	assert_int_equal(bt_insert(&t, big, BT_KEY_MAX - 1, "", 0), 0);
	expect_val(&t, big, BT_KEY_MAX, big, BT_VAL_MAX);
	check_tree(&t, NULL);
	assert_int_equal(bt_destroy(f->env.bm, t.root), 0);
	assert_int_equal(tenv_free_pages(&f->env), f->free0);
}

/* Many keys: the tree grows several levels; removing them all merges it
 * back to one empty leaf and gives every page back. */
static void grow_and_shrink(struct fixture *f, unsigned n, unsigned klen, unsigned vlen,
			    unsigned min_height)
{
	struct bt t = new_tree(f);
	uint64_t *ids = malloc(n * sizeof(*ids)), seed = 7;
	uint8_t *key = calloc(1, BT_KEY_MAX), *val = malloc(BT_VAL_MAX);
	struct bt_info info;

	/* Keys share a long common beginning (exercising prefix truncation)
	 * and differ in the 8 bytes at their end. */
	memset(key, 'p', klen);
	for (unsigned i = 0; i < n; i++)
		ids[i] = i;
	for (unsigned i = n - 1; i > 0; i--) {
		unsigned j = (unsigned)(rng_next(&seed) % (i + 1));
		uint64_t x = ids[i];
		ids[i] = ids[j];
		ids[j] = x;
	}
	for (unsigned i = 0; i < n; i++) {
		put_be64(key + klen - 8, ids[i]);
		fill_bytes(val, vlen, ids[i]);
		assert_int_equal(bt_insert(&t, key, klen, val, vlen), 0);
		if (i % (n / 4) == 0)
			check_tree(&t, NULL);
	}
	check_tree(&t, &info);
	print_message("%u keys of %u bytes, values of %u: height %u, %llu leaves, %llu inner\n", n,
		      klen, vlen, info.height, (unsigned long long)info.leaves,
		      (unsigned long long)info.inners);
	assert_int_equal(info.entries, n);
	assert_true(info.height >= min_height);
	assert_true(info.inners > 0);
	for (unsigned i = 0; i < n; i++) {
		put_be64(key + klen - 8, i);
		fill_bytes(val, vlen, i);
		expect_val(&t, key, klen, val, vlen);
	}
	/* Remove in another order. */
	for (unsigned i = 0; i < n; i++) {
		put_be64(key + klen - 8, ids[(i * 7919u) % n]);
		assert_int_equal(bt_remove(&t, key, klen), 0);
		if (i % (n / 4) == 0)
			check_tree(&t, NULL);
	}
	check_tree(&t, &info);
	assert_int_equal(info.entries, 0);
	assert_int_equal(info.height, 1);
	assert_int_equal(info.leaves, 1);
	assert_int_equal(info.inners, 0);
	/* just the root (and its copy, engine/bm_dup.c) */
	assert_int_equal(tenv_free_pages(&f->env),
			 f->free0 - (bm_metadata_dup(f->env.bm) ? 2 : 1));
	assert_int_equal(bt_destroy(f->env.bm, t.root), 0);
	assert_int_equal(tenv_free_pages(&f->env), f->free0);
	free(ids);
	free(key);
	free(val);
}

static void test_grow_and_shrink(void **state)
{
	/* ~12 values per leaf: 3 levels. */
	grow_and_shrink(*state, 20000, 16, 300, 3);
}

static void test_grow_and_shrink_big_keys(void **state)
{
	/* Maximal keys: 3 per leaf, few per inner node: a tall tree. */
	grow_and_shrink(*state, 1500, BT_KEY_MAX, 0, 4);
}

/* Keys of every length with long shared parts, values of every size
 * (inline and in overflow pages), replaced across the two kinds. */
static void test_big_keys_and_overflow(void **state)
{
	struct fixture *f = *state;
	struct bt t = new_tree(f);
	enum { N = 3000 };
	static uint16_t klen[N], vlen[N];
	uint8_t *key = malloc(BT_KEY_MAX), *val = malloc(BT_VAL_MAX);
	uint64_t seed = 99;
	struct bt_info info;

#define MKKEY(i)                                                                                   \
	do {                                                                                       \
		memset(key, 'a' + (i) % 3, klen[i]);                                               \
		for (unsigned b_ = 0; b_ < 4 && b_ < klen[i]; b_++)                                \
			key[klen[i] - 1 - b_] = (uint8_t)((i) >> (8 * b_));                        \
	} while (0)
	for (unsigned i = 0; i < N; i++) {
		/* At least 2 bytes so the index fits uniquely with the fill. */
		klen[i] = (uint16_t)(2 + rng_next(&seed) % (BT_KEY_MAX - 1));
		vlen[i] = (uint16_t)(rng_next(&seed) % 4 == 0 ? rng_next(&seed) % (BT_VAL_MAX + 1)
							      : rng_next(&seed) % 200);
	}
	for (unsigned i = 0; i < N; i++) {
		MKKEY(i);
		fill_bytes(val, vlen[i], i);
		int r = bt_insert(&t, key, klen[i], val, vlen[i]);
		/* Two indices may map to one key (same length, same fill,
		 * same low bytes): the second must see -EEXIST. */
		assert_true(r == 0 || r == -EEXIST);
		if (r == -EEXIST)
			klen[i] = 0;
	}
	check_tree(&t, &info);
	uint64_t expect_ovf = 0, expect_n = 0;
	for (unsigned i = 0; i < N; i++) {
		if (!klen[i])
			continue;
		expect_n++;
		expect_ovf += klen[i] + vlen[i] > BT_INLINE_MAX;
		MKKEY(i);
		fill_bytes(val, vlen[i], i);
		expect_val(&t, key, klen[i], val, vlen[i]);
	}
	assert_int_equal(info.entries, expect_n);
	assert_int_equal(info.overflow_pages, expect_ovf);
	/* Replace every other value with one of the other kind. */
	for (unsigned i = 0; i < N; i += 2) {
		if (!klen[i])
			continue;
		bool was_ovf = klen[i] + vlen[i] > BT_INLINE_MAX;
		vlen[i] = (uint16_t)(was_ovf ? 1 : BT_VAL_MAX - i % 100);
		MKKEY(i);
		fill_bytes(val, vlen[i], i + N);
		assert_int_equal(bt_put(&t, key, klen[i], val, vlen[i]), 0);
	}
	for (unsigned i = 0; i < N; i++) {
		if (!klen[i])
			continue;
		MKKEY(i);
		fill_bytes(val, vlen[i], i % 2 == 0 ? i + N : i);
		expect_val(&t, key, klen[i], val, vlen[i]);
	}
	check_tree(&t, &info);
	/* Remove a third. */
	for (unsigned i = 0; i < N; i += 3) {
		if (!klen[i])
			continue;
		MKKEY(i);
		assert_int_equal(bt_remove(&t, key, klen[i]), 0);
		assert_int_equal(bt_lookup(&t, key, klen[i], val, BT_VAL_MAX, NULL), -ENOENT);
		klen[i] = 0;
	}
	check_tree(&t, &info);
	expect_ovf = 0;
	expect_n = 0;
	for (unsigned i = 0; i < N; i++) {
		if (klen[i]) {
			expect_n++;
			expect_ovf += klen[i] + vlen[i] > BT_INLINE_MAX;
		}
	}
	assert_int_equal(info.entries, expect_n);
	assert_int_equal(info.overflow_pages, expect_ovf);
	/* Every page used is the tree's: destroy gives them all back. */
	struct bm_stats s;
	bm_stats_get(f->env.bm, &s);
	assert_int_equal(f->free0 - s.free_pages, (info.leaves + info.inners + info.overflow_pages) *
							  (bm_metadata_dup(f->env.bm) ? 2 : 1));
	assert_int_equal(bt_destroy(f->env.bm, t.root), 0);
	assert_int_equal(tenv_free_pages(&f->env), f->free0);
#undef MKKEY
	free(key);
	free(val);
}

/* ------------------------------------------------------------------ */
/* Scans                                                              */

struct collect {
	unsigned n, limit;
	uint32_t got[4096];
	bool bad_value;
};

static unsigned umin_(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

static bool collect_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct collect *c = ctx;
	uint8_t expect[BT_VAL_MAX];
	char num[8] = {0};
	memcpy(num, (const char *)key + 1, klen == 7 ? 6 : 0);
	uint32_t k = (uint32_t)strtoul(num, NULL, 10);
	/* Keys are "k%06u" (7 bytes); values derive from the number. */
	unsigned want = k % 10 == 0 ? 2000 : k % 50;
	fill_bytes(expect, want, k);
	if (klen != 7 || vlen != want || memcmp(val, expect, vlen) != 0)
		c->bad_value = true;
	c->got[c->n++] = k;
	return c->n < c->limit;
}

static void scan_expect(struct bt *t, bool desc, const char *from, unsigned limit, int first,
			int step, unsigned count)
{
	struct collect *c = calloc(1, sizeof(*c));
	c->limit = limit;
	int r = desc ? bt_scan_desc(t, from, from ? (unsigned)strlen(from) : 0, collect_fn, c)
		     : bt_scan_asc(t, from, from ? (unsigned)strlen(from) : 0, collect_fn, c);
	assert_int_equal(r, 0);
	assert_false(c->bad_value);
	assert_int_equal(c->n, count);
	for (unsigned i = 0; i < count; i++)
		assert_int_equal(c->got[i], first + step * (int)i);
	free(c);
}

static void test_scans(void **state)
{
	struct fixture *f = *state;
	struct bt t = new_tree(f);
	char key[16];
	uint8_t val[BT_VAL_MAX];

	/* Even numbers 0..1998; every tenth value is in an overflow page. */
	for (unsigned k = 0; k < 2000; k += 2) {
		unsigned vlen = k % 10 == 0 ? 2000 : k % 50;
		snprintf(key, sizeof(key), "k%06u", k);
		fill_bytes(val, vlen, k);
		assert_int_equal(bt_insert(&t, key, 7, val, vlen), 0);
	}
	struct bt_info info;
	check_tree(&t, &info);
	assert_true(info.leaves > 4);

	/* Whole tree both ways. */
	scan_expect(&t, false, NULL, 100000, 0, 2, 1000);
	scan_expect(&t, true, NULL, 100000, 1998, -2, 1000);
	/* From keys present, absent, before the first, after the last. */
	scan_expect(&t, false, "k000500", 100000, 500, 2, 750);
	scan_expect(&t, false, "k000501", 100000, 502, 2, 749);
	scan_expect(&t, true, "k000500", 100000, 500, -2, 251);
	scan_expect(&t, true, "k000501", 100000, 500, -2, 251);
	scan_expect(&t, false, "a", 100000, 0, 2, 1000);
	scan_expect(&t, false, "k", 100000, 0, 2, 1000);
	scan_expect(&t, true, "a", 100000, 0, 0, 0);
	scan_expect(&t, true, "k", 100000, 0, 0, 0);
	scan_expect(&t, false, "z", 100000, 0, 0, 0);
	scan_expect(&t, false, "k001999", 100000, 0, 0, 0);
	scan_expect(&t, true, "z", 100000, 1998, -2, 1000);
	scan_expect(&t, true, "k001998", 100000, 1998, -2, 1000);
	scan_expect(&t, true, "k000000", 100000, 0, 0, 1);
	/* Stopping early: exactly as many as the callback wanted. */
	scan_expect(&t, false, "k000100", 5, 100, 2, 5);
	scan_expect(&t, true, "k000101", 7, 100, -2, 7);
	scan_expect(&t, true, NULL, 1, 1998, 0, 1);
	/* Every start key across leaf boundaries. */
	for (unsigned k = 0; k < 2000; k += 37) {
		snprintf(key, sizeof(key), "k%06u", k);
		unsigned up = (k + 1) / 2 * 2, down = k / 2 * 2;
		scan_expect(&t, false, key, 30, (int)up, 2, umin_(30, (2000 - up) / 2));
		scan_expect(&t, true, key, 30, (int)down, -2, umin_(30, down / 2 + 1));
	}
	/* An empty tree scans to nothing. */
	struct bt e = new_tree(f);
	scan_expect(&e, false, NULL, 10, 0, 0, 0);
	scan_expect(&e, true, NULL, 10, 0, 0, 0);
	scan_expect(&e, true, "k", 10, 0, 0, 0);
	assert_int_equal(bt_destroy(f->env.bm, e.root), 0);
	assert_int_equal(bt_destroy(f->env.bm, t.root), 0);
}

/* ------------------------------------------------------------------ */
/* Update in place                                                    */

struct upd {
	unsigned calls;
	unsigned seen_len;
	int ret;
};

static int upd_fn(void *ctx, void *val, unsigned vlen)
{
	struct upd *u = ctx;
	u->calls++;
	u->seen_len = vlen;
	uint8_t *p = val;
	for (unsigned i = 0; i < vlen; i++)
		p[i] ^= 0xff;
	return u->ret;
}

static void test_update(void **state)
{
	struct fixture *f = *state;
	struct bt t = new_tree(f);
	uint8_t val[BT_VAL_MAX], flipped[BT_VAL_MAX];
	struct upd u = {0};

	fill_bytes(val, sizeof(val), 5);
	for (unsigned i = 0; i < sizeof(val); i++)
		flipped[i] = val[i] ^ 0xff;
	assert_int_equal(bt_insert(&t, "small", 5, val, 100), 0);
	assert_int_equal(bt_insert(&t, "large", 5, val, 3000), 0);
	assert_int_equal(bt_update(&t, "small", 5, upd_fn, &u), 0);
	assert_int_equal(u.calls, 1);
	assert_int_equal(u.seen_len, 100);
	expect_val(&t, "small", 5, flipped, 100);
	u.ret = 42; /* fn's result comes back */
	assert_int_equal(bt_update(&t, "large", 5, upd_fn, &u), 42);
	assert_int_equal(u.calls, 2);
	assert_int_equal(u.seen_len, 3000);
	expect_val(&t, "large", 5, flipped, 3000);
	assert_int_equal(bt_update(&t, "absent", 6, upd_fn, &u), -ENOENT);
	assert_int_equal(u.calls, 2);
	/* Changes survive eviction and a reopen. */
	assert_true(bm_evict_all(f->env.bm, true) >= 0);
	expect_val(&t, "large", 5, flipped, 3000);
	assert_int_equal(tenv_reopen(&f->env), 0);
	t.bm = f->env.bm;
	expect_val(&t, "small", 5, flipped, 100);
	expect_val(&t, "large", 5, flipped, 3000);
	check_tree(&t, NULL);
	assert_int_equal(bt_destroy(f->env.bm, t.root), 0);
}

/* ------------------------------------------------------------------ */
/* Several trees in one pool                                          */

static void test_several_trees(void **state)
{
	struct fixture *f = *state;
	enum { TREES = 4, N = 3000 };
	struct bt t[TREES];
	uint8_t key[8], val[300];

	for (unsigned i = 0; i < TREES; i++)
		t[i] = new_tree(f);
	/* The same keys in every tree, values that say which tree. */
	for (unsigned k = 0; k < N; k++) {
		put_be64(key, k * 2654435761u % 1000003u);
		for (unsigned i = 0; i < TREES; i++) {
			unsigned vlen = 10 + (k + i) % 250;
			fill_bytes(val, vlen, k * TREES + i);
			assert_int_equal(bt_insert(&t[i], key, 8, val, vlen), 0);
		}
	}
	for (unsigned i = 0; i < TREES; i++) {
		struct bt_info info;
		check_tree(&t[i], &info);
		assert_int_equal(info.entries, N);
		bm_sb_set(f->env.bm, i, t[i].root);
	}
	/* Destroy one, remove half of another; the rest stay as they were,
	 * also after a reopen. */
	assert_int_equal(bt_destroy(f->env.bm, t[1].root), 0);
	for (unsigned k = 0; k < N; k += 2) {
		put_be64(key, k * 2654435761u % 1000003u);
		assert_int_equal(bt_remove(&t[2], key, 8), 0);
	}
	assert_int_equal(tenv_reopen(&f->env), 0);
	for (unsigned i = 0; i < TREES; i++)
		t[i] = bt_open(f->env.bm, bm_sb_get(f->env.bm, i));
	for (unsigned k = 0; k < N; k++) {
		put_be64(key, k * 2654435761u % 1000003u);
		for (unsigned i = 0; i < TREES; i++) {
			if (i == 1)
				continue;
			unsigned vlen = 10 + (k + i) % 250;
			fill_bytes(val, vlen, k * TREES + i);
			if (i == 2 && k % 2 == 0)
				assert_int_equal(bt_lookup(&t[i], key, 8, NULL, 0, NULL), -ENOENT);
			else
				expect_val(&t[i], key, 8, val, vlen);
		}
	}
	for (unsigned i = 0; i < TREES; i++) {
		if (i != 1) {
			check_tree(&t[i], NULL);
			assert_int_equal(bt_destroy(f->env.bm, t[i].root), 0);
		}
	}
	assert_int_equal(tenv_free_pages(&f->env), f->free0);
}

/* bt_check reports damage with -EUCLEAN (and a log line). */
static unsigned corrupt_lines;

static const void *page_sized(void)
{
	static uint8_t big[BT_VAL_MAX];
	return big;
}

static void count_sink(enum vs_log_level level, const char *msg)
{
	if (strstr(msg, "corruption"))
		corrupt_lines++;
}

static int op_damage(struct bm_op *op, void *arg)
{
	struct bm_guard g;
	uint8_t *page = bm_fix_x(op, *(uint64_t *)arg, &g);
	/* Swap two slots of the root leaf: keys out of order. */
	uint8_t tmp[10];
	memcpy(tmp, page + 96, 10);
	memcpy(page + 96, page + 106, 10);
	memcpy(page + 106, tmp, 10);
	bm_unfix(op, &g);
	return 0;
}

static void test_check_detects(void **state)
{
	struct fixture *f = *state;
	struct bt t = new_tree(f);
	assert_int_equal(bt_insert(&t, "a", 1, "1", 1), 0);
	assert_int_equal(bt_insert(&t, "b", 1, "2", 1), 0);
	check_tree(&t, NULL);
	assert_int_equal(bm_run(f->env.bm, op_damage, &t.root), 0);
	vs_log_set_sink(count_sink);
	assert_int_equal(bt_check(&t, NULL), -EUCLEAN);
	vs_log_set_sink(NULL);
	assert_int_equal(corrupt_lines, 1);
}

/* A page that fails its checksum: the operations that need it return
 * -EUCLEAN (the buffer manager logs pid and offset), the others go on, and
 * bt_check says so too. */
static void test_checksum_error(void **state)
{
	struct fixture *f = *state;
	struct bt t = new_tree(f);
	uint8_t key[8], val[200], page[BT_PAGE];
	enum { N = 2000 };

	for (unsigned k = 0; k < N; k++) {
		put_be64(key, k);
		fill_bytes(val, sizeof(val), k);
		assert_int_equal(bt_insert(&t, key, 8, val, sizeof(val)), 0);
	}
	struct bt_info info;
	check_tree(&t, &info);
	assert_true(info.height >= 2);
	uint64_t root = t.root;
	assert_int_equal(bm_close(f->env.bm), 0);
	f->env.bm = NULL;

	/* Find the root's first child in the image and damage one byte. */
	FILE *img = fopen(f->env.path, "r+b");
	assert_non_null(img);
	assert_int_equal(fseeko(img, (off_t)(root * BT_PAGE), SEEK_SET), 0);
	assert_int_equal(fread(page, 1, BT_PAGE, img), BT_PAGE);
	uint64_t victim = bt_node_child(page, 0);
	uint8_t first_key[BT_KEY_MAX];
	unsigned sep_len = bt_node_key(page, 0, first_key); /* the victim's upper fence */
	assert_int_equal(fseeko(img, (off_t)(victim * BT_PAGE + 2000), SEEK_SET), 0);
	uint8_t b = 0x5a;
	assert_int_equal(fwrite(&b, 1, 1, img), 1);
	/* and its copy (the image keeps copies of nodes: engine/bm_dup.c and
	 * tests/bm/test_dup.c for a node whose copy is sound) */
	assert_int_equal(fseeko(img, (off_t)((victim + 1) * BT_PAGE + 2000), SEEK_SET), 0);
	assert_int_equal(fwrite(&b, 1, 1, img), 1);
	fclose(img);

	vs_log_set_sink(count_sink);
	assert_int_equal(bm_open(&f->env.cfg, &f->env.bm), 0);
	t.bm = f->env.bm;
	/* Key 0 lives in the damaged subtree; the last key does not. */
	put_be64(key, 0);
	assert_true(bt_key_cmp(key, 8, first_key, sep_len) < 0);
	assert_int_equal(bt_lookup(&t, key, 8, val, sizeof(val), NULL), -EUCLEAN);
	assert_int_equal(bt_put(&t, key, 8, val, 10), -EUCLEAN);
	assert_int_equal(bt_remove(&t, key, 8), -EUCLEAN);
	assert_int_equal(bt_scan_asc(&t, NULL, 0, noop_scan, NULL), -EUCLEAN);
	put_be64(key, N - 1);
	fill_bytes(page, sizeof(val), N - 1);
	expect_val(&t, key, 8, page, sizeof(val));
	assert_int_equal(bt_check(&t, NULL), -EUCLEAN);
	vs_log_set_sink(NULL);
}

/* An image that fills up: -ENOSPC, and the tree stays whole and usable. */
static void test_enospc(void **state)
{
	struct tenv env;
	uint8_t key[8], val[400];
	uint64_t root;
	unsigned n = 0;
	int r;

	assert_int_equal(tenv_open(&env, 1u << 20, 256u << 10), 0);
	assert_int_equal(bt_create(env.bm, &root), 0);
	struct bt t = bt_open(env.bm, root);
	for (;; n++) {
		put_be64(key, n * 7919u % 100003u);
		fill_bytes(val, sizeof(val), n);
		r = bt_insert(&t, key, 8, val, n % 5 ? sizeof(val) : 0);
		if (r != 0)
			break;
	}
	assert_int_equal(r, -ENOSPC);
	assert_true(n > 100);
	/* Values in pages of their own run out too, within a page or two. */
	char big[8] = "big0";
	for (unsigned i = 0; i < 4 && (r = bt_put(&t, big, 4, page_sized(), 3000)) == 0; i++)
		big[3]++;
	assert_int_equal(r, -ENOSPC);
	struct bt_info info;
	check_tree(&t, &info);
	for (unsigned i = 0; i < n; i++) {
		put_be64(key, i * 7919u % 100003u);
		fill_bytes(val, sizeof(val), i);
		expect_val(&t, key, 8, val, i % 5 ? sizeof(val) : 0);
	}
	/* Room again after removals. */
	for (unsigned i = 0; i < n; i += 2) {
		put_be64(key, i * 7919u % 100003u);
		assert_int_equal(bt_remove(&t, key, 8), 0);
	}
	put_be64(key, n * 7919u % 100003u);
	assert_int_equal(bt_insert(&t, key, 8, val, sizeof(val)), 0);
	check_tree(&t, NULL);
	tenv_close(&env);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_invalid_lengths, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grow_and_shrink, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grow_and_shrink_big_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_big_keys_and_overflow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scans, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_update, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_several_trees, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_check_detects, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checksum_error, setup, teardown),
	    cmocka_unit_test(test_enospc)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
