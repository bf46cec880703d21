/*
 * main.c: the virtuscale daemon: options, mount, the FUSE session loop,
 * and a clean unmount that writes everything back.
 *
 *   virtuscale IMAGE MOUNTPOINT [-o opt,...] [-f] [-d] [-s]
 *
 * Start-up order, and why:
 *
 *   parse options          our own table, each value checked against its
 *                          range; generic mount options (mount(8)'s) are
 *                          mount flags for the kernel or fstab words we
 *                          drop, anything else is an error. With `remount`
 *                          no daemon starts: see remount() below
 *   fork (unless -f/-d)    the parent waits on a pipe for the child's
 *                          verdict and exits with it, so errors still reach
 *                          the terminal and the exit status is meaningful.
 *                          Forking before anything is opened means no
 *                          thread, io_uring ring or lock has to survive a
 *                          fork (bm_open's flock is taken by the child)
 *   fs_mount               opens and checks the image BEFORE the mount point
 *                          is touched: "not an image" and "image is in use"
 *                          fail here with the mount point untouched
 *   fuse_session_mount     the mount itself
 *   ready                  the child detaches (setsid, stdio to /dev/null,
 *                          log to -o log=FILE or else syslog) and tells the
 *                          parent to exit 0. Until then messages go to
 *                          stderr, so the terminal sees why a mount failed
 *   mount flags            those libfuse 3.14 does not know (relatime,
 *                          strictatime, nodiratime, lazytime, ...) are set by
 *                          a remount once the kernel has our INIT reply
 *   session loop           until umount, fusermount3 -u, SIGTERM, SIGINT or
 *                          SIGHUP; then unmount and fs_unmount (bm_close
 *                          writes every dirty page back)
 *
 * Fault injection, for tests only (not in --help): the image's writes and
 * syncs can be made to fail as a failing disk would (engine/bm_fault.h).
 *
 *   -o fault_write_at=N    the Nth write of the image fails,
 *   -o fault_sync_at=N     or the Nth sync, counted from when the mount is
 *                          ready (so: the Nth write of the checkpoints
 *                          that fsyncs, a full pool or the unmount ask for)
 *   -o fault_err=EIO|ENOSPC  with this error (default EIO)
 *   -o fault_sticky        and every write (sync) after it fails too
 *
 * With any of them the periodic checkpoint is off, so that only requests
 * move the counts.
 */
#include "fs/fuse_ops.h"
#include "fs/uring.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <linux/fs.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "engine/bm_fault.h"
#include "engine/log.h"

#define MiB		(UINT64_C(1) << 20)
#define DEFAULT_TIMEOUT 3600.0 /* we are the only writer */
#define MIN_POOL	(64 * MiB)
#define DEFAULT_READAHEAD_KIB 1024 /* one max_write: one read request */
#define DEFAULT_POLL_US 100	   /* fs/wire.c: polling for requests */
#define MAX_POLL_US 10000
#define MAX_THREADS 1024	      /* far above what a pool can serve */
#define MIN_MAX_WRITE 4096	      /* the kernel's floor */
#define MAX_MAX_WRITE (1024 * 1024) /* libfuse 3.14's buffer: 256 pages */
#define MAX_READAHEAD_KIB (1024 * 1024)
#define MAX_TIMEOUT (365.0 * 24 * 3600) /* a year: "for ever" in practice */

struct options {
	char *image;
	char *mountpoint;
	char *pool;
	char *exmap;
	char *evict; /* evict=clock|s3clock */
	char *cache; /* cache=both|pool|kernel (fs.h) */
	enum fs_cache_mode cache_mode;
	char *writeback;
	/* Numbers arrive as text and are checked against a range in
	 * check_numbers: "%u" would read "-1" as 4294967295. */
	char *threads_s, *max_write_s, *readahead_s, *poll_s, *timeout_s;
	char *fault_write_at_s, *fault_sync_at_s;
	char *log_file;
	int log_fd; /* -1: none */
	unsigned threads;
	unsigned max_write;
	unsigned max_read; /* 0: not given */
	unsigned readahead_kib;
	int have_readahead;
	unsigned poll_us;
	int have_poll;
	char *uring, *uring_depth_s; /* fs/uring.c: FUSE over io_uring */
	enum fs_uring_mode uring_mode;
	unsigned uring_depth;
	char *dirty_cache;
	uint64_t dirty_bytes; /* parsed dirty_cache */
	double timeout;
	int foreground;
	int debug;
	int single;
	int help;
	int version;
	int read_only; /* the last of ro and rw wins, as for mount(8) */
	int remount;
	bool pool_clamped; /* pool= was more than the image */
	unsigned long mnt_flags;   /* MS_* from the generic options, in order */
	unsigned long mnt_touched; /* the MS_* bits they decided */
	const char *mnt_late;	 /* first flag libfuse cannot pass: set later */
	/* FUSE options the kernel shows in mountinfo: a remount compares them */
	char *fuse_opts[16];
	unsigned nfuse_opts;
	int no_default_permissions;
	int have_fsname;
	int have_subtype;
	int bad;
	unsigned long fault_write_at, fault_sync_at;
	char *fault_err;
	int fault_sticky;
};

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_FOREGROUND,
	KEY_DEBUG,
	KEY_SINGLE,
	KEY_RO,
	KEY_RW,
	KEY_REMOUNT,
	KEY_NO_DEFAULT_PERMISSIONS,
};

#define OPT(t, m)                                                                                  \
	{                                                                                          \
		t, offsetof(struct options, m), 1                                                  \
	}

static const struct fuse_opt opt_table[] = {
    OPT("pool=%s", pool),
    OPT("exmap=%s", exmap),
    OPT("evict=%s", evict),
    OPT("cache=%s", cache),
    OPT("threads=%s", threads_s),
    OPT("writeback_cache=%s", writeback),
    OPT("timeout=%s", timeout_s),
    OPT("max_write=%s", max_write_s),
    OPT("readahead=%s", readahead_s),
    OPT("readahead=", have_readahead),
    OPT("poll=%s", poll_s),
    OPT("poll=", have_poll),
    OPT("uring=%s", uring),
    OPT("uring_depth=%s", uring_depth_s),
    OPT("dirty_cache=%s", dirty_cache),
    OPT("log=%s", log_file),
    OPT("fault_write_at=%s", fault_write_at_s),
    OPT("fault_sync_at=%s", fault_sync_at_s),
    OPT("fault_err=%s", fault_err),
    OPT("fault_sticky", fault_sticky),
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_KEY("-f", KEY_FOREGROUND),
    FUSE_OPT_KEY("-d", KEY_DEBUG),
    FUSE_OPT_KEY("debug", KEY_DEBUG),
    FUSE_OPT_KEY("-s", KEY_SINGLE),
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_KEY("rw", KEY_RW),
    FUSE_OPT_KEY("remount", KEY_REMOUNT),
    FUSE_OPT_KEY("no_default_permissions", KEY_NO_DEFAULT_PERMISSIONS),
    FUSE_OPT_END,
};

/*
 * The generic mount options that are mount flags, as mount(8) maps them
 * for a kernel filesystem: each sets and clears MS_* bits, in the order
 * given (so the last of noatime and relatime wins). libfuse 3.14 passes
 * only some of them to mount(2) and refuses to start a session with the
 * others; those are applied by a remount once the mount is up
 * (late_flags_start).
 */
