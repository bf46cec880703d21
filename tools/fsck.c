/*
 * fsck.c: fsck.virtuscale: check a VirtuScale image without changing it.
 *
 *   fsck.virtuscale [-n] [-v] IMAGE
 *
 * Passes, in order (a later pass still runs when an earlier one found
 * damage, so one run reports as much as it can):
 *
 *   1. checksums    every allocated data page is loaded through the pool,
 *                   which verifies it against the checksum table
 *   2. tree         bt_check on the filesystem tree (order, fences, levels,
 *                   every page allocated and reachable once)
 *   3. records      one ascending scan of every record: dirents against
 *                   inodes, link counts, orphans, extents (bounds, bitmap,
 *                   overlap), inline data and stray records
 *   4. space        allocated pages = tree pages + extent pages, else leaked
 *   5. totals       the allocator's free count against the bitmap
 *
 * The image is opened read-only, so nothing is ever repaired; exit codes
 * follow fsck(8): 0 clean, 4 errors left uncorrected, 8 operational error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/btree.h"
#include "engine/log.h"
#include "fs/keys.h"

#define FSCK_OK	     0
#define FSCK_UNCORR  4
#define FSCK_OPERROR 8

/* Progress lines only for images where a pass takes noticeable time. */
#define PROGRESS_MIN_BYTES (UINT64_C(1) << 30)

struct inode_rec {
	uint64_t ino;
	uint32_t mode;
	uint32_t nlink;
	uint64_t size;
	uint64_t pages;	 /* "data pages held" as recorded */
	uint64_t parent; /* directories only */
	uint32_t flags;
	uint32_t refs;	  /* dirents naming it */
	uint32_t subdirs; /* dirents of type DT_DIR inside it (directories) */
	uint64_t ext_pages;
	bool has_inline;
	bool orphan;
};

struct dirent_rec {
	uint64_t parent;
	uint64_t slot;
	uint64_t child;
	uint8_t type;
	char *name;
};

struct fsck {
	struct bm *bm;
	const char *image;
	bool verbose;
	bool progress;
	uint64_t first_data;
	uint64_t page_count;

	uint64_t errors;
	uint64_t warnings;
	uint64_t csum_errors;
	uint64_t allocated; /* pages set in the bitmap, whole image */
	uint64_t allocated_data;
	uint64_t tree_pages;
	bool tree_ok; /* bt_check passed, tree_pages is exact */
	bool scan_ok;

	uint8_t *ext_map; /* one bit per pid: claimed by an extent */
	uint64_t ext_pages;

	struct inode_rec *inodes; /* ascending ino (the scan order) */
	size_t ninodes, cap_inodes;
	struct dirent_rec *dirents;
	size_t ndirents, cap_dirents;
	uint64_t *orphans;
	size_t norphans, cap_orphans;

	/* The inode whose records the scan is in; NULL until its INODE record
	 * has been seen, so records of a missing inode are caught. */
	struct inode_rec *cur;
	uint64_t cur_obj;
	uint64_t ext_end; /* end byte of the previous extent of cur */
	int oom;
};

