/*
 * fsck_repair.c: the repairs of fsck.virtuscale.
 *
 * The image is open for writing with its journal, so every repair is one
 * transaction (bm_txn_begin/end around the tree calls, bm_alloc and bm_free
 * it makes) and a round ends with a checkpoint: a crash in the middle of a
 * repair leaves the image as it was before that round's checkpoint or after
 * it, never half repaired. Records are changed with the filesystem's own
 * helpers (fs/fs_internal.h: fs_names_find / fs_names_remove for hashed
 * entries and their tombstones, fs_inode_get / put, fs_inode_free_locked),
 * so a repaired record is exactly what the filesystem would have written.
 * They run on a bare struct fs that holds just the pool and the tree, as
 * fs_format does: fsck is alone with the image and takes no inode locks.
 *
 * Order within a round (enum fsck_fix):
 *
 *   0. a tree that cannot be read whole is rebuilt first (fsck_salvage.c),
 *      in a round of its own: every other repair waits for a check of the
 *      new tree;
 *   1. pages in use but free in the bitmap are marked used, first: a tree
 *      call that merges nodes frees pages, and freeing a page the bitmap
 *      already calls free is fatal (bm_free aborts);
 *   2. record repairs: stray records and stale orphan records go, entries
 *      naming nothing go (with their count in the directory), types and
 *      counts are set, unnamed inodes are freed or put in /lost+found;
 *   3. only in a round without record repairs: leaked pages are freed.
 *      Record repairs allocate and free tree pages and free file pages, so
 *      "unreachable" must be computed again after them (the next round's
 *      check) before anything is freed on its word.
 */
#include "tools/fsck.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/btree.h"
#include "engine/log.h"
#include "fs/fs_internal.h"

struct repair {
	struct fsck *f;
	struct fs *fs;
	uint64_t lost_found; /* 0 until found or made this round */
};

