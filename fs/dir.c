/*
 * dir.c: the namespace: lookup, create (files, directories, nodes,
 * symlinks), link, unlink, rmdir, rename, readdir.
 *
 * Every change that touches several records takes the inode locks of all
 * inodes involved, in stripe order (fs_lock_many_txn), after finding the child
 * inodes without locks; it then finds them again under the locks and starts
 * over if a name moved in between. Records are written in an order that
 * leaves nothing half done when a tree insert fails for lack of space: the
 * new records first (an insert can fail), then the in-place updates and
 * removals (which do not allocate).
 */
#include "fs/fs_internal.h"

#include <errno.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>

#include "engine/lockorder.h"
#include "engine/log.h"

#define FS_LINK_MAX 65000

static const char ctl_name[] = ".virtuscale";

static bool is_ctl_name(uint64_t parent, const char *name)
{
	return parent == FS_INO_ROOT && strcmp(name, ctl_name) == 0;
}

static unsigned dirent_encode(uint8_t *v, const char *name, unsigned nlen, uint64_t ino,
			      mode_t mode)
{
	v[0] = (uint8_t)nlen;
	memcpy(v + 1, name, nlen);
	fs_put_le64(v + 1 + nlen, ino);
	v[1 + nlen + 8] = (uint8_t)((mode & S_IFMT) >> 12);
	return 1 + nlen + FS_DIRENT_PAYLOAD;
}

static int dirent_decode(uint64_t dir, const struct fs_slot *s, uint64_t *ret_ino)
{
	if (s->vlen != 1u + s->val[0] + FS_DIRENT_PAYLOAD)
		return VS_CORRUPT("directory %llu: entry at slot %llu has %u bytes",
				  (unsigned long long)dir, (unsigned long long)s->slot, s->vlen);
	*ret_ino = fs_get_le64(fs_slot_payload(s));
	return 0;
}

static int dirent_put(struct fs *fs, uint64_t dir, uint64_t slot, const char *name, unsigned nlen,
		      uint64_t ino, mode_t mode)
{
	uint8_t key[FS_KEY_LEN], v[1 + FS_NAME_MAX + FS_DIRENT_PAYLOAD];
	unsigned vlen = dirent_encode(v, name, nlen, ino, mode);

	fs_key(key, dir, FS_REC_DIRENT, slot);
	return bt_put(&fs->tree, key, sizeof(key), v, vlen);
}

/* Find @name in @dir: *ret_ino is 0 when absent. */
static int dirent_find(struct fs *fs, uint64_t dir, const char *name, unsigned nlen,
		       struct fs_slot *s, uint64_t *ret_ino)
{
	int r = fs_names_find(fs, dir, FS_REC_DIRENT, name, nlen, s);
	if (r < 0)
		return r;
	if (!s->found) {
		*ret_ino = 0;
		return 0;
	}
	return dirent_decode(dir, s, ret_ino);
}

/* Load a directory that must exist and still be linked. */
static int dir_get(struct fs *fs, uint64_t ino, struct fs_inode *ret)
{
	int r = fs_inode_get(fs, ino, ret);
	if (r < 0)
		return r;
	if (!S_ISDIR(ret->mode))
		return -ENOTDIR;
	if (ret->nlink == 0)
		return -ENOENT;
	return 0;
}

static void touch_dir(struct fs_inode *dir, const struct timespec *now)
{
	dir->mtime = *now;
	dir->ctime = *now;
}

/* ------------------------------------------------------------------ */
/* Lookup                                                             */