struct mount_flag {
	const char *name;
	unsigned long set, clear;
	bool libfuse; /* libfuse 3.14 takes it */
};
/* clang-format off */
static const struct mount_flag mount_flags[] = {
	{"suid",	  0, MS_NOSUID, true},	   {"nosuid",	     MS_NOSUID, 0, true},
	{"dev",		  0, MS_NODEV, true},	   {"nodev",	     MS_NODEV, 0, true},
	{"exec",	  0, MS_NOEXEC, true},	   {"noexec",	     MS_NOEXEC, 0, true},
	{"async",	  0, MS_SYNCHRONOUS, true}, {"sync",	     MS_SYNCHRONOUS, 0, true},
	{"dirsync",	  MS_DIRSYNC, 0, true},
	{"atime",	  0, MS_NOATIME, true},	   {"noatime",	     MS_NOATIME, 0, true},
	{"diratime",	  0, MS_NODIRATIME, false}, {"nodiratime",    MS_NODIRATIME, 0, false},
	{"relatime",	  MS_RELATIME, MS_NOATIME | MS_STRICTATIME, false},
	{"norelatime",	  0, MS_RELATIME, false},
	{"strictatime",	  MS_STRICTATIME, MS_NOATIME | MS_RELATIME, false},
	{"nostrictatime", 0, MS_STRICTATIME, false},
	{"lazytime",	  MS_LAZYTIME, 0, false},   {"nolazytime",    0, MS_LAZYTIME, false},
	{"nosymfollow",	  MS_NOSYMFOLLOW, 0, false}, {"symfollow",   0, MS_NOSYMFOLLOW, false},
	{NULL, 0, 0, false},
};
/* FUSE's own mount options: passed on; the kernel shows most of them in
 * mountinfo, which mount(8) hands back to us at a remount. */
static const char *const kernel_opts[] = {
	"allow_other", "allow_root", "auto_unmount", "default_permissions",
	NULL,
};
static const char *const kernel_prefixes[] = {
	"fsname=", "subtype=", "max_read=",
	"context=", "fscontext=", "defcontext=", "rootcontext=",
	NULL,
};
/* What only a remount brings: mount(8) copies them from mountinfo. */
static const char *const remount_prefixes[] = {"user_id=", "group_id=", "blksize=", NULL};
/* Options meant for mount(8) and fstab that mount.fuse3 may pass along:
 * a kernel filesystem never sees them either. */
static const char *const ignored_opts[] = {
	"user", "nouser", "users", "auto", "noauto", "_netdev", "nofail", "defaults",
	"owner", "group", "nonempty", "loop", "silent", "loud",
	NULL,
};
static const char *const ignored_prefixes[] = {
	"x-", "X-", "comment=", "helper=", "uhelper=", NULL,
};
/* clang-format on */

static bool in_list(const char *arg, const char *const *list, bool prefix)
{
	for (unsigned i = 0; list[i]; i++)
		if (prefix ? strncmp(arg, list[i], strlen(list[i])) == 0
			   : strcmp(arg, list[i]) == 0)
			return true;
	return false;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!o->image) {
			o->image = strdup(arg);
			return 0;
		}
		if (!o->mountpoint) {
			o->mountpoint = strdup(arg);
			return 0;
		}
		fprintf(stderr, "virtuscale: unexpected argument '%s'\n", arg);
		o->bad = 1;
		return 0;
	case KEY_HELP:
		o->help = 1;
		return 0;
	case KEY_VERSION:
		o->version = 1;
		return 0;
	case KEY_FOREGROUND:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->debug = 1;
		o->foreground = 1;
		return fuse_opt_add_arg(outargs, "-d") == 0 ? 0 : -1;
	case KEY_SINGLE:
		o->single = 1;
		return 0;
	case KEY_RO:
	case KEY_RW:
		/* Passed on once, after parsing: the last one wins. */
		o->read_only = key == KEY_RO;
		return 0;
	case KEY_REMOUNT:
		o->remount = 1;
		return 0;
	case KEY_NO_DEFAULT_PERMISSIONS:
		o->no_default_permissions = 1;
		return 0;
	case FUSE_OPT_KEY_OPT:
		if (strncmp(arg, "fsname=", 7) == 0)
			o->have_fsname = 1;
		if (strncmp(arg, "subtype=", 8) == 0)
			o->have_subtype = 1;
		if (strncmp(arg, "max_read=", 9) == 0) {
			/* The kernel takes it at mount; libfuse then wants
			 * init() to ask for the same (op_init) or it ends the
			 * session at FUSE_INIT. */
			char *end;
			errno = 0;
			unsigned long v = strtoul(arg + 9, &end, 10);
			if (errno || *end || end == arg + 9 || v < 4096 || v > UINT32_MAX) {
				fprintf(stderr, "virtuscale: %s: use a byte count of at least 4096\n",
					arg);
				o->bad = 1;
				return 0;
			}
			o->max_read = (unsigned)v;
		}
		for (const struct mount_flag *f = mount_flags; f->name; f++) {
			if (strcmp(arg, f->name) != 0)
				continue;
			o->mnt_flags = (o->mnt_flags & ~f->clear) | f->set;
			o->mnt_touched |= f->set | f->clear;
			if (!f->libfuse && !o->mnt_late)
				o->mnt_late = f->name;
			return f->libfuse ? 1 : 0;
		}
		if (in_list(arg, kernel_opts, false) || in_list(arg, kernel_prefixes, true) ||
		    in_list(arg, remount_prefixes, true)) {
			if (o->nfuse_opts < sizeof(o->fuse_opts) / sizeof(o->fuse_opts[0]))
				o->fuse_opts[o->nfuse_opts++] = strdup(arg);
			/* user_id= and the like: libfuse sets them itself */
			return in_list(arg, remount_prefixes, true) ? 0 : 1;
		}
		if (in_list(arg, ignored_opts, false) || in_list(arg, ignored_prefixes, true))
			return 0;
		fprintf(stderr, "virtuscale: unknown option '%s' (see virtuscale --help)\n", arg);
		o->bad = 1;
		return 0;
	}
	fprintf(stderr, "virtuscale: unknown argument '%s' (see virtuscale --help)\n", arg);
	o->bad = 1;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: virtuscale IMAGE MOUNTPOINT [-o opt[,opt...]] [-f] [-d] [-s]\n"
		"\n"
		"Mount the VirtuScale filesystem in IMAGE (made by mkfs.virtuscale) on\n"
		"MOUNTPOINT. Runs in the background unless -f is given; unmount with\n"
		"umount or fusermount3 -u (or stop the daemon with SIGTERM or SIGINT):\n"
		"everything is written back to the image before it exits.\n"
		"\n"
		"options:\n"
		"  -f                     stay in the foreground\n"
		"  -d, -o debug           print every FUSE request (implies -f)\n"
		"  -s                     serve requests on one thread\n"
		"  -h, --help             this text\n"
		"  -V, --version          the version\n"
		"  -o pool=SIZE           buffer pool size, e.g. 512M, 2G (default: a quarter\n"
		"                         of RAM or the image size, whichever is smaller,\n"
		"                         and at least 64M)\n"
		"  -o threads=N           at most N threads serve requests, 1 to 1024 (default:\n"
		"                         4 per CPU, 8 to 64; at most one per 512 KiB of pool)\n"
		"  -o exmap=auto|on|off   pool memory through /dev/exmap: when available\n"
		"                         (auto, the default), required (on), or never (off)\n"
		"  -o evict=s3clock|clock which pages the pool evicts first: s3clock (the\n"
		"                         default) keeps pages used twice through a scan;\n"
		"                         clock is vmcache's plain clock\n"
		"  -o cache=both|pool|kernel  who caches file data: the kernel's page cache\n"
		"                         and the pool (both, the default), the pool only\n"
		"                         (pool: files are opened direct_io), or the kernel\n"
		"                         only (kernel: reads of data not in the pool go\n"
		"                         around it)\n"
		"  -o ro                  mount read-only; the image is not written (of ro and\n"
		"                         rw the last one given wins)\n"
		"  -o allow_other         let other users in (needs user_allow_other in\n"
		"                         /etc/fuse.conf unless run as root)\n"
		"  -o auto_unmount        unmount when the daemon dies\n"
		"  -o no_default_permissions  leave permission checks to... nobody: every\n"
		"                         access is allowed (default_permissions is on)\n"
		"  -o fsname=NAME, -o subtype=NAME  what mount(8) shows\n"
		"  -o writeback_cache=on|off  let the kernel cache writes (default on)\n"
		"  -o timeout=SECONDS     how long the kernel trusts attributes and names, up\n"
		"                         to a year (default 3600: this daemon is the only writer)\n"
		"  -o max_write=BYTES     largest write request, 4096 to 1048576 (default 1048576)\n"
		"  -o max_read=BYTES      largest read request (default: as max_write)\n"
		"  -o poll=USEC           keep one thread reading requests this long after\n"
		"                         each one instead of sleeping, up to 10000 (default\n"
		"                         100; 0: off)\n"
		"  -o uring=auto|on|off   serve requests through FUSE over io_uring: when\n"
		"                         the kernel offers it (auto, the default; needs\n"
		"                         /sys/module/fuse/parameters/enable_uring set to 1),\n"
		"                         required (on), or never (off: /dev/fuse)\n"
		"  -o uring_depth=N       requests each CPU's ring serves at once, one thread\n"
		"                         each, 1 to 64 (default 8)\n"
		"  -o readahead=KIB       the kernel's read-ahead on this mount, up to 1048576\n"
		"                         (default 1024; 0 keeps the kernel's 128; needs root)\n"
		"  -o dirty_cache=SIZE    written data the kernel may hold for this mount\n"
		"                         before writers wait for the daemon (default: the\n"
		"                         pool size, or half the free space when that is\n"
		"                         less than twice the kernel's dirty limit; 0 keeps\n"
		"                         the kernel's 1%% of its limit; needs root)\n"
		"  -o log=FILE            append messages to FILE, each with a timestamp\n"
		"\n"
		"Messages go to stderr until the mount is ready; then, with -f, still to\n"
		"stderr, and in the background to the log=FILE, else to syslog (ident\n"
		"virtuscale, facility daemon).\n"
		"\n"
		"Generic mount options are taken as a kernel filesystem takes them: the\n"
		"mount flags (ro, rw, nosuid, nodev, noexec, sync, dirsync, noatime,\n"
		"relatime, strictatime, nodiratime, lazytime, nosymfollow and their\n"
		"opposites) are applied; fstab's words (defaults, auto, noauto, user,\n"
		"users, _netdev, nofail, x-*, comment=...) are ignored.\n"
		"mount -o remount,OPTS MOUNTPOINT changes the mount flags of a mounted\n"
		"filesystem (root only); the daemon's own options stay as started.\n"
		"\n"
		"/etc/fstab:\n"
		"  /srv/vs.img  /mnt/vs  fuse.virtuscale  pool=1G,allow_other  0 0\n"
		"\n"
		"The mount has a control directory MOUNTPOINT/.virtuscale (not listed):\n"
		"  stats     pool and request counters, Prometheus text format\n"
		"  control   write 'flush' (write everything back) or 'evict' (empty the pool)\n");
}

