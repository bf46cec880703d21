/*
 * btree_node.c: one B-tree node (slotted page): search, insert, remove,
 * compaction, split and merge. The page format is drawn in btree_node.h.
 *
 * Nothing here knows about the buffer pool: every function works on a plain
 * 4096-byte buffer, so the node tests run on arrays. Functions that may run
 * on an optimistically read page (the lookups) never trust a number read
 * from it beyond the page bounds; the others are called only with the page
 * held exclusively (or on private buffers).
 */
#include "engine/btree_node.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>

static inline struct bt_slot *slots_w(void *page)
{
	return (struct bt_slot *)((uint8_t *)page + BT_SLOTS_OFF);
}

/* The first four bytes as a big-endian number, zero-padded: two heads
 * compare like the strings whenever they differ. */
static inline uint32_t head_of(const uint8_t *s, unsigned len)
{
	uint32_t h = 0;
	for (unsigned i = 0; i < 4; i++)
		h = (h << 8) | (i < len ? s[i] : 0);
	return h;
}

static unsigned common_prefix(const uint8_t *a, unsigned alen, const uint8_t *b, unsigned blen)
{
	unsigned n = alen < blen ? alen : blen, i = 0;
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

/* ------------------------------------------------------------------ */
/* Reading                                                            */

unsigned bt_node_lower_bound(const void *page, const uint8_t *key, unsigned klen, bool *ret_found)
{
	const struct bt_node *n = page;
	const struct bt_slot *sl = bt_node_slots(page);
	unsigned count = bt_node_count(page);
	unsigned plen = bt_node_prefix_len(page);
	unsigned lo = 0, hi = count;

	/* A key shorter than the prefix cannot belong here: only a torn read
	 * (or a wrong node, caught by validation) gets us this far with one. */
	if (plen > klen)
		plen = klen;
	key += plen;
	klen -= plen;
	uint32_t kh = head_of(key, klen);

	if (count > 2 * BT_HINTS) {
		/* hint[i] is the head of slot dist*(i+1); slots at or before
		 * the last hint below kh sort before the key, slots from the
		 * first hint above kh after it. */
		unsigned dist = count / (BT_HINTS + 1), pos = 0, pos2;
		while (pos < BT_HINTS && n->hint[pos] < kh)
			pos++;
		pos2 = pos;
		while (pos2 < BT_HINTS && n->hint[pos2] == kh)
			pos2++;
		lo = pos * dist;
		if (pos2 < BT_HINTS)
			hi = (pos2 + 1) * dist;
	}

	*ret_found = false;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		uint32_t h = sl[mid].head;
		int c;
		if (kh != h) {
			c = kh < h ? -1 : 1;
		} else {
			unsigned slen;
			const uint8_t *s = bt_node_suffix(page, mid, &slen);
			c = bt_key_cmp(key, klen, s, slen);
		}
		if (c < 0) {
			hi = mid;
		} else if (c > 0) {
			lo = mid + 1;
		} else {
			*ret_found = true;
			return mid;
		}
	}
	return lo;
}

unsigned bt_node_child_pos(const void *page, const uint8_t *key, unsigned klen, bool before)
{
	bool found;
	unsigned pos = bt_node_lower_bound(page, key, klen, &found);
	/* A separator equal to the key starts the next child's range. */
	if (found && !before)
		pos++;
	return pos;
}

unsigned bt_node_key(const void *page, unsigned i, uint8_t *buf)
{
	unsigned plen, slen;
	const uint8_t *p = bt_node_prefix(page, &plen);
	const uint8_t *s = bt_node_suffix(page, i, &slen);
	if (slen > BT_KEY_MAX - plen)
		slen = BT_KEY_MAX - plen;
	memcpy(buf, p, plen);
	memcpy(buf + plen, s, slen);
	return plen + slen;
}

/* ------------------------------------------------------------------ */
/* Changing                                                           */

