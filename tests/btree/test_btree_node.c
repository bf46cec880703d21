/* Node-level tests of the B-tree (engine/btree_node.h) on plain buffers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/btree_node.h"

static uint64_t rng_state = 42;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic across runs and platforms. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static void *new_page(void)
{
	/* Exactly one page from malloc, so ASan flags any read past it. */
	void *p = malloc(BT_PAGE);
	assert_non_null(p);
	memset(p, 0xaa, BT_PAGE);
	return p;
}

static void verify(const void *page)
{
	char why[160];
	int r = bt_node_verify(page, why, sizeof(why));
	if (r != 0)
		fail_msg("node does not verify: %s", why);
}

static unsigned mkkey(uint8_t *buf, const char *pfx, unsigned n)
{
	return (unsigned)snprintf((char *)buf, BT_KEY_MAX, "%s%08u", pfx, n);
}

static int insert(void *page, const uint8_t *key, unsigned klen, const void *val, unsigned vlen)
{
	bool found;
	unsigned pos = bt_node_lower_bound(page, key, klen, &found);
	assert_false(found);
	return bt_node_insert_at(page, pos, key, klen, val, vlen, vlen, 0);
}

static void expect_val(const void *page, const uint8_t *key, unsigned klen, const void *val,
		       unsigned vlen)
{
	bool found;
	unsigned len, pos = bt_node_lower_bound(page, key, klen, &found);
	assert_true(found);
	const uint8_t *p = bt_node_payload(page, pos, &len);
	assert_int_equal(len, vlen);
	assert_memory_equal(p, val, vlen);
}

static void test_init_empty(void **st)
{
	void *page = new_page();
	bool found;
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	verify(page);
	assert_int_equal(bt_node_count(page), 0);
	assert_int_equal(bt_node_prefix_len(page), 0);
	assert_int_equal(bt_node_lower_bound(page, (const uint8_t *)"x", 1, &found), 0);
	assert_false(found);
	assert_int_equal(bt_node_free_space(page), BT_PAGE - BT_SLOTS_OFF);
	free(page);
}

/* Random inserts until full: every key found, order and hints right. */
static void test_insert_search_hints(void **st)
{
	void *page = new_page();
	uint8_t key[BT_KEY_MAX];
	unsigned nums[400], n = 0;
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	for (;;) {
		unsigned v = (unsigned)(rnd() % 100000000);
		unsigned klen = mkkey(key, "k", v);
		bool found;
		bt_node_lower_bound(page, key, klen, &found);
		if (found)
			continue;
		int r = insert(page, key, klen, &v, sizeof(v));
		if (r == -ENOSPC)
			break;
		assert_int_equal(r, 0);
		nums[n++] = v;
		verify(page);
	}
	assert_true(n > 2 * BT_HINTS); /* the hint array is in use */
	assert_int_equal(bt_node_count(page), n);
	for (unsigned i = 0; i < n; i++) {
		unsigned klen = mkkey(key, "k", nums[i]);
		expect_val(page, key, klen, &nums[i], sizeof(nums[i]));
	}
	/* Keys between stored ones are not found and land in order. */
	for (unsigned i = 0; i < 1000; i++) {
		unsigned klen = mkkey(key, "k", (unsigned)(rnd() % 100000000));
		memcpy(key + klen, "!", 1);
		bool found;
		unsigned pos = bt_node_lower_bound(page, key, klen + 1, &found);
		assert_false(found);
		uint8_t k2[BT_KEY_MAX];
		if (pos > 0) {
			unsigned l2 = bt_node_key(page, pos - 1, k2);
			assert_true(bt_key_cmp(k2, l2, key, klen + 1) < 0);
		}
		if (pos < bt_node_count(page)) {
			unsigned l2 = bt_node_key(page, pos, k2);
			assert_true(bt_key_cmp(k2, l2, key, klen + 1) > 0);
		}
	}
	free(page);
}

/* Keys that share their first four bytes (equal heads) and keys that are
 * prefixes of each other. */
