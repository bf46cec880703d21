/*
 * fs_internal.h: what the files of fs/ share: the mount structure, the
 * decoded inode, inode locks, the table of live inodes (lookup and open
 * counts), and the helpers each file offers the others.
 *
 * Lock order (outer to inner):
 *
 *   rename_mu  ->  inode stripe locks (ascending stripe index)  ->  node
 *   table stripe mutexes  ->  ino_mu
 *
 * The B-tree and the buffer manager take only their own page latches, never
 * ours, so any of these may be held across tree calls.
 */
#ifndef VS_FS_FS_INTERNAL_H
#define VS_FS_FS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "engine/btree.h"
#include "fs/fs.h"
#include "fs/keys.h"

#define FS_LOCK_STRIPES 1024 /* inode locks */
#define FS_NODE_STRIPES 64   /* live-inode table */

/* One live inode: what the kernel holds of it. */
struct fs_node {
	uint64_t ino;
	uint64_t nlookup;
	uint32_t nopen;
	bool unlinked; /* nlink reached 0: free when the counts do */
	uint8_t flags; /* NODE_* */
	struct fs_node *next;
};

/* fs_node.flags */
#define NODE_BLOCKS_MOVED 1u  /* pages allocated since fs_blocks_moved_take */
#define NODE_LOST_NAME    2u  /* a file that lost one of several names while known */
#define NODE_WOPEN        4u  /* open for writing: the kernel may hold dirty pages */
#define NODE_ROOT_WRITER  8u  /* root opened it for writing (fs_writer_note_root) */
#define NODE_NOSPACE      16u /* a write-back failed for want of space */

struct fs_node_stripe {
	pthread_mutex_t mu;
	struct fs_node **buckets;
	uint64_t nbuckets; /* power of two */
	uint64_t count;
};

struct fs {
	struct bm *bm;
	struct bt tree;
	bool read_only;
	bool kernel_cmtime; /* the kernel keeps files' mtime/ctime (fs_set_kernel_cmtime) */
	/* Space only some requests may take (fs_space_enter), in pages: room
	 * for metadata changes when data has filled the image, and room for
	 * root, as ext4's reserved blocks. */
	uint64_t reserve_meta, reserve_root;
	/* Some node has NODE_LOST_NAME or NODE_NOSPACE (fs_attr_cacheable);
	 * never cleared. */
	_Atomic bool attr_volatile;
	struct timespec mount_time;

	pthread_rwlock_t ino_locks[FS_LOCK_STRIPES];
	/* Held across a rename that changes directories, so that the loop check
	 * (walking parent pointers) sees a tree nobody else is re-hanging. */
	pthread_mutex_t rename_mu;

	struct fs_node_stripe nodes[FS_NODE_STRIPES];

	pthread_mutex_t ino_mu; /* next_ino, ino_limit */
	uint64_t next_ino;
	uint64_t ino_limit;

	_Atomic uint64_t inode_count;
	_Atomic uint64_t open_files;
	_Atomic uint64_t requests[FS_REQ_COUNT];
	uint64_t mounts;
};

/* The decoded inode record (layout in keys.h). */
struct fs_inode {
	uint64_t ino;
	uint32_t mode, uid, gid, nlink;
	uint64_t size;
	uint64_t pages;
	uint64_t parent;
	uint64_t rdev;
	struct timespec atime, mtime, ctime, btime;
	uint32_t flags;
	uint64_t generation;
};

/* ---- inode.c: records ---- */
void fs_now(struct timespec *ret);
int fs_inode_get(struct fs *fs, uint64_t ino, struct fs_inode *ret);
int fs_inode_put(struct fs *fs, const struct fs_inode *in);
int fs_inode_insert(struct fs *fs, const struct fs_inode *in);
void fs_inode_to_stat(const struct fs_inode *in, struct stat *ret);
int fs_ino_alloc(struct fs *fs, uint64_t *ret);
int fs_ino_reserve(struct fs *fs, uint64_t at_least);
/* Delete every record of @ino and free its pages. Caller holds its lock. */
int fs_inode_free_locked(struct fs *fs, uint64_t ino);
/* Lock @ino exclusively and free it (the last reference is gone). */
void fs_inode_reclaim(struct fs *fs, uint64_t ino);
int fs_orphan_add(struct fs *fs, uint64_t ino);
int fs_orphans_reclaim(struct fs *fs);
int fs_inodes_recount(struct fs *fs, uint64_t *ret);

