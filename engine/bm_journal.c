/*
 * bm_journal.c: transactions, atomic checkpoints, recovery, fault injection.
 *
 * The durability design, chosen for the vmcache layout (every page has one
 * home address and no room for a per-page LSN):
 *
 *   No steal. A page changed since the last checkpoint stays in the pool;
 *   eviction takes only clean pages. So the image at its home addresses is
 *   always exactly the state of the last checkpoint.
 *
 *   Transactions. Every change that must be atomic (one filesystem operation)
 *   runs between bm_txn_begin and bm_txn_end, which hold a reader lock; a
 *   checkpoint holds the writer lock, so it sees only whole transactions.
 *
 *   Checkpoint (checkpoint_locked), under the writer lock:
 *     1. checksum every dirty page into the checksum table (the pages
 *        that turned dirty since the last checkpoint are on a list,
 *        bm->dl, so a checkpoint costs the pages changed, not the pool);
 *     2. write the dirty pages, the changed checksum-table and bitmap pages
 *        and the new superblock to the journal, after a descriptor listing
 *        each image's home pid and checksum; sync;             <- commit point
 *     3. write the same images home, the superblock among them, but with
 *        an older checkpoint as the last applied; sync (two syncs in all:
 *        bm_checkpoint returns after both, but bm_checkpoint_notify
 *        tells its caller at the first, and those it covers return then).
 *        At close, the superblock goes home last,
 *        after a sync of the rest, recording this checkpoint as applied,
 *        and a third sync follows, so that the next open replays nothing;
 *     4. clear the dirty bits.
 *   A crash before the first sync completes leaves the home addresses as
 *   of the previous checkpoint (the journal is ignored: its descriptor or an
 *   image fails its checksum, or it names a sequence already applied). A
 *   crash after it is repaired at the next open by writing the journal's
 *   images home again (idempotent), torn home writes included. Since the
 *   superblock at home never claims the last checkpoint but at close, the
 *   open after a crash compares the journal with the home pages
 *   (journal_is_home) and replays it when they differ.
 *
 *   A failed checkpoint (a write or sync of the image failed) leaves the
 *   pages dirty, so the next one writes them again. When it failed after
 *   the commit point, some home pages may hold its images and others not:
 *   the journal is then the only whole copy of that state, so the next
 *   checkpoint first writes it home again (journal_reapply) and never
 *   overwrites it before that has succeeded.
 *
 *   Room. A checkpoint must fit the journal, so the pages changed since the
 *   last one must never outgrow it (jr_room), whatever runs at once: past
 *   dirty_limit a new transaction first checkpoints; and each running
 *   transaction holds room for BM_TXN_PAGES changes (room_take), so that
 *   those started before the limit was crossed (a dozen 1 MiB writes from
 *   the kernel's writeback, say) cannot overflow it together. A
 *   transaction that finds no room waits for others to end; one alone
 *   gets in once the changed pages are at most dirty_limit, running a
 *   checkpoint first when they are not (pages changed again while the last
 *   one wrote stay dirty). So dirty pages never pass jr_room, and the pool
 *   keeps the rest of its frames for eviction (bm_load.c): a transaction
 *   that needs a frame never waits for the checkpoint that waits for it.
 *
 *   A disk that keeps failing. Dirty pages cannot leave the pool, and the
 *   journal holds one checkpoint's worth: past dirty_limit, with the
 *   checkpoint failing, a transaction is refused (bm_txn_begin): every
 *   exclusive fix in it fails with the checkpoint's error, so the
 *   operation fails whole before it changed anything. Reads go on; the
 *   first checkpoint that succeeds lifts the refusal.
 *
 *   Group commit. bm_checkpoint returns as soon as a checkpoint that took
 *   its snapshot after the call has committed (its journal synced), so
 *   concurrent fsyncs share one: while one runs, the fsyncs that arrive
 *   queue for the next (ckpt_lead), the first of them runs it for all, and
 *   the others that asked through bm_checkpoint_notify (fsync) go as soon as
 *   its journal is synced, so that they are back with their next change
 *   while its home writes are still under way, and the one that runs it is
 *   told then too (the daemon answers its fsync from there and goes on with
 *   the home writes): all of them are back for the next one. Plain
 *   bm_checkpoint callers (eviction under pressure, a full journal, evict
 *   and flush commands) wait until it is over: they want the pages clean.
 *
 *   Triggers. A checkpoint runs when a caller asks (fsync), every
 *   checkpoint_ms when anything changed (a background thread), when dirty
 *   pages pass dirty_limit (checked at bm_txn_begin, so that the journal can
 *   always hold a whole checkpoint and clean pages remain to evict), and at
 *   close.
 *
 * Journal layout (pids jr_start .. jr_start + jr_pages - 1):
 *
 *   +------------------+------------------+-----+-------------------------+
 *   | descriptor pages | image 0          | ... | image n-1               |
 *   +------------------+------------------+-----+-------------------------+
 *
 *   Descriptor, little-endian:
 *     OFFSET SIZE MEANING
 *          0    8 magic "VSJRNL01"
 *          8    8 checkpoint sequence number
 *         16    8 n: images that follow the descriptor
 *         24    8 descriptor pages
 *         32    8 XXH3-64 of all descriptor pages with this field zero
 *         40   24 reserved, zero
 *         64 16*n entries: home pid (8), XXH3-64 of the image (8)
 *
 * New pages (ordered writes). A page that is free in the last checkpoint
 * and in the one being taken (its bit clear in bm->cbitmap) holds nothing
 * any crash can bring back, so it needs no journal: the checkpoint writes
 * it home directly, before the commit sync, and lists it in the descriptor
 * after the journaled images, so that recovery checks its home copy as it
 * checks those (a checkpoint whose new pages did not all reach home is not
 * committed). Eviction may write such a page home and drop it while it is
 * dirty (steal), so that writing new data does not fill the pool with
 * pages waiting for a checkpoint. A page freed and allocated again before
 * the next checkpoint is still in use in the last one: its bit stays set
 * until a checkpoint that has it free completes, and it goes through the
 * journal. cbitmap is the committed bitmap OR'ed with the one in flight;
 * a failed checkpoint leaves it OR'ed (it only errs towards the journal).
 *
 * The one thing a steal must not do is drop a frame a checkpoint is still
 * reading: a checkpoint takes each page it writes shared (ckpt_take) for
 * as long as it reads the frame, and eviction drops only pages it holds
 * exclusively. The whole handshake is described at the top of bm_evict.c.
 *
 *   Descriptor field 40 (8 bytes): h, the number of entries at the end of
 *   the list that are new pages, written home, not to the journal (0 in
 *   images written before this field existed). The journal holds n - h
 *   images.
 *
 * Write amplification: each changed page that was in use before is written
 * twice (journal, home), a new page once, plus the metadata pages of the
 * checkpoint: about 1.0 for new data written in large pieces, 2.0 for data
 * overwritten in place.
 */
#include "engine/bm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/bm_fault.h"
#include "engine/lockorder.h"
#include "engine/log.h"

/* Transactions this thread has open, and in which pool: the reader lock is
 * taken once, by the outermost. */
static _Thread_local unsigned txn_depth;
static _Thread_local struct bm *txn_bm;
static _Thread_local bool txn_room; /* this thread's transaction holds room */
_Thread_local int bm_txn_refused;