static void test_equal_heads_and_prefix_keys(void **st)
{
	void *page = new_page();
	const char *keys[] = {"a",	"a\0",	 "a\0\0\0\0", "a\0\0\0\1", "aaaa",
			      "aaaa\0", "aaaab", "aaab",      "b"};
	unsigned lens[] = {1, 2, 5, 5, 4, 5, 5, 4, 1};
	const unsigned nk = sizeof(lens) / sizeof(lens[0]);
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	for (unsigned i = nk; i-- > 0;)
		assert_int_equal(insert(page, (const uint8_t *)keys[i], lens[i], &i, sizeof(i)), 0);
	verify(page);
	for (unsigned i = 0; i < nk; i++) {
		bool found;
		assert_int_equal(
		    bt_node_lower_bound(page, (const uint8_t *)keys[i], lens[i], &found), i);
		assert_true(found);
	}
	free(page);
}

/* Fences with a common prefix: keys are stored without it. */
static void test_prefix_truncation(void **st)
{
	void *page = new_page();
	const uint8_t lower[] = "user:alice", upper[] = "user:alma";
	uint8_t key[BT_KEY_MAX], out[BT_KEY_MAX];
	bt_node_init(page, true, 0, lower, 10, upper, 9);
	assert_int_equal(bt_node_prefix_len(page), 7); /* "user:al" */
	unsigned free0 = bt_node_free_space(page);
	memcpy(key, "user:alix", 9);
	assert_int_equal(insert(page, key, 9, "v", 1), 0);
	/* 2 suffix bytes + 1 value byte + the slot. */
	assert_int_equal(free0 - bt_node_free_space(page), 2 + 1 + BT_SLOT_SIZE);
	unsigned slen;
	bt_node_suffix(page, 0, &slen);
	assert_int_equal(slen, 2);
	assert_int_equal(bt_node_key(page, 0, out), 9);
	assert_memory_equal(out, "user:alix", 9);
	/* The lower fence itself belongs to the node. */
	assert_int_equal(insert(page, lower, 10, "w", 1), 0);
	verify(page);
	expect_val(page, lower, 10, "w", 1);
	/* A key equal to the upper fence would not (verify says so). */
	assert_int_equal(insert(page, (const uint8_t *)"user:alma", 9, "x", 1), 0);
	char why[160];
	assert_int_equal(bt_node_verify(page, why, sizeof(why)), -EUCLEAN);
	free(page);
}

/* Removals leave garbage; inserts compact it away when they need room. */
static void test_remove_and_compact(void **st)
{
	void *page = new_page();
	uint8_t key[BT_KEY_MAX], val[40];
	unsigned n = 0;
	memset(val, 7, sizeof(val));
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	while (insert(page, key, mkkey(key, "r", n), val, sizeof(val)) == 0)
		n++;
	for (unsigned i = 0; i < n; i += 2) {
		bool found;
		unsigned klen = mkkey(key, "r", i);
		unsigned pos = bt_node_lower_bound(page, key, klen, &found);
		assert_true(found);
		bt_node_remove_at(page, pos);
		verify(page);
	}
	/* Room for the removed half again, which needs compaction. */
	unsigned added = 0;
	for (unsigned i = 0; i < n; i += 2) {
		if (insert(page, key, mkkey(key, "r", i), val, sizeof(val)) == 0)
			added++;
	}
	verify(page);
	assert_true(added >= n / 2 - 1);
	for (unsigned i = 0; i < n; i++) {
		bool found;
		unsigned klen = mkkey(key, "r", i);
		bt_node_lower_bound(page, key, klen, &found);
		assert_true(found || (i % 2 == 0));
	}
	free(page);
}

/* Split a full leaf with a pending key: shortest separator, halves verify,
 * every key on the right side of it, the pending key fits afterwards. */
