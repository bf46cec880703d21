/*
 * fsck_salvage.c: a new tree from what a damaged one still holds.
 *
 * Every other repair needs the whole tree (fsck_can_fix): on a partial view
 * an entry looks dangling when its inode sits in the part that could not be
 * read. So when the tree walk or the record scan fails, salvage first gives
 * the repairs a whole tree again, reading past the damage as btrfs restore
 * does:
 *
 *   1. collect  walk from the root as far as pages can be trusted, then read
 *               every other allocated page of the data area and take each
 *               sound leaf: leaves under a damaged inner node are found that
 *               way, so a bad inner node or root loses nothing. A page is
 *               trusted when the pool loads it (its checksum matches the
 *               table; on an image with copies of nodes, bm_dup.c, the pool
 *               falls back to the copy, so salvage sees only nodes damaged
 *               in both) and bt_node_verify finds it well formed. A page an
 *               extent of a collected file claims is that file's data,
 *               whatever it looks like (a file may hold an image), and is
 *               never taken for a leaf. Overflow values are read with their
 *               record; a value whose page fails is lost with its record.
 *   2. merge    by key; a key found twice keeps the copy reached from the
 *               root (else the first one found), and says so.
 *   3. judge    what the records say was lost, printed as "lost:" lines:
 *               entries naming inodes that are gone; files whose extents or
 *               inline data are gone in part (at their names they would read
 *               zeros where data was, so their entries become tombstones and
 *               the repairs after put what is left in /lost+found); symlinks
 *               missing part of their target (the same); xattrs missing a
 *               chunk (dropped). A directory whose inode record is gone but
 *               whose entries survive is made again (mode 0700), so that its
 *               children keep their names under /lost+found; so is the root
 *               (mode 0755), whether or not entries of it survive.
 *   4. build    (fsck -y only) the pages the records need are marked in use
 *               (extents, and the leaves read: the bitmap may be as damaged
 *               as the tree, and no new page may land on them), a new tree
 *               is built from the records and its root written to the
 *               superblock slot the filesystem reads (FS_SB_ROOT). The
 *               caller's checkpoint makes it durable; a crash before (a
 *               checkpoint may run in the middle of the build) leaves the
 *               old root and some leaked pages, and the next run salvages
 *               again (the leaves it had built read as duplicates).
 *
 * After the build the old tree's pages are allocated and unreachable: the
 * next round's check frees them as leaks, and the rounds after it do the
 * rest (entries naming nothing removed, unnamed inodes to /lost+found, link
 * counts, sizes, the bitmap). fsck -n runs 1 to 3 and prints the plan.
 *
 * Never worse than before: salvage keeps every record the normal scan
 * reaches (they are collected first and win every duplicate) but what step 3
 * finds lost (a file that lost data leaves its names, not its records), and
 * it builds nothing when it found no inode at all (fsck.c asks first, with
 * SALVAGE_PROBE, before it opens the image for writing).
 */
#include "tools/fsck.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/btree_node.h"
#include "fs/fs_internal.h"

#define WALK_MAX_DEPTH 32
/* Records inserted per transaction: each may dirty a leaf, split up to the
 * root and take an overflow page, well inside BM_TXN_PAGES. */
#define BUILD_BATCH 32
/* Paths printed one by one; beyond, a count. */
#define LOST_LINES_MAX 200

struct srec {
	uint8_t *key; /* key, then value: one allocation */
	uint8_t *val;
	uint16_t klen, vlen;
	bool reached; /* from a leaf reached from the root */
	bool drop;
	uint64_t leaf;
};

struct name {
	uint64_t child, parent;
	size_t rec; /* the entry's record */
};

struct remade {
	uint64_t ino;
	uint64_t entries, subdirs;
};

struct salvage {
	struct fsck *f;
	enum fsck_salvage_mode mode;
	struct srec *recs;
	size_t n, cap;
	uint8_t *seen; /* per pid: read already */
	uint64_t reached_leaves, scanned_leaves, bad_pages, dups, dups_reached;
	uint64_t data_lookalikes;
	uint64_t lost_values, lost_paths, to_lf, printed;
	struct name *names; /* live entries by child */
	size_t nnames;
	uint64_t *inos; /* inodes with a record, ascending */
	size_t ninos;
	struct remade *remade;
	size_t nremade, cap_remade;
	int oom;
};

