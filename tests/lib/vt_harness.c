/*
 * vt_harness.c - image/daemon lifecycle and small helpers for the
 * mount-level tests.  See vt_harness.h.
 */
#include "vt_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long a mount may take to appear, and an unmount to finish writing
 * back.  Generous: a debug build under a loaded CI box is slow, and the
 * writeback after a model run can be a few hundred MiB. */
#define MOUNT_WAIT_MS	30000
#define UNMOUNT_WAIT_MS 300000

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (!path)
		path = "/usr/bin:/bin:/usr/sbin:/sbin";
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
		if (access(buf, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

/* fork+exec @argv with stdout/stderr appended to @log (or inherited if
 * NULL); returns the wait status, or -1 if fork failed. */
static int run_wait(char *const argv[], const char *log)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (log) {
			int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
		}
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

void vt_fs_dump_log(const struct vt_fs *fs)
{
	char buf[8192];
	ssize_t n;
	off_t size;
	int fd;

	if (fs->external || !fs->log[0])
		return;
	fd = open(fs->log, O_RDONLY);
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	n = pread(fd, buf, sizeof(buf) - 1,
		  size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	fprintf(stderr, "---- daemon log (%s, tail) ----\n%s\n---- end of daemon log ----\n",
		fs->log, buf);
}

bool vt_is_mountpoint(const char *path)
{
	char real[PATH_MAX], line[4096];
	bool found = false;
	FILE *f;

	if (!realpath(path, real))
		return false;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	/* Fields: id parent major:minor root mountpoint ...; paths here never
	 * contain the characters mountinfo escapes (space, tab, newline). */
	while (fgets(line, sizeof(line), f)) {
		char mp[PATH_MAX];

		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && strcmp(mp, real) == 0)
			found = true;
	}
	fclose(f);
	return found;
}

int vt_fs_mount(struct vt_fs *fs)
{
	const char *daemon = getenv("VS_VIRTUSCALE");
	pid_t pid;
	int waited;

	if (fs->external)
		return 0;
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return -1;
	}
	if (pid == 0) {
		int fd = open(fs->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		/* If the test process dies (crash, cmocka abort), SIGTERM makes the
		 * daemon unmount instead of leaving a dead mount behind. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl(daemon, daemon, fs->image, fs->mnt, "-f", "-o", fs->opts, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", daemon, strerror(errno));
		_exit(127);
	}
	fs->daemon = pid;
	fs->mounts++;
	for (waited = 0; waited < MOUNT_WAIT_MS; waited += 10) {
		int status;

		if (vt_is_mountpoint(fs->mnt))
			return 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			fs->daemon = 0;
			fprintf(stderr, "vt: daemon exited before mounting (status 0x%x)\n",
				status);
			vt_fs_dump_log(fs);
			return -1;
		}
		sleep_ms(10);
	}
	fprintf(stderr, "vt: %s not mounted after %d ms\n", fs->mnt, MOUNT_WAIT_MS);
	vt_fs_dump_log(fs);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	fs->daemon = 0;
	return -1;
}

int vt_fs_stop(struct vt_fs *fs)
{
	char *umount[] = {"fusermount3", "-u", fs->mnt, NULL};
	int status = 0, tries, waited;

	if (fs->external || !fs->daemon)
		return 0;
	/* EBUSY right after closing files is possible while the kernel still
	 * releases them; retry briefly before calling it a failure. */
	for (tries = 0; tries < 50; tries++) {
		status = run_wait(umount, NULL);
		if (status == 0 || !vt_is_mountpoint(fs->mnt))
			break;
		sleep_ms(100);
	}
	if (vt_is_mountpoint(fs->mnt)) {
		fprintf(stderr, "vt: fusermount3 -u %s keeps failing; killing the daemon\n",
			fs->mnt);
		kill(fs->daemon, SIGKILL);
		waitpid(fs->daemon, NULL, 0);
		fs->daemon = 0;
		char *lazy[] = {"fusermount3", "-u", "-z", fs->mnt, NULL};
		run_wait(lazy, NULL);
		return -1;
	}
	for (waited = 0; waited < UNMOUNT_WAIT_MS; waited += 10) {
		pid_t r = waitpid(fs->daemon, &status, WNOHANG);

		if (r == fs->daemon)
			break;
		if (r < 0 && errno != EINTR) {
			perror("waitpid");
			fs->daemon = 0;
			return -1;
		}
		sleep_ms(10);
	}
	if (waited >= UNMOUNT_WAIT_MS) {
		fprintf(stderr, "vt: daemon still running %d ms after unmount; killing it\n",
			UNMOUNT_WAIT_MS);
		vt_fs_dump_log(fs);
		kill(fs->daemon, SIGKILL);
		waitpid(fs->daemon, NULL, 0);
		fs->daemon = 0;
		return -1;
	}
	fs->daemon = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "vt: daemon ended with status 0x%x after unmount\n", status);
		vt_fs_dump_log(fs);
		return -1;
	}
	return 0;
}

int vt_fs_remount(struct vt_fs *fs)
{
	if (fs->external) {
		sync();
		return 0;
	}
	if (vt_fs_stop(fs) != 0)
		return -1;
	return vt_fs_mount(fs);
}

int vt_fs_start(struct vt_fs *fs, const char *size, const char *opts)
{
	const char *ext = getenv("VS_TEST_DIR");
	const char *tmp = getenv("VS_TEST_TMP");
	const char *extra = getenv("VS_TEST_OPTS");
	const char *daemon = getenv("VS_VIRTUSCALE");
	const char *mkfs = getenv("VS_MKFS");
	int status;

	memset(fs, 0, sizeof(*fs));
	umask(022);
	if (ext && *ext) {
		fs->external = true;
		snprintf(fs->mnt, sizeof(fs->mnt), "%s/vt.XXXXXX", ext);
		if (!mkdtemp(fs->mnt)) {
			fprintf(stderr, "vt: mkdtemp in VS_TEST_DIR=%s: %s\n", ext,
				strerror(errno));
			return -1;
		}
		/* Readable by the unprivileged users of the permission tests. */
		chmod(fs->mnt, 0755);
		return 0;
	}
	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		fprintf(stderr, "vt: SKIP: /dev/fuse not usable: %s\n", strerror(errno));
		return VT_SKIP;
	}
	if (!in_path("fusermount3")) {
		fprintf(stderr, "vt: SKIP: fusermount3 not in PATH\n");
		return VT_SKIP;
	}
	if (!daemon || access(daemon, X_OK) != 0 || !mkfs || access(mkfs, X_OK) != 0) {
		fprintf(stderr, "vt: SKIP: VS_VIRTUSCALE/VS_MKFS not set to executables "
				"(daemon not built yet?)\n");
		return VT_SKIP;
	}
	snprintf(fs->base, sizeof(fs->base), "%s/vstest.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(fs->base)) {
		fprintf(stderr, "vt: mkdtemp %s: %s\n", fs->base, strerror(errno));
		return -1;
	}
	chmod(fs->base, 0755);
	snprintf(fs->image, sizeof(fs->image), "%s/image", fs->base);
	snprintf(fs->mnt, sizeof(fs->mnt), "%s/mnt", fs->base);
	snprintf(fs->log, sizeof(fs->log), "%s/daemon.log", fs->base);
	if (mkdir(fs->mnt, 0755) != 0) {
		perror("vt: mkdir mountpoint");
		return -1;
	}
	snprintf(fs->opts, sizeof(fs->opts), "%s%s%s", opts ? opts : "pool=64M",
		 extra && *extra ? "," : "", extra && *extra ? extra : "");

	char *mkfs_argv[] = {(char *)mkfs, fs->image, "--size", (char *)size, NULL};

	status = run_wait(mkfs_argv, fs->log);
	if (status != 0) {
		fprintf(stderr, "vt: %s %s --size %s failed (status 0x%x)\n", mkfs, fs->image, size,
			status);
		vt_fs_dump_log(fs);
		return -1;
	}
	return vt_fs_mount(fs);
}

