/*
 * btree.c: B-trees of byte-string keys in the buffer pool (btree.h).
 *
 * Nodes are slotted pages with fences and prefix truncation (btree_node.h
 * draws the format); this file walks and changes the tree. The shape follows
 * vmcache / LeanStore: B+-tree, values in leaves, keys ordered by memcmp,
 * node ranges [lower fence, upper fence), the root's pid fixed for the life
 * of the tree (a root split moves the root's contents into two new children).
 *
 * Concurrency: optimistic lock coupling
 * -------------------------------------
 * Every call is one or more operations run by bm_run. A descent takes each
 * node optimistically (bm_fix_o), picks the child, fixes the child
 * optimistically and only then validates the parent (bm_check): if the
 * parent is unchanged, it still pointed to that child when the child's
 * version was recorded, so the child is the right node (it cannot have been
 * unlinked, freed and reused in between: unlinking needs the parent
 * exclusively, which bumps the parent's version). Writers then upgrade only
 * the nodes they change (bm_upgrade_x): the leaf for insert/remove/update,
 * plus the parent (and a sibling or a new page) for a split or merge.
 * Upgrades validate too, so a writer never acts on a stale page. Readers on
 * other leaves are never blocked, and a lookup writes no shared memory.
 *
 * An optimistically read page may hold anything (a half-written node, zeros
 * after eviction with the madvise backend) or fault (exmap backend: bm turns
 * the SIGSEGV into a restart; nothing here holds memory or locks of its own
 * across page reads, so jumping out is always safe). Node accessors clamp
 * every count, offset and length to the page, the descent is bounded by
 * BT_MAX_HEIGHT, and no decision that changes anything is taken before
 * validation. Only descend_opt() and lookup_opt() read pages optimistically;
 * every other function reads pages it holds shared or exclusively
 * (tests/btree/tsan.supp names these two).
 *
 * Restarts and side effects
 * -------------------------
 * bm_run calls an operation again from the top after a restart. So each
 * operation takes every guard it needs (upgrades, fixes of siblings and new
 * pages) before its first change to any page; after the first change it
 * calls nothing that can restart (only bm_unfix of S/X guards). Changes to
 * the caller's argument struct that must survive a restart (scan position,
 * pages consumed) are made after the last restartable call, or are
 * idempotent.
 *
 * Page allocation is not undone by a restart, so it never happens inside
 * an operation. The caller (the non-restartable C function around bm_run)
 * keeps a small stash of pages from bm_alloc; an operation that needs more
 * than the stash holds returns BT_NEED_PAGES without changing anything, the
 * caller refills the stash and runs it again; pages still in the stash at
 * the end are given back with bm_free. Likewise pages an operation unlinks
 * (a merged node, a replaced overflow value) are handed back in the
 * argument struct and freed by the caller after bm_run returned, when no
 * guard is held: bm_free must not run while the page is held.
 *
 * Structure changes
 * -----------------
 * Insert: if the leaf has no room, op_put returns BT_NEED_SPLIT; split_at()
 * splits that leaf (op_split), which needs room for one separator in the
 * parent; if the parent is full, the parent is split first (recursively up
 * to the root), then the insert runs again from the top. Splits plan with
 * the pending entry counted in, so a half always has room after a few rounds
 * even with maximal keys.
 *
 * Remove: when a leaf's content drops below BT_UNDERFULL, op_merge merges it
 * with a sibling under the same parent if the result fits, removes their
 * separator from the parent, and repeats one level up while the parent is
 * underfull. A root left with one child takes over that child's contents.
 *
 * Journal mode: every call that changes the tree is one transaction
 * (bm_txn_begin/end, which nest into the caller's), so a checkpoint never
 * falls between, say, an overflow page's allocation and the leaf that
 * refers to it, or a merge and the freeing of the merged page: a crash
 * leaves no page allocated and unreachable.
 */
#include "engine/btree.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/btree_node.h"
#include "engine/log.h"

/* Deeper than any real tree (fan-out >= 2 at 4 KiB pages, and each level
 * multiplies the key count many times over): a descent that goes further is
 * reading garbage or a cycle. */
#define BT_MAX_HEIGHT 32

/* Positive results of operations, for the caller of bm_run only. */
enum {
	BT_NEED_SPLIT = 1,    /* the leaf has no room: split it, run again */
	BT_NEED_PARENT_SPLIT, /* the parent cannot take the separator */
	BT_NEED_PAGES,	      /* refill the page stash, run again */
	BT_MERGE_UP,	      /* merged (or could not): look at the parent too */
	BT_MERGE_ROOT,	      /* the root took its only child's place: look again */
};

enum descend_mode {
	DESC_KEY,    /* the node whose range holds the key */
	DESC_BEFORE, /* the node holding the keys just below the key */
	DESC_LAST,   /* the rightmost node */
};

struct path {
	struct bm_guard node, parent;
	bool has_parent;
	unsigned pos;	/* node's position in the parent (count: upper child) */
	unsigned level; /* node's level as read (unvalidated) */
};

struct stash {
	uint64_t pid[2];
	unsigned n;
};

