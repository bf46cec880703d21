/*
 * fsck_check.c: the checking passes of fsck.virtuscale.
 *
 *   1. checksums  every allocated data page is loaded through the pool, which
 *                 verifies it against the checksum table; failures are noted
 *                 per page and reported once it is known what the page is
 *   2. tree       every page reachable from the tree's root (fsck_tree.c),
 *                 then bt_check as a second opinion
 *   3. records    one ascending scan of every record: dirents against inodes,
 *                 extents (bounds, bitmap, overlap), inline data, records of
 *                 missing inodes, the orphan list
 *   4. links      link counts, directory sizes and parents, unnamed inodes
 *   5. space      allocated pages against reachable ones (page by page), the
 *                 superblock's free count, the inode counters
 *
 * A later pass still runs when an earlier one found damage, so one run
 * reports as much as it can. Every problem is recorded with the repair that
 * fixes it (fsck.h); fsck_can_fix decides whether that repair is safe in the
 * light of everything else found: nothing is repaired unless the tree could
 * be read whole (when it cannot, the one repair is FIX_SALVAGE: a new tree,
 * fsck_salvage.c, checked again before anything else), and leaked pages
 * are freed only when every extent was understood (otherwise "unreachable"
 * might be wrong).
 */
#include "tools/fsck.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/btree.h"
#include "engine/btree_node.h"
#include "fs/keys.h"

/* A data page of a file that failed its checksum, reported after the scan
 * (when paths are known). */
struct bad_data {
	uint64_t ino, off, pid;
};
static struct bad_data *bad_data;
static size_t nbad_data, cap_bad_data;

int fsck_grow(void **arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 256;
	void *p = realloc(*arr, nc * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = nc;
	return 0;
}

void fsck_problem(struct fsck *f, enum fsck_sev sev, enum fsck_fix fix, uint64_t a, uint64_t b,
		  uint64_t c, uint64_t d, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	if (fsck_grow((void **)&f->probs, &f->cap_probs, f->nprobs, sizeof(*f->probs)) < 0) {
		f->oom = -ENOMEM;
		return;
	}
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		f->oom = -ENOMEM;
		return;
	}
	f->probs[f->nprobs++] = (struct fsck_problem){sev, fix, a, b, c, d, 0, msg};
}

/* Name the last problem by inode @ino (its path is prefixed later). */
static void named(struct fsck *f, uint64_t ino)
{
	if (f->nprobs && !f->oom)
		f->probs[f->nprobs - 1].name_ino = ino;
}

/* Prefix the messages of named problems with the inode's name, now that
 * every entry has been seen. */
static void name_problems(struct fsck *f)
{
	for (size_t i = 0; i < f->nprobs; i++) {
		struct fsck_problem *p = &f->probs[i];
		char *msg;
		if (!p->name_ino)
			continue;
		if (asprintf(&msg, "%s: %s", fsck_ino_name(f, p->name_ino), p->msg) < 0) {
			f->oom = -ENOMEM;
			return;
		}
		free(p->msg);
		p->msg = msg;
		p->name_ino = 0;
	}
}

#define ERR(f, fix, a, b, c, d, ...) fsck_problem(f, SEV_ERROR, fix, a, b, c, d, __VA_ARGS__)
#define BAD(f, ...)		     fsck_problem(f, SEV_ERROR, FIX_NONE, 0, 0, 0, 0, __VA_ARGS__)
/* A problem of inode @ino, which the message names (see named). */
#define IBAD(f, ino, ...)                                                                          \
	do {                                                                                       \
		BAD(f, __VA_ARGS__);                                                               \
		named(f, ino);                                                                     \
	} while (0)

bool fsck_can_fix(const struct fsck *f, const struct fsck_problem *p)
{
	if (p->fix == FIX_NONE || p->sev == SEV_WARN)
		return false;
	if (p->fix == FIX_SALVAGE)
		return !f->tree_ok || !f->scan_ok;
	if (fsck_fix_is_page(p->fix))
		return true; /* each page checked by other means first */
	/* Without the whole tree nothing is known for sure: a record that
	 * looks dangling may be named from the part that could not be read. */
	if (!f->tree_ok || !f->scan_ok)
		return false;
	if (fsck_fix_is_record(p->fix) && !f->records_ok)
		return false;
	if (p->fix == FIX_FREE_LEAKS && !f->space_exact)
		return false;
	return true;
}

static void progress(struct fsck *f, const char *what, uint64_t done, uint64_t total,
		     unsigned *last)
{
	unsigned pct;
	if (!f->progress || total == 0)
		return;
	pct = (unsigned)(done * 100 / total);
	if (pct >= *last + 5) {
		*last = pct - pct % 5;
		fprintf(stderr, "checking %s: %u%%\n", what, *last);
	}
}

/* ------------------------------------------------------------------ */
/* Names for messages                                                 */

