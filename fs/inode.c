/*
 * inode.c: inode records, inode numbers, inode locks, and the table of live
 * inodes that carries the kernel's lookup counts and the open counts.
 *
 * Life of an inode
 * ----------------
 *   created (fs_mknod ...)     nlink >= 1, lookup 1
 *   last name removed          nlink 0: an ORPHAN record is written and the
 *                              live node is marked unlinked (fs_node_unlinked)
 *   lookups and opens drop     the last of fs_node_forget / fs_node_close to
 *   to zero                    see both counts at zero on a marked node frees
 *                              it (fs_inode_reclaim): records, pages, orphan
 *   daemon stops first         fs_nodes_reclaim_all at unmount; after a crash
 *                              fs_orphans_reclaim at the next mount
 *
 * The node table's stripe mutex orders "mark unlinked" against "counts hit
 * zero", so exactly one of the two sides sees the other and frees.
 */
#include "fs/fs_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/lockorder.h"
#include "engine/log.h"

/* The clock the kernel stamps files with (current_time(): the coarse
 * clock, one tick per jiffy, on a filesystem without fine-grained
 * timestamps such as FUSE). With writeback caching the kernel stamps
 * written files itself: a precise clock here would make a file written
 * right after a directory was made look up to a tick older than it. */
void fs_now(struct timespec *ret)
{
	clock_gettime(CLOCK_REALTIME_COARSE, ret);
}

/* ------------------------------------------------------------------ */
/* Records                                                            */

static void put_time(uint8_t *p, const struct timespec *ts)
{
	fs_put_le64(p, (uint64_t)ts->tv_sec);
	fs_put_le32(p + 8, (uint32_t)ts->tv_nsec);
}

static void get_time(const uint8_t *p, struct timespec *ts)
{
	ts->tv_sec = (time_t)fs_get_le64(p);
	ts->tv_nsec = fs_get_le32(p + 8);
	if (ts->tv_nsec >= 1000000000)
		ts->tv_nsec = 999999999;
}

static void inode_encode(const struct fs_inode *in, uint8_t *v)
{
	memset(v, 0, FS_INODE_LEN);
	fs_put_le32(v + 0, in->mode);
	fs_put_le32(v + 4, in->uid);
	fs_put_le32(v + 8, in->gid);
	fs_put_le32(v + 12, in->nlink);
	fs_put_le64(v + 16, in->size);
	fs_put_le64(v + 24, in->pages);
	fs_put_le64(v + 32, in->parent);
	fs_put_le64(v + 40, in->rdev);
	put_time(v + 48, &in->atime);
	put_time(v + 60, &in->mtime);
	put_time(v + 72, &in->ctime);
	put_time(v + 84, &in->btime);
	fs_put_le32(v + 96, in->flags);
	fs_put_le64(v + 104, in->generation);
}

static void inode_decode(uint64_t ino, const uint8_t *v, struct fs_inode *in)
{
	in->ino = ino;
	in->mode = fs_get_le32(v + 0);
	in->uid = fs_get_le32(v + 4);
	in->gid = fs_get_le32(v + 8);
	in->nlink = fs_get_le32(v + 12);
	in->size = fs_get_le64(v + 16);
	in->pages = fs_get_le64(v + 24);
	in->parent = fs_get_le64(v + 32);
	in->rdev = fs_get_le64(v + 40);
	get_time(v + 48, &in->atime);
	get_time(v + 60, &in->mtime);
	get_time(v + 72, &in->ctime);
	get_time(v + 84, &in->btime);
	in->flags = fs_get_le32(v + 96);
	in->generation = fs_get_le64(v + 104);
}

int fs_inode_get(struct fs *fs, uint64_t ino, struct fs_inode *ret)
{
	uint8_t key[FS_KEY_LEN], val[FS_INODE_LEN];
	unsigned len = 0;
	int r;

	fs_key(key, ino, FS_REC_INODE, 0);
	r = bt_lookup(&fs->tree, key, sizeof(key), val, sizeof(val), &len);
	if (r == -ENOBUFS || (r == 0 && len != FS_INODE_LEN))
		return VS_CORRUPT("inode %llu: record of %u bytes", (unsigned long long)ino, len);
	if (r < 0)
		return r;
	inode_decode(ino, val, ret);
	return 0;
}

