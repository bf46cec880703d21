/*
 * fuse_ops.c: one small handler per FUSE low-level operation.
 *
 * A handler decodes the request, calls the fs_* function that does the
 * work, and replies exactly once. Lookup counts live in fs/ (fs_lookup and
 * friends add, fs_forget takes away); when a reply that hands the kernel a
 * reference cannot be delivered (the request was interrupted), the handler
 * gives the reference back itself, since no forget will ever come for it.
 *
 * Errors: fs/ returns negative errno values; -EUCLEAN (a page failed its
 * checksum) reaches the application as EIO, and the daemon keeps serving.
 */
#include "fs/fuse_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fs/keys.h"

#define STATS_MAX   (64 * 1024)
#define READDIR_MAX (1024 * 1024)

static struct fs_fuse *ctx_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Requests that add to the image (data, names, attributes); the others
 * change or remove what exists. */
static bool req_adds(enum fs_req what)
{
	switch (what) {
	case FS_REQ_MKNOD:
	case FS_REQ_MKDIR:
	case FS_REQ_SYMLINK:
	case FS_REQ_LINK:
	case FS_REQ_CREATE:
	case FS_REQ_WRITE:
	case FS_REQ_SETXATTR:
	case FS_REQ_FALLOCATE:
	case FS_REQ_COPY_FILE_RANGE:
		return true;
	default:
		return false;
	}
}

/* Every handler starts here: count the request and say which reserves it
 * may spend (fs_space_enter). The kernel's write-back of cached writes is
 * classed by who opened the file (op_write). */
static struct fs *fs_of(fuse_req_t req, enum fs_req what)
{
	struct fs *fs = ctx_of(req)->fs;
	fs_count(fs, what);
	if (!req_adds(what))
		fs_space_enter(fs, FS_SPACE_ALL);
	else
		fs_space_enter(fs, fuse_req_ctx(req)->uid == 0 ? FS_SPACE_ROOT : FS_SPACE_USER);
	return fs;
}

static void reply_err(fuse_req_t req, int r)
{
	int e = -r;
	if (e == EUCLEAN)
		e = EIO;
	fuse_reply_err(req, e);
}

/* How long the kernel may keep @st (fs_attr_cacheable). */
static double attr_timeout(fuse_req_t req, struct fs *fs, const struct stat *st)
{
	return fs_attr_cacheable(fs, st) ? ctx_of(req)->opts.timeout : 0;
}

static void reply_entry(fuse_req_t req, struct fs *fs, const struct stat *st)
{
	struct fs_fuse *f = ctx_of(req);
	struct fuse_entry_param e = {
	    .ino = st->st_ino,
	    .attr = *st,
	    .attr_timeout = attr_timeout(req, fs, st),
	    .entry_timeout = f->opts.timeout,
	};
	if (fuse_reply_entry(req, &e) != 0)
		fs_forget(fs, st->st_ino, 1);
}

static struct fs_cred cred_of(fuse_req_t req)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	return (struct fs_cred){.uid = c->uid, .gid = c->gid};
}

