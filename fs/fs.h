/*
 * fs.h: the filesystem as a library, below FUSE.
 *
 * These calls are what the FUSE handlers (fuse_ops.c) decode requests into;
 * they take inode numbers, names and plain buffers, never FUSE types, so unit
 * tests drive them without a mount. Record formats are in keys.h.
 *
 * Conventions
 * -----------
 *   - Every call returns 0 (or a byte count) on success and a negative errno
 *     on failure, so a FUSE handler replies with fuse_reply_err(req, -r).
 *     -EUCLEAN (a page failed its checksum) is returned as is; the FUSE layer
 *     turns it into EIO.
 *   - Output parameters are named ret_* and are left alone on failure.
 *   - Attributes are returned as struct stat (st_blocks in 512-byte units).
 *   - Lookup counts: fs_lookup, fs_mknod, fs_symlink, fs_link and every entry
 *     accepted by a readdirplus sink add one to the inode's lookup count;
 *     fs_forget takes them away. An inode without links is freed when both
 *     its lookup count and its open count (fs_open / fs_release) reach zero.
 *   - Permission checks are the kernel's (the daemon mounts with
 *     default_permissions); the calls here enforce only what the kernel
 *     cannot: name rules, emptiness, loops, types, limits.
 *
 * Thread safety: every call may run concurrently with any other. Calls that
 * change several records (create, link, unlink, rename) serialize on
 * per-inode locks taken in a fixed order; reads take their inode's lock
 * shared; nothing takes a global lock on the data path.
 *
 * The control directory: /.virtuscale (FS_INO_CTLDIR) holds `stats`
 * (read-only, Prometheus text, regenerated on every read) and
 * `control` (root-writable: "flush", "evict"). It is found by lookup but not
 * listed by readdir, and the name cannot be created in the root.
 *
 * Residency: the virtual xattr "user.virtuscale.residency" of a regular file
 * reads as "RESIDENT TOTAL": how many of the file's data pages are in the pool
 * now, out of how many it has (inline files: "0 0"). It is not listed by
 * listxattr (so cp -a and rsync -X do not copy it) and cannot be set.
 */
#ifndef VS_FS_FS_H
#define VS_FS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "engine/bm.h"

struct fs;

struct fs_config {
	const char *image;	      /* the image to mount */
	uint64_t pool_bytes;	      /* buffer pool size */
	enum bm_backend_mode backend; /* BM_BACKEND_AUTO / PLAIN / EXMAP */
	enum bm_evict_policy evict;   /* BM_EVICT_DEFAULT / CLOCK / S3CLOCK */
	bool read_only;		      /* change nothing on the image */
	/* Tests only: fault injection under the buffer manager (bm_fault.h),
	 * and the period of the background checkpoint (0 = the default).
	 * The fault struct must outlive the mount. */
	struct bm_fault *fault;
	unsigned checkpoint_ms;
};

/* Who is asking: the owner of what a call creates. */
struct fs_cred {
	uint32_t uid;
	uint32_t gid;
};

/* ------------------------------------------------------------------ */
/* Image and mount                                                    */

/* Create the filesystem's tree and root directory (mode 0755, owned by
 * @root_uid/@root_gid) in a freshly formatted, open image. Errors: -EEXIST
 * (the image already holds a filesystem), -ENOSPC, -EUCLEAN, -EIO. */
int fs_format(struct bm *bm, uint32_t root_uid, uint32_t root_gid);

/* Before fs_format: the share of the image kept for root, in tenths of a
 * percent (0-500; mkfs --reserved-percent). Images formatted without it
 * keep FS_RESERVED_DEFAULT (5%). */
void fs_format_reserve(struct bm *bm, unsigned tenths);

/* What the requests of the calling thread may spend, from now on (the FUSE
 * layer says it at the start of each request; a thread that never says,
 * such as the daemon's own, may spend everything):
 *   FS_SPACE_USER  requests that add (data, names, attributes) for anyone
 *                  but root: leave both reserves alone
 *   FS_SPACE_ROOT  the same for root: may spend root's reserve
 *   FS_SPACE_ALL   requests that change or remove what exists (chmod,
 *                  utimes, rename, unlink, truncate, ...): may spend the
 *                  metadata reserve too, so they never fail for want of
 *                  space on a full image */
enum fs_space { FS_SPACE_USER, FS_SPACE_ROOT, FS_SPACE_ALL };
void fs_space_enter(struct fs *fs, enum fs_space what);

/* Pages the requests of class FS_SPACE_USER can still take. */
uint64_t fs_space_user_free(struct fs *fs);