/* By child, then by directory and slot: a file with several names is
 * named in messages by the same one every time. */
static int cmp_child(const void *a, const void *b, void *ctx)
{
	const struct fsck *f = ctx;
	const struct fsck_dirent *x = &f->dirents[*(const uint32_t *)a];
	const struct fsck_dirent *y = &f->dirents[*(const uint32_t *)b];
	if (x->child != y->child)
		return x->child < y->child ? -1 : 1;
	if (x->parent != y->parent)
		return x->parent < y->parent ? -1 : 1;
	return (x->slot > y->slot) - (x->slot < y->slot);
}

static const struct fsck_dirent *entry_naming(struct fsck *f, uint64_t ino)
{
	size_t lo = 0, hi = f->by_child ? f->ndirents : 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (f->dirents[f->by_child[mid]].child < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < (f->by_child ? f->ndirents : 0) && f->dirents[f->by_child[lo]].child == ino)
		return &f->dirents[f->by_child[lo]];
	return NULL;
}

const char *fsck_ino_name(struct fsck *f, uint64_t ino)
{
	static char bufs[4][640];
	static unsigned next;
	char *b = bufs[next++ % 4];
	const char *comp[32];
	unsigned n = 0;
	uint64_t cur = ino;

	while (cur != FS_INO_ROOT && n < 32) {
		const struct fsck_dirent *e = entry_naming(f, cur);
		if (!e)
			break;
		comp[n++] = e->name;
		cur = e->parent;
	}
	if (cur != FS_INO_ROOT) {
		snprintf(b, 640, "inode %llu", (unsigned long long)ino);
		return b;
	}
	char path[512];
	size_t len = 0;
	path[0] = 0;
	for (unsigned i = n; i > 0 && len < sizeof(path) - 1; i--) {
		int w = snprintf(path + len, sizeof(path) - len, "/%s", comp[i - 1]);
		len += w > 0 ? (size_t)w : 0;
	}
	if (len >= sizeof(path))
		len = sizeof(path) - 1;
	snprintf(b, 640, "inode %llu (%s)", (unsigned long long)ino, len ? path : "/");
	return b;
}

/* ------------------------------------------------------------------ */
/* 1. checksums                                                       */

static int fix_one(struct bm_op *op, void *arg)
{
	struct bm_guard g;
	bm_fix_s(op, *(uint64_t *)arg, &g);
	bm_unfix(op, &g);
	return 0;
}

int fsck_lost_checksums(struct fsck *f, bool adopt, uint64_t *ret_nodes, uint64_t *ret_other)
{
	uint8_t *page = malloc(BM_PAGE_SIZE);
	char why[128];
	int r = 0;

	*ret_nodes = *ret_other = 0;
	if (!page)
		return -ENOMEM;
	for (uint64_t pid = f->first_data; pid < f->page_count && r == 0; pid++) {
		if (!bm_csum_unknown(f->bm, pid) || !bm_is_allocated(f->bm, pid))
			continue;
		if (bm_read_raw(f->bm, pid, page) < 0 || bt_node_verify(page, why, sizeof(why)) < 0) {
			++*ret_other;
			continue;
		}
		if (adopt)
			r = bm_csum_adopt(f->bm, pid, page);
		*ret_nodes += r == 0;
	}
	free(page);
	return r;
}

/* The checksum table's own damage (engine/bm_meta.c: sealed pages, two
 * copies), the nodes and their copies (engine/bm_dup.c), and the pages
 * whose checksums a table page damaged in both copies took with it: those
 * that hold sound tree nodes can get them back (bm_csum_adopt), the others
 * keep failing, reported with their files by check_checksums. */