int vt_rm_rf(const char *path)
{
	char *argv[] = {"rm", "-rf", "--one-file-system", (char *)path, NULL};
	struct stat st;

	run_wait(argv, NULL);
	return lstat(path, &st) == -1 && errno == ENOENT ? 0 : -1;
}

int vt_fs_cleanup(struct vt_fs *fs)
{
	int r = vt_fs_stop(fs);
	const char *keep = getenv("VS_TEST_KEEP");

	if (keep && *keep) {
		fprintf(stderr, "vt: keeping %s\n", fs->external ? fs->mnt : fs->base);
		return r;
	}
	if (fs->external)
		vt_rm_rf(fs->mnt);
	else if (fs->base[0] && !vt_is_mountpoint(fs->mnt))
		vt_rm_rf(fs->base);
	return r;
}

static char *path_buf(void)
{
	static char bufs[8][PATH_MAX];
	static unsigned next;
	return bufs[next++ % 8];
}

const char *vt_path(const struct vt_fs *fs, const char *rel)
{
	char *b = path_buf();

	snprintf(b, PATH_MAX, "%s/%s", fs->mnt, rel);
	return b;
}

const char *vt_pathf(const char *dir, const char *fmt, ...)
{
	char *b = path_buf();
	char rel[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(b, PATH_MAX, "%s/%s", dir, rel);
	return b;
}

const char *vt_fresh_dir(const struct vt_fs *fs, const char *rel)
{
	static char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", vt_path(fs, rel));

	vt_rm_rf(p);
	if (mkdir(p, 0755) != 0) {
		fprintf(stderr, "vt: mkdir %s: %s\n", p, strerror(errno));
		return NULL;
	}
	return p;
}

int vt_stat_get(const struct vt_fs *fs, const char *name, uint64_t *ret_value)
{
	static char buf[65536];
	char want[256];
	ssize_t n;
	char *line;

	if (fs->external)
		return -1;
	n = vt_read_file(vt_path(fs, ".virtuscale/stats"), buf, sizeof(buf));
	if (n < 0) {
		fprintf(stderr, "vt: read .virtuscale/stats: %s\n", strerror(errno));
		return -1;
	}
	snprintf(want, sizeof(want), "virtuscale_%s", name);
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		size_t len = strlen(want);

		if (line[0] == '#' || strncmp(line, want, len) != 0)
			continue;
		/* Exact name: followed by a space or a label set. */
		if (line[len] != ' ' && line[len] != '{')
			continue;
		char *v = strrchr(line, ' ');

		/* Prometheus values are floats; counters here are integral. */
		*ret_value = (uint64_t)strtod(v + 1, NULL);
		return 0;
	}
	fprintf(stderr, "vt: stats has no %s line\n", want);
	return -1;
}