/* Root opened @ino for writing: the kernel's write-back of its cached
 * writes, which comes without the writer's identity, may then spend root's
 * reserve (fs_writer_is_root). Kept while the kernel holds the inode. */
void fs_writer_note_root(struct fs *fs, uint64_t ino);
bool fs_writer_is_root(struct fs *fs, uint64_t ino);

/* The kernel's write-back of @ino's cached writes failed for want of space.
 * Its writer learns at its next write(2): the FUSE layer fails the
 * attribute check the kernel makes before each cached write while
 * fs_nospace_pending says so (see op_getattr). */
void fs_nospace_note(struct fs *fs, uint64_t ino);

/* Is a failure noted for @ino still true? False, and forgotten, once at
 * least FS_NOSPACE_CLEAR pages are free again for its writer. */
bool fs_nospace_pending(struct fs *fs, uint64_t ino);
#define FS_NOSPACE_CLEAR 256 /* 1 MiB */

/* Open the image and get the filesystem ready: frees inodes left unlinked
 * by the previous session (orphans), recounts inodes after an unclean
 * shutdown, reserves a fresh batch of inode numbers. bm_open's errors
 * (-ENOENT, -EACCES, -EBUSY "image is in use", -EUCLEAN "not an image",
 * -EPROTONOSUPPORT, -ENODEV "no exmap", -ENOMEM) pass through; -EMEDIUMTYPE
 * when the image was formatted by bm_format but holds no filesystem. */
int fs_mount(const struct fs_config *cfg, struct fs **ret_fs);

/* Free inodes whose last reference is gone, store the counters and close
 * the image (bm_close: everything is written back). Accepts NULL. Returns the
 * first write error. */
int fs_unmount(struct fs *fs);

/* Tests: a crash. Release everything without writing anything more to the
 * image (bm_abandon); the next fs_mount recovers. Accepts NULL. */
void fs_abandon(struct fs *fs);

/* The buffer manager under the filesystem (for stats and tools). */
struct bm *fs_bm(struct fs *fs);

/* Write back everything (bm_flush). The fsync of any file or directory. */
int fs_sync(struct fs *fs);

/* fs_sync that tells @d as soon as everything is durable, which can be
 * before it returns (bm_checkpoint_notify): an fsync is answered then. */
int fs_sync_notify(struct fs *fs, struct bm_durable *d);

/* Did the pages allocated to @ino change (a write or fallocate that took
 * new ones) since the last call for it? Clears the answer. Kept with the
 * inode's lookup count, so for an inode the kernel does not hold the answer
 * is always yes: for telling the kernel its cached st_blocks is stale only
 * when it may be. */
bool fs_blocks_moved_take(struct fs *fs, uint64_t ino);

/* May the kernel cache these attributes of a file? Not when the file has
 * more than one name, or lost one while the kernel held it: when a stat
 * races the unlink of another name, the kernel can apply our (already
 * lowered) link count and then lower it once more itself as the unlink
 * returns. Such attributes go out with a zero timeout, so the next stat
 * asks again and finds the true count. */
bool fs_attr_cacheable(struct fs *fs, const struct stat *st);

/* The kernel keeps regular files' mtime and ctime (its writeback cache):
 * it stamps them at write(2) and hands them over in a setattr, before or
 * after the write-back that carries the data. Writes then leave both
 * alone, so that the times a stat showed are the ones stored. Off by
 * default. */
void fs_set_kernel_cmtime(struct fs *fs, bool on);

/* Who caches file data (mount option cache=). A buffered read through a
 * FUSE mount leaves its pages twice: in the kernel's page cache and in the
 * pool.
 *   FS_CACHE_BOTH    both (the default).
 *   FS_CACHE_POOL    the pool only: the FUSE layer opens regular files with
 *                    direct_io, so the kernel keeps no file data (except
 *                    the pages a shared mmap maps).
 *   FS_CACHE_KERNEL  the kernel's page cache only: a read takes the pages
 *                    of a file that are not in the pool straight from the
 *                    image (bm_read_through), whatever its size. Written
 *                    data still goes through the pool and the journal,
 *                    resident pages are still read from the pool, and tree
 *                    nodes are cached as always.
 * One setting per process, as the FUSE transport is (fs/uring.h): the
 * daemon serves one mount and sets it before serving; the FUSE layer, the
 * reads and the stats file all ask fs_cache_mode_get. Unit tests that
 * change it set FS_CACHE_BOTH back. */
enum fs_cache_mode { FS_CACHE_BOTH = 0, FS_CACHE_POOL, FS_CACHE_KERNEL };
void fs_cache_mode_set(enum fs_cache_mode mode);
enum fs_cache_mode fs_cache_mode_get(void);