#define JR_MAGIC     "VSJRNL01"
#define JR_HDR       64u
#define JR_ENTRY     16u
#define JR_ENTRIES_1 ((BM_PAGE_SIZE - JR_HDR) / JR_ENTRY)

static uint64_t get_u64(const uint8_t *p, size_t off)
{
	uint64_t v;
	memcpy(&v, p + off, 8);
	return v;
}

static void put_u64(uint8_t *p, size_t off, uint64_t v)
{
	memcpy(p + off, &v, 8);
}

/* Journal size for an image: an eighth of it, between 256 pages (1 MiB) and
 * 262144 pages (1 GiB), and never more than a quarter of the image. */
uint64_t bm_journal_pages_for(uint64_t image_pages)
{
	uint64_t j = image_pages / 8;
	if (j < 256)
		j = 256;
	if (j > 262144)
		j = 262144;
	if (j > image_pages / 4)
		j = image_pages / 4;
	return j;
}

static uint64_t desc_pages_for(uint64_t n)
{
	return (JR_HDR + n * JR_ENTRY + BM_PAGE_SIZE - 1) / BM_PAGE_SIZE;
}

/* The most images a journal of @jr_pages holds. */
static uint64_t journal_capacity(uint64_t jr_pages)
{
	uint64_t n = jr_pages;
	while (n > 0 && desc_pages_for(n) + n > jr_pages)
		n--;
	return n;
}

/* ------------------------------------------------------------------ */
/* The I/O door and fault injection                                   */

static int fault_before_write(struct bm *bm, uint64_t off, size_t len)
{
	struct bm_fault *f = bm->fault;
	int r = 0;

	pthread_mutex_lock(&f->mu);
	uint64_t n = ++f->writes;
	if (f->on_write) {
		pthread_mutex_unlock(&f->mu);
		f->on_write(f, n);
		pthread_mutex_lock(&f->mu);
	}
	if (f->fail_write_at &&
	    (n == f->fail_write_at || (f->fail_writes_after && n > f->fail_write_at))) {
		r = -(f->fail_write_err ? f->fail_write_err : EIO);
	} else if (f->record) {
		if (f->nundo == f->capundo) {
			uint64_t cap = f->capundo ? 2 * f->capundo : 256;
			struct bm_fault_undo *u = realloc(f->undo, cap * sizeof(*u));
			if (!u) {
				r = -ENOMEM;
				goto out;
			}
			f->undo = u;
			f->capundo = cap;
		}
		struct bm_fault_undo *u = &f->undo[f->nundo];
		u->off = off;
		u->len = (uint32_t)len;
		u->old = malloc(len);
		if (!u->old) {
			r = -ENOMEM;
			goto out;
		}
		/* The old bytes, read through a plain descriptor (the image
		 * may be open O_DIRECT; this buffer is not aligned). */
		memset(u->old, 0, len);
		if (pread(bm->fault_fd, u->old, len, (off_t)off) < 0) {
			free(u->old);
			r = -errno;
			goto out;
		}
		f->nundo++;
	}
out:
	pthread_mutex_unlock(&f->mu);
	return r;
}

int bm_io_write(struct bm *bm, const void *buf, size_t len, uint64_t off)
{
	if (bm->fault) {
		int r = fault_before_write(bm, off, len);
		if (r < 0)
			return r;
	}
	bm_about_to_wait();
	return bm_pwrite_all(bm->fd, buf, len, off);
}

int bm_io_sync(struct bm *bm)
{
	if (bm->fault) {
		struct bm_fault *f = bm->fault;
		int r = 0;
		pthread_mutex_lock(&f->mu);
		uint64_t n = ++f->syncs;
		if (f->on_sync) {
			pthread_mutex_unlock(&f->mu);
			f->on_sync(f, n);
			pthread_mutex_lock(&f->mu);
		}
		if (f->fail_sync_at && (n == f->fail_sync_at ||
					(f->fail_syncs_after && n > f->fail_sync_at))) {
			r = -(f->fail_sync_err ? f->fail_sync_err : EIO);
		} else {
			for (uint64_t i = 0; i < f->nundo; i++)
				free(f->undo[i].old);
			f->nundo = 0; /* synced writes survive a power loss */
		}
		pthread_mutex_unlock(&f->mu);
		if (r < 0)
			return r;
	}
	atomic_fetch_add_explicit(&bm->log_flushes, 1, memory_order_relaxed);
	bm_about_to_wait();
	return fdatasync(bm->fd) < 0 ? -errno : 0;
}

void bm_fault_init(struct bm_fault *f)
{
	memset(f, 0, sizeof(*f)); /* no fault armed until the caller sets one */
	pthread_mutex_init(&f->mu, NULL);
}

void bm_fault_fini(struct bm_fault *f)
{
	for (uint64_t i = 0; i < f->nundo; i++)
		free(f->undo[i].old);
	free(f->undo);
	f->undo = NULL;
	f->nundo = f->capundo = 0;
	pthread_mutex_destroy(&f->mu);
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

int bm_fault_power_loss(struct bm_fault *f, const char *path, uint64_t seed, bool tear)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	int undone = 0;
	uint64_t torn = UINT64_MAX;

	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&f->mu);
	if (tear && f->nundo > 0)
		torn = splitmix(&seed) % f->nundo;
	/* Newest first, so that undoing a write restores what an older write
	 * (kept or not) left there. */
	for (uint64_t k = f->nundo; k-- > 0;) {
		struct bm_fault_undo *u = &f->undo[k];
		size_t from = 0;
		if (k == torn) {
			unsigned sectors = u->len / 512;
			from = sectors > 1 ? 512 * (1 + splitmix(&seed) % (sectors - 1)) : 0;
		} else if (splitmix(&seed) & 1) {
			continue; /* this write reached the disk */
		}
		if (pwrite(fd, u->old + from, u->len - from, (off_t)(u->off + from)) < 0) {
			undone = -errno;
			break;
		}
		undone++;
	}
	for (uint64_t i = 0; i < f->nundo; i++)
		free(f->undo[i].old);
	f->nundo = 0;
	pthread_mutex_unlock(&f->mu);
	close(fd);
	return undone;
}

/* ------------------------------------------------------------------ */
/* Recovery                                                           */

/* Read a journal at pid 1 of an image of @image_pages pages. On success
 * *ret_desc (descriptor pages) and *ret_n are set; the images are checked. */
