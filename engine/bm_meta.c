/*
 * bm_meta.c: the image's metadata outside the pool: formatting, the
 * superblock, the allocation bitmap and the checksum table, and size parsing.
 *
 * The bitmap and checksum table are loaded whole at open and written back a
 * page at a time, only the pages that changed (tracked in bmp_dirty and
 * cs_dirty), so a flush after a few writes costs a few page writes, not a
 * rewrite of tables that grow with the image.
 */
#include "engine/bm_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/log.h"

static uint64_t get_u64(const uint8_t *p, unsigned off)
{
	uint64_t v;
	memcpy(&v, p + off, 8);
	return v;
}

static void put_u64(uint8_t *p, unsigned off, uint64_t v)
{
	memcpy(p + off, &v, 8);
}

static uint32_t get_u32(const uint8_t *p, unsigned off)
{
	uint32_t v;
	memcpy(&v, p + off, 4);
	return v;
}

static void put_u32(uint8_t *p, unsigned off, uint32_t v)
{
	memcpy(p + off, &v, 4);
}

uint64_t bm_page_csum(const void *page)
{
	uint64_t c = XXH3_64bits(page, BM_PAGE_SIZE);
	if (c == 0)
		return 1;
	return c >= BM_CSUM_COPY ? c - 2 : c; /* the two reserved values */
}

/* The seal of checksum-table page @i: seeded with its index, so that a
 * table page written in another's place (a misdirected write) fails too;
 * never 0, so that a zeroed page fails. */
static uint64_t cs_seal_of(const uint8_t *page, uint64_t i)
{
	uint64_t c = XXH3_64bits_withSeed(page, BM_CS_SEAL_OFF, i);
	return c ? c : 1;
}

static bool cs_page_sealed(const uint8_t *page, uint64_t i)
{
	uint64_t v;
	memcpy(&v, page + BM_CS_SEAL_OFF, 8);
	return v == cs_seal_of(page, i);
}

void bm_cs_page_fill(struct bm *bm, uint64_t i, uint8_t *page)
{
	/* Entries change under us (relaxed atomics); copy them out one by one
	 * so the image holds a consistent value per entry. */
	for (unsigned j = 0; j < BM_PIDS_PER_CS; j++) {
		uint64_t pid = i * BM_PIDS_PER_CS + j;
		uint64_t v = pid < bm->page_count
				     ? atomic_load_explicit(&bm->csum[pid], memory_order_relaxed)
				     : 0;
		memcpy(page + 8 * j, &v, 8);
	}
	uint64_t seal = cs_seal_of(page, i);
	memcpy(page + BM_CS_SEAL_OFF, &seal, 8);
}

bool bm_cs_page_of(const struct bm *bm, uint64_t pid, uint64_t *ret_i)
{
	if (pid >= bm->cs_start && pid < bm->cs_start + bm->cs_pages) {
		*ret_i = pid - bm->cs_start;
		return true;
	}
	if (pid >= bm->cs2_start && pid < bm->cs2_start + bm->cs_pages) {
		*ret_i = pid - bm->cs2_start;
		return true;
	}
	return false;
}

int bm_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int bm_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void sb_seal(uint8_t *sb)
{
	put_u64(sb, SB_OFF_CSUM, XXH3_64bits(sb, SB_OFF_CSUM));
}

/* Is this page a superblock of ours, of any version? */
static bool sb_has_magic(const uint8_t *sb)
{
	return memcmp(sb, BM_MAGIC, 8) == 0;
}

static int device_size(int fd, uint64_t *ret)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
			return -errno;
		*ret = sz;
	} else if (S_ISREG(st.st_mode)) {
		*ret = (uint64_t)st.st_size;
	} else {
		return -ENOTBLK;
	}
	return 0;
}