/* "both", "pool" or "kernel": the option's value and the stats file's label. */
const char *fs_cache_mode_name(enum fs_cache_mode mode);

/* Might the kernel hold dirty pages of @ino that have not come to us yet?
 * True while any open of it for writing lasts (the kernel writes them all
 * back before the last release). */
bool fs_may_have_dirty_pages(struct fs *fs, uint64_t ino);

/* Block and inode numbers for statfs(2). */
int fs_statfs(struct fs *fs, struct statvfs *ret);

/* ------------------------------------------------------------------ */
/* Inodes and names                                                   */

/* Attributes of @ino. -ENOENT when it does not exist (any more). */
int fs_getattr(struct fs *fs, uint64_t ino, struct stat *ret);

/* Find @name in directory @parent; on success add one lookup to the child.
 * Errors: -ENOENT, -ENOTDIR, -ENAMETOOLONG. */
int fs_lookup(struct fs *fs, uint64_t parent, const char *name, struct stat *ret);

/* Drop @n lookups of @ino (the kernel forgot it). Frees the inode when it
 * has no links, no lookups and no opens left. */
void fs_forget(struct fs *fs, uint64_t ino, uint64_t n);

/* What fs_setattr changes: FS_SET_* bits in @valid. */
enum {
	FS_SET_MODE = 1 << 0,
	FS_SET_UID = 1 << 1,
	FS_SET_GID = 1 << 2,
	FS_SET_SIZE = 1 << 3,
	FS_SET_ATIME = 1 << 4, /* to @atime */
	FS_SET_MTIME = 1 << 5, /* to @mtime */
	FS_SET_ATIME_NOW = 1 << 6,
	FS_SET_MTIME_NOW = 1 << 7,
	FS_SET_CTIME = 1 << 8, /* to @ctime (writeback cache flushes it) */
	/* Strip a non-directory's powers, as a write or truncate by a caller
	 * without CAP_FSETID does: S_ISUID, S_ISGID when group-executable, and
	 * the security.capability attribute. */
	FS_SET_KILL_PRIVS = 1 << 9,
};

struct fs_setattr {
	unsigned valid;
	mode_t mode; /* permission bits only; the type is kept */
	uint32_t uid, gid;
	uint64_t size;
	struct timespec atime, mtime, ctime;
};

/* Change attributes. ctime becomes now unless FS_SET_CTIME gives it. A
 * change of owner or group of a non-directory clears S_ISUID, and S_ISGID
 * when group-executable, as Linux does (unless the same call sets the mode).
 * A size change truncates or extends (a hole) and updates mtime.
 * Errors: -ENOENT, -EISDIR / -EINVAL (size of a non-regular file), -EFBIG,
 * -ENOSPC, -EROFS. */
int fs_setattr(struct fs *fs, uint64_t ino, const struct fs_setattr *sa, struct stat *ret);

/* FS_SET_KILL_PRIVS alone, for a write or an open with O_TRUNC; writes
 * nothing when there is nothing to strip. *@ret_stripped (may be NULL)
 * says whether set-ID bits went: attributes the kernel has cached are
 * stale then. */
int fs_kill_privs(struct fs *fs, uint64_t ino, bool *ret_stripped);

/* Create a regular file, directory, fifo, socket or device named @name in
 * @parent with @mode (type and permissions) and @rdev (devices). A new
 * directory's nlink is 2 and the parent's grows by one. In a set-group-ID
 * directory the new inode takes the directory's group, and a new directory
 * also the S_ISGID bit. Adds one lookup to the new inode.
 * Errors: -EEXIST, -ENOENT (parent gone), -ENOTDIR, -ENAMETOOLONG, -EINVAL
 * (bad type), -ENOSPC, -EMLINK, -EROFS. */
int fs_mknod(struct fs *fs, const struct fs_cred *cred, uint64_t parent, const char *name,
	     mode_t mode, dev_t rdev, struct stat *ret);

/* Create a symbolic link to @target (1..FS_SYMLINK_MAX bytes). Errors as
 * fs_mknod, and -ENAMETOOLONG for a longer target. */
int fs_symlink(struct fs *fs, const struct fs_cred *cred, uint64_t parent, const char *name,
	       const char *target, struct stat *ret);

/* Copy the target of symlink @ino into @buf (at most @cap bytes, no
 * terminator); *ret_len gets its length. Errors: -EINVAL (not a symlink),
 * -ENOBUFS (@cap too small). */
int fs_readlink(struct fs *fs, uint64_t ino, char *buf, size_t cap, size_t *ret_len);