static uint64_t image_bytes(const char *path)
{
	struct stat st;
	uint64_t n = 0;

	if (stat(path, &st) < 0)
		return 0;
	if (S_ISREG(st.st_mode))
		return (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode)) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (ioctl(fd, BLKGETSIZE64, &n) < 0)
				n = 0;
			close(fd);
		}
	}
	return n;
}

static uint64_t default_pool(const char *image)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
	uint64_t pool = ram / 4, img = image_bytes(image);

	if (img && img < pool)
		pool = img;
	return pool < MIN_POOL ? MIN_POOL : pool;
}

static unsigned default_threads(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	long n = cpus > 0 ? cpus * 4 : 8;
	return (unsigned)(n < 8 ? 8 : n > 64 ? 64 : n);
}

/* Errors the engine logs while the image is opened: counted so that we do
 * not say the same thing a second time in other words. */
static _Atomic unsigned mount_errors_logged;

/*
 * Where messages go. Until the mount is ready: stderr, so that whoever
 * started us sees why a mount failed. Then, in the foreground, still
 * stderr; in the background, -o log=FILE if given, else syslog (ident
 * virtuscale, facility daemon). The log file gets every message from the
 * start, each line with a timestamp; it is appended to, one write per line,
 * so threads do not interleave and logrotate's copytruncate works.
 */
static bool log_debug; /* -d: debug messages too */
static int log_fd = -1;	  /* -o log=FILE */
static bool in_background; /* detached: stderr is /dev/null */

static const char *level_word(enum vs_log_level level)
{
	switch (level) {
	case VS_LOG_ERR:
		return "error: ";
	case VS_LOG_WARN:
		return "warning: ";
	case VS_LOG_DEBUG:
		return "debug: ";
	default:
		return "";
	}
}

static void file_write(enum vs_log_level level, const char *msg)
{
	char line[700], when[40];
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	int n = snprintf(line, sizeof(line), "%s.%03ld virtuscale[%d]: %s%s\n", when,
			 ts.tv_nsec / 1000000, (int)getpid(), level_word(level), msg);
	if (n >= (int)sizeof(line))
		n = (int)sizeof(line) - 1, line[n - 1] = '\n';
	if (write(log_fd, line, (size_t)n) != n) {
		/* a full disk: nothing better to tell it to */
	}
}

static void stderr_sink(enum vs_log_level level, const char *msg)
{
	if (level == VS_LOG_DEBUG && !log_debug)
		return;
	if (level <= VS_LOG_ERR)
		mount_errors_logged++;
	fprintf(stderr, "virtuscale: %s\n", msg);
	if (log_fd >= 0)
		file_write(level, msg);
}

static void file_sink(enum vs_log_level level, const char *msg)
{
	if (level != VS_LOG_DEBUG || log_debug)
		file_write(level, msg);
}

static void syslog_sink(enum vs_log_level level, const char *msg)
{
	if (level != VS_LOG_DEBUG || log_debug)
		syslog((int)level, "%s", msg);
}

/* A line for the log only (the file, or syslog once detached), never the
 * terminal: that the mount started and ended belongs in a log, while a
 * mount that works says nothing on the terminal. */
__attribute__((format(printf, 1, 2))) static void log_record(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_fd >= 0)
		file_write(VS_LOG_INFO, msg);
	else if (in_background)
		syslog(LOG_INFO, "%s", msg);
}