/* ------------------------------------------------------------------ */
/* Session                                                            */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs_fuse *f = userdata;

	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (f->opts.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* The kernel clears set-ID bits on write and chown (with its own
	 * capability checks) when we do not claim to. */
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	/* We are the only writer: cached pages never go stale behind the
	 * kernel's back, so attribute refreshes need not drop them. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* Asynchronous direct I/O (libfuse asks for it by default) leaves in
	 * the page cache what a buffered reader brought back while an AIO
	 * O_DIRECT write was in flight: the kernel drops such pages after a
	 * synchronous direct write, but not when one completes asynchronously.
	 * Without it the kernel waits for each direct request, and AIO on
	 * O_DIRECT descriptors completes at submission. */
	conn->want &= ~FUSE_CAP_ASYNC_DIO;
	/* Regular files' mtime and ctime are the kernel's with its writeback
	 * cache (it sends them in setattr): writes must not stamp their own. */
	fs_set_kernel_cmtime(f->fs, (conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0);
	if (f->opts.max_write)
		conn->max_write = f->opts.max_write;
	if (f->opts.max_read)
		conn->max_read = f->opts.max_read; /* libfuse checks it matches */
	if (f->opts.max_readahead && f->opts.max_readahead < conn->max_readahead)
		conn->max_readahead = f->opts.max_readahead;
	conn->time_gran = 1;
}

/* ------------------------------------------------------------------ */
/* Names and attributes                                               */

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req, FS_REQ_LOOKUP);
	struct stat st;
	int r = fs_lookup(fs, parent, name, &st);
	if (r == -ENOENT) {
		/* A negative entry the kernel may cache: names appear only
		 * through this mount, which invalidates it. */
		struct fuse_entry_param e = {.ino = 0, .entry_timeout = ctx_of(req)->opts.timeout};
		fuse_reply_entry(req, &e);
		return;
	}
	if (r < 0)
		reply_err(req, r);
	else
		reply_entry(req, fs, &st);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_forget(fs_of(req, FS_REQ_FORGET), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fs *fs = fs_of(req, FS_REQ_FORGET);
	for (size_t i = 0; i < count; i++)
		fs_forget(fs, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req, FS_REQ_GETATTR);
	struct stat st;

	/* With a file handle, this is the check the kernel makes before a
	 * cached write(2) (or a read past the size it knows): the way to tell
	 * the writer that its earlier writes found no space, rather than let
	 * it fill the page cache for ever (fs_nospace_note). */
	if (fi && fs_nospace_pending(fs, ino)) {
		reply_err(req, -ENOSPC);
		return;
	}
	int r = fs_getattr(fs, ino, &st);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, attr_timeout(req, fs, &st));
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs_setattr sa = {0};
	struct stat st;

	if (to_set & FUSE_SET_ATTR_MODE) {
		sa.valid |= FS_SET_MODE;
		sa.mode = attr->st_mode;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		sa.valid |= FS_SET_UID;
		sa.uid = attr->st_uid;
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		sa.valid |= FS_SET_GID;
		sa.gid = attr->st_gid;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		sa.valid |= FS_SET_SIZE;
		sa.size = (uint64_t)attr->st_size;
	}
	if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
		sa.valid |= FS_SET_ATIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_ATIME) {
		sa.valid |= FS_SET_ATIME;
		sa.atime = attr->st_atim;
	}
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
		sa.valid |= FS_SET_MTIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_MTIME) {
		sa.valid |= FS_SET_MTIME;
		sa.mtime = attr->st_mtim;
	}
	if (to_set & FUSE_SET_ATTR_CTIME) {
		sa.valid |= FS_SET_CTIME;
		sa.ctime = attr->st_ctim;
	}
	if (fs_wire_kill_privs())
		sa.valid |= FS_SET_KILL_PRIVS;
	struct fs *fs = fs_of(req, FS_REQ_SETATTR);
	int r = fs_setattr(fs, ino, &sa, &st);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, attr_timeout(req, fs, &st));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[FS_SYMLINK_MAX + 1];
	size_t len;
	int r = fs_readlink(fs_of(req, FS_REQ_READLINK), ino, buf, FS_SYMLINK_MAX, &len);
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	buf[len] = 0;
	fuse_reply_readlink(req, buf);
}