int bm_format(const char *path, uint64_t size_bytes, unsigned flags)
{
	uint8_t *buf = NULL;
	struct stat st;
	uint64_t pages, jr_pages, bmp_pages, cs_pages, first_data, cur = 0;
	int fd, r;
	const size_t chunk = 1u << 20;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (posix_memalign((void **)&buf, BM_PAGE_SIZE, chunk)) {
		r = -ENOMEM;
		goto out;
	}
	r = device_size(fd, &cur);
	if (r < 0)
		goto out;
	if (cur >= BM_PAGE_SIZE && !(flags & BM_FORMAT_FORCE)) {
		r = bm_pread_all(fd, buf, BM_PAGE_SIZE, 0);
		if (r < 0)
			goto out;
		if (sb_has_magic(buf)) {
			r = -EEXIST;
			goto out;
		}
	}
	if (S_ISREG(st.st_mode)) {
		if (size_bytes == 0)
			size_bytes = cur;
		if (ftruncate(fd, (off_t)size_bytes) < 0) {
			r = -errno;
			goto out;
		}
	} else if (size_bytes == 0 || size_bytes > cur) {
		size_bytes = cur;
	}

	pages = size_bytes / BM_PAGE_SIZE;
	jr_pages = bm_journal_pages_for(pages);
	bmp_pages = (pages + BM_PIDS_PER_BMP - 1) / BM_PIDS_PER_BMP;
	cs_pages = (pages + BM_PIDS_PER_CS - 1) / BM_PIDS_PER_CS;
	first_data = 1 + jr_pages + bmp_pages + 2 * cs_pages;
	if (pages < first_data + 64) {
		r = -EINVAL;
		goto out;
	}

	/* Zero the journal's first page and the bitmap (an old image may lie
	 * beneath), write both copies of the checksum table as empty sealed
	 * pages, then mark the metadata pages themselves as in use. */
	memset(buf, 0, chunk);
	r = bm_pwrite_all(fd, buf, BM_PAGE_SIZE, BM_PAGE_SIZE);
	for (uint64_t off = (1 + jr_pages) * BM_PAGE_SIZE;
	     r == 0 && off < (1 + jr_pages + bmp_pages) * BM_PAGE_SIZE; off += chunk) {
		uint64_t n = (1 + jr_pages + bmp_pages) * BM_PAGE_SIZE - off;
		r = bm_pwrite_all(fd, buf, n < chunk ? n : chunk, off);
	}
	for (uint64_t c = 0; r == 0 && c < 2; c++) {
		for (uint64_t i0 = 0; r == 0 && i0 < cs_pages; i0 += chunk / BM_PAGE_SIZE) {
			uint64_t n = cs_pages - i0 < chunk / BM_PAGE_SIZE ? cs_pages - i0
									 : chunk / BM_PAGE_SIZE;
			for (uint64_t k = 0; k < n; k++) {
				uint64_t seal = cs_seal_of(buf, i0 + k);
				memcpy(buf + k * BM_PAGE_SIZE + BM_CS_SEAL_OFF, &seal, 8);
			}
			r = bm_pwrite_all(fd, buf, n * BM_PAGE_SIZE,
					  (1 + jr_pages + bmp_pages + c * cs_pages + i0) *
						  BM_PAGE_SIZE);
		}
	}
	memset(buf, 0, chunk);
	if (r < 0)
		goto out;
	for (uint64_t p = 0; p < first_data; p++)
		((uint64_t *)buf)[p / 64] |= UINT64_C(1) << (p % 64);
	/* first_data grows as pages/512 plus the journal, so the bits of the
	 * metadata pages fit in the 1 MiB buffer for any image below 2 PiB. */
	for (uint64_t bp = 0; bp * BM_PIDS_PER_BMP < first_data; bp++) {
		r = bm_pwrite_all(fd, buf + bp * BM_PAGE_SIZE, BM_PAGE_SIZE,
				  (1 + jr_pages + bp) * BM_PAGE_SIZE);
		if (r < 0)
			goto out;
	}

	memset(buf, 0, BM_PAGE_SIZE);
	memcpy(buf, BM_MAGIC, 8);
	put_u32(buf, SB_OFF_VERSION, BM_FORMAT_VERSION);
	put_u32(buf, SB_OFF_PAGESIZE, BM_PAGE_SIZE);
	put_u64(buf, SB_OFF_PAGES, pages);
	put_u64(buf, SB_OFF_JRSTART, 1);
	put_u64(buf, SB_OFF_JRPAGES, jr_pages);
	put_u64(buf, SB_OFF_BMSTART, 1 + jr_pages);
	put_u64(buf, SB_OFF_BMPAGES, bmp_pages);
	put_u64(buf, SB_OFF_CSSTART, 1 + jr_pages + bmp_pages);
	put_u64(buf, SB_OFF_CSPAGES, cs_pages);
	put_u64(buf, SB_OFF_CS2START, 1 + jr_pages + bmp_pages + cs_pages);
	put_u64(buf, SB_OFF_DATA, first_data);
	put_u64(buf, SB_OFF_FREE, pages - first_data);
	put_u32(buf, SB_OFF_FLAGS,
		SB_FLAG_CLEAN | ((flags & BM_FORMAT_SINGLE) ? 0 : SB_FLAG_DUP));
	sb_seal(buf);
	r = bm_pwrite_all(fd, buf, BM_PAGE_SIZE, 0);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
out:
	free(buf);
	close(fd);
	return r;
}

