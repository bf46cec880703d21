/*
 * unmount.c - unmount a VirtuScale mount and wait for its daemon to let go
 * of the image.  See unmount.h for why and how.
 */
#include "tools/unmount.h"

#include "tools/statsfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 0x00000008
#endif

#define PID_METRIC   "virtuscale_daemon_pid"
#define POLL_MS	     10
#define TELL_AFTER_S 2.0 /* a wait longer than this is worth a word */

/* What we know of the daemon behind a mount, gathered while it is mounted. */
struct daemon_ref {
	pid_t pid;		 /* 0: unknown */
	int pidfd;		 /* -1: none */
	int image_fd;		 /* our own open of the daemon's image; -1: none */
	char image[PATH_MAX];	 /* its name, for messages */
};

/* ------------------------------------------------------------------ */
/* Finding the daemon and its image                                   */

/* True if /proc/PID/fdinfo/FD shows an flock() held through that fd. */
static bool fd_has_flock(pid_t pid, const char *fd)
{
	char path[320], line[256];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)pid, fd);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strncmp(line, "lock:", 5) == 0 && strstr(line, " FLOCK ");
	fclose(f);
	return found;
}

/*
 * Open our own file description of the image the daemon holds locked (its
 * flock()ed regular file or block device), and check that the process
 * serves a FUSE connection, lest a pid from another pid namespace lead us
 * to some unrelated process.  -EPERM/-EACCES: not ours to look at.
 */
static int find_image(struct daemon_ref *d)
{
	char dir[64], path[320];
	struct stat fuse_st, st, ost;
	bool serves_fuse = false;
	struct dirent *e;
	DIR *fds;

	if (stat("/dev/fuse", &fuse_st) != 0)
		return -errno;
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)d->pid);
	fds = opendir(dir);
	if (!fds)
		return -errno;
	while ((e = readdir(fds))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) != 0)
			continue;
		if (S_ISCHR(st.st_mode) && st.st_rdev == fuse_st.st_rdev)
			serves_fuse = true;
		if (d->image_fd >= 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) ||
		    !fd_has_flock(d->pid, e->d_name))
			continue;
		int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* The fd could have been closed and reused meanwhile. */
		if (fstat(fd, &ost) != 0 || ost.st_dev != st.st_dev || ost.st_ino != st.st_ino) {
			close(fd);
			continue;
		}
		ssize_t n = readlink(path, d->image, sizeof(d->image) - 1);
		d->image[n > 0 ? n : 0] = '\0';
		d->image_fd = fd;
	}
	closedir(fds);
	if (!serves_fuse) {
		if (d->image_fd >= 0)
			close(d->image_fd);
		d->image_fd = -1;
		return -ESRCH;
	}
	return d->image_fd >= 0 ? 0 : -ENOENT;
}