static void explain_mount_error(const char *image, int r)
{
	if (mount_errors_logged && -r != EBUSY && -r != ENODEV)
		return;
	switch (-r) {
	case EBUSY:
		if (!mount_errors_logged)
			fprintf(stderr, "virtuscale: %s: image is in use\n", image);
		break;
	case EUCLEAN:
		fprintf(stderr,
			"virtuscale: %s: not a VirtuScale image, or its superblock is damaged\n",
			image);
		break;
	case EMEDIUMTYPE:
		fprintf(stderr, "virtuscale: %s: holds no filesystem; run mkfs.virtuscale\n",
			image);
		break;
	case EPROTONOSUPPORT:
		fprintf(stderr, "virtuscale: %s: made by an incompatible version\n", image);
		break;
	case ENODEV:
		fprintf(stderr, "virtuscale: exmap=on, but /dev/exmap is not available on this "
				"machine (use exmap=auto or exmap=off)\n");
		break;
	default:
		fprintf(stderr, "virtuscale: %s: %s\n", image, strerror(-r));
	}
}

/* ------------------------------------------------------------------ */
/* Daemon                                                             */

static int ready_fd = -1;

/* Fork; the parent waits for a status byte from daemon_ready and exits with
 * it (1 if the child died without one). Returns in the child. */
static int daemon_fork(void)
{
	int p[2];
	pid_t pid;
	unsigned char status = 1;

	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("virtuscale: pipe");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		perror("virtuscale: fork");
		return -1;
	}
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &status, 1) != 1) {
			int ws;
			waitpid(pid, &ws, 0);
			status = 1;
		}
		_exit(status);
	}
	close(p[0]);
	ready_fd = p[1];
	setsid();
	return 0;
}

static void daemon_ready(int status)
{
	unsigned char s = (unsigned char)status;

	if (ready_fd < 0)
		return;
	if (status == 0) {
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
		if (chdir("/") < 0) {
			/* nothing to do: we hold no relative paths */
		}
		in_background = true;
		if (log_fd >= 0) {
			vs_log_set_sink(file_sink);
		} else {
			openlog("virtuscale", LOG_PID, LOG_DAEMON);
			vs_log_set_sink(syslog_sink);
		}
	}
	if (write(ready_fd, &s, 1) != 1) {
		/* the parent is gone; nothing to tell */
	}
	close(ready_fd);
	ready_fd = -1;
}

/* Escape ',' and '\' for a -o value. */
static char *opt_escape(const char *prefix, const char *value)
{
	size_t n = strlen(prefix) + 2 * strlen(value) + 1;
	char *s = malloc(n), *p;
	if (!s)
		return NULL;
	p = stpcpy(s, prefix);
	for (const char *v = value; *v; v++) {
		if (*v == ',' || *v == '\\')
			*p++ = '\\';
		*p++ = *v;
	}
	*p = 0;
	return s;
}

static int add_opt(struct fuse_args *args, const char *prefix, const char *value)
{
	char *s = opt_escape(prefix, value);
	int r = s ? fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, s) : -1;
	free(s);
	return r;
}

/* ------------------------------------------------------------------ */

/* Tests: the fault injection options (see the top of the file). */
static struct bm_fault fault;

static int check_fault_options(const struct options *o, struct fs_config *cfg)
{
	int err = EIO;

	if (!o->fault_write_at && !o->fault_sync_at && !o->fault_err && !o->fault_sticky)
		return 0;
	if (o->fault_err && strcmp(o->fault_err, "ENOSPC") == 0) {
		err = ENOSPC;
	} else if (o->fault_err && strcmp(o->fault_err, "EIO") != 0) {
		fprintf(stderr, "virtuscale: fault_err=%s: use EIO or ENOSPC\n", o->fault_err);
		return -1;
	}
	bm_fault_init(&fault);
	fault.fail_write_err = fault.fail_sync_err = err;
	cfg->fault = &fault;
	cfg->checkpoint_ms = 24 * 3600 * 1000;
	return 0;
}

/* Arm the faults: counts start now that the mount is ready. */
static void arm_faults(const struct options *o)
{
	pthread_mutex_lock(&fault.mu);
	fault.writes = fault.syncs = 0;
	fault.fail_write_at = o->fault_write_at;
	fault.fail_sync_at = o->fault_sync_at;
	fault.fail_writes_after = fault.fail_syncs_after = o->fault_sticky != 0;
	pthread_mutex_unlock(&fault.mu);
	vs_log(VS_LOG_WARN, "fault injection (tests only): write %lu, sync %lu fail with %s%s",
	       o->fault_write_at, o->fault_sync_at, strerror(fault.fail_write_err),
	       o->fault_sticky ? ", and every one after" : "");
}

/* A whole number in [min, max], or a message naming the option, its range
 * and what the range means (hint), and -1. */
static int parse_number(const char *name, const char *val, unsigned long long min,
			unsigned long long max, const char *unit, const char *hint,
			unsigned long long *ret)
{
	unsigned long long v = 0;
	char *end = NULL;

	errno = 0;
	if (val && isdigit((unsigned char)val[0]))
		v = strtoull(val, &end, 10);
	if (!end || *end || errno || v < min || v > max) {
		fprintf(stderr, "virtuscale: %s=%s: use %s between %llu and %llu%s\n", name,
			val ? val : "", unit, min, max, hint);
		return -1;
	}
	*ret = v;
	return 0;
}

/* Every number the daemon takes, checked before anything is opened. */
static int check_numbers(struct options *o)
{
	unsigned long long v;

	if (o->threads_s) {
		if (parse_number("threads", o->threads_s, 1, MAX_THREADS, "a number of threads",
				 "", &v) < 0)
			return -1;
		o->threads = (unsigned)v;
	}
	if (o->max_write_s) {
		if (parse_number("max_write", o->max_write_s, MIN_MAX_WRITE, MAX_MAX_WRITE,
				 "a byte count", "", &v) < 0)
			return -1;
		o->max_write = (unsigned)v;
	}
	if (o->readahead_s) {
		if (parse_number("readahead", o->readahead_s, 0, MAX_READAHEAD_KIB,
				 "a size in KiB", " (0 keeps the kernel's 128)", &v) < 0)
			return -1;
		o->readahead_kib = (unsigned)v;
	}
	if (o->poll_s) {
		if (parse_number("poll", o->poll_s, 0, MAX_POLL_US, "microseconds",
				 " (0 turns polling off)", &v) < 0)
			return -1;
		o->poll_us = (unsigned)v;
	}
	if (o->uring_depth_s) {
		if (parse_number("uring_depth", o->uring_depth_s, 1, FS_URING_MAX_DEPTH,
				 "a number of requests", "", &v) < 0)
			return -1;
		o->uring_depth = (unsigned)v;
	}
	if (o->fault_write_at_s) {
		if (parse_number("fault_write_at", o->fault_write_at_s, 0, ULONG_MAX,
				 "a count of writes", "", &v) < 0)
			return -1;
		o->fault_write_at = (unsigned long)v;
	}
	if (o->fault_sync_at_s) {
		if (parse_number("fault_sync_at", o->fault_sync_at_s, 0, ULONG_MAX,
				 "a count of syncs", "", &v) < 0)
			return -1;
		o->fault_sync_at = (unsigned long)v;
	}
	if (o->timeout_s) {
		char *end = NULL;
		errno = 0;
		double t = isdigit((unsigned char)o->timeout_s[0]) ? strtod(o->timeout_s, &end) : -1;
		if (!end || *end || errno || !(t >= 0 && t <= MAX_TIMEOUT)) {
			fprintf(stderr,
				"virtuscale: timeout=%s: use seconds between 0 and %.0f "
				"(fractions allowed)\n",
				o->timeout_s, MAX_TIMEOUT);
			return -1;
		}
		o->timeout = t;
	}
	return 0;
}