void bt_node_init(void *page, bool leaf, unsigned level, const uint8_t *lower, unsigned llen,
		  const uint8_t *upper, unsigned ulen)
{
	struct bt_node *n = page;

	assert(llen <= BT_KEY_MAX && ulen <= BT_KEY_MAX);
	assert(leaf == (level == 0));
	/* Whole page: stale bytes from an earlier life would otherwise go to
	 * disk (and into checksums) with every write of this page. */
	memset(page, 0, BT_PAGE);
	n->type = leaf ? BT_NODE_LEAF : BT_NODE_INNER;
	n->level = (uint8_t)level;
	n->heap_top = BT_PAGE;
	n->heap_top -= ulen;
	if (ulen)
		memcpy((uint8_t *)page + n->heap_top, upper, ulen);
	n->upper_off = n->heap_top;
	n->upper_len = ulen;
	n->heap_top -= llen;
	if (llen)
		memcpy((uint8_t *)page + n->heap_top, lower, llen);
	n->lower_off = n->heap_top;
	n->lower_len = llen;
	n->heap_used = llen + ulen;
	/* An open end shares no prefix with anything. */
	n->prefix_len = llen && ulen ? common_prefix(lower, llen, upper, ulen) : 0;
}

unsigned bt_node_entry_size(const void *page, unsigned klen, unsigned plen)
{
	unsigned p = bt_node_prefix_len(page);
	return BT_SLOT_SIZE + (klen > p ? klen - p : 0) + plen;
}

bool bt_node_has_room(const void *page, const uint8_t *key, unsigned klen, unsigned plen)
{
	unsigned need = bt_node_entry_size(page, klen, plen);
	unsigned free = bt_node_free_space(page);
	if (bt_node_is_leaf(page)) {
		bool found;
		unsigned pos = bt_node_lower_bound(page, key, klen, &found);
		if (found) {
			unsigned slen, vlen;
			bt_node_suffix(page, pos, &slen);
			bt_node_payload(page, pos, &vlen);
			free += BT_SLOT_SIZE + slen + vlen;
		}
	}
	return need <= free;
}

void bt_node_make_hints(void *page)
{
	struct bt_node *n = page;
	const struct bt_slot *sl = bt_node_slots(page);
	unsigned count = n->count, dist = count / (BT_HINTS + 1);
	for (unsigned i = 0; i < BT_HINTS; i++)
		n->hint[i] = count ? sl[dist * (i + 1)].head : 0;
}

int bt_node_insert_at(void *page, unsigned pos, const uint8_t *key, unsigned klen,
		      const void *payload, unsigned plen, unsigned vlen, unsigned vflags)
{
	struct bt_node *n = page;
	struct bt_slot *sl = slots_w(page);
	unsigned pfx = n->prefix_len;
	unsigned slen = klen - pfx, need = slen + plen;

	assert(klen >= pfx && klen <= BT_KEY_MAX);
	assert(memcmp(key, (uint8_t *)page + n->lower_off, pfx) == 0);
	assert(pos <= n->count);
	if (BT_SLOTS_OFF + (n->count + 1u) * BT_SLOT_SIZE + need > n->heap_top) {
		if (bt_node_free_space(page) < need + BT_SLOT_SIZE)
			return -ENOSPC;
		bt_node_compact(page);
	}
	n->heap_top -= need;
	memcpy((uint8_t *)page + n->heap_top, key + pfx, slen);
	memcpy((uint8_t *)page + n->heap_top + slen, payload, plen);
	memmove(&sl[pos + 1], &sl[pos], (size_t)(n->count - pos) * BT_SLOT_SIZE);
	sl[pos].off = n->heap_top;
	sl[pos].klen = (uint16_t)slen;
	sl[pos].vlen = (uint16_t)(vlen | vflags);
	sl[pos].head = head_of(key + pfx, slen);
	n->count++;
	n->heap_used += need;
	bt_node_make_hints(page);
	return 0;
}

int bt_node_append(void *page, const uint8_t *key, unsigned klen, const void *payload,
		   unsigned plen, unsigned vlen, unsigned vflags)
{
	return bt_node_insert_at(page, ((struct bt_node *)page)->count, key, klen, payload, plen,
				 vlen, vflags);
}

int bt_node_append_from(void *dst, const void *src, unsigned i)
{
	uint8_t key[BT_KEY_MAX];
	unsigned klen = bt_node_key(src, i, key), plen;
	const uint8_t *payload = bt_node_payload(src, i, &plen);
	unsigned v = bt_node_slots(src)[i].vlen;
	return bt_node_append(dst, key, klen, payload, plen, v & BT_VLEN_MASK,
			      v & BT_SLOT_OVERFLOW);
}