static void make_node(fuse_req_t req, enum fs_req what, fuse_ino_t parent, const char *name,
		      mode_t mode, dev_t rdev)
{
	struct fs *fs = fs_of(req, what);
	struct fs_cred cred = cred_of(req);
	struct stat st;
	int r = fs_mknod(fs, &cred, parent, name, mode, rdev, &st);
	if (r < 0)
		reply_err(req, r);
	else
		reply_entry(req, fs, &st);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	make_node(req, FS_REQ_MKNOD, parent, name, mode, rdev);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_node(req, FS_REQ_MKDIR, parent, name, (mode & 07777) | S_IFDIR, 0);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req, FS_REQ_SYMLINK);
	struct fs_cred cred = cred_of(req);
	struct stat st;
	int r = fs_symlink(fs, &cred, parent, name, link, &st);
	if (r < 0)
		reply_err(req, r);
	else
		reply_entry(req, fs, &st);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct fs *fs = fs_of(req, FS_REQ_LINK);
	struct stat st;
	int r = fs_link(fs, ino, newparent, newname, &st);
	if (r < 0)
		reply_err(req, r);
	else
		reply_entry(req, fs, &st);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_err(req, fs_unlink(fs_of(req, FS_REQ_UNLINK), parent, name));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_err(req, fs_rmdir(fs_of(req, FS_REQ_RMDIR), parent, name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	reply_err(req,
		  fs_rename(fs_of(req, FS_REQ_RENAME), parent, name, newparent, newname, flags));
}

/* ------------------------------------------------------------------ */
/* Files                                                              */

/* The stats file of one open: rendered at the first read and again at
 * every read from offset 0, so a reader that reads it in pieces sees one
 * consistent snapshot, and one that rereads from the start sees fresh
 * counters. Freed at release, which the kernel sends once the last read
 * of the open file has been answered (see stats_read). */
struct stats_snap {
	pthread_mutex_t mu;
	ssize_t len; /* < 0: not rendered yet */
	char buf[STATS_MAX];
};

static int stats_open(struct fuse_file_info *fi)
{
	struct stats_snap *sn = malloc(sizeof(*sn));

	if (!sn)
		return -ENOMEM;
	pthread_mutex_init(&sn->mu, NULL);
	sn->len = -1;
	fi->fh = (uintptr_t)sn;
	return 0;
}

static void stats_release(struct fuse_file_info *fi)
{
	struct stats_snap *sn = (struct stats_snap *)(uintptr_t)fi->fh;

	if (!sn)
		return;
	pthread_mutex_destroy(&sn->mu);
	free(sn);
	fi->fh = 0;
}

static void stats_read(fuse_req_t req, struct fs *fs, struct fuse_file_info *fi, size_t size,
		       off_t off)
{
	struct stats_snap *sn = (struct stats_snap *)(uintptr_t)fi->fh;
	char *out = NULL;
	size_t n = 0;
	ssize_t len;

	/* The slice is copied out and the reply sent after the unlock: once
	 * the reply is in, the reader may close, and the release (on another
	 * thread) frees the snapshot while this one would still touch it. */
	pthread_mutex_lock(&sn->mu);
	if (off == 0 || sn->len < 0)
		sn->len = fs_stats_render(fs, sn->buf, STATS_MAX);
	len = sn->len;
	if (len > 0 && off < len) {
		n = size < (size_t)(len - off) ? size : (size_t)(len - off);
		out = malloc(n);
		if (out)
			memcpy(out, sn->buf + off, n);
	}
	pthread_mutex_unlock(&sn->mu);

	if (len < 0)
		reply_err(req, (int)len);
	else if (n > 0 && !out)
		reply_err(req, -ENOMEM);
	else
		fuse_reply_buf(req, out, n);
	free(out);
}

static int ctl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE;

	if (ino == FS_INO_CTLDIR)
		return -EISDIR;
	if (ino == FS_INO_CONTROL) {
		if (acc != O_WRONLY)
			return -EACCES;
		if (fuse_req_ctx(req)->uid != 0)
			return -EACCES;
		fi->direct_io = 1;
		return 0;
	}
	if (acc != O_RDONLY)
		return -EACCES;
	fi->direct_io = 1;
	return ino == FS_INO_STATS ? stats_open(fi) : 0;
}

/* An open for writing: refit the kernel's dirty limit before the writes
 * (fs_dirty_fit), and remember root (fs_writer_note_root). */
static void note_writer(fuse_req_t req, struct fs *fs, uint64_t ino, const struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) == O_RDONLY)
		return;
	if (fuse_req_ctx(req)->uid == 0)
		fs_writer_note_root(fs, ino);
	fs_dirty_fit(ctx_of(req));
}

/* What the kernel may cache of a regular file being opened (cache=, fs.h).
 * With cache=pool nothing: direct_io sends every read and write to the
 * daemon, and a shared mmap still works where the kernel let wire.c accept
 * FUSE_DIRECT_IO_ALLOW_MMAP. Otherwise everything, and across opens: only
 * this daemon changes the image, so what the kernel cached at the last
 * open is still right. */