/* A pool larger than the image is cut to the image (bm_open would do it
 * silently), and the threads bounded by what is left; that is said once
 * the image has opened (a file that is no image needs no word on its
 * pool). */
static void clamp_pool(struct options *o, struct fs_config *cfg)
{
	uint64_t img = image_bytes(o->image) / BM_PAGE_SIZE * BM_PAGE_SIZE;
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;

	if (img && cfg->pool_bytes > img) {
		cfg->pool_bytes = img;
		o->pool_clamped = true;
	}
	if (ram && cfg->pool_bytes > ram)
		fprintf(stderr,
			"virtuscale: pool=%s: more than this machine's memory (%llu MiB); the "
			"daemon may run out of memory when the pool fills\n",
			o->pool, (unsigned long long)(ram >> 20));
}

/* -o log=FILE: opened here, before the fork, relative to where we were
 * started, and last, so that a refused option leaves no file behind. */
static int open_log_file(struct options *o)
{
	if (!o->log_file)
		return 0;
	if (!*o->log_file) {
		fprintf(stderr, "virtuscale: log=: name the file to append messages to\n");
		return -1;
	}
	o->log_fd = open(o->log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	if (o->log_fd < 0) {
		fprintf(stderr, "virtuscale: log=%s: %s (name a file the daemon can append to)\n",
			o->log_file, strerror(errno));
		return -1;
	}
	return 0;
}

static int check_options(struct options *o, struct fs_config *cfg, struct fs_fuse_opts *fo)
{
	struct stat st;
	int r;

	if (!o->image || !o->mountpoint) {
		fprintf(stderr, "virtuscale: %s\n",
			o->image ? "no mount point given" : "no image or mount point given");
		usage(stderr);
		return -1;
	}
	if (check_numbers(o) < 0)
		return -1;
	cfg->image = o->image;
	cfg->read_only = o->read_only;
	if (o->pool) {
		r = bm_parse_size(o->pool, &cfg->pool_bytes);
		if (r < 0 || cfg->pool_bytes < MiB) {
			fprintf(stderr,
				"virtuscale: pool=%s: not a size of at least 1M "
				"(e.g. 512M, 2G)\n",
				o->pool);
			return -1;
		}
		clamp_pool(o, cfg);
	} else {
		cfg->pool_bytes = default_pool(o->image);
	}
	if (o->dirty_cache && strcmp(o->dirty_cache, "0") != 0 &&
	    (bm_parse_size(o->dirty_cache, &o->dirty_bytes) < 0 || o->dirty_bytes < MiB)) {
		fprintf(stderr, "virtuscale: dirty_cache=%s: not 0 or a size of at least 1M "
				"(e.g. 256M, 1G)\n", o->dirty_cache);
		return -1;
	}
	if (!o->exmap || strcmp(o->exmap, "auto") == 0) {
		cfg->backend = BM_BACKEND_AUTO;
	} else if (strcmp(o->exmap, "on") == 0) {
		cfg->backend = BM_BACKEND_EXMAP;
	} else if (strcmp(o->exmap, "off") == 0) {
		cfg->backend = BM_BACKEND_PLAIN;
	} else {
		fprintf(stderr, "virtuscale: exmap=%s: use auto, on or off\n", o->exmap);
		return -1;
	}
	if (o->evict) {
		if (strcmp(o->evict, "clock") != 0 && strcmp(o->evict, "s3clock") != 0) {
			fprintf(stderr, "virtuscale: evict=%s: use s3clock or clock\n", o->evict);
			return -1;
		}
		cfg->evict = strcmp(o->evict, "clock") == 0 ? BM_EVICT_CLOCK : BM_EVICT_S3CLOCK;
	}
	if (!o->cache || strcmp(o->cache, "both") == 0) {
		o->cache_mode = FS_CACHE_BOTH;
	} else if (strcmp(o->cache, "pool") == 0) {
		o->cache_mode = FS_CACHE_POOL;
	} else if (strcmp(o->cache, "kernel") == 0) {
		o->cache_mode = FS_CACHE_KERNEL;
	} else {
		fprintf(stderr, "virtuscale: cache=%s: use both, pool or kernel\n", o->cache);
		return -1;
	}
	if (!o->uring || strcmp(o->uring, "auto") == 0) {
		o->uring_mode = FS_URING_AUTO;
	} else if (strcmp(o->uring, "on") == 0) {
		o->uring_mode = FS_URING_ON;
	} else if (strcmp(o->uring, "off") == 0) {
		o->uring_mode = FS_URING_OFF;
	} else {
		fprintf(stderr, "virtuscale: uring=%s: use auto, on or off\n", o->uring);
		return -1;
	}
	char why[256];
	if (o->uring_mode == FS_URING_ON && fs_uring_check(o->uring_mode, why, sizeof(why)) < 0) {
		fprintf(stderr, "virtuscale: uring=on, but %s (use uring=auto or uring=off)\n", why);
		return -1;
	}
	bool threads_given = o->threads != 0;
	if (o->threads == 0)
		o->threads = default_threads();
	/* Each request holds at most two operations' worth of pages outside
	 * the pin budget (BM_MAX_HELD guards, a tree path): together they
	 * must leave most of the pool to eviction (engine/bm_load.c), or
	 * loads wait for frames that only a finished request can give. */
	uint64_t max_threads = cfg->pool_bytes / BM_PAGE_SIZE / (8 * BM_MAX_HELD);
	if (max_threads < 2)
		max_threads = 2;
	if (o->threads > max_threads) {
		if (threads_given)
			fprintf(stderr,
				"virtuscale: threads=%u: a pool of %llu MiB serves at most %llu "
				"threads at once; using %llu\n",
				o->threads, (unsigned long long)(cfg->pool_bytes >> 20),
				(unsigned long long)max_threads, (unsigned long long)max_threads);
		o->threads = (unsigned)max_threads;
	}
	fo->writeback_cache = true;
	if (o->writeback) {
		if (strcmp(o->writeback, "on") == 0) {
			fo->writeback_cache = true;
		} else if (strcmp(o->writeback, "off") == 0) {
			fo->writeback_cache = false;
		} else {
			fprintf(stderr, "virtuscale: writeback_cache=%s: use on or off\n",
				o->writeback);
			return -1;
		}
	}
	/* cache=pool opens files direct_io, whose writes the kernel sends at
	 * once and does not stamp: with its writeback cache negotiated it
	 * would still own mtime and ctime (and never take ours), so a write
	 * would leave them as they were. Without it the daemon stamps every
	 * write, mmap's write-backs included. */
	if (o->cache_mode == FS_CACHE_POOL && fo->writeback_cache) {
		if (o->writeback)
			fprintf(stderr, "virtuscale: writeback_cache=on: of no use with cache=pool "
					"(files are opened direct_io); turned off\n");
		fo->writeback_cache = false;
	}
	fo->timeout = o->timeout;
	fo->max_write = o->max_write ? o->max_write : (unsigned)MiB;
	fo->max_read = o->max_read;
	if (check_fault_options(o, cfg) < 0)
		return -1;
	if (stat(o->mountpoint, &st) < 0) {
		fprintf(stderr, "virtuscale: %s: %s\n", o->mountpoint, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "virtuscale: %s: not a directory\n", o->mountpoint);
		return -1;
	}
	/* Absolute: the daemon leaves its working directory for "/". */
	char *abs = realpath(o->mountpoint, NULL);
	if (abs) {
		free(o->mountpoint);
		o->mountpoint = abs;
	}
	return open_log_file(o);
}

/*
 * The mount's read-ahead (root only; a user mount keeps the kernel's, and a
 * failure changes nothing but speed). It must be set after the kernel has
 * applied our INIT reply, which would undo it: a statfs of the mount waits
 * for exactly that. So a thread does the statfs, then writes it.
 *
 * Read-ahead. The kernel gives a FUSE mount 128 KiB of read-ahead and lets
 * the daemon only lower it, so a sequential read arrives as 128 KiB
 * requests: eight round trips per MiB where one would do (measured: a cold
 * 400 MiB read took half the daemon CPU and 1.3-1.4x the speed at 1 MiB).
 *
 * The written data the kernel may hold is fs/dirty.c's (dirty_cache).
 */
struct bdi_job {
	char *mountpoint;
	unsigned readahead_kib; /* 0: leave it */
	char *image;		/* non-NULL: note the umount helper (umount_note) */
};

static int bdi_write(const struct stat *st, const char *knob, unsigned long long v)
{
	char path[96], val[32];
	int n = snprintf(val, sizeof(val), "%llu\n", v);
	int r = 0;

	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/%s", major(st->st_dev),
		 minor(st->st_dev), knob);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, val, (size_t)n) != n)
		r = -errno;
	if (fd >= 0 && close(fd) != 0 && r == 0)
		r = -errno;
	if (r < 0)
		vs_log(VS_LOG_DEBUG, "%s stays at the kernel's: %s", path, strerror(-r));
	return r;
}

