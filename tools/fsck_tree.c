/*
 * fsck_tree.c: every page of the filesystem tree, from the root down.
 *
 * bt_check (btree.h) answers "is the tree sound?" but stops at the first
 * page that is not allocated, and the repairs need more: the exact set of
 * tree pages, to tell leaked pages from used ones page by page, and which
 * used pages the bitmap has lost. So fsck walks the tree itself, reading the
 * node format of engine/btree_node.h (the on-disk format, as fs/keys.h is
 * for records), and checks what bt_check checks: each node well formed
 * (bt_node_verify), levels consistent, fences equal to the parent's
 * separators, no page reached twice. A page that is in use but free in the
 * bitmap is a repairable problem; anything else here leaves tree_ok false:
 * no repair runs on the tree as it is, and salvage (fsck_salvage.c) builds
 * a new one from the records that can be read.
 */
#include "tools/fsck.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/btree_node.h"

/* As BT_MAX_HEIGHT in btree.c: deeper means a cycle or garbage. */
#define WALK_MAX_DEPTH 32

#define BAD(f, ...) fsck_problem(f, SEV_ERROR, FIX_NONE, 0, 0, 0, 0, __VA_ARGS__)

struct copy_arg {
	uint64_t pid;
	void *buf;
};

static int op_copy(struct bm_op *op, void *arg)
{
	struct copy_arg *a = arg;
	struct bm_guard g;
	memcpy(a->buf, bm_fix_s(op, a->pid, &g), BT_PAGE);
	bm_unfix(op, &g);
	return 0;
}

int fsck_read_page(struct fsck *f, uint64_t pid, void *buf)
{
	struct copy_arg a = {.pid = pid, .buf = buf};
	if (pid < f->first_data || pid >= f->page_count)
		return -ERANGE;
	return bm_run(f->bm, op_copy, &a);
}

/* Take @pid (referenced from page @from) for the tree. */
static bool claim(struct fsck *f, uint64_t pid, uint64_t from, const char *what)
{
	if (pid < f->first_data || pid >= f->page_count) {
		BAD(f, "tree: %s %llu (referenced by page %llu) is outside the data area", what,
		    (unsigned long long)pid, (unsigned long long)from);
		return false;
	}
	if (fsck_map_get(f->tree_map, pid)) {
		BAD(f, "tree: %s %llu (referenced by page %llu) is reachable twice", what,
		    (unsigned long long)pid, (unsigned long long)from);
		return false;
	}
	fsck_map_set(f->tree_map, pid);
	f->tree_pages++;
	/* its copy (metadata dup, engine/bm_dup.c) is reached with it */
	if (pid + 1 < f->page_count && bm_is_copy(f->bm, pid + 1)) {
		fsck_map_set(f->tree_map, pid + 1);
		f->tree_pages++;
	}
	if (!bm_is_allocated(f->bm, pid))
		fsck_problem(f, SEV_ERROR, FIX_MARK_USED, pid, 1, 0, 0,
			     "tree: %s %llu is in use but free in the bitmap", what,
			     (unsigned long long)pid);
	return true;
}

/* Walk the subtree at @pid, which must be a node of @level (-1: the root,
 * any level) covering exactly [@lower, @upper). False when it is damaged;
 * the walk still goes on below and beside it, to report what it can. */
static bool walk_node(struct fsck *f, uint64_t pid, uint64_t from, int level, const uint8_t *lower,
		      unsigned llen, const uint8_t *upper, unsigned ulen, unsigned depth)
{
	unsigned long long upid = (unsigned long long)pid;
	char why[160];
	bool ok = true;

	if (depth > WALK_MAX_DEPTH) {
		BAD(f, "tree: deeper than %d levels at page %llu", WALK_MAX_DEPTH, upid);
		return false;
	}
	if (!claim(f, pid, from, "node"))
		return false;
	uint8_t *page = malloc(BT_PAGE + 2 * BT_KEY_MAX);
	if (!page) {
		f->oom = -ENOMEM;
		return false;
	}
	uint8_t *k0 = page + BT_PAGE, *k1 = k0 + BT_KEY_MAX;
	int r = fsck_read_page(f, pid, page); /* (claim checked the range) */
	if (r == -EUCLEAN) {
		BAD(f, "tree: page %llu: checksum mismatch (a node of the tree)", upid);
		ok = false;
		goto out;
	}
	if (r < 0) {
		BAD(f, "tree: page %llu: cannot be read: %s", upid, strerror(-r));
		ok = false;
		goto out;
	}
	if (bt_node_verify(page, why, sizeof(why)) < 0) {
		BAD(f, "tree: page %llu: %s", upid, why);
		ok = false;
		goto out;
	}
	const struct bt_node *n = (const struct bt_node *)page;
	if (level < 0) {
		f->tree_height = n->level + 1u;
	} else if (n->level != (unsigned)level) {
		BAD(f, "tree: page %llu at level %u, expected %d", upid, n->level, level);
		ok = false;
		goto out;
	}
	unsigned fl, fu;
	const uint8_t *nl = bt_node_lower(page, &fl), *nu = bt_node_upper(page, &fu);
	if (bt_key_cmp(nl, fl, lower, llen) != 0 || bt_key_cmp(nu, fu, upper, ulen) != 0) {
		BAD(f, "tree: page %llu: fences differ from the parent's separators", upid);
		ok = false;
		goto out;
	}
	unsigned count = bt_node_count(page);
	if (n->type == BT_NODE_LEAF) {
		f->tree_leaves++;
		f->tree_entries += count;
		for (unsigned i = 0; i < count; i++) {
			if (!bt_node_is_overflow(page, i))
				continue;
			f->tree_overflow++;
			ok &= claim(f, bt_node_payload_pid(page, i), pid, "overflow page");
		}
		goto out;
	}
	f->tree_inners++;
	unsigned l0 = fl;
	memcpy(k0, nl, fl);
	for (unsigned i = 0; i <= count && !f->oom; i++) {
		unsigned l1;
		const uint8_t *hi;
		if (i < count) {
			l1 = bt_node_key(page, i, k1);
			hi = k1;
		} else {
			hi = nu;
			l1 = fu;
		}
		ok &= walk_node(f, bt_node_child(page, i), pid, n->level - 1, k0, l0, hi, l1,
				depth + 1);
		memcpy(k0, hi, l1);
		l0 = l1;
	}
out:
	free(page);
	return ok;
}

int fsck_walk_tree(struct fsck *f)
{
	static const uint8_t none[1];
	bool ok = walk_node(f, f->root, 0, -1, none, 0, none, 0, 0);
	f->tree_ok = ok && !f->oom;
	return f->oom;
}