void bt_node_remove_at(void *page, unsigned pos)
{
	struct bt_node *n = page;
	struct bt_slot *sl = slots_w(page);
	unsigned plen;

	assert(pos < n->count);
	bt_node_payload(page, pos, &plen);
	n->heap_used -= sl[pos].klen + plen;
	/* The entry's heap bytes become garbage, left for compaction. */
	memmove(&sl[pos], &sl[pos + 1], (size_t)(n->count - pos - 1) * BT_SLOT_SIZE);
	n->count--;
	bt_node_make_hints(page);
}

void bt_node_compact(void *page)
{
	const struct bt_node *n = page;
	uint8_t tmp[BT_PAGE] __attribute__((aligned(8)));
	unsigned llen, ulen;
	const uint8_t *lower = bt_node_lower(page, &llen), *upper = bt_node_upper(page, &ulen);

	bt_node_init(tmp, n->type == BT_NODE_LEAF, n->level, lower, llen, upper, ulen);
	for (unsigned i = 0; i < n->count; i++) {
		int r = bt_node_append_from(tmp, page, i);
		assert(r == 0); /* same fences, no garbage: it fits */
		(void)r;
	}
	((struct bt_node *)tmp)->upper = n->upper;
	memcpy(page, tmp, BT_PAGE);
}

/* ------------------------------------------------------------------ */
/* Split and merge                                                    */

static unsigned entry_bytes(const void *page, unsigned i)
{
	unsigned slen, plen;
	bt_node_suffix(page, i, &slen);
	bt_node_payload(page, i, &plen);
	return BT_SLOT_SIZE + slen + plen;
}

/* The entries of a leaf with the pending one slotted in at vp ("virtual"
 * list); when the key is present, its entry grown to the new size. */
struct vlist {
	const void *page;
	const uint8_t *key;
	unsigned klen, n, count, vp, vsize;
	bool found;
};

/* Bytes of virtual entry @j: slot, suffix under the node prefix, payload. */
static unsigned v_size(const struct vlist *v, unsigned j)
{
	if (v->found)
		return j == v->vp && v->vsize > entry_bytes(v->page, j) ? v->vsize
									: entry_bytes(v->page, j);
	if (j == v->vp)
		return v->vsize;
	return entry_bytes(v->page, j < v->vp ? j : j - 1);
}

static unsigned v_key(const struct vlist *v, unsigned j, uint8_t *buf)
{
	if (!v->found && j == v->vp) {
		memcpy(buf, v->key, v->klen);
		return v->klen;
	}
	return bt_node_key(v->page, !v->found && j > v->vp ? j - 1 : j, buf);
}

/* Does a node with these fences and @cnt entries taking @bytes (counted
 * under prefix @pn) fit in a page once its own prefix @ps is cut off? */
static bool side_fits(unsigned fences, unsigned cnt, unsigned bytes, unsigned pn, unsigned ps)
{
	long need = (long)BT_SLOTS_OFF + fences + bytes - (long)cnt * ((long)ps - (long)pn);
	return need <= (long)BT_PAGE;
}

/* Try the cut before virtual entry @k: fill in the separator and say
 * whether both halves fit with (*ret_all) and without the pending entry. */
static bool try_cut(const struct vlist *v, const unsigned *sum, unsigned k, struct bt_split *plan,
		    bool *ret_all)
{
	uint8_t a[BT_KEY_MAX], b[BT_KEY_MAX];
	unsigned alen = v_key(v, k - 1, a), blen = v_key(v, k, b), llen, ulen;
	unsigned c = common_prefix(a, alen, b, blen);
	const uint8_t *lower = bt_node_lower(v->page, &llen),
		      *upper = bt_node_upper(v->page, &ulen);
	unsigned pn = bt_node_prefix_len(v->page);

	if (c >= blen)
		return false; /* not in order: cannot happen on a sound node */
	plan->sep_len = c + 1;
	memcpy(plan->sep, b, c + 1);
	plan->left_count = !v->found && v->vp < k ? k - 1 : k;
	plan->promote = 0;

	/* The halves' prefixes: what their new fences share. */
	unsigned pl = llen ? common_prefix(lower, llen, plan->sep, plan->sep_len) : 0;
	unsigned pr = ulen ? common_prefix(plan->sep, plan->sep_len, upper, ulen) : 0;
	unsigned lb = sum[k], rb = sum[v->count] - sum[k], lc = k, rc = v->count - k;
	*ret_all = side_fits(llen + plan->sep_len, lc, lb, pn, pl) &&
		   side_fits(plan->sep_len + ulen, rc, rb, pn, pr);
	if (!v->found) {
		/* The same without the pending entry, on its side. */
		if (v->vp < k)
			lb -= v->vsize, lc--;
		else
			rb -= v->vsize, rc--;
	}
	return side_fits(llen + plan->sep_len, lc, lb, pn, pl) &&
	       side_fits(plan->sep_len + ulen, rc, rb, pn, pr);
}