/* Add the name @newname in @newparent for inode @ino (not a directory).
 * Adds one lookup. Errors: -EEXIST, -EPERM (a directory), -ENOENT (@ino has
 * no links left), -EMLINK, -ENOSPC. */
int fs_link(struct fs *fs, uint64_t ino, uint64_t newparent, const char *newname, struct stat *ret);

/* Remove a non-directory name. Errors: -ENOENT, -EISDIR, -ENOTDIR. */
int fs_unlink(struct fs *fs, uint64_t parent, const char *name);

/* Remove an empty directory. Errors: -ENOENT, -ENOTDIR, -ENOTEMPTY,
 * -EBUSY (the root or the control directory). */
int fs_rmdir(struct fs *fs, uint64_t parent, const char *name);

/* rename(2) / renameat2(2) with @flags 0, RENAME_NOREPLACE or
 * RENAME_EXCHANGE. Replacing: a directory only by a directory (-ENOTDIR /
 * -EISDIR otherwise), which must be empty (-ENOTEMPTY). Moving a directory
 * below itself gives -EINVAL. Other errors: -ENOENT, -EEXIST (NOREPLACE),
 * -EINVAL (unknown flags), -ENAMETOOLONG, -ENOSPC, -EBUSY (control dir). */
int fs_rename(struct fs *fs, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags);

/* Directory listing. The sink is called for each entry in cookie order,
 * with the cookie to resume after it (@next): "." and ".." first (ino of the
 * directory and its parent), then the entries from the B-tree. @st is
 * filled (attributes) only for a plus listing, and even then is NULL for "."
 * and ".." and for files with more than one link (see dir.c: the kernel's
 * own link count bookkeeping races with attributes of such files). The sink
 * returns true when it took the entry, false to stop (the entry is not
 * taken). A plus listing adds a lookup to each taken entry given with @st:
 * the sink hands those to the kernel as entries, the others by name only.
 * Resuming at the @next of any taken entry lists each entry at most once,
 * whatever was inserted or removed in between. Errors: -ENOTDIR, -ENOENT. */
typedef bool (*fs_dirent_fn)(void *ctx, const char *name, uint64_t ino, mode_t type, uint64_t next,
			     const struct stat *st);
int fs_readdir(struct fs *fs, uint64_t ino, uint64_t cookie, bool plus, fs_dirent_fn fn, void *ctx);

/* ------------------------------------------------------------------ */
/* File data                                                          */

/* Count an open of @ino (the open count keeps an unlinked inode alive).
 * With O_TRUNC (and O_WRONLY or O_RDWR) a regular file is truncated to 0.
 * Errors: -ENOENT, -EROFS (write access on a read-only mount). */
int fs_open(struct fs *fs, uint64_t ino, int flags);

/* The open of fs_open is closed: may free an unlinked inode. */
void fs_release(struct fs *fs, uint64_t ino);

/* Read up to @size bytes at @off into @buf; returns the bytes read (0 at
 * or past the end of file). Holes read as zeros. Errors: -EISDIR, -EINVAL,
 * -EUCLEAN, -EIO. */
ssize_t fs_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, void *buf);

/* Zero-copy read: the bytes are presented to @sink as an iovec pointing into
 * pool pages, which stay held shared (unchangeable, resident) until @sink
 * returns. @sink is called exactly once when the call succeeds (with
 * @cnt == 0 at end of file) and never when it fails; its return value is
 * returned. Reads spanning more than FS_READ_IOV_MAX + 1 pages go through one
 * bounce buffer instead. */
#define FS_READ_IOV_MAX 256
typedef int (*fs_read_sink)(void *ctx, const struct iovec *iov, int cnt);
int fs_read_iov(struct fs *fs, uint64_t ino, uint64_t off, size_t size, fs_read_sink sink,
		void *ctx);

/* Write @size bytes at @off; returns the bytes written, fewer only when the
 * image filled up midway. Grows the file, allocating pages in runs, updates
 * mtime and ctime. Errors: -ENOSPC (nothing written), -EFBIG, -EISDIR,
 * -EROFS, -EUCLEAN, -EIO. */
ssize_t fs_write(struct fs *fs, uint64_t ino, uint64_t off, const void *buf, size_t size);

/* fallocate(2): 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE |
 * FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE [| KEEP_SIZE]. Others:
 * -EOPNOTSUPP. Errors: -ENOSPC, -EFBIG, -ENODEV (not a regular file). */
int fs_fallocate(struct fs *fs, uint64_t ino, int mode, uint64_t off, uint64_t len);