static int journal_read(struct bm *bm, uint64_t image_pages, uint8_t **ret_desc,
			uint64_t *ret_n, uint64_t *ret_seq)
{
	uint8_t *first = NULL, *desc = NULL, *img = NULL;
	uint64_t n, dp, nh;
	int r = 0;

	if (posix_memalign((void **)&first, BM_PAGE_SIZE, BM_PAGE_SIZE))
		return -ENOMEM;
	r = bm_pread_all(bm->fd, first, BM_PAGE_SIZE, BM_PAGE_SIZE);
	if (r < 0 || memcmp(first, JR_MAGIC, 8) != 0)
		goto none;
	n = get_u64(first, 16);
	dp = get_u64(first, 24);
	nh = get_u64(first, 40);
	if (n == 0 || n > image_pages || dp != desc_pages_for(n) || nh >= n ||
	    1 + dp + (n - nh) > image_pages)
		goto none;
	if (posix_memalign((void **)&desc, BM_PAGE_SIZE, dp * BM_PAGE_SIZE) ||
	    posix_memalign((void **)&img, BM_PAGE_SIZE, BM_PAGE_SIZE)) {
		r = -ENOMEM;
		goto out;
	}
	r = bm_pread_all(bm->fd, desc, dp * BM_PAGE_SIZE, BM_PAGE_SIZE);
	if (r < 0)
		goto out;
	uint64_t want = get_u64(desc, 32);
	put_u64(desc, 32, 0);
	if (XXH3_64bits(desc, dp * BM_PAGE_SIZE) != want)
		goto none; /* a descriptor torn or never finished: not committed */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t home = get_u64(desc, JR_HDR + i * JR_ENTRY);
		uint64_t sum = get_u64(desc, JR_HDR + i * JR_ENTRY + 8);
		if (home >= image_pages)
			goto none;
		/* a journaled image, or a new page at its home */
		uint64_t at = i < n - nh ? 1 + dp + i : home;
		r = bm_pread_all(bm->fd, img, BM_PAGE_SIZE, at * BM_PAGE_SIZE);
		if (r < 0)
			goto out;
		if (bm_page_csum(img) != sum)
			goto none; /* an image never written: not committed */
	}
	*ret_desc = desc;
	*ret_n = n;
	*ret_seq = get_u64(desc, 8);
	desc = NULL;
	r = 1;
	goto out;
none:
	r = 0;
out:
	free(first);
	free(desc);
	free(img);
	return r;
}

/* Write the @n images of the journal described by @desc home: every page
 * but the superblock, sync, then the superblock (which says the checkpoint
 * is home), sync. In that order so that a crash in the middle leaves a
 * superblock that still asks for the replay. */
static int journal_write_home(struct bm *bm, const uint8_t *desc, uint64_t n)
{
	uint64_t dp = desc_pages_for(n);
	uint64_t nj = n - get_u64(desc, 40); /* new pages are home already */
	uint8_t *img = NULL;
	int r = 0;

	if (posix_memalign((void **)&img, BM_PAGE_SIZE, BM_PAGE_SIZE))
		return -ENOMEM;
	for (int pass = 0; pass < 2 && r == 0; pass++) {
		for (uint64_t i = 0; i < nj && r == 0; i++) {
			uint64_t home = get_u64(desc, JR_HDR + i * JR_ENTRY);
			if ((home == 0) != (pass == 1))
				continue;
			r = bm_pread_all(bm->fd, img, BM_PAGE_SIZE, (1 + dp + i) * BM_PAGE_SIZE);
			if (r == 0)
				r = bm_io_write(bm, img, BM_PAGE_SIZE, home * BM_PAGE_SIZE);
			/* The copy of a node (bm_dup.c): now when the table is
			 * in memory, else once it is (bm_dup_after_replay). */
			if (r == 0 && home != 0 && !bm->csum)
				bm_dup_note_replayed(bm, home);
			else if (r == 0 && home != 0 && home + 1 < bm->page_count &&
				 atomic_load_explicit(&bm->csum[home + 1], memory_order_relaxed) ==
					 BM_CSUM_COPY)
				r = bm_io_write(bm, img, BM_PAGE_SIZE, (home + 1) * BM_PAGE_SIZE);
		}
		if (r == 0)
			r = bm_io_sync(bm);
	}
	free(img);
	return r;
}

/* Write home again the checkpoint that failed after its commit point (see
 * the top of the file), before a new checkpoint overwrites the journal. */
static int journal_reapply(struct bm *bm)
{
	uint8_t *desc = NULL;
	uint64_t n = 0, seq = 0;
	int r = journal_read(bm, bm->page_count, &desc, &n, &seq);

	if (r == 0 || (r > 0 && seq != bm->jr_unapplied_seq)) {
		vs_log(VS_LOG_ERR, "%s: checkpoint %llu was committed but its journal no longer "
				   "reads back; the journal is kept as it is",
		       bm->path, (unsigned long long)bm->jr_unapplied_seq);
		r = -EIO;
	}
	if (r > 0)
		r = journal_write_home(bm, desc, n);
	free(desc);
	if (r < 0)
		return r;
	bm->jr_unapplied = false;
	vs_log(VS_LOG_INFO, "%s: checkpoint %llu written home from the journal", bm->path,
	       (unsigned long long)seq);
	return 0;
}

/* Do the home pages already hold the journal described by @desc (@n
 * images, sequence @seq)? A checkpoint writes its superblock home saying an
 * earlier checkpoint is applied (see the top), so the home superblock is
 * compared as it would be with @seq in that field. Returns 1 yes, 0 no, or a
 * negative errno. */
static int journal_is_home(struct bm *bm, const uint8_t *desc, uint64_t n, uint64_t seq)
{
	uint64_t nj = n - get_u64(desc, 40); /* new pages: checked by journal_read */
	uint8_t *img = NULL;
	int r = 1;

	if (posix_memalign((void **)&img, BM_PAGE_SIZE, BM_PAGE_SIZE))
		return -ENOMEM;
	for (uint64_t i = 0; i < nj && r == 1; i++) {
		uint64_t home = get_u64(desc, JR_HDR + i * JR_ENTRY);
		int e = bm_pread_all(bm->fd, img, BM_PAGE_SIZE, home * BM_PAGE_SIZE);
		if (e < 0) {
			r = e;
			break;
		}
		if (home == 0)
			bm_meta_sb_set_applied(img, seq);
		if (bm_page_csum(img) != get_u64(desc, JR_HDR + i * JR_ENTRY + 8))
			r = 0;
	}
	free(img);
	return r;
}

int bm_journal_recover(struct bm *bm, uint64_t image_pages, const char *damage,
		       uint64_t applied)
{
	bool sb_ok = damage == NULL;
	uint8_t *desc = NULL;
	uint64_t n = 0, seq = 0;
	int r;

	r = journal_read(bm, image_pages, &desc, &n, &seq);
	if (r <= 0)
		return r;
	if (sb_ok && seq <= applied) {
		free(desc);
		return 0; /* the last checkpoint reached home */
	}
	/* Usually it did, only its superblock does not say so (a crash after
	 * its home sync, or the process killed): nothing to write. Not when
	 * the superblock is torn: its checksummed part may match while the
	 * seal does not. */
	r = sb_ok ? journal_is_home(bm, desc, n, seq) : 0;
	if (r != 0) {
		free(desc);
		if (r < 0)
			return r;
		bm->jr_home_seq = seq;
		vs_log(VS_LOG_INFO, "%s: recovery: checkpoint %llu was home already", bm->path,
		       (unsigned long long)seq);
		return 0;
	}
	if (bm->read_only) {
		free(desc);
		if (sb_ok)
			vs_log(VS_LOG_ERR, "%s: the image was left in the middle of a checkpoint; "
					   "open it read-write once to replay the journal", bm->path);
		else
			vs_log(VS_LOG_ERR,
			       "%s: the superblock is damaged (%s); the journal holds checkpoint "
			       "%llu with a copy of it: open the image read-write once (mount it, "
			       "or fsck.virtuscale without -n) to restore it from there",
			       bm->path, damage, (unsigned long long)seq);
		return -EROFS;
	}
	r = journal_write_home(bm, desc, n);
	n -= get_u64(desc, 40); /* new pages were home already */
	free(desc);
	if (r < 0) {
		vs_log(VS_LOG_ERR, "%s: journal replay failed: %s", bm->path, strerror(-r));
		return r;
	}
	bm->recovered_pages = n;
	vs_log(VS_LOG_INFO, "%s: recovery: replayed checkpoint %llu from the journal (%llu pages)",
	       bm->path, (unsigned long long)seq, (unsigned long long)n);
	return 1;
}