/*
 * Pick the cut of a leaf. Preference: after the last entry when the pending
 * one goes there (ascending inserts then leave full leaves behind); else the
 * cut closest to even bytes; in both cases with room for the pending entry.
 * A long separator can make a cut overflow a half (the new fence takes room
 * the old one did not), so every candidate is measured exactly. Failing
 * all, the most even cut that holds the existing entries: a cut between two
 * existing entries always does (its separator is no longer than the key
 * right of it), and the pending entry then gets another round.
 */
static int plan_leaf(const void *page, const uint8_t *key, unsigned klen, unsigned plen,
		     struct bt_split *plan)
{
	struct vlist v = {.page = page, .key = key, .klen = klen, .n = bt_node_count(page)};
	unsigned sum[BT_SLOTS_MAX + 2], best = 0, fallback = 0, half;
	bool all;

	v.vp = bt_node_lower_bound(page, key, klen, &v.found);
	v.vsize = bt_node_entry_size(page, klen, plen);
	v.count = v.found ? v.n : v.n + 1;
	if (v.count < 2)
		return -ENOSPC;
	sum[0] = 0;
	for (unsigned j = 0; j < v.count; j++)
		sum[j + 1] = sum[j] + v_size(&v, j);

	if (!v.found && v.vp == v.n && try_cut(&v, sum, v.count - 1, plan, &all) && all)
		return 0;
	/* Candidates by distance from an even split of the bytes. */
	half = sum[v.count] / 2;
	for (unsigned k = 1; k < v.count; k++)
		if ((sum[k] > half ? sum[k] - half : half - sum[k]) <
			(sum[best] > half ? sum[best] - half : half - sum[best]) ||
		    best == 0)
			best = k;
	for (unsigned d = 0; d < v.count; d++) {
		for (int side = 0; side < 2; side++) {
			long k = side ? (long)best + (long)d : (long)best - (long)d;
			if ((d == 0 && side) || k < 1 || k >= (long)v.count)
				continue;
			if (!try_cut(&v, sum, (unsigned)k, plan, &all))
				continue;
			if (all)
				return 0;
			if (!fallback)
				fallback = (unsigned)k;
		}
	}
	if (!fallback)
		return -ENOSPC;
	try_cut(&v, sum, fallback, plan, &all);
	return 0;
}

static int plan_inner(const void *page, const uint8_t *key, unsigned klen, unsigned plen,
		      struct bt_split *plan)
{
	unsigned n = bt_node_count(page), vs = bt_node_entry_size(page, klen, plen);
	unsigned total = 0, before = 0, best = 0, best_max = UINT32_MAX;
	bool found;
	unsigned vp = bt_node_lower_bound(page, key, klen, &found);

	if (n < 1)
		return -ENOSPC;
	for (unsigned j = 0; j < n; j++)
		total += entry_bytes(page, j);
	if (vp == n) {
		/* Appending: promote the last separator, so that ascending
		 * inserts leave full inner nodes behind. Either half holds
		 * fewer entries than the node and a fence no longer than the
		 * entry it came from, so both fit. */
		plan->promote = plan->left_count = n - 1;
		plan->sep_len = bt_node_key(page, n - 1, plan->sep);
		return 0;
	}
	/* Promote separator m: the left half keeps 0..m-1, the right one
	 * m+1..n-1, and the new separator joins the side it sorts into. */
	for (unsigned m = 0; m < n; m++) {
		unsigned e = entry_bytes(page, m);
		unsigned l = before + (vp <= m ? vs : 0);
		unsigned r = total - before - e + (vp > m ? vs : 0);
		unsigned mx = l > r ? l : r;
		if (mx < best_max) {
			best_max = mx;
			best = m;
		}
		before += e;
	}
	plan->promote = best;
	plan->left_count = best;
	plan->sep_len = bt_node_key(page, best, plan->sep);
	return 0;
}