static void *alloc_aligned_zero(size_t bytes)
{
	void *p = NULL;
	size_t rounded = (bytes + BM_PAGE_SIZE - 1) & ~(size_t)(BM_PAGE_SIZE - 1);
	if (posix_memalign(&p, BM_PAGE_SIZE, rounded ? rounded : BM_PAGE_SIZE))
		return NULL;
	memset(p, 0, rounded);
	return p;
}

/* Checksum-table page @i failed its seal; @copy_ok: its copy did not. */
static void cs_damaged(struct bm *bm, uint64_t i, bool copy_ok)
{
	/* Written again (both copies) by the next checkpoint of a writable
	 * open; a read-only one goes on from memory. */
	bm->cs_dirty[i] = 1;
	if (copy_ok) {
		if (bm->cs_fixed++ == 0)
			vs_log(VS_LOG_WARN, "%s: checksum-table page %llu (page %llu of the image) "
					    "is damaged: using its copy at page %llu%s",
			       bm->path, (unsigned long long)i,
			       (unsigned long long)(bm->cs_start + i),
			       (unsigned long long)(bm->cs2_start + i),
			       bm->read_only ? "" : ", and rewriting it");
		return;
	}
	if (bm->cs_lost++ == 0)
		bm->cs_lost_first = i;
}

/* Read the checksum table into bm->csum, page by page: a page whose seal
 * fails is taken from the copy (and both are written again at the next
 * checkpoint); when both fail, the entries of the allocated pages it
 * covers become BM_CSUM_UNKNOWN. Reads in runs of up to 256 pages; the
 * bitmap must be loaded. */
static int cs_load(struct bm *bm)
{
	const uint64_t run = 256;
	uint8_t *buf = alloc_aligned_zero(run * BM_PAGE_SIZE), *alt = alloc_aligned_zero(BM_PAGE_SIZE);
	int r = 0;

	if (!buf || !alt) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t i0 = 0; i0 < bm->cs_pages && r == 0; i0 += run) {
		uint64_t n = bm->cs_pages - i0 < run ? bm->cs_pages - i0 : run;
		r = bm_pread_all(bm->fd, buf, n * BM_PAGE_SIZE, (bm->cs_start + i0) * BM_PAGE_SIZE);
		for (uint64_t k = 0; k < n && r == 0; k++) {
			uint64_t i = i0 + k;
			const uint8_t *page = buf + k * BM_PAGE_SIZE;
			if (!cs_page_sealed(page, i)) {
				r = bm_pread_all(bm->fd, alt, BM_PAGE_SIZE,
						 (bm->cs2_start + i) * BM_PAGE_SIZE);
				if (r < 0)
					break;
				page = cs_page_sealed(alt, i) ? alt : NULL;
				cs_damaged(bm, i, page != NULL);
			}
			for (unsigned j = 0; j < BM_PIDS_PER_CS; j++) {
				uint64_t pid = i * BM_PIDS_PER_CS + j, v = 0;
				if (page)
					v = get_u64(page, 8 * j);
				else if (pid >= bm->first_data && pid < bm->page_count &&
					 (bm->bitmap[pid / 64] & (UINT64_C(1) << (pid % 64))))
					v = BM_CSUM_UNKNOWN;
				if (pid >= bm->page_count)
					v = 0; /* past the end: nothing to say */
				atomic_store_explicit(&bm->csum[pid], v, memory_order_relaxed);
			}
		}
	}
	if (r == 0 && bm->cs_lost)
		vs_log(VS_LOG_ERR, "%s: %llu checksum-table pages (the first covers pages %llu to "
				   "%llu) are damaged in both copies: the pages they cover cannot "
				   "be verified and fail to read; fsck.virtuscale -y re-verifies the "
				   "tree's nodes among them and lists the files of the others",
		       bm->path, (unsigned long long)bm->cs_lost,
		       (unsigned long long)(bm->cs_lost_first * BM_PIDS_PER_CS),
		       (unsigned long long)(bm->cs_lost_first * BM_PIDS_PER_CS + BM_PIDS_PER_CS - 1));