/* ------------------------------------------------------------------ */
/* Checkpoints                                                        */

struct ckpt {
	uint64_t *pids;  /* home pids of the images */
	void **bufs;     /* where each image is in memory */
	uint64_t n, cap;
	int err;
};

static int ckpt_add(struct ckpt *c, uint64_t pid, void *buf)
{
	if (c->n == c->cap) {
		uint64_t cap = c->cap ? 2 * c->cap : 1024;
		uint64_t *p = realloc(c->pids, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		c->pids = p;
		void **b = realloc(c->bufs, cap * sizeof(*b));
		if (!b)
			return -ENOMEM;
		c->bufs = b;
		c->cap = cap;
	}
	c->pids[c->n] = pid;
	c->bufs[c->n] = buf;
	c->n++;
	return 0;
}

/* Take @pid for the checkpoint: hold it shared while it is dirty and
 * resident (see the top of bm_evict.c). False when it is clean or evicted
 * by now: whoever cleaned it wrote it home first. Waits only for an
 * exclusive holder, and with the transaction lock held exclusively that is
 * an evictor about to drop a page it cleaned, or bm_free: neither waits
 * for anything. */
static bool ckpt_take(struct bm *bm, uint64_t pid)
{
	ps_word *ps = &bm->state[pid];
	for (unsigned spins = 0;; spins++) {
		uint64_t w = ps_load(ps);
		if (!ps_dirty(w) || ps_state(w) == PS_EVICTED)
			return false;
		if (ps_try_lock_s(ps, w))
			return true;
		cpu_relax(spins);
	}
}

static void collect_dirty(struct bm *bm, uint64_t pid, void *arg)
{
	struct ckpt *c = arg;
	if (c->err != 0 || !ckpt_take(bm, pid))
		return;
	c->err = ckpt_add(c, pid, bm_page(bm, pid));
	if (c->err < 0)
		ps_unlock_s(&bm->state[pid]);
}

/* Release the pages ckpt_take took (the first @n of @c). */
static void ckpt_release(struct bm *bm, const struct ckpt *c, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		ps_unlock_s(&bm->state[c->pids[i]]);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Collect the dirty pages into @c: those on the list of pages that turned
 * dirty (bm->dl), each once; the whole pool if that list was lost. The
 * list is taken: pages still dirty after the checkpoint go back on it
 * (relist_dirty). */
static int collect_listed(struct bm *bm, struct ckpt *c)
{
	pthread_mutex_lock(&bm->dl_mu);
	uint64_t *dl = bm->dl;
	size_t n = bm->dl_n;
	bool lost = bm->dl_lost;
	bm->dl = NULL;
	bm->dl_n = bm->dl_cap = 0;
	bm->dl_lost = false;
	pthread_mutex_unlock(&bm->dl_mu);

	if (lost) {
		bm_rset_each(bm, collect_dirty, c);
	} else {
		if (n > 1)
			qsort(dl, n, sizeof(*dl), cmp_u64);
		for (size_t i = 0; i < n && c->err == 0; i++)
			if (i == 0 || dl[i] != dl[i - 1])
				collect_dirty(bm, dl[i], c);
	}
	free(dl);
	if (c->err < 0) { /* what was taken is not all collected: walk next time */
		pthread_mutex_lock(&bm->dl_mu);
		bm->dl_lost = true;
		pthread_mutex_unlock(&bm->dl_mu);
	}
	return c->err;
}

/* After a checkpoint, or a failed one: the pages of @c that are still dirty
 * (changed again meanwhile, or not written) go back on the list. */
static void relist_dirty(struct bm *bm, const struct ckpt *c, uint64_t ndata)
{
	for (uint64_t i = 0; i < ndata; i++)
		if (ps_dirty(ps_load(&bm->state[c->pids[i]])))
			bm_dirty_note(bm, c->pids[i]);
}

/* Write @n images to consecutive journal pages starting at @jpid. */
static int write_run(struct bm *bm, struct bm_thread *t, void *const *bufs,
		     const uint64_t *homes, uint64_t n, uint64_t jpid)
{
	uint64_t pids[BM_BATCH_MAX];
	int res[BM_BATCH_MAX];
	for (uint64_t base = 0; base < n; base += BM_BATCH_MAX) {
		unsigned m = (unsigned)(n - base < BM_BATCH_MAX ? n - base : BM_BATCH_MAX);
		for (unsigned i = 0; i < m; i++)
			pids[i] = homes ? homes[base + i] : jpid + base + i;
		if (homes) /* home: with the copies of nodes */
			bm_io_write_pages(bm, t, bufs + base, pids, m, res);
		else
			bm_io_write_batch(bm, t, bufs + base, pids, m, res);
		for (unsigned i = 0; i < m; i++)
			if (res[i] < 0)
				return res[i];
	}
	return 0;
}

/* Checkpoints of at most this many changed pages copy them and let
 * transactions go on while the copies are written (about 16 MiB of copies
 * at most); larger ones write from the pool with transactions held off. */
#define CKPT_COPY_MAX 4096

/* One checkpoint. Called with ckpt_mu and the transaction lock held
 * exclusively, so that it starts from a state with no transaction half
 * done. A small checkpoint copies the changed pages and releases the
 * transaction lock (*locked = false) before any I/O: transactions, and the
 * fsyncs that will follow them, proceed while it writes, and the next
 * checkpoint takes them all at once (group commit). A page changed again
 * meanwhile keeps its dirty bit: the version tells. */
/* Leadership of the checkpoint (ckpt_busy): wait until the running one is
 * over. With a target (target > 0), give up as soon as a checkpoint at or
 * past it has committed (!until_home: a caller covered by another's
 * checkpoint returns when that one is durable, without waiting for its
 * home writes) or is over (until_home: for callers that want the pages
 * clean, to evict them or to know the disk took them). True when the
 * caller leads. */
static bool ckpt_lead(struct bm *bm, uint64_t target, bool until_home)
{
	_Atomic uint64_t *reached = until_home ? &bm->ckpt_done : &bm->ckpt_durable;
	bool waited = false;
	pthread_mutex_lock(&bm->ckpt_mu);
	for (;;) {
		if (target > 0 && atomic_load(reached) >= target) {
			pthread_mutex_unlock(&bm->ckpt_mu);
			if (waited)
				lo_wait_end();
			return false;
		}
		if (!bm->ckpt_busy)
			break;
		if (!waited)
			lo_wait_begin(LO_WAIT_CHECKPOINT, 0);
		waited = true;
		atomic_fetch_add(&bm->ckpt_waiters, 1);
		pthread_cond_wait(&bm->ckpt_cv, &bm->ckpt_mu);
		atomic_fetch_sub(&bm->ckpt_waiters, 1);
	}
	bm->ckpt_busy = true;
	pthread_mutex_unlock(&bm->ckpt_mu);
	if (waited)
		lo_wait_end();
	lo_acquire(LO_CHECKPOINT, 0, true);
	return true;
}

static void durable_tell(struct bm_durable *d, int r);

/* The journal of checkpoint seq is synced: whoever waits for it may go,
 * and the caller that runs it is told (bm_checkpoint_notify). */
static void ckpt_publish(struct bm *bm, uint64_t seq)
{
	pthread_mutex_lock(&bm->ckpt_mu);
	atomic_store(&bm->ckpt_durable, seq);
	pthread_cond_broadcast(&bm->ckpt_cv);
	pthread_mutex_unlock(&bm->ckpt_mu);
	durable_tell(bm->ckpt_durable_cb, 0);
}

/* The checkpoint is over, home writes and all (r == 0) or failed. */
static void room_wake(struct bm *bm);

static void ckpt_resign(struct bm *bm, int r)
{
	pthread_mutex_lock(&bm->ckpt_mu);
	if (r == 0)
		atomic_store(&bm->ckpt_done, atomic_load(&bm->ckpt_seq));
	bm->ckpt_busy = false;
	pthread_cond_broadcast(&bm->ckpt_cv);
	pthread_mutex_unlock(&bm->ckpt_mu);
	lo_release(LO_CHECKPOINT, 0);
	room_wake(bm); /* it cleaned pages: room for waiting transactions */
}

static int checkpoint_locked(struct bm *bm, bool clean, bool *locked)
{
	struct bm_thread *t = bm_thread_get(bm);
	struct ckpt c = { 0 };
	uint8_t *meta = NULL, *desc = NULL, *copies = NULL, *bmp_snap = NULL;
	uint64_t *vers = NULL, *sums = NULL, *bmp_idx = NULL;
	uint64_t seq = atomic_load(&bm->ckpt_seq) + 1;
	uint64_t ncs = 0, nbmp = 0, ndata = 0, dp, nj = 0, nh = 0;
	uint64_t *cs_idx = NULL, cs_cap = 0; /* checksum-table pages taken */
	struct ckpt io = {0}; /* the journaled images, then the new pages */
	uint64_t *io_sums = NULL, *wr_pids = NULL;
	void **wr_bufs = NULL;
	bool *fresh = NULL;
	bool committed = false;
	uint64_t taken = 0; /* data pages held shared (ckpt_take) */
	int r;

	if (bm->jr_unapplied) {
		r = journal_reapply(bm);
		if (r < 0)
			goto out;
	}
	r = collect_listed(bm, &c);
	taken = c.n;
	if (r < 0)
		goto out;
	if (c.n == 0 && atomic_load(&bm->dirty) > 0) {
		/* The count says pages are dirty, the list names none: find
		 * them (a page off the list would never be checkpointed, and
		 * would hold its frame for good), or put the count right
		 * (room_take trusts it). Said once: it should not happen. */
		bm_rset_each(bm, collect_dirty, &c);
		taken = c.n;
		if (c.err < 0) {
			r = c.err;
			goto out;
		}
		int64_t d = atomic_load(&bm->dirty);
		if (!atomic_exchange(&bm->dirty_drift_logged, true))
			vs_log(VS_LOG_WARN, "%s: %lld dirty pages counted, %llu found in the pool",
			       bm->path, (long long)d, (unsigned long long)c.n);
		if (c.n == 0 && *locked)
			atomic_fetch_sub(&bm->dirty, d);
	}
	if (bm->fault && bm->fault->on_ckpt_taken)
		bm->fault->on_ckpt_taken(bm->fault);
	ndata = c.n;

	/* 1. checksums of the changed pages into the table (kept: the
	 * descriptor lists them again) */
	sums = malloc((ndata + 1) * sizeof(*sums));
	if (!sums) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < ndata; i++) {
		sums[i] = bm_page_csum(c.bufs[i]);
		bm_csum_set(bm, c.pids[i], sums[i]);
	}
	/* New pages go home without the journal (see the top); decided before
	 * the bitmap is OR'ed into cbitmap below. */
	fresh = calloc(ndata + 1, sizeof(*fresh));
	if (!fresh) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < ndata; i++)
		fresh[i] = bm_home_free(bm, c.pids[i]);

	/* 2. the changed metadata pages, copied so that they hold still.
	 * The checksum-table pages to write are taken (their marks cleared)
	 * before anything is sized: eviction may mark more meanwhile (a
	 * steal sets a checksum without the transaction lock), and those must
	 * not push out one that holds a checksum of this checkpoint's pages;
	 * they wait for the next. */
	for (uint64_t i = 0; i < bm->cs_pages; i++) {
		if (!atomic_load_explicit(&bm->cs_dirty[i], memory_order_relaxed) ||
		    !atomic_exchange_explicit(&bm->cs_dirty[i], 0, memory_order_relaxed))
			continue;
		if (ncs == cs_cap) {
			uint64_t cap = cs_cap ? 2 * cs_cap : 64;
			uint64_t *p = realloc(cs_idx, cap * sizeof(*p));
			if (!p) {
				atomic_store(&bm->cs_dirty[i], 1);
				r = -ENOMEM;
				goto out;
			}
			cs_idx = p;
			cs_cap = cap;
		}
		cs_idx[ncs++] = i;
	}
	pthread_mutex_lock(&bm->alloc_mu);
	for (uint64_t i = 0; i < bm->bmp_pages; i++)
		nbmp += bm->bmp_dirty[i] != 0;
	pthread_mutex_unlock(&bm->alloc_mu);
	/* (Pages written home by eviction leave no dirty page behind, only
	 * their checksums and allocation bits.) */
	if (ndata == 0 && ncs == 0 && nbmp == 0 && !clean && !bm->meta_dirty)
		goto out; /* nothing changed since the last checkpoint */
	if (posix_memalign((void **)&meta, BM_PAGE_SIZE, (ncs + nbmp + 2) * BM_PAGE_SIZE) ||
	    !(bmp_idx = malloc((nbmp + 1) * sizeof(*bmp_idx)))) {
		r = -ENOMEM;
		goto out;
	}
	uint8_t *m = meta;
	uint64_t bmp_room = nbmp;
	for (uint64_t k = 0; k < ncs && r == 0; k++) {
		uint64_t i = cs_idx[k];
		bm_cs_page_fill(bm, i, m);
		/* both copies of the table, from the same image */
		r = ckpt_add(&c, bm->cs_start + i, m);
		if (r == 0)
			r = ckpt_add(&c, bm->cs2_start + i, m);
		m += BM_PAGE_SIZE;
	}
	pthread_mutex_lock(&bm->alloc_mu);
	bmp_snap = m;
	nbmp = 0;
	for (uint64_t i = 0; i < bm->bmp_pages && r == 0 && nbmp < bmp_room; i++) {
		if (!bm->bmp_dirty[i])
			continue;
		bm->bmp_dirty[i] = 0;
		memcpy(m, (uint8_t *)bm->bitmap + i * BM_PAGE_SIZE, BM_PAGE_SIZE);
		/* in use in this checkpoint: no longer new */
		for (unsigned w = 0; w < BM_PAGE_SIZE / 8; w++) {
			uint64_t v;
			memcpy(&v, m + 8 * w, 8);
			atomic_fetch_or_explicit(&bm->cbitmap[i * (BM_PAGE_SIZE / 8) + w], v,
						 memory_order_relaxed);
		}
		bmp_idx[nbmp++] = i;
		r = ckpt_add(&c, bm->bmp_start + i, m);
		m += BM_PAGE_SIZE;
	}
	pthread_mutex_unlock(&bm->alloc_mu);
	atomic_store(&bm->meta_dirty, false);
	uint8_t *sb_home = NULL; /* the superblock written home (step 4) */
	if (r == 0) {
		bm_meta_sb_snapshot(bm, m, clean, seq);
		r = ckpt_add(&c, 0, m);
		sb_home = m + BM_PAGE_SIZE;
		memcpy(sb_home, m, BM_PAGE_SIZE);
		bm_meta_sb_set_applied(sb_home, atomic_load(&bm->ckpt_done));
	}
	if (r < 0)
		goto out;
	atomic_store(&bm->ckpt_seq, seq); /* fsyncs from here on wait for the next */

	if (ndata <= CKPT_COPY_MAX) {
		vers = malloc((ndata + 1) * sizeof(*vers));
		if (ndata > 0 && posix_memalign((void **)&copies, BM_PAGE_SIZE, ndata * BM_PAGE_SIZE))
			copies = NULL;
		if (vers && (copies || ndata == 0)) {
			for (uint64_t i = 0; i < ndata; i++) {
				vers[i] = ps_version(ps_load(&bm->state[c.pids[i]]));
				memcpy(copies + i * BM_PAGE_SIZE, c.bufs[i], BM_PAGE_SIZE);
				c.bufs[i] = copies + i * BM_PAGE_SIZE;
			}
			/* copies from here on: the frames may go */
			ckpt_release(bm, &c, taken);
			taken = 0;
			pthread_rwlock_unlock(&bm->txn_lock);
			lo_release(LO_TXN, 0);
			*locked = false;
		}
	}

	/* The order of writing: journaled images (the superblock last), then
	 * the new pages. */
	if (!(io_sums = malloc((c.n + 1) * sizeof(*io_sums)))) {
		r = -ENOMEM;
		goto out;
	}
	for (int pass = 0; pass < 2 && r == 0; pass++) {
		for (uint64_t i = 0; i < c.n && r == 0; i++) {
			bool is_new = i < ndata && fresh[i];
			if (is_new != (pass == 1))
				continue;
			io_sums[io.n] = i < ndata ? sums[i] : bm_page_csum(c.bufs[i]);
			r = ckpt_add(&io, c.pids[i], c.bufs[i]);
		}
		if (pass == 0)
			nj = io.n;
	}
	if (r < 0)
		goto out;
	nh = io.n - nj;

	dp = desc_pages_for(io.n);
	if (dp + nj > bm->jr_pages) {
		/* Cannot happen while dirty_limit holds; refuse rather than
		 * write home pages the journal does not cover. */
		vs_log(VS_LOG_ERR, "checkpoint of %llu pages does not fit the journal (%llu pages)",
		       (unsigned long long)c.n, (unsigned long long)bm->jr_pages);
		r = -ENOSPC;
		goto out;
	}

	/* 3. descriptor and images to the journal, then the commit sync */
	if (posix_memalign((void **)&desc, BM_PAGE_SIZE, dp * BM_PAGE_SIZE)) {
		r = -ENOMEM;
		goto out;
	}
	memset(desc, 0, dp * BM_PAGE_SIZE);
	memcpy(desc, JR_MAGIC, 8);
	put_u64(desc, 8, seq);
	put_u64(desc, 16, io.n);
	put_u64(desc, 24, dp);
	put_u64(desc, 40, nh);
	for (uint64_t i = 0; i < io.n; i++) {
		put_u64(desc, JR_HDR + i * JR_ENTRY, io.pids[i]);
		put_u64(desc, JR_HDR + i * JR_ENTRY + 8, io_sums[i]);
	}
	put_u64(desc, 32, XXH3_64bits(desc, dp * BM_PAGE_SIZE));
	/* One batch: the descriptor and the journaled images are one run of
	 * the journal (one writev), the new pages go home, under the same
	 * commit sync. */
	if (!(wr_bufs = malloc((dp + io.n) * sizeof(*wr_bufs))) ||
	    !(wr_pids = malloc((dp + io.n) * sizeof(*wr_pids)))) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < dp + io.n; i++) {
		wr_bufs[i] = i < dp ? desc + i * BM_PAGE_SIZE : io.bufs[i - dp];
		wr_pids[i] = i < dp + nj ? bm->jr_start + i : io.pids[i - dp];
	}
	r = write_run(bm, t, wr_bufs, wr_pids, dp + io.n, 0);
	if (r == 0)
		r = bm_io_sync(bm);
	if (r < 0)
		goto out;
	committed = true;
	ckpt_publish(bm, seq);
	atomic_fetch_add(&bm->log_bytes, (dp + nj) * BM_PAGE_SIZE);
	BM_COUNT(t, write_bytes, (dp + nj + nh) * BM_PAGE_SIZE); /* journal and new pages */

	/* 4. home. The last checkpoint of a close writes every image but the
	 * superblock, syncs, then the superblock (the last journaled image),
	 * which says that this checkpoint is home (applied = seq), and syncs:
	 * the next open replays nothing. Any other saves the second sync: its
	 * superblock goes home with the rest saying only that an earlier
	 * checkpoint is (applied = ckpt_done < seq), so that a crash from here
	 * on replays this one from the journal, whatever reached home; and the
	 * next checkpoint overwrites the journal only after this sync. */
	if (clean) {
		r = write_run(bm, t, io.bufs, io.pids, nj - 1, 0);
		if (r == 0 && nj > 1) /* nothing to sync when the superblock is all */
			r = bm_io_sync(bm);
		if (r == 0)
			r = bm_io_write(bm, io.bufs[nj - 1], BM_PAGE_SIZE, 0);
	} else {
		io.bufs[nj - 1] = sb_home;
		r = write_run(bm, t, io.bufs, io.pids, nj, 0);
	}
	if (r == 0)
		r = bm_io_sync(bm);
	if (r < 0)
		goto out;
	BM_COUNT(t, writebacks, ndata);
	BM_COUNT(t, write_bytes, nj * BM_PAGE_SIZE);

	/* This checkpoint is home: what it has free is free for good. */
	for (uint64_t k = 0; k < nbmp; k++) {
		const uint8_t *snap = bmp_snap + k * BM_PAGE_SIZE;
		for (unsigned w = 0; w < BM_PAGE_SIZE / 8; w++) {
			uint64_t v;
			memcpy(&v, snap + 8 * w, 8);
			atomic_store_explicit(&bm->cbitmap[bmp_idx[k] * (BM_PAGE_SIZE / 8) + w], v,
					      memory_order_relaxed);
		}
	}

	/* 5. the pages are clean now, unless changed since the snapshot */
	for (uint64_t i = 0; i < ndata; i++) {
		ps_word *ps = &bm->state[c.pids[i]];
		uint64_t w = ps_load(ps);
		for (;;) {
			if (!ps_dirty(w) || (!*locked && ps_version(w) != vers[i]))
				break;
			if (ps_cas(ps, &w, w & ~PS_DIRTY)) {
				atomic_fetch_sub_explicit(&bm->dirty, 1, memory_order_relaxed);
				break;
			}
		}
	}
	atomic_fetch_add(&bm->n_checkpoints, 1);