static void check_copies(struct fsck *f)
{
	uint64_t fixed = 0, lost = bm_csum_table_damage(f->bm, &fixed);
	if (fixed)
		ERR(f, FIX_CSTABLE, fixed, 0, 0, 0,
		    "checksum table: %llu page%s damaged, read from the table's copy",
		    (unsigned long long)fixed, fsck_s(fixed));
	int64_t copy_bad = bm_csum_table_scrub(f->bm);
	if (copy_bad < 0)
		BAD(f, "checksum table: its copy cannot be read: %s", strerror((int)-copy_bad));
	else if (copy_bad > 0)
		ERR(f, FIX_CSTABLE, (uint64_t)copy_bad, 0, 0, 0,
		    "checksum table: %lld page%s of its copy damaged or out of date",
		    (long long)copy_bad, fsck_s((uint64_t)copy_bad));
	/* (also after a run that wrote the table again: the lost entries
	 * stay marked lost in it) */
	uint64_t nodes = 0, other = 0;
	if (fsck_lost_checksums(f, false, &nodes, &other) < 0)
		f->oom = -ENOMEM;
	if (lost)
		BAD(f, "checksum table: %llu page%s damaged in both copies: the checksums of "
		       "%llu allocated page%s are lost",
		    (unsigned long long)lost, fsck_s(lost), (unsigned long long)(nodes + other),
		    fsck_s(nodes + other));
	if (nodes)
		ERR(f, FIX_CSUM_ADOPT, nodes, 0, 0, 0,
		    "%llu page%s whose checksum%s lost hold%s tree nodes that hold together: "
		    "their checksums can be made again",
		    (unsigned long long)nodes, fsck_s(nodes), nodes == 1 ? " was" : "s were",
		    nodes == 1 ? "s" : "");
	if (lost && other)
		BAD(f, "%llu of them are not tree nodes (file data, overflow values): they "
		       "cannot be verified and keep failing to read",
		    (unsigned long long)other);
	if (bm_metadata_dup(f->bm)) {
		int64_t bad = bm_dup_scrub(f->bm, false, &fixed);
		if (bad < 0)
			BAD(f, "tree nodes: cannot compare them with their copies: %s",
			    strerror((int)-bad));
		else if (bad > 0)
			ERR(f, FIX_COPIES, (uint64_t)bad, 0, 0, 0,
			    "%lld tree node%s differ%s from %s cop%s (one of each pair damaged)",
			    (long long)bad, fsck_s((uint64_t)bad), bad == 1 ? "s" : "",
			    bad == 1 ? "its" : "their", bad == 1 ? "y" : "ies");
	}
}

static void check_checksums(struct fsck *f)
{
	unsigned last = 0;
	uint64_t n = f->page_count - f->first_data;

	for (uint64_t pid = 0; pid < f->page_count; pid++) {
		if (pid >= f->first_data)
			progress(f, "checksums", pid - f->first_data, n, &last);
		if (!bm_is_allocated(f->bm, pid))
			continue;
		f->allocated++;
		if (pid < f->first_data)
			continue;
		f->allocated_data++;
		/* The copy of a node is checked against the node's checksum
		 * with the pair (check_copies), never loaded itself. */
		if (bm_is_copy(f->bm, pid))
			continue;
		int r = bm_run(f->bm, fix_one, &pid);
		if (r == -EUCLEAN) {
			f->csum_errors++;
			fsck_map_set(f->bad_map, pid);
		} else if (r < 0) {
			BAD(f, "page %llu: cannot be read: %s", (unsigned long long)pid,
			    strerror(-r));
		}
		/* A big image would otherwise fill the pool with pages that
		 * are never looked at again; eviction copes, but dropping
		 * them in bulk now and then is cheaper. */
		if ((pid & 0xffff) == 0xffff)
			bm_evict_all(f->bm, false);
	}
}

/* ------------------------------------------------------------------ */
/* 2. tree: bt_check as a second opinion on fsck_walk_tree            */

static void check_tree(struct fsck *f)
{
	struct bt t = bt_open(f->bm, f->root);
	struct bt_info info = {0};

	if (f->progress)
		fprintf(stderr, "checking tree\n");
	int r = fsck_walk_tree(f);
	if (r < 0)
		return;
	if (!f->tree_ok)
		return;
	/* bt_check insists on every page being allocated; the walk has
	 * reported those that are not (repairable), so ask it only when the
	 * bitmap agrees. */
	for (size_t i = 0; i < f->nprobs; i++)
		if (f->probs[i].fix == FIX_MARK_USED)
			return;
	r = bt_check(&t, &info);
	if (r < 0) {
		f->tree_ok = false;
		BAD(f,
		    "tree at page %llu: the engine's check failed: %s (run with -v for its "
		    "message)",
		    (unsigned long long)f->root, strerror(-r));
	}
}

/* ------------------------------------------------------------------ */
/* 3. records                                                         */

static void note_bad_data(struct fsck *f, uint64_t ino, uint64_t off, uint64_t pid)
{
	if (fsck_grow((void **)&bad_data, &cap_bad_data, nbad_data, sizeof(*bad_data)) < 0) {
		f->oom = -ENOMEM;
		return;
	}
	bad_data[nbad_data++] = (struct bad_data){ino, off, pid};
}