out:
	free(buf);
	free(alt);
	return r;
}

/* Read and validate the superblock, then the bitmap and checksum table.
 * bm->fd and bm->path are set; fills the rest of the layout. */
int bm_meta_load(struct bm *bm)
{
	uint8_t *sb;
	uint64_t size, pages;
	int r;

	sb = alloc_aligned_zero(BM_PAGE_SIZE);
	if (!sb)
		return -ENOMEM;
	bm->sb = sb;
	r = device_size(bm->fd, &size);
	if (r < 0)
		return r;
	if (size < BM_PAGE_SIZE) {
		vs_log(VS_LOG_ERR, "%s: too small to be a VirtuScale image", bm->path);
		return -EUCLEAN;
	}
	r = bm_pread_all(bm->fd, sb, BM_PAGE_SIZE, 0);
	if (r < 0)
		return r;
	if (!sb_has_magic(sb)) {
		/* The journal (always at page 1) holds the superblock of the
		 * last checkpoint: try it before giving up. Never advise mkfs
		 * here: on a damaged image it erases what is left. */
		bool zeroed = true;
		for (unsigned i = 0; i < BM_PAGE_SIZE && zeroed; i++)
			zeroed = sb[i] == 0;
		r = bm_journal_recover(bm, size / BM_PAGE_SIZE, zeroed ? "all zeros" : "no magic",
				       0);
		if (r > 0)
			r = bm_pread_all(bm->fd, sb, BM_PAGE_SIZE, 0);
		if (r < 0 && r != -EROFS)
			return r;
		if (r == 0 && sb_has_magic(sb)) {
			vs_log(VS_LOG_WARN, "%s: the superblock was damaged (%s): restored from "
					    "the journal's copy", bm->path,
			       zeroed ? "all zeros" : "no magic");
		} else if (r == -EROFS) {
			return -EROFS; /* said why; a read-write open restores it */
		} else if (zeroed) {
			vs_log(VS_LOG_ERR,
			       "%s: the superblock (the first 4 KiB) is all zeros, and the journal "
			       "holds no copy of it: if this image held a VirtuScale filesystem, "
			       "keep a copy of the image, and do not run mkfs.virtuscale on it "
			       "(that erases what is left)", bm->path);
			return -EUCLEAN;
		} else {
			vs_log(VS_LOG_ERR, "%s: not a VirtuScale image (no VirtuScale superblock at "
					   "its start)", bm->path);
			return -EUCLEAN;
		}
	}
	if (get_u32(sb, SB_OFF_VERSION) != BM_FORMAT_VERSION) {
		vs_log(VS_LOG_ERR, "%s: image format version %u, this build reads version %u%s",
		       bm->path, get_u32(sb, SB_OFF_VERSION), BM_FORMAT_VERSION,
		       get_u32(sb, SB_OFF_VERSION) == 1
			       ? " (version 1 has a single checksum table without seals: mount "
				 "it with the build that made it and copy the files to a new "
				 "image)"
			       : "");
		return -EPROTONOSUPPORT;
	}
	/* A superblock torn by a crash in the middle of a checkpoint is
	 * rewritten from the journal; so may be any other page. */
	bool sb_ok = get_u64(sb, SB_OFF_CSUM) == XXH3_64bits(sb, SB_OFF_CSUM);
	r = bm_journal_recover(bm, size / BM_PAGE_SIZE, sb_ok ? NULL : "checksum mismatch",
			       sb_ok ? get_u64(sb, SB_OFF_APPLIED) : 0);
	if (r < 0)
		return r;
	if (r > 0) {
		r = bm_pread_all(bm->fd, sb, BM_PAGE_SIZE, 0);
		if (r < 0)
			return r;
		sb_ok = get_u64(sb, SB_OFF_CSUM) == XXH3_64bits(sb, SB_OFF_CSUM);
	}
	if (!sb_ok)
		return VS_CORRUPT("%s: the superblock is damaged (checksum mismatch), and the "
				  "journal holds no copy of it to restore it from", bm->path);

	pages = get_u64(sb, SB_OFF_PAGES);
	bm->jr_start = get_u64(sb, SB_OFF_JRSTART);
	bm->jr_pages = get_u64(sb, SB_OFF_JRPAGES);
	bm->bmp_start = get_u64(sb, SB_OFF_BMSTART);
	bm->bmp_pages = get_u64(sb, SB_OFF_BMPAGES);
	bm->cs_start = get_u64(sb, SB_OFF_CSSTART);
	bm->cs_pages = get_u64(sb, SB_OFF_CSPAGES);
	bm->cs2_start = get_u64(sb, SB_OFF_CS2START);
	bm->first_data = get_u64(sb, SB_OFF_DATA);
	if (get_u32(sb, SB_OFF_PAGESIZE) != BM_PAGE_SIZE || pages > UINT64_MAX / BM_PAGE_SIZE ||
	    bm->jr_start != 1 || bm->jr_pages != bm_journal_pages_for(pages) ||
	    bm->bmp_start != 1 + bm->jr_pages ||
	    bm->bmp_pages != (pages + BM_PIDS_PER_BMP - 1) / BM_PIDS_PER_BMP ||
	    bm->cs_start != bm->bmp_start + bm->bmp_pages ||
	    bm->cs_pages != (pages + BM_PIDS_PER_CS - 1) / BM_PIDS_PER_CS ||
	    bm->cs2_start != bm->cs_start + bm->cs_pages ||
	    bm->first_data != bm->cs2_start + bm->cs_pages || bm->first_data >= pages)
		return VS_CORRUPT("%s: the superblock is damaged: its layout does not add up "
				  "(pages %llu, image %llu bytes)", bm->path,
				  (unsigned long long)pages, (unsigned long long)size);
	/* A sound superblock naming more pages than there are: the file was
	 * cut short (a copy that did not finish, a partition too small). */
	if (pages * BM_PAGE_SIZE > size) {
		vs_log(VS_LOG_ERR,
		       "%s: truncated: the image is %llu bytes, its superblock says %llu; copy "
		       "the whole image again, or, to save what is left, extend it (truncate "
		       "-s %llu) and run fsck.virtuscale on it",
		       bm->path, (unsigned long long)size,
		       (unsigned long long)(pages * BM_PAGE_SIZE),
		       (unsigned long long)(pages * BM_PAGE_SIZE));
		return -EUCLEAN;
	}
	bm->page_count = pages;
	/* The last checkpoint home: the one the superblock names, or a later
	 * one the journal holds and the home pages already match (a crash
	 * after its home sync); the numbers go on from there. */
	uint64_t applied = get_u64(sb, SB_OFF_APPLIED);
	if (bm->jr_home_seq > applied)
		applied = bm->jr_home_seq;
	atomic_store(&bm->ckpt_seq, applied);
	atomic_store(&bm->ckpt_durable, applied);
	atomic_store(&bm->ckpt_done, applied);
	bm->was_clean = (get_u32(sb, SB_OFF_FLAGS) & SB_FLAG_CLEAN) != 0;
	bm->dup = (get_u32(sb, SB_OFF_FLAGS) & SB_FLAG_DUP) != 0;

	bm->bitmap = alloc_aligned_zero(bm->bmp_pages * BM_PAGE_SIZE);
	bm->csum = alloc_aligned_zero(bm->cs_pages * BM_PIDS_PER_CS * 8);
	bm->bmp_dirty = calloc(bm->bmp_pages, 1);
	bm->cs_dirty = calloc(bm->cs_pages, 1);
	if (!bm->bitmap || !bm->csum || !bm->bmp_dirty || !bm->cs_dirty)
		return -ENOMEM;
	r = bm_pread_all(bm->fd, bm->bitmap, bm->bmp_pages * BM_PAGE_SIZE,
			 bm->bmp_start * BM_PAGE_SIZE);
	if (r < 0)
		return r;
	r = cs_load(bm);
	if (r < 0)
		return r;
	r = bm_dup_after_replay(bm); /* the copies of what recovery wrote */
	if (r < 0)
		return r;

	/* Count free pages; bits past the end must be clear. */
	uint64_t used = 0;
	for (uint64_t w = 0; w < (pages + 63) / 64; w++)
		used += (uint64_t)__builtin_popcountll(bm->bitmap[w]);
	uint64_t unmarked = 0, first_unmarked = 0;
	for (uint64_t p = 0; p < bm->first_data; p++) {
		if (bm->bitmap[p / 64] & (UINT64_C(1) << (p % 64)))
			continue;
		if (unmarked++ == 0)
			first_unmarked = p;
		bm->bitmap[p / 64] |= UINT64_C(1) << (p % 64);
		bm->bmp_dirty[p / BM_PIDS_PER_BMP] = 1;
		used++;
	}
	if (unmarked && !bm->bitmap_repair)
		return VS_CORRUPT("%s: the allocation bitmap is damaged (%llu metadata pages, "
				  "the first %llu, marked free): run fsck.virtuscale on the image "
				  "to rebuild it from the tree", bm->path,
				  (unsigned long long)unmarked, (unsigned long long)first_unmarked);
	bm->meta_unmarked = unmarked;
	bm->meta_unmarked_first = first_unmarked;
	if (unmarked)
		vs_log(VS_LOG_WARN, "%s: the allocation bitmap is damaged (%llu metadata pages, "
				    "the first %llu, marked free)", bm->path,
		       (unsigned long long)unmarked, (unsigned long long)first_unmarked);
	bm->free_pages = pages - used;
	bm->alloc_next = bm->first_data;
	bm->cbitmap = alloc_aligned_zero(bm->bmp_pages * BM_PAGE_SIZE);
	if (!bm->cbitmap)
		return -ENOMEM;
	memcpy((void *)bm->cbitmap, bm->bitmap, bm->bmp_pages * BM_PAGE_SIZE);
	return 0;
}