#define UMOUNT_HELPER "/sbin/umount.fuse.virtuscale"

extern char **environ;

/* @s as the mount tables write it: space, tab, newline and backslash in
 * octal. */
static void mtab_escape(const char *s, char *out, size_t cap)
{
	size_t n = 0;
	for (; *s && n + 5 < cap; s++) {
		if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\\')
			n += (size_t)snprintf(out + n, cap - n, "\\%03o", (unsigned char)*s);
		else
			out[n++] = *s;
	}
	out[n] = 0;
}

/*
 * umount(8) of a FUSE mount runs /sbin/umount.fuse.virtuscale, which waits
 * until this daemon has written everything back and released the image,
 * only when libmount's table of userspace options (/run/mount/utab) says
 * helper=fuse.virtuscale for the mount: mount(8) writes that for an fstab
 * line that has it, but a daemon started by hand is in no table. So, as
 * root and when the helper is installed, the daemon adds the entry itself
 * the way mount(8) does (mount --fake: no mount(2), no mount helper run),
 * once its mount is live. Then `umount MOUNTPOINT` waits here too. A
 * failure costs only that wait (logged at debug level).
 */
static void umount_note(const char *image, const char *mountpoint)
{
	char want[PATH_MAX * 4 + 16], esc[PATH_MAX * 4], line[PATH_MAX * 8];
	FILE *f = fopen("/run/mount/utab", "re");

	mtab_escape(mountpoint, esc, sizeof(esc));
	snprintf(want, sizeof(want), "TARGET=%s ", esc);
	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, want) && strstr(line, "helper=")) {
			fclose(f);
			return; /* mount(8) did it (fstab) */
		}
	}
	if (f)
		fclose(f);
	char *argv[] = {"mount", "--fake", "-i", "--no-canonicalize", "-t", "fuse.virtuscale",
			"-o", "helper=fuse.virtuscale", (char *)image, (char *)mountpoint, NULL};
	pid_t pid;
	int st = 0;
	if (posix_spawnp(&pid, "mount", NULL, NULL, argv, environ) != 0 ||
	    waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		vs_log(VS_LOG_DEBUG, "%s: not noted for umount.fuse.virtuscale: umount will not "
				     "wait for the daemon (vsctl unmount does)", mountpoint);
}

static void *bdi_main(void *arg)
{
	struct bdi_job *j = arg;
	struct statfs sf;
	struct stat st;

	if (statfs(j->mountpoint, &sf) == 0 && stat(j->mountpoint, &st) == 0) {
		if (j->readahead_kib)
			bdi_write(&st, "read_ahead_kb", j->readahead_kib);
		if (j->image)
			umount_note(j->image, j->mountpoint);
	}
	free(j->mountpoint);
	free(j->image);
	free(j);
	return NULL;
}

/* After the mount is live (a thread: see above): the read-ahead, and the
 * note for umount(8) when root and the helper is installed. */
static void bdi_start(const char *mountpoint, const char *image, unsigned readahead_kib)
{
	pthread_attr_t attr;
	pthread_t tid;
	bool note = geteuid() == 0 && access(UMOUNT_HELPER, X_OK) == 0;

	if (readahead_kib == 0 && !note)
		return;
	struct bdi_job *j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->mountpoint = strdup(mountpoint);
	j->readahead_kib = readahead_kib;
	j->image = note ? realpath(image, NULL) : NULL;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (!j->mountpoint || pthread_create(&tid, &attr, bdi_main, j) != 0) {
		free(j->mountpoint);
		free(j->image);
		free(j);
	}
	pthread_attr_destroy(&attr);
}

/* ------------------------------------------------------------------ */
/* Mount flags and remount                                            */

/* libfuse mounts with nosuid,nodev unless told suid or dev. */
#define LIBFUSE_DEFAULT_FLAGS (MS_NOSUID | MS_NODEV)

/* The MS_* flags the generic options ask for on top of base. */
static unsigned long wanted_flags(const struct options *o, unsigned long base)
{
	unsigned long f = (base & ~o->mnt_touched) | o->mnt_flags;
	return o->read_only ? f | MS_RDONLY : f & ~MS_RDONLY;
}

/* mount(2) MS_REMOUNT, as mount(8) does it for a kernel filesystem: the
 * superblock flags (ro, sync, dirsync, lazytime) and the mount's (nosuid,
 * nodev, noexec, atime) together. The FUSE daemon serving the mount writes
 * back what the kernel holds before a switch to read-only. */
static int remount_flags(const char *mountpoint, unsigned long flags)
{
	return mount(NULL, mountpoint, NULL, MS_REMOUNT | flags, NULL) < 0 ? -errno : 0;
}

struct late_job {
	char *mountpoint;
	const char *first; /* the first option that needed it, for the message */
	unsigned long flags;
};

