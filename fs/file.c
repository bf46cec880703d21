/*
 * file.c: file data: extents, inline data, read, write, truncate,
 * fallocate, SEEK_DATA / SEEK_HOLE, copy_file_range, residency.
 *
 * A file's bytes are either one INLINE record (files that stay within
 * FS_INLINE_MAX bytes and never had pages) or pool pages mapped by EXTENT
 * records (ino, EXTENT, byte offset) -> (first pid, pages). `pages` in the
 * inode counts the pages mapped, so pages == 0 means "inline or all holes"
 * without a tree lookup.
 *
 * Work is done in windows of at most FS_WINDOW file pages: the extents of a
 * window are collected with one descending scan into a page -> pid map,
 * holes are filled with runs from bm_alloc (hinted to follow the previous
 * extent, and merged into it when they do, so a file written sequentially
 * is one extent), and pages are then copied in groups of BM_MAX_HELD, each
 * group one buffer-manager operation holding its pages exclusively.
 *
 * Reads hold every page of the request shared through nested operations
 * (one per BM_MAX_HELD pages) and hand the pool addresses to the caller's
 * sink, so the only copy is the one into the FUSE reply.
 *
 * Locking: writers (write, truncate, fallocate) hold the inode lock
 * exclusively, readers shared, so a page is never freed and reused under a
 * reader.
 */
#include "fs/fs_internal.h"

#include <errno.h>
#include <pthread.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/log.h"

#define FS_WINDOW   256 /* file pages per window */
#define FS_RUN_MAX  256 /* pages asked of bm_alloc at once */
#define FS_MAX_SIZE (INT64_MAX - BM_PAGE_SIZE)

static const uint8_t zero_page[BM_PAGE_SIZE];

struct ext {
	uint64_t start; /* first file page */
	uint64_t pid;
	uint64_t n;
};

struct ext_list {
	uint64_t ino;
	uint64_t lo, hi; /* wanted file pages, inclusive */
	unsigned n, cap;
	int err;
	struct fs *fs;
	struct ext *e; /* descending while collecting */
};

/* ------------------------------------------------------------------ */
/* Extent records                                                     */

static int ext_decode(struct fs *fs, uint64_t ino, const uint8_t *key, const uint8_t *val,
		      unsigned vlen, struct ext *ret)
{
	uint64_t off = fs_key_off(key);
	ret->start = off >> BM_PAGE_SHIFT;
	if (vlen != FS_EXTENT_LEN || off % BM_PAGE_SIZE)
		return VS_CORRUPT("inode %llu: extent at %llu has %u bytes",
				  (unsigned long long)ino, (unsigned long long)off, vlen);
	ret->pid = fs_get_le64(val);
	ret->n = fs_get_le32(val + 8);
	if (ret->n == 0 || ret->pid < bm_first_data_pid(fs->bm) ||
	    ret->pid + ret->n > bm_page_count(fs->bm))
		return VS_CORRUPT("inode %llu: extent at %llu maps %llu pages at pid %llu",
				  (unsigned long long)ino, (unsigned long long)off,
				  (unsigned long long)ret->n, (unsigned long long)ret->pid);
	return 0;
}

static int ext_put(struct fs *fs, uint64_t ino, const struct ext *x)
{
	uint8_t key[FS_KEY_LEN], val[FS_EXTENT_LEN];

	fs_key(key, ino, FS_REC_EXTENT, x->start << BM_PAGE_SHIFT);
	fs_put_le64(val, x->pid);
	fs_put_le32(val + 8, (uint32_t)x->n);
	fs_put_le32(val + 12, 0);
	return bt_put(&fs->tree, key, sizeof(key), val, sizeof(val));
}

static int ext_remove(struct fs *fs, uint64_t ino, uint64_t start)
{
	uint8_t key[FS_KEY_LEN];

	fs_key(key, ino, FS_REC_EXTENT, start << BM_PAGE_SHIFT);
	return bt_remove(&fs->tree, key, sizeof(key));
}

static bool ext_collect_fn(void *vctx, const void *key, unsigned klen, const void *val,
			   unsigned vlen)
{
	struct ext_list *l = vctx;
	struct ext x;

	if (klen != FS_KEY_LEN || !fs_key_is(key, klen, l->ino, FS_REC_EXTENT))
		return false;
	l->err = ext_decode(l->fs, l->ino, key, val, vlen, &x);
	if (l->err)
		return false;
	if (l->n > 0 && l->e[l->n - 1].start <= x.start)
		return true; /* seen already */
	if (x.start + x.n <= l->lo)
		return false; /* ends before the range; so does everything before it */
	if (l->n == l->cap) {
		l->err = -EAGAIN; /* more than fits: the caller narrows */
		return false;
	}
	l->e[l->n++] = x;
	return x.start > l->lo;
}

/* Collect the extents overlapping file pages [lo, hi] into @l (ascending).
 * -EAGAIN when there are more than l->cap. */
static int ext_collect(struct fs *fs, uint64_t ino, uint64_t lo, uint64_t hi, struct ext_list *l)
{
	uint8_t key[FS_KEY_LEN];
	int r;

	l->fs = fs;
	l->ino = ino;
	l->lo = lo;
	l->hi = hi;
	l->n = 0;
	l->err = 0;
	fs_key(key, ino, FS_REC_EXTENT,
	       hi >= (UINT64_MAX >> BM_PAGE_SHIFT) ? UINT64_MAX : hi << BM_PAGE_SHIFT);
	r = bt_scan_desc(&fs->tree, key, sizeof(key), ext_collect_fn, l);
	if (r == 0)
		r = l->err;
	if (r < 0)
		return r;
	for (unsigned i = 0; i < l->n / 2; i++) {
		struct ext t = l->e[i];
		l->e[i] = l->e[l->n - 1 - i];
		l->e[l->n - 1 - i] = t;
	}
	return 0;
}

/* Fill @pids for file pages [first, first + n) from @l. */
static void ext_map(const struct ext_list *l, uint64_t first, unsigned n, uint64_t *pids)
{
	for (unsigned i = 0; i < n; i++)
		pids[i] = BM_PID_NONE;
	for (unsigned k = 0; k < l->n; k++) {
		const struct ext *x = &l->e[k];
		uint64_t a = x->start > first ? x->start : first;
		uint64_t b = x->start + x->n < first + n ? x->start + x->n : first + n;
		for (uint64_t p = a; p < b; p++)
			pids[p - first] = x->pid + (p - x->start);
	}
}

struct ext_one {
	struct fs *fs;
	uint64_t ino;
	bool found;
	int err;
	struct ext x;
};

