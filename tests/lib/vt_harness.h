/*
 * vt_harness.h - shared helpers for the mount-level filesystem tests.
 *
 * A test executable calls vt_fs_start() once: it formats a fresh image in a
 * private temporary directory, starts the daemon in the foreground on a
 * mountpoint beside it and waits until the mount is live.  Every test then
 * works below vt_fs_path().  When VS_TEST_DIR is set, no image or daemon is
 * involved: the tests run in a fresh subdirectory of that directory, which
 * lets the test logic itself be checked against ext4 or tmpfs.
 *
 * Environment:
 *   VS_VIRTUSCALE  path of the daemon (meson sets it)
 *   VS_MKFS        path of mkfs.virtuscale (meson sets it)
 *   VS_TEST_DIR    run against this existing directory instead of a mount
 *   VS_TEST_OPTS   extra -o options appended to every mount (exmap=off, ...)
 *   VS_TEST_TMP    where the private temporary directory goes (default /tmp)
 *   VS_TEST_KEEP   leave the temporary directory (image, daemon log) behind
 *   VS_TEST_SCALE  multiplier for the length of randomized runs
 *
 * Errors: functions return 0 on success and -1 after printing what failed to
 * stderr, except vt_fs_start(), which returns VT_SKIP when something the
 * test needs is missing on this machine.
 */
#ifndef VT_HARNESS_H
#define VT_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Exit code meson (and automake) treat as "skipped". */
#define VT_SKIP 77

#define VT_PAGE 4096

struct vt_fs {
	/* Bounded well below PATH_MAX so paths built from them always fit. */
	char base[1024];  /* private temp dir: image, mountpoint, daemon log */
	char image[1100]; /* backing image */
	char mnt[1100];	  /* root the tests work in */
	char log[1100];	  /* daemon stdout+stderr, appended across mounts */
	char opts[512];	  /* full -o string */
	pid_t daemon;	  /* 0 when not mounted */
	bool external;	  /* VS_TEST_DIR mode: no daemon, no stats */
	int mounts;	  /* how many times the daemon was started */
};

/*
 * Format an image of @size (e.g. "256M") and mount it with -o @opts (may be
 * NULL; "pool=64M" is used then), or set up a VS_TEST_DIR subdirectory.
 * Returns 0, VT_SKIP (message printed) or -1.
 */
int vt_fs_start(struct vt_fs *fs, const char *size, const char *opts);

/* Unmount (fusermount3 -u), wait for the daemon to write back and exit.
 * Returns 0 only if the daemon exited with status 0. No-op when external. */
int vt_fs_stop(struct vt_fs *fs);

/* Start the daemon again on the same image and mountpoint. */
int vt_fs_mount(struct vt_fs *fs);

/* vt_fs_stop() then vt_fs_mount(); on an external directory only syncs. */
int vt_fs_remount(struct vt_fs *fs);

/* Stop if still mounted and remove the temporary directory (unless
 * VS_TEST_KEEP).  Returns the vt_fs_stop() result. */
int vt_fs_cleanup(struct vt_fs *fs);

/* Print the last lines of the daemon log to stderr (after a failure). */
void vt_fs_dump_log(const struct vt_fs *fs);

/* True if @path is currently a mountpoint according to /proc/self/mountinfo. */
bool vt_is_mountpoint(const char *path);

/* Join the test root and @rel into a static rotating buffer (8 slots), so a
 * call can take several paths: rename(vt_path(fs, "a"), vt_path(fs, "b")). */
const char *vt_path(const struct vt_fs *fs, const char *rel);

/* The same below any directory, with a printf format for the rest; shares
 * vt_path's rotating buffers. */
__attribute__((format(printf, 2, 3))) const char *vt_pathf(const char *dir, const char *fmt, ...);

/* Make an empty directory @rel below the root (removing an old one first)
 * and return its path, valid until the next vt_fresh_dir() call. */
const char *vt_fresh_dir(const struct vt_fs *fs, const char *rel);

/* rm -rf @path; returns 0 if it is gone afterwards. */
int vt_rm_rf(const char *path);

/*
 * Pool statistics (only on a real mount).  @name is without the
 * "virtuscale_" prefix.  Returns 0, or -1 if the stats file or the line is
 * missing.
 */
int vt_stat_get(const struct vt_fs *fs, const char *name, uint64_t *ret_value);

/* Write @cmd ("flush", "evict") to .virtuscale/control. */
int vt_control(const struct vt_fs *fs, const char *cmd);

/*
 * Run fn(arg) in a forked child that has dropped to @uid/@gid (no
 * supplementary groups).  Returns fn's exit code (0 = success), or 255 if the
 * child could not drop privileges or died.  fn must not use cmocka asserts;
 * use VT_CHILD_CHECK, which prints the failing line and returns 1.
 */
int vt_run_as(uid_t uid, gid_t gid, int (*fn)(void *arg), void *arg);

#define VT_NOBODY_UID 65534
#define VT_NOBODY_GID 65534

#define VT_CHILD_CHECK(cond)                                                                       \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: child check failed: %s (errno %s)\n", __FILE__,    \
				__LINE__, #cond, strerrorname_np(errno) ?: "0");                   \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

/* VS_TEST_SCALE as a positive integer (1 by default). */
unsigned vt_scale(void);

/* Deterministic PRNG (splitmix64): the same seed gives the same run. */
struct vt_rng {
	uint64_t s;
};
void vt_rng_seed(struct vt_rng *rng, uint64_t seed);
uint64_t vt_rng_next(struct vt_rng *rng);
/* Uniform in [0, n); n > 0. */
uint64_t vt_rng_below(struct vt_rng *rng, uint64_t n);

/*
 * Content that is a pure function of (@tag, absolute file offset), so a
 * reader can verify any range without keeping a copy.
 */
void vt_pattern_fill(void *buf, size_t len, uint64_t tag, uint64_t off);
/* Returns the index of the first byte that differs, or -1 if all match. */
ssize_t vt_pattern_check(const void *buf, size_t len, uint64_t tag, uint64_t off);

/* Write/read exactly @len bytes at @off (loops over short transfers).
 * Return 0, or -1 with errno set (EIO for an unexpected short read). */
int vt_pwrite_all(int fd, const void *buf, size_t len, off_t off);
int vt_pread_all(int fd, void *buf, size_t len, off_t off);

/* Whole small file helpers; vt_read_file NUL-terminates, returns length or -1. */
int vt_write_file(const char *path, const void *buf, size_t len);
ssize_t vt_read_file(const char *path, void *buf, size_t cap);

#endif