int vt_control(const struct vt_fs *fs, const char *cmd)
{
	char buf[64];
	int fd, len;
	ssize_t n;

	if (fs->external)
		return -1;
	fd = open(vt_path(fs, ".virtuscale/control"), O_WRONLY);
	if (fd < 0) {
		fprintf(stderr, "vt: open control: %s\n", strerror(errno));
		return -1;
	}
	/* As `echo CMD > control` would write it. */
	len = snprintf(buf, sizeof(buf), "%s\n", cmd);
	n = write(fd, buf, len);
	if (n != len)
		fprintf(stderr, "vt: write '%s' to control: %s\n", cmd,
			n < 0 ? strerror(errno) : "short write");
	close(fd);
	return n == len ? 0 : -1;
}

int vt_run_as(uid_t uid, gid_t gid, int (*fn)(void *arg), void *arg)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return 255;
	if (pid == 0) {
		if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0 ||
		    geteuid() != uid) {
			perror("vt: dropping privileges");
			_exit(255);
		}
		_exit(fn(arg) & 0xff);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 255;
	if (!WIFEXITED(status)) {
		fprintf(stderr, "vt: unprivileged child died (status 0x%x)\n", status);
		return 255;
	}
	return WEXITSTATUS(status);
}

unsigned vt_scale(void)
{
	const char *s = getenv("VS_TEST_SCALE");
	long v = s ? strtol(s, NULL, 10) : 1;

	return v > 0 ? (unsigned)v : 1;
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void vt_rng_seed(struct vt_rng *rng, uint64_t seed)
{
	rng->s = seed;
}

uint64_t vt_rng_next(struct vt_rng *rng)
{
	rng->s += 0x9e3779b97f4a7c15ULL;
	return mix64(rng->s);
}

uint64_t vt_rng_below(struct vt_rng *rng, uint64_t n)
{
	return vt_rng_next(rng) % n;
}

static inline uint64_t pattern_word(uint64_t tag, uint64_t idx)
{
	return mix64(tag * 0x9e3779b97f4a7c15ULL + idx + 1);
}

static inline uint8_t pattern_byte(uint64_t tag, uint64_t off)
{
	return (uint8_t)(pattern_word(tag, off / 8) >> ((off % 8) * 8));
}

void vt_pattern_fill(void *buf, size_t len, uint64_t tag, uint64_t off)
{
	uint8_t *p = buf;
	size_t i = 0;

	for (; i < len && (off + i) % 8; i++)
		p[i] = pattern_byte(tag, off + i);
	for (; i + 8 <= len; i += 8) {
		uint64_t w = pattern_word(tag, (off + i) / 8);

		memcpy(p + i, &w, 8); /* little endian: byte k is bits 8k.. */
	}
	for (; i < len; i++)
		p[i] = pattern_byte(tag, off + i);
}

ssize_t vt_pattern_check(const void *buf, size_t len, uint64_t tag, uint64_t off)
{
	const uint8_t *p = buf;
	size_t i = 0;

	for (; i < len && (off + i) % 8; i++)
		if (p[i] != pattern_byte(tag, off + i))
			return (ssize_t)i;
	for (; i + 8 <= len; i += 8) {
		uint64_t w = pattern_word(tag, (off + i) / 8);

		if (memcmp(p + i, &w, 8) != 0)
			break;
	}
	for (; i < len; i++)
		if (p[i] != pattern_byte(tag, off + i))
			return (ssize_t)i;
	return -1;
}

int vt_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = ENOSPC;
			return -1;
		}
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

int vt_pread_all(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

int vt_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int r;

	if (fd < 0)
		return -1;
	r = vt_pwrite_all(fd, buf, len, 0);
	if (close(fd) != 0)
		r = -1;
	return r;
}

ssize_t vt_read_file(const char *path, void *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -1;
	while (got + 1 < cap) {
		ssize_t n = read(fd, (char *)buf + got, cap - 1 - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	((char *)buf)[got] = 0;
	return (ssize_t)got;
}