out:
	ckpt_release(bm, &c, taken);
	relist_dirty(bm, &c, ndata);
	if (r < 0) {
		/* The metadata pages must go into the next attempt again:
		 * every checksum-table page taken, whether it got into the
		 * checkpoint or not, and the bitmap pages in it. */
		for (uint64_t k = 0; k < ncs; k++)
			atomic_store(&bm->cs_dirty[cs_idx[k]], 1);
		for (uint64_t i = ndata; i < c.n; i++) {
			uint64_t pid = c.pids[i], cs;
			if (bm_cs_page_of(bm, pid, &cs))
				atomic_store(&bm->cs_dirty[cs], 1);
			else if (pid >= bm->bmp_start && pid < bm->bmp_start + bm->bmp_pages)
				bm->bmp_dirty[pid - bm->bmp_start] = 1;
		}
		bm->meta_dirty = true;
		if (committed) {
			bm->jr_unapplied = true;
			bm->jr_unapplied_seq = seq;
		}
		vs_log(VS_LOG_ERR, "%s: checkpoint failed: %s; the image stays as of the last "
				   "checkpoint%s", bm->path, strerror(-r),
		       committed ? " (its journal is replayed before the next one)" : "");
	}
	free(c.pids);
	free(c.bufs);
	free(meta);
	free(desc);
	free(copies);
	free(vers);
	free(sums);
	free(fresh);
	free(bmp_idx);
	free(cs_idx);
	free(io.pids);
	free(io.bufs);
	free(io_sums);
	free(wr_bufs);
	free(wr_pids);
	return r;
}