uint64_t bm_csum_table_damage(struct bm *bm, uint64_t *ret_fixed)
{
	*ret_fixed = bm->cs_fixed;
	return bm->cs_lost;
}

int64_t bm_csum_table_scrub(struct bm *bm)
{
	uint8_t *got = alloc_aligned_zero(BM_PAGE_SIZE), *want = alloc_aligned_zero(BM_PAGE_SIZE);
	int64_t bad = 0;
	int r = 0;

	if (!got || !want)
		r = -ENOMEM;
	for (uint64_t i = 0; i < bm->cs_pages && r == 0; i++) {
		r = bm_pread_all(bm->fd, got, BM_PAGE_SIZE, (bm->cs2_start + i) * BM_PAGE_SIZE);
		if (r < 0)
			break;
		bm_cs_page_fill(bm, i, want);
		if (memcmp(got, want, BM_PAGE_SIZE) != 0) {
			bad++;
			atomic_store(&bm->cs_dirty[i], 1);
		}
	}
	free(got);
	free(want);
	return r < 0 ? r : bad;
}

bool bm_csum_unknown(struct bm *bm, uint64_t pid)
{
	return pid < bm->page_count &&
	       atomic_load_explicit(&bm->csum[pid], memory_order_relaxed) == BM_CSUM_UNKNOWN;
}