static void check_extent(struct fsck *f, const uint8_t *k, const uint8_t *v, unsigned vlen)
{
	struct fsck_inode *in = f->cur;
	uint64_t ino = in->ino, off = fs_key_off(k);
	unsigned long long uino = (unsigned long long)ino, uoff = (unsigned long long)off;

	if (vlen != FS_EXTENT_LEN) {
		IBAD(f, ino, "extent at %llu: value of %u bytes, expected %u", uoff, vlen,
		     FS_EXTENT_LEN);
		in->bad_extents = true;
		f->space_exact = false; /* which pages it meant is unknown */
		return;
	}
	uint64_t first = fs_get_le64(v);
	uint32_t n = fs_get_le32(v + 8);
	if (!S_ISREG(in->mode))
		IBAD(f, ino, "extent at %llu on an inode that is not a regular file", uoff);
	if (off % BM_PAGE_SIZE)
		IBAD(f, ino, "extent at %llu: offset not page aligned", uoff);
	if (n == 0 || n > FS_EXTENT_MAX_PAGES) {
		IBAD(f, ino, "extent at %llu: %u pages", uoff, n);
		in->bad_extents = true;
		f->space_exact = false;
		return;
	}
	if (off < f->ext_end)
		IBAD(f, ino, "extent at %llu overlaps the previous one (ends at %llu)", uoff,
		     (unsigned long long)f->ext_end);
	f->ext_end = off + (uint64_t)n * BM_PAGE_SIZE;
	in->ext_pages += n;

	/* Fallocate with KEEP_SIZE maps pages past the end of file, so pages
	 * beyond the size are legal, just worth a note. */
	uint64_t size_pages = (in->size + BM_PAGE_SIZE - 1) / BM_PAGE_SIZE;
	if (off / BM_PAGE_SIZE + n > size_pages && f->verbose)
		fsck_problem(f, SEV_WARN, FIX_NONE, 0, 0, 0, 0,
			     "inode %llu: extent at %llu (%u pages) reaches past the size %llu "
			     "(preallocated with KEEP_SIZE?)",
			     uino, uoff, n, (unsigned long long)in->size);

	if (first < f->first_data || first >= f->page_count || n > f->page_count - first) {
		/* Pages outside the data area cannot be anyone else's: the
		 * page maps stay exact, only this file is damaged. */
		IBAD(f, ino, "extent at %llu: pages %llu+%u outside the data area [%llu, %llu)",
		     uoff, (unsigned long long)first, n, (unsigned long long)f->first_data,
		     (unsigned long long)f->page_count);
		in->bad_extents = true;
		return;
	}
	uint64_t unalloc = 0, dup = 0, tree = 0, first_bad = 0;
	for (uint64_t p = first; p < first + n; p++) {
		if (fsck_map_get(f->bad_map, p))
			note_bad_data(f, ino, off + (p - first) * BM_PAGE_SIZE, p);
		if (fsck_map_get(f->tree_map, p)) {
			tree++;
			fsck_map_set(f->shared_map, p);
		} else if (fsck_map_get(f->ext_map, p)) {
			dup++;
			fsck_map_set(f->shared_map, p);
		} else {
			fsck_map_set(f->ext_map, p);
			f->ext_pages++;
			if (!bm_is_allocated(f->bm, p) && unalloc++ == 0)
				first_bad = p;
		}
	}
	if (unalloc) {
		ERR(f, FIX_MARK_USED, first, n, 0, 0,
		    "extent at %llu: %llu of its pages %llu+%u %s free in the bitmap (first %llu)",
		    uoff, (unsigned long long)unalloc, (unsigned long long)first, n,
		    unalloc == 1 ? "is" : "are", (unsigned long long)first_bad);
		named(f, ino);
	}
	if (dup || tree)
		IBAD(f, ino,
		     "extent at %llu: of its pages %llu+%u, %llu belong to another extent, %llu "
		     "to the tree",
		     uoff, (unsigned long long)first, n, (unsigned long long)dup,
		     (unsigned long long)tree);
}

static void take_dirent(struct fsck *f, const uint8_t *k, const uint8_t *v, unsigned vlen)
{
	uint64_t parent = fs_key_obj(k), slot = fs_key_off(k);

	if (vlen < 1) {
		BAD(f, "dir %llu slot %llu: empty dirent", (unsigned long long)parent,
		    (unsigned long long)slot);
		return;
	}
	if (v[0] == 0)
		return; /* tombstone */
	unsigned nl = v[0];
	if (vlen != 1 + nl + FS_DIRENT_PAYLOAD) {
		BAD(f, "dir %llu slot %llu: dirent of %u bytes for a %u-byte name",
		    (unsigned long long)parent, (unsigned long long)slot, vlen, nl);
		return;
	}
	if (!S_ISDIR(f->cur->mode))
		IBAD(f, parent, "has a directory entry (slot %llu) but is not a directory",
		     (unsigned long long)slot);
	if (fsck_grow((void **)&f->dirents, &f->cap_dirents, f->ndirents, sizeof(*f->dirents)) < 0) {
		f->oom = -ENOMEM;
		return;
	}
	struct fsck_dirent *d = &f->dirents[f->ndirents];
	d->name = strndup((const char *)v + 1, nl);
	if (!d->name) {
		f->oom = -ENOMEM;
		return;
	}
	d->parent = parent;
	d->slot = slot;
	d->child = fs_get_le64(v + 1 + nl);
	d->type = v[1 + nl + 8];
	f->ndirents++;
	f->cur->entries++;
}

