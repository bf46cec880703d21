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
#include <stdint.h>
#include <stdbool.h>

#include "fs/fs.h"

/* Knobs of the kernel connection (mount options; see main.c). */
struct fs_fuse_opts {
	bool writeback_cache; /* the kernel caches writes (FUSE_CAP_WRITEBACK_CACHE) */
	double timeout;	      /* seconds the kernel may trust attributes and names */
	unsigned max_write;   /* bytes per write request */
	unsigned max_read;    /* the max_read mount option, 0 when not given */
	unsigned max_readahead;
	uint64_t dirty_bytes; /* dirty_cache (0: leave the kernel's limits); see dirty.c */
	bool dirty_capped;    /* dirty_cache was given: it caps the tight limit too */
};

/* The kernel's dirty-page limit of this mount (dirty.c). */
struct fs_dirty {
	_Atomic int state; /* 0 not looked for, 1 found, 2 looking, -1 unavailable */
	char dir[64];		   /* /sys/class/bdi/MAJ:MIN/ */
	uint64_t thresh;	   /* bytes: the machine's dirty limit (vm.dirty_*) */
	_Atomic uint64_t set;	   /* max_bytes we last wrote; 0 none, UINT64_MAX ample */
};

struct fs_fuse {
	struct fs *fs;
	struct fuse_session *se; /* for notifications to the kernel */
	const char *mountpoint;	 /* for finding the mount's bdi (dirty.c) */
	struct fs_fuse_opts opts;
	struct fs_dirty dirty;
};

/* dirty.c: with the writeback cache, keep the kernel's dirty-page limit of
 * the mount below a quarter of the space ordinary writers have left, so that
 * a writer hears ENOSPC (op_write, op_getattr) soon after the space runs
 * out; put the kernel's own limit back when space returns. Cheap when
 * nothing changes; a no-op when the limit cannot be set (not root, or a
 * kernel without per-bdi max_bytes). */
void fs_dirty_fit(struct fs_fuse *f);

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

/* Note the request in @buf (@n bytes) that this thread is about to serve:
 * its kill flag for fs_wire_kill_privs, and INIT's flags for the reply.
 * wire.c does it for /dev/fuse, uring.c for a ring entry. */
void fs_wire_note_request(const void *buf, size_t n);

#endif
