/*
 * fuse_ops.h: the FUSE low-level handlers over the fs_* calls.
 *
 * Each handler decodes its request, makes one fs_* call, and replies exactly
 * once. The session's userdata is a struct fs_fuse.
 */
#ifndef VS_FS_FUSE_OPS_H
#define VS_FS_FUSE_OPS_H

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>
#include <stdbool.h>

#include "fs/fs.h"

/* Knobs of the kernel connection (mount options; see main.c). */
struct fs_fuse_opts {
	bool writeback_cache; /* the kernel caches writes (FUSE_CAP_WRITEBACK_CACHE) */
	double timeout;	      /* seconds the kernel may trust attributes and names */
	unsigned max_write;   /* bytes per write request */
	unsigned max_read;    /* the max_read mount option, 0 when not given */
	unsigned max_readahead;
};

struct fs_fuse {
	struct fs *fs;
	struct fuse_session *se; /* for notifications to the kernel */
	struct fs_fuse_opts opts;
};

/* The operation table to give fuse_session_new with a struct fs_fuse. */
extern const struct fuse_lowlevel_ops fs_fuse_ops;

/* wire.c: read and write the session's requests and replies through our
 * own functions, which negotiate FUSE_HANDLE_KILLPRIV_V2 (libfuse 3.14
 * cannot) and, with @poll_us > 0, keep one thread polling for requests for
 * that long after each one; call after fuse_session_mount. Returns 0, or
 * -1 when the session could not be set up. fs_wire_detach stops the
 * polling's watchdog after the session loop has ended. */
int fs_wire_attach(struct fuse_session *se, unsigned poll_us);
void fs_wire_detach(void);

/* Does the request this thread is serving ask the daemon to strip the
 * file's set-ID bits and capabilities (the caller lacks CAP_FSETID)? */
bool fs_wire_kill_privs(void);

#endif