int bm_read_raw(struct bm *bm, uint64_t pid, void *buf)
{
	if (pid >= bm->page_count)
		return -EINVAL;
	void *bounce = alloc_aligned_zero(BM_PAGE_SIZE); /* the image may be O_DIRECT */
	if (!bounce)
		return -ENOMEM;
	int r = bm_pread_all(bm->fd, bounce, BM_PAGE_SIZE, pid * BM_PAGE_SIZE);
	if (r == 0)
		memcpy(buf, bounce, BM_PAGE_SIZE);
	free(bounce);
	return r;
}

int bm_csum_adopt(struct bm *bm, uint64_t pid, const void *page)
{
	if (pid < bm->first_data || !bm_csum_unknown(bm, pid) ||
	    ps_state(ps_load(&bm->state[pid])) != PS_EVICTED)
		return -EINVAL;
	bm_csum_set(bm, pid, bm_page_csum(page));
	return 0;
}

uint64_t bm_bitmap_unmarked(struct bm *bm, uint64_t *ret_first)
{
	*ret_first = bm->meta_unmarked_first;
	return bm->meta_unmarked;
}

void bm_csum_set(struct bm *bm, uint64_t pid, uint64_t csum)
{
	atomic_store_explicit(&bm->csum[pid], csum, memory_order_relaxed);
	if (!atomic_load_explicit(&bm->cs_dirty[pid / BM_PIDS_PER_CS], memory_order_relaxed))
		atomic_store_explicit(&bm->cs_dirty[pid / BM_PIDS_PER_CS], 1,
				      memory_order_relaxed);
}