static void file_caching(struct fuse_file_info *fi)
{
	if (fs_cache_mode_get() == FS_CACHE_POOL)
		fi->direct_io = 1;
	else
		fi->keep_cache = 1;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req, FS_REQ_OPEN);
	int r;

	if (fs_is_ctl_ino(ino)) {
		r = ctl_open(req, ino, fi);
		if (r < 0)
			reply_err(req, r);
		else if (fuse_reply_open(req, fi) != 0 && ino == FS_INO_STATS)
			stats_release(fi);
		return;
	}
	r = 0;
	if ((fi->flags & O_TRUNC) && fs_wire_kill_privs())
		r = fs_kill_privs(fs, ino, NULL); /* O_TRUNC: the kernel refreshes */
	if (r == 0)
		r = fs_open(fs, ino, fi->flags);
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	note_writer(req, fs, ino, fi);
	file_caching(fi);
	if (fuse_reply_open(req, fi) != 0)
		fs_release(fs, ino);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req, FS_REQ_CREATE);
	struct fs_cred cred = cred_of(req);
	struct stat st;
	int r;

	r = fs_mknod(fs, &cred, parent, name, (mode & 07777) | S_IFREG, 0, &st);
	if (r == 0) {
		r = fs_open(fs, st.st_ino, fi->flags & ~O_TRUNC);
		if (r < 0)
			fs_forget(fs, st.st_ino, 1);
		else
			note_writer(req, fs, st.st_ino, fi);
	}
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	struct fuse_entry_param e = {
	    .ino = st.st_ino,
	    .attr = st,
	    .attr_timeout = ctx_of(req)->opts.timeout,
	    .entry_timeout = ctx_of(req)->opts.timeout,
	};
	file_caching(fi);
	if (fuse_reply_create(req, &e, fi) != 0) {
		fs_release(fs, st.st_ino);
		fs_forget(fs, st.st_ino, 1);
	}
}

struct read_reply {
	fuse_req_t req;
	bool replied;
};

static int read_sink(void *vctx, const struct iovec *iov, int cnt)
{
	struct read_reply *rr = vctx;
	rr->replied = true;
	if (cnt == 0)
		fuse_reply_buf(rr->req, NULL, 0);
	else
		fuse_reply_iov(rr->req, iov, cnt);
	return 0;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req, FS_REQ_READ);

	if (ino == FS_INO_STATS) {
		stats_read(req, fs, fi, size, off);
		return;
	}
	if (fs_is_ctl_ino(ino)) {
		reply_err(req, -EBADF);
		return;
	}
	struct read_reply rr = {.req = req, .replied = false};
	int r = fs_read_iov(fs, ino, (uint64_t)off, size, read_sink, &rr);
	if (!rr.replied)
		reply_err(req, r < 0 ? r : -EIO);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req, FS_REQ_WRITE);
	ssize_t n;

	if (ino == FS_INO_CONTROL) {
		int r = fs_control(fs, buf, size);
		if (r < 0)
			reply_err(req, r);
		else
			fuse_reply_write(req, size);
		return;
	}
	if (fs_is_ctl_ino(ino)) {
		reply_err(req, -EBADF);
		return;
	}
	if (fs_wire_kill_privs()) {
		bool stripped = false;
		int r = fs_kill_privs(fs, ino, &stripped);
		if (r < 0) {
			reply_err(req, r);
			return;
		}
		/* The kernel cached the mode with the bits, and will not ask
		 * again before its timeout: a stat would show them. (Offset -1:
		 * the attributes only, no wait, no page cache.) */
		if (stripped && ctx_of(req)->se)
			fuse_lowlevel_notify_inval_inode(ctx_of(req)->se, ino, -1, 0);
	}
	struct fs_fuse *f = ctx_of(req); /* req is gone once answered */
	bool writeback = fi && fi->writepage;
	if (writeback) /* comes without the writer's identity */
		fs_space_enter(fs, fs_writer_is_root(fs, ino) ? FS_SPACE_ROOT : FS_SPACE_USER);
	n = fs_write(fs, ino, (uint64_t)off, buf, size);
	/* A short write is how write(2) says "the disk is full", but the
	 * kernel's writeback (writepage) would take it as success and drop
	 * the rest: fail it instead, so fsync and close report ENOSPC. */
	if (n >= 0 && (size_t)n < size && writeback)
		n = -ENOSPC;
	if (n < 0)
		reply_err(req, (int)n);
	else
		fuse_reply_write(req, (size_t)n);
	if (writeback && n == -ENOSPC) {
		/* Make the kernel ask before the writer's next write(2). */
		fs_nospace_note(fs, ino);
		if (f->se)
			fuse_lowlevel_notify_inval_inode(f->se, ino, -1, 0);
	}
	fs_dirty_fit(f);
}