static void fixed(const struct fsck_problem *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fixed(const struct fsck_problem *p, const char *fmt, ...)
{
	va_list ap;
	printf("FIXED: %s: ", p->msg);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* ------------------------------------------------------------------ */
/* Pages                                                              */

struct claim {
	uint64_t pid;
	uint64_t got;
	int r;
};

/*
 * Mark one page in use without losing what it holds. bm_alloc is the only
 * way to set a bit, and it clears the page's checksum entry (a reused page
 * must read as zeros), so the page is first brought in and held exclusively
 * (its checksum verified on the way), then allocated, then released dirty:
 * the next checkpoint writes it with a fresh checksum. The page is free, so
 * bm_alloc hands out exactly it when asked to start there (checked).
 * bm_alloc takes only the allocator's mutex, never a page, so calling it
 * while holding a guard cannot deadlock.
 */
static int op_claim(struct bm_op *op, void *arg)
{
	struct claim *c = arg;
	struct bm_guard g;

	bm_fix_x(op, c->pid, &g);
	c->got = c->pid;
	c->r = 0;
	if (!bm_is_allocated(op->bm, c->pid))
		c->r = bm_alloc(op->bm, 1, c->pid, &c->got);
	bm_unfix(op, &g);
	return 0;
}

int fsck_claim_page(struct fsck *f, uint64_t pid)
{
	struct claim c = {.pid = pid};
	int r = bm_run(f->bm, op_claim, &c);
	if (r < 0)
		return r;
	if (c.r < 0)
		return c.r;
	if (c.got != pid) {
		bm_free(f->bm, c.got, 1);
		return -EAGAIN;
	}
	return 0;
}

static int fix_mark_used(struct repair *rp, const struct fsck_problem *p)
{
	uint64_t n = 0;
	for (uint64_t pid = p->a; pid < p->a + p->b; pid++) {
		if (bm_is_allocated(rp->f->bm, pid))
			continue;
		int r = fsck_claim_page(rp->f, pid);
		if (r < 0)
			return r;
		n++;
	}
	fixed(p, "%llu page%s marked in use", (unsigned long long)n, fsck_s(n));
	return 0;
}

static int fix_free_leaks(struct repair *rp, const struct fsck_problem *p)
{
	struct fsck *f = rp->f;
	uint64_t freed = 0;

	for (uint64_t pid = f->first_data; pid < f->page_count; pid++) {
		if (!bm_is_allocated(f->bm, pid) || fsck_map_get(f->tree_map, pid) ||
		    fsck_map_get(f->ext_map, pid))
			continue;
		uint64_t q = pid;
		while (q + 1 < f->page_count && bm_is_allocated(f->bm, q + 1) &&
		       !fsck_map_get(f->tree_map, q + 1) && !fsck_map_get(f->ext_map, q + 1))
			q++;
		bm_free(f->bm, pid, q - pid + 1);
		freed += q - pid + 1;
		pid = q;
	}
	fixed(p, "%llu page%s freed", (unsigned long long)freed, fsck_s(freed));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Records                                                            */

#define KEY_BATCH 32

struct keys {
	uint64_t obj;
	unsigned n;
	struct {
		uint8_t key[FS_KEY_CHUNK_LEN];
		unsigned klen;
		uint64_t pid, pages; /* extents */
		uint8_t type;
	} e[KEY_BATCH];
};

static bool collect_keys(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct keys *c = ctx;
	const uint8_t *k = key;

	if (klen < FS_KEY_LEN || klen > FS_KEY_CHUNK_LEN || fs_key_obj(k) != c->obj)
		return false;
	if (c->n > 0 && c->e[c->n - 1].klen == klen && memcmp(c->e[c->n - 1].key, k, klen) == 0)
		return true; /* seen already (a scan restart) */
	memcpy(c->e[c->n].key, k, klen);
	c->e[c->n].klen = klen;
	c->e[c->n].type = k[8];
	c->e[c->n].pid = c->e[c->n].pages = 0;
	if (k[8] == FS_REC_EXTENT && vlen == FS_EXTENT_LEN) {
		c->e[c->n].pid = fs_get_le64(val);
		c->e[c->n].pages = fs_get_le32((const uint8_t *)val + 8);
	}
	return ++c->n < KEY_BATCH;
}

/* Remove every record of @obj; their pages are left to the space check. */
static int remove_records(struct repair *rp, uint64_t obj, uint64_t *ret_n)
{
	uint8_t key[FS_KEY_LEN];
	uint64_t n = 0;

	for (;;) {
		struct keys c = {.obj = obj};
		fs_key(key, obj, 0, 0);
		int r = bt_scan_asc(&rp->fs->tree, key, sizeof(key), collect_keys, &c);
		if (r < 0)
			return r;
		if (c.n == 0)
			break;
		for (unsigned i = 0; i < c.n; i++) {
			r = bt_remove(&rp->fs->tree, c.e[i].key, c.e[i].klen);
			if (r < 0 && r != -ENOENT)
				return r;
			n++;
		}
	}
	*ret_n = n;
	return 0;
}

static int remove_orphan_record(struct repair *rp, uint64_t ino)
{
	uint8_t key[FS_KEY_LEN];
	fs_key(key, 0, FS_REC_ORPHAN, ino);
	int r = bt_remove(&rp->fs->tree, key, sizeof(key));
	return r == -ENOENT ? 0 : r;
}

static int fix_stray(struct repair *rp, const struct fsck_problem *p)
{
	uint64_t n;
	int r = remove_records(rp, p->a, &n);
	if (r < 0)
		return r;
	fixed(p, "%llu record%s removed (pages they held are freed as leaked)",
	      (unsigned long long)n, fsck_s(n));
	return 0;
}

static int fix_orphan_rec(struct repair *rp, const struct fsck_problem *p)
{
	int r = remove_orphan_record(rp, p->a);
	if (r < 0)
		return r;
	fixed(p, "orphan record removed");
	return 0;
}

static int fix_dirent_remove(struct repair *rp, const struct fsck_problem *p)
{
	struct fs_inode dir;
	uint8_t key[FS_KEY_LEN], val[BT_VAL_MAX];
	unsigned len = 0;

	/* Still the entry the check saw? */
	fs_key(key, p->a, FS_REC_DIRENT, p->b);
	int r = bt_lookup(&rp->fs->tree, key, sizeof(key), val, sizeof(val), &len);
	if (r < 0)
		return r;
	if (len < 1 || val[0] == 0 || len != 1u + val[0] + FS_DIRENT_PAYLOAD ||
	    fs_get_le64(val + 1 + val[0]) != p->c)
		return -ESTALE;
	r = fs_inode_get(rp->fs, p->a, &dir);
	if (r == 0)
		r = fs_names_remove(rp->fs, p->a, FS_REC_DIRENT, p->b);
	if (r < 0)
		return r;
	/* What unlink / rmdir would have done to the directory. */
	if (dir.size > 0)
		dir.size--;
	if (p->d == (S_IFDIR >> 12) && dir.nlink > 2)
		dir.nlink--;
	r = fs_inode_put(rp->fs, &dir);
	if (r < 0)
		return r;
	fixed(p, "entry removed (directory size now %llu, nlink %u)", (unsigned long long)dir.size,
	      dir.nlink);
	return 0;
}

static int set_type(void *ctx, void *val, unsigned vlen)
{
	uint8_t *v = val;
	if (vlen < 1 || v[0] == 0 || vlen != 1u + v[0] + FS_DIRENT_PAYLOAD)
		return -ESTALE;
	v[1 + v[0] + 8] = *(const uint8_t *)ctx;
	return 0;
}

static int fix_dirent_type(struct repair *rp, const struct fsck_problem *p)
{
	uint8_t key[FS_KEY_LEN], type = (uint8_t)p->c;
	fs_key(key, p->a, FS_REC_DIRENT, p->b);
	int r = bt_update(&rp->fs->tree, key, sizeof(key), set_type, &type);
	if (r < 0)
		return r;
	fixed(p, "type set to %u", type);
	return 0;
}

static int fix_field(struct repair *rp, const struct fsck_problem *p)
{
	struct fs_inode in;
	int r = fs_inode_get(rp->fs, p->a, &in);
	if (r < 0)
		return r;
	switch (p->fix) {
	case FIX_NLINK:
		in.nlink = (uint32_t)p->b;
		break;
	case FIX_DIRSIZE:
		in.size = p->b;
		break;
	case FIX_PARENT:
		in.parent = p->b;
		break;
	case FIX_PAGES:
		in.pages = p->b;
		break;
	default:
		return -EINVAL;
	}
	r = fs_inode_put(rp->fs, &in);
	if (r < 0)
		return r;
	static const char *const what[] = {[FIX_NLINK] = "nlink",
					   [FIX_DIRSIZE] = "size",
					   [FIX_PARENT] = "parent",
					   [FIX_PAGES] = "data pages"};
	fixed(p, "%s set to %llu", what[p->fix], (unsigned long long)p->b);
	return 0;
}

/* May the extents of @ino be handed to bm_free? Not when a page is claimed
 * twice (the other owner keeps it) or is not allocated (bm_free aborts on a
 * double free; fs_inode_free_locked checks that too, and leaks the extent). */
static int extents_freeable(struct repair *rp, uint64_t ino, bool *ret_ok, uint64_t *ret_pages)
{
	struct fsck *f = rp->f;
	uint8_t key[FS_KEY_LEN];
	uint64_t from = 0, pages = 0;
	bool ok = true;

	for (;;) {
		struct keys c = {.obj = ino};
		fs_key(key, ino, FS_REC_EXTENT, from);
		int r = bt_scan_asc(&rp->fs->tree, key, sizeof(key), collect_keys, &c);
		if (r < 0)
			return r;
		unsigned i;
		for (i = 0; i < c.n && c.e[i].type == FS_REC_EXTENT; i++) {
			uint64_t pid = c.e[i].pid, n = c.e[i].pages;
			pages += n;
			if (pid < f->first_data || n > f->page_count || pid + n > f->page_count) {
				ok = false;
				continue;
			}
			for (uint64_t q = pid; q < pid + n && ok; q++)
				ok = !fsck_map_get(f->shared_map, q) && bm_is_allocated(f->bm, q);
		}
		if (c.n < KEY_BATCH || i < c.n)
			break;
		from = fs_key_off(c.e[c.n - 1].key) + 1;
	}
	*ret_ok = ok;
	*ret_pages = pages;
	return 0;
}

/* The inode count in the superblock follows creations and deletions, as
 * the filesystem keeps it (exact after a clean close). */
static void count_inode(struct repair *rp, int delta)
{
	uint64_t n = bm_sb_get(rp->f->bm, FS_SB_INODES);
	if (delta > 0 || n > 0)
		bm_sb_set(rp->f->bm, FS_SB_INODES, n + (uint64_t)(int64_t)delta);
}

static int fix_free_inode(struct repair *rp, const struct fsck_problem *p)
{
	bool ok;
	uint64_t pages, n;
	int r = extents_freeable(rp, p->a, &ok, &pages);
	if (r < 0)
		return r;
	if (ok) {
		r = fs_inode_free_locked(rp->fs, p->a);
		if (r < 0)
			return r;
		count_inode(rp, -1);
		fixed(p, "inode removed with its records, %llu data page%s freed",
		      (unsigned long long)pages, fsck_s(pages));
		return 0;
	}
	r = remove_records(rp, p->a, &n);
	if (r == 0)
		r = remove_orphan_record(rp, p->a);
	if (r < 0)
		return r;
	count_inode(rp, -1);
	fixed(p,
	      "inode removed with its %llu records (its pages are shared or damaged: left to "
	      "the space check)",
	      (unsigned long long)n);
	return 0;
}

static int dirent_put(struct repair *rp, uint64_t dir, uint64_t slot, const char *name,
		      uint64_t ino, uint32_t mode)
{
	uint8_t key[FS_KEY_LEN], v[1 + FS_NAME_MAX + FS_DIRENT_PAYLOAD];
	unsigned nlen = (unsigned)strlen(name);

	v[0] = (uint8_t)nlen;
	memcpy(v + 1, name, nlen);
	fs_put_le64(v + 1 + nlen, ino);
	v[1 + nlen + 8] = (uint8_t)((mode & S_IFMT) >> 12);
	fs_key(key, dir, FS_REC_DIRENT, slot);
	return bt_put(&rp->fs->tree, key, sizeof(key), v, 1 + nlen + FS_DIRENT_PAYLOAD);
}

/* An inode number never handed out, by the rules a mount follows. */
static uint64_t new_ino(struct repair *rp)
{
	struct fsck *f = rp->f;
	uint64_t next = bm_sb_get(f->bm, FS_SB_INO_NEXT);
	uint64_t limit = bm_sb_get(f->bm, FS_SB_INO_LIMIT);
	if (!f->was_clean)
		next = max_u64(next, limit);
	next = max_u64(max_u64(next, f->max_ino + 1), FS_INO_FIRST);
	bm_sb_set(f->bm, FS_SB_INO_NEXT, next + 1);
	if (limit <= next)
		bm_sb_set(f->bm, FS_SB_INO_LIMIT, next + 1);
	f->max_ino = next;
	return next;
}

/* /lost+found, made when absent: a directory of the root's owner, mode
 * 0700 (as e2fsck makes it), in a transaction of its own. */
static int lost_found(struct repair *rp, uint64_t *ret)
{
	static const char name[] = "lost+found";
	struct fs_slot *s = malloc(sizeof(*s));
	struct fs_inode root, lf;
	int r;

	if (!s)
		return -ENOMEM;
	r = fs_names_find(rp->fs, FS_INO_ROOT, FS_REC_DIRENT, name, sizeof(name) - 1, s);
	if (r < 0)
		goto out;
	if (s->found) {
		uint64_t ino = fs_get_le64(fs_slot_payload(s));
		r = fs_inode_get(rp->fs, ino, &lf);
		if (r == 0 && !S_ISDIR(lf.mode))
			r = -ENOTDIR;
		if (r == 0)
			*ret = ino;
		goto out;
	}
	r = fs_inode_get(rp->fs, FS_INO_ROOT, &root);
	if (r < 0)
		goto out;
	bm_txn_begin(rp->f->bm);
	memset(&lf, 0, sizeof(lf));
	lf.ino = new_ino(rp);
	lf.mode = S_IFDIR | 0700;
	lf.uid = root.uid;
	lf.gid = root.gid;
	lf.nlink = 2;
	lf.parent = FS_INO_ROOT;
	fs_now(&lf.atime);
	lf.mtime = lf.ctime = lf.btime = lf.atime;
	r = fs_inode_insert(rp->fs, &lf);
	if (r == 0)
		r = dirent_put(rp, FS_INO_ROOT, s->slot, name, lf.ino, lf.mode);
	if (r == 0) {
		count_inode(rp, 1);
		root.size++;
		root.nlink++;
		root.mtime = root.ctime = lf.atime;
		r = fs_inode_put(rp->fs, &root);
	}
	bm_txn_end(rp->f->bm);
	if (r == 0) {
		printf("note: created /lost+found (inode %llu) for inodes no entry names\n",
		       (unsigned long long)lf.ino);
		*ret = lf.ino;
	}
out:
	free(s);
	return r;
}

static int fix_reconnect(struct repair *rp, const struct fsck_problem *p)
{
	struct fs_inode in, lf;
	struct fs_slot *s = NULL;
	char name[32];
	int r;

	if (!rp->lost_found) {
		/* Outside this repair's transaction (it nests), so that
		 * /lost+found stands even if this reconnection fails. */
		bm_txn_end(rp->f->bm);
		r = lost_found(rp, &rp->lost_found);
		bm_txn_begin(rp->f->bm);
		if (r < 0)
			return r;
	}
	snprintf(name, sizeof(name), "#%llu", (unsigned long long)p->a);
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	r = fs_inode_get(rp->fs, p->a, &in);
	if (r == 0)
		r = fs_inode_get(rp->fs, rp->lost_found, &lf);
	if (r == 0)
		r = fs_names_find(rp->fs, rp->lost_found, FS_REC_DIRENT, name, strlen(name), s);
	if (r == 0 && s->found)
		r = -EEXIST;
	if (r == 0)
		r = dirent_put(rp, rp->lost_found, s->slot, name, in.ino, in.mode);
	if (r < 0)
		goto out;
	lf.size++;
	if (S_ISDIR(in.mode)) {
		in.parent = rp->lost_found;
		lf.nlink++;
	} else {
		in.nlink = 1;
	}
	r = fs_inode_put(rp->fs, &lf);
	if (r == 0)
		r = fs_inode_put(rp->fs, &in);
	if (r == 0)
		r = remove_orphan_record(rp, in.ino);
	if (r == 0)
		fixed(p, "reconnected as /lost+found/%s", name);
out:
	free(s);
	return r;
}

/* ------------------------------------------------------------------ */
/* Counters                                                           */

struct count {
	uint64_t n, max;
};

static bool count_inodes(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct count *c = ctx;
	const uint8_t *k = key;
	if (klen == FS_KEY_LEN && k[8] == FS_REC_INODE) {
		c->n++;
		c->max = max_u64(c->max, fs_key_obj(k));
	}
	return true;
}

int fsck_sync_counters(struct fsck *f, bool *ret_changed)
{
	struct bt t = bt_open(f->bm, f->root);
	struct count c = {0, 0};
	int r = bt_scan_asc(&t, NULL, 0, count_inodes, &c);
	if (r < 0)
		return r;
	uint64_t next = bm_sb_get(f->bm, FS_SB_INO_NEXT);
	uint64_t limit = bm_sb_get(f->bm, FS_SB_INO_LIMIT);
	uint64_t want_next = next;
	/* What a mount does after a crash; fsck leaves the image clean, so
	 * the next mount will not. */
	if (!f->was_clean)
		want_next = max_u64(want_next, limit);
	want_next = max_u64(max_u64(want_next, c.max + 1), FS_INO_FIRST);
	bool changed = false;
	if (want_next != next) {
		bm_sb_set(f->bm, FS_SB_INO_NEXT, want_next);
		changed = true;
	}
	if (limit < want_next) {
		bm_sb_set(f->bm, FS_SB_INO_LIMIT, want_next);
		changed = true;
	}
	if (bm_sb_get(f->bm, FS_SB_INODES) != c.n) {
		bm_sb_set(f->bm, FS_SB_INODES, c.n);
		changed = true;
	}
	*ret_changed = changed;
	return 0;
}

static int fix_counters(struct repair *rp, const struct fsck_problem *p)
{
	bool changed;
	int r = fsck_sync_counters(rp->f, &changed);
	if (r < 0)
		return r;
	fixed(p, "inode count %llu, next inode number %llu",
	      (unsigned long long)bm_sb_get(rp->f->bm, FS_SB_INODES),
	      (unsigned long long)bm_sb_get(rp->f->bm, FS_SB_INO_NEXT));
	return 0;
}

/* ------------------------------------------------------------------ */

static int apply(struct repair *rp, const struct fsck_problem *p)
{
	switch (p->fix) {
	case FIX_MARK_USED:
		return fix_mark_used(rp, p);
	case FIX_STRAY:
		return fix_stray(rp, p);
	case FIX_ORPHAN_REC:
		return fix_orphan_rec(rp, p);
	case FIX_DIRENT_REMOVE:
		return fix_dirent_remove(rp, p);
	case FIX_DIRENT_TYPE:
		return fix_dirent_type(rp, p);
	case FIX_NLINK:
	case FIX_DIRSIZE:
	case FIX_PARENT:
	case FIX_PAGES:
		return fix_field(rp, p);
	case FIX_FREE_INODE:
		return fix_free_inode(rp, p);
	case FIX_RECONNECT:
		return fix_reconnect(rp, p);
	case FIX_COUNTERS:
		return fix_counters(rp, p);
	case FIX_FREE_LEAKS:
		return fix_free_leaks(rp, p);
	case FIX_SB_FREE:
		/* Opening the image for writing rewrote the superblock with
		 * the allocator's count: fsck.c reports it at the end. */
		return 0;
	case FIX_META_BITS:
		/* Opening the image with bitmap_repair set them again, and
		 * closing it writes those bitmap pages. */
		return 0;
	default:
		return -EINVAL;
	}
}

/* The repairs of pages (fsck_fix_is_page), before anything else and on a
 * tree read whole or not: the tree may read whole once they are done, so
 * the round ends with them (a checkpoint) and the next check looks again.
 * Returns how many were made, or a negative errno. */
static int page_repairs(struct fsck *f, bool *ret_more)
{
	int done = 0;

	for (size_t i = 0; i < f->nprobs; i++) {
		const struct fsck_problem *p = &f->probs[i];
		uint64_t n = 0, other = 0;
		int r = 0;
		if (!fsck_fix_is_page(p->fix) || !fsck_can_fix(f, p))
			continue;
		switch (p->fix) {
		case FIX_COPIES: {
			/* (the check's own reads may have rewritten a damaged
			 * node from its copy already: engine/bm_dup.c) */
			int64_t bad = bm_dup_scrub(f->bm, true, &n);
			r = bad < 0 ? (int)bad : 0;
			if (r == 0)
				fixed(p, "each pair made whole from its good page");
			break;
		}
		case FIX_CSTABLE:
			/* marked for writing when it was found (bm_meta.c) */
			fixed(p, "written again, both copies");
			break;
		case FIX_CSUM_ADOPT:
			r = fsck_lost_checksums(f, true, &n, &other);
			if (r == 0)
				fixed(p, "%llu checksum%s made again from nodes that verify",
				      (unsigned long long)n, fsck_s(n));
			break;
		default:
			break;
		}
		if (r < 0)
			printf("ERROR: could not repair: %s: %s\n", p->msg, strerror(-r));
		else
			done++;
	}
	if (done == 0)
		return 0;
	*ret_more = true;
	int r = bm_checkpoint(f->bm);
	if (r < 0) {
		fprintf(stderr, "fsck.virtuscale: %s: writing the repairs failed: %s\n", f->image,
			strerror(-r));
		return r;
	}
	return done;
}

int fsck_repair_round(struct fsck *f, bool *ret_more)
{
	struct repair rp = {.f = f};
	int done = 0;
	bool records = false;

	*ret_more = false;
	int pr = page_repairs(f, ret_more);
	if (pr != 0)
		return pr;
	for (size_t i = 0; i < f->nprobs; i++) {
		if (f->probs[i].fix != FIX_SALVAGE || !fsck_can_fix(f, &f->probs[i]))
			continue;
		/* Nothing else can be repaired on a tree read in part: the
		 * next round's check looks at the new one. */
		int r = fsck_salvage(f, SALVAGE_BUILD);
		if (r == -ENOSPC)
			return 0; /* said so; the image keeps its tree, left as damage */
		if (r <= 0)
			return r;
		*ret_more = true;
		r = bm_checkpoint(f->bm);
		if (r < 0) {
			fprintf(stderr, "fsck.virtuscale: %s: writing the new tree failed: %s\n",
				f->image, strerror(-r));
			return r;
		}
		return 1;
	}
	rp.fs = calloc(1, sizeof(*rp.fs));
	if (!rp.fs)
		return -ENOMEM;
	rp.fs->bm = f->bm;
	rp.fs->tree = bt_open(f->bm, f->root);

	for (size_t i = 0; i < f->nprobs; i++)
		if (fsck_can_fix(f, &f->probs[i]) && fsck_fix_is_record(f->probs[i].fix))
			records = true;
	/* One kind after the other, each in the order found. */
	for (int kind = FIX_MARK_USED; kind < FIX_KINDS; kind++) {
		if (records && (kind == FIX_FREE_LEAKS || kind == FIX_SB_FREE)) {
			*ret_more = true; /* after a check of the result */
			continue;
		}
		for (size_t i = 0; i < f->nprobs; i++) {
			const struct fsck_problem *p = &f->probs[i];
			if ((int)p->fix != kind || !fsck_can_fix(f, p) || kind == FIX_SB_FREE ||
			    fsck_fix_is_page(p->fix))
				continue;
			bm_txn_begin(f->bm);
			int r = apply(&rp, p);
			bm_txn_end(f->bm);
			if (r < 0)
				printf("ERROR: could not repair: %s: %s\n", p->msg, strerror(-r));
			else
				done++;
		}
	}
	/* Record repairs can leave follow-ups for the next check to find (an
	 * inode freed leaves its pages, a stray directory its children). */
	if (records)
		*ret_more = true;
	free(rp.fs);
	int r = bm_checkpoint(f->bm);
	if (r < 0) {
		fprintf(stderr, "fsck.virtuscale: %s: writing the repairs failed: %s\n", f->image,
			strerror(-r));
		return r;
	}
	return done;
}