static inline unsigned umin(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

/* Lines of a node worth fetching ahead: header, hints and the first slots
 * (all of a typical leaf's). Measured: +10-30% lookups on 1e6 keys. */
#define PREFETCH_LINES 6

static inline void prefetch_node(uintptr_t addr)
{
	for (unsigned i = 0; i < PREFETCH_LINES; i++)
		__builtin_prefetch((const void *)(addr + 64 * i));
}

/*
 * Descend from @root to the node at @level on the way to @key, reading
 * optimistically. On return p->node is an O guard on that node (or on a
 * node above it when the tree is not that tall: see p->level) and, unless
 * the node is the root, p->parent an O guard on its parent. The caller must
 * validate (bm_check or an upgrade) before trusting the node's bytes.
 *
 * noinline: a ThreadSanitizer suppression names this function.
 */
static __attribute__((noinline)) void descend_opt(struct bm_op *op, uint64_t root,
						  const uint8_t *key, unsigned klen,
						  enum descend_mode mode, unsigned level,
						  struct path *p)
{
	unsigned plevel = 0;

	p->has_parent = false;
	p->pos = 0;
	bm_fix_o(op, root, &p->node);
	for (unsigned depth = 0;; depth++) {
		const struct bt_node *n = p->node.page;
		unsigned type = n->type, lv = n->level;
		bool bad = (type != BT_NODE_LEAF && type != BT_NODE_INNER) ||
			   (type == BT_NODE_LEAF) != (lv == 0) ||
			   (p->has_parent && lv + 1 != plevel) || depth > BT_MAX_HEIGHT;
		if (bad) {
			/* Torn reads restart here; a node that validates and
			 * still looks like this is damaged. */
			bm_check(op, &p->node);
			bm_fail(op, VS_CORRUPT("B-tree %llu: page %llu is not a node of level %u "
					       "(type %u, level %u, depth %u)",
					       (unsigned long long)root,
					       (unsigned long long)p->node.pid,
					       p->has_parent ? plevel - 1 : lv, type, lv, depth));
		}
		p->level = lv;
		if (lv <= level)
			return;
		unsigned pos = mode == DESC_LAST
				   ? bt_node_count(n)
				   : bt_node_child_pos(n, key, klen, mode == DESC_BEFORE);
		uint64_t child = bt_node_child(n, pos);
		struct bm_guard cg;
		/* The child's page-state word and its first lines (header,
		 * hints, the slots a search starts with) are cache misses that
		 * do not depend on each other: start them all before bm_fix_o
		 * waits for the first. A prefetch of a garbage address is
		 * harmless; unsigned arithmetic keeps it defined. */
		prefetch_node((uintptr_t)p->node.page + ((child - p->node.pid) << BM_PAGE_SHIFT));
		bm_fix_o(op, child, &cg);
		bm_check(op, &p->node);
		p->parent = p->node;
		p->node = cg;
		p->pos = pos;
		p->has_parent = true;
		plevel = lv;
	}
}

/* ------------------------------------------------------------------ */
/* Lookup                                                             */

struct lookup_arg {
	uint64_t root;
	const uint8_t *key;
	unsigned klen;
	void *buf;
	unsigned buf_len;
	unsigned vlen;
};

/* The whole lookup reads optimistically: no shared memory is written, the
 * value is copied out, and the copy is trusted only after validation.
 * noinline: a ThreadSanitizer suppression names this function. */
static __attribute__((noinline)) int lookup_opt(struct bm_op *op, void *arg)
{
	struct lookup_arg *a = arg;
	struct path p;
	bool found;
	unsigned plen;

	descend_opt(op, a->root, a->key, a->klen, DESC_KEY, 0, &p);
	const void *leaf = p.node.page;
	unsigned pos = bt_node_lower_bound(leaf, a->key, a->klen, &found);
	if (!found) {
		bm_check(op, &p.node);
		return -ENOENT;
	}
	const uint8_t *payload = bt_node_payload(leaf, pos, &plen);
	if (!bt_node_is_overflow(leaf, pos)) {
		if (plen && plen <= a->buf_len)
			memcpy(a->buf, payload, plen);
		bm_check(op, &p.node);
		a->vlen = plen;
		return plen <= a->buf_len ? 0 : -ENOBUFS;
	}
	unsigned vlen = umin(bt_node_vlen(leaf, pos), BT_PAGE);
	uint64_t opid = bt_node_read_pid(payload, plen);
	if (vlen > a->buf_len) {
		bm_check(op, &p.node);
		a->vlen = vlen;
		return -ENOBUFS;
	}
	struct bm_guard og;
	const void *ov = bm_fix_o(op, opid, &og);
	/* The leaf still names this page, so it holds this value. */
	bm_check(op, &p.node);
	memcpy(a->buf, ov, vlen);
	bm_check(op, &og);
	a->vlen = vlen;
	return 0;
}

static bool key_ok(const void *key, unsigned klen)
{
	return key && klen >= 1 && klen <= BT_KEY_MAX;
}

int bt_lookup(struct bt *t, const void *key, unsigned klen, void *buf, unsigned buf_len,
	      unsigned *ret_len)
{
	struct lookup_arg a = {
	    .root = t->root, .key = key, .klen = klen, .buf = buf, .buf_len = buf_len};
	if (!key_ok(key, klen) || (!buf && buf_len))
		return -EINVAL;
	int r = bm_run(t->bm, lookup_opt, &a);
	if (ret_len && (r == 0 || r == -ENOBUFS))
		*ret_len = a.vlen;
	return r;
}

/* ------------------------------------------------------------------ */
/* Page stash                                                         */

static int stash_fill(struct bm *bm, struct stash *st, unsigned want)
{
	while (st->n < want) {
		int r = bm_alloc_node(bm, &st->pid[st->n]);
		if (r < 0)
			return r;
		st->n++;
	}
	return 0;
}

static void stash_release(struct bm *bm, struct stash *st)
{
	while (st->n > 0)
		bm_free(bm, st->pid[--st->n], 1);
}

/* ------------------------------------------------------------------ */
/* Split                                                              */

struct split_arg {
	uint64_t root;
	const uint8_t *key; /* the pending entry's key: the node holding it */
	unsigned klen;
	unsigned plen; /* its payload bytes */
	unsigned level;
	struct stash *st;
	unsigned need_pages;
	struct bt_split plan; /* on BT_NEED_PARENT_SPLIT: the separator */
};

static _Noreturn void split_impossible(struct bm_op *op, struct split_arg *a, uint64_t pid)
{
	bm_fail(op, VS_CORRUPT("B-tree %llu: page %llu cannot be split",
			       (unsigned long long)a->root, (unsigned long long)pid));
}

/* The root keeps its pid: its halves move to two new pages and the root
 * becomes an inner node one level up with a single separator. */
static int split_root(struct bm_op *op, struct split_arg *a, struct path *p)
{
	uint8_t lbuf[BT_PAGE] __attribute__((aligned(8)));
	uint8_t rbuf[BT_PAGE] __attribute__((aligned(8)));
	struct bm_guard lg, rg;

	bm_upgrade_x(op, &p->node);
	void *root = p->node.page;
	unsigned level = ((struct bt_node *)root)->level;
	if (bt_node_has_room(root, a->key, a->klen, a->plen)) {
		bm_unfix_clean(op, &p->node);
		return 0;
	}
	if (bt_node_split_plan(root, a->key, a->klen, a->plen, &a->plan) < 0 ||
	    bt_node_split_build(root, &a->plan, lbuf, rbuf) < 0 || level + 1 > BT_MAX_HEIGHT)
		split_impossible(op, a, p->node.pid);
	if (a->st->n < 2) {
		bm_unfix_clean(op, &p->node);
		a->need_pages = 2;
		return BT_NEED_PAGES;
	}
	uint64_t lpid = a->st->pid[a->st->n - 1], rpid = a->st->pid[a->st->n - 2];
	memcpy(bm_fix_x_new(op, lpid, &lg), lbuf, BT_PAGE);
	memcpy(bm_fix_x_new(op, rpid, &rg), rbuf, BT_PAGE);
	/* Every guard is taken (the copies above went to unreachable pages):
	 * from here on nothing restarts. */
	bt_node_init(root, false, level + 1, NULL, 0, NULL, 0);
	bt_node_append(root, a->plan.sep, a->plan.sep_len, &lpid, BT_PID_SIZE, BT_PID_SIZE, 0);
	((struct bt_node *)root)->upper = rpid;
	a->st->n -= 2;
	bm_unfix(op, &lg);
	bm_unfix(op, &rg);
	bm_unfix(op, &p->node);
	return 0;
}

/* Split the node at a->level that holds a->key, unless it has room for the
 * pending entry by now. The left half moves to a new page and the node
 * keeps its pid with the right half, so the parent only gains the entry
 * (separator -> new page) just before the node's own. */
static int op_split(struct bm_op *op, void *arg)
{
	struct split_arg *a = arg;
	uint8_t lbuf[BT_PAGE] __attribute__((aligned(8)));
	uint8_t rbuf[BT_PAGE] __attribute__((aligned(8)));
	struct bm_guard ng;
	struct path p;

	a->need_pages = 0;
	descend_opt(op, a->root, a->key, a->klen, DESC_KEY, a->level, &p);
	if (p.level != a->level) {
		/* The tree is not that tall (any more): nothing to split. */
		bm_check(op, &p.node);
		return 0;
	}
	if (!p.has_parent)
		return split_root(op, a, &p);
	bm_upgrade_x(op, &p.parent);
	bm_upgrade_x(op, &p.node);
	void *node = p.node.page, *parent = p.parent.page;
	if (bt_node_has_room(node, a->key, a->klen, a->plen)) {
		bm_unfix_clean(op, &p.node);
		bm_unfix_clean(op, &p.parent);
		return 0;
	}
	if (bt_node_split_plan(node, a->key, a->klen, a->plen, &a->plan) < 0 ||
	    bt_node_split_build(node, &a->plan, lbuf, rbuf) < 0)
		split_impossible(op, a, p.node.pid);
	if (!bt_node_has_room(parent, a->plan.sep, a->plan.sep_len, BT_PID_SIZE)) {
		bm_unfix_clean(op, &p.node);
		bm_unfix_clean(op, &p.parent);
		return BT_NEED_PARENT_SPLIT;
	}
	if (a->st->n < 1) {
		bm_unfix_clean(op, &p.node);
		bm_unfix_clean(op, &p.parent);
		a->need_pages = 1;
		return BT_NEED_PAGES;
	}
	uint64_t lpid = a->st->pid[a->st->n - 1];
	memcpy(bm_fix_x_new(op, lpid, &ng), lbuf, BT_PAGE);
	/* Every guard is taken: from here on nothing restarts. */
	memcpy(node, rbuf, BT_PAGE);
	int r = bt_node_insert_at(parent, p.pos, a->plan.sep, a->plan.sep_len, &lpid, BT_PID_SIZE,
				  BT_PID_SIZE, 0);
	assert(r == 0); /* has_room said so */
	(void)r;
	a->st->n--;
	bm_unfix(op, &ng);
	bm_unfix(op, &p.node);
	bm_unfix(op, &p.parent);
	return 0;
}

/* Make room at @level for an entry @key with @plen payload bytes: split the
 * node holding it, splitting ancestors first where they cannot take the
 * separator. Recursion depth is bounded by the tree height. */
static int split_at(struct bt *t, struct stash *st, unsigned level, const uint8_t *key,
		    unsigned klen, unsigned plen)
{
	struct split_arg *a = malloc(sizeof(*a));
	int r;

	if (!a)
		return -ENOMEM;
	if (level >= BT_MAX_HEIGHT) {
		free(a);
		return VS_CORRUPT("B-tree %llu: splits reach level %u", (unsigned long long)t->root,
				  level);
	}
	*a = (struct split_arg){
	    .root = t->root, .key = key, .klen = klen, .plen = plen, .level = level, .st = st};
	for (;;) {
		r = bm_run(t->bm, op_split, a);
		if (r == BT_NEED_PAGES) {
			r = stash_fill(t->bm, st, a->need_pages);
			if (r < 0)
				break;
			continue;
		}
		if (r == BT_NEED_PARENT_SPLIT) {
			r = split_at(t, st, level + 1, a->plan.sep, a->plan.sep_len, BT_PID_SIZE);
			if (r < 0)
				break;
			continue;
		}
		break;
	}
	free(a);
	return r;
}

/* ------------------------------------------------------------------ */
/* Insert and put                                                     */

struct put_arg {
	uint64_t root;
	const uint8_t *key;
	unsigned klen;
	const void *val;
	unsigned vlen;
	bool replace;
	uint64_t ovf;	/* overflow page for the value, or BM_PID_NONE: inline */
	bool ovf_used;	/* the tree now refers to ovf */
	uint64_t freed; /* overflow page of a replaced value, to free */
};

static int op_put(struct bm_op *op, void *arg)
{
	struct put_arg *a = arg;
	struct bm_guard og;
	struct path p;
	bool found, ovf = a->ovf != BM_PID_NONE;
	unsigned plen = ovf ? BT_PID_SIZE : a->vlen;

	a->ovf_used = false;
	a->freed = BM_PID_NONE;
	descend_opt(op, a->root, a->key, a->klen, DESC_KEY, 0, &p);
	bm_upgrade_x(op, &p.node);
	void *leaf = p.node.page;
	unsigned pos = bt_node_lower_bound(leaf, a->key, a->klen, &found);
	if (found && !a->replace) {
		bm_unfix_clean(op, &p.node);
		return -EEXIST;
	}
	if (found && !ovf && !bt_node_is_overflow(leaf, pos) &&
	    bt_node_vlen(leaf, pos) == a->vlen) {
		/* Same size, inline: overwrite the value where it is. */
		unsigned len;
		memcpy((void *)bt_node_payload(leaf, pos, &len), a->val, a->vlen);
		bm_unfix(op, &p.node);
		return 0;
	}
	if (!bt_node_has_room(leaf, a->key, a->klen, plen)) {
		bm_unfix_clean(op, &p.node);
		return BT_NEED_SPLIT;
	}
	if (ovf) {
		uint8_t *o = bm_fix_x_new(op, a->ovf, &og);
		memcpy(o, a->val, a->vlen);
		memset(o + a->vlen, 0, BT_PAGE - a->vlen);
	}
	/* Every guard is taken: from here on nothing restarts. */
	if (found) {
		if (bt_node_is_overflow(leaf, pos))
			a->freed = bt_node_payload_pid(leaf, pos);
		bt_node_remove_at(leaf, pos);
	}
	int r = bt_node_insert_at(leaf, pos, a->key, a->klen, ovf ? (const void *)&a->ovf : a->val,
				  plen, a->vlen, ovf ? BT_SLOT_OVERFLOW : 0);
	assert(r == 0); /* has_room said so */
	(void)r;
	if (ovf) {
		a->ovf_used = true;
		bm_unfix(op, &og);
	}
	bm_unfix(op, &p.node);
	return 0;
}

static int put_common(struct bt *t, const void *key, unsigned klen, const void *val, unsigned vlen,
		      bool replace)
{
	struct put_arg a = {.root = t->root,
			    .key = key,
			    .klen = klen,
			    .val = val,
			    .vlen = vlen,
			    .replace = replace,
			    .ovf = BM_PID_NONE,
			    .freed = BM_PID_NONE};
	struct stash st = {.n = 0};
	int r;

	if (!key_ok(key, klen) || vlen > BT_VAL_MAX || (!val && vlen))
		return -EINVAL;
	if (klen + vlen > BT_INLINE_MAX) {
		r = bm_alloc_node(t->bm, &a.ovf);
		if (r < 0)
			return r;
	}
	for (;;) {
		r = bm_run(t->bm, op_put, &a);
		if (r != BT_NEED_SPLIT)
			break;
		r = split_at(t, &st, 0, key, klen, a.ovf != BM_PID_NONE ? BT_PID_SIZE : vlen);
		if (r < 0)
			break;
	}
	if (a.ovf != BM_PID_NONE && !a.ovf_used)
		bm_free(t->bm, a.ovf, 1);
	if (a.freed != BM_PID_NONE)
		bm_free(t->bm, a.freed, 1);
	stash_release(t->bm, &st);
	return r;
}

int bt_insert(struct bt *t, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	bm_txn_begin(t->bm);
	int r = put_common(t, key, klen, val, vlen, false);
	bm_txn_end(t->bm);
	return r;
}

int bt_put(struct bt *t, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	bm_txn_begin(t->bm);
	int r = put_common(t, key, klen, val, vlen, true);
	bm_txn_end(t->bm);
	return r;
}

/* ------------------------------------------------------------------ */
/* Update in place                                                    */

struct update_arg {
	uint64_t root;
	const uint8_t *key;
	unsigned klen;
	bt_update_fn fn;
	void *ctx;
};

static int op_update(struct bm_op *op, void *arg)
{
	struct update_arg *a = arg;
	struct bm_guard og;
	struct path p;
	bool found;
	unsigned len;
	int r;

	descend_opt(op, a->root, a->key, a->klen, DESC_KEY, 0, &p);
	bm_upgrade_x(op, &p.node);
	void *leaf = p.node.page;
	unsigned pos = bt_node_lower_bound(leaf, a->key, a->klen, &found);
	if (!found) {
		bm_unfix_clean(op, &p.node);
		return -ENOENT;
	}
	unsigned vlen = bt_node_vlen(leaf, pos);
	uint8_t *payload = (uint8_t *)bt_node_payload(leaf, pos, &len);
	if (!bt_node_is_overflow(leaf, pos)) {
		/* Nothing can restart after fn ran: fn runs exactly once. */
		r = a->fn(a->ctx, payload, vlen);
		bm_unfix(op, &p.node);
		return r;
	}
	void *o = bm_fix_x(op, bt_node_read_pid(payload, len), &og);
	r = a->fn(a->ctx, o, umin(vlen, BT_PAGE));
	bm_unfix(op, &og);
	bm_unfix_clean(op, &p.node);
	return r;
}

int bt_update(struct bt *t, const void *key, unsigned klen, bt_update_fn fn, void *ctx)
{
	struct update_arg a = {.root = t->root, .key = key, .klen = klen, .fn = fn, .ctx = ctx};
	if (!key_ok(key, klen) || !fn)
		return -EINVAL;
	bm_txn_begin(t->bm);
	int r = bm_run(t->bm, op_update, &a);
	bm_txn_end(t->bm);
	return r;
}

/* ------------------------------------------------------------------ */
/* Remove and merge                                                   */

struct remove_arg {
	uint64_t root;
	const uint8_t *key;
	unsigned klen;
	uint64_t freed;
	bool underfull;
};

static int op_remove(struct bm_op *op, void *arg)
{
	struct remove_arg *a = arg;
	struct path p;
	bool found;

	a->freed = BM_PID_NONE;
	a->underfull = false;
	descend_opt(op, a->root, a->key, a->klen, DESC_KEY, 0, &p);
	bm_upgrade_x(op, &p.node);
	void *leaf = p.node.page;
	unsigned pos = bt_node_lower_bound(leaf, a->key, a->klen, &found);
	if (!found) {
		bm_unfix_clean(op, &p.node);
		return -ENOENT;
	}
	if (bt_node_is_overflow(leaf, pos))
		a->freed = bt_node_payload_pid(leaf, pos);
	bt_node_remove_at(leaf, pos);
	a->underfull = p.has_parent && bt_node_content(leaf) < BT_UNDERFULL;
	bm_unfix(op, &p.node);
	return 0;
}

struct merge_arg {
	uint64_t root;
	const uint8_t *key;
	unsigned klen;
	unsigned level;
	uint64_t freed;
	uint8_t sep[BT_KEY_MAX];
};

/* The root has a single child: move the child's contents into the root. */
static int shrink_root(struct bm_op *op, struct merge_arg *a, struct path *p)
{
	struct bm_guard cg;

	bm_upgrade_x(op, &p->node);
	struct bt_node *root = p->node.page;
	if (root->type != BT_NODE_INNER || root->count != 0) {
		bm_unfix_clean(op, &p->node);
		return 0;
	}
	const struct bt_node *child = bm_fix_x(op, root->upper, &cg);
	if (child->level + 1 != root->level || child->lower_len || child->upper_len)
		bm_fail(op,
			VS_CORRUPT("B-tree %llu: only child %llu of the root is not a full-range "
				   "node one level down",
				   (unsigned long long)a->root, (unsigned long long)cg.pid));
	memcpy(root, child, BT_PAGE);
	a->freed = cg.pid;
	bm_unfix_clean(op, &cg);
	bm_unfix(op, &p->node);
	return BT_MERGE_ROOT;
}

/* Merge the node at a->level holding a->key with a sibling if it is still
 * underfull and the two fit in one page. The pair (left, right) merges into
 * right's page, so the parent just loses left's entry. */
static int op_merge(struct bm_op *op, void *arg)
{
	struct merge_arg *a = arg;
	uint8_t buf[BT_PAGE] __attribute__((aligned(8)));
	struct bm_guard sg, *lg, *rg;
	struct path p;

	a->freed = BM_PID_NONE;
	descend_opt(op, a->root, a->key, a->klen, DESC_KEY, a->level, &p);
	if (p.level != a->level) {
		bm_check(op, &p.node);
		return 0;
	}
	if (!p.has_parent)
		return shrink_root(op, a, &p);
	bm_upgrade_x(op, &p.parent);
	void *parent = p.parent.page;
	unsigned pcount = bt_node_count(parent);
	if (pcount == 0) {
		/* An only child has no sibling here; its parent is as
		 * underfull as can be, so look there. */
		bm_unfix_clean(op, &p.parent);
		return BT_MERGE_UP;
	}
	bm_upgrade_x(op, &p.node);
	if (bt_node_content(p.node.page) >= BT_UNDERFULL) {
		bm_unfix_clean(op, &p.node);
		bm_unfix_clean(op, &p.parent);
		return 0;
	}
	unsigned lpos = p.pos < pcount ? p.pos : p.pos - 1;
	uint64_t spid = bt_node_child(parent, lpos == p.pos ? lpos + 1 : lpos);
	const struct bt_node *sib = bm_fix_x(op, spid, &sg);
	const struct bt_node *node = p.node.page;
	if (sib->type != node->type || sib->level != node->level)
		bm_fail(op, VS_CORRUPT("B-tree %llu: siblings %llu and %llu differ in kind",
				       (unsigned long long)a->root, (unsigned long long)p.node.pid,
				       (unsigned long long)spid));
	lg = lpos == p.pos ? &p.node : &sg;
	rg = lpos == p.pos ? &sg : &p.node;
	unsigned seplen = bt_node_key(parent, lpos, a->sep);
	if (bt_node_merge_build(lg->page, rg->page, a->sep, seplen, buf) < 0) {
		bm_unfix_clean(op, &sg);
		bm_unfix_clean(op, &p.node);
		bm_unfix_clean(op, &p.parent);
		return 0;
	}
	/* Every guard is taken: from here on nothing restarts. */
	memcpy(rg->page, buf, BT_PAGE);
	bt_node_remove_at(parent, lpos);
	a->freed = lg->pid;
	bool up = bt_node_content(parent) < BT_UNDERFULL;
	bm_unfix_clean(op, lg);
	bm_unfix(op, rg);
	bm_unfix(op, &p.parent);
	return up ? BT_MERGE_UP : 0;
}

/* Merge underfull nodes on the way from the leaf holding @key upwards.
 * Best effort: the removal that calls this is already done, so an error
 * here (an I/O error reading a sibling) is logged, not returned. */
static void merge_from(struct bt *t, const uint8_t *key, unsigned klen)
{
	struct merge_arg *a = malloc(sizeof(*a));
	if (!a)
		return;
	*a = (struct merge_arg){.root = t->root, .key = key, .klen = klen, .level = 0};
	for (unsigned rounds = 0; rounds < 4 * BT_MAX_HEIGHT; rounds++) {
		int r = bm_run(t->bm, op_merge, a);
		if (a->freed != BM_PID_NONE)
			bm_free(t->bm, a->freed, 1);
		if (r == BT_MERGE_UP) {
			a->level++;
		} else if (r == BT_MERGE_ROOT && a->level > 0) {
			a->level--; /* the root moved down a level: look again */
		} else {
			if (r < 0)
				vs_log(VS_LOG_WARN, "B-tree %llu: merge failed: %s",
				       (unsigned long long)t->root, strerror(-r));
			break;
		}
	}
	free(a);
}

int bt_remove(struct bt *t, const void *key, unsigned klen)
{
	struct remove_arg a = {.root = t->root, .key = key, .klen = klen};
	if (!key_ok(key, klen))
		return -EINVAL;
	bm_txn_begin(t->bm);
	int r = bm_run(t->bm, op_remove, &a);
	if (r == 0 && a.freed != BM_PID_NONE)
		bm_free(t->bm, a.freed, 1);
	if (r == 0 && a.underfull)
		merge_from(t, key, klen);
	bm_txn_end(t->bm);
	return r;
}

/* ------------------------------------------------------------------ */
/* Scans                                                              */

enum scan_pos {
	SCAN_INCL, /* at pos: asc: first key >= pos, desc: last key <= pos */
	SCAN_EXCL, /* after pos: asc: first key > pos, desc: last key < pos */
	SCAN_LAST, /* desc only: the very last key */
};

/* The position lives here, not in the operation's locals, so a restart
 * resumes after the last entry delivered and never delivers one twice. */
struct scan_arg {
	uint64_t root;
	bool desc;
	bool done;
	enum scan_pos kind;
	bt_scan_fn fn;
	void *ctx;
	unsigned plen;
	uint8_t pos[BT_KEY_MAX];
	uint8_t key[BT_KEY_MAX];
};

static void scan_bad_order(struct bm_op *op, struct scan_arg *a, struct bm_guard *leaf_g,
			   unsigned i)
{
	uint64_t pid = leaf_g->pid;

	bm_unfix(op, leaf_g);
	bm_fail(op, VS_CORRUPT("B-tree %llu: leaf %llu: entry %u is out of order (the scan "
			       "would come back to entries it has delivered)",
			       (unsigned long long)a->root, (unsigned long long)pid, i));
}

/* Hand entry @i of the shared-held leaf (@leaf_g) to the callback. */
static bool scan_deliver(struct bm_op *op, struct scan_arg *a, struct bm_guard *leaf_g,
			 unsigned i)
{
	const void *leaf = leaf_g->page;
	struct bm_guard og;
	unsigned klen = bt_node_key(leaf, i, a->key), len;
	const uint8_t *val = bt_node_payload(leaf, i, &len);
	bool ovf = bt_node_is_overflow(leaf, i);

	/* Each key must come after the position (before it, descending): in
	 * a damaged leaf whose keys are out of order, a restart resumes from
	 * the last key delivered and would deliver the same entries again,
	 * for ever. */
	if (a->kind != SCAN_LAST && (a->plen > 0 || a->kind == SCAN_EXCL)) {
		int c = bt_key_cmp(a->key, klen, a->pos, a->plen);
		if (a->desc ? c > 0 || (c == 0 && a->kind == SCAN_EXCL)
			    : c < 0 || (c == 0 && a->kind == SCAN_EXCL))
			scan_bad_order(op, a, leaf_g, i);
	}

	if (ovf) {
		/* May restart: nothing of this entry was delivered yet. */
		unsigned vlen = umin(bt_node_vlen(leaf, i), BT_PAGE);
		val = bm_fix_s(op, bt_node_read_pid(val, len), &og);
		len = vlen;
	}
	bool more = a->fn(a->ctx, a->key, klen, val, len);
	if (ovf)
		bm_unfix(op, &og);
	memcpy(a->pos, a->key, klen);
	a->plen = klen;
	a->kind = SCAN_EXCL;
	return more;
}

static void scan_bad_fence(struct bm_op *op, struct scan_arg *a, struct path *p)
{
	uint64_t pid = p->node.pid;

	bm_unfix(op, &p->node);
	bm_fail(op, VS_CORRUPT("B-tree %llu: leaf %llu: its %s fence does not lead past the "
			       "scan's position", (unsigned long long)a->root,
			       (unsigned long long)pid, a->desc ? "lower" : "upper"));
}

/* Deliver what one leaf holds from the position on, then move the position
 * to the neighbouring leaf's fence (or finish). */
static int op_scan(struct bm_op *op, void *arg)
{
	struct scan_arg *a = arg;
	struct path p;
	enum descend_mode mode = a->kind == SCAN_LAST		   ? DESC_LAST
				 : a->desc && a->kind == SCAN_EXCL ? DESC_BEFORE
								   : DESC_KEY;
	bool found;
	unsigned i, flen;

	/* Where a descending scan stood on arriving here: the next position
	 * must come before it (see the fence check below). */
	enum scan_pos kind0 = a->kind;
	uint8_t pos0[BT_KEY_MAX];
	unsigned plen0 = a->plen;
	if (a->desc)
		memcpy(pos0, a->pos, a->plen);

	descend_opt(op, a->root, a->pos, a->plen, mode, 0, &p);
	bm_upgrade_s(op, &p.node);
	const void *leaf = p.node.page;
	unsigned count = bt_node_count(leaf);
	if (!a->desc) {
		i = bt_node_lower_bound(leaf, a->pos, a->plen, &found);
		if (found && a->kind == SCAN_EXCL)
			i++;
		for (; i < count; i++) {
			if (!scan_deliver(op, a, &p.node, i))
				goto done;
		}
		const uint8_t *upper = bt_node_upper(leaf, &flen);
		if (flen == 0)
			goto done;
		/* The next leaf starts past everything here: a fence that does
		 * not would bring the scan back here for ever. */
		if (bt_key_cmp(upper, flen, a->pos, a->plen) <= 0)
			scan_bad_fence(op, a, &p);
		memcpy(a->pos, upper, flen);
		a->plen = flen;
		a->kind = SCAN_INCL;
	} else {
		if (a->kind == SCAN_LAST) {
			i = count;
		} else {
			i = bt_node_lower_bound(leaf, a->pos, a->plen, &found);
			if (found && a->kind == SCAN_INCL)
				i++;
		}
		for (; i > 0; i--) {
			if (!scan_deliver(op, a, &p.node, i - 1))
				goto done;
		}
		const uint8_t *lower = bt_node_lower(leaf, &flen);
		if (flen == 0)
			goto done;
		int c = kind0 == SCAN_LAST ? -1 : bt_key_cmp(lower, flen, pos0, plen0);
		if (c > 0 || (c == 0 && kind0 == SCAN_EXCL))
			scan_bad_fence(op, a, &p);
		memcpy(a->pos, lower, flen);
		a->plen = flen;
		a->kind = SCAN_EXCL;
	}
	bm_unfix(op, &p.node);
	return 0;
done:
	a->done = true;
	bm_unfix(op, &p.node);
	return 0;
}

static int scan(struct bt *t, const void *key, unsigned klen, bt_scan_fn fn, void *ctx, bool desc)
{
	struct scan_arg *a;
	int r = 0;

	if (klen > BT_KEY_MAX || (klen && !key) || !fn)
		return -EINVAL;
	a = malloc(sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->root = t->root;
	a->desc = desc;
	a->done = false;
	a->fn = fn;
	a->ctx = ctx;
	a->plen = klen;
	if (klen)
		memcpy(a->pos, key, klen);
	/* The empty key sorts below every key: an ascending scan from it
	 * starts at the first one, a descending one at the last. */
	a->kind = desc && klen == 0 ? SCAN_LAST : SCAN_INCL;
	while (!a->done && r == 0)
		r = bm_run(t->bm, op_scan, a);
	free(a);
	return r;
}

int bt_scan_asc(struct bt *t, const void *key, unsigned klen, bt_scan_fn fn, void *ctx)
{
	return scan(t, key, klen, fn, ctx, false);
}

int bt_scan_desc(struct bt *t, const void *key, unsigned klen, bt_scan_fn fn, void *ctx)
{
	return scan(t, key, klen, fn, ctx, true);
}

/* ------------------------------------------------------------------ */
/* Create, destroy, check                                             */

static int op_create(struct bm_op *op, void *arg)
{
	struct bm_guard g;
	void *page = bm_fix_x_new(op, *(uint64_t *)arg, &g);
	bt_node_init(page, true, 0, NULL, 0, NULL, 0);
	bm_unfix(op, &g);
	return 0;
}

int bt_create(struct bm *bm, uint64_t *ret_root)
{
	uint64_t pid;
	bm_txn_begin(bm);
	int r = bm_alloc_node(bm, &pid);
	if (r == 0) {
		r = bm_run(bm, op_create, &pid);
		if (r < 0)
			bm_free(bm, pid, 1);
	}
	bm_txn_end(bm);
	if (r == 0)
		*ret_root = pid;
	return r;
}

struct copy_arg {
	uint64_t pid;
	void *buf;
};

/* Copy a page out under a shared guard (check and destroy work on copies,
 * holding nothing while they recurse). */
static int op_copy(struct bm_op *op, void *arg)
{
	struct copy_arg *a = arg;
	struct bm_guard g;
	memcpy(a->buf, bm_fix_s(op, a->pid, &g), BT_PAGE);
	bm_unfix(op, &g);
	return 0;
}

static int read_page(struct bm *bm, uint64_t pid, void *buf)
{
	struct copy_arg a = {.pid = pid, .buf = buf};
	if (pid < bm_first_data_pid(bm) || !bm_is_allocated(bm, pid))
		return -ERANGE;
	return bm_run(bm, op_copy, &a);
}

/* Post-order: children and overflow pages first, the node last. A page that
 * does not look like a node stops the walk (freeing pids read from garbage
 * would free someone else's pages). */
static int destroy_node(struct bm *bm, uint64_t root, uint64_t pid, unsigned depth)
{
	char why[160];
	uint8_t *page = malloc(BT_PAGE);
	int r;

	if (!page)
		return -ENOMEM;
	r = read_page(bm, pid, page);
	if (r == -ERANGE)
		r = VS_CORRUPT("B-tree %llu: page %llu is not allocated", (unsigned long long)root,
			       (unsigned long long)pid);
	if (r == 0 && (bt_node_verify(page, why, sizeof(why)) < 0 || depth > BT_MAX_HEIGHT))
		r = VS_CORRUPT("B-tree %llu: page %llu: %s", (unsigned long long)root,
			       (unsigned long long)pid, depth > BT_MAX_HEIGHT ? "too deep" : why);
	for (unsigned i = 0; r == 0 && i < bt_node_count(page); i++) {
		if (!bt_node_is_leaf(page)) {
			r = destroy_node(bm, root, bt_node_child(page, i), depth + 1);
		} else if (bt_node_is_overflow(page, i)) {
			uint64_t o = bt_node_payload_pid(page, i);
			if (o >= bm_first_data_pid(bm) && bm_is_allocated(bm, o))
				bm_free(bm, o, 1);
		}
	}
	if (r == 0 && !bt_node_is_leaf(page))
		r = destroy_node(bm, root, ((struct bt_node *)page)->upper, depth + 1);
	if (r == 0)
		bm_free(bm, pid, 1);
	free(page);
	return r;
}

int bt_destroy(struct bm *bm, uint64_t root)
{
	bm_txn_begin(bm);
	int r = destroy_node(bm, root, root, 0);
	bm_txn_end(bm);
	return r;
}

/* A set of pids (open addressing) for "no page reachable twice". */
struct pidset {
	uint64_t *slot;
	size_t mask, n;
};

static int pidset_add(struct pidset *s, uint64_t pid)
{
	if (2 * (s->n + 1) > s->mask + 1) {
		size_t cap = s->slot ? 2 * (s->mask + 1) : 1024;
		uint64_t *slot = malloc(cap * sizeof(*slot));
		if (!slot)
			return -ENOMEM;
		memset(slot, 0xff, cap * sizeof(*slot));
		for (size_t i = 0; s->slot && i <= s->mask; i++) {
			if (s->slot[i] == UINT64_MAX)
				continue;
			size_t j = (s->slot[i] * UINT64_C(0x9E3779B97F4A7C15)) & (cap - 1);
			while (slot[j] != UINT64_MAX)
				j = (j + 1) & (cap - 1);
			slot[j] = s->slot[i];
		}
		free(s->slot);
		s->slot = slot;
		s->mask = cap - 1;
	}
	size_t j = (pid * UINT64_C(0x9E3779B97F4A7C15)) & s->mask;
	while (s->slot[j] != UINT64_MAX) {
		if (s->slot[j] == pid)
			return -EEXIST;
		j = (j + 1) & s->mask;
	}
	s->slot[j] = pid;
	s->n++;
	return 0;
}

struct check_ctx {
	struct bm *bm;
	uint64_t root;
	struct pidset seen;
	struct bt_info info;
};

/* Claim @pid for the tree: allocated, and not reached before. */
static int check_claim(struct check_ctx *c, uint64_t pid, const char *what)
{
	if (pid < bm_first_data_pid(c->bm) || !bm_is_allocated(c->bm, pid))
		return VS_CORRUPT("B-tree %llu: %s %llu is not an allocated page",
				  (unsigned long long)c->root, what, (unsigned long long)pid);
	int r = pidset_add(&c->seen, pid);
	if (r == -EEXIST)
		return VS_CORRUPT("B-tree %llu: %s %llu is reachable twice",
				  (unsigned long long)c->root, what, (unsigned long long)pid);
	return r;
}

/* Check the subtree at @pid, which must be a node of @level (the root: any)
 * covering exactly [@lower, @upper). */
static int check_node(struct check_ctx *c, uint64_t pid, int level, const uint8_t *lower,
		      unsigned llen, const uint8_t *upper, unsigned ulen)
{
	uint8_t *page = malloc(BT_PAGE + 2 * BT_KEY_MAX);
	uint8_t *k0 = page + BT_PAGE, *k1 = k0 + BT_KEY_MAX;
	char why[160];
	unsigned fl, fu;
	int r;

	if (!page)
		return -ENOMEM;
	r = check_claim(c, pid, "node");
	if (r == 0)
		r = read_page(c->bm, pid, page);
	if (r == 0 && bt_node_verify(page, why, sizeof(why)) < 0)
		r = VS_CORRUPT("B-tree %llu: page %llu: %s", (unsigned long long)c->root,
			       (unsigned long long)pid, why);
	if (r < 0)
		goto out;
	const struct bt_node *n = (const struct bt_node *)page;
	if (level < 0) {
		c->info.height = n->level + 1u;
	} else if (n->level != (unsigned)level) {
		r = VS_CORRUPT("B-tree %llu: page %llu at level %u, expected %d",
			       (unsigned long long)c->root, (unsigned long long)pid, n->level,
			       level);
		goto out;
	}
	const uint8_t *nl = bt_node_lower(page, &fl), *nu = bt_node_upper(page, &fu);
	if (bt_key_cmp(nl, fl, lower, llen) != 0 || bt_key_cmp(nu, fu, upper, ulen) != 0) {
		r = VS_CORRUPT("B-tree %llu: page %llu: fences differ from the parent's separators",
			       (unsigned long long)c->root, (unsigned long long)pid);
		goto out;
	}
	unsigned count = bt_node_count(page);
	if (n->type == BT_NODE_LEAF) {
		c->info.leaves++;
		c->info.entries += count;
		for (unsigned i = 0; i < count && r == 0; i++) {
			if (!bt_node_is_overflow(page, i))
				continue;
			uint64_t o = bt_node_payload_pid(page, i);
			r = check_claim(c, o, "overflow page");
			c->info.overflow_pages++;
		}
		goto out;
	}
	c->info.inners++;
	unsigned l0 = fl;
	memcpy(k0, nl, fl);
	for (unsigned i = 0; i <= count && r == 0; i++) {
		unsigned l1;
		const uint8_t *hi;
		if (i < count) {
			l1 = bt_node_key(page, i, k1);
			hi = k1;
		} else {
			hi = nu;
			l1 = fu;
		}
		r = check_node(c, bt_node_child(page, i), n->level - 1, k0, l0, hi, l1);
		memcpy(k0, hi, l1);
		l0 = l1;
	}
out:
	free(page);
	return r;
}

int bt_check(struct bt *t, struct bt_info *ret_info)
{
	static const uint8_t none[1];
	struct check_ctx c = {.bm = t->bm, .root = t->root};
	int r = check_node(&c, t->root, -1, none, 0, none, 0);
	free(c.seen.slot);
	if (r == 0 && ret_info)
		*ret_info = c.info;
	return r;
}