static void test_leaf_split(void **st)
{
	void *page = new_page(), *l = new_page(), *r = new_page();
	uint8_t key[BT_KEY_MAX], val[100];
	unsigned n = 0;
	memset(val, 1, sizeof(val));
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	while (insert(page, key, mkkey(key, "s", n * 1000), val, sizeof(val)) == 0)
		n++;
	unsigned klen = mkkey(key, "s", n * 500 + 1); /* falls in the middle */
	struct bt_split plan;
	assert_int_equal(bt_node_split_plan(page, key, klen, sizeof(val), &plan), 0);
	assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
	verify(l);
	verify(r);
	assert_int_equal(bt_node_count(l) + bt_node_count(r), n);
	/* Balanced within a couple of entries (the pending one counts). */
	assert_true(abs((int)bt_node_count(l) - (int)bt_node_count(r)) <= 3);
	/* Shortest separator: the keys differ only in their last digits. */
	uint8_t a[BT_KEY_MAX], b[BT_KEY_MAX];
	unsigned al = bt_node_key(l, bt_node_count(l) - 1, a), bl = bt_node_key(r, 0, b);
	assert_true(bt_key_cmp(a, al, plan.sep, plan.sep_len) < 0);
	assert_true(bt_key_cmp(plan.sep, plan.sep_len, b, bl) <= 0);
	/* Shortest: one byte less would not be above the left side (the
	 * pending key may be the left neighbour, so compare with it too). */
	assert_true(plan.sep_len < 9);
	assert_true(bt_key_cmp(plan.sep, plan.sep_len - 1, a, al) <= 0 ||
		    bt_key_cmp(plan.sep, plan.sep_len - 1, key, klen) <= 0);
	unsigned fl;
	const uint8_t *f = bt_node_upper(l, &fl);
	assert_memory_equal(f, plan.sep, fl);
	f = bt_node_lower(r, &fl);
	assert_memory_equal(f, plan.sep, fl);
	/* Merging the halves back gives the original entries. */
	void *m = new_page();
	assert_int_equal(bt_node_merge_build(l, r, plan.sep, plan.sep_len, m), 0);
	verify(m);
	assert_int_equal(bt_node_count(m), n);
	assert_int_equal(bt_node_free_space(m), bt_node_free_space(page));
	free(m);

	/* The pending key goes to one of the halves, which has room. */
	void *dst = bt_key_cmp(key, klen, plan.sep, plan.sep_len) < 0 ? l : r;
	assert_true(bt_node_has_room(dst, key, klen, sizeof(val)));
	assert_int_equal(insert(dst, key, klen, val, sizeof(val)), 0);
	verify(dst);
	free(page);
	free(l);
	free(r);
}

/* A separator is the shortest prefix of the right key above the left key. */
static void test_shortest_separator(void **st)
{
	void *page = new_page(), *l = new_page(), *r = new_page();
	struct bt_split plan;
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	assert_int_equal(insert(page, (const uint8_t *)"apple", 5, "1", 1), 0);
	assert_int_equal(insert(page, (const uint8_t *)"banana", 6, "2", 1), 0);
	/* Pending "cherry": the cut is "apple" | "banana", "cherry". */
	assert_int_equal(bt_node_split_plan(page, (const uint8_t *)"cherry", 6, 1, &plan), 0);
	if (plan.left_count == 1) {
		assert_int_equal(plan.sep_len, 1);
		assert_memory_equal(plan.sep, "b", 1);
	} else {
		/* Cut after "banana": the pending key separates. */
		assert_int_equal(plan.left_count, 2);
		assert_memory_equal(plan.sep, "c", 1);
	}
	/* A right key that is a one-byte extension of the left one. */
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	assert_int_equal(insert(page, (const uint8_t *)"ab", 2, "1", 1), 0);
	assert_int_equal(insert(page, (const uint8_t *)"ab\0", 3, "2", 1), 0);
	assert_int_equal(bt_node_split_plan(page, (const uint8_t *)"a", 1, 1, &plan), 0);
	assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
	verify(l);
	verify(r);
	free(page);
	free(l);
	free(r);
}

/* Worst case sizes: 1024-byte fences without a common prefix and maximal
 * entries. Splitting with the pending entry always leaves room for it. */