int fs_inode_put(struct fs *fs, const struct fs_inode *in)
{
	uint8_t key[FS_KEY_LEN], val[FS_INODE_LEN];

	fs_key(key, in->ino, FS_REC_INODE, 0);
	inode_encode(in, val);
	return bt_put(&fs->tree, key, sizeof(key), val, sizeof(val));
}

int fs_inode_insert(struct fs *fs, const struct fs_inode *in)
{
	uint8_t key[FS_KEY_LEN], val[FS_INODE_LEN];

	fs_key(key, in->ino, FS_REC_INODE, 0);
	inode_encode(in, val);
	return bt_insert(&fs->tree, key, sizeof(key), val, sizeof(val));
}

void fs_inode_to_stat(const struct fs_inode *in, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = in->rdev;
	st->st_size = (off_t)in->size;
	st->st_blksize = BM_PAGE_SIZE;
	/* Inline files occupy part of a tree page; count what they hold. */
	if (in->flags & FS_INODE_INLINE) {
		uint64_t n = in->size < FS_INLINE_MAX ? in->size : FS_INLINE_MAX;
		st->st_blocks = (blkcnt_t)((n + 511) / 512);
	} else
		st->st_blocks = (blkcnt_t)(in->pages * (BM_PAGE_SIZE / 512));
	st->st_atim = in->atime;
	st->st_mtim = in->mtime;
	st->st_ctim = in->ctime;
}

/* ------------------------------------------------------------------ */
/* Inode numbers                                                      */

/* Raise the limit before handing out any number below it. Called with
 * ino_mu held, or before the filesystem is shared. The limit is a superblock
 * slot, and every checkpoint writes the slots together with the pages: an
 * inode that reached the image always comes with a limit above its number,
 * so after a crash numbers restart at the limit and none is reissued. (No
 * flush here: this runs inside the creating request's transaction.) */
int fs_ino_reserve(struct fs *fs, uint64_t at_least)
{
	uint64_t limit = at_least + FS_INO_BATCH;

	bm_sb_set(fs->bm, FS_SB_INO_LIMIT, limit);
	bm_sb_set(fs->bm, FS_SB_INO_NEXT, fs->next_ino);
	fs->ino_limit = limit;
	return 0;
}

int fs_ino_alloc(struct fs *fs, uint64_t *ret)
{
	int r = 0;

	pthread_mutex_lock(&fs->ino_mu);
	if (fs->next_ino >= fs->ino_limit)
		r = fs_ino_reserve(fs, fs->next_ino);
	if (r == 0)
		*ret = fs->next_ino++;
	pthread_mutex_unlock(&fs->ino_mu);
	return r;
}

/* ------------------------------------------------------------------ */
/* Deleting an inode                                                  */

#define FREE_BATCH 32

struct free_ctx {
	uint64_t ino;
	unsigned n;
	struct {
		uint8_t key[FS_KEY_CHUNK_LEN];
		unsigned klen;
		uint64_t pid;	/* extents only */
		uint64_t pages; /* extents only; 0 otherwise */
	} e[FREE_BATCH];
};

static bool free_collect(void *vctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct free_ctx *c = vctx;
	const uint8_t *k = key;

	if (klen < FS_KEY_LEN || klen > FS_KEY_CHUNK_LEN || fs_key_obj(k) != c->ino)
		return false;
	if (c->n > 0 && c->e[c->n - 1].klen == klen && memcmp(c->e[c->n - 1].key, k, klen) == 0)
		return true; /* seen already (a scan restart) */
	memcpy(c->e[c->n].key, k, klen);
	c->e[c->n].klen = klen;
	c->e[c->n].pages = 0;
	if (k[8] == FS_REC_EXTENT && vlen == FS_EXTENT_LEN) {
		c->e[c->n].pid = fs_get_le64(val);
		c->e[c->n].pages = fs_get_le32((const uint8_t *)val + 8);
	}
	return ++c->n < FREE_BATCH;
}