static void error(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warning(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void error(struct fsck *f, const char *fmt, ...)
{
	va_list ap;
	f->errors++;
	fputs("ERROR: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void warning(struct fsck *f, const char *fmt, ...)
{
	va_list ap;
	f->warnings++;
	fputs("warning: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
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

/* Engine messages (a checksum mismatch logs one per page) would repeat what
 * fsck reports in its own words; show them only with -v. */
static bool log_verbose;
static void log_sink(enum vs_log_level level, const char *msg)
{
	if (log_verbose || level <= VS_LOG_ERR)
		fprintf(stderr, "fsck.virtuscale: engine: %s\n", msg);
}

static void log_sink_quiet(enum vs_log_level level, const char *msg)
{
	if (log_verbose)
		log_sink(level, msg);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 1024;
	void *p = realloc(*arr, nc * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = nc;
	return 0;
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
		int r = bm_run(f->bm, fix_one, &pid);
		if (r == -EUCLEAN) {
			f->csum_errors++;
			error(f, "page %llu: checksum mismatch", (unsigned long long)pid);
		} else if (r < 0) {
			error(f, "page %llu: cannot be read: %s", (unsigned long long)pid,
			      strerror(-r));
		}
		/* A big image would otherwise fill the pool with pages that
		 * are never looked at again; eviction copes, but dropping
		 * them in bulk now and then is cheaper. */
		if ((pid & 0xffff) == 0xffff)
			bm_evict_all(f->bm, false);
	}
	if (f->verbose)
		printf("checksums: %llu allocated data pages read, %llu bad\n",
		       (unsigned long long)f->allocated_data, (unsigned long long)f->csum_errors);
}

/* ------------------------------------------------------------------ */
/* 2. tree                                                            */

static void check_tree(struct fsck *f, uint64_t root)
{
	struct bt t = bt_open(f->bm, root);
	struct bt_info info = {0};
	int r;

	if (f->progress)
		fprintf(stderr, "checking tree\n");
	r = bt_check(&t, &info);
	if (r < 0) {
		error(f, "tree at page %llu: check failed: %s (see the engine message above)",
		      (unsigned long long)root, strerror(-r));
		return;
	}
	f->tree_ok = true;
	f->tree_pages = info.leaves + info.inners + info.overflow_pages;
	if (f->verbose)
		printf("tree: root %llu, height %u, %llu entries, %llu leaves, %llu inner, "
		       "%llu overflow pages\n",
		       (unsigned long long)root, info.height, (unsigned long long)info.entries,
		       (unsigned long long)info.leaves, (unsigned long long)info.inners,
		       (unsigned long long)info.overflow_pages);
}

/* ------------------------------------------------------------------ */
/* 3. records                                                         */

static void check_extent(struct fsck *f, const uint8_t *k, const uint8_t *v, unsigned vlen)
{
	struct inode_rec *in = f->cur;
	uint64_t ino = in->ino, off = fs_key_off(k);
	unsigned long long uino = (unsigned long long)ino, uoff = (unsigned long long)off;

	if (vlen != FS_EXTENT_LEN) {
		error(f, "inode %llu: extent at %llu: value of %u bytes, expected %u", uino, uoff,
		      vlen, FS_EXTENT_LEN);
		return;
	}
	uint64_t first = fs_get_le64(v);
	uint32_t n = fs_get_le32(v + 8);
	if (!S_ISREG(in->mode))
		error(f, "inode %llu: extent at %llu on an inode that is not a regular file", uino,
		      uoff);
	if (off % BM_PAGE_SIZE)
		error(f, "inode %llu: extent at %llu: offset not page aligned", uino, uoff);
	if (n == 0 || n > FS_EXTENT_MAX_PAGES) {
		error(f, "inode %llu: extent at %llu: %u pages", uino, uoff, n);
		return;
	}
	if (off < f->ext_end)
		error(f, "inode %llu: extent at %llu overlaps the previous one (ends at %llu)",
		      uino, uoff, (unsigned long long)f->ext_end);
	f->ext_end = off + (uint64_t)n * BM_PAGE_SIZE;
	in->ext_pages += n;

	/* Fallocate with KEEP_SIZE maps pages past the end of file, so pages
	 * beyond the size are legal, just worth a note. */
	uint64_t size_pages = (in->size + BM_PAGE_SIZE - 1) / BM_PAGE_SIZE;
	if (off / BM_PAGE_SIZE + n > size_pages && f->verbose)
		warning(f,
			"inode %llu: extent at %llu (%u pages) reaches past the size %llu "
			"(preallocated with KEEP_SIZE?)",
			uino, uoff, n, (unsigned long long)in->size);

	if (first < f->first_data || first >= f->page_count || n > f->page_count - first) {
		error(f,
		      "inode %llu: extent at %llu: pages %llu+%u outside the data area "
		      "[%llu, %llu)",
		      uino, uoff, (unsigned long long)first, n, (unsigned long long)f->first_data,
		      (unsigned long long)f->page_count);
		return;
	}
	uint64_t unalloc = 0, dup = 0, first_bad = 0;
	for (uint64_t p = first; p < first + n; p++) {
		if (!bm_is_allocated(f->bm, p) && unalloc++ == 0)
			first_bad = p;
		if (f->ext_map[p >> 3] & (1u << (p & 7))) {
			dup++;
		} else {
			f->ext_map[p >> 3] |= (uint8_t)(1u << (p & 7));
			f->ext_pages++;
		}
	}
	if (unalloc)
		error(f,
		      "inode %llu: extent at %llu: %llu of its pages %llu+%u are free in the "
		      "bitmap (first %llu)",
		      uino, uoff, (unsigned long long)unalloc, (unsigned long long)first, n,
		      (unsigned long long)first_bad);
	if (dup)
		error(f,
		      "inode %llu: extent at %llu: %llu of its pages %llu+%u belong to "
		      "another extent too",
		      uino, uoff, (unsigned long long)dup, (unsigned long long)first, n);
}

static void take_dirent(struct fsck *f, const uint8_t *k, const uint8_t *v, unsigned vlen)
{
	uint64_t parent = fs_key_obj(k), slot = fs_key_off(k);

	if (vlen < 1) {
		error(f, "dir %llu slot %llu: empty dirent", (unsigned long long)parent,
		      (unsigned long long)slot);
		return;
	}
	if (v[0] == 0)
		return; /* tombstone */
	unsigned nl = v[0];
	if (vlen != 1 + nl + FS_DIRENT_PAYLOAD) {
		error(f, "dir %llu slot %llu: dirent of %u bytes for a %u-byte name",
		      (unsigned long long)parent, (unsigned long long)slot, vlen, nl);
		return;
	}
	if (!S_ISDIR(f->cur->mode))
		error(f, "inode %llu: has a dirent (slot %llu) but is not a directory",
		      (unsigned long long)parent, (unsigned long long)slot);
	if (grow((void **)&f->dirents, &f->cap_dirents, f->ndirents, sizeof(*f->dirents)) < 0) {
		f->oom = -ENOMEM;
		return;
	}
	struct dirent_rec *d = &f->dirents[f->ndirents];
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
}

static void take_inode(struct fsck *f, uint64_t ino, const uint8_t *v, unsigned vlen)
{
	f->cur = NULL;
	f->ext_end = 0;
	if (vlen != FS_INODE_LEN) {
		error(f, "inode %llu: record of %u bytes, expected %u", (unsigned long long)ino,
		      vlen, FS_INODE_LEN);
		return;
	}
	if (grow((void **)&f->inodes, &f->cap_inodes, f->ninodes, sizeof(*f->inodes)) < 0) {
		f->oom = -ENOMEM;
		return;
	}
	struct inode_rec *in = &f->inodes[f->ninodes++];
	memset(in, 0, sizeof(*in));
	in->ino = ino;
	in->mode = fs_get_le32(v);
	in->nlink = fs_get_le32(v + 12);
	in->size = fs_get_le64(v + 16);
	in->pages = fs_get_le64(v + 24);
	in->parent = fs_get_le64(v + 32);
	in->flags = fs_get_le32(v + 96);
	f->cur = in;
	if (ino < FS_INO_FIRST && ino != FS_INO_ROOT)
		error(f, "inode %llu: reserved inode number in use", (unsigned long long)ino);
}

static bool scan_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct fsck *f = ctx;
	const uint8_t *k = key, *v = val;

	if (f->oom)
		return false;
	if (klen != FS_KEY_LEN && klen != FS_KEY_CHUNK_LEN) {
		error(f, "record with a %u-byte key", klen);
		return true;
	}
	uint64_t obj = fs_key_obj(k), off = fs_key_off(k);
	uint8_t type = k[8];
	unsigned long long uobj = (unsigned long long)obj;

	if (obj == 0) {
		if (type != FS_REC_ORPHAN || klen != FS_KEY_LEN) {
			error(f, "filesystem record of unknown type 0x%02x", type);
			return true;
		}
		if (grow((void **)&f->orphans, &f->cap_orphans, f->norphans, sizeof(*f->orphans)) <
		    0) {
			f->oom = -ENOMEM;
			return false;
		}
		f->orphans[f->norphans++] = off;
		return true;
	}
	if (type == FS_REC_INODE) {
		if (klen != FS_KEY_LEN || off != 0)
			error(f, "inode %llu: inode record with a bad key", uobj);
		take_inode(f, obj, v, vlen);
		f->cur_obj = obj;
		return true;
	}
	if (!f->cur || f->cur_obj != obj) {
		error(f, "inode %llu: record of type 0x%02x (offset %llu) but no inode", uobj, type,
		      (unsigned long long)off);
		return true;
	}
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
			error(f, "inode %llu: inline data of %u bytes (max %u)", uobj, vlen,
			      FS_INLINE_MAX);
		if (!S_ISREG(f->cur->mode))
			error(f, "inode %llu: inline data on a non-regular file", uobj);
		break;
	case FS_REC_SYMLINK:
		if (!S_ISLNK(f->cur->mode))
			error(f, "inode %llu: symlink target on a non-symlink", uobj);
		break;
	case FS_REC_XATTR:
		break;
	default:
		error(f, "inode %llu: record of unknown type 0x%02x", uobj, type);
	}
	return true;
}

static int cmp_ino(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = ((const struct inode_rec *)b)->ino;
	return x < y ? -1 : x > y;
}

static struct inode_rec *find_inode(struct fsck *f, uint64_t ino)
{
	return bsearch(&ino, f->inodes, f->ninodes, sizeof(*f->inodes), cmp_ino);
}

static void check_links(struct fsck *f)
{
	for (size_t i = 0; i < f->norphans; i++) {
		struct inode_rec *in = find_inode(f, f->orphans[i]);
		if (!in)
			error(f, "orphan record for inode %llu, which does not exist",
			      (unsigned long long)f->orphans[i]);
		else
			in->orphan = true;
	}
	for (size_t i = 0; i < f->ndirents; i++) {
		struct dirent_rec *d = &f->dirents[i];
		struct inode_rec *in = find_inode(f, d->child);
		unsigned long long up = (unsigned long long)d->parent;
		if (!in) {
			error(f, "dir %llu: entry '%s' names inode %llu, which does not exist", up,
			      d->name, (unsigned long long)d->child);
			continue;
		}
		in->refs++;
		if (d->type != ((in->mode & S_IFMT) >> 12))
			error(f, "dir %llu: entry '%s' has type %u, inode %llu has mode 0%o", up,
			      d->name, d->type, (unsigned long long)d->child, in->mode);
		if (S_ISDIR(in->mode)) {
			struct inode_rec *p = find_inode(f, d->parent);
			if (p)
				p->subdirs++;
			if (in->parent != d->parent)
				error(f,
				      "dir %llu: entry '%s' is directory %llu whose parent "
				      "field says %llu",
				      up, d->name, (unsigned long long)d->child,
				      (unsigned long long)in->parent);
		}
		if (in->orphan)
			error(f, "dir %llu: entry '%s' names inode %llu, which is an orphan", up,
			      d->name, (unsigned long long)d->child);
	}
	struct inode_rec *root = find_inode(f, FS_INO_ROOT);
	if (!root)
		error(f, "root inode %d missing", FS_INO_ROOT);
	else if (!S_ISDIR(root->mode))
		error(f, "root inode is not a directory (mode 0%o)", root->mode);

	for (size_t i = 0; i < f->ninodes; i++) {
		struct inode_rec *in = &f->inodes[i];
		unsigned long long uino = (unsigned long long)in->ino;
		if (in->orphan) {
			if (in->nlink != 0)
				error(f, "inode %llu: orphan with nlink %u", uino, in->nlink);
			/* Otherwise fine: the next mount frees it. */
			if (f->verbose)
				printf("inode %llu: orphan, freed at the next mount\n", uino);
		} else if (in->ino != FS_INO_ROOT && in->refs == 0) {
			error(f,
			      "inode %llu: not named by any directory entry and not an orphan "
			      "(mode 0%o, nlink %u)",
			      uino, in->mode, in->nlink);
		}
		if (S_ISDIR(in->mode)) {
			if (in->ino != FS_INO_ROOT && in->refs > 1)
				error(f, "directory %llu: named by %u entries", uino, in->refs);
			if (!in->orphan && in->nlink != 2 + in->subdirs)
				error(f,
				      "directory %llu: nlink %u, expected %u (2 + %u "
				      "subdirectories)",
				      uino, in->nlink, 2 + in->subdirs, in->subdirs);
		} else if (!in->orphan && in->nlink != in->refs && in->refs > 0) {
			error(f, "inode %llu: nlink %u but %u directory entries name it", uino,
			      in->nlink, in->refs);
		}
		if (S_ISREG(in->mode)) {
			if ((in->flags & FS_INODE_INLINE) && !in->has_inline && in->size > 0)
				error(f, "inode %llu: flagged inline but has no inline record",
				      uino);
			if (!(in->flags & FS_INODE_INLINE) && in->has_inline)
				error(f, "inode %llu: inline record without the inline flag", uino);
			if (in->has_inline && in->ext_pages)
				error(f, "inode %llu: both inline data and extents", uino);
			if (in->pages != in->ext_pages)
				error(f,
				      "inode %llu: records %llu data pages, its extents hold "
				      "%llu",
				      uino, (unsigned long long)in->pages,
				      (unsigned long long)in->ext_pages);
		}
	}
}

static void check_records(struct fsck *f, uint64_t root)
{
	struct bt t = bt_open(f->bm, root);
	int r;

	if (f->progress)
		fprintf(stderr, "checking records\n");
	r = bt_scan_asc(&t, NULL, 0, scan_fn, f);
	if (f->oom) {
		r = f->oom;
	} else if (r < 0) {
		error(f, "record scan stopped: %s; link counts not checked", strerror(-r));
		return;
	}
	if (r < 0)
		return; /* reported by the caller as an operational error */
	f->scan_ok = true;
	check_links(f);
	if (f->verbose)
		printf("records: %zu inodes, %zu directory entries, %zu orphans, %llu extent "
		       "pages\n",
		       f->ninodes, f->ndirents, f->norphans, (unsigned long long)f->ext_pages);
}

/* ------------------------------------------------------------------ */
/* 4, 5. space                                                        */

static void check_space(struct fsck *f)
{
	struct bm_stats st;

	/* Extent pages free in the bitmap were reported per extent. Without a
	 * tree walker the leak check compares totals: every allocated data
	 * page should be a tree page or an extent page. */
	if (f->tree_ok && f->scan_ok) {
		uint64_t used = f->tree_pages + f->ext_pages;
		if (f->allocated_data > used)
			error(f,
			      "%llu allocated pages belong to neither the tree (%llu pages) "
			      "nor any extent (%llu pages): leaked",
			      (unsigned long long)(f->allocated_data - used),
			      (unsigned long long)f->tree_pages, (unsigned long long)f->ext_pages);
		else if (f->allocated_data < used)
			error(f,
			      "tree (%llu pages) and extents (%llu pages) use more pages than "
			      "are allocated (%llu): some page has two owners",
			      (unsigned long long)f->tree_pages, (unsigned long long)f->ext_pages,
			      (unsigned long long)f->allocated_data);
	}
	bm_stats_get(f->bm, &st);
	if (st.free_pages != f->page_count - f->allocated)
		error(f, "free page count %llu, but the bitmap has %llu free pages",
		      (unsigned long long)st.free_pages,
		      (unsigned long long)(f->page_count - f->allocated));
}

/* ------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: fsck.virtuscale [-n] [-v] IMAGE\n"
		"\n"
		"Check a VirtuScale image (it must not be mounted). The image is opened\n"
		"read-only: this fsck reports damage and never repairs it, so it never\n"
		"exits 1 (\"errors corrected\").\n"
		"\n"
		"  -n, --no-action  do not write to the image (always the case)\n"
		"  -v, --verbose    statistics of each pass, and the engine's messages\n"
		"  -h, --help       this text\n"
		"\n"
		"exit status: 0 clean, 4 errors found (left uncorrected),\n"
		"             8 operational error (not an image, in use, needs journal replay)\n");
}

static void free_all(struct fsck *f)
{
	for (size_t i = 0; i < f->ndirents; i++)
		free(f->dirents[i].name);
	free(f->dirents);
	free(f->inodes);
	free(f->orphans);
	free(f->ext_map);
}

static const char *open_error(int r)
{
	switch (r) {
	case -EBUSY:
		return "image is in use (mounted?); unmount it first";
	case -EROFS:
		return "the image needs its journal replayed; mount it once (or open it "
		       "read-write) and run fsck again";
	case -EUCLEAN:
		return "not a VirtuScale image, or its superblock is damaged";
	case -EPROTONOSUPPORT:
		return "an image of another format version";
	default:
		return strerror(-r);
	}
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
	    {"no-action", no_argument, NULL, 'n'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct fsck f = {0};
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "nvh", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			break;
		case 'v':
			f.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return FSCK_OK;
		default:
			usage(stderr);
			return FSCK_OPERROR;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "fsck.virtuscale: %s\n",
			optind == argc ? "no image given" : "more than one image given");
		usage(stderr);
		return FSCK_OPERROR;
	}
	f.image = argv[optind];
	log_verbose = f.verbose;
	/* Opening logs its own reason for a refusal, which helps; after that
	 * the engine's per-page messages are only noise next to ours. */
	vs_log_set_sink(log_sink);

	long phys = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t pool = UINT64_C(256) << 20;
	if (phys > 0 && psz > 0 && (uint64_t)phys * (uint64_t)psz / 4 < pool)
		pool = (uint64_t)phys * (uint64_t)psz / 4;
	if (pool < (UINT64_C(16) << 20))
		pool = UINT64_C(16) << 20;
	struct bm_config cfg = {
	    .path = f.image,
	    .pool_bytes = pool,
	    .backend = BM_BACKEND_PLAIN,
	    .read_only = true,
	};
	r = bm_open(&cfg, &f.bm);
	if (r < 0) {
		fprintf(stderr, "fsck.virtuscale: %s: %s\n", f.image, open_error(r));
		return FSCK_OPERROR;
	}
	vs_log_set_sink(log_sink_quiet);
	rc = FSCK_OPERROR;
	if (bm_sb_get(f.bm, FS_SB_MAGIC) != FS_MAGIC) {
		fprintf(stderr,
			"fsck.virtuscale: %s: no filesystem in this image (run "
			"mkfs.virtuscale)\n",
			f.image);
		goto out;
	}
	f.page_count = bm_page_count(f.bm);
	f.first_data = bm_first_data_pid(f.bm);
	f.progress = f.page_count * BM_PAGE_SIZE > PROGRESS_MIN_BYTES;
	f.ext_map = calloc(f.page_count / 8 + 1, 1);
	if (!f.ext_map) {
		fprintf(stderr, "fsck.virtuscale: out of memory\n");
		goto out;
	}
	if (!bm_was_clean(f.bm))
		warning(&f, "the image was not closed cleanly (daemon killed?)");

	uint64_t root = bm_sb_get(f.bm, FS_SB_ROOT);
	check_checksums(&f);
	if (root < f.first_data || root >= f.page_count) {
		error(&f, "tree root %llu outside the data area", (unsigned long long)root);
	} else {
		check_tree(&f, root);
		check_records(&f, root);
		if (f.oom) {
			fprintf(stderr, "fsck.virtuscale: out of memory\n");
			goto out;
		}
	}
	check_space(&f);

	printf("%s: %llu pages, %llu allocated, %llu inodes, %llu errors, %llu warnings%s\n",
	       f.image, (unsigned long long)f.page_count, (unsigned long long)f.allocated,
	       (unsigned long long)f.ninodes, (unsigned long long)f.errors,
	       (unsigned long long)f.warnings,
	       f.errors ? " (not corrected: fsck.virtuscale does not repair)" : "");
	rc = f.errors ? FSCK_UNCORR : FSCK_OK;
out:
	bm_close(f.bm);
	free_all(&f);
	return rc;
}