static void test_split_max_sizes(void **st)
{
	void *page = new_page(), *l = new_page(), *r = new_page();
	uint8_t lower[BT_KEY_MAX], upper[BT_KEY_MAX], key[BT_KEY_MAX], k2[BT_KEY_MAX];
	uint8_t val[BT_INLINE_MAX];
	memset(lower, 'a', sizeof(lower));
	memset(upper, 'z', sizeof(upper));
	memset(val, 0x5a, sizeof(val));
	bt_node_init(page, true, 0, lower, BT_KEY_MAX, upper, BT_KEY_MAX);
	/* One maximal inline entry (key + value = BT_INLINE_MAX). */
	memset(key, 'm', BT_KEY_MAX);
	assert_int_equal(insert(page, key, 24, val, BT_INLINE_MAX - 24), 0);
	verify(page);
	/* A second one does not fit; split with it pending. */
	memcpy(k2, key, BT_KEY_MAX);
	k2[BT_KEY_MAX - 1] = 'n';
	assert_false(bt_node_has_room(page, k2, BT_KEY_MAX, 0));
	struct bt_split plan;
	assert_int_equal(bt_node_split_plan(page, k2, BT_KEY_MAX, 0, &plan), 0);
	assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
	verify(l);
	verify(r);
	void *dst = bt_key_cmp(k2, BT_KEY_MAX, plan.sep, plan.sep_len) < 0 ? l : r;
	assert_true(bt_node_has_room(dst, k2, BT_KEY_MAX, 0));

	/* Inner node with maximal separators and fences. */
	bt_node_init(page, false, 1, lower, BT_KEY_MAX, upper, BT_KEY_MAX);
	uint64_t child = 77;
	memset(key, 'c', BT_KEY_MAX);
	assert_int_equal(bt_node_append(page, key, BT_KEY_MAX, &child, 8, 8, 0), 0);
	((struct bt_node *)page)->upper = 78;
	verify(page);
	memset(k2, 'd', BT_KEY_MAX);
	assert_false(bt_node_has_room(page, k2, BT_KEY_MAX, 8));
	assert_int_equal(bt_node_split_plan(page, k2, BT_KEY_MAX, 8, &plan), 0);
	assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
	verify(l);
	verify(r);
	assert_int_equal(bt_node_count(l) + bt_node_count(r), 0);
	assert_int_equal(((struct bt_node *)l)->upper, 77);
	assert_int_equal(((struct bt_node *)r)->upper, 78);
	assert_true(bt_node_has_room(r, k2, BT_KEY_MAX, 8));
	free(page);
	free(l);
	free(r);
}

/* Ascending inserts: the pending key goes after every entry, and the split
 * leaves the full node as it is, the new key alone on the right. */
static void test_append_split(void **st)
{
	void *page = new_page(), *l = new_page(), *r = new_page();
	uint8_t key[BT_KEY_MAX], val[100];
	unsigned n = 0;
	memset(val, 2, sizeof(val));
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	while (insert(page, key, mkkey(key, "a", n), val, sizeof(val)) == 0)
		n++;
	unsigned klen = mkkey(key, "a", n);
	struct bt_split plan;
	assert_int_equal(bt_node_split_plan(page, key, klen, sizeof(val), &plan), 0);
	assert_int_equal(plan.left_count, n);
	assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
	verify(l);
	verify(r);
	assert_int_equal(bt_node_count(r), 0);
	assert_int_equal(insert(r, key, klen, val, sizeof(val)), 0);
	/* Inner nodes likewise promote their last separator. */
	bt_node_init(page, false, 1, NULL, 0, NULL, 0);
	for (n = 0;; n++) {
		uint64_t child = n;
		if (bt_node_append(page, key, mkkey(key, "i", n), &child, 8, 8, 0) < 0)
			break;
	}
	((struct bt_node *)page)->upper = 5000;
	klen = mkkey(key, "i", n + 1);
	assert_int_equal(bt_node_split_plan(page, key, klen, 8, &plan), 0);
	assert_int_equal(plan.promote, n - 1);
	assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
	verify(l);
	verify(r);
	assert_int_equal(bt_node_count(l), n - 1);
	assert_int_equal(bt_node_count(r), 0);
	assert_int_equal(((struct bt_node *)l)->upper, n - 1);
	assert_int_equal(((struct bt_node *)r)->upper, 5000);
	free(page);
	free(l);
	free(r);
}

/* A random string over {a, b}: long runs of shared bytes, so fences,
 * separators and prefixes come in every length. */