static void durable_tell(struct bm_durable *d, int r)
{
	if (d && !d->told) {
		d->told = true;
		d->fn(d, r);
	}
}

/* The checkpoint leader takes the transaction lock exclusively: it waits
 * for the running transactions to end (lockorder.h, level 1). */
static void txn_lock_excl(struct bm *bm)
{
	if (pthread_rwlock_trywrlock(&bm->txn_lock) != 0) {
		lo_wait_begin(LO_WAIT_TXN_DRAIN, 0);
		pthread_rwlock_wrlock(&bm->txn_lock);
		lo_wait_end();
	}
	lo_acquire(LO_TXN, 0, true);
}

int bm_checkpoint_notify(struct bm *bm, struct bm_durable *d)
{
	int r;

	if (bm->read_only) {
		durable_tell(d, 0);
		return 0;
	}
	bm_about_to_wait(); /* it writes and syncs, or waits for one that does */
	if (!bm->journal) {
		r = bm_flush(bm);
		durable_tell(d, r);
		return r;
	}
	if (txn_depth > 0 && txn_bm == bm) {
		vs_log(VS_LOG_ERR, "internal: checkpoint requested inside a transaction");
		durable_tell(d, -EDEADLK);
		return -EDEADLK; /* it would wait for our own reader lock */
	}
	lo_assert_may_wait_checkpoint("bm_checkpoint");
	/* Any checkpoint that takes its snapshot after this point covers
	 * every transaction that ended before the call; once its journal is
	 * synced they are durable (recovery writes it home if its home writes
	 * do not get there), so a caller that only needs that (it gave @d)
	 * need not wait for the rest. */
	uint64_t target = atomic_load(&bm->ckpt_seq) + 1;
	if (!ckpt_lead(bm, target, d == NULL)) {
		durable_tell(d, 0);
		return 0;
	}
	bm->ckpt_durable_cb = d; /* told at the commit (ckpt_publish) */
	bool locked = true;
	txn_lock_excl(bm);
	r = checkpoint_locked(bm, false, &locked);
	if (locked) {
		pthread_rwlock_unlock(&bm->txn_lock);
		lo_release(LO_TXN, 0);
	}
	bm->ckpt_durable_cb = NULL;
	/* Not told yet: nothing to write, or it failed before its commit. */
	durable_tell(d, r);
	ckpt_resign(bm, r);
	return r;
}