int fs_lookup(struct fs *fs, uint64_t parent, const char *name, struct stat *ret)
{
	struct fs_slot s;
	struct fs_inode in;
	uint64_t child = 0;
	size_t nlen;
	int r;

	if (fs_is_ctl_ino(parent) || is_ctl_name(parent, name))
		return fs_ctl_lookup(fs, parent, name, ret);
	if (fs_name_bad(name, &nlen))
		return nlen ? -ENAMETOOLONG : -ENOENT;
	/* Shared lock on the parent: an unlink cannot free the child between
	 * finding its entry and counting the kernel's new reference. */
	fs_ino_rdlock(fs, parent);
	r = dirent_find(fs, parent, name, (unsigned)nlen, &s, &child);
	if (r == 0 && child == 0)
		r = -ENOENT;
	if (r == 0)
		r = fs_inode_get(fs, child, &in);
	if (r == 0)
		fs_node_lookup_add(fs, child, 1);
	fs_ino_unlock(fs, parent);
	if (r == 0)
		fs_inode_to_stat(&in, ret);
	return r;
}

/* ------------------------------------------------------------------ */
/* Create                                                             */

static int symlink_store(struct fs *fs, uint64_t ino, const char *target, size_t tlen)
{
	uint8_t key[FS_KEY_LEN];

	for (size_t off = 0; off < tlen; off += FS_SYMLINK_CHUNK) {
		size_t n = tlen - off < FS_SYMLINK_CHUNK ? tlen - off : FS_SYMLINK_CHUNK;
		fs_key(key, ino, FS_REC_SYMLINK, off);
		int r = bt_put(&fs->tree, key, sizeof(key), target + off, (unsigned)n);
		if (r < 0)
			return r;
	}
	return 0;
}

static int create_common(struct fs *fs, const struct fs_cred *cred, uint64_t parent,
			 const char *name, mode_t mode, dev_t rdev, const char *target,
			 struct stat *ret)
{
	struct fs_inode dir, in;
	struct fs_slot s;
	struct timespec now;
	uint64_t other = 0, ino;
	size_t nlen, tlen = 0;
	int r, r2;

	if (fs->read_only)
		return -EROFS;
	if (fs_name_bad(name, &nlen))
		return nlen ? -ENAMETOOLONG : -ENOENT;
	if (fs_is_ctl_ino(parent))
		return -EPERM;
	if (is_ctl_name(parent, name))
		return -EEXIST;
	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		break;
	case S_IFLNK:
		tlen = strnlen(target, FS_SYMLINK_MAX + 1);
		if (tlen == 0)
			return -ENOENT;
		if (tlen > FS_SYMLINK_MAX)
			return -ENAMETOOLONG;
		break;
	default:
		return -EINVAL;
	}

	fs_ino_wrlock_txn(fs, parent);
	r = dir_get(fs, parent, &dir);
	if (r < 0)
		goto out;
	r = dirent_find(fs, parent, name, (unsigned)nlen, &s, &other);
	if (r < 0)
		goto out;
	if (other) {
		r = -EEXIST;
		goto out;
	}
	if (S_ISDIR(mode) && dir.nlink >= FS_LINK_MAX) {
		r = -EMLINK;
		goto out;
	}
	r = fs_ino_alloc(fs, &ino);
	if (r < 0)
		goto out;

	fs_now(&now);
	memset(&in, 0, sizeof(in));
	in.ino = ino;
	in.mode = mode;
	in.uid = cred->uid;
	in.gid = cred->gid;
	if (dir.mode & S_ISGID) {
		/* BSD group semantics in a set-group-ID directory. */
		in.gid = dir.gid;
		if (S_ISDIR(mode))
			in.mode |= S_ISGID;
	}
	in.nlink = S_ISDIR(mode) ? 2 : 1;
	in.parent = S_ISDIR(mode) ? parent : 0;
	in.rdev = (S_ISCHR(mode) || S_ISBLK(mode)) ? rdev : 0;
	in.size = tlen;
	in.atime = in.mtime = in.ctime = in.btime = now;

	r = fs_inode_insert(fs, &in);
	if (r < 0)
		goto out;
	/* counted now: the cleanup below (fs_inode_free_locked) uncounts it */
	atomic_fetch_add(&fs->inode_count, 1);
	if (tlen)
		r = symlink_store(fs, ino, target, tlen);
	if (r == 0)
		r = dirent_put(fs, parent, s.slot, name, (unsigned)nlen, ino, mode);
	if (r < 0) {
		r2 = fs_inode_free_locked(fs, ino);
		if (r2 < 0)
			vs_log(VS_LOG_WARN, "inode %llu: cleanup after a failed create: %s",
			       (unsigned long long)ino, strerror(-r2));
		goto out;
	}
	touch_dir(&dir, &now);
	dir.size++;
	if (S_ISDIR(mode))
		dir.nlink++;
	r = fs_inode_put(fs, &dir);
	if (r < 0)
		vs_log(VS_LOG_WARN, "directory %llu: updating after create: %s",
		       (unsigned long long)parent, strerror(-r));
	r = 0;
	fs_node_lookup_add(fs, ino, 1);
	fs_inode_to_stat(&in, ret);