int bt_node_split_plan(const void *page, const uint8_t *key, unsigned klen, unsigned plen,
		       struct bt_split *plan)
{
	if (bt_node_is_leaf(page))
		return plan_leaf(page, key, klen, plen, plan);
	return plan_inner(page, key, klen, plen, plan);
}

int bt_node_split_build(const void *page, const struct bt_split *plan, void *left, void *right)
{
	const struct bt_node *n = page;
	bool leaf = n->type == BT_NODE_LEAF;
	unsigned count = bt_node_count(page), llen, ulen, i;
	const uint8_t *lower = bt_node_lower(page, &llen), *upper = bt_node_upper(page, &ulen);
	int r = 0;

	bt_node_init(left, leaf, n->level, lower, llen, plan->sep, plan->sep_len);
	bt_node_init(right, leaf, n->level, plan->sep, plan->sep_len, upper, ulen);
	for (i = 0; i < plan->left_count && r == 0; i++)
		r = bt_node_append_from(left, page, i);
	if (!leaf) {
		/* The promoted separator's child becomes the left upper. */
		((struct bt_node *)left)->upper = bt_node_child(page, i);
		i++;
		((struct bt_node *)right)->upper = n->upper;
	}
	for (; i < count && r == 0; i++)
		r = bt_node_append_from(right, page, i);
	return r;
}

int bt_node_merge_build(const void *left, const void *right, const uint8_t *sep, unsigned seplen,
			void *dst)
{
	const struct bt_node *l = left, *rn = right;
	bool leaf = l->type == BT_NODE_LEAF;
	unsigned llen, ulen;
	const uint8_t *lower = bt_node_lower(left, &llen), *upper = bt_node_upper(right, &ulen);
	int r = 0;

	bt_node_init(dst, leaf, l->level, lower, llen, upper, ulen);
	for (unsigned i = 0; i < bt_node_count(left) && r == 0; i++)
		r = bt_node_append_from(dst, left, i);
	if (!leaf && r == 0) {
		/* The parent's separator comes down to point at what was the
		 * left node's upper child. */
		uint64_t child = l->upper;
		r = bt_node_append(dst, sep, seplen, &child, BT_PID_SIZE, BT_PID_SIZE, 0);
	}
	for (unsigned i = 0; i < bt_node_count(right) && r == 0; i++)
		r = bt_node_append_from(dst, right, i);
	((struct bt_node *)dst)->upper = rn->upper;
	return r;
}

/* ------------------------------------------------------------------ */
/* Checking                                                           */

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		snprintf(why, why_len, __VA_ARGS__);                                               \
		return -EUCLEAN;                                                                   \
	} while (0)

bool bt_page_is_node(const void *page)
{
	const struct bt_node *n = page;
	bool leaf = n->type == BT_NODE_LEAF;
	static const uint8_t zero[sizeof(n->reserved)];

	if (n->type != BT_NODE_LEAF && n->type != BT_NODE_INNER)
		return false;
	if (leaf != (n->level == 0) || n->level > 32 || (leaf && n->upper != 0))
		return false;
	if (n->count > BT_SLOTS_MAX || n->heap_top > BT_PAGE ||
	    n->heap_top < BT_SLOTS_OFF + n->count * BT_SLOT_SIZE ||
	    n->heap_used > BT_PAGE - n->heap_top)
		return false;
	return memcmp(n->reserved, zero, sizeof(zero)) == 0;
}

/* Mark [off, off+len) in the heap map; false when out of the heap or
 * overlapping what is already marked. */
static bool claim(uint8_t *map, unsigned heap_top, unsigned off, unsigned len)
{
	if (off < heap_top || off > BT_PAGE || len > BT_PAGE - off)
		return false;
	for (unsigned i = off; i < off + len; i++) {
		if (map[i])
			return false;
		map[i] = 1;
	}
	return true;
}