/* FLUSH comes with every close(2) of a descriptor and carries nothing for
 * us: the kernel writes the file's dirty pages back before it asks (and
 * reports their errors itself), it keeps POSIX locks itself (we have no
 * lock operations), and durability is fsync's. ENOSYS makes the kernel stop
 * sending it for the rest of the mount: two round trips less per
 * `echo x > f`, whose shell closes two descriptors. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_count(ctx_of(req)->fs, FS_REQ_FLUSH);
	fuse_reply_err(req, ENOSYS);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino == FS_INO_STATS)
		stats_release(fi);
	fs_release(fs_of(req, FS_REQ_RELEASE), ino);
	fuse_reply_err(req, 0);
}

/* An fsync is answered as soon as the data is durable: when this thread
 * runs the checkpoint, at its commit, while the thread goes on with the
 * checkpoint's home writes (bm_checkpoint_notify). */
struct fsync_req {
	struct bm_durable d; /* first: fsync_told gets it */
	fuse_req_t req;
	fuse_ino_t ino;
	bool file; /* fsync, not fsyncdir */
};

static void fsync_told(struct bm_durable *d, int r)
{
	struct fsync_req *q = (struct fsync_req *)d;
	struct fs_fuse *f = ctx_of(q->req);

	/* With the writeback cache the kernel keeps st_blocks from before the
	 * pages it just wrote back; it refreshes them after a flush (close)
	 * but not after fsync. Invalidate the attributes (only: offset -1
	 * leaves the page cache alone and takes no inode lock) so that an
	 * fstat after fsync sees the space the data took; but only when that
	 * changed: otherwise the next write would first fetch them again (a
	 * GETATTR round trip per write+fsync of a database's pages). */
	if (r == 0 && q->file && f->opts.writeback_cache && f->se && !fs_is_ctl_ino(q->ino) &&
	    fs_blocks_moved_take(f->fs, q->ino))
		fuse_lowlevel_notify_inval_inode(f->se, q->ino, -1, 0);
	reply_err(q->req, r);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fsync_req q = { .d = { .fn = fsync_told }, .req = req, .ino = ino, .file = true };
	fs_sync_notify(fs_of(req, FS_REQ_FSYNC), &q.d);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req, FS_REQ_FALLOCATE);
	if (offset < 0 || length <= 0) {
		reply_err(req, -EINVAL);
		return;
	}
	reply_err(req, fs_fallocate(fs, ino, mode, (uint64_t)offset, (uint64_t)length));
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req, FS_REQ_LSEEK);
	struct fuse_session *se = ctx_of(req)->se;
	uint64_t pos;
	if (off < 0) {
		reply_err(req, -ENXIO);
		return;
	}
	/* Data still dirty in the kernel's page cache has not reached us, so
	 * we would call it a hole (or the offset past the end). Have the
	 * kernel write back what it holds from @off on first: invalidating
	 * the range writes each dirty page back (and waits for it) before
	 * dropping it. Only while the file is open for writing: the kernel
	 * writes everything back before the last release. This thread holds
	 * nothing the write-back needs (no inode lock, no transaction). */
	if (se && fs_may_have_dirty_pages(fs, ino))
		fuse_lowlevel_notify_inval_inode(se, ino, off, 0);
	int r = fs_lseek(fs, ino, (uint64_t)off, whence, &pos);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_lseek(req, (off_t)pos);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct fs *fs = fs_of(req, FS_REQ_COPY_FILE_RANGE);
	if (flags != 0 || off_in < 0 || off_out < 0) {
		reply_err(req, -EINVAL);
		return;
	}
	if (fs_is_ctl_ino(ino_in) || fs_is_ctl_ino(ino_out)) {
		reply_err(req, -EOPNOTSUPP);
		return;
	}
	ssize_t n = fs_copy_range(fs, ino_in, (uint64_t)off_in, ino_out, (uint64_t)off_out, len);
	if (n < 0)
		reply_err(req, (int)n);
	else
		fuse_reply_write(req, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* Directories                                                        */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int r = fs_getattr(fs_of(req, FS_REQ_OPENDIR), ino, &st);
	if (r == 0 && !S_ISDIR(st.st_mode))
		r = -ENOTDIR;
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_open(req, fi);
}