out:
	fs_ino_unlock(fs, parent);
	return r;
}

int fs_mknod(struct fs *fs, const struct fs_cred *cred, uint64_t parent, const char *name,
	     mode_t mode, dev_t rdev, struct stat *ret)
{
	if (S_ISLNK(mode))
		return -EINVAL;
	return create_common(fs, cred, parent, name, mode, rdev, NULL, ret);
}

int fs_symlink(struct fs *fs, const struct fs_cred *cred, uint64_t parent, const char *name,
	       const char *target, struct stat *ret)
{
	return create_common(fs, cred, parent, name, S_IFLNK | 0777, 0, target, ret);
}

int fs_readlink(struct fs *fs, uint64_t ino, char *buf, size_t cap, size_t *ret_len)
{
	struct fs_inode in;
	uint8_t key[FS_KEY_LEN];
	int r;

	r = fs_inode_get(fs, ino, &in);
	if (r < 0)
		return r;
	if (!S_ISLNK(in.mode))
		return -EINVAL;
	if (in.size > FS_SYMLINK_MAX)
		return VS_CORRUPT("symlink %llu: target of %llu bytes", (unsigned long long)ino,
				  (unsigned long long)in.size);
	if (in.size > cap)
		return -ENOBUFS;
	for (uint64_t off = 0; off < in.size; off += FS_SYMLINK_CHUNK) {
		unsigned want =
		    (unsigned)(in.size - off < FS_SYMLINK_CHUNK ? in.size - off : FS_SYMLINK_CHUNK);
		unsigned len = 0;
		fs_key(key, ino, FS_REC_SYMLINK, off);
		r = bt_lookup(&fs->tree, key, sizeof(key), buf + off, want, &len);
		if (r == -ENOENT || r == -ENOBUFS || (r == 0 && len != want))
			return VS_CORRUPT("symlink %llu: chunk at %llu missing or of %u bytes",
					  (unsigned long long)ino, (unsigned long long)off, len);
		if (r < 0)
			return r;
	}
	*ret_len = in.size;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Link and unlink                                                    */

int fs_link(struct fs *fs, uint64_t ino, uint64_t newparent, const char *newname, struct stat *ret)
{
	struct fs_inode dir, in;
	struct fs_slot s;
	struct fs_lockset ls;
	struct timespec now;
	uint64_t other = 0, inos[2] = {newparent, ino};
	size_t nlen;
	int r;

	if (fs->read_only)
		return -EROFS;
	if (fs_name_bad(newname, &nlen))
		return nlen ? -ENAMETOOLONG : -ENOENT;
	if (fs_is_ctl_ino(ino) || fs_is_ctl_ino(newparent))
		return -EPERM;
	if (is_ctl_name(newparent, newname))
		return -EEXIST;

	fs_lock_many_txn(fs, &ls, inos, 2);
	r = fs_inode_get(fs, ino, &in);
	if (r < 0)
		goto out;
	if (S_ISDIR(in.mode)) {
		r = -EPERM;
		goto out;
	}
	if (in.nlink == 0) {
		r = -ENOENT;
		goto out;
	}
	if (in.nlink >= FS_LINK_MAX) {
		r = -EMLINK;
		goto out;
	}
	r = dir_get(fs, newparent, &dir);
	if (r < 0)
		goto out;
	r = dirent_find(fs, newparent, newname, (unsigned)nlen, &s, &other);
	if (r < 0)
		goto out;
	if (other) {
		r = -EEXIST;
		goto out;
	}
	r = dirent_put(fs, newparent, s.slot, newname, (unsigned)nlen, ino, in.mode);
	if (r < 0)
		goto out;
	fs_now(&now);
	in.nlink++;
	in.flags |= FS_INODE_LINKED;
	in.ctime = now;
	touch_dir(&dir, &now);
	dir.size++;
	r = fs_inode_put(fs, &in);
	if (r == 0)
		r = fs_inode_put(fs, &dir);
	if (r < 0)
		goto out;
	fs_node_lookup_add(fs, ino, 1);
	fs_inode_to_stat(&in, ret);
out:
	fs_unlock_many(fs, &ls);
	return r;
}

/* The inode lost a name: count it, and free or orphan it at zero. Called
 * with its lock held and @in updated in memory (not yet written). */
static int drop_link(struct fs *fs, struct fs_inode *in, const struct timespec *now)
{
	int r;

	in->nlink = S_ISDIR(in->mode) ? 0 : in->nlink - 1;
	in->ctime = *now;
	if (in->nlink > 0) {
		/* Before the new count can reach any reply: see
		 * fs_attr_cacheable. */
		fs_node_lost_name(fs, in->ino);
		return fs_inode_put(fs, in);
	}
	if (fs_node_unlinked(fs, in->ino))
		return fs_inode_free_locked(fs, in->ino);
	/* Still open or looked up: keep it, and remember it for a crash. If
	 * only looked up, nothing can reach its data any more (no name, no
	 * open file): give the space back now, so that the request after the
	 * unlink finds it, rather than when the kernel forgets the inode. */
	if (S_ISREG(in->mode) && in->size > 0 && !fs_node_is_open(fs, in->ino)) {
		r = fs_file_resize_locked(fs, in, 0);
		if (r < 0)
			return r;
	}
	r = fs_orphan_add(fs, in->ino);
	if (r < 0)
		vs_log(VS_LOG_WARN,
		       "inode %llu: no orphan record (%s); space is lost if the "
		       "daemon dies before its last close",
		       (unsigned long long)in->ino, strerror(-r));
	return fs_inode_put(fs, in);
}

/* Find @name in @parent and lock both; *ret_child is the child's ino. */
static int lock_parent_child(struct fs *fs, uint64_t parent, const char *name, unsigned nlen,
			     struct fs_slot *s, struct fs_lockset *ls, uint64_t *ret_child)
{
	uint64_t guess = 0, child = 0;
	int r;

	for (;;) {
		r = dirent_find(fs, parent, name, nlen, s, &guess);
		if (r < 0)
			return r;
		if (guess == 0)
			return -ENOENT;
		uint64_t inos[2] = {parent, guess};
		fs_lock_many_txn(fs, ls, inos, 2);
		r = dirent_find(fs, parent, name, nlen, s, &child);
		if (r == 0 && child == guess) {
			*ret_child = child;
			return 0;
		}
		fs_unlock_many(fs, ls);
		if (r < 0)
			return r;
		if (child == 0)
			return -ENOENT;
	}
}

static int remove_common(struct fs *fs, uint64_t parent, const char *name, bool rmdir)
{
	struct fs_inode dir, in;
	struct fs_slot s;
	struct fs_lockset ls;
	struct timespec now;
	uint64_t child = 0;
	size_t nlen;
	int r;

	if (fs->read_only)
		return -EROFS;
	if (fs_name_bad(name, &nlen))
		return nlen ? -ENAMETOOLONG : -ENOENT;
	if (fs_is_ctl_ino(parent))
		return -EPERM;
	if (is_ctl_name(parent, name))
		return rmdir ? -EBUSY : -EISDIR;

	r = lock_parent_child(fs, parent, name, (unsigned)nlen, &s, &ls, &child);
	if (r < 0)
		return r;
	r = dir_get(fs, parent, &dir);
	if (r == 0)
		r = fs_inode_get(fs, child, &in);
	if (r < 0)
		goto out;
	if (rmdir && !S_ISDIR(in.mode)) {
		r = -ENOTDIR;
		goto out;
	}
	if (!rmdir && S_ISDIR(in.mode)) {
		r = -EISDIR;
		goto out;
	}
	if (rmdir) {
		r = fs_dir_is_empty(fs, child);
		if (r == 0)
			r = -ENOTEMPTY;
		if (r < 0)
			goto out;
	}
	r = fs_names_remove(fs, parent, FS_REC_DIRENT, s.slot);
	if (r < 0)
		goto out;
	fs_now(&now);
	touch_dir(&dir, &now);
	if (dir.size > 0)
		dir.size--;
	if (rmdir)
		dir.nlink--;
	r = fs_inode_put(fs, &dir);
	if (r == 0)
		r = drop_link(fs, &in, &now);
out:
	fs_unlock_many(fs, &ls);
	return r;
}

int fs_unlink(struct fs *fs, uint64_t parent, const char *name)
{
	return remove_common(fs, parent, name, false);
}

int fs_rmdir(struct fs *fs, uint64_t parent, const char *name)
{
	return remove_common(fs, parent, name, true);
}

/* ------------------------------------------------------------------ */
/* Rename                                                             */

/* Is @anc an ancestor of (or equal to) @dir? Walks parent pointers, which
 * only renames change, and renames that change them hold rename_mu. */
static int is_ancestor(struct fs *fs, uint64_t anc, uint64_t dir)
{
	struct fs_inode in;

	for (unsigned depth = 0; depth < 65536; depth++) {
		if (dir == anc)
			return 1;
		if (dir == FS_INO_ROOT)
			return 0;
		int r = fs_inode_get(fs, dir, &in);
		if (r < 0)
			return r;
		dir = in.parent;
		if (dir == 0)
			return VS_CORRUPT("directory %llu has no parent",
					  (unsigned long long)in.ino);
	}
	return VS_CORRUPT("directory %llu: parent chain does not reach the root",
			  (unsigned long long)dir);
}

struct rename_state {
	uint64_t op, np, src, dst; /* dst 0: no entry there */
	struct fs_slot ss, ds;
	struct fs_inode opi, npi, si, di;
	struct fs_inode *pn; /* the new parent's record: &npi, or &opi when op == np */
};

/* Find both names, lock all four inodes, and make sure neither name moved
 * while we were not holding the locks. */
static int rename_lock(struct fs *fs, struct rename_state *st, const char *name, unsigned nlen,
		       const char *newname, unsigned newlen, struct fs_lockset *ls)
{
	uint64_t src = 0, dst = 0;
	int r;

	for (;;) {
		r = dirent_find(fs, st->op, name, nlen, &st->ss, &src);
		if (r == 0 && src == 0)
			r = -ENOENT;
		if (r == 0)
			r = dirent_find(fs, st->np, newname, newlen, &st->ds, &dst);
		if (r < 0)
			return r;
		uint64_t inos[4] = {st->op, st->np, src, dst};
		fs_lock_many_txn(fs, ls, inos, 4);
		r = dirent_find(fs, st->op, name, nlen, &st->ss, &st->src);
		if (r == 0)
			r = dirent_find(fs, st->np, newname, newlen, &st->ds, &st->dst);
		if (r == 0 && st->src == src && st->dst == dst && src != 0)
			return 0;
		fs_unlock_many(fs, ls);
		if (r < 0)
			return r;
		if (st->src == 0)
			return -ENOENT;
	}
}

static int rename_checks(struct fs *fs, struct rename_state *st, unsigned flags)
{
	bool sdir = S_ISDIR(st->si.mode);
	int r;

	if ((flags & RENAME_EXCHANGE) && !st->dst)
		return -ENOENT;
	if ((flags & RENAME_NOREPLACE) && st->dst)
		return -EEXIST;
	if (st->dst && !(flags & RENAME_EXCHANGE)) {
		bool ddir = S_ISDIR(st->di.mode);
		if (sdir && !ddir)
			return -ENOTDIR;
		if (!sdir && ddir)
			return -EISDIR;
		if (ddir) {
			r = fs_dir_is_empty(fs, st->dst);
			if (r == 0)
				return -ENOTEMPTY;
			if (r < 0)
				return r;
		}
	}
	if (st->op != st->np) {
		if (sdir) {
			r = is_ancestor(fs, st->src, st->np);
			if (r != 0)
				return r > 0 ? -EINVAL : r;
		}
		if ((flags & RENAME_EXCHANGE) && S_ISDIR(st->di.mode)) {
			r = is_ancestor(fs, st->dst, st->op);
			if (r != 0)
				return r > 0 ? -EINVAL : r;
		}
	}
	if (!(flags & RENAME_EXCHANGE) && sdir && !st->dst && st->op != st->np &&
	    st->pn->nlink >= FS_LINK_MAX)
		return -EMLINK;
	return 0;
}

/* A directory moved from @from to @to: its ".." and both link counts. */
static void move_dir(struct fs_inode *d, struct fs_inode *from, struct fs_inode *to)
{
	if (from == to)
		return;
	d->parent = to->ino;
	from->nlink--;
	to->nlink++;
}

static int rename_exchange(struct fs *fs, struct rename_state *st, const char *name, unsigned nlen,
			   const char *newname, unsigned newlen, const struct timespec *now)
{
	int r;

	r = dirent_put(fs, st->op, st->ss.slot, name, nlen, st->dst, st->di.mode);
	if (r == 0)
		r = dirent_put(fs, st->np, st->ds.slot, newname, newlen, st->src, st->si.mode);
	if (r < 0)
		return r;
	if (S_ISDIR(st->si.mode))
		move_dir(&st->si, &st->opi, st->pn);
	if (S_ISDIR(st->di.mode))
		move_dir(&st->di, st->pn, &st->opi);
	st->si.ctime = *now;
	st->di.ctime = *now;
	r = fs_inode_put(fs, &st->si);
	if (r == 0)
		r = fs_inode_put(fs, &st->di);
	return r;
}

static int rename_move(struct fs *fs, struct rename_state *st, const char *newname, unsigned newlen,
		       const struct timespec *now)
{
	int r;

	/* The new name first: it is the step that can fail for lack of space,
	 * and until the old name goes nothing has changed. */
	r = dirent_put(fs, st->np, st->ds.slot, newname, newlen, st->src, st->si.mode);
	if (r < 0)
		return r;
	r = fs_names_remove(fs, st->op, FS_REC_DIRENT, st->ss.slot);
	if (r < 0)
		return r;
	if (st->op != st->np) {
		if (st->opi.size > 0)
			st->opi.size--;
		if (!st->dst)
			st->pn->size++;
	} else if (st->dst && st->opi.size > 0) {
		st->opi.size--;
	}
	if (S_ISDIR(st->si.mode))
		move_dir(&st->si, &st->opi, st->pn);
	st->si.ctime = *now;
	r = fs_inode_put(fs, &st->si);
	if (r == 0 && st->dst) {
		if (S_ISDIR(st->di.mode))
			st->pn->nlink--;
		r = drop_link(fs, &st->di, now);
	}
	return r;
}

int fs_rename(struct fs *fs, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags)
{
	struct rename_state *st;
	struct fs_lockset ls = {0};
	struct timespec now;
	size_t nlen, newlen;
	int r;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))
		return -EINVAL;
	if (fs->read_only)
		return -EROFS;
	bool bad_old = fs_name_bad(name, &nlen), bad_new = fs_name_bad(newname, &newlen);
	if (bad_old || bad_new)
		return (nlen && newlen) ? -ENAMETOOLONG : -ENOENT;
	if (fs_is_ctl_ino(parent) || fs_is_ctl_ino(newparent))
		return -EPERM;
	if (is_ctl_name(parent, name) || is_ctl_name(newparent, newname))
		return -EBUSY;

	/* Two struct fs_slot of 4 KiB each: keep them off the stack. */
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->op = parent;
	st->np = newparent;
	st->pn = parent == newparent ? &st->opi : &st->npi;

	/* The transaction comes before rename_mu (lockorder.h); inside a
	 * request's it only nests. */
	bm_txn_begin(fs->bm);
	if (parent != newparent) {
		lo_acquire(LO_RENAME, 0, true);
		if (pthread_mutex_trylock(&fs->rename_mu) != 0) {
			lo_wait_begin(LO_WAIT_RENAME, 0);
			pthread_mutex_lock(&fs->rename_mu);
			lo_wait_end();
		}
	}
	r = rename_lock(fs, st, name, (unsigned)nlen, newname, (unsigned)newlen, &ls);
	if (r < 0)
		goto out_unlocked;
	r = dir_get(fs, parent, &st->opi);
	if (r == 0 && parent != newparent)
		r = dir_get(fs, newparent, &st->npi);
	if (r == 0)
		r = fs_inode_get(fs, st->src, &st->si);
	if (r == 0 && st->dst)
		r = fs_inode_get(fs, st->dst, &st->di);
	if (r < 0)
		goto out;
	if (st->src == st->dst)
		goto out; /* two names of one inode: rename does nothing */
	r = rename_checks(fs, st, flags);
	if (r < 0)
		goto out;

	fs_now(&now);
	if (flags & RENAME_EXCHANGE)
		r = rename_exchange(fs, st, name, (unsigned)nlen, newname, (unsigned)newlen, &now);
	else
		r = rename_move(fs, st, newname, (unsigned)newlen, &now);
	if (r < 0)
		goto out;
	touch_dir(&st->opi, &now);
	touch_dir(st->pn, &now);
	r = fs_inode_put(fs, &st->opi);
	if (r == 0 && parent != newparent)
		r = fs_inode_put(fs, &st->npi);