/* Write the changed pages of the bitmap and checksum table, then the
 * superblock (with @clean as its clean flag). Does not sync. */
int bm_meta_write(struct bm *bm, bool clean)
{
	uint8_t *page;
	int r = 0;

	if (bm->read_only)
		return 0;
	page = alloc_aligned_zero(BM_PAGE_SIZE);
	if (!page)
		return -ENOMEM;

	for (uint64_t i = 0; i < bm->cs_pages && r == 0; i++) {
		if (!atomic_exchange_explicit(&bm->cs_dirty[i], 0, memory_order_relaxed))
			continue;
		bm_cs_page_fill(bm, i, page);
		r = bm_io_write(bm, page, BM_PAGE_SIZE, (bm->cs_start + i) * BM_PAGE_SIZE);
		if (r == 0)
			r = bm_io_write(bm, page, BM_PAGE_SIZE, (bm->cs2_start + i) * BM_PAGE_SIZE);
		if (r < 0)
			atomic_store(&bm->cs_dirty[i], 1);
	}

	pthread_mutex_lock(&bm->alloc_mu);
	for (uint64_t i = 0; i < bm->bmp_pages && r == 0; i++) {
		if (!bm->bmp_dirty[i])
			continue;
		r = bm_io_write(bm, (uint8_t *)bm->bitmap + i * BM_PAGE_SIZE, BM_PAGE_SIZE,
				(bm->bmp_start + i) * BM_PAGE_SIZE);
		if (r == 0)
			bm->bmp_dirty[i] = 0;
	}
	pthread_mutex_unlock(&bm->alloc_mu);

	if (r == 0) {
		bm_meta_sb_snapshot(bm, page, clean, atomic_load(&bm->ckpt_done));
		r = bm_io_write(bm, page, BM_PAGE_SIZE, 0);
	}
	free(page);
	return r;
}

/* Copy the superblock into @page with the current free count, @clean and
 * @applied (the last checkpoint written home), sealed. */