static void *late_flags_main(void *arg)
{
	struct late_job *j = arg;
	struct statfs sf;

	/* The statfs returns once the kernel has our INIT reply. */
	if (statfs(j->mountpoint, &sf) == 0) {
		int r = remount_flags(j->mountpoint, j->flags);
		if (r < 0)
			vs_log(VS_LOG_WARN, "%s%s: not applied to %s: %s%s", j->first,
			       strcmp(j->first, "lazytime") ? " (and the atime options after it)" : "",
			       j->mountpoint, strerror(-r),
			       r == -EPERM ? " (setting mount flags libfuse does not know needs root)"
					   : "");
	}
	free(j->mountpoint);
	free(j);
	return NULL;
}

/* Set the flags libfuse could not pass at mount time (o->mnt_late). */
static void late_flags_start(const struct options *o)
{
	pthread_attr_t attr;
	pthread_t tid;

	if (!o->mnt_late)
		return;
	struct late_job *j = malloc(sizeof(*j));
	if (!j)
		return;
	j->mountpoint = strdup(o->mountpoint);
	j->first = o->mnt_late;
	j->flags = wanted_flags(o, LIBFUSE_DEFAULT_FLAGS);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (!j->mountpoint || pthread_create(&tid, &attr, late_flags_main, j) != 0) {
		free(j->mountpoint);
		free(j);
	}
	pthread_attr_destroy(&attr);
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *d = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = 0;
}

struct mount_entry {
	char fstype[64];
	char source[PATH_MAX];
	char super_opts[1024]; /* "rw,user_id=0,..." */
};

/* The topmost mount on the directory mountpoint (absolute), from
 * /proc/self/mountinfo. Returns 0, or -ENOENT when nothing is mounted. */
static int find_mount(const char *mountpoint, struct mount_entry *ret)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		/* id parent maj:min root mountpoint options [tags...] - type source super */
		char *save = NULL, *field[5];
		char *sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = 0;
		field[0] = strtok_r(line, " ", &save);
		for (int i = 1; i < 5 && field[i - 1]; i++)
			field[i] = strtok_r(NULL, " ", &save);
		if (!field[0] || !field[4])
			continue;
		unescape_octal(field[4]);
		if (strcmp(field[4], mountpoint) != 0)
			continue;
		char *type = strtok_r(sep + 3, " \n", &save);
		char *source = strtok_r(NULL, " \n", &save);
		char *super = strtok_r(NULL, " \n", &save);
		if (!type || !source || !super)
			continue;
		unescape_octal(source);
		snprintf(ret->fstype, sizeof(ret->fstype), "%s", type);
		snprintf(ret->source, sizeof(ret->source), "%s", source);
		snprintf(ret->super_opts, sizeof(ret->super_opts), "%s", super);
		r = 0; /* and on: a later line is a mount on top */
	}
	free(line);
	fclose(f);
	return r;
}

static bool has_token(const char *list, const char *token)
{
	size_t n = strlen(token);
	for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (strncmp(p, token, n) == 0 && (p[n] == ',' || p[n] == 0))
			return true;
	return false;
}

/* A daemon that opened its image read-only holds a shared lock on it
 * (bm_open); one that writes holds it exclusively. */
