/*
 * uring.h: FUSE over io_uring, the daemon's second transport (uring.c).
 *
 * The daemon answers requests either through /dev/fuse (read(2) a request,
 * writev(2) the reply: fs/wire.c) or, when the kernel offers it and the
 * mount allows it (-o uring=auto|on|off), through ring entries registered
 * per CPU with IORING_OP_URING_CMD, where one command commits a reply and
 * fetches the next request. The handlers are the same: a request from a
 * ring entry is handed to fuse_session_process_buf, and its reply, which
 * libfuse writes through wire.c's writev hook, is taken into the entry.
 */
#ifndef VS_FS_URING_H
#define VS_FS_URING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct fuse_session;
struct fuse_init_out;

enum fs_uring_mode {
	FS_URING_AUTO = 0, /* the ring when the kernel offers it, else /dev/fuse */
	FS_URING_ON,	   /* the ring, or the daemon stops with an error */
	FS_URING_OFF,	   /* /dev/fuse only */
};

#define FS_URING_DEFAULT_DEPTH 8
#define FS_URING_MAX_DEPTH     64

/* Can @mode be honoured on this machine at all? 0, or -EOPNOTSUPP (the
 * kernel has no FUSE over io_uring) or -EPERM (the fuse module's
 * enable_uring parameter is 0) with an explanation in @why. Only uring=on
 * makes a mount fail on it. */
int fs_uring_check(enum fs_uring_mode mode, char *why, size_t len);

/* Start @depth serving threads per possible CPU (0: the default; fewer
 * when there are many CPUs or the pool of @pool_pages is small), each with
 * its own ring and one entry, and a spare thread per CPU that takes over
 * the entry of an fsync answered before its checkpoint is over; they wait
 * for the INIT reply (call after fuse_session_mount, before the session
 * loop). Returns 0; with uring=on a negative errno when
 * the rings cannot be made (with uring=auto the daemon goes on with
 * /dev/fuse). */
int fs_uring_setup(struct fuse_session *se, enum fs_uring_mode mode, unsigned depth,
		   uint64_t pool_pages);

/* Stop and join the threads (after the session loop): they leave on their
 * own when the connection ends, or at the next look at the stop flag. */
void fs_uring_stop(void);

/* Did uring=on fail (the kernel did not offer it, or refused a ring)? */
bool fs_uring_failed(void);

/* Stats: the transport in use ("uring" or "dev"), the number of queues
 * (0 with /dev/fuse) and the requests each has served. */
const char *fs_uring_transport(void);
unsigned fs_uring_queue_count(void);
uint64_t fs_uring_queue_requests(unsigned qid);
/* fsync replies committed by a spare thread while the thread that served
 * the fsync went on with its checkpoint (uring.c, "Replies before the
 * handler is done"). */
uint64_t fs_uring_handoffs(void);

/* ---- wire.c's hooks --------------------------------------------------- */

/* The INIT reply @out is about to go out for an INIT whose flags were
 * @in_flags, @in_flags2: accept the ring (set its flag in @out) when it is
 * offered and allowed. Returns whether it did. */
bool fs_uring_init_reply(struct fuse_init_out *out, uint32_t in_flags, uint32_t in_flags2);

/* The INIT reply went out (@written) after fs_uring_init_reply said
 * @accepted: the threads register their entries now, or leave. */
void fs_uring_init_sent(bool accepted, bool written);

/* A reply libfuse writes: when it answers the request this thread is
 * serving from a ring entry, copy it into the entry, set *@ret to its
 * length and return true; otherwise (a /dev/fuse request, a notification)
 * return false and let it go to /dev/fuse. */
bool fs_uring_take_reply(const struct iovec *iov, int count, ssize_t *ret);

#endif