/* May @pages pages at @pid be handed to bm_free? A damaged extent must not
 * free pages that are not ours (bm_free aborts on a double free). */
static bool extent_freeable(struct fs *fs, uint64_t pid, uint64_t pages)
{
	if (pid < bm_first_data_pid(fs->bm) || pages > bm_page_count(fs->bm) ||
	    pid + pages > bm_page_count(fs->bm))
		return false;
	for (uint64_t p = pid; p < pid + pages; p++)
		if (!bm_is_allocated(fs->bm, p))
			return false;
	return true;
}

int fs_inode_free_locked(struct fs *fs, uint64_t ino)
{
	uint8_t key[FS_KEY_LEN];
	bool had_inode = false;
	int r;

	for (;;) {
		struct free_ctx c = {.ino = ino};
		fs_key(key, ino, 0, 0);
		r = bt_scan_asc(&fs->tree, key, sizeof(key), free_collect, &c);
		if (r < 0)
			return r;
		if (c.n == 0)
			break;
		for (unsigned i = 0; i < c.n; i++) {
			r = bt_remove(&fs->tree, c.e[i].key, c.e[i].klen);
			if (r < 0 && r != -ENOENT)
				return r;
			if (c.e[i].key[8] == FS_REC_INODE)
				had_inode = true;
			if (r == 0 && c.e[i].pages) {
				if (extent_freeable(fs, c.e[i].pid, c.e[i].pages))
					bm_free(fs->bm, c.e[i].pid, c.e[i].pages);
				else
					VS_CORRUPT("inode %llu: extent of %llu pages at pid %llu "
						   "is not allocated; pages leaked",
						   (unsigned long long)ino,
						   (unsigned long long)c.e[i].pages,
						   (unsigned long long)c.e[i].pid);
			}
		}
	}
	fs_key(key, 0, FS_REC_ORPHAN, ino);
	r = bt_remove(&fs->tree, key, sizeof(key));
	if (r < 0 && r != -ENOENT)
		return r;
	if (had_inode)
		atomic_fetch_sub(&fs->inode_count, 1);
	return 0;
}

void fs_inode_reclaim(struct fs *fs, uint64_t ino)
{
	int r;

	fs_ino_wrlock_txn(fs, ino); /* (a transaction: at unmount none surrounds it) */
	r = fs_inode_free_locked(fs, ino);
	fs_ino_unlock(fs, ino);
	if (r < 0)
		vs_log(VS_LOG_WARN, "inode %llu: freeing failed (%s); left as an orphan",
		       (unsigned long long)ino, strerror(-r));
}

int fs_orphan_add(struct fs *fs, uint64_t ino)
{
	uint8_t key[FS_KEY_LEN];

	fs_key(key, 0, FS_REC_ORPHAN, ino);
	return bt_put(&fs->tree, key, sizeof(key), "", 0);
}

#define ORPHAN_BATCH 64

struct orphan_ctx {
	unsigned n;
	uint64_t ino[ORPHAN_BATCH];
};

static bool orphan_collect(void *vctx, const void *key, unsigned klen, const void *val,
			   unsigned vlen)
{
	struct orphan_ctx *c = vctx;

	if (!fs_key_is(key, klen, 0, FS_REC_ORPHAN))
		return false;
	uint64_t ino = fs_key_off(key);
	if (c->n > 0 && c->ino[c->n - 1] >= ino)
		return true;
	c->ino[c->n++] = ino;
	return c->n < ORPHAN_BATCH;
}

int fs_orphans_reclaim(struct fs *fs)
{
	uint8_t key[FS_KEY_LEN];
	uint64_t from = 0, freed = 0;
	int r;

	for (;;) {
		struct orphan_ctx c = {.n = 0};
		fs_key(key, 0, FS_REC_ORPHAN, from);
		r = bt_scan_asc(&fs->tree, key, sizeof(key), orphan_collect, &c);
		if (r < 0)
			return r;
		if (c.n == 0)
			break;
		for (unsigned i = 0; i < c.n; i++) {
			/* One transaction each (fs_ino_wrlock_txn begins it), as at
			 * unmount: a checkpoint (the background one runs
			 * already) never sees an inode half freed. */
			fs_ino_wrlock_txn(fs, c.ino[i]);
			r = fs_inode_free_locked(fs, c.ino[i]);
			fs_ino_unlock(fs, c.ino[i]);
			if (r < 0)
				vs_log(VS_LOG_WARN, "orphan inode %llu: %s",
				       (unsigned long long)c.ino[i], strerror(-r));
			else
				freed++;
		}
		from = c.ino[c.n - 1] + 1;
	}
	if (freed)
		vs_log(VS_LOG_INFO, "freed %llu unlinked inode(s) left by the last session",
		       (unsigned long long)freed);
	return 0;
}