static void take_inode(struct fsck *f, uint64_t ino, const uint8_t *v, unsigned vlen)
{
	f->cur = NULL;
	f->cur_obj = ino;
	f->cur_seen = true;
	f->ext_end = 0;
	if (ino > f->max_ino)
		f->max_ino = ino;
	if (fsck_grow((void **)&f->inodes, &f->cap_inodes, f->ninodes, sizeof(*f->inodes)) < 0) {
		f->oom = -ENOMEM;
		return;
	}
	struct fsck_inode *in = &f->inodes[f->ninodes++];
	memset(in, 0, sizeof(*in));
	in->ino = ino;
	if (vlen != FS_INODE_LEN) {
		/* Its other records and the entries naming it are left alone:
		 * they are not stray, the inode record is broken. */
		BAD(f, "inode %llu: record of %u bytes, expected %u", (unsigned long long)ino, vlen,
		    FS_INODE_LEN);
		in->bad = true;
		f->records_ok = false;
		return;
	}
	in->mode = fs_get_le32(v);
	in->nlink = fs_get_le32(v + 12);
	in->size = fs_get_le64(v + 16);
	in->pages = fs_get_le64(v + 24);
	in->parent = fs_get_le64(v + 32);
	in->flags = fs_get_le32(v + 96);
	f->cur = in;
	if (ino < FS_INO_FIRST && ino != FS_INO_ROOT)
		BAD(f, "inode %llu: reserved inode number in use", (unsigned long long)ino);
}

/* The records of a missing object are reported once per object. */
static void stray_flush(struct fsck *f)
{
	if (f->stray_records == 0)
		return;
	static const struct {
		uint8_t type;
		const char *name;
	} names[] = {{FS_REC_XATTR, "xattr"},
		     {FS_REC_DIRENT, "entry"},
		     {FS_REC_SYMLINK, "symlink"},
		     {FS_REC_INLINE, "inline data"},
		     {FS_REC_EXTENT, "extent"}};
	char types[80] = "";
	size_t len = 0;
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(f->stray_types & (1u << (names[i].type >> 4))))
			continue;
		int w = snprintf(types + len, sizeof(types) - len, "%s%s", len ? ", " : "",
				 names[i].name);
		len += w > 0 ? (size_t)w : 0;
	}
	ERR(f, FIX_STRAY, f->stray_obj, 0, 0, 0,
	    "inode %llu does not exist, but %llu record%s of it %s (%s)",
	    (unsigned long long)f->stray_obj, (unsigned long long)f->stray_records,
	    fsck_s(f->stray_records), f->stray_records == 1 ? "does" : "do",
	    len ? types : "unknown types");
	f->stray_records = 0;
	f->stray_types = 0;
}

static bool scan_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct fsck *f = ctx;
	const uint8_t *k = key, *v = val;

	if (f->oom)
		return false;
	if (klen != FS_KEY_LEN && klen != FS_KEY_CHUNK_LEN) {
		BAD(f, "record with a %u-byte key", klen);
		return true;
	}
	uint64_t obj = fs_key_obj(k), off = fs_key_off(k);
	uint8_t type = k[8];
	unsigned long long uobj = (unsigned long long)obj;

	if (f->stray_records && obj != f->stray_obj)
		stray_flush(f);
	if (obj == 0) {
		if (type != FS_REC_ORPHAN || klen != FS_KEY_LEN) {
			BAD(f, "filesystem record of unknown type 0x%02x", type);
			return true;
		}
		if (fsck_grow((void **)&f->orphans, &f->cap_orphans, f->norphans, sizeof(*f->orphans)) <
		    0) {
			f->oom = -ENOMEM;
			return false;
		}
		f->orphans[f->norphans++] = off;
		return true;
	}
	if (type == FS_REC_INODE) {
		if (klen != FS_KEY_LEN || off != 0)
			BAD(f, "inode %llu: inode record with a bad key", uobj);
		take_inode(f, obj, v, vlen);
		return true;
	}
	if (!f->cur_seen || f->cur_obj != obj) {
		f->stray_obj = obj;
		f->stray_records++;
		f->stray_types |= 1u << ((type >> 4) & 15);
		return true;
	}
	if (!f->cur)
		return true; /* its inode record is malformed (reported) */
	switch (type) {
	case FS_REC_DIRENT:
		take_dirent(f, k, v, vlen);
		break;
	case FS_REC_EXTENT:
		check_extent(f, k, v, vlen);
		break;
	case FS_REC_INLINE:
		f->cur->has_inline = true;
		if (vlen > FS_INLINE_MAX)
			IBAD(f, obj, "inline data of %u bytes (max %u)", vlen, FS_INLINE_MAX);
		if (!S_ISREG(f->cur->mode))
			IBAD(f, obj, "inline data on a non-regular file");
		break;
	case FS_REC_SYMLINK:
		if (!S_ISLNK(f->cur->mode))
			IBAD(f, obj, "symlink target on a non-symlink");
		break;
	case FS_REC_XATTR:
		break;
	default:
		IBAD(f, obj, "record of unknown type 0x%02x", type);
	}
	return true;
}

