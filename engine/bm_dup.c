/*
 * bm_dup.c: a second copy of every tree node ("metadata dup", what
 * mkfs.virtuscale makes unless told --metadata single; SB_FLAG_DUP).
 *
 * The B-tree allocates its nodes and overflow pages with bm_alloc_node. On
 * a dup image that takes two neighbouring pages: the node at pid p, its
 * copy at p + 1, whose checksum-table entry is BM_CSUM_COPY (persisted with
 * the table and the bitmap, like any allocation). From then on:
 *
 *   - every write of p home writes p + 1 from the same bytes, in the same
 *     batch (bm_io_write_pages): eviction's write-back, the checkpoint's
 *     writes home, and journal recovery (journal_write_home, and
 *     bm_dup_after_replay for the recovery at open, which runs before the
 *     table is in memory);
 *   - a load of p whose bytes fail their checksum, or that cannot be read,
 *     reads p + 1 and checks it against p's checksum (the copy has the
 *     same bytes); when they pass, the load succeeds, and a writable pool
 *     writes them home over the damaged p at once (bm_dup_load);
 *   - bm_free of p frees p + 1 with it.
 *
 * The copy is the next page: it protects against one bad page (a media
 * error, a torn or misdirected write, a stray write into the image), not
 * against the loss of a whole region of the disk. It costs one more page
 * write for every node written home (the journal is not doubled) and a
 * page of space per node. File data pages have no copy.
 *
 * A node whose pair could not be found (no two free neighbours) is
 * allocated alone and has no copy; nothing else depends on it having one.
 */
#include "engine/bm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"

static bool has_copy(const struct bm *bm, uint64_t pid)
{
	return pid + 1 < bm->page_count &&
	       atomic_load_explicit(&bm->csum[pid + 1], memory_order_relaxed) == BM_CSUM_COPY;
}

bool bm_is_copy(struct bm *bm, uint64_t pid)
{
	return pid < bm->page_count && pid > bm->first_data &&
	       atomic_load_explicit(&bm->csum[pid], memory_order_relaxed) == BM_CSUM_COPY;
}

bool bm_metadata_dup(const struct bm *bm)
{
	return bm->dup;
}

int bm_alloc_node(struct bm *bm, uint64_t *ret_pid)
{
	if (bm->dup) {
		uint64_t first;
		int r = bm_alloc(bm, 2, BM_PID_NONE, &first);
		if (r == 0) {
			bm_csum_set(bm, first + 1, BM_CSUM_COPY);
			bm_s3_born(bm, first, 1, true);
			*ret_pid = first;
			return 0;
		}
		if (r != -ENOSPC)
			return r;
		/* no two free neighbours (or too little room for them): a
		 * node without a copy */
	}
	int r = bm_alloc(bm, 1, BM_PID_NONE, ret_pid);
	if (r == 0)
		bm_s3_born(bm, *ret_pid, 1, true);
	return r;
}

/* Called by bm_free under alloc_mu with the last page of the run it freed:
 * the page's copy, if it has one, goes too. Returns the pid of the copy
 * (its checksum entry cleared; the caller clears its bit), or
 * BM_PID_NONE. */
uint64_t bm_dup_free_copy(struct bm *bm, uint64_t pid)
{
	if (has_copy(bm, pid)) {
		bm_csum_set(bm, pid + 1, 0);
		return pid + 1;
	}
	return BM_PID_NONE;
}

void bm_io_write_pages(struct bm *bm, struct bm_thread *t, void *const *bufs,
		       const uint64_t *pids, unsigned n, int *res)
{
	if (!bm->dup) {
		bm_io_write_batch(bm, t, bufs, pids, n, res);
		return;
	}
	/* The pages of a chunk, then the copies of those that have one, in
	 * one batch. Whether a page has a copy is read once: a checkpoint
	 * writes buffers, not held pages, and a node may be freed (or its
	 * pid handed out again) meanwhile; writing a freed page's copy is
	 * harmless, a count that changed between two looks would not be. */
	void *b[2 * BM_BATCH_MAX];
	uint64_t p[2 * BM_BATCH_MAX];
	int rr[2 * BM_BATCH_MAX];
	unsigned of[BM_BATCH_MAX]; /* page i's copy is at b[of[i]], or 0 */
	for (unsigned base = 0; base < n; base += BM_BATCH_MAX) {
		unsigned m = n - base < BM_BATCH_MAX ? n - base : BM_BATCH_MAX, k = m;
		for (unsigned i = 0; i < m; i++) {
			b[i] = bufs[base + i];
			p[i] = pids[base + i];
			of[i] = 0;
			if (has_copy(bm, p[i])) {
				of[i] = k;
				b[k] = b[i];
				p[k] = p[i] + 1;
				k++;
			}
		}
		bm_io_write_batch(bm, t, b, p, k, rr);
		BM_COUNT(t, copy_writes, k - m);
		BM_COUNT(t, write_bytes, (uint64_t)(k - m) * BM_PAGE_SIZE);
		/* A page counts as written when it and its copy are. */
		for (unsigned i = 0; i < m; i++)
			res[base + i] = rr[i] < 0 || !of[i] ? rr[i] : rr[of[i]];
	}
}