int bm_meta_sb_snapshot(struct bm *bm, uint8_t *page, bool clean, uint64_t applied)
{
	pthread_mutex_lock(&bm->alloc_mu);
	uint64_t free_pages = bm->free_pages;
	pthread_mutex_unlock(&bm->alloc_mu);
	pthread_mutex_lock(&bm->sb_mu);
	put_u64(bm->sb, SB_OFF_FREE, free_pages);
	put_u64(bm->sb, SB_OFF_APPLIED, applied);
	uint32_t flags = get_u32(bm->sb, SB_OFF_FLAGS);
	flags = clean ? (flags | SB_FLAG_CLEAN) : (flags & ~SB_FLAG_CLEAN);
	put_u32(bm->sb, SB_OFF_FLAGS, flags);
	sb_seal(bm->sb);
	memcpy(page, bm->sb, BM_PAGE_SIZE);
	pthread_mutex_unlock(&bm->sb_mu);
	return 0;
}

/* Make the superblock image @page say @applied, sealed again. */
void bm_meta_sb_set_applied(uint8_t *page, uint64_t applied)
{
	put_u64(page, SB_OFF_APPLIED, applied);
	sb_seal(page);
}

/* Called at open for writing: count the mount and mark the image in use
 * (not clean) before anything else is written. With a journal the new
 * superblock goes through a checkpoint of its own: written in place, a
 * power cut could tear it while the journal holds nothing to restore it
 * from (a fresh image, or a checkpoint that failed before its commit). */
int bm_meta_mark_open(struct bm *bm)
{
	pthread_mutex_lock(&bm->sb_mu);
	put_u64(bm->sb, SB_OFF_MOUNTS, get_u64(bm->sb, SB_OFF_MOUNTS) + 1);
	pthread_mutex_unlock(&bm->sb_mu);
	if (bm->journal) {
		atomic_store(&bm->meta_dirty, true);
		int r = bm_checkpoint(bm);
		atomic_store(&bm->n_checkpoints, 0); /* the stats count the session's */
		return r;
	}
	int r = bm_meta_write(bm, false);
	if (r == 0)
		r = bm_io_sync(bm);
	return r;
}

uint64_t bm_sb_get(struct bm *bm, unsigned slot)
{
	uint64_t v;
	if (slot >= BM_SB_SLOTS)
		return 0;
	pthread_mutex_lock(&bm->sb_mu);
	v = get_u64(bm->sb, SB_OFF_SLOTS + 8 * slot);
	pthread_mutex_unlock(&bm->sb_mu);
	return v;
}

uint64_t bm_sb_free_recorded(struct bm *bm)
{
	pthread_mutex_lock(&bm->sb_mu);
	uint64_t v = get_u64(bm->sb, SB_OFF_FREE);
	pthread_mutex_unlock(&bm->sb_mu);
	return v;
}

void bm_sb_set(struct bm *bm, unsigned slot, uint64_t value)
{
	if (slot >= BM_SB_SLOTS)
		return;
	pthread_mutex_lock(&bm->sb_mu);
	put_u64(bm->sb, SB_OFF_SLOTS + 8 * slot, value);
	pthread_mutex_unlock(&bm->sb_mu);
	atomic_store(&bm->meta_dirty, true);
}

int bm_parse_size(const char *s, uint64_t *ret_bytes)
{
	char *end;
	double v;
	uint64_t mult = 1;

	if (!s || !*s || !(isdigit((unsigned char)*s) || *s == '.'))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return -EINVAL;
	switch (toupper((unsigned char)*end)) {
	case 'K': mult = UINT64_C(1) << 10; end++; break;
	case 'M': mult = UINT64_C(1) << 20; end++; break;
	case 'G': mult = UINT64_C(1) << 30; end++; break;
	case 'T': mult = UINT64_C(1) << 40; end++; break;
	default: break;
	}
	if (mult > 1 && (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0))
		end += strlen(end);
	else if (mult == 1 && strcasecmp(end, "B") == 0)
		end++;
	if (*end)
		return -EINVAL;
	if (v * (double)mult >= 18446744073709551616.0)
		return -EINVAL;
	*ret_bytes = (uint64_t)(v * (double)mult);
	return 0;
}