/* ---- inode.c: locks (level 4 of engine/lockorder.h) ---- */
void fs_locks_init(struct fs *fs);
void fs_locks_destroy(struct fs *fs);
/* Shared: waits only for the writer of this stripe. */
void fs_ino_rdlock(struct fs *fs, uint64_t ino);
/* Exclusive, inside a transaction: begins one first (bm_txn_begin, which
 * may run a checkpoint or wait for one when none is open yet: hold no
 * other inode lock, rename_mu or page when calling it outside one; inside
 * a request's transaction it only nests), then takes the lock.
 * fs_ino_unlock ends that transaction. */
void fs_ino_wrlock_txn(struct fs *fs, uint64_t ino);
void fs_blocks_moved_note(struct fs *fs, uint64_t ino); /* inode.c */
void fs_node_lost_name(struct fs *fs, uint64_t ino);     /* inode.c */
bool fs_node_is_open(struct fs *fs, uint64_t ino);       /* inode.c */
void fs_node_writing(struct fs *fs, uint64_t ino);       /* inode.c */
void fs_ino_unlock(struct fs *fs, uint64_t ino);

/* Up to four inodes locked exclusively in stripe order, inside a
 * transaction begun first as by fs_ino_wrlock_txn; fs_unlock_many ends it. */
struct fs_lockset {
	unsigned n;
	unsigned idx[4];
};
void fs_lock_many_txn(struct fs *fs, struct fs_lockset *ls, const uint64_t *inos, unsigned n);
void fs_unlock_many(struct fs *fs, struct fs_lockset *ls);

/* ---- inode.c: live-inode table ---- */
void fs_nodes_init(struct fs *fs);
void fs_nodes_destroy(struct fs *fs);
void fs_node_lookup_add(struct fs *fs, uint64_t ino, uint64_t n);
void fs_node_open_add(struct fs *fs, uint64_t ino);
/* These return true when the caller must free the inode now. */
bool fs_node_forget(struct fs *fs, uint64_t ino, uint64_t n);
bool fs_node_close(struct fs *fs, uint64_t ino);
bool fs_node_unlinked(struct fs *fs, uint64_t ino);
/* Inodes still marked unlinked (for unmount); returns how many were freed. */
uint64_t fs_nodes_reclaim_all(struct fs *fs);

/* The CLOCK_REALTIME time @ms milliseconds from now, for
 * pthread_cond_timedwait (wire.c's and uring.c's waiting threads). */
static inline struct timespec fs_deadline_ms(unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* ---- names.c: hashed named records (dirents, xattrs) ---- */
struct fs_slot {
	uint64_t slot; /* where the name is, or where it may be inserted */
	bool found;
	unsigned vlen;
	uint8_t val[BT_VAL_MAX];
};
int fs_names_find(struct fs *fs, uint64_t obj, uint8_t type, const char *name, unsigned nlen,
		  struct fs_slot *ret);
int fs_names_remove(struct fs *fs, uint64_t obj, uint8_t type, uint64_t slot);
/* Payload of a found named record (after the name). */
static inline const uint8_t *fs_slot_payload(const struct fs_slot *s)
{
	return s->val + 1 + s->val[0];
}

/* ---- dir.c ---- */
/* Is the directory empty? 1 yes, 0 no, or an error. */
int fs_dir_is_empty(struct fs *fs, uint64_t dir);

/* ---- file.c ---- */
/* Change the size of a regular file (lock held, @in up to date and updated
 * in memory; the caller writes the inode). */
int fs_file_resize_locked(struct fs *fs, struct fs_inode *in, uint64_t size);

/* ---- stats.c ---- */
int fs_ctl_getattr(struct fs *fs, uint64_t ino, struct stat *ret);
int fs_ctl_lookup(struct fs *fs, uint64_t parent, const char *name, struct stat *ret);
int fs_ctl_readdir(struct fs *fs, uint64_t cookie, bool plus, fs_dirent_fn fn, void *ctx);

static inline bool fs_name_bad(const char *name, size_t *ret_len)
{
	size_t n = strnlen(name, FS_NAME_MAX + 1);
	*ret_len = n;
	return n == 0 || n > FS_NAME_MAX;
}

/* wire.c's polling for requests (zeros when it is off): requests read by
 * a thread that had not slept since its last one (spinning, or taking the
 * role over with requests waiting), and by one that had gone to sleep in
 * poll(2); times the reading role was given up before a wait the engine
 * announced, and by the watchdog. The stats file shows them. */
struct fs_wire_counters {
	uint64_t reads_awake, reads_woken;
	uint64_t handoffs_wait, handoffs_watchdog;
};
void fs_wire_counters_get(struct fs_wire_counters *c);

#endif