bool bm_dup_load(struct bm *bm, struct bm_thread *t, uint64_t pid, uint64_t want)
{
	if (!has_copy(bm, pid) || want == 0 || want == BM_CSUM_UNKNOWN)
		return false;
	uint8_t *frame = bm_page(bm, pid);
	int r = bm_pread_all(bm->fd, frame, BM_PAGE_SIZE, (pid + 1) << BM_PAGE_SHIFT);
	if (r < 0 || bm_page_csum(frame) != want) {
		vs_log(VS_LOG_ERR, "%s: page %llu and its copy at page %llu are both damaged",
		       bm->path, (unsigned long long)pid, (unsigned long long)pid + 1);
		return false;
	}
	BM_COUNT(t, copy_reads, 1);
	/* The page is held exclusively and not resident: nobody else can be
	 * writing it home, and these are the bytes the table says it holds. */
	bool healed = !bm->read_only &&
		      bm_pwrite_all(bm->fd, frame, BM_PAGE_SIZE, pid << BM_PAGE_SHIFT) == 0;
	/* A read-only pool reads the copy at every load of the page: say so
	 * a few times, not at every load. */
	if (atomic_fetch_add_explicit(&bm->copy_logged, 1, memory_order_relaxed) < 16)
		vs_log(VS_LOG_WARN, "%s: page %llu is damaged: read its copy at page %llu%s",
		       bm->path, (unsigned long long)pid, (unsigned long long)pid + 1,
		       healed ? ", and rewrote it" : " (a writable mount rewrites it)");
	return true;
}

void bm_dup_note_replayed(struct bm *bm, uint64_t pid)
{
	if (bm->replayed_n == bm->replayed_cap) {
		uint64_t cap = bm->replayed_cap ? 2 * bm->replayed_cap : 256;
		uint64_t *p = realloc(bm->replayed, cap * sizeof(*p));
		if (!p) {
			bm->replayed_lost = true;
			return;
		}
		bm->replayed = p;
		bm->replayed_cap = cap;
	}
	bm->replayed[bm->replayed_n++] = pid;
}

int bm_dup_after_replay(struct bm *bm)
{
	uint8_t *page = NULL;
	uint64_t written = 0;
	int r = 0;

	if (bm->replayed_lost)
		vs_log(VS_LOG_WARN, "%s: out of memory noting the pages recovery wrote: their "
				    "copies are left as they were (fsck.virtuscale rewrites them)",
		       bm->path);
	if (bm->replayed_n && posix_memalign((void **)&page, BM_PAGE_SIZE, BM_PAGE_SIZE))
		r = -ENOMEM;
	for (uint64_t i = 0; i < bm->replayed_n && r == 0; i++) {
		uint64_t pid = bm->replayed[i];
		if (!has_copy(bm, pid))
			continue;
		r = bm_pread_all(bm->fd, page, BM_PAGE_SIZE, pid << BM_PAGE_SHIFT);
		if (r == 0)
			r = bm_pwrite_all(bm->fd, page, BM_PAGE_SIZE, (pid + 1) << BM_PAGE_SHIFT);
		written++;
	}
	if (r == 0 && written && fdatasync(bm->fd) < 0)
		r = -errno;
	free(page);
	free(bm->replayed);
	bm->replayed = NULL;
	bm->replayed_n = bm->replayed_cap = 0;
	return r;
}

int64_t bm_dup_scrub(struct bm *bm, bool repair, uint64_t *ret_fixed)
{
	uint8_t *a = NULL, *b = NULL;
	int64_t bad = 0;
	uint64_t fixed = 0;
	int r = 0;

	*ret_fixed = 0;
	if (posix_memalign((void **)&a, BM_PAGE_SIZE, BM_PAGE_SIZE) ||
	    posix_memalign((void **)&b, BM_PAGE_SIZE, BM_PAGE_SIZE)) {
		free(a);
		return -ENOMEM;
	}
	for (uint64_t pid = bm->first_data; pid + 1 < bm->page_count && r == 0; pid++) {
		uint64_t want = atomic_load_explicit(&bm->csum[pid], memory_order_relaxed);
		if (!has_copy(bm, pid) || want == 0 || want == BM_CSUM_UNKNOWN ||
		    want == BM_CSUM_COPY)
			continue;
		r = bm_pread_all(bm->fd, b, BM_PAGE_SIZE, (pid + 1) << BM_PAGE_SHIFT);
		if (r < 0)
			break;
		bool copy_ok = bm_page_csum(b) == want;
		r = bm_pread_all(bm->fd, a, BM_PAGE_SIZE, pid << BM_PAGE_SHIFT);
		if (r < 0)
			break;
		bool page_ok = bm_page_csum(a) == want;
		if (copy_ok == page_ok)
			continue; /* sound, or damaged in both: the node's load says so */
		bad++;
		if (!repair || bm->read_only)
			continue;
		/* one of the two is good: write it over the other */
		r = copy_ok ? bm_pwrite_all(bm->fd, b, BM_PAGE_SIZE, pid << BM_PAGE_SHIFT)
			    : bm_pwrite_all(bm->fd, a, BM_PAGE_SIZE, (pid + 1) << BM_PAGE_SHIFT);
		if (r == 0)
			fixed++;
	}
	if (r == 0 && fixed && fdatasync(bm->fd) < 0)
		r = -errno;
	free(a);
	free(b);
	*ret_fixed = fixed;
	return r < 0 ? r : bad;
}