static bool ext_one_fn(void *vctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct ext_one *o = vctx;

	if (klen != FS_KEY_LEN || !fs_key_is(key, klen, o->ino, FS_REC_EXTENT))
		return false;
	o->err = ext_decode(o->fs, o->ino, key, val, vlen, &o->x);
	o->found = o->err == 0;
	return false;
}

/* The extent containing file page @page, or else the first one after it.
 * -ENOENT when there is neither. */
static int ext_at_or_after(struct fs *fs, uint64_t ino, uint64_t page, struct ext *ret)
{
	uint8_t key[FS_KEY_LEN];
	struct ext_one o = {.fs = fs, .ino = ino};
	int r;

	fs_key(key, ino, FS_REC_EXTENT, page << BM_PAGE_SHIFT);
	r = bt_scan_desc(&fs->tree, key, sizeof(key), ext_one_fn, &o);
	if (r == 0)
		r = o.err;
	if (r < 0)
		return r;
	if (o.found && o.x.start + o.x.n > page) {
		*ret = o.x;
		return 0;
	}
	o.found = false;
	r = bt_scan_asc(&fs->tree, key, sizeof(key), ext_one_fn, &o);
	if (r == 0)
		r = o.err;
	if (r < 0)
		return r;
	if (!o.found)
		return -ENOENT;
	*ret = o.x;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Page I/O inside buffer-manager operations                          */

struct page_io {
	uint64_t pid;
	unsigned from, len; /* bytes within the page */
	const uint8_t *src; /* NULL: zero the bytes */
	bool fresh;	    /* just allocated: nothing to read */
};

struct page_batch {
	unsigned n;
	struct page_io io[BM_MAX_HELD];
};

static int write_op(struct bm_op *op, void *arg)
{
	struct page_batch *b = arg;
	struct bm_guard g[BM_MAX_HELD];
	uint8_t *p[BM_MAX_HELD];

	/* Every guard first, then the changes: a fix may restart us. */
	for (unsigned i = 0; i < b->n; i++) {
		const struct page_io *io = &b->io[i];
		if (io->fresh || (io->from == 0 && io->len == BM_PAGE_SIZE))
			p[i] = bm_fix_x_new(op, io->pid, &g[i]);
		else
			p[i] = bm_fix_x(op, io->pid, &g[i]);
	}
	for (unsigned i = 0; i < b->n; i++) {
		const struct page_io *io = &b->io[i];
		if (io->src)
			memcpy(p[i] + io->from, io->src, io->len);
		else if (io->fresh && io->from == 0 && io->len == BM_PAGE_SIZE)
			; /* a fresh page reads as zeros already */
		else
			memset(p[i] + io->from, 0, io->len);
	}
	for (unsigned i = 0; i < b->n; i++)
		bm_unfix(op, &g[i]);
	return 0;
}

static int batch_flush(struct fs *fs, struct page_batch *b)
{
	int r = 0;
	if (b->n)
		r = bm_run(fs->bm, write_op, b);
	b->n = 0;
	return r;
}

static int batch_add(struct fs *fs, struct page_batch *b, const struct page_io *io)
{
	b->io[b->n++] = *io;
	return b->n == BM_MAX_HELD ? batch_flush(fs, b) : 0;
}

/* Zero @len bytes at @from of page @pid. */
static int page_zero(struct fs *fs, uint64_t pid, unsigned from, unsigned len)
{
	struct page_batch b = {.n = 1};
	b.io[0] = (struct page_io){.pid = pid, .from = from, .len = len};
	return bm_run(fs->bm, write_op, &b);
}

/* ------------------------------------------------------------------ */
/* Inline data                                                        */

/* Read the inline record into @buf (FS_INLINE_MAX bytes); *ret_len is 0
 * when there is none (known without a lookup from the inode's flag). */
static int inline_get(struct fs *fs, const struct fs_inode *in, uint8_t *buf, unsigned *ret_len)
{
	uint8_t key[FS_KEY_LEN];
	uint64_t ino = in->ino;
	unsigned len = 0;

	if (!(in->flags & FS_INODE_INLINE)) {
		*ret_len = 0;
		return 0;
	}
	fs_key(key, ino, FS_REC_INLINE, 0);
	int r = bt_lookup(&fs->tree, key, sizeof(key), buf, FS_INLINE_MAX, &len);
	if (r == -ENOENT) {
		*ret_len = 0;
		return 0;
	}
	if (r == -ENOBUFS || (r == 0 && len > FS_INLINE_MAX))
		return VS_CORRUPT("inode %llu: inline data of %u bytes", (unsigned long long)ino,
				  len);
	if (r < 0)
		return r;
	*ret_len = len;
	return 0;
}

/* Store (or with @len 0 remove) the inline record; the caller writes the
 * inode, whose flag says whether there is one. */
static int inline_put(struct fs *fs, struct fs_inode *in, const uint8_t *buf, unsigned len)
{
	uint8_t key[FS_KEY_LEN];
	int r;

	fs_key(key, in->ino, FS_REC_INLINE, 0);
	if (len == 0) {
		r = bt_remove(&fs->tree, key, sizeof(key));
		if (r == 0 || r == -ENOENT)
			in->flags &= ~FS_INODE_INLINE;
		return r == -ENOENT ? 0 : r;
	}
	r = bt_put(&fs->tree, key, sizeof(key), buf, len);
	if (r == 0)
		in->flags |= FS_INODE_INLINE;
	return r;
}

static int write_pages(struct fs *fs, struct fs_inode *in, uint64_t off, const uint8_t *src,
		       size_t len, bool alloc_only, size_t *ret_done);

/* Move inline bytes to a page so the file can take extents. */
static int inline_to_pages(struct fs *fs, struct fs_inode *in)
{
	uint8_t buf[FS_INLINE_MAX];
	unsigned len;
	size_t done;
	int r;

	r = inline_get(fs, in, buf, &len);
	if (r < 0 || len == 0)
		return r;
	r = write_pages(fs, in, 0, buf, len, false, &done);
	if (r == 0 && done < len)
		r = -ENOSPC;
	if (r < 0)
		return r;
	return inline_put(fs, in, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* Allocation and writing                                             */

/* Allocate up to @want pages for file pages starting at @fpage, right after
 * @prev (the extent ending at @fpage, or NULL) when possible, and record
 * them: merged into @prev when contiguous, else as a new extent in @l.
 * *ret_pid / *ret_n say what was mapped (fewer pages when space is short). */
static int alloc_run(struct fs *fs, struct fs_inode *in, struct ext_list *l, struct ext *prev,
		     uint64_t fpage, uint64_t want, uint64_t *ret_pid, uint64_t *ret_n)
{
	uint64_t hint = prev ? prev->pid + prev->n : BM_PID_NONE, n = want, pid;
	int r;

	for (;;) {
		r = bm_alloc(fs->bm, n, hint, &pid);
		if (r == 0)
			break;
		if (r != -ENOSPC || n == 1)
			return r;
		n /= 2; /* fragmented or nearly full: take what there is */
	}
	if (prev && prev->pid + prev->n == pid && prev->n + n <= FS_EXTENT_MAX_PAGES) {
		struct ext grown = *prev;
		grown.n += n;
		r = ext_put(fs, in->ino, &grown);
		if (r == 0)
			*prev = grown;
	} else {
		struct ext x = {.start = fpage, .pid = pid, .n = n};
		r = ext_put(fs, in->ino, &x);
		if (r == 0 && l->n < l->cap)
			l->e[l->n++] = x;
	}
	if (r < 0) {
		bm_free(fs->bm, pid, n);
		return r;
	}
	in->pages += n;
	*ret_pid = pid;
	*ret_n = n;
	return 0;
}

/* The extent in @l that ends exactly at file page @fpage. */
static struct ext *ext_ending_at(struct ext_list *l, uint64_t fpage)
{
	for (unsigned k = 0; k < l->n; k++)
		if (l->e[k].start + l->e[k].n == fpage)
			return &l->e[k];
	return NULL;
}

/* One window: file pages [first, first + n), bytes [off, off + len) of which
 * come from @src (or are only allocated when @alloc_only). */
/* Streaming past the pool. A read or write of at least FS_STREAM_MIN_PAGES
 * of a file larger than half the pool goes between the image and a buffer
 * of the thread for the pages that are not in the pool (bm_read_through,
 * bm_write_through: for writes, only new pages written whole) rather than
 * loading them or giving them frames: one pass over such a file would
 * otherwise evict a page for every page it touches, pushing out what the
 * pool holds for everything else, and on a virtual machine, where mapping
 * and unmapping a frame is dear, spend most of its time doing so. (The
 * kernel's page cache keeps what a buffered reader read; pages already in
 * the pool are used from there as always.) Large requests come from
 * sequential readers and writers: the kernel's read-ahead and write-back,
 * O_DIRECT streams. With cache=kernel every read goes this way, whatever
 * its size (read_past_pool). The buffer serves one window at a time: a
 * read or a write window, never both at once. */
#define FS_STREAM_MIN_PAGES 32
#define THROUGH_PAGES (FS_READ_IOV_MAX + 1 > FS_WINDOW ? FS_READ_IOV_MAX + 1 : FS_WINDOW)

/* Is a request of @npages pages of @in one to stream past the pool? */
static bool streaming(struct fs *fs, const struct fs_inode *in, unsigned npages)
{
	return npages >= FS_STREAM_MIN_PAGES && in->pages > bm_pool_pages(fs->bm) / 2;
}

/* cache= (fs.h): read by every read, set once before the mount is served. */
static _Atomic int cache_mode = FS_CACHE_BOTH;

void fs_cache_mode_set(enum fs_cache_mode mode)
{
	atomic_store_explicit(&cache_mode, (int)mode, memory_order_relaxed);
}

enum fs_cache_mode fs_cache_mode_get(void)
{
	return (enum fs_cache_mode)atomic_load_explicit(&cache_mode, memory_order_relaxed);
}

const char *fs_cache_mode_name(enum fs_cache_mode mode)
{
	switch (mode) {
	case FS_CACHE_POOL:
		return "pool";
	case FS_CACHE_KERNEL:
		return "kernel";
	default:
		return "both";
	}
}

/* Does a read of @npages pages of @in take the pages that are not in the
 * pool straight from the image? A stream does (streaming), and with
 * cache=kernel every read does: the kernel's page cache keeps what the
 * reader read, and a second copy in the pool would only take frames from
 * tree nodes and written data. */
static bool read_past_pool(struct fs *fs, const struct fs_inode *in, unsigned npages)
{
	return fs_cache_mode_get() == FS_CACHE_KERNEL || streaming(fs, in, npages);
}

static _Thread_local uint8_t *through_buf; /* THROUGH_PAGES */
static pthread_key_t through_key;            /* frees it at thread exit */
static pthread_once_t through_once = PTHREAD_ONCE_INIT;

static void through_key_init(void)
{
	if (pthread_key_create(&through_key, free) != 0)
		abort();
}

static uint8_t *through_buffer(void)
{
	if (through_buf)
		return through_buf;
	pthread_once(&through_once, through_key_init);
	if (posix_memalign((void **)&through_buf, BM_PAGE_SIZE,
			   (size_t)THROUGH_PAGES * BM_PAGE_SIZE) != 0) {
		through_buf = NULL;
		return NULL;
	}
	pthread_setspecific(through_key, through_buf);
	return through_buf;
}

static int write_window(struct fs *fs, struct fs_inode *in, uint64_t first, unsigned n,
			uint64_t off, const uint8_t *src, size_t len, bool alloc_only,
			size_t *ret_done)
{
	struct ext ebuf[FS_WINDOW + 8];
	struct ext_list l = {.e = ebuf, .cap = FS_WINDOW + 8};
	uint64_t pids[FS_WINDOW];
	bool fresh[FS_WINDOW];
	struct page_batch b = {.n = 0};
	unsigned mapped = n;
	int r;

	/* One page to the left as well: the extent to extend, if any. */
	r = ext_collect(fs, in->ino, first ? first - 1 : 0, first + n - 1, &l);
	if (r < 0)
		return r;
	ext_map(&l, first, n, pids);
	memset(fresh, 0, sizeof(fresh));

	for (unsigned i = 0; i < n;) {
		if (pids[i] != BM_PID_NONE) {
			i++;
			continue;
		}
		unsigned j = i;
		while (j < n && pids[j] == BM_PID_NONE)
			j++;
		uint64_t pid = 0, got = 0;
		struct ext *prev = ext_ending_at(&l, first + i);
		r = alloc_run(fs, in, &l, prev, first + i, j - i < FS_RUN_MAX ? j - i : FS_RUN_MAX,
			      &pid, &got);
		if (r == -ENOSPC) {
			mapped = i; /* write what has pages, report the rest */
			break;
		}
		if (r < 0)
			return r;
		for (uint64_t k = 0; k < got; k++) {
			pids[i + k] = pid + k;
			fresh[i + k] = true;
		}
		i += (unsigned)got;
	}
	if (mapped == 0)
		return -ENOSPC;

	uint64_t base = first << BM_PAGE_SHIFT;
	uint64_t stop = off + len;
	if (stop > base + ((uint64_t)mapped << BM_PAGE_SHIFT))
		stop = base + ((uint64_t)mapped << BM_PAGE_SHIFT);
	if (alloc_only) {
		*ret_done = stop - off;
		return 0;
	}
	/* Whole new pages of a stream go to the image directly. */
	bool done[FS_WINDOW];
	memset(done, 0, sizeof(done));
	uint8_t *tb = streaming(fs, in, mapped) ? through_buffer() : NULL;
	if (tb) {
		unsigned k0 = off > base ? (unsigned)((off - base + BM_PAGE_SIZE - 1) >> BM_PAGE_SHIFT) : 0;
		unsigned k1 = (unsigned)((stop - base) >> BM_PAGE_SHIFT); /* whole pages [k0, k1) */
		if (k1 > k0 + FS_STREAM_MIN_PAGES / 2) {
			memcpy(tb, src + ((base + ((uint64_t)k0 << BM_PAGE_SHIFT)) - off),
			       (size_t)(k1 - k0) << BM_PAGE_SHIFT);
			/* A page it could not write (a failing disk) goes
			 * through the pool as any other: the error reaches
			 * the next checkpoint, not this write. */
			(void)bm_write_through(fs->bm, pids + k0, k1 - k0, tb, done + k0);
		}
	}
	/* Frames for the pages never written in one go rather than a fault
	 * each: those just allocated, and those an fallocate left (the engine
	 * tells them by their missing checksum and skips the others). */
	bm_prefetch(fs->bm, pids, mapped, true);
	for (unsigned i = 0; i < mapped; i++) {
		if (done[i])
			continue;
		uint64_t pstart = base + ((uint64_t)i << BM_PAGE_SHIFT);
		uint64_t a = off > pstart ? off : pstart;
		uint64_t e = stop < pstart + BM_PAGE_SIZE ? stop : pstart + BM_PAGE_SIZE;
		if (a >= e)
			continue;
		struct page_io io = {
		    .pid = pids[i],
		    .from = (unsigned)(a - pstart),
		    .len = (unsigned)(e - a),
		    .src = src + (a - off),
		    .fresh = fresh[i],
		};
		r = batch_add(fs, &b, &io);
		if (r < 0)
			return r;
	}
	r = batch_flush(fs, &b);
	if (r < 0)
		return r;
	*ret_done = stop - off;
	return 0;
}

static int write_pages(struct fs *fs, struct fs_inode *in, uint64_t off, const uint8_t *src,
		       size_t len, bool alloc_only, size_t *ret_done)
{
	size_t done = 0;
	int r = 0;

	while (done < len) {
		uint64_t pos = off + done;
		uint64_t first = pos >> BM_PAGE_SHIFT;
		uint64_t last = (off + len - 1) >> BM_PAGE_SHIFT;
		unsigned n =
		    last - first + 1 > FS_WINDOW ? FS_WINDOW : (unsigned)(last - first + 1);
		uint64_t wend = (first + n) << BM_PAGE_SHIFT;
		size_t wlen = off + len < wend ? len - done : (size_t)(wend - pos);
		size_t got = 0;
		r = write_window(fs, in, first, n, pos, src ? src + done : NULL, wlen, alloc_only,
				 &got);
		done += got;
		if (r < 0 || got < wlen)
			break;
	}
	*ret_done = done;
	/* Space ran out midway: report what was written, as write(2) does. */
	if (r == -ENOSPC && done > 0)
		r = 0;
	return r;
}

static int get_regular(struct fs *fs, uint64_t ino, struct fs_inode *in)
{
	int r = fs_inode_get(fs, ino, in);
	if (r < 0)
		return r;
	if (S_ISDIR(in->mode))
		return -EISDIR;
	if (!S_ISREG(in->mode))
		return -EINVAL;
	return 0;
}

ssize_t fs_write(struct fs *fs, uint64_t ino, uint64_t off, const void *buf, size_t size)
{
	struct fs_inode in;
	struct timespec now;
	size_t done = 0;
	int r;

	if (fs->read_only)
		return -EROFS;
	if (fs_is_ctl_ino(ino))
		return -EPERM;
	if (off > FS_MAX_SIZE || size > FS_MAX_SIZE - off)
		return -EFBIG;
	fs_ino_wrlock_txn(fs, ino);
	r = get_regular(fs, ino, &in);
	if (r < 0 || size == 0)
		goto out;
	if (in.pages == 0 && off + size <= FS_INLINE_MAX && in.size <= FS_INLINE_MAX) {
		uint8_t data[FS_INLINE_MAX];
		unsigned len;
		r = inline_get(fs, &in, data, &len);
		if (r < 0)
			goto out;
		unsigned nlen = (unsigned)(off + size > len ? off + size : len);
		if (off > len)
			memset(data + len, 0, off - len);
		memcpy(data + off, buf, size);
		r = inline_put(fs, &in, data, nlen);
		if (r < 0)
			goto out;
		done = size;
	} else {
		if (in.pages == 0) {
			r = inline_to_pages(fs, &in);
			if (r < 0)
				goto out;
		}
		uint64_t pages0 = in.pages;
		r = write_pages(fs, &in, off, buf, size, false, &done);
		if (in.pages != pages0)
			fs_blocks_moved_note(fs, ino);
	}
	/* Even after an error, what was allocated is in the extents and must
	 * be counted in the inode. */
	fs_now(&now);
	if (done > 0) {
		if (off + done > in.size)
			in.size = off + done;
		/* With the kernel's writeback cache this write-back may come
		 * after the setattr that brought the kernel's times. */
		if (!fs->kernel_cmtime) {
			in.mtime = now;
			in.ctime = now;
		}
	}
	int r2 = fs_inode_put(fs, &in);
	if (r == 0)
		r = r2;
out:
	fs_ino_unlock(fs, ino);
	return r < 0 ? r : (ssize_t)done;
}

/* ------------------------------------------------------------------ */
/* Reading                                                            */

struct read_req {
	struct bm *bm;
	unsigned npages;
	const uint64_t *pids; /* per page, BM_PID_NONE for a hole */
	const unsigned *from; /* per page */
	const unsigned *len;  /* per page */
	const uint8_t *through; /* pages read past the pool, or NULL */
	const bool *got;        /* per page: in @through (not fixed) */
	const uint8_t *inl;   /* inline bytes instead of pages, or NULL */
	unsigned inl_len;
	struct iovec *iov;
	fs_read_sink sink;
	void *ctx;
	int sink_ret;
};

struct read_level {
	struct read_req *rq;
	unsigned first;
};

/* Collapse the per-page pieces into as few iovec entries as possible. */
static int read_emit(struct read_req *rq, const uint8_t *const *addr)
{
	int cnt = 0;

	for (unsigned i = 0; i < rq->npages; i++) {
		const uint8_t *p = addr[i] + rq->from[i];
		if (cnt > 0 && p != zero_page &&
		    (const uint8_t *)rq->iov[cnt - 1].iov_base + rq->iov[cnt - 1].iov_len == p) {
			rq->iov[cnt - 1].iov_len += rq->len[i];
			continue;
		}
		rq->iov[cnt].iov_base = (void *)p;
		rq->iov[cnt].iov_len = rq->len[i];
		cnt++;
	}
	return rq->sink(rq->ctx, rq->iov, cnt);
}

/* One nesting level holds the pages [first, first + BM_MAX_HELD): an
 * operation may hold only BM_MAX_HELD guards, and a read reply may span
 * FS_READ_IOV_MAX pages, so the levels nest until every page is held. An
 * inner level that restarts keeps the outer levels' pages. */
static int read_level_op(struct bm_op *op, void *arg)
{
	struct read_level *lv = arg;
	struct read_req *rq = lv->rq;
	struct bm_guard g[BM_MAX_HELD];
	unsigned end = lv->first + BM_MAX_HELD < rq->npages ? lv->first + BM_MAX_HELD : rq->npages;
	/* Addresses of every page so far travel down in a per-request array
	 * (in iov's shadow): level i fills its slice. */
	const uint8_t **addr = (const uint8_t **)(rq->iov + rq->npages);
	int r;

	for (unsigned i = lv->first; i < end; i++) {
		if (rq->pids[i] == BM_PID_NONE)
			addr[i] = zero_page;
		else if (rq->got && rq->got[i])
			addr[i] = rq->through + (size_t)i * BM_PAGE_SIZE;
		else
			addr[i] = bm_fix_s(op, rq->pids[i], &g[i - lv->first]);
	}
	if (end < rq->npages) {
		struct read_level inner = {.rq = rq, .first = end};
		r = bm_run(rq->bm, read_level_op, &inner);
	} else {
		rq->sink_ret = read_emit(rq, addr);
		r = 0;
	}
	for (unsigned i = lv->first; i < end; i++)
		if (rq->pids[i] != BM_PID_NONE && !(rq->got && rq->got[i]))
			bm_unfix(op, &g[i - lv->first]);
	return r;
}

/* The copying read, for when the pin budget is spent (read_window): the
 * pages [first, first + BM_MAX_HELD) of the request, held one group at a
 * time, copied to @dst. The inode lock the caller holds keeps writers out
 * between groups. */
struct read_copy {
	struct read_req *rq;
	unsigned first;
	uint8_t *dst; /* where page @first's piece goes */
};

static int read_copy_op(struct bm_op *op, void *arg)
{
	struct read_copy *rc = arg;
	struct read_req *rq = rc->rq;
	struct bm_guard g[BM_MAX_HELD];
	unsigned end = rc->first + BM_MAX_HELD < rq->npages ? rc->first + BM_MAX_HELD : rq->npages;
	uint8_t *dst = rc->dst;

	for (unsigned i = rc->first; i < end; i++) {
		const uint8_t *src;
		bool fixed = false;
		if (rq->pids[i] == BM_PID_NONE) {
			src = zero_page;
		} else if (rq->got && rq->got[i]) {
			src = rq->through + (size_t)i * BM_PAGE_SIZE;
		} else {
			src = bm_fix_s(op, rq->pids[i], &g[0]);
			fixed = true;
		}
		memcpy(dst, src + rq->from[i], rq->len[i]);
		dst += rq->len[i];
		if (fixed)
			bm_unfix(op, &g[0]);
	}
	return 0;
}

static int read_copied(struct read_req *rq, size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	struct read_copy rc = {.rq = rq, .first = 0};
	int r = 0;

	if (!buf)
		return -ENOMEM;
	rc.dst = buf;
	for (; rc.first < rq->npages && r == 0; rc.first += BM_MAX_HELD) {
		r = bm_run(rq->bm, read_copy_op, &rc);
		for (unsigned i = rc.first; i < rq->npages && i < rc.first + BM_MAX_HELD; i++)
			rc.dst += rq->len[i];
	}
	if (r == 0) {
		struct iovec iov = {.iov_base = buf, .iov_len = len};
		rq->sink_ret = rq->sink(rq->ctx, &iov, 1);
	}
	free(buf);
	return r;
}

/* Read [off, off + len) (within the file, spanning at most FS_READ_IOV_MAX
 * + 1 pages) of @in into @sink. */
static int read_window(struct fs *fs, const struct fs_inode *in, uint64_t off, size_t len,
		       fs_read_sink sink, void *ctx)
{
	enum { MAXP = FS_READ_IOV_MAX + 1 };
	uint64_t first = off >> BM_PAGE_SHIFT;
	unsigned npages = (unsigned)(((off + len - 1) >> BM_PAGE_SHIFT) - first + 1);
	uint64_t pids[MAXP];
	unsigned from[MAXP], plen[MAXP];
	uint8_t inl[FS_INLINE_MAX];
	unsigned inl_len = 0;
	int r;

	if (npages > MAXP)
		return -EINVAL;
	if (in->pages == 0) {
		/* Inline bytes, then zeros. */
		r = inline_get(fs, in, inl, &inl_len);
		if (r < 0)
			return r;
		struct iovec iov[MAXP + 1];
		int cnt = 0;
		size_t pos = 0;
		if (off < inl_len) {
			size_t n = inl_len - off < len ? inl_len - off : len;
			iov[cnt].iov_base = inl + off;
			iov[cnt++].iov_len = n;
			pos = n;
		}
		while (pos < len) {
			size_t n = len - pos < BM_PAGE_SIZE ? len - pos : BM_PAGE_SIZE;
			iov[cnt].iov_base = (void *)zero_page;
			iov[cnt++].iov_len = n;
			pos += n;
		}
		return sink(ctx, iov, cnt);
	}

	struct ext ebuf[MAXP + 2];
	struct ext_list l = {.e = ebuf, .cap = MAXP + 2};
	r = ext_collect(fs, in->ino, first, first + npages - 1, &l);
	if (r < 0)
		return r;
	ext_map(&l, first, npages, pids);
	for (unsigned i = 0; i < npages; i++) {
		uint64_t ps = (first + i) << BM_PAGE_SHIFT;
		uint64_t a = off > ps ? off : ps;
		uint64_t e = off + len < ps + BM_PAGE_SIZE ? off + len : ps + BM_PAGE_SIZE;
		from[i] = (unsigned)(a - ps);
		plen[i] = (unsigned)(e - a);
	}
	/* iov entries, then (reused as scratch) the page addresses. */
	struct iovec *iov = malloc(sizeof(struct iovec) * npages + sizeof(void *) * npages);
	if (!iov)
		return -ENOMEM;
	struct read_req rq = {
	    .bm = fs->bm,
	    .npages = npages,
	    .pids = pids,
	    .from = from,
	    .len = plen,
	    .iov = iov,
	    .sink = sink,
	    .ctx = ctx,
	};
	struct read_level lv = {.rq = &rq, .first = 0};
	bool got[MAXP];
	uint64_t rest[MAXP];
	unsigned nrest = 0;
	uint8_t *tb = NULL;
	if (read_past_pool(fs, in, npages))
		tb = through_buffer();
	if (tb) {
		r = bm_read_through(fs->bm, pids, npages, tb, got);
		if (r < 0) {
			free(iov);
			return r;
		}
		rq.through = tb;
		rq.got = got;
		for (unsigned i = 0; i < npages; i++)
			if (!got[i])
				rest[nrest++] = pids[i];
	}
	/* Read-ahead: the evicted pages of the window in as few reads as
	 * their layout allows, before the fixes, which would load one each. */
	if (tb)
		bm_prefetch(fs->bm, rest, nrest, false);
	else
		bm_prefetch(fs->bm, pids, npages, false);
	/* Replying straight from the pool holds every page of the request at
	 * once: more than one operation's guards take the pin budget, so that
	 * such holds never fill the pool (engine/bm_load.c); past it, copy. */
	if (npages <= BM_MAX_HELD) {
		r = bm_run(fs->bm, read_level_op, &lv);
	} else if (bm_pin_try(fs->bm, npages)) {
		r = bm_run(fs->bm, read_level_op, &lv);
		bm_pin_release(fs->bm, npages);
	} else {
		r = read_copied(&rq, len);
	}
	free(iov);
	return r < 0 ? r : rq.sink_ret;
}

static bool ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

/* relatime: record an access when the last one predates the last change,
 * or is a day old. */
static void touch_atime(struct fs *fs, uint64_t ino, const struct fs_inode *seen)
{
	struct timespec now;
	struct fs_inode in;

	if (fs->read_only)
		return;
	fs_now(&now);
	if (ts_after(&seen->atime, &seen->mtime) && ts_after(&seen->atime, &seen->ctime) &&
	    now.tv_sec - seen->atime.tv_sec < 24 * 3600)
		return;
	fs_ino_wrlock_txn(fs, ino);
	if (fs_inode_get(fs, ino, &in) == 0) {
		in.atime = now;
		(void)fs_inode_put(fs, &in);
	}
	fs_ino_unlock(fs, ino);
}

struct copy_sink {
	uint8_t *dst;
	size_t done;
};

static int copy_sink_fn(void *vctx, const struct iovec *iov, int cnt)
{
	struct copy_sink *c = vctx;
	for (int i = 0; i < cnt; i++) {
		memcpy(c->dst + c->done, iov[i].iov_base, iov[i].iov_len);
		c->done += iov[i].iov_len;
	}
	return 0;
}

/* Read under the inode lock (held shared by the caller). */
static ssize_t read_locked(struct fs *fs, const struct fs_inode *in, uint64_t off, size_t size,
			   void *buf)
{
	struct copy_sink c = {.dst = buf, .done = 0};

	if (off >= in->size)
		return 0;
	if (size > in->size - off)
		size = (size_t)(in->size - off);
	while (c.done < size) {
		uint64_t pos = off + c.done;
		size_t chunk = (size_t)FS_READ_IOV_MAX * BM_PAGE_SIZE - (pos & (BM_PAGE_SIZE - 1));
		if (chunk > size - c.done)
			chunk = size - c.done;
		int r = read_window(fs, in, pos, chunk, copy_sink_fn, &c);
		if (r < 0)
			return c.done ? (ssize_t)c.done : r;
	}
	return (ssize_t)c.done;
}

ssize_t fs_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, void *buf)
{
	struct fs_inode in;
	ssize_t r;

	fs_ino_rdlock(fs, ino);
	r = get_regular(fs, ino, &in);
	if (r == 0)
		r = read_locked(fs, &in, off, size, buf);
	fs_ino_unlock(fs, ino);
	if (r > 0)
		touch_atime(fs, ino, &in);
	return r;
}

int fs_read_iov(struct fs *fs, uint64_t ino, uint64_t off, size_t size, fs_read_sink sink,
		void *ctx)
{
	struct fs_inode in;
	int r;

	fs_ino_rdlock(fs, ino);
	r = get_regular(fs, ino, &in);
	if (r < 0)
		goto out;
	if (off >= in.size || size == 0) {
		r = sink(ctx, NULL, 0);
		goto out;
	}
	if (size > in.size - off)
		size = (size_t)(in.size - off);
	if ((((off + size - 1) >> BM_PAGE_SHIFT) - (off >> BM_PAGE_SHIFT)) <= FS_READ_IOV_MAX) {
		r = read_window(fs, &in, off, size, sink, ctx);
	} else {
		void *buf = malloc(size);
		if (!buf) {
			r = -ENOMEM;
			goto out;
		}
		ssize_t n = read_locked(fs, &in, off, size, buf);
		if (n >= 0) {
			struct iovec iov = {.iov_base = buf, .iov_len = (size_t)n};
			r = sink(ctx, &iov, 1);
		} else {
			r = (int)n;
		}
		free(buf);
	}
out:
	fs_ino_unlock(fs, ino);
	if (r >= 0)
		touch_atime(fs, ino, &in);
	return r;
}

/* ------------------------------------------------------------------ */
/* Truncate and punch                                                 */

#define PUNCH_BATCH 64

/* Unmap file pages [lo, hi) and free their pool pages. */
static int punch_pages(struct fs *fs, struct fs_inode *in, uint64_t lo, uint64_t hi)
{
	struct ext ebuf[PUNCH_BATCH];
	int r;

	if (lo >= hi || in->pages == 0)
		return 0;
	for (;;) {
		struct ext_list l = {.e = ebuf, .cap = PUNCH_BATCH};
		r = ext_collect(fs, in->ino, lo, hi - 1, &l);
		if (r == -EAGAIN)
			r = 0; /* a full batch: work from the right end, come back */
		if (r < 0)
			return r;
		if (l.n == 0)
			return 0;
		/* Right to left, so a partial batch is always the leftmost part. */
		for (unsigned k = l.n; k > 0; k--) {
			struct ext x = l.e[k - 1];
			uint64_t a = x.start > lo ? x.start : lo;
			uint64_t b = x.start + x.n < hi ? x.start + x.n : hi;
			if (a >= b)
				continue;
			if (x.start + x.n > b) {
				/* The piece to the right survives under a new key:
				 * the one insert that can fail, so it comes first. */
				struct ext right = {.start = b,
						    .pid = x.pid + (b - x.start),
						    .n = x.start + x.n - b};
				r = ext_put(fs, in->ino, &right);
				if (r < 0)
					return r;
			}
			if (x.start < a) {
				struct ext left = {
				    .start = x.start, .pid = x.pid, .n = a - x.start};
				r = ext_put(fs, in->ino, &left);
			} else {
				r = ext_remove(fs, in->ino, x.start);
			}
			if (r < 0)
				return r;
			bm_free(fs->bm, x.pid + (a - x.start), b - a);
			in->pages = in->pages >= b - a ? in->pages - (b - a) : 0;
		}
		if (l.n < PUNCH_BATCH)
			return 0;
	}
}

/* Zero bytes [off, off + len) that lie within one mapped page, if mapped. */
static int zero_partial(struct fs *fs, struct fs_inode *in, uint64_t off, unsigned len)
{
	struct ext x;
	uint64_t page = off >> BM_PAGE_SHIFT;
	int r;

	if (len == 0 || in->pages == 0)
		return 0;
	r = ext_at_or_after(fs, in->ino, page, &x);
	if (r == -ENOENT || (r == 0 && x.start > page))
		return 0;
	if (r < 0)
		return r;
	return page_zero(fs, x.pid + (page - x.start), (unsigned)(off & (BM_PAGE_SIZE - 1)), len);
}

/* Zero (and unmap whole pages of) bytes [off, end) of a paged file. */
static int zero_range(struct fs *fs, struct fs_inode *in, uint64_t off, uint64_t end)
{
	uint64_t a = (off + BM_PAGE_SIZE - 1) & ~(uint64_t)(BM_PAGE_SIZE - 1);
	uint64_t b = end & ~(uint64_t)(BM_PAGE_SIZE - 1);
	int r;

	if (off >= end)
		return 0;
	if (a > b) {
		/* Within one page. */
		return zero_partial(fs, in, off, (unsigned)(end - off));
	}
	r = zero_partial(fs, in, off, (unsigned)(a - off));
	if (r == 0)
		r = zero_partial(fs, in, b, (unsigned)(end - b));
	if (r == 0)
		r = punch_pages(fs, in, a >> BM_PAGE_SHIFT, b >> BM_PAGE_SHIFT);
	return r;
}

int fs_file_resize_locked(struct fs *fs, struct fs_inode *in, uint64_t size)
{
	int r = 0;

	if (size > FS_MAX_SIZE)
		return -EFBIG;
	if (size < in->size) {
		if (in->pages == 0) {
			uint8_t data[FS_INLINE_MAX];
			unsigned len;
			r = inline_get(fs, in, data, &len);
			if (r == 0 && len > size)
				r = inline_put(fs, in, data, (unsigned)size);
		} else {
			/* The tail of the new last page must read as zeros if the
			 * file grows again. */
			uint64_t keep = (size + BM_PAGE_SIZE - 1) >> BM_PAGE_SHIFT;
			if (size & (BM_PAGE_SIZE - 1))
				r = zero_partial(fs, in, size,
						 BM_PAGE_SIZE -
						     (unsigned)(size & (BM_PAGE_SIZE - 1)));
			if (r == 0)
				r = punch_pages(fs, in, keep, UINT64_MAX >> BM_PAGE_SHIFT);
		}
	}
	if (r == 0)
		in->size = size;
	return r;
}

/* ------------------------------------------------------------------ */
/* fallocate, lseek, copy_file_range, residency                       */

/* The holes of file pages [lo, hi): runs without pages, into @runs (grown
 * with realloc; the caller frees it), and their total in *ret_pages. */
struct hole {
	uint64_t start, n;
};

static int holes_find(struct fs *fs, uint64_t ino, uint64_t lo, uint64_t hi, struct hole **runs,
		      unsigned *nruns, uint64_t *ret_pages)
{
	uint64_t at = lo, total = 0;
	unsigned n = 0, cap = 0;
	struct hole *h = NULL;
	int r = 0;

	while (at < hi) {
		struct ext x;
		uint64_t stop = hi;
		r = ext_at_or_after(fs, ino, at, &x);
		if (r < 0 && r != -ENOENT)
			break;
		if (r == 0 && x.start < hi)
			stop = x.start > at ? x.start : at;
		r = 0;
		if (stop > at) {
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				struct hole *g = realloc(h, cap * sizeof(*h));
				if (!g) {
					r = -ENOMEM;
					break;
				}
				h = g;
			}
			h[n++] = (struct hole){.start = at, .n = stop - at};
			total += stop - at;
		}
		if (stop >= hi)
			break;
		at = x.start + x.n; /* past the extent that stopped us */
	}
	*runs = h;
	*nruns = n;
	*ret_pages = total;
	return r;
}

/* Allocate every page of [off, end) that has none, or none of them: an
 * fallocate that cannot be done whole leaves the file as it was (as ext4
 * and XFS do), rather than keep a part of the space. The check first (its
 * pages and a margin for the extent records), so that the usual refusal
 * costs nothing; if other writers took the space meanwhile, what this call
 * allocated is punched out again. */
static int falloc_all(struct fs *fs, struct fs_inode *in, uint64_t off, uint64_t end)
{
	uint64_t a = off & ~(uint64_t)(BM_PAGE_SIZE - 1);
	uint64_t lo = a >> BM_PAGE_SHIFT, hi = (end + BM_PAGE_SIZE - 1) >> BM_PAGE_SHIFT;
	struct hole *holes = NULL;
	unsigned nholes = 0;
	uint64_t need;
	size_t done;
	int r;

	r = holes_find(fs, in->ino, lo, hi, &holes, &nholes, &need);
	if (r == 0 && need + need / 256 + 8 > bm_alloc_room(fs->bm))
		r = -ENOSPC;
	if (r == 0 && need > 0) {
		r = write_pages(fs, in, a, NULL, end - a, true, &done);
		if (r == 0 && done < end - a)
			r = -ENOSPC;
		if (r < 0) {
			for (unsigned i = 0; i < nholes; i++) {
				int u = punch_pages(fs, in, holes[i].start,
						    holes[i].start + holes[i].n);
				if (u < 0 && r == -ENOSPC)
					r = u;
			}
		}
	}
	free(holes);
	return r;
}

int fs_fallocate(struct fs *fs, uint64_t ino, int mode, uint64_t off, uint64_t len)
{
	struct fs_inode in;
	struct timespec now;
	bool keep = mode & FALLOC_FL_KEEP_SIZE;
	int op = mode & ~FALLOC_FL_KEEP_SIZE;
	int r;

	if (op != 0 && op != FALLOC_FL_PUNCH_HOLE && op != FALLOC_FL_ZERO_RANGE)
		return -EOPNOTSUPP;
	if (op == FALLOC_FL_PUNCH_HOLE && !keep)
		return -EOPNOTSUPP;
	if (fs->read_only)
		return -EROFS;
	if (len == 0)
		return -EINVAL;
	if (off > FS_MAX_SIZE || len > FS_MAX_SIZE - off)
		return -EFBIG;

	fs_ino_wrlock_txn(fs, ino);
	r = fs_inode_get(fs, ino, &in);
	if (r < 0)
		goto out;
	if (S_ISDIR(in.mode)) {
		r = -EISDIR;
		goto out;
	}
	if (!S_ISREG(in.mode)) {
		r = -ENODEV;
		goto out;
	}
	fs_blocks_moved_note(fs, ino); /* whatever the outcome: it may have */
	uint64_t end = off + len;
	if (op == FALLOC_FL_PUNCH_HOLE || op == FALLOC_FL_ZERO_RANGE) {
		if (in.pages == 0) {
			uint64_t zend = end < in.size ? end : in.size;
			uint8_t data[FS_INLINE_MAX];
			unsigned ilen;
			r = inline_get(fs, &in, data, &ilen);
			if (r == 0 && off < ilen) {
				uint64_t e = zend < ilen ? zend : ilen;
				memset(data + off, 0, e - off);
				r = inline_put(fs, &in, data, ilen);
			}
		} else {
			r = zero_range(fs, &in, off, end);
		}
		if (r < 0)
			goto out;
	}
	if (op == 0 || op == FALLOC_FL_ZERO_RANGE) {
		if (in.pages == 0) {
			r = inline_to_pages(fs, &in);
			if (r < 0)
				goto out;
		}
		r = falloc_all(fs, &in, off, end);
		if (r < 0) {
			/* The page count as punching left it. */
			(void)fs_inode_put(fs, &in);
			goto out;
		}
		if (!keep && end > in.size)
			in.size = end;
	}
	fs_now(&now);
	in.ctime = now;
	if (op != 0 || !keep)
		in.mtime = now;
	r = fs_inode_put(fs, &in);
out:
	fs_ino_unlock(fs, ino);
	return r;
}

int fs_lseek(struct fs *fs, uint64_t ino, uint64_t off, int whence, uint64_t *ret_off)
{
	struct fs_inode in;
	struct ext x;
	int r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	fs_ino_rdlock(fs, ino);
	r = get_regular(fs, ino, &in);
	if (r < 0)
		goto out;
	if (off >= in.size) {
		r = -ENXIO;
		goto out;
	}
	if (in.pages == 0) {
		uint8_t data[FS_INLINE_MAX];
		unsigned ilen;
		r = inline_get(fs, &in, data, &ilen);
		if (r < 0)
			goto out;
		if (whence == SEEK_DATA) {
			if (off < ilen)
				*ret_off = off;
			else
				r = -ENXIO;
		} else {
			*ret_off = off < ilen ? ilen : off;
		}
		goto out;
	}
	uint64_t page = off >> BM_PAGE_SHIFT;
	r = ext_at_or_after(fs, ino, page, &x);
	if (whence == SEEK_DATA) {
		if (r == -ENOENT) {
			r = -ENXIO;
			goto out;
		}
		if (r < 0)
			goto out;
		uint64_t at = x.start > page ? x.start << BM_PAGE_SHIFT : off;
		if (at >= in.size)
			r = -ENXIO;
		else
			*ret_off = at;
		goto out;
	}
	/* SEEK_HOLE: follow extents while they touch. */
	uint64_t pos = page;
	while (r == 0 && x.start <= pos) {
		pos = x.start + x.n;
		r = ext_at_or_after(fs, ino, pos, &x);
	}
	if (r < 0 && r != -ENOENT)
		goto out;
	r = 0;
	uint64_t hole = pos == page ? off : pos << BM_PAGE_SHIFT;
	*ret_off = hole < in.size ? hole : in.size;
out:
	fs_ino_unlock(fs, ino);
	return r;
}

#define COPY_CHUNK (1u << 20)

ssize_t fs_copy_range(struct fs *fs, uint64_t ino_in, uint64_t off_in, uint64_t ino_out,
		      uint64_t off_out, size_t len)
{
	uint8_t *buf;
	size_t done = 0;
	ssize_t r = 0;

	if (fs->read_only)
		return -EROFS;
	buf = malloc(COPY_CHUNK);
	if (!buf)
		return -ENOMEM;
	while (done < len) {
		size_t want = len - done < COPY_CHUNK ? len - done : COPY_CHUNK;
		ssize_t got = fs_read(fs, ino_in, off_in + done, want, buf);
		if (got <= 0) {
			r = got;
			break;
		}
		ssize_t put = fs_write(fs, ino_out, off_out + done, buf, (size_t)got);
		if (put < 0) {
			r = put;
			break;
		}
		done += (size_t)put;
		if ((size_t)put < (size_t)got || (size_t)got < want)
			break;
	}
	free(buf);
	if (done > 0)
		return (ssize_t)done;
	return r;
}

struct resid_ctx {
	struct fs *fs;
	uint64_t ino;
	uint64_t resident, total;
	int err;
};

static bool resid_fn(void *vctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct resid_ctx *c = vctx;
	struct ext x;

	if (klen != FS_KEY_LEN || !fs_key_is(key, klen, c->ino, FS_REC_EXTENT))
		return false;
	c->err = ext_decode(c->fs, c->ino, key, val, vlen, &x);
	if (c->err)
		return false;
	c->total += x.n;
	for (uint64_t p = x.pid; p < x.pid + x.n; p++)
		c->resident += bm_is_resident(c->fs->bm, p);
	return true;
}

int fs_residency(struct fs *fs, uint64_t ino, uint64_t *ret_resident, uint64_t *ret_total)
{
	struct fs_inode in;
	uint8_t key[FS_KEY_LEN];
	struct resid_ctx c = {.fs = fs, .ino = ino};
	int r;

	fs_ino_rdlock(fs, ino);
	r = get_regular(fs, ino, &in);
	if (r == 0) {
		fs_key(key, ino, FS_REC_EXTENT, 0);
		r = bt_scan_asc(&fs->tree, key, sizeof(key), resid_fn, &c);
		if (r == 0)
			r = c.err;
	}
	fs_ino_unlock(fs, ino);
	if (r < 0)
		return r;
	*ret_resident = c.resident;
	*ret_total = c.total;
	return 0;
}