static bool image_held_read_only(const char *image)
{
	int fd = open(image, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true; /* cannot tell: assume the worst */
	bool shared = flock(fd, LOCK_SH | LOCK_NB) == 0;
	close(fd);
	return shared;
}

/* A FUSE option given at a remount must be what the mount has already:
 * the kernel cannot change it on a live mount. */
static bool fuse_opt_unchanged(const char *opt, const struct mount_entry *m)
{
	if (strncmp(opt, "fsname=", 7) == 0)
		return strcmp(opt + 7, m->source) == 0;
	if (strncmp(opt, "subtype=", 8) == 0)
		return strncmp(m->fstype, "fuse.", 5) == 0 && strcmp(opt + 8, m->fstype + 5) == 0;
	if (strcmp(opt, "allow_root") == 0)
		return has_token(m->super_opts, "allow_other");
	if (strcmp(opt, "auto_unmount") == 0 || strstr(opt, "context="))
		return true; /* not shown; libfuse's or the LSM's business */
	return has_token(m->super_opts, opt);
}

/*
 * `mount -o remount,ro M` on a fuse.virtuscale mount: mount(8) runs
 * mount.fuse3, which starts us with the mount's options from mountinfo
 * (rw/ro, relatime, user_id=, ...), fstab's, and the new ones, plus
 * `remount`. No second daemon may start: we apply what a remount can
 * change, the mount flags, with mount(2) as mount(8) would for a kernel
 * filesystem, and leave the running daemon alone. What it cannot change:
 *
 *   - a FUSE option other than the mount has (allow_other, max_read, ...):
 *     refused, nothing changed (exit 1);
 *   - rw when the daemon opened the image read-only: refused likewise;
 *   - the daemon's own options (pool, threads, ...): fstab repeats them at
 *     every remount, so each gets a line saying it is kept as it was, and
 *     the remount goes on.
 */
static int remount(struct options *o)
{
	const char *dir = o->mountpoint ? o->mountpoint : o->image;
	struct mount_entry m;
	char *mp;
	int r;

	if (!dir) {
		fprintf(stderr, "virtuscale: remount: name the mount point\n");
		return 1;
	}
	mp = realpath(dir, NULL);
	if (!mp || find_mount(mp, &m) < 0) {
		fprintf(stderr, "virtuscale: remount: %s is not a mount point\n", dir);
		free(mp);
		return 1;
	}
	if (strcmp(m.fstype, "fuse.virtuscale") != 0) {
		fprintf(stderr, "virtuscale: remount: %s is a %s mount, not a VirtuScale one\n", mp,
			m.fstype);
		goto refused;
	}
	for (unsigned i = 0; i < o->nfuse_opts; i++) {
		if (!fuse_opt_unchanged(o->fuse_opts[i], &m)) {
			fprintf(stderr,
				"virtuscale: remount: %s: cannot change on a mounted FUSE "
				"filesystem; unmount and mount again (nothing changed)\n",
				o->fuse_opts[i]);
			goto refused;
		}
	}
	if (o->no_default_permissions && has_token(m.super_opts, "default_permissions")) {
		fprintf(stderr, "virtuscale: remount: no_default_permissions: cannot change on a "
				"mounted FUSE filesystem; unmount and mount again (nothing changed)\n");
		goto refused;
	}
	const char *image = o->mountpoint ? o->image : m.source;
	if (!o->read_only && has_token(m.super_opts, "ro") && image_held_read_only(image)) {
		fprintf(stderr,
			"virtuscale: remount: rw: the daemon serving %s opened %s read-only; "
			"unmount and mount again without ro (nothing changed)\n",
			mp, image);
		goto refused;
	}
	const struct {
		const char *name;
		const char *value;
	} kept[] = {
	    {"pool", o->pool},
	    {"exmap", o->exmap},
	    {"evict", o->evict},
	    {"cache", o->cache},
	    {"threads", o->threads_s},
	    {"writeback_cache", o->writeback},
	    {"timeout", o->timeout_s},
	    {"max_write", o->max_write_s},
	    {"readahead", o->readahead_s},
	    {"poll", o->poll_s},
	    {"uring", o->uring},
	    {"uring_depth", o->uring_depth_s},
	    {"dirty_cache", o->dirty_cache},
	    {"log", o->log_file},
	};
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		if (kept[i].value)
			fprintf(stderr,
				"virtuscale: remount: %s=%s: not changed; the running daemon keeps "
				"what it was started with (unmount and mount again to change it)\n",
				kept[i].name, kept[i].value);
	r = remount_flags(mp, wanted_flags(o, 0));
	if (r < 0) {
		fprintf(stderr, "virtuscale: remount of %s: %s%s\n", mp, strerror(-r),
			r == -EPERM ? " (a remount needs root)" : "");
		goto refused;
	}
	free(mp);
	return 0;
refused:
	free(mp);
	return 1;
}

static int serve(struct fuse_session *se, const struct options *o)
{
	if (o->single)
		return fuse_session_loop(se);
	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	if (!lc)
		return -1;
	fuse_loop_cfg_set_max_threads(lc, o->threads);
	/* Idle workers stay: each one carries a buffer-manager context (an
	 * io_uring ring among others) that is costly to build again. */
	fuse_loop_cfg_set_idle_threads(lc, o->threads);
	fuse_loop_cfg_set_clone_fd(lc, 0);
	int r = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	return r;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {.timeout = DEFAULT_TIMEOUT, .log_fd = -1};
	struct fs_config cfg = {0};
	struct fs_fuse ctx = {0};
	struct fuse_session *se = NULL;
	int ret = 1, r;

	if (fuse_opt_parse(&args, &o, opt_table, opt_proc) < 0 || o.bad)
		goto out_args;
	if (o.help) {
		usage(stdout);
		ret = 0;
		goto out_args;
	}
	if (o.version) {
		printf("virtuscale %s (libfuse %s)\n", VS_VERSION, fuse_pkgversion());
		ret = 0;
		goto out_args;
	}
	if (o.remount) {
		ret = remount(&o);
		goto out_args;
	}
	for (unsigned i = 0; i < o.nfuse_opts; i++) {
		if (in_list(o.fuse_opts[i], remount_prefixes, true)) {
			fprintf(stderr, "virtuscale: %s: libfuse sets it; mount(8) passes it only "
					"with remount\n", o.fuse_opts[i]);
			goto out_args;
		}
	}
	if (check_options(&o, &cfg, &ctx.opts) < 0)
		goto out_args;
	log_fd = o.log_fd;
	/* The image's absolute name: mount(8) hands it back at a remount. */
	char *abs_image = realpath(o.image, NULL);
	if ((o.read_only && add_opt(&args, "", "ro")) ||
	    (!o.no_default_permissions && add_opt(&args, "", "default_permissions")) ||
	    (!o.have_fsname && add_opt(&args, "fsname=", abs_image ? abs_image : o.image)) ||
	    (!o.have_subtype && add_opt(&args, "subtype=", "virtuscale"))) {
		fprintf(stderr, "virtuscale: out of memory\n");
		free(abs_image);
		goto out_args;
	}
	free(abs_image);

	if (!o.foreground && log_fd < 0 && access("/dev/log", F_OK) != 0)
		fprintf(stderr, "virtuscale: no syslog on this machine (/dev/log): messages of the "
				"daemon in the background are lost; use -o log=FILE to keep them\n");
	if (!o.foreground && daemon_fork() < 0)
		goto out_args;

	log_debug = o.debug;
	vs_log_set_sink(stderr_sink);
	r = fs_mount(&cfg, &ctx.fs);
	if (r < 0) {
		explain_mount_error(o.image, r);
		goto out_ready;
	}
	if (o.pool_clamped)
		vs_log(VS_LOG_WARN, "pool=%s: more than the image holds (%llu MiB); using %llu MiB",
		       o.pool, (unsigned long long)(cfg.pool_bytes >> 20),
		       (unsigned long long)(cfg.pool_bytes >> 20));
	if (cfg.fault)
		arm_faults(&o);
	fs_cache_mode_set(o.cache_mode);
	se = fuse_session_new(&args, &fs_fuse_ops, sizeof(fs_fuse_ops), &ctx);
	if (!se) {
		fprintf(stderr, "virtuscale: cannot start a FUSE session (bad options?)\n");
		goto out_fs;
	}
	ctx.se = se;
	ctx.mountpoint = o.mountpoint;
	if (fuse_set_signal_handlers(se) != 0) {
		fprintf(stderr, "virtuscale: cannot install signal handlers\n");
		goto out_session;
	}
	if (fuse_session_mount(se, o.mountpoint) != 0) {
		fprintf(stderr, "virtuscale: cannot mount on %s\n", o.mountpoint);
		goto out_signals;
	}
	if (fs_uring_setup(se, o.uring_mode, o.uring_depth, bm_pool_pages(fs_bm(ctx.fs))) < 0) {
		fprintf(stderr, "virtuscale: uring=on: cannot set up FUSE over io_uring\n");
		goto out_unmount;
	}
	if (fs_wire_attach(se, o.have_poll ? o.poll_us : DEFAULT_POLL_US) != 0) {
		fprintf(stderr, "virtuscale: cannot set up the FUSE session's io\n");
		goto out_unmount;
	}
	daemon_ready(0);
	log_record("mounted %s on %s (pool %llu MiB, %u threads%s%s%s)", o.image, o.mountpoint,
		   (unsigned long long)(bm_pool_pages(fs_bm(ctx.fs)) * BM_PAGE_SIZE >> 20),
		   o.single ? 1 : o.threads, o.read_only ? ", read-only" : "",
		   o.cache_mode != FS_CACHE_BOTH ? ", cache=" : "",
		   o.cache_mode != FS_CACHE_BOTH ? fs_cache_mode_name(o.cache_mode) : "");
	late_flags_start(&o);
	bdi_start(o.mountpoint, o.image,
		  o.have_readahead ? o.readahead_kib : DEFAULT_READAHEAD_KIB);
	/* The written data the kernel may hold: see fs/dirty.c. */
	ctx.opts.dirty_bytes =
	    o.dirty_cache ? o.dirty_bytes : bm_pool_pages(fs_bm(ctx.fs)) * BM_PAGE_SIZE;
	ctx.opts.dirty_capped = o.dirty_cache != NULL;
	fs_dirty_fit(&ctx);
	/* A signal ends the loop as well as an unmount does: both are fine. */
	ret = serve(se, &o) < 0 ? 1 : 0;
	fs_wire_detach();
	fs_uring_stop();
	if (fs_uring_failed())
		ret = 1;

out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	if (fs_unmount(ctx.fs) < 0)
		ret = 1;
	if (se)
		log_record("%s: %s", o.image,
			   ret ? "stopped with errors (see the messages above)"
			       : "unmounted; everything is written back");
out_ready:
	daemon_ready(ret ? ret : 0);
out_args:
	fuse_opt_free_args(&args);
	free(o.image);
	free(o.mountpoint);
	free(o.pool);
	free(o.exmap);
	free(o.evict);
	free(o.cache);
	free(o.writeback);
	free(o.dirty_cache);
	free(o.fault_err);
	free(o.threads_s);
	free(o.max_write_s);
	free(o.readahead_s);
	free(o.poll_s);
	free(o.uring);
	free(o.uring_depth_s);
	free(o.timeout_s);
	free(o.fault_write_at_s);
	free(o.fault_sync_at_s);
	free(o.log_file);
	for (unsigned i = 0; i < o.nfuse_opts; i++)
		free(o.fuse_opts[i]);
	if (o.log_fd >= 0)
		close(o.log_fd);
	if (cfg.fault)
		bm_fault_fini(cfg.fault);
	return ret;
}