struct count_ctx {
	uint64_t n;
	uint64_t max_ino;
};

static bool count_inodes(void *vctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct count_ctx *c = vctx;
	const uint8_t *k = key;

	if (klen == FS_KEY_LEN && k[8] == FS_REC_INODE) {
		c->n++;
		if (fs_key_obj(k) > c->max_ino)
			c->max_ino = fs_key_obj(k);
	}
	return true;
}

int fs_inodes_recount(struct fs *fs, uint64_t *ret)
{
	struct count_ctx c = {0, 0};
	uint8_t key[FS_KEY_LEN];
	int r;

	fs_key(key, 0, 0, 0);
	r = bt_scan_asc(&fs->tree, key, sizeof(key), count_inodes, &c);
	if (r < 0)
		return r;
	/* Whatever the slots said, never hand out a number in use. */
	if (c.max_ino >= fs->next_ino)
		fs->next_ino = c.max_ino + 1;
	*ret = c.n;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Inode locks                                                        */

static unsigned lock_idx(uint64_t ino)
{
	return (unsigned)((ino * UINT64_C(0x9E3779B97F4A7C15)) >> 54) % FS_LOCK_STRIPES;
}

void fs_locks_init(struct fs *fs)
{
	for (unsigned i = 0; i < FS_LOCK_STRIPES; i++)
		pthread_rwlock_init(&fs->ino_locks[i], NULL);
	pthread_mutex_init(&fs->rename_mu, NULL);
	pthread_mutex_init(&fs->ino_mu, NULL);
}

void fs_locks_destroy(struct fs *fs)
{
	for (unsigned i = 0; i < FS_LOCK_STRIPES; i++)
		pthread_rwlock_destroy(&fs->ino_locks[i]);
	pthread_mutex_destroy(&fs->rename_mu);
	pthread_mutex_destroy(&fs->ino_mu);
}

/*
 * Inode locks are level 4 of engine/lockorder.h: taken after the
 * transaction and rename_mu, before any page latch, and never held while
 * waiting for a checkpoint. A writer's changes are one transaction, and
 * bm_txn_begin may wait for a checkpoint, so taking a lock for writing
 * (fs_ino_wrlock_txn, fs_lock_many_txn) begins a transaction first, and its unlock
 * ends it: inside a request's transaction (fuse_ops.c) that only nests,
 * and a caller without one (unmount's reclaim, tools, tests) gets one in
 * the right place. The stripes this thread holds for writing are
 * remembered so that fs_ino_unlock knows which unlocks end one.
 */
#define WR_HELD_MAX 8
static _Thread_local unsigned wr_held[WR_HELD_MAX], wr_nheld;

/* Take stripe @idx for @ino, recorded (lockorder.h) before it is taken:
 * the order check comes first, and a wait shows in the lock-holder table. */
static void ino_take(struct fs *fs, unsigned idx, uint64_t ino, bool excl)
{
	pthread_rwlock_t *lk = &fs->ino_locks[idx];
	lo_acquire(LO_INODE, ino, excl);
	if ((excl ? pthread_rwlock_trywrlock(lk) : pthread_rwlock_tryrdlock(lk)) == 0)
		return;
	lo_wait_begin(LO_WAIT_INODE, ino);
	if (excl)
		pthread_rwlock_wrlock(lk);
	else
		pthread_rwlock_rdlock(lk);
	lo_wait_end();
}

void fs_ino_rdlock(struct fs *fs, uint64_t ino)
{
	ino_take(fs, lock_idx(ino), ino, false);
}

void fs_ino_wrlock_txn(struct fs *fs, uint64_t ino)
{
	unsigned idx = lock_idx(ino);
	if (wr_nheld == WR_HELD_MAX) {
		vs_log(VS_LOG_ERR, "internal: more than %d inode locks held for writing",
		       WR_HELD_MAX);
		abort();
	}
	bm_txn_begin(fs->bm);
	ino_take(fs, idx, ino, true);
	wr_held[wr_nheld++] = idx;
}

void fs_ino_unlock(struct fs *fs, uint64_t ino)
{
	unsigned idx = lock_idx(ino);
	pthread_rwlock_unlock(&fs->ino_locks[idx]);
	lo_release(LO_INODE, ino);
	for (unsigned i = wr_nheld; i-- > 0;) {
		if (wr_held[i] == idx) {
			wr_held[i] = wr_held[--wr_nheld];
			bm_txn_end(fs->bm);
			break;
		}
	}
}

/* Which of @inos stripe @idx is taken for: the lock-holder table names it. */
static uint64_t stripe_ino(const uint64_t *inos, unsigned n, unsigned idx)
{
	for (unsigned i = 0; i < n && i < 4; i++)
		if (inos[i] != 0 && lock_idx(inos[i]) == idx)
			return inos[i];
	return 0;
}

void fs_lock_many_txn(struct fs *fs, struct fs_lockset *ls, const uint64_t *inos, unsigned n)
{
	ls->n = 0;
	for (unsigned i = 0; i < n && i < 4; i++) {
		if (inos[i] == 0)
			continue;
		unsigned idx = lock_idx(inos[i]), j;
		/* Insertion into a sorted, duplicate-free list. */
		for (j = 0; j < ls->n && ls->idx[j] < idx; j++)
			;
		if (j < ls->n && ls->idx[j] == idx)
			continue;
		memmove(&ls->idx[j + 1], &ls->idx[j], (ls->n - j) * sizeof(ls->idx[0]));
		ls->idx[j] = idx;
		ls->n++;
	}
	bm_txn_begin(fs->bm); /* see fs_ino_wrlock_txn */
	for (unsigned i = 0; i < ls->n; i++)
		ino_take(fs, ls->idx[i], stripe_ino(inos, n, ls->idx[i]), true);
}

void fs_unlock_many(struct fs *fs, struct fs_lockset *ls)
{
	for (unsigned i = ls->n; i > 0; i--) {
		pthread_rwlock_unlock(&fs->ino_locks[ls->idx[i - 1]]);
		lo_release(LO_INODE, 0); /* the last taken: fs_lock_many_txn's order */
	}
	ls->n = 0;
	bm_txn_end(fs->bm);
}

/* ------------------------------------------------------------------ */
/* Live-inode table                                                   */

static uint64_t node_hash(uint64_t ino)
{
	return ino * UINT64_C(0xC2B2AE3D27D4EB4F);
}

static struct fs_node_stripe *node_stripe(struct fs *fs, uint64_t ino)
{
	return &fs->nodes[(node_hash(ino) >> 58) % FS_NODE_STRIPES];
}

static struct fs_node **node_bucket(struct fs_node_stripe *s, uint64_t ino)
{
	return &s->buckets[node_hash(ino) & (s->nbuckets - 1)];
}

void fs_nodes_init(struct fs *fs)
{
	for (unsigned i = 0; i < FS_NODE_STRIPES; i++) {
		struct fs_node_stripe *s = &fs->nodes[i];
		pthread_mutex_init(&s->mu, NULL);
		s->buckets = NULL;
		s->nbuckets = 0;
		s->count = 0;
	}
}

void fs_nodes_destroy(struct fs *fs)
{
	for (unsigned i = 0; i < FS_NODE_STRIPES; i++) {
		struct fs_node_stripe *s = &fs->nodes[i];
		for (uint64_t b = 0; b < s->nbuckets; b++) {
			struct fs_node *n = s->buckets[b];
			while (n) {
				struct fs_node *next = n->next;
				free(n);
				n = next;
			}
		}
		free(s->buckets);
		pthread_mutex_destroy(&s->mu);
	}
}

/* Double the bucket array; on allocation failure keep the old one (chains
 * just get longer). */
static void node_grow(struct fs_node_stripe *s)
{
	uint64_t nb = s->nbuckets ? s->nbuckets * 2 : 64;
	struct fs_node **b = calloc(nb, sizeof(*b));
	if (!b)
		return;
	for (uint64_t i = 0; i < s->nbuckets; i++) {
		struct fs_node *n = s->buckets[i];
		while (n) {
			struct fs_node *next = n->next;
			uint64_t j = node_hash(n->ino) & (nb - 1);
			n->next = b[j];
			b[j] = n;
			n = next;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = nb;
}

static struct fs_node *node_find(struct fs_node_stripe *s, uint64_t ino)
{
	if (s->nbuckets == 0)
		return NULL;
	for (struct fs_node *n = *node_bucket(s, ino); n; n = n->next)
		if (n->ino == ino)
			return n;
	return NULL;
}

/* Find or create; NULL only when out of memory. */
static struct fs_node *node_get(struct fs_node_stripe *s, uint64_t ino)
{
	struct fs_node *n = node_find(s, ino);
	if (n)
		return n;
	if (s->count >= s->nbuckets)
		node_grow(s);
	if (s->nbuckets == 0)
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->ino = ino;
	struct fs_node **b = node_bucket(s, ino);
	n->next = *b;
	*b = n;
	s->count++;
	return n;
}

static void node_drop(struct fs_node_stripe *s, struct fs_node *victim)
{
	for (struct fs_node **p = node_bucket(s, victim->ino); *p; p = &(*p)->next) {
		if (*p == victim) {
			*p = victim->next;
			s->count--;
			free(victim);
			return;
		}
	}
}

static void node_oom(uint64_t ino)
{
	/* Losing a count would free a live inode later or leak it; neither is
	 * acceptable, and a few bytes of malloc failing means the daemon is
	 * about to fail anyway. */
	vs_log(VS_LOG_ERR, "out of memory tracking inode %llu", (unsigned long long)ino);
	abort();
}

void fs_node_lookup_add(struct fs *fs, uint64_t ino, uint64_t n)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);
	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_get(s, ino);
	if (!node)
		node_oom(ino);
	node->nlookup += n;
	pthread_mutex_unlock(&s->mu);
}

void fs_node_open_add(struct fs *fs, uint64_t ino)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);
	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_get(s, ino);
	if (!node)
		node_oom(ino);
	node->nopen++;
	pthread_mutex_unlock(&s->mu);
	atomic_fetch_add_explicit(&fs->open_files, 1, memory_order_relaxed);
}

