/*
 * attr.c: attributes and the life of an open or looked-up inode: getattr,
 * setattr, forget, open, release.
 */
#include "fs/fs_internal.h"

#include <errno.h>
#include <fcntl.h>

int fs_getattr(struct fs *fs, uint64_t ino, struct stat *ret)
{
	struct fs_inode in;
	int r;

	if (fs_is_ctl_ino(ino))
		return fs_ctl_getattr(fs, ino, ret);
	r = fs_inode_get(fs, ino, &in);
	if (r < 0)
		return r;
	fs_inode_to_stat(&in, ret);
	return 0;
}

/* The security.capability attribute goes with the set-ID bits
 * (FS_SET_KILL_PRIVS; the kernel asks it only for non-directories). */
static int kill_caps(struct fs *fs, uint64_t ino)
{
	int r = fs_removexattr(fs, ino, "security.capability");
	return r == -ENODATA ? 0 : r;
}

/* fs_setattr, telling in *@ret_stripped whether FS_SET_KILL_PRIVS took
 * set-ID bits away. */
static int setattr(struct fs *fs, uint64_t ino, const struct fs_setattr *sa, struct stat *ret,
		   bool *ret_stripped)
{
	struct fs_inode in;
	struct timespec now;
	int r;

	if (fs_is_ctl_ino(ino)) {
		/* "echo flush > control" truncates first: let that through. */
		if (sa->valid & (FS_SET_MODE | FS_SET_UID | FS_SET_GID))
			return -EPERM;
		return fs_ctl_getattr(fs, ino, ret);
	}
	if (fs->read_only)
		return -EROFS;
	if (sa->valid & FS_SET_KILL_PRIVS) {
		r = kill_caps(fs, ino);
		if (r < 0)
			return r;
	}

	fs_ino_wrlock_txn(fs, ino);
	r = fs_inode_get(fs, ino, &in);
	if (r < 0)
		goto out;
	mode_t old_mode = in.mode;
	fs_now(&now);
	if (sa->valid & FS_SET_SIZE) {
		if (S_ISDIR(in.mode)) {
			r = -EISDIR;
			goto out;
		}
		if (!S_ISREG(in.mode)) {
			r = -EINVAL;
			goto out;
		}
		if (sa->size != in.size) {
			r = fs_file_resize_locked(fs, &in, sa->size);
			if (r < 0) {
				/* Pages already freed are gone from the extents:
				 * keep the inode's count in step with them. */
				(void)fs_inode_put(fs, &in);
				goto out;
			}
			in.mtime = now;
		}
	}
	if (sa->valid & FS_SET_MODE)
		in.mode = (in.mode & S_IFMT) | (sa->mode & 07777);
	if (sa->valid & (FS_SET_UID | FS_SET_GID)) {
		if (sa->valid & FS_SET_UID)
			in.uid = sa->uid;
		if (sa->valid & FS_SET_GID)
			in.gid = sa->gid;
		/* A new owner must not inherit set-ID powers; a set-group-ID bit
		 * without group execute is not a power (mandatory locking). */
		if (!(sa->valid & FS_SET_MODE) && !S_ISDIR(in.mode)) {
			in.mode &= ~(mode_t)S_ISUID;
			if (in.mode & S_IXGRP)
				in.mode &= ~(mode_t)S_ISGID;
		}
	}
	if ((sa->valid & FS_SET_KILL_PRIVS) && !S_ISDIR(in.mode)) {
		in.mode &= ~(mode_t)S_ISUID;
		if (in.mode & S_IXGRP)
			in.mode &= ~(mode_t)S_ISGID;
		*ret_stripped = in.mode != old_mode;
		if (sa->valid == FS_SET_KILL_PRIVS && in.mode == old_mode) {
			fs_inode_to_stat(&in, ret); /* nothing to strip: no change */
			goto out;
		}
	}
	if (sa->valid & FS_SET_ATIME_NOW)
		in.atime = now;
	else if (sa->valid & FS_SET_ATIME)
		in.atime = sa->atime;
	if (sa->valid & FS_SET_MTIME_NOW)
		in.mtime = now;
	else if (sa->valid & FS_SET_MTIME)
		in.mtime = sa->mtime;
	in.ctime = (sa->valid & FS_SET_CTIME) ? sa->ctime : now;
	r = fs_inode_put(fs, &in);
	if (r == 0)
		fs_inode_to_stat(&in, ret);
out:
	fs_ino_unlock(fs, ino);
	return r;
}

int fs_setattr(struct fs *fs, uint64_t ino, const struct fs_setattr *sa, struct stat *ret)
{
	bool stripped = false;
	return setattr(fs, ino, sa, ret, &stripped);
}

int fs_kill_privs(struct fs *fs, uint64_t ino, bool *ret_stripped)
{
	struct fs_setattr sa = { .valid = FS_SET_KILL_PRIVS };
	struct stat st;
	bool stripped = false;
	int r = setattr(fs, ino, &sa, &st, &stripped);
	if (r == 0 && ret_stripped)
		*ret_stripped = stripped;
	return r;
}

void fs_set_kernel_cmtime(struct fs *fs, bool on)
{
	fs->kernel_cmtime = on;
}

void fs_forget(struct fs *fs, uint64_t ino, uint64_t n)
{
	if (fs_node_forget(fs, ino, n))
		fs_inode_reclaim(fs, ino);
}

int fs_open(struct fs *fs, uint64_t ino, int flags)
{
	struct fs_inode in;
	bool writing = (flags & O_ACCMODE) != O_RDONLY;
	int r;

	if (fs_is_ctl_ino(ino))
		return 0;
	if (writing && fs->read_only)
		return -EROFS;
	if (!(flags & O_TRUNC) || !writing) {
		r = fs_inode_get(fs, ino, &in);
		if (r < 0)
			return r;
	} else {
		fs_ino_wrlock_txn(fs, ino);
		r = fs_inode_get(fs, ino, &in);
		if (r == 0 && S_ISREG(in.mode)) {
			struct timespec now;
			/* POSIX: O_TRUNC marks the times even when the file was
			 * empty already. */
			r = fs_file_resize_locked(fs, &in, 0);
			fs_now(&now);
			in.mtime = in.ctime = now;
			int r2 = fs_inode_put(fs, &in);
			if (r == 0)
				r = r2;
		}
		fs_ino_unlock(fs, ino);
		if (r < 0)
			return r;
	}
	fs_node_open_add(fs, ino);
	if (writing)
		fs_node_writing(fs, ino);
	return 0;
}

void fs_release(struct fs *fs, uint64_t ino)
{
	if (fs_is_ctl_ino(ino))
		return;
	if (fs_node_close(fs, ino))
		fs_inode_reclaim(fs, ino);
}
