/*
 * unmount.h - unmount a VirtuScale mount and wait until the daemon has
 * written everything back and released the image (vsctl MOUNTPOINT
 * unmount, and umount.fuse.virtuscale, which umount(8) runs).
 *
 * Why wait: the kernel ends a FUSE unmount as soon as the mount is gone
 * from the tree; the daemon only then sees the end of its session, writes
 * its dirty pages and closes the image.  Until it has, the image is locked
 * (fsck and a new mount say "image is in use") and a copy of it is not the
 * final one.
 *
 * How: before unmounting, the daemon's pid comes from the stats file
 * (virtuscale_daemon_pid), and through /proc/PID/fd the image it holds
 * flock()ed (bm_open locks it; the lock goes when bm_close has written
 * everything and closed it).  After the unmount we probe that lock with a
 * non-blocking flock of our own in a loop, and also watch the daemon with a
 * pidfd: either the lock is free or the daemon is gone.  Without access to
 * /proc/PID/fd (another user's daemon) the pidfd alone decides.
 *
 * Errors: int functions return 0 or a negative errno.
 */
#ifndef VS_TOOLS_UNMOUNT_H
#define VS_TOOLS_UNMOUNT_H

#include <stdbool.h>

/* Default bound on the wait: writing back a large pool to a slow disk
 * takes minutes, not hours. */
#define UM_DEFAULT_TIMEOUT 600.0

struct um_opts {
	const char *prog; /* prefix of messages */
	double timeout;	  /* seconds to wait for the daemon after the unmount */
	bool lazy;	  /* MNT_DETACH; then there is nothing to wait for */
	bool force;	  /* MNT_FORCE */
	bool verbose;	  /* say what we wait for */
	/* Refuse a path that is not a VirtuScale mount (vsctl); otherwise
	 * (the umount helper, which umount(8) runs for fuse.virtuscale
	 * mounts) unmount it anyway, without waiting. */
	bool require_vs;
};

/*
 * Unmount @mnt and wait for its daemon as described above.  Prints its own
 * messages (prefixed by o->prog) and returns 0; -EBUSY and the like when
 * the unmount itself failed; -ETIMEDOUT when the mount is gone but the
 * daemon still holds the image after o->timeout seconds.
 *
 * As root the unmount is umount2(UMOUNT_NOFOLLOW) (never umount(8), which
 * would run this helper again); otherwise fusermount3 -u does it.
 */
int um_unmount(const char *mnt, const struct um_opts *o);

#endif