/* With s->mu held: drop the node if nothing holds it; true if it must be
 * freed now. */
static bool node_settle(struct fs_node_stripe *s, struct fs_node *node)
{
	if (node->nlookup > 0 || node->nopen > 0)
		return false;
	bool free_now = node->unlinked;
	node_drop(s, node);
	return free_now;
}

bool fs_node_forget(struct fs *fs, uint64_t ino, uint64_t n)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);
	bool free_now = false;

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	if (node) {
		node->nlookup = n >= node->nlookup ? 0 : node->nlookup - n;
		free_now = node_settle(s, node);
	}
	pthread_mutex_unlock(&s->mu);
	return free_now;
}

bool fs_node_close(struct fs *fs, uint64_t ino)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);
	bool free_now = false;

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	if (node && node->nopen > 0) {
		node->nopen--;
		if (node->nopen == 0)
			node->flags &= ~NODE_WOPEN; /* written back before the release */
		atomic_fetch_sub_explicit(&fs->open_files, 1, memory_order_relaxed);
		free_now = node_settle(s, node);
	}
	pthread_mutex_unlock(&s->mu);
	return free_now;
}

/* Set @flag on the live node of @ino (none: nothing to remember). */
static void node_flag_set(struct fs *fs, uint64_t ino, uint8_t flag)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	if (node)
		node->flags |= flag;
	pthread_mutex_unlock(&s->mu);
}