int bt_node_verify(const void *page, char *why, size_t why_len)
{
	const struct bt_node *n = page;
	const struct bt_slot *sl = bt_node_slots(page);
	uint8_t map[BT_PAGE];
	uint8_t key[BT_KEY_MAX], prev[BT_KEY_MAX];
	unsigned prev_len = 0, heap = 0;
	bool leaf = n->type == BT_NODE_LEAF;

	if (n->type != BT_NODE_LEAF && n->type != BT_NODE_INNER)
		FAIL("not a node (type %u)", n->type);
	if (leaf != (n->level == 0))
		FAIL("%s at level %u", leaf ? "leaf" : "inner node", n->level);
	if (n->count > BT_SLOTS_MAX || n->heap_top > BT_PAGE ||
	    BT_SLOTS_OFF + (unsigned)n->count * BT_SLOT_SIZE > n->heap_top)
		FAIL("count %u and heap top %u overlap", n->count, n->heap_top);
	if (n->lower_len > BT_KEY_MAX || n->upper_len > BT_KEY_MAX)
		FAIL("fence lengths %u/%u", n->lower_len, n->upper_len);
	memset(map, 0, sizeof(map));
	if (!claim(map, n->heap_top, n->lower_off, n->lower_len) ||
	    !claim(map, n->heap_top, n->upper_off, n->upper_len))
		FAIL("fences outside the heap");
	heap = n->lower_len + n->upper_len;

	const uint8_t *lower = (const uint8_t *)page + n->lower_off;
	const uint8_t *upper = (const uint8_t *)page + n->upper_off;
	unsigned pfx = n->lower_len && n->upper_len
			   ? common_prefix(lower, n->lower_len, upper, n->upper_len)
			   : 0;
	if (n->prefix_len != pfx)
		FAIL("prefix length %u, fences share %u", n->prefix_len, pfx);
	if (n->lower_len && n->upper_len &&
	    bt_key_cmp(lower, n->lower_len, upper, n->upper_len) >= 0)
		FAIL("lower fence not below the upper fence");
	if (leaf && n->upper != 0)
		FAIL("leaf with an upper child");

	for (unsigned i = 0; i < n->count; i++) {
		unsigned v = sl[i].vlen, plen;
		bool ovf = (v & BT_SLOT_OVERFLOW) != 0;
		if (!leaf && (ovf || v != BT_PID_SIZE))
			FAIL("inner entry %u with payload length %#x", i, v);
		plen = ovf ? BT_PID_SIZE : v;
		if (!claim(map, n->heap_top, sl[i].off, (unsigned)sl[i].klen + plen))
			FAIL("entry %u (offset %u, %u+%u bytes) outside the heap or overlapping", i,
			     sl[i].off, sl[i].klen, plen);
		heap += sl[i].klen + plen;
		if (pfx + sl[i].klen > BT_KEY_MAX || pfx + sl[i].klen == 0)
			FAIL("entry %u key length %u", i, pfx + sl[i].klen);
		unsigned klen = pfx + sl[i].klen;
		if (leaf) {
			unsigned vlen = v & BT_VLEN_MASK;
			if (ovf && (vlen > BT_VAL_MAX || klen + vlen <= BT_INLINE_MAX))
				FAIL("entry %u: overflow value of %u bytes", i, vlen);
			if (!ovf && klen + vlen > BT_INLINE_MAX)
				FAIL("entry %u: inline value of %u bytes", i, vlen);
		}
		const uint8_t *s = (const uint8_t *)page + sl[i].off;
		if (sl[i].head != head_of(s, sl[i].klen))
			FAIL("entry %u: wrong head", i);
		memcpy(key, lower, pfx);
		memcpy(key + pfx, s, sl[i].klen);
		if (i > 0 && bt_key_cmp(prev, prev_len, key, klen) >= 0)
			FAIL("entries %u and %u out of order", i - 1, i);
		/* Leaves may hold the lower fence itself; a separator equal
		 * to it would leave its child an empty range. */
		if (i == 0 && n->lower_len) {
			int c = bt_key_cmp(key, klen, lower, n->lower_len);
			if (c < 0 || (!leaf && c == 0))
				FAIL("entry 0 below the lower fence");
		}
		if (n->upper_len && bt_key_cmp(key, klen, upper, n->upper_len) >= 0)
			FAIL("entry %u not below the upper fence", i);
		memcpy(prev, key, klen);
		prev_len = klen;
	}
	if (heap != n->heap_used)
		FAIL("heap_used %u, entries and fences take %u", n->heap_used, heap);
	if (n->count > 2 * BT_HINTS) {
		unsigned dist = n->count / (BT_HINTS + 1);
		for (unsigned i = 0; i < BT_HINTS; i++)
			if (n->hint[i] != sl[dist * (i + 1)].head)
				FAIL("hint %u is stale", i);
	}
	return 0;
}