static int cmp_ino(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = ((const struct fsck_inode *)b)->ino;
	return x < y ? -1 : x > y;
}

struct fsck_inode *fsck_find_inode(struct fsck *f, uint64_t ino)
{
	if (f->ninodes == 0) /* bsearch wants an array, even an empty one */
		return NULL;
	return bsearch(&ino, f->inodes, f->ninodes, sizeof(*f->inodes), cmp_ino);
}

/* ------------------------------------------------------------------ */
/* 4. links                                                           */

static void check_dirents(struct fsck *f)
{
	for (size_t i = 0; i < f->ndirents; i++) {
		struct fsck_dirent *d = &f->dirents[i];
		struct fsck_inode *in = fsck_find_inode(f, d->child);
		struct fsck_inode *p = fsck_find_inode(f, d->parent);
		if (!in) {
			ERR(f, FIX_DIRENT_REMOVE, d->parent, d->slot, d->child, d->type,
			    "%s: entry '%s' names inode %llu, which does not exist",
			    fsck_ino_name(f, d->parent), d->name, (unsigned long long)d->child);
			if (p) {
				p->dangling++;
				p->dangling_dirs += d->type == (S_IFDIR >> 12);
			}
			continue;
		}
		if (in->bad)
			continue;
		if (in->refs++ == 0)
			in->first_dir = d->parent;
		unsigned want = (in->mode & S_IFMT) >> 12;
		if (d->type != want)
			ERR(f, FIX_DIRENT_TYPE, d->parent, d->slot, want, 0,
			    "%s: entry '%s' has type %u, but inode %llu has mode 0%o",
			    fsck_ino_name(f, d->parent), d->name, d->type,
			    (unsigned long long)d->child, in->mode);
		if (S_ISDIR(in->mode) && p)
			p->subdirs++;
	}
}

static void check_dir(struct fsck *f, struct fsck_inode *in)
{
	uint64_t ino = in->ino;

	/* Entries naming nothing are removed together with their count in
	 * the directory (as rmdir/unlink would), so the counts are checked
	 * against what the directory holds now and fixed to what it will
	 * hold after. */
	if (ino != FS_INO_ROOT && in->refs > 1)
		BAD(f, "directory %s: named by %u entries", fsck_ino_name(f, ino), in->refs);
	if (ino != FS_INO_ROOT && in->refs == 1 && in->parent != in->first_dir)
		ERR(f, FIX_PARENT, ino, in->first_dir, 0, 0,
		    "directory %s: parent field says %llu, but it is an entry of %llu",
		    fsck_ino_name(f, ino), (unsigned long long)in->parent,
		    (unsigned long long)in->first_dir);
	uint32_t expect = 2 + in->subdirs + in->dangling_dirs;
	if (in->nlink != expect)
		ERR(f, FIX_NLINK, ino, 2 + in->subdirs, 0, 0,
		    "directory %s: nlink %u, expected %u (2 + %u subdirectories)",
		    fsck_ino_name(f, ino), in->nlink, expect, in->subdirs + in->dangling_dirs);
	if (in->size != in->entries)
		ERR(f, FIX_DIRSIZE, ino, in->entries - in->dangling, 0, 0,
		    "directory %s: size %llu, but it holds %llu entries", fsck_ino_name(f, ino),
		    (unsigned long long)in->size, (unsigned long long)in->entries);
}