/* Does the live node of @ino have any of @flags? */
static bool node_flag_any(struct fs *fs, uint64_t ino, uint8_t flags)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	bool any = node && (node->flags & flags);
	pthread_mutex_unlock(&s->mu);
	return any;
}

void fs_blocks_moved_note(struct fs *fs, uint64_t ino)
{
	node_flag_set(fs, ino, NODE_BLOCKS_MOVED);
}

bool fs_blocks_moved_take(struct fs *fs, uint64_t ino)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);
	bool moved = true; /* an inode the kernel does not know: no record */

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	if (node) {
		moved = node->flags & NODE_BLOCKS_MOVED;
		node->flags &= ~NODE_BLOCKS_MOVED;
	}
	pthread_mutex_unlock(&s->mu);
	return moved;
}

bool fs_node_is_open(struct fs *fs, uint64_t ino)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	bool open = node && node->nopen > 0;
	pthread_mutex_unlock(&s->mu);
	return open;
}

void fs_node_lost_name(struct fs *fs, uint64_t ino)
{
	atomic_store_explicit(&fs->attr_volatile, true, memory_order_relaxed);
	node_flag_set(fs, ino, NODE_LOST_NAME);
}

void fs_node_writing(struct fs *fs, uint64_t ino)
{
	node_flag_set(fs, ino, NODE_WOPEN);
}

