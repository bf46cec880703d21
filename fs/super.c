/*
 * super.c: the filesystem as a whole: format, mount, unmount, sync, statfs.
 *
 * What a mount does, in order:
 *
 *   bm_open                 the image (locked; fails with -EBUSY if in use)
 *   check FS_SB_MAGIC       formatted by mkfs.virtuscale, not just bm_format
 *   read the slots          tree root, inode numbers, inode count
 *   after an unclean close  skip to the reserved inode limit, recount inodes
 *   free orphans            inodes unlinked while open when the daemon died
 *   reserve inode numbers   raise the limit (checkpointed with the inodes)
 *
 * The mount takes no threads of its own and starts none; every thread that
 * later calls in gets its buffer-manager context on first use.
 */
#include "fs/fs_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/bm_fault.h"
#include "engine/lockorder.h"
#include "engine/log.h"

int fs_format(struct bm *bm, uint32_t root_uid, uint32_t root_gid)
{
	struct fs tmp;
	struct fs_inode root;
	uint64_t tree_root;
	int r;

	if (bm_sb_get(bm, FS_SB_MAGIC) == FS_MAGIC)
		return -EEXIST;
	r = bt_create(bm, &tree_root);
	if (r < 0)
		return r;

	memset(&tmp, 0, sizeof(tmp));
	tmp.bm = bm;
	tmp.tree = bt_open(bm, tree_root);
	memset(&root, 0, sizeof(root));
	root.ino = FS_INO_ROOT;
	root.mode = S_IFDIR | 0755;
	root.uid = root_uid;
	root.gid = root_gid;
	root.nlink = 2;
	root.parent = FS_INO_ROOT;
	fs_now(&root.atime);
	root.mtime = root.ctime = root.btime = root.atime;
	r = fs_inode_insert(&tmp, &root);
	if (r < 0)
		return r;

	bm_sb_set(bm, FS_SB_ROOT, tree_root);
	bm_sb_set(bm, FS_SB_INO_NEXT, FS_INO_FIRST);
	bm_sb_set(bm, FS_SB_INO_LIMIT, FS_INO_FIRST);
	bm_sb_set(bm, FS_SB_INODES, 1);
	bm_sb_set(bm, FS_SB_MOUNTS, 0);
	/* The magic goes last: an image is a filesystem once it is set. */
	bm_sb_set(bm, FS_SB_MAGIC, FS_MAGIC);
	return bm_flush(bm);
}

void fs_format_reserve(struct bm *bm, unsigned tenths)
{
	bm_sb_set(bm, FS_SB_RESERVED, FS_SB_SET | (tenths > 500 ? 500 : tenths));
}

/* The metadata reserve: 1% of the data area, at least 256 KiB and at most
 * 64 MiB. A change to what exists needs a few pages at most (a leaf split
 * here and there); the reserve lets many thousands of them through, e.g.
 * `cp -a` setting the times and modes of every file it just copied. */
static void reserves_compute(struct fs *fs)
{
	uint64_t data = bm_page_count(fs->bm) - bm_first_data_pid(fs->bm);
	uint64_t v = bm_sb_get(fs->bm, FS_SB_RESERVED);
	uint64_t tenths = (v & FS_SB_SET) ? (v & ~FS_SB_SET) : FS_RESERVED_DEFAULT;
	uint64_t meta = data / 100;

	if (meta < 64)
		meta = 64;
	if (meta > 16384)
		meta = 16384;
	if (meta > data / 4)
		meta = data / 4;
	fs->reserve_meta = meta;
	fs->reserve_root = data * (tenths > 500 ? 500 : tenths) / 1000;
}

void fs_space_enter(struct fs *fs, enum fs_space what)
{
	uint64_t floor = 0;

	if (what != FS_SPACE_ALL)
		floor = fs->reserve_meta + (what == FS_SPACE_USER ? fs->reserve_root : 0);
	bm_alloc_floor(fs->bm, floor);
}

uint64_t fs_space_user_free(struct fs *fs)
{
	uint64_t free = bm_free_pages(fs->bm), floor = fs->reserve_meta + fs->reserve_root;

	return free > floor ? free - floor : 0;
}

static void store_counters(struct fs *fs)
{
	pthread_mutex_lock(&fs->ino_mu);
	bm_sb_set(fs->bm, FS_SB_INO_NEXT, fs->next_ino);
	bm_sb_set(fs->bm, FS_SB_INO_LIMIT, fs->ino_limit);
	pthread_mutex_unlock(&fs->ino_mu);
	bm_sb_set(fs->bm, FS_SB_INODES, atomic_load(&fs->inode_count));
	bm_sb_set(fs->bm, FS_SB_MOUNTS, fs->mounts);
}