int bm_checkpoint(struct bm *bm)
{
	return bm_checkpoint_notify(bm, NULL);
}

int bm_checkpoint_final(struct bm *bm)
{
	int r;
	ckpt_lead(bm, 0, true);
	bool locked = true;
	txn_lock_excl(bm);
	r = checkpoint_locked(bm, true, &locked);
	if (locked) {
		pthread_rwlock_unlock(&bm->txn_lock);
		lo_release(LO_TXN, 0);
	}
	ckpt_resign(bm, r);
	return r;
}

/* Room for one more transaction: BM_TXN_PAGES on top of the pages changed
 * so far and the room the running transactions hold (see the top). A
 * transaction alone gets in whatever others hold, but only when the
 * changed pages are at most dirty_limit: never past jr_room, which keeps
 * the journal able to take a checkpoint and the pool able to evict
 * (bm_load.c). */
static bool room_try(struct bm *bm)
{
	uint64_t held = atomic_fetch_add(&bm->room_held, BM_TXN_PAGES) + BM_TXN_PAGES;
	uint64_t dirty = (uint64_t)atomic_load_explicit(&bm->dirty, memory_order_relaxed);
	if (dirty + held <= bm->jr_room || (held == BM_TXN_PAGES && dirty <= bm->dirty_limit))
		return true;
	atomic_fetch_sub(&bm->room_held, BM_TXN_PAGES);
	return false;
}

/* Take journal room for a transaction (bm_txn_begin), waiting for running
 * transactions to end, and, when none runs and the pages changed so far
 * still leave no room (changed again while the last checkpoint wrote),
 * running a checkpoint. Holds nothing (lockorder.h). Returns 0, or the
 * error of a checkpoint that failed: the transaction then gets no room and
 * may only read. */
static int room_take(struct bm *bm)
{
	if (room_try(bm))
		return 0;
	bm_about_to_wait();
	lo_wait_begin(LO_WAIT_ROOM, 0);
	for (;;) {
		pthread_mutex_lock(&bm->room_mu);
		atomic_fetch_add(&bm->room_waiters, 1); /* before the test: room_give looks */
		bool got = room_try(bm);
		if (!got && atomic_load(&bm->room_held) > 0) {
			/* Others run: one of them ends, or a checkpoint
			 * completes (both broadcast); the timeout is a net. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&bm->room_cv, &bm->room_mu, &ts);
			got = room_try(bm);
		}
		atomic_fetch_sub(&bm->room_waiters, 1);
		pthread_mutex_unlock(&bm->room_mu);
		if (got) {
			lo_wait_end();
			return 0;
		}
		if (atomic_load(&bm->room_held) == 0) {
			/* Nobody runs, and still no room: make some. A
			 * checkpoint with nothing running cleans every page
			 * it takes; should the count still be high, go in
			 * anyway rather than checkpoint for ever. */
			lo_wait_end(); /* the checkpoint records its own */
			int r = bm_checkpoint(bm);
			if (r < 0 && (uint64_t)atomic_load(&bm->dirty) > bm->dirty_limit)
				return r;
			if (r == 0 && atomic_load(&bm->room_held) == 0) {
				atomic_fetch_add(&bm->room_held, BM_TXN_PAGES);
				return 0;
			}
			lo_wait_begin(LO_WAIT_ROOM, 0);
		}
	}
}