/* The daemon's pid from the stats file, a pidfd of it, and its image. */
static int daemon_find(const char *mnt, struct daemon_ref *d, const struct um_opts *o)
{
	struct sf_snap s = {0};
	const struct sf_sample *pid;
	int r;

	r = sf_read_mount(mnt, &s);
	if (r < 0)
		return r;
	pid = sf_find(&s, PID_METRIC, NULL);
	if (pid && pid->value >= 1 && pid->value <= INT_MAX)
		d->pid = (pid_t)pid->value;
	sf_snap_free(&s);
	if (!d->pid) {
		fprintf(stderr,
			"%s: %s: the daemon does not say its pid (%s; an older daemon?): "
			"unmounting without waiting for it to write back\n",
			o->prog, mnt, PID_METRIC);
		return 0;
	}
	d->pidfd = (int)syscall(SYS_pidfd_open, d->pid, 0);
	r = find_image(d);
	if (r == -ESRCH) {
		/* Not the daemon: its pid is in another pid namespace. */
		if (d->pidfd >= 0)
			close(d->pidfd);
		d->pidfd = -1;
		fprintf(stderr,
			"%s: %s: pid %d (from the stats file) is not this mount's daemon (another "
			"pid namespace?): unmounting without waiting for it\n",
			o->prog, mnt, (int)d->pid);
		d->pid = 0;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Unmounting and waiting                                             */

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Non-root users unmount FUSE through the setuid fusermount3. */
static int fusermount_unmount(const char *mnt, const struct um_opts *o)
{
	int status;
	pid_t child = fork();

	if (child < 0)
		return -errno;
	if (child == 0) {
		if (o->lazy)
			execlp("fusermount3", "fusermount3", "-u", "-z", "--", mnt, (char *)NULL);
		else
			execlp("fusermount3", "fusermount3", "-u", "--", mnt, (char *)NULL);
		fprintf(stderr, "%s: cannot run fusermount3: %s\n", o->prog, strerror(errno));
		_exit(127);
	}
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	/* fusermount3 said what went wrong. */
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECANCELED;
}

static int do_unmount(const char *mnt, const struct um_opts *o)
{
	int flags = UMOUNT_NOFOLLOW | (o->lazy ? MNT_DETACH : 0) | (o->force ? MNT_FORCE : 0);

	if (geteuid() != 0)
		return fusermount_unmount(mnt, o);
	if (umount2(mnt, flags) == 0)
		return 0;
	int r = -errno;
	if (r == -EBUSY)
		fprintf(stderr,
			"%s: %s: busy (a file is open there, or a process has it as its working "
			"directory); nothing was unmounted (lsof or fuser -vm %s tells who)\n",
			o->prog, mnt, mnt);
	else if (r == -EINVAL)
		fprintf(stderr, "%s: %s: not mounted\n", o->prog, mnt);
	else
		fprintf(stderr, "%s: %s: cannot unmount: %s\n", o->prog, mnt, strerror(-r));
	return r;
}

/* True once the image lock is free (a non-blocking flock of our own gets
 * it: given back at once) or the daemon has exited. */
static bool daemon_done(const struct daemon_ref *d, int wait_ms)
{
	if (d->image_fd >= 0 && flock(d->image_fd, LOCK_EX | LOCK_NB) == 0) {
		flock(d->image_fd, LOCK_UN);
		return true;
	}
	if (d->pidfd >= 0) {
		struct pollfd p = {.fd = d->pidfd, .events = POLLIN};
		return poll(&p, 1, wait_ms) > 0;
	}
	poll(NULL, 0, wait_ms);
	return false;
}

static const char *image_name(const struct daemon_ref *d)
{
	return d->image[0] ? d->image : "the image";
}

static int daemon_wait(const char *mnt, const struct daemon_ref *d, const struct um_opts *o)
{
	double start = now_mono(), end = start + o->timeout;
	bool told = false;

	while (!daemon_done(d, POLL_MS)) {
		double t = now_mono();
		if (t >= end) {
			fprintf(stderr,
				"%s: %s is unmounted, but after %.0f s its daemon (pid %d) still "
				"holds %s: it may still be writing back; do not copy, check or "
				"mount the image until it exits\n",
				o->prog, mnt, o->timeout, (int)d->pid, image_name(d));
			return -ETIMEDOUT;
		}
		if (!told && (o->verbose || t - start >= TELL_AFTER_S)) {
			fprintf(stderr, "%s: %s: waiting for the daemon (pid %d) to write back %s\n",
				o->prog, mnt, (int)d->pid, image_name(d));
			told = true;
		}
	}
	if (o->verbose)
		printf("%s: %s unmounted; the daemon released %s after %.2f s\n", o->prog, mnt,
		       image_name(d), now_mono() - start);
	return 0;
}

int um_unmount(const char *mnt, const struct um_opts *o)
{
	struct daemon_ref d = {.pidfd = -1, .image_fd = -1};
	int r;

	/* Gather what identifies the daemon while the mount still answers;
	 * a dead mount (ENOTCONN) just goes. */
	r = daemon_find(mnt, &d, o);
	if (r < 0 && r != -ENOTCONN) {
		sf_mount_error(o->prog, mnt, r);
		if (o->require_vs)
			return r;
		fprintf(stderr, "%s: %s: unmounting without waiting for a daemon\n", o->prog,
			mnt);
	}
	r = do_unmount(mnt, o);
	if (r == 0 && d.pid && !o->lazy)
		r = daemon_wait(mnt, &d, o);
	if (d.image_fd >= 0)
		close(d.image_fd);
	if (d.pidfd >= 0)
		close(d.pidfd);
	return r;
}