static int mount_prepare(struct fs *fs)
{
	struct fs_inode root;
	uint64_t count;
	int r;

	fs->next_ino = bm_sb_get(fs->bm, FS_SB_INO_NEXT);
	fs->ino_limit = bm_sb_get(fs->bm, FS_SB_INO_LIMIT);
	atomic_store(&fs->inode_count, bm_sb_get(fs->bm, FS_SB_INODES));
	fs->mounts = bm_sb_get(fs->bm, FS_SB_MOUNTS) + 1;
	reserves_compute(fs);

	r = fs_inode_get(fs, FS_INO_ROOT, &root);
	if (r == 0 && !S_ISDIR(root.mode))
		r = VS_CORRUPT("the root inode is not a directory");
	if (r < 0) {
		vs_log(VS_LOG_ERR, "cannot read the root directory: %s", strerror(-r));
		return r;
	}
	if (!bm_was_clean(fs->bm)) {
		vs_log(VS_LOG_WARN, "the image was not closed cleanly; recounting inodes");
		/* Numbers up to the persisted limit may be in use by records
		 * that reached the image: never hand them out again. */
		if (fs->next_ino < fs->ino_limit)
			fs->next_ino = fs->ino_limit;
		r = fs_inodes_recount(fs, &count);
		if (r < 0)
			return r;
		atomic_store(&fs->inode_count, count);
	}
	if (fs->next_ino < FS_INO_FIRST)
		fs->next_ino = FS_INO_FIRST;
	if (fs->read_only) {
		/* Nothing is created: the limit only has to stay above. */
		fs->ino_limit = UINT64_MAX;
		return 0;
	}
	r = fs_orphans_reclaim(fs);
	if (r < 0)
		return r;
	bm_sb_set(fs->bm, FS_SB_MOUNTS, fs->mounts);
	return fs_ino_reserve(fs, fs->next_ino);
}

int fs_mount(const struct fs_config *cfg, struct fs **ret_fs)
{
	struct bm_config bc = {
	    .path = cfg->image,
	    .pool_bytes = cfg->pool_bytes,
	    .backend = cfg->backend,
	    .evict_policy = cfg->evict,
	    .is_meta = bt_page_is_node, /* tree nodes before file data */
	    .read_only = cfg->read_only,
	    /* every request is a transaction, every fsync a checkpoint */
	    .journal = !cfg->read_only,
	    .checkpoint_ms = cfg->checkpoint_ms,
	    .fault = cfg->fault,
	};
	struct fs *fs;
	int r;

	/* Before bm_open starts the engine's threads: they inherit the block
	 * of SIGUSR2 that leaves it to the dump's own thread (lockorder.h). */
	r = lo_dump_install();
	if (r < 0)
		vs_log(VS_LOG_WARN, "SIGUSR2 will not dump the lock-holder table: %s",
		       strerror(-r));
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	r = bm_open(&bc, &fs->bm);
	if (r < 0) {
		free(fs);
		return r;
	}
	if (bm_sb_get(fs->bm, FS_SB_MAGIC) != FS_MAGIC) {
		vs_log(VS_LOG_ERR, "%s: the image holds no filesystem (run mkfs.virtuscale)",
		       cfg->image);
		bm_close(fs->bm);
		free(fs);
		return -EMEDIUMTYPE;
	}
	fs->read_only = cfg->read_only;
	fs->tree = bt_open(fs->bm, bm_sb_get(fs->bm, FS_SB_ROOT));
	fs_now(&fs->mount_time);
	fs_locks_init(fs);
	fs_nodes_init(fs);
	r = mount_prepare(fs);
	if (r < 0) {
		bm_close(fs->bm);
		fs_nodes_destroy(fs);
		fs_locks_destroy(fs);
		free(fs);
		return r;
	}
	*ret_fs = fs;
	return 0;
}

int fs_unmount(struct fs *fs)
{
	int r;

	if (!fs)
		return 0;
	if (!fs->read_only) {
		uint64_t n = fs_nodes_reclaim_all(fs);
		if (n)
			vs_log(VS_LOG_INFO, "freed %llu unlinked inode(s) at unmount",
			       (unsigned long long)n);
		store_counters(fs);
	}
	r = bm_close(fs->bm);
	if (r < 0)
		vs_log(VS_LOG_ERR, "writing the image back failed: %s", strerror(-r));
	fs_nodes_destroy(fs);
	fs_locks_destroy(fs);
	free(fs);
	return r;
}

void fs_abandon(struct fs *fs)
{
	if (!fs)
		return;
	bm_abandon(fs->bm);
	fs_nodes_destroy(fs);
	fs_locks_destroy(fs);
	free(fs);
}

struct bm *fs_bm(struct fs *fs)
{
	return fs->bm;
}

int fs_sync_notify(struct fs *fs, struct bm_durable *d)
{
	if (!fs->read_only)
		store_counters(fs);
	return bm_checkpoint_notify(fs->bm, d); /* (read-only too: tells d) */
}

int fs_sync(struct fs *fs)
{
	return fs_sync_notify(fs, NULL);
}

int fs_statfs(struct fs *fs, struct statvfs *ret)
{
	struct bm_stats s;
	uint64_t data_pages;

	bm_stats_get(fs->bm, &s);
	data_pages = s.page_count - bm_first_data_pid(fs->bm);
	memset(ret, 0, sizeof(*ret));
	ret->f_bsize = BM_PAGE_SIZE;
	ret->f_frsize = BM_PAGE_SIZE;
	ret->f_blocks = data_pages;
	/* As ext4: f_bfree counts every free page, f_bavail what an ordinary
	 * user can still write (both reserves left out). */
	ret->f_bfree = s.free_pages;
	ret->f_bavail = s.free_pages > fs->reserve_meta + fs->reserve_root
			    ? s.free_pages - fs->reserve_meta - fs->reserve_root
			    : 0;
	/* Every new inode needs at most about a page of tree: free pages bound
	 * how many more there can be. */
	ret->f_files = atomic_load(&fs->inode_count) + s.free_pages;
	ret->f_ffree = s.free_pages;
	ret->f_favail = s.free_pages;
	ret->f_namemax = FS_NAME_MAX;
	if (fs->read_only)
		ret->f_flag |= ST_RDONLY;
	return 0;
}