static void lost_line(struct salvage *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------ */
/* 1. collect                                                         */

static int add_rec(struct salvage *s, const uint8_t *key, unsigned klen, const void *val,
		   unsigned vlen, bool reached, uint64_t leaf)
{
	if (fsck_grow((void **)&s->recs, &s->cap, s->n, sizeof(*s->recs)) < 0)
		return -ENOMEM;
	uint8_t *b = malloc(klen + vlen + 1u);
	if (!b)
		return -ENOMEM;
	memcpy(b, key, klen);
	if (vlen)
		memcpy(b + klen, val, vlen);
	s->recs[s->n++] =
	    (struct srec){b, b + klen, (uint16_t)klen, (uint16_t)vlen, reached, false, leaf};
	return 0;
}

static void describe_key(char *buf, size_t len, const uint8_t *k, unsigned klen)
{
	/* Only xattr values are long enough for an overflow page (fs/keys.h
	 * keeps the others below BT_INLINE_MAX), but say what it is. */
	if (klen >= FS_KEY_LEN && k[8] == FS_REC_XATTR)
		snprintf(buf, len, "inode %llu: xattr at slot %llu",
			 (unsigned long long)fs_key_obj(k), (unsigned long long)fs_key_off(k));
	else if (klen >= FS_KEY_LEN)
		snprintf(buf, len, "inode %llu: record of type 0x%02x at %llu",
			 (unsigned long long)fs_key_obj(k), k[8],
			 (unsigned long long)fs_key_off(k));
	else
		snprintf(buf, len, "a record with a %u-byte key", klen);
}

/* Copy every record of the sound leaf @page (at @pid) out. */
static int take_leaf(struct salvage *s, const uint8_t *page, uint64_t pid, bool reached)
{
	uint8_t key[BT_KEY_MAX];
	uint8_t *ovf = NULL;
	unsigned count = bt_node_count(page);
	int r = 0;

	for (unsigned i = 0; i < count && r == 0; i++) {
		unsigned klen = bt_node_key(page, i, key), plen;
		const uint8_t *payload = bt_node_payload(page, i, &plen);
		unsigned vlen = plen;
		if (bt_node_is_overflow(page, i)) {
			uint64_t opid = bt_node_payload_pid(page, i);
			vlen = bt_node_vlen(page, i);
			if (!ovf && !(ovf = malloc(BT_PAGE)))
				return -ENOMEM;
			if (vlen > BT_VAL_MAX || fsck_read_page(s->f, opid, ovf) < 0) {
				char what[96];
				describe_key(what, sizeof(what), key, klen);
				lost_line(s, "%s: its value's overflow page %llu cannot be read",
					  what, (unsigned long long)opid);
				s->lost_values++;
				continue;
			}
			payload = ovf;
		}
		r = add_rec(s, key, klen, payload, vlen, reached, pid);
	}
	free(ovf);
	return r;
}

/* Is @page a leaf that holds together? */
static bool sound_leaf(const uint8_t *page)
{
	char why[160];
	const struct bt_node *n = (const struct bt_node *)page;
	return n->type == BT_NODE_LEAF && n->level == 0 &&
	       bt_node_verify(page, why, sizeof(why)) == 0;
}

/* From the root down, as far as pages load and verify. */
static int walk(struct salvage *s, uint64_t pid, unsigned depth)
{
	struct fsck *f = s->f;
	char why[160];

	if (depth > WALK_MAX_DEPTH || pid < f->first_data || pid >= f->page_count ||
	    fsck_map_get(s->seen, pid))
		return 0;
	fsck_map_set(s->seen, pid);
	uint8_t *page = malloc(BT_PAGE);
	if (!page)
		return -ENOMEM;
	int r = fsck_read_page(f, pid, page);
	if (r < 0 || bt_node_verify(page, why, sizeof(why)) < 0) {
		s->bad_pages++;
		free(page);
		return 0;
	}
	if (bt_node_is_leaf(page)) {
		s->reached_leaves++;
		r = take_leaf(s, page, pid, true);
	} else {
		unsigned count = bt_node_count(page);
		for (unsigned i = 0; i <= count && r == 0; i++)
			r = walk(s, bt_node_child(page, i), depth + 1);
	}
	free(page);
	return r;
}

/* Every allocated page the walk did not read: the sound leaves. */
static int scan_pages(struct salvage *s)
{
	struct fsck *f = s->f;
	uint8_t *page = malloc(BT_PAGE);
	int r = 0;

	if (!page)
		return -ENOMEM;
	for (uint64_t pid = f->first_data; pid < f->page_count && r == 0; pid++) {
		/* As check_checksums: drop what was read now and then. */
		if ((pid & 0xffff) == 0xffff)
			bm_evict_all(f->bm, false);
		/* A node's copy (bm_dup.c) is read through the node, never
		 * on its own. */
		if (!bm_is_allocated(f->bm, pid) || fsck_map_get(s->seen, pid) ||
		    bm_is_copy(f->bm, pid))
			continue;
		/* Pages that fail their checksum were counted by the check
		 * already (bad_map); file data is most of what is left. */
		if (fsck_map_get(f->bad_map, pid) || fsck_read_page(f, pid, page) < 0)
			continue;
		if (!sound_leaf(page))
			continue;
		s->scanned_leaves++;
		fsck_map_set(s->seen, pid);
		r = take_leaf(s, page, pid, false);
	}
	free(page);
	return r;
}

/* Records of leaves found by scanning that some file's extent claims: file
 * data that looks like a leaf. Their records are dropped. */
static void drop_data_lookalikes(struct salvage *s)
{
	struct fsck *f = s->f;
	uint8_t *claimed = calloc(f->page_count / 8 + 1, 1);
	if (!claimed) {
		s->oom = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < s->n; i++) {
		const struct srec *r = &s->recs[i];
		if (r->klen != FS_KEY_LEN || r->key[8] != FS_REC_EXTENT || r->vlen != FS_EXTENT_LEN)
			continue;
		uint64_t first = fs_get_le64(r->val), n = fs_get_le32(r->val + 8);
		if (first < f->first_data || first >= f->page_count || n > f->page_count - first)
			continue;
		for (uint64_t p = first; p < first + n; p++)
			fsck_map_set(claimed, p);
	}
	uint64_t last = BM_PID_NONE;
	for (size_t i = 0; i < s->n; i++) {
		struct srec *r = &s->recs[i];
		if (r->reached || !fsck_map_get(claimed, r->leaf))
			continue;
		r->drop = true;
		if (r->leaf != last)
			s->data_lookalikes++;
		last = r->leaf;
	}
	free(claimed);
}

/* ------------------------------------------------------------------ */
/* 2. merge                                                           */

static int cmp_rec(const void *a, const void *b)
{
	const struct srec *x = a, *y = b;
	int c = bt_key_cmp(x->key, x->klen, y->key, y->klen);
	if (c)
		return c;
	if (x->reached != y->reached)
		return x->reached ? -1 : 1;
	return (x->leaf > y->leaf) - (x->leaf < y->leaf);
}

/* Sort by key and keep one record per key; the dropped ones are freed. */
static void merge(struct salvage *s)
{
	size_t out = 0;

	if (s->n == 0)
		return; /* qsort wants an array, even an empty one */
	qsort(s->recs, s->n, sizeof(*s->recs), cmp_rec);
	for (size_t i = 0; i < s->n; i++) {
		struct srec *r = &s->recs[i];
		bool dup = out > 0 && bt_key_cmp(s->recs[out - 1].key, s->recs[out - 1].klen,
						 r->key, r->klen) == 0;
		if (r->drop || dup) {
			if (dup && !r->drop) {
				s->dups++;
				s->dups_reached += s->recs[out - 1].reached;
			}
			free(r->key);
			continue;
		}
		s->recs[out++] = *r;
	}
	s->n = out;
}

/* ------------------------------------------------------------------ */
/* 3. judge                                                           */

static bool is_rec(const struct srec *r, uint8_t type)
{
	return r->klen >= FS_KEY_LEN && r->key[8] == type;
}

static bool live_dirent(const struct srec *r)
{
	return r->klen == FS_KEY_LEN && r->key[8] == FS_REC_DIRENT && !r->drop && r->vlen >= 1 &&
	       r->val[0] != 0 && r->vlen == 1u + r->val[0] + FS_DIRENT_PAYLOAD;
}

static uint64_t dirent_child(const struct srec *r)
{
	return fs_get_le64(r->val + 1 + r->val[0]);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static int cmp_name(const void *a, const void *b)
{
	const struct name *x = a, *y = b;
	if (x->child != y->child)
		return x->child < y->child ? -1 : 1;
	return (x->rec > y->rec) - (x->rec < y->rec);
}

static bool has_inode(const struct salvage *s, uint64_t ino)
{
	return s->ninos && bsearch(&ino, s->inos, s->ninos, sizeof(*s->inos), cmp_u64);
}

static bool is_remade(const struct salvage *s, uint64_t ino)
{
	for (size_t i = 0; i < s->nremade; i++)
		if (s->remade[i].ino == ino)
			return true;
	return false;
}

static const struct name *name_of(const struct salvage *s, uint64_t ino)
{
	size_t lo = 0, hi = s->nnames;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->names[mid].child < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->nnames && s->names[lo].child == ino ? &s->names[lo] : NULL;
}

/* The path of @ino by the surviving entries; "<inode N>/..." from the
 * first ancestor no entry names. */
static const char *path_of(const struct salvage *s, uint64_t ino, char *buf, size_t len)
{
	const struct srec *comp[32];
	unsigned n = 0;
	uint64_t cur = ino;
	size_t at = 0;

	while (cur != FS_INO_ROOT && n < 32) {
		const struct name *e = name_of(s, cur);
		if (!e)
			break;
		comp[n++] = &s->recs[e->rec];
		cur = e->parent;
	}
	buf[0] = 0;
	if (cur != FS_INO_ROOT) {
		int w = snprintf(buf, len, "<inode %llu>", (unsigned long long)cur);
		at = w > 0 ? (size_t)w : 0;
	}
	for (unsigned i = n; i > 0 && at < len; i--) {
		const struct srec *r = comp[i - 1];
		int w = snprintf(buf + at, len - at, "/%.*s", r->val[0], (const char *)r->val + 1);
		at += w > 0 ? (size_t)w : 0;
	}
	if (at == 0)
		snprintf(buf, len, "/");
	return buf;
}

static void lost_line(struct salvage *s, const char *fmt, ...)
{
	va_list ap;
	if (s->mode == SALVAGE_PROBE || s->printed++ >= LOST_LINES_MAX)
		return;
	fputs("lost: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* The xattrs of one inode, records [from, to): a head whose chunks are not
 * all there is dropped with them; chunks without their head too. */
static void judge_xattrs(struct salvage *s, size_t from, size_t to, uint64_t ino)
{
	char path[600];
	for (size_t i = from; i < to; i++) {
		struct srec *h = &s->recs[i];
		if (!is_rec(h, FS_REC_XATTR))
			continue;
		if (h->klen != FS_KEY_LEN) {
			h->drop = true; /* a chunk whose head is gone */
			continue;
		}
		size_t j = i + 1;
		unsigned have = 0;
		while (j < to && is_rec(&s->recs[j], FS_REC_XATTR) &&
		       s->recs[j].klen == FS_KEY_CHUNK_LEN &&
		       fs_key_off(s->recs[j].key) == fs_key_off(h->key)) {
			unsigned c = (unsigned)s->recs[j].key[17] << 8 | s->recs[j].key[18];
			have += c == have + 1;
			j++;
		}
		if (h->vlen < 1 || h->val[0] == 0) {
			i = j - 1; /* a tombstone: its chunks, if any, stay as they are */
			continue;
		}
		unsigned nlen = h->val[0];
		if (h->vlen < 1 + nlen + FS_XATTR_HEAD) {
			i = j - 1; /* malformed: the check reports it */
			continue;
		}
		uint32_t len = fs_get_le32(h->val + 1 + nlen);
		size_t room = BT_VAL_MAX - 1 - nlen - FS_XATTR_HEAD;
		unsigned want =
		    len <= room ? 0 : (unsigned)((len - room + BT_VAL_MAX - 1) / BT_VAL_MAX);
		if (have < want) {
			for (size_t k = i; k < j; k++)
				s->recs[k].drop = true;
			lost_line(s, "%s (inode %llu): xattr %.*s: part of its value is gone",
				  path_of(s, ino, path, sizeof(path)), (unsigned long long)ino,
				  (int)nlen, (const char *)h->val + 1);
		}
		i = j - 1;
	}
}

/* Is the file or symlink whose inode record is @in, with its records
 * [from, to), missing data? *ret_what says what. */
static bool data_gone(const struct srec *in, const struct srec *recs, size_t from, size_t to,
		      char *what, size_t len)
{
	uint32_t mode = fs_get_le32(in->val), flags = fs_get_le32(in->val + 96);
	uint64_t size = fs_get_le64(in->val + 16), pages = fs_get_le64(in->val + 24);
	uint64_t ext = 0, sym = 0;
	bool inl = false;

	for (size_t i = from; i < to; i++) {
		const struct srec *r = &recs[i];
		if (r->drop)
			continue;
		if (is_rec(r, FS_REC_EXTENT) && r->vlen == FS_EXTENT_LEN)
			ext += fs_get_le32(r->val + 8);
		else if (is_rec(r, FS_REC_INLINE))
			inl = true;
		else if (is_rec(r, FS_REC_SYMLINK))
			sym += r->vlen;
	}
	if (S_ISREG(mode) && ext < pages) {
		snprintf(what, len,
			 "%llu of its %llu data pages are gone (their extents were "
			 "in a damaged page)",
			 (unsigned long long)(pages - ext), (unsigned long long)pages);
		return true;
	}
	if (S_ISREG(mode) && (flags & FS_INODE_INLINE) && size > 0 && !inl) {
		snprintf(what, len, "its data (%llu bytes, inline) is gone",
			 (unsigned long long)size);
		return true;
	}
	if (S_ISLNK(mode) && sym < size) {
		snprintf(what, len, "%llu of the %llu bytes of its target are gone",
			 (unsigned long long)(size - sym), (unsigned long long)size);
		return true;
	}
	return false;
}

/* Make the inode record of a file that lost data say what is left: its
 * "data pages held" what its extents hold; an inline file whose record is
 * gone, empty (nothing is left; the inline flag would be a lie); a symlink,
 * the part of its target before the first chunk that is gone (readlink
 * fails on a target with a hole). */
static void keep_what_is_left(struct srec *in, struct srec *recs, size_t from, size_t to)
{
	uint64_t ext = 0, target = 0;
	bool inl = false, hole = false;
	for (size_t i = from; i < to; i++) {
		struct srec *r = &recs[i];
		if (r->drop)
			continue;
		if (is_rec(r, FS_REC_EXTENT) && r->vlen == FS_EXTENT_LEN)
			ext += fs_get_le32(r->val + 8);
		inl |= is_rec(r, FS_REC_INLINE);
		if (is_rec(r, FS_REC_SYMLINK)) {
			/* Chunks of FS_SYMLINK_CHUNK bytes at their offsets, in
			 * key order; the last one may be shorter. */
			hole |= fs_key_off(r->key) != target;
			if (hole)
				r->drop = true;
			else
				target += r->vlen;
			hole |= r->vlen != FS_SYMLINK_CHUNK;
		}
	}
	fs_put_le64(in->val + 24, ext);
	if (S_ISLNK(fs_get_le32(in->val)))
		fs_put_le64(in->val + 16, target);
	uint32_t flags = fs_get_le32(in->val + 96);
	if ((flags & FS_INODE_INLINE) && !inl) {
		fs_put_le32(in->val + 96, flags & ~FS_INODE_INLINE);
		fs_put_le64(in->val + 16, 0);
	}
}

static void judge(struct salvage *s)
{
	char path[600], what[160];
	size_t i;

	/* Inodes present, and directories to make again. */
	s->inos = malloc((s->n + 1) * sizeof(*s->inos));
	s->names = malloc((s->n + 1) * sizeof(*s->names));
	if (!s->inos || !s->names) {
		s->oom = -ENOMEM;
		return;
	}
	for (i = 0; i < s->n; i++) {
		const struct srec *r = &s->recs[i];
		if (is_rec(r, FS_REC_INODE) && r->klen == FS_KEY_LEN && fs_key_obj(r->key))
			s->inos[s->ninos++] = fs_key_obj(r->key); /* ascending: sorted */
	}
	for (i = 0; i < s->n; i++) {
		const struct srec *r = &s->recs[i];
		if (!live_dirent(r))
			continue;
		s->names[s->nnames++] = (struct name){dirent_child(r), fs_key_obj(r->key), i};
		uint64_t dir = fs_key_obj(r->key);
		if (has_inode(s, dir) || (s->nremade && s->remade[s->nremade - 1].ino == dir))
			continue;
		if (fsck_grow((void **)&s->remade, &s->cap_remade, s->nremade, sizeof(*s->remade)) < 0) {
			s->oom = -ENOMEM;
			return;
		}
		s->remade[s->nremade++] = (struct remade){dir, 0, 0};
	}
	qsort(s->names, s->nnames, sizeof(*s->names), cmp_name);
	for (i = 0; i < s->nnames; i++) {
		const struct srec *r = &s->recs[s->names[i].rec];
		for (size_t k = 0; k < s->nremade; k++) {
			if (s->remade[k].ino != s->names[i].parent)
				continue;
			s->remade[k].entries++;
			s->remade[k].subdirs += r->val[1 + r->val[0] + 8] == (S_IFDIR >> 12);
		}
	}
	if (!has_inode(s, FS_INO_ROOT) && !is_remade(s, FS_INO_ROOT)) {
		if (fsck_grow((void **)&s->remade, &s->cap_remade, s->nremade, sizeof(*s->remade)) < 0) {
			s->oom = -ENOMEM;
			return;
		}
		s->remade[s->nremade++] = (struct remade){FS_INO_ROOT, 0, 0};
	}

	/* Per inode: xattrs, and files whose data is gone in part. */
	for (i = 0; i < s->n;) {
		uint64_t obj = s->recs[i].klen >= 8 ? fs_key_obj(s->recs[i].key) : 0;
		size_t j = i + 1;
		while (j < s->n && s->recs[j].klen >= 8 && fs_key_obj(s->recs[j].key) == obj)
			j++;
		struct srec *in = &s->recs[i];
		if (obj && is_rec(in, FS_REC_INODE) && in->klen == FS_KEY_LEN &&
		    in->vlen == FS_INODE_LEN) {
			judge_xattrs(s, i, j, obj);
			if (data_gone(in, s->recs, i, j, what, sizeof(what))) {
				bool named = false;
				for (size_t k = 0; k < s->nnames; k++) {
					if (s->names[k].child != obj)
						continue;
					struct srec *d = &s->recs[s->names[k].rec];
					if (!named)
						lost_line(s,
							  "%s (inode %llu): %s; what is left goes "
							  "to /lost+found/#%llu",
							  path_of(s, obj, path, sizeof(path)),
							  (unsigned long long)obj, what,
							  (unsigned long long)obj);
					named = true;
					d->vlen = 1; /* a tombstone: probe chains stay whole */
					d->val[0] = 0;
				}
				if (!named)
					lost_line(s, "inode %llu (no name left): %s",
						  (unsigned long long)obj, what);
				keep_what_is_left(in, s->recs, i, j);
				s->lost_paths += named;
			}
		}
		i = j;
	}
	/* Names (the entries left after the above) by child again. */
	size_t out = 0;
	for (i = 0; i < s->nnames; i++)
		if (live_dirent(&s->recs[s->names[i].rec]))
			s->names[out++] = s->names[i];
	s->nnames = out;

	/* Entries naming inodes that are gone. */
	for (i = 0; i < s->n; i++) {
		const struct srec *r = &s->recs[i];
		if (!live_dirent(r))
			continue;
		uint64_t child = dirent_child(r);
		if (has_inode(s, child) || is_remade(s, child))
			continue;
		char dir[600];
		lost_line(s, "%s/%.*s (inode %llu): its inode record is gone",
			  fs_key_obj(r->key) == FS_INO_ROOT
			      ? ""
			      : path_of(s, fs_key_obj(r->key), dir, sizeof(dir)),
			  r->val[0], (const char *)r->val + 1, (unsigned long long)child);
		s->lost_paths++;
	}
	/* Inodes no entry names any more: /lost+found, whole subtrees. */
	for (i = 0; i < s->n; i++) {
		const struct srec *r = &s->recs[i];
		uint64_t ino = r->klen >= 8 ? fs_key_obj(r->key) : 0;
		if (!is_rec(r, FS_REC_INODE) || r->vlen != FS_INODE_LEN || ino == FS_INO_ROOT ||
		    ino == 0 || name_of(s, ino) || fs_get_le32(r->val + 12) == 0)
			continue;
		s->to_lf++;
	}
	for (i = 0; i < s->nremade; i++) {
		struct remade *m = &s->remade[i];
		if (m->ino == FS_INO_ROOT)
			lost_line(s,
				  "/ (inode 1): the root directory's inode record is gone: made "
				  "again (mode 0755), %llu entries kept",
				  (unsigned long long)m->entries);
		else
			lost_line(s,
				  "directory inode %llu: its inode record is gone: made again "
				  "(mode 0700), its %llu entries kept",
				  (unsigned long long)m->ino, (unsigned long long)m->entries);
		s->to_lf += m->ino != FS_INO_ROOT && !name_of(s, m->ino);
	}
}

/* ------------------------------------------------------------------ */
/* 4. build                                                           */

/* Mark in use, where the bitmap says free, the pages the new tree must not
 * be built on: the data of every extent kept, and the leaves read (a crash
 * during the build must find them as they were). */
static int claim_range(struct fsck *f, uint64_t first, uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++) {
		if (bm_is_allocated(f->bm, p))
			continue;
		int r = fsck_claim_page(f, p);
		if (r < 0) {
			printf("ERROR: salvage: page %llu is needed but free in the bitmap, and "
			       "cannot be marked in use: %s\n",
			       (unsigned long long)p, strerror(-r));
			return r;
		}
	}
	return 0;
}

static int claim_needed(struct salvage *s)
{
	struct fsck *f = s->f;
	uint64_t last = BM_PID_NONE;
	int r = 0;

	for (size_t i = 0; i < s->n && r == 0; i++) {
		const struct srec *x = &s->recs[i];
		if (x->drop)
			continue;
		if (x->leaf != last)
			r = claim_range(f, x->leaf, 1);
		last = x->leaf;
		if (r == 0 && is_rec(x, FS_REC_EXTENT) && x->vlen == FS_EXTENT_LEN) {
			uint64_t first = fs_get_le64(x->val), n = fs_get_le32(x->val + 8);
			/* Out of the data area: the check reports it, nothing to keep. */
			if (first >= f->first_data && first < f->page_count &&
			    n <= f->page_count - first)
				r = claim_range(f, first, n);
		}
	}
	return r;
}

static int insert_all(struct salvage *s, struct bt *t)
{
	struct bm *bm = s->f->bm;
	size_t i = 0;
	int r = 0;

	while (i < s->n && r == 0) {
		bm_txn_begin(bm);
		for (unsigned k = 0; k < BUILD_BATCH && i < s->n && r == 0; i++) {
			const struct srec *x = &s->recs[i];
			if (x->drop)
				continue;
			r = bt_insert(t, x->key, x->klen, x->val, x->vlen);
			k++;
		}
		bm_txn_end(bm);
	}
	return r;
}

/* The directories whose inode record is gone, as the filesystem makes
 * them (fs_inode_insert), owned by the root's owner. */
static int insert_remade(struct salvage *s, struct bt *t)
{
	struct fs *fs = calloc(1, sizeof(*fs));
	struct fs_inode root;
	int r = 0;

	if (!fs)
		return -ENOMEM;
	fs->bm = s->f->bm;
	fs->tree = *t;
	bool have_root = fs_inode_get(fs, FS_INO_ROOT, &root) == 0;
	for (size_t i = 0; i < s->nremade && r == 0; i++) {
		const struct remade *m = &s->remade[i];
		struct fs_inode in = {0};
		in.ino = m->ino;
		in.mode = S_IFDIR | (m->ino == FS_INO_ROOT ? 0755 : 0700);
		in.uid = have_root ? root.uid : 0;
		in.gid = have_root ? root.gid : 0;
		in.nlink = 2 + (uint32_t)m->subdirs;
		in.size = m->entries;
		in.parent = FS_INO_ROOT;
		fs_now(&in.atime);
		in.mtime = in.ctime = in.btime = in.atime;
		bm_txn_begin(fs->bm);
		r = fs_inode_insert(fs, &in);
		bm_txn_end(fs->bm);
		if (m->ino == FS_INO_ROOT && r == 0) {
			root = in;
			have_root = true;
		}
	}
	free(fs);
	return r;
}

static int build(struct salvage *s)
{
	struct fsck *f = s->f;
	uint64_t root;
	int r = claim_needed(s);
	if (r < 0)
		return r;
	bm_txn_begin(f->bm);
	r = bt_create(f->bm, &root);
	bm_txn_end(f->bm);
	if (r < 0)
		goto fail_create;
	struct bt t = bt_open(f->bm, root);
	/* The root first: the others take their owner from it. */
	for (size_t i = 0; i < s->nremade && r == 0; i++) {
		if (s->remade[i].ino == FS_INO_ROOT && i != 0) {
			struct remade x = s->remade[0];
			s->remade[0] = s->remade[i];
			s->remade[i] = x;
		}
	}
	r = insert_all(s, &t);
	if (r == 0)
		r = insert_remade(s, &t);
	if (r < 0) {
		/* The old root stays; the half-built tree goes. */
		bm_txn_begin(f->bm);
		bt_destroy(f->bm, root);
		bm_txn_end(f->bm);
		goto fail_create;
	}
	bm_sb_set(f->bm, FS_SB_ROOT, root);
	printf("FIXED: tree: rebuilt from %zu records (root page %llu, was %llu); the old "
	       "tree's pages are freed as leaked\n",
	       s->n, (unsigned long long)root, (unsigned long long)f->root);
	f->root = root;
	return 0;
fail_create:
	printf("ERROR: salvage: building the new tree failed: %s (the image keeps its damaged "
	       "tree%s)\n",
	       strerror(-r),
	       r == -ENOSPC ? "; the rebuild needs as many free pages as the tree has" : "");
	return r;
}

/* ------------------------------------------------------------------ */

static void salvage_free(struct salvage *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->recs[i].key);
	free(s->recs);
	free(s->seen);
	free(s->names);
	free(s->inos);
	free(s->remade);
}

int fsck_salvage(struct fsck *f, enum fsck_salvage_mode mode)
{
	struct salvage s = {.f = f, .mode = mode};
	int r = -ENOMEM;

	s.seen = calloc(f->page_count / 8 + 1, 1);
	if (!s.seen)
		goto out;
	r = walk(&s, f->root, 0);
	if (r == 0)
		r = scan_pages(&s);
	if (r == 0) {
		drop_data_lookalikes(&s);
		r = s.oom;
	}
	if (r < 0)
		goto out;
	merge(&s);
	bool inodes = false;
	for (size_t i = 0; i < s.n && !inodes; i++)
		inodes = is_rec(&s.recs[i], FS_REC_INODE);
	if (!inodes) {
		/* Nothing to gain: the image stays as it is for other tools. */
		if (mode != SALVAGE_PROBE)
			printf("ERROR: salvage: no inode record can be read (%llu tree page%s "
			       "unreadable): the tree cannot be rebuilt\n",
			       (unsigned long long)s.bad_pages, fsck_s(s.bad_pages));
		r = 0;
		goto out;
	}
	judge(&s);
	r = s.oom;
	if (r < 0)
		goto out;
	if (mode == SALVAGE_PROBE) {
		r = 1;
		goto out;
	}
	if (s.printed > LOST_LINES_MAX)
		printf("lost: ... and %llu more\n",
		       (unsigned long long)(s.printed - LOST_LINES_MAX));
	printf("salvage: %s the tree from %zu records: %llu leaves reached from the root, %llu "
	       "found by scanning the image, %llu tree pages unreadable\n",
	       mode == SALVAGE_BUILD ? "rebuilding" : "would rebuild", s.n,
	       (unsigned long long)s.reached_leaves, (unsigned long long)s.scanned_leaves,
	       (unsigned long long)s.bad_pages);
	if (s.dups)
		printf("salvage: %llu keys found twice (%llu of them in a leaf reached from the "
		       "root: that copy kept)\n",
		       (unsigned long long)s.dups, (unsigned long long)s.dups_reached);
	if (s.data_lookalikes)
		printf("salvage: %llu pages that look like leaves are file data (an extent claims "
		       "them): not used\n",
		       (unsigned long long)s.data_lookalikes);
	printf("salvage: %llu path%s lost, %llu value%s lost, %llu inode%s without a name (to "
	       "/lost+found)\n",
	       (unsigned long long)s.lost_paths, fsck_s(s.lost_paths),
	       (unsigned long long)s.lost_values, fsck_s(s.lost_values),
	       (unsigned long long)s.to_lf, fsck_s(s.to_lf));
	if (mode == SALVAGE_PLAN) {
		r = 1;
		goto out;
	}
	r = build(&s);
	if (r == 0)
		r = 1;
out:
	if (r == -ENOMEM)
		fprintf(stderr, "fsck.virtuscale: salvage: out of memory\n");
	salvage_free(&s);
	return r;
}