out:
	fs_unlock_many(fs, &ls);
out_unlocked:
	if (parent != newparent) {
		pthread_mutex_unlock(&fs->rename_mu);
		lo_release(LO_RENAME, 0);
	}
	bm_txn_end(fs->bm);
	free(st);
	return r;
}

/* ------------------------------------------------------------------ */
/* Readdir                                                            */

static bool empty_check(void *vctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	int *result = vctx;
	const uint8_t *k = key;

	if (klen != FS_KEY_LEN || k[8] != FS_REC_DIRENT) {
		*result = 1;
		return false;
	}
	if (vlen >= 1 && ((const uint8_t *)val)[0] == 0)
		return true; /* tombstone */
	*result = 0;
	return false;
}

int fs_dir_is_empty(struct fs *fs, uint64_t dir)
{
	uint8_t key[FS_KEY_LEN];
	int result = 1;

	fs_key(key, dir, FS_REC_DIRENT, 0);
	int r = bt_scan_asc(&fs->tree, key, sizeof(key), empty_check, &result);
	if (r < 0)
		return r;
	return result;
}

#define READDIR_BATCH 32

struct rd_entry {
	uint64_t slot;
	uint64_t ino;
	mode_t type;
	char name[FS_NAME_MAX + 1];
};

struct rd_ctx {
	uint64_t dir;
	unsigned n;
	bool more;
	int err;
	struct rd_entry e[READDIR_BATCH];
};