/* Wake the transactions waiting for room (a transaction ended, or a
 * checkpoint cleaned pages). */
static void room_wake(struct bm *bm)
{
	if (atomic_load(&bm->room_waiters) > 0) {
		pthread_mutex_lock(&bm->room_mu);
		pthread_cond_broadcast(&bm->room_cv);
		pthread_mutex_unlock(&bm->room_mu);
	}
}

static void room_give(struct bm *bm)
{
	atomic_fetch_sub(&bm->room_held, BM_TXN_PAGES);
	room_wake(bm);
}

void bm_txn_begin(struct bm *bm)
{
	if (!bm->journal)
		return;
	if (txn_depth > 0 && txn_bm == bm) {
		txn_depth++;
		return;
	}
	int r = 0;
	/* It may wait for a checkpoint, for journal room (other transactions
	 * to end) and for the transaction lock: with nothing held. */
	lo_assert_may_wait_checkpoint("bm_txn_begin");
	if ((uint64_t)atomic_load_explicit(&bm->dirty, memory_order_relaxed) > bm->dirty_limit)
		r = bm_checkpoint(bm);
	/* The checkpoint failed and the pool is as full of changes as the
	 * journal can take: this transaction may only read. */
	if (r == 0 || (uint64_t)atomic_load(&bm->dirty) <= bm->dirty_limit)
		r = room_take(bm); /* outside the lock: a checkpoint may be waiting */
	if (r < 0)
		bm_txn_refused = r;
	else
		txn_room = true;
	if (pthread_rwlock_tryrdlock(&bm->txn_lock) != 0) {
		bm_about_to_wait(); /* a checkpoint holds it */
		lo_wait_begin(LO_WAIT_TXN_LOCK, 0);
		pthread_rwlock_rdlock(&bm->txn_lock);
		lo_wait_end();
	}
	lo_acquire(LO_TXN, 0, false);
	txn_bm = bm;
	txn_depth = 1;
}

void bm_txn_end(struct bm *bm)
{
	if (!bm->journal)
		return;
	if (--txn_depth > 0)
		return;
	txn_bm = NULL;
	bm_txn_refused = 0;
	pthread_rwlock_unlock(&bm->txn_lock);
	lo_release(LO_TXN, 0);
	if (txn_room) {
		txn_room = false;
		room_give(bm);
	}
}

/* Ask the background checkpointer to run now. Never waits (a leaf mutex
 * at most): the fault path calls it with latches and inode locks held. */
void bm_checkpoint_kick(struct bm *bm)
{
	if (!bm->ckpt_thread_on || atomic_exchange(&bm->ckpt_kicked, true))
		return;
	pthread_mutex_lock(&bm->ckpt_wait_mu);
	pthread_cond_signal(&bm->ckpt_wait_cv);
	pthread_mutex_unlock(&bm->ckpt_wait_mu);
}

unsigned bm_thread_txn_depth(void)
{
	return txn_depth;
}

uint64_t bm_recovered_pages(const struct bm *bm)
{
	return bm->recovered_pages;
}

unsigned bm_checkpoint_waiters(struct bm *bm)
{
	return atomic_load(&bm->ckpt_waiters);
}

/* ------------------------------------------------------------------ */
/* The background checkpointer                                        */

static void *checkpointer_main(void *arg)
{
	struct bm *bm = arg;
	pthread_mutex_lock(&bm->ckpt_wait_mu);
	while (!bm->ckpt_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += bm->ckpt_ms / 1000;
		ts.tv_nsec += (long)(bm->ckpt_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (!atomic_load(&bm->ckpt_kicked))
			pthread_cond_timedwait(&bm->ckpt_wait_cv, &bm->ckpt_wait_mu, &ts);
		if (bm->ckpt_stop)
			break;
		pthread_mutex_unlock(&bm->ckpt_wait_mu);
		atomic_store(&bm->ckpt_kicked, false);
		if (atomic_load(&bm->dirty) > 0 || bm->meta_dirty)
			bm_checkpoint(bm); /* errors are logged; the next try repeats it */
		pthread_mutex_lock(&bm->ckpt_wait_mu);
	}
	pthread_mutex_unlock(&bm->ckpt_wait_mu);
	return NULL;
}

int bm_journal_open(struct bm *bm)
{
	if (!bm->journal) {
		/* Pages will now be written home outside any checkpoint: a
		 * journal left from an earlier journaled session must never be
		 * replayed over them. */
		if (bm->read_only)
			return 0;
		uint8_t *zero = NULL;
		if (posix_memalign((void **)&zero, BM_PAGE_SIZE, BM_PAGE_SIZE))
			return -ENOMEM;
		memset(zero, 0, BM_PAGE_SIZE);
		int r = bm_io_write(bm, zero, BM_PAGE_SIZE, bm->jr_start * BM_PAGE_SIZE);
		free(zero);
		return r;
	}
	uint64_t cap = journal_capacity(bm->jr_pages);
	/* A checkpoint writes the dirty pages, the changed checksum-table
	 * pages (twice: the table and its copy) and bitmap pages (at most all
	 * of them) and the superblock: the rest of
	 * the journal is the room for dirty pages, but no more than five
	 * eighths of the pool: the rest stays clean for eviction, less the
	 * pin budget (an eighth, bm_load.c) and the guards of running
	 * operations, so that a page load always finds a frame to evict.
	 * Transactions already running when the limit is crossed add more
	 * (the slack: a quarter of the room, at least one transaction's worth
	 * when the room allows). At most half the pool is the limit. */
	uint64_t fixed = 2 * bm->cs_pages + bm->bmp_pages + 1;
	uint64_t room = cap > fixed + 16 ? cap - fixed : 16;
	if (room > bm->capacity / 8 * 5)
		room = bm->capacity / 8 * 5;
	uint64_t slack = room / 4 > BM_TXN_PAGES ? room / 4 : BM_TXN_PAGES;
	uint64_t limit = room > slack + 16 ? room - slack : 16;
	if (limit > bm->capacity / 2)
		limit = bm->capacity / 2;
	bm->jr_room = room;
	bm->dirty_limit = limit;
	pthread_mutex_init(&bm->room_mu, NULL);
	pthread_cond_init(&bm->room_cv, NULL);
	if (pthread_create(&bm->ckpt_thread, NULL, checkpointer_main, bm) != 0)
		return -EAGAIN;
	bm->ckpt_thread_on = true;
	return 0;
}

void bm_journal_close(struct bm *bm)
{
	if (!bm->ckpt_thread_on)
		return;
	pthread_mutex_lock(&bm->ckpt_wait_mu);
	bm->ckpt_stop = true;
	pthread_cond_signal(&bm->ckpt_wait_cv);
	pthread_mutex_unlock(&bm->ckpt_wait_mu);
	pthread_join(bm->ckpt_thread, NULL);
	bm->ckpt_thread_on = false;
}