static unsigned rnd_ab(uint8_t *buf, unsigned max)
{
	unsigned len = (unsigned)(rnd() % 4 == 0 ? rnd() % (max + 1) : rnd() % 12);
	for (unsigned i = 0; i < len; i++)
		buf[i] = rnd() % 8 ? 'a' : 'b';
	return len;
}

/* Property test of the split planner on random full leaves: the halves
 * verify, keep every entry on the right side of the separator, and (nearly
 * always) have room for the pending entry; when not, they still hold all
 * existing entries, so another split makes progress. */
static void test_split_random(void **st)
{
	void *page = new_page(), *l = new_page(), *r = new_page();
	uint8_t lower[BT_KEY_MAX], upper[BT_KEY_MAX], key[BT_KEY_MAX], k2[BT_KEY_MAX];
	uint8_t val[BT_INLINE_MAX];
	unsigned splits = 0, second_rounds = 0;
	memset(val, 0x33, sizeof(val));
	for (unsigned round = 0; round < 3000; round++) {
		unsigned plen = (unsigned)(rnd() % 2 ? 0 : rnd() % 1000), llen = 0, ulen = 0;
		memset(lower, 'a', plen);
		memset(upper, 'a', plen);
		if (plen || rnd() % 2) {
			lower[plen] = 'a';
			llen = plen + 1 + rnd_ab(lower + plen + 1, BT_KEY_MAX - plen - 1);
		}
		if (plen || rnd() % 2) {
			upper[plen] = 'b';
			ulen = plen + 1 + rnd_ab(upper + plen + 1, BT_KEY_MAX - plen - 1);
		}
		bt_node_init(page, true, 0, lower, llen, upper, ulen);
		verify(page);
		unsigned fails = 0, n = 0;
		for (;;) {
			memcpy(key, lower, plen);
			key[plen] = rnd() % 2 ? 'a' : 'b';
			unsigned klen = plen + 1 + rnd_ab(key + plen + 1, BT_KEY_MAX - plen - 1);
			bool found;
			if ((llen && bt_key_cmp(key, klen, lower, llen) < 0) ||
			    (ulen && bt_key_cmp(key, klen, upper, ulen) >= 0))
				continue;
			bt_node_lower_bound(page, key, klen, &found);
			if (found)
				continue;
			bool ovf = rnd() % 5 == 0;
			unsigned vlen = ovf ? 8 : (unsigned)(rnd() % (BT_INLINE_MAX - klen + 1));
			if (bt_node_has_room(page, key, klen, vlen)) {
				/* Overflow references carry the real length. */
				unsigned real = ovf ? BT_INLINE_MAX - klen + 1 : vlen;
				unsigned pos = bt_node_lower_bound(page, key, klen, &found);
				assert_int_equal(bt_node_insert_at(page, pos, key, klen, val, vlen,
								   real,
								   ovf ? BT_SLOT_OVERFLOW : 0),
						 0);
				n++;
				continue;
			}
			if (++fails < 3 || n < 2)
				continue; /* a smaller one may still fit */
			/* Full: split with this one pending. */
			struct bt_split plan;
			assert_int_equal(bt_node_split_plan(page, key, klen, vlen, &plan), 0);
			assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
			verify(l);
			verify(r);
			assert_int_equal(bt_node_count(l) + bt_node_count(r), n);
			assert_int_equal(bt_node_count(l), plan.left_count);
			void *dst = bt_key_cmp(key, klen, plan.sep, plan.sep_len) < 0 ? l : r;
			if (!bt_node_has_room(dst, key, klen, vlen))
				second_rounds++;
			/* The separator is as short as it can be. */
			if (bt_node_count(l) > 0) {
				unsigned al = bt_node_key(l, bt_node_count(l) - 1, k2);
				assert_true(bt_key_cmp(plan.sep, plan.sep_len - 1, k2, al) <= 0 ||
					    bt_key_cmp(plan.sep, plan.sep_len - 1, key, klen) <= 0);
			}
			splits++;
			break;
		}
	}
	print_message("%u random splits, %u needing a second round\n", splits, second_rounds);
	assert_true(splits > 1000);
	assert_true(second_rounds * 20 < splits);
	free(page);
	free(l);
	free(r);
}