static bool rd_collect(void *vctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct rd_ctx *c = vctx;
	const uint8_t *k = key, *v = val;

	if (!fs_key_is(k, klen, c->dir, FS_REC_DIRENT) || klen != FS_KEY_LEN)
		return false;
	uint64_t slot = fs_key_off(k);
	if (c->n > 0 && c->e[c->n - 1].slot >= slot)
		return true; /* seen already */
	if (vlen < 1 || v[0] == 0)
		return true; /* tombstone */
	if (vlen != 1u + v[0] + FS_DIRENT_PAYLOAD) {
		c->err = VS_CORRUPT("directory %llu: entry at slot %llu has %u bytes",
				    (unsigned long long)c->dir, (unsigned long long)slot, vlen);
		return false;
	}
	struct rd_entry *e = &c->e[c->n];
	e->slot = slot;
	memcpy(e->name, v + 1, v[0]);
	e->name[v[0]] = 0;
	e->ino = fs_get_le64(v + 1 + v[0]);
	e->type = (mode_t)v[1 + v[0] + 8] << 12;
	if (++c->n == READDIR_BATCH) {
		c->more = true;
		return false;
	}
	return true;
}

/* Hand one batch to the sink; false when the sink is full. */
static int rd_emit(struct fs *fs, struct rd_ctx *c, bool plus, fs_dirent_fn fn, void *ctx)
{
	struct fs_inode in;
	struct stat st;

	for (unsigned i = 0; i < c->n; i++) {
		struct rd_entry *e = &c->e[i];
		bool attrs = plus;
		if (plus) {
			int r = fs_inode_get(fs, e->ino, &in);
			if (r == -ENOENT)
				continue; /* removed since we collected it */
			if (r < 0)
				return r;
			fs_inode_to_stat(&in, &st);
			/* A file with other names elsewhere may be losing one of
			 * them right now, in a directory this listing does not
			 * lock. The kernel lowers its cached link count itself
			 * when that unlink returns; if our count (already lower)
			 * reached it first, it would be lowered twice, to 0, and
			 * link(2) on the file would fail with ENOENT. So files
			 * that have (or had: the count may have just dropped to
			 * 1) more than one name go out without attributes, and a
			 * later lookup fetches them. */
			if (!S_ISDIR(in.mode) && (in.nlink > 1 || (in.flags & FS_INODE_LINKED)))
				attrs = false;
		}
		if (!fn(ctx, e->name, e->ino, e->type, e->slot + 1, attrs ? &st : NULL))
			return 0;
		if (attrs)
			fs_node_lookup_add(fs, e->ino, 1);
	}
	return 1;
}