bool fs_may_have_dirty_pages(struct fs *fs, uint64_t ino)
{
	return node_flag_any(fs, ino, NODE_WOPEN);
}

void fs_writer_note_root(struct fs *fs, uint64_t ino)
{
	node_flag_set(fs, ino, NODE_ROOT_WRITER);
}

bool fs_writer_is_root(struct fs *fs, uint64_t ino)
{
	return node_flag_any(fs, ino, NODE_ROOT_WRITER);
}

void fs_nospace_note(struct fs *fs, uint64_t ino)
{
	atomic_store_explicit(&fs->attr_volatile, true, memory_order_relaxed);
	node_flag_set(fs, ino, NODE_NOSPACE);
}

bool fs_nospace_pending(struct fs *fs, uint64_t ino)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);
	bool pending;

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	pending = node && (node->flags & NODE_NOSPACE);
	if (pending) {
		uint64_t free = bm_free_pages(fs->bm), floor = fs->reserve_meta;

		if (!(node->flags & NODE_ROOT_WRITER))
			floor += fs->reserve_root;
		if (free >= floor + FS_NOSPACE_CLEAR) {
			node->flags &= ~NODE_NOSPACE;
			pending = false;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return pending;
}

bool fs_attr_cacheable(struct fs *fs, const struct stat *st)
{
	if (S_ISDIR(st->st_mode))
		return true;
	if (st->st_nlink > 1)
		return false;
	/* Until some file has lost a name or a write-back, no node can say
	 * otherwise: the usual lookup and getattr skip the node table. */
	if (!atomic_load_explicit(&fs->attr_volatile, memory_order_relaxed))
		return true;
	return !node_flag_any(fs, st->st_ino, NODE_LOST_NAME | NODE_NOSPACE);
}

bool fs_node_unlinked(struct fs *fs, uint64_t ino)
{
	struct fs_node_stripe *s = node_stripe(fs, ino);
	bool free_now = true;

	pthread_mutex_lock(&s->mu);
	struct fs_node *node = node_find(s, ino);
	if (node) {
		node->unlinked = true;
		free_now = false;
	}
	pthread_mutex_unlock(&s->mu);
	return free_now;
}

uint64_t fs_nodes_reclaim_all(struct fs *fs)
{
	uint64_t freed = 0;

	for (unsigned i = 0; i < FS_NODE_STRIPES; i++) {
		struct fs_node_stripe *s = &fs->nodes[i];
		for (;;) {
			uint64_t ino = 0;
			pthread_mutex_lock(&s->mu);
			for (uint64_t b = 0; b < s->nbuckets && !ino; b++) {
				for (struct fs_node *n = s->buckets[b]; n; n = n->next) {
					if (n->unlinked) {
						ino = n->ino;
						node_drop(s, n);
						break;
					}
				}
			}
			pthread_mutex_unlock(&s->mu);
			if (!ino)
				break;
			fs_inode_reclaim(fs, ino);
			freed++;
		}
	}
	return freed;
}