/* Inner nodes: child positions, a split that promotes a separator, and the
 * merge that pulls it back down. */
static void test_inner_split_merge(void **st)
{
	void *page = new_page(), *l = new_page(), *r = new_page(), *m = new_page();
	uint8_t key[BT_KEY_MAX];
	unsigned n = 0;
	bt_node_init(page, false, 1, NULL, 0, NULL, 0);
	for (;; n++) {
		uint64_t child = 1000 + n;
		unsigned klen = mkkey(key, "sep", 10 * (n + 1));
		if (bt_node_append(page, key, klen, &child, 8, 8, 0) < 0)
			break;
	}
	((struct bt_node *)page)->upper = 999;
	verify(page);
	/* Child ranges: child i holds [sep i-1, sep i). */
	unsigned klen = mkkey(key, "sep", 10);
	assert_int_equal(bt_node_child_pos(page, key, klen, false), 1);
	assert_int_equal(bt_node_child_pos(page, key, klen, true), 0);
	klen = mkkey(key, "sep", 15);
	assert_int_equal(bt_node_child_pos(page, key, klen, false), 1);
	assert_int_equal(bt_node_child_pos(page, key, klen, true), 1);
	assert_int_equal(bt_node_child(page, 1), 1001);
	assert_int_equal(bt_node_child(page, bt_node_count(page)), 999);
	assert_int_equal(bt_node_child_pos(page, (const uint8_t *)"zzz", 3, false), n);

	struct bt_split plan;
	klen = mkkey(key, "sep", 10 * (n / 3) + 5);
	assert_int_equal(bt_node_split_plan(page, key, klen, 8, &plan), 0);
	assert_int_equal(bt_node_split_build(page, &plan, l, r), 0);
	verify(l);
	verify(r);
	assert_int_equal(bt_node_count(l) + bt_node_count(r) + 1, n);
	assert_int_equal(((struct bt_node *)l)->upper, 1000 + plan.promote);
	assert_int_equal(((struct bt_node *)r)->upper, 999);
	assert_int_equal(bt_node_merge_build(l, r, plan.sep, plan.sep_len, m), 0);
	verify(m);
	assert_int_equal(bt_node_count(m), n);
	for (unsigned i = 0; i <= n; i++)
		assert_int_equal(bt_node_child(m, i), i < n ? 1000 + i : 999);
	free(page);
	free(l);
	free(r);
	free(m);
}

/* Merging refuses (ENOSPC) when the two do not fit in one page. */
static void test_merge_too_big(void **st)
{
	void *a = new_page(), *b = new_page(), *m = new_page();
	uint8_t key[BT_KEY_MAX], val[200];
	memset(val, 3, sizeof(val));
	bt_node_init(a, true, 0, NULL, 0, (const uint8_t *)"m", 1);
	bt_node_init(b, true, 0, (const uint8_t *)"m", 1, NULL, 0);
	for (unsigned i = 0; i < 12; i++) {
		assert_int_equal(insert(a, key, mkkey(key, "a", i), val, sizeof(val)), 0);
		assert_int_equal(insert(b, key, mkkey(key, "n", i), val, sizeof(val)), 0);
	}
	assert_int_equal(bt_node_merge_build(a, b, (const uint8_t *)"m", 1, m), -ENOSPC);
	free(a);
	free(b);
	free(m);
}

/* Garbage pages (what an optimistic reader may see) never make a read
 * leave the page; ASan watches. */
static void test_garbage_is_bounded(void **st)
{
	uint8_t *page = new_page();
	uint8_t key[BT_KEY_MAX];
	for (unsigned round = 0; round < 2000; round++) {
		for (unsigned i = 0; i < BT_PAGE; i += 8) {
			uint64_t v = rnd();
			memcpy(page + i, &v, 8);
		}
		if (round % 3 == 0)
			memset(page, 0xff, BT_SLOTS_OFF); /* maximal header fields */
		unsigned klen = 1 + (unsigned)(rnd() % BT_KEY_MAX);
		memset(key, (int)round, klen);
		bool found;
		unsigned pos = bt_node_lower_bound(page, key, klen, &found);
		assert_true(pos <= BT_SLOTS_MAX);
		pos = bt_node_child_pos(page, key, klen, round & 1);
		(void)bt_node_child(page, pos);
		unsigned n = bt_node_count(page), len;
		for (unsigned i = 0; i < n; i += 7) {
			bt_node_key(page, i, key);
			bt_node_payload(page, i, &len);
			assert_true(len <= BT_PAGE);
		}
		bt_node_lower(page, &len);
		bt_node_upper(page, &len);
		(void)bt_node_free_space(page);
		(void)bt_node_content(page);
		char why[160];
		assert_int_equal(bt_node_verify(page, why, sizeof(why)), -EUCLEAN);
	}
	free(page);
}

