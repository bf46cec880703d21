/*
 * wire.c: two things the FUSE protocol offers that libfuse 3.14 (Debian 12)
 * does not pass on, done at the wire under libfuse (a custom io: libfuse
 * reads every request and writes every reply through these two functions).
 *
 * FUSE_HANDLE_KILLPRIV_V2. Without it the kernel cannot trust the daemon to
 * strip a file's powers (set-user-ID, set-group-ID, security.capability) on
 * a write, so before every write(2) it asks: one GETXATTR
 * "security.capability" round trip per call, which at 4 KiB writes cost
 * more than the write itself (15-16K random 4 KiB buffered writes/s with
 * it, 42-45K without). With it the kernel asks once per inode and leaves
 * the stripping to the daemon, telling it when in the request:
 * FUSE_WRITE_KILL_SUIDGID on a write, FATTR_KILL_SUIDGID on a setattr
 * (truncate, chown), FUSE_OPEN_KILL_SUIDGID on an open with O_TRUNC; the
 * flag is set only when the caller lacks CAP_FSETID. libfuse 3.14 knows
 * none of these, so:
 *
 *   read    notes, for the request just read, whether it carries a kill
 *           flag, in a thread-local that the handler asks through
 *           fs_wire_kill_privs() (libfuse's loops process each request on
 *           the thread that read it);
 *   writev  adds FUSE_HANDLE_KILLPRIV_V2 to the reply to FUSE_INIT when
 *           the kernel offered it.
 *
 * Everything else passes through untouched. Without fs_wire_attach (unit
 * tests driving the handlers, a kernel that does not offer the flag) the
 * kernel strips powers itself as before and fs_wire_kill_privs() is false.
 */
#include "fs/fuse_ops.h"

#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static _Atomic uint64_t init_unique = UINT64_MAX; /* the INIT in flight */
static atomic_bool init_offered;                  /* the kernel offered v2 */
static _Thread_local bool req_kill;               /* the request being served */

bool fs_wire_kill_privs(void)
{
	return req_kill;
}

/* Is @flag set in the 32-bit field at @off of the argument of the request
 * in @buf (@n bytes)? False when the request is too short to hold it. */
static bool arg_flag(const uint8_t *buf, size_t n, size_t off, uint32_t flag)
{
	uint32_t v;
	if (n < sizeof(struct fuse_in_header) + off + sizeof(v))
		return false;
	memcpy(&v, buf + sizeof(struct fuse_in_header) + off, sizeof(v));
	return (v & flag) != 0;
}

/* Does the request in @buf (@n bytes) ask the daemon to strip powers? */
static bool wants_kill(const uint8_t *buf, size_t n)
{
	switch (((const struct fuse_in_header *)buf)->opcode) {
	case FUSE_WRITE:
		return arg_flag(buf, n, offsetof(struct fuse_write_in, write_flags),
				FUSE_WRITE_KILL_SUIDGID);
	case FUSE_SETATTR:
		return arg_flag(buf, n, offsetof(struct fuse_setattr_in, valid),
				FATTR_KILL_SUIDGID);
	case FUSE_OPEN:
		return arg_flag(buf, n, offsetof(struct fuse_open_in, open_flags),
				FUSE_OPEN_KILL_SUIDGID);
	default:
		return false;
	}
}

static ssize_t wire_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	ssize_t n = read(fd, buf, len);

	req_kill = false;
	if (n < (ssize_t)sizeof(struct fuse_in_header))
		return n;
	const struct fuse_in_header *h = buf;
	if (h->opcode == FUSE_INIT) {
		atomic_store(&init_offered,
			     arg_flag(buf, (size_t)n, offsetof(struct fuse_init_in, flags),
				      FUSE_HANDLE_KILLPRIV_V2));
		atomic_store(&init_unique, h->unique);
	} else {
		req_kill = wants_kill(buf, (size_t)n);
	}
	return n;
}

static ssize_t wire_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	/* libfuse replies to INIT with the header and fuse_init_out in two
	 * pieces; any other shape is left alone. */
	if (count >= 2 && iov[0].iov_len == sizeof(struct fuse_out_header) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
		struct fuse_out_header *o = iov[0].iov_base;
		uint64_t want = atomic_load(&init_unique);
		if (o->unique == want && o->error == 0 &&
		    atomic_compare_exchange_strong(&init_unique, &want, UINT64_MAX) &&
		    atomic_load(&init_offered)) {
			struct fuse_init_out *io = iov[1].iov_base;
			io->flags |= FUSE_HANDLE_KILLPRIV_V2;
		}
	}
	return writev(fd, iov, count);
}

int fs_wire_attach(struct fuse_session *se)
{
	static const struct fuse_custom_io io = { .read = wire_read, .writev = wire_writev };
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}