static void check_links(struct fsck *f)
{
	for (size_t i = 0; i < f->norphans; i++) {
		struct fsck_inode *in = fsck_find_inode(f, f->orphans[i]);
		if (!in)
			ERR(f, FIX_ORPHAN_REC, f->orphans[i], 0, 0, 0,
			    "orphan record for inode %llu, which does not exist",
			    (unsigned long long)f->orphans[i]);
		else
			in->orphan = true;
	}
	f->by_child = malloc((f->ndirents ? f->ndirents : 1) * sizeof(*f->by_child));
	if (!f->by_child) {
		f->oom = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < f->ndirents; i++)
		f->by_child[i] = (uint32_t)i;
	qsort_r(f->by_child, f->ndirents, sizeof(*f->by_child), cmp_child, f);

	check_dirents(f);

	struct fsck_inode *root = fsck_find_inode(f, FS_INO_ROOT);
	if (!root) {
		BAD(f, "root inode %d missing", FS_INO_ROOT);
		f->records_ok = false;
	} else if (!root->bad && !S_ISDIR(root->mode)) {
		BAD(f, "root inode is not a directory (mode 0%o)", root->mode);
		f->records_ok = false;
	}

	for (size_t i = 0; i < f->ninodes; i++) {
		struct fsck_inode *in = &f->inodes[i];
		uint64_t ino = in->ino;
		if (in->bad)
			continue;
		if (in->orphan && (in->refs > 0 || in->nlink > 0)) {
			ERR(f, FIX_ORPHAN_REC, ino, 0, 0, 0,
			    "%s: on the orphan list, but nlink %u and named by %u entries",
			    fsck_ino_name(f, ino), in->nlink, in->refs);
			in->orphan = false;
		}
		if (ino != FS_INO_ROOT && in->refs == 0) {
			if (in->nlink == 0) {
				if (in->orphan)
					fsck_problem(f, SEV_NOTE, FIX_FREE_INODE, ino, 0, 0, 0,
						     "inode %llu: unlinked while open when the "
						     "filesystem stopped (on the orphan list)",
						     (unsigned long long)ino);
				else
					ERR(f, FIX_FREE_INODE, ino, 0, 0, 0,
					    "inode %llu (mode 0%o): nlink 0 and named by no "
					    "entry, but not on the orphan list",
					    (unsigned long long)ino, in->mode);
				continue;
			}
			ERR(f, FIX_RECONNECT, ino, 0, 0, 0,
			    "inode %llu (mode 0%o, nlink %u): named by no directory entry",
			    (unsigned long long)ino, in->mode, in->nlink);
		}
		if (S_ISDIR(in->mode))
			check_dir(f, in);
		else if (in->refs > 0 && in->nlink != in->refs)
			ERR(f, FIX_NLINK, ino, in->refs, 0, 0, "%s: nlink %u, but %u %s it",
			    fsck_ino_name(f, ino), in->nlink, in->refs,
			    in->refs == 1 ? "entry names" : "entries name");
		if (S_ISREG(in->mode)) {
			const char *name = fsck_ino_name(f, ino);
			if ((in->flags & FS_INODE_INLINE) && !in->has_inline && in->size > 0)
				BAD(f, "%s: flagged inline but has no inline record", name);
			if (!(in->flags & FS_INODE_INLINE) && in->has_inline)
				BAD(f, "%s: inline record without the inline flag", name);
			if (in->has_inline && in->ext_pages)
				BAD(f, "%s: both inline data and extents", name);
			if (in->pages != in->ext_pages)
				fsck_problem(f, SEV_ERROR, in->bad_extents ? FIX_NONE : FIX_PAGES,
					     ino, in->ext_pages, 0, 0,
					     "%s: records %llu data pages, its extents hold %llu",
					     name, (unsigned long long)in->pages,
					     (unsigned long long)in->ext_pages);
		}
	}
	for (size_t i = 0; i < nbad_data; i++)
		BAD(f,
		    "page %llu: %s (data of %s at file offset %llu; restore that file from a "
		    "copy)",
		    (unsigned long long)bad_data[i].pid,
		    bm_csum_unknown(f->bm, bad_data[i].pid)
			    ? "cannot be verified, its checksum lost with the checksum table"
			    : "checksum mismatch",
		    fsck_ino_name(f, bad_data[i].ino), (unsigned long long)bad_data[i].off);
}

static void check_records(struct fsck *f)
{
	struct bt t = bt_open(f->bm, f->root);

	if (f->progress)
		fprintf(stderr, "checking records\n");
	int r = bt_scan_asc(&t, NULL, 0, scan_fn, f);
	if (f->oom)
		return;
	stray_flush(f);
	if (r < 0) {
		name_problems(f);
		BAD(f, "record scan stopped: %s; link counts not checked", strerror(-r));
		return;
	}
	f->scan_ok = true;
	check_links(f);
	name_problems(f);
}

/* ------------------------------------------------------------------ */
/* 5. space                                                           */