/* verify catches the damage it is meant to catch. */
static void test_verify_detects(void **st)
{
	void *page = new_page();
	char why[160];
	uint8_t key[BT_KEY_MAX];
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	for (unsigned i = 0; i < 50; i++)
		assert_int_equal(insert(page, key, mkkey(key, "v", i), "x", 1), 0);
	verify(page);
	struct bt_node *n = page;
	struct bt_slot *sl = (struct bt_slot *)((uint8_t *)page + BT_SLOTS_OFF);
	struct bt_slot tmp = sl[3];
	sl[3] = sl[4];
	sl[4] = tmp;
	assert_int_equal(bt_node_verify(page, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "order"));
	sl[4] = sl[3];
	sl[3] = tmp;
	verify(page);
	n->hint[2] ^= 1;
	assert_int_equal(bt_node_verify(page, why, sizeof(why)), -EUCLEAN);
	n->hint[2] ^= 1;
	n->heap_used++;
	assert_int_equal(bt_node_verify(page, why, sizeof(why)), -EUCLEAN);
	n->heap_used--;
	sl[7].off = sl[8].off;
	assert_int_equal(bt_node_verify(page, why, sizeof(why)), -EUCLEAN);
	free(page);
}

/* bt_page_is_node, the pool's hint: nodes of both kinds say yes, full or
 * empty; zeros, random bytes and a damaged header say no. */
static void test_page_is_node(void **st)
{
	(void)st;
	void *page = new_page();
	struct bt_node *n = page;
	uint8_t key[BT_KEY_MAX];
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	assert_true(bt_page_is_node(page));
	for (unsigned i = 0; i < 100; i++) {
		unsigned klen = mkkey(key, "ino", i);
		assert_int_equal(insert(page, key, klen, "value", 5), 0);
	}
	assert_true(bt_page_is_node(page));
	n->heap_top = BT_SLOTS_OFF; /* below the slots */
	assert_false(bt_page_is_node(page));
	bt_node_init(page, false, 3, NULL, 0, NULL, 0);
	n->upper = 77;
	assert_true(bt_page_is_node(page));
	n->level = 0; /* an inner node at level 0 */
	assert_false(bt_page_is_node(page));
	n->level = 3;
	n->reserved[5] = 1;
	assert_false(bt_page_is_node(page));
	memset(page, 0, BT_PAGE);
	assert_false(bt_page_is_node(page));
	unsigned yes = 0;
	for (unsigned i = 0; i < 10000; i++) {
		for (unsigned k = 0; k < BT_HDR_SIZE / 8; k++)
			((uint64_t *)page)[k] = rnd();
		yes += bt_page_is_node(page);
	}
	assert_int_equal(yes, 0);
	free(page);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_init_empty),
					   cmocka_unit_test(test_insert_search_hints),
					   cmocka_unit_test(test_equal_heads_and_prefix_keys),
					   cmocka_unit_test(test_prefix_truncation),
					   cmocka_unit_test(test_remove_and_compact),
					   cmocka_unit_test(test_leaf_split),
					   cmocka_unit_test(test_shortest_separator),
					   cmocka_unit_test(test_split_max_sizes),
					   cmocka_unit_test(test_append_split),
					   cmocka_unit_test(test_split_random),
					   cmocka_unit_test(test_inner_split_merge),
					   cmocka_unit_test(test_merge_too_big),
					   cmocka_unit_test(test_garbage_is_bounded),
					   cmocka_unit_test(test_verify_detects),
					   cmocka_unit_test(test_page_is_node)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