struct dir_reply {
	fuse_req_t req;
	char *buf;
	size_t size, pos;
	bool plus;
	double timeout;
	/* readdirplus: the entries sent with attributes, each of which adds a
	 * lookup (fs_readdir): taken back when the reply does not go out. */
	uint64_t *looked_up;
	size_t nlooked, caplooked;
};

static bool dir_add(void *vctx, const char *name, uint64_t ino, mode_t type, uint64_t next,
		    const struct stat *st)
{
	struct dir_reply *d = vctx;
	size_t room = d->size - d->pos, n;

	if (d->plus) {
		/* ino 0 for "." and "..": the kernel takes no reference. */
		struct fuse_entry_param e = {0};
		if (st) {
			e.ino = ino;
			e.attr = *st;
			e.attr_timeout = d->timeout;
			e.entry_timeout = d->timeout;
		} else {
			e.attr.st_ino = ino;
			e.attr.st_mode = type;
		}
		n = fuse_add_direntry_plus(d->req, d->buf + d->pos, room, name, &e, (off_t)next);
	} else {
		struct stat s = {.st_ino = ino, .st_mode = type};
		n = fuse_add_direntry(d->req, d->buf + d->pos, room, name, &s, (off_t)next);
	}
	if (n > room)
		return false;
	if (d->plus && st) {
		if (d->nlooked == d->caplooked) {
			size_t cap = d->caplooked ? 2 * d->caplooked : 64;
			uint64_t *p = realloc(d->looked_up, cap * sizeof(*p));
			if (!p)
				return false; /* the listing stops here; the next call goes on */
			d->looked_up = p;
			d->caplooked = cap;
		}
		d->looked_up[d->nlooked++] = ino;
	}
	d->pos += n;
	return true;
}

static void readdir_common(fuse_req_t req, enum fs_req what, fuse_ino_t ino, size_t size, off_t off,
			   bool plus)
{
	struct fs *fs = fs_of(req, what);
	struct dir_reply d = {
	    .req = req,
	    .size = size < READDIR_MAX ? size : READDIR_MAX,
	    .plus = plus,
	    .timeout = ctx_of(req)->opts.timeout,
	};
	d.buf = malloc(d.size);
	if (!d.buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	int r = fs_readdir(fs, ino, off < 0 ? 0 : (uint64_t)off, plus, dir_add, &d);
	if (r < 0)
		reply_err(req, r);
	if (r < 0 || fuse_reply_buf(req, d.buf, d.pos) != 0)
		/* The kernel never saw these entries (an error, or the request
		 * was interrupted): it will never forget them either. */
		for (size_t i = 0; i < d.nlooked; i++)
			fs_forget(fs, d.looked_up[i], 1);
	free(d.buf);
	free(d.looked_up);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	readdir_common(req, FS_REQ_READDIR, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	readdir_common(req, FS_REQ_READDIRPLUS, ino, size, off, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_count(ctx_of(req)->fs, FS_REQ_RELEASEDIR);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fsync_req q = { .d = { .fn = fsync_told }, .req = req, .ino = ino };
	fs_sync_notify(fs_of(req, FS_REQ_FSYNCDIR), &q.d);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	int r = fs_statfs(fs_of(req, FS_REQ_STATFS), &sv);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_statfs(req, &sv);
}

/* ------------------------------------------------------------------ */
/* Extended attributes                                                */

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	reply_err(req, fs_setxattr(fs_of(req, FS_REQ_SETXATTR), ino, name, value, size, flags));
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fs_of(req, FS_REQ_GETXATTR);
	size_t len;
	void *buf = NULL;
	int r;

	if (size > 0 && !(buf = malloc(size))) {
		reply_err(req, -ENOMEM);
		return;
	}
	r = fs_getxattr(fs, ino, name, buf, size, &len);
	if (r < 0)
		reply_err(req, r);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else
		fuse_reply_buf(req, buf, len);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fs_of(req, FS_REQ_LISTXATTR);
	size_t len;
	char *buf = NULL;
	int r;

	if (size > 0 && !(buf = malloc(size))) {
		reply_err(req, -ENOMEM);
		return;
	}
	r = fs_listxattr(fs, ino, buf, size, &len);
	if (r < 0)
		reply_err(req, r);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else
		fuse_reply_buf(req, buf, len);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	reply_err(req, fs_removexattr(fs_of(req, FS_REQ_REMOVEXATTR), ino, name));
}

/* ------------------------------------------------------------------ */
/* Transactions                                                       */

/*
 * Each request that changes the filesystem is one transaction of the
 * buffer manager's journal (bm_txn_begin/end): a checkpoint sees it whole or
 * not at all, so after a crash a create, rename, link, truncate or write is
 * either there or absent, never half done. The handlers above are unaware:
 * these wrappers bracket them, and the table below points at the wrappers.
 * Reads are included because they may update atime. Requests that only look
 * (lookup, getattr, readdir...) and the ones that wait for a checkpoint
 * (fsync, the control file) run outside any transaction.
 */
#define TXN(req) struct bm *bm_ = fs_bm(ctx_of(req)->fs)
#define IN_TXN(call)                                                                               \
	do {                                                                                       \
		bm_txn_begin(bm_);                                                                 \
		call;                                                                              \
		bm_txn_end(bm_);                                                                   \
	} while (0)

static void txn_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	TXN(req);
	IN_TXN(op_forget(req, ino, nlookup));
}

static void txn_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	TXN(req);
	IN_TXN(op_forget_multi(req, count, forgets));
}