static void check_space(struct fsck *f)
{
	uint64_t leaked = 0, runs = 0, bad = 0;
	char list[200];
	size_t len = 0;

	list[0] = 0;
	if (f->tree_ok && f->scan_ok) {
		for (uint64_t p = f->first_data; p < f->page_count; p++) {
			if (!bm_is_allocated(f->bm, p) || fsck_map_get(f->tree_map, p) ||
			    fsck_map_get(f->ext_map, p))
				continue;
			uint64_t q = p;
			while (q + 1 < f->page_count && bm_is_allocated(f->bm, q + 1) &&
			       !fsck_map_get(f->tree_map, q + 1) &&
			       !fsck_map_get(f->ext_map, q + 1))
				q++;
			for (uint64_t x = p; x <= q; x++)
				bad += fsck_map_get(f->bad_map, x);
			leaked += q - p + 1;
			if (runs++ < 6 && len < sizeof(list) - 40) {
				int w =
				    q == p ? snprintf(list + len, sizeof(list) - len, "%s%llu",
						      len ? ", " : "", (unsigned long long)p)
					   : snprintf(list + len, sizeof(list) - len, "%s%llu-%llu",
						      len ? ", " : "", (unsigned long long)p,
						      (unsigned long long)q);
				len += w > 0 ? (size_t)w : 0;
			}
			p = q;
		}
	}
	if (leaked) {
		char badnote[64] = "";
		if (bad)
			snprintf(badnote, sizeof(badnote), "; %llu of them fail their checksum",
				 (unsigned long long)bad);
		ERR(f, FIX_FREE_LEAKS, leaked, 0, 0, 0,
		    "%llu allocated page%s belong%s to nothing (leaked): %s%s%s",
		    (unsigned long long)leaked, fsck_s(leaked), leaked == 1 ? "s" : "", list,
		    runs > 6 ? ", ..." : "", badnote);
	}
	/* Bad pages nothing uses are reported with the leaks; those of the
	 * tree and of files were reported where they were found. */

	uint64_t first, unmarked = bm_bitmap_unmarked(f->bm, &first);
	if (unmarked)
		ERR(f, FIX_META_BITS, unmarked, first, 0, 0,
		    "allocation bitmap: %llu metadata page%s (the first %llu) marked free",
		    (unsigned long long)unmarked, fsck_s(unmarked), (unsigned long long)first);

	uint64_t recorded = bm_sb_free_recorded(f->bm), counted = f->page_count - f->allocated;
	if (recorded != counted)
		ERR(f, FIX_SB_FREE, recorded, counted, 0, 0,
		    "superblock: free page count %llu, but the bitmap has %llu free pages",
		    (unsigned long long)recorded, (unsigned long long)counted);
}

/* After a clean close the inode counters in the superblock are exact (a
 * mount trusts them); after a crash the next mount recounts. */
static void check_counters(struct fsck *f)
{
	if (!f->was_clean || !f->scan_ok)
		return;
	uint64_t count = bm_sb_get(f->bm, FS_SB_INODES);
	uint64_t next = bm_sb_get(f->bm, FS_SB_INO_NEXT);
	if (count != f->ninodes)
		ERR(f, FIX_COUNTERS, 0, 0, 0, 0,
		    "superblock: inode count %llu, but the tree holds %zu inodes",
		    (unsigned long long)count, f->ninodes);
	if (f->ninodes && next <= f->max_ino)
		ERR(f, FIX_COUNTERS, 0, 0, 0, 0,
		    "superblock: next inode number %llu, but inode %llu exists (would be handed "
		    "out again)",
		    (unsigned long long)next, (unsigned long long)f->max_ino);
}

/* ------------------------------------------------------------------ */

void fsck_reset(struct fsck *f)
{
	for (size_t i = 0; i < f->nprobs; i++)
		free(f->probs[i].msg);
	for (size_t i = 0; i < f->ndirents; i++)
		free(f->dirents[i].name);
	free(f->probs);
	free(f->dirents);
	free(f->by_child);
	free(f->inodes);
	free(f->orphans);
	free(f->bad_map);
	free(f->tree_map);
	free(f->ext_map);
	free(f->shared_map);
	free(bad_data);
	bad_data = NULL;
	nbad_data = cap_bad_data = 0;

	struct fsck keep = {
	    .bm = f->bm,
	    .image = f->image,
	    .verbose = f->verbose,
	    .progress = f->progress,
	    .first_data = f->first_data,
	    .page_count = f->page_count,
	    .root = f->root,
	    .was_clean = f->was_clean,
	};
	*f = keep;
}

int fsck_check(struct fsck *f)
{
	size_t bytes = f->page_count / 8 + 1;

	f->bad_map = calloc(bytes, 1);
	f->tree_map = calloc(bytes, 1);
	f->ext_map = calloc(bytes, 1);
	f->shared_map = calloc(bytes, 1);
	if (!f->bad_map || !f->tree_map || !f->ext_map || !f->shared_map)
		return -ENOMEM;
	f->records_ok = true;
	f->space_exact = true;

	if (!f->was_clean)
		fsck_problem(f, SEV_WARN, FIX_NONE, 0, 0, 0, 0,
			     "the image was not closed cleanly (daemon killed?)");
	check_copies(f);
	check_checksums(f);
	if (f->root < f->first_data || f->root >= f->page_count) {
		BAD(f, "tree root %llu outside the data area", (unsigned long long)f->root);
	} else {
		check_tree(f);
		if (!f->oom)
			check_records(f);
	}
	if (!f->oom) {
		check_space(f);
		check_counters(f);
	}
	if (!f->oom && (!f->tree_ok || !f->scan_ok))
		ERR(f, FIX_SALVAGE, 0, 0, 0, 0,
		    "tree: cannot be read whole; nothing else is repaired until it is rebuilt "
		    "from the records that can be read (salvage)");
	return f->oom;
}