/* lseek(2) SEEK_DATA / SEEK_HOLE from @off. -ENXIO past the end of file or
 * when no data follows @off. Other whence values: -EINVAL. */
int fs_lseek(struct fs *fs, uint64_t ino, uint64_t off, int whence, uint64_t *ret_off);

/* Copy @len bytes from (@ino_in, @off_in) to (@ino_out, @off_out), stopping
 * at the end of the input; returns the bytes copied (fewer when the image
 * fills up). Holes in the input are written as zeros. */
ssize_t fs_copy_range(struct fs *fs, uint64_t ino_in, uint64_t off_in, uint64_t ino_out,
		      uint64_t off_out, size_t len);

/* Pages of @ino resident in the pool, and pages it has. */
int fs_residency(struct fs *fs, uint64_t ino, uint64_t *ret_resident, uint64_t *ret_total);

/* ------------------------------------------------------------------ */
/* Extended attributes                                                */

/* XATTR_CREATE / XATTR_REPLACE in @flags. Names 1..255 bytes, values up to
 * 64 KiB (stored in chunks: a B-tree value holds at most BT_VAL_MAX).
 * Errors: -EEXIST (XATTR_CREATE), -ENODATA (XATTR_REPLACE), -ERANGE (name
 * longer than 255), -E2BIG (value longer than 64 KiB), -ENOSPC (also: a new
 * name that would make the list of names longer than listxattr(2) can
 * return, 64 KiB), -EPERM (the residency attribute, the control files), -EOPNOTSUPP (POSIX ACLs,
 * "system.posix_acl_*": not supported, so tools fall back to the mode bits),
 * -EROFS. */
int fs_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value, size_t size,
		int flags);

/* Copy the value into @buf; *ret_len gets its length. @cap 0 asks for the
 * length only. Errors: -ENODATA, -ERANGE (@cap too small), -EOPNOTSUPP
 * (POSIX ACLs). */
int fs_getxattr(struct fs *fs, uint64_t ino, const char *name, void *buf, size_t cap,
		size_t *ret_len);

/* The names, each followed by a 0 byte. @cap 0 asks for the length only.
 * Errors: -ERANGE. */
int fs_listxattr(struct fs *fs, uint64_t ino, char *buf, size_t cap, size_t *ret_len);

/* Errors: -ENODATA, -EPERM, -EOPNOTSUPP (as fs_setxattr). */
int fs_removexattr(struct fs *fs, uint64_t ino, const char *name);

/* ------------------------------------------------------------------ */
/* Stats and control                                                  */

/* Request kinds counted for the stats file. */
enum fs_req {
	FS_REQ_LOOKUP,
	FS_REQ_FORGET,
	FS_REQ_GETATTR,
	FS_REQ_SETATTR,
	FS_REQ_READLINK,
	FS_REQ_MKNOD,
	FS_REQ_MKDIR,
	FS_REQ_UNLINK,
	FS_REQ_RMDIR,
	FS_REQ_SYMLINK,
	FS_REQ_RENAME,
	FS_REQ_LINK,
	FS_REQ_OPEN,
	FS_REQ_READ,
	FS_REQ_WRITE,
	FS_REQ_FLUSH,
	FS_REQ_RELEASE,
	FS_REQ_FSYNC,
	FS_REQ_OPENDIR,
	FS_REQ_READDIR,
	FS_REQ_READDIRPLUS,
	FS_REQ_RELEASEDIR,
	FS_REQ_FSYNCDIR,
	FS_REQ_STATFS,
	FS_REQ_SETXATTR,
	FS_REQ_GETXATTR,
	FS_REQ_LISTXATTR,
	FS_REQ_REMOVEXATTR,
	FS_REQ_CREATE,
	FS_REQ_FALLOCATE,
	FS_REQ_LSEEK,
	FS_REQ_COPY_FILE_RANGE,
	FS_REQ_COUNT
};

/* Is @ino one of the control directory's inodes (FS_INO_CTLDIR .. CONTROL)?
 * The FUSE layer serves their opens, reads and writes itself. */
bool fs_is_ctl_ino(uint64_t ino);

/* Count one request (relaxed atomic; cheap). */
void fs_count(struct fs *fs, enum fs_req req);

/* Render the stats file into @buf (at most @cap bytes, no terminator
 * needed); returns its length, or -ENOBUFS when @cap is too small. */
ssize_t fs_stats_render(struct fs *fs, char *buf, size_t cap);

/* Run a control command ("flush" or "evict", optionally followed by a
 * newline). Errors: -EINVAL (unknown command), or the command's error. */
int fs_control(struct fs *fs, const char *cmd, size_t len);

#endif