static void txn_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	TXN(req);
	IN_TXN(op_setattr(req, ino, attr, to_set, fi));
}

static void txn_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	TXN(req);
	IN_TXN(op_mknod(req, parent, name, mode, rdev));
}

static void txn_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	TXN(req);
	IN_TXN(op_mkdir(req, parent, name, mode));
}

static void txn_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	TXN(req);
	IN_TXN(op_symlink(req, link, parent, name));
}

static void txn_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	TXN(req);
	IN_TXN(op_link(req, ino, newparent, newname));
}

static void txn_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	TXN(req);
	IN_TXN(op_unlink(req, parent, name));
}

static void txn_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	TXN(req);
	IN_TXN(op_rmdir(req, parent, name));
}

static void txn_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	TXN(req);
	IN_TXN(op_rename(req, parent, name, newparent, newname, flags));
}

static void txn_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TXN(req);
	IN_TXN(op_open(req, ino, fi));
}

static void txn_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	TXN(req);
	IN_TXN(op_create(req, parent, name, mode, fi));
}

static void txn_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	TXN(req);
	IN_TXN(op_read(req, ino, size, off, fi));
}

static void txn_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	TXN(req);
	if (fs_is_ctl_ino(ino))
		op_write(req, ino, buf, size, off, fi); /* control: may checkpoint */
	else
		IN_TXN(op_write(req, ino, buf, size, off, fi));
}

static void txn_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TXN(req);
	IN_TXN(op_release(req, ino, fi));
}

static void txn_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			  struct fuse_file_info *fi)
{
	TXN(req);
	IN_TXN(op_fallocate(req, ino, mode, offset, length, fi));
}

static void txn_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
				struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
				struct fuse_file_info *fi_out, size_t len, int flags)
{
	TXN(req);
	/* One transaction must fit the journal: copy at most 1 MiB per
	 * request; a short count is legal and callers loop on it. */
	if (len > (1u << 20))
		len = 1u << 20;
	IN_TXN(
	    op_copy_file_range(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags));
}

static void txn_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	TXN(req);
	IN_TXN(op_setxattr(req, ino, name, value, size, flags));
}

static void txn_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	TXN(req);
	IN_TXN(op_removexattr(req, ino, name));
}

const struct fuse_lowlevel_ops fs_fuse_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = txn_forget,
    .forget_multi = txn_forget_multi,
    .getattr = op_getattr,
    .setattr = txn_setattr,
    .readlink = op_readlink,
    .mknod = txn_mknod,
    .mkdir = txn_mkdir,
    .unlink = txn_unlink,
    .rmdir = txn_rmdir,
    .symlink = txn_symlink,
    .rename = txn_rename,
    .link = txn_link,
    .open = txn_open,
    .read = txn_read,
    .write = txn_write,
    .flush = op_flush,
    .release = txn_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = txn_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = txn_removexattr,
    .create = txn_create,
    .fallocate = txn_fallocate,
    .lseek = op_lseek,
    .copy_file_range = txn_copy_file_range,
};