int fs_readdir(struct fs *fs, uint64_t ino, uint64_t cookie, bool plus, fs_dirent_fn fn, void *ctx)
{
	struct fs_inode dir;
	uint8_t key[FS_KEY_LEN];
	struct rd_ctx *c;
	int r;

	if (fs_is_ctl_ino(ino))
		return fs_ctl_readdir(fs, cookie, plus, fn, ctx);
	r = fs_inode_get(fs, ino, &dir);
	if (r < 0)
		return r;
	if (!S_ISDIR(dir.mode))
		return -ENOTDIR;
	if (cookie < 1 && !fn(ctx, ".", ino, S_IFDIR, 1, NULL))
		return 0;
	if (cookie < 2 && !fn(ctx, "..", dir.parent ? dir.parent : ino, S_IFDIR, 2, NULL))
		return 0;

	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	uint64_t from = cookie < FS_SLOT_MIN ? FS_SLOT_MIN : cookie;
	for (;;) {
		c->dir = ino;
		c->n = 0;
		c->more = false;
		c->err = 0;
		/* A plus listing holds the directory shared from reading the
		 * entries to counting the kernel's references: each entry it
		 * hands out becomes a dentry in the kernel, so it must still
		 * name that inode (not one renamed over or unlinked meanwhile,
		 * which would leave the kernel a stale name), and the inode must
		 * not be freed before its new reference is counted. */
		if (plus)
			fs_ino_rdlock(fs, ino);
		fs_key(key, ino, FS_REC_DIRENT, from);
		r = bt_scan_asc(&fs->tree, key, sizeof(key), rd_collect, c);
		if (r == 0)
			r = c->err;
		if (r == 0 && c->n > 0)
			r = rd_emit(fs, c, plus, fn, ctx);
		if (plus)
			fs_ino_unlock(fs, ino);
		if (r <= 0 || c->n == 0 || !c->more)
			break;
		from = c->e[c->n - 1].slot + 1;
	}
	free(c);
	return r < 0 ? r : 0;
}
