/*
 * vsctl - control a VirtuScale mount and report per-file pool residency.
 *
 *   vsctl MOUNTPOINT flush|evict|checkpoint|stats|unmount
 *   vsctl residency [-r] PATH...
 *
 * Options go anywhere (getopt_long permutes), so `vsctl /mnt/vs evict -v`
 * is `vsctl -v /mnt/vs evict`.  MOUNTPOINT must be the root of a
 * fuse.virtuscale mount (statsfile.h: sf_ctl_open), checked before anything
 * is written: a directory dressed up as one is refused.
 *
 * Commands go to MOUNTPOINT/.virtuscale/control as the word followed by a
 * newline, exactly what `echo evict > MOUNTPOINT/.virtuscale/control` writes,
 * so the daemon's error (returned by write()) is what we report.  Residency
 * comes from the virtual xattr user.virtuscale.residency ("RESIDENT TOTAL",
 * in pages) that the daemon computes on each getxattr.
 */
#include "tools/statsfile.h"
#include "tools/unmount.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROG "vsctl"

static void usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " [-v] [-t SECONDS] MOUNTPOINT COMMAND\n"
		   "       " PROG " residency [-r] PATH...\n"
		   "\n"
		   "Commands (written to MOUNTPOINT/.virtuscale/control):\n"
		   "  flush        write every dirty pool page back to the backing store\n"
		   "  evict        write back, then drop every page the pool can drop\n"
		   "  checkpoint   take a checkpoint of the write-ahead log (refused with\n"
		   "               EINVAL while the filesystem has no log)\n"
		   "  stats        print MOUNTPOINT/.virtuscale/stats\n"
		   "  unmount      unmount, then wait until the daemon has written everything\n"
		   "               back and released the image (at most -t SECONDS, default\n"
		   "               %.0f): the image can be checked, copied or mounted again\n"
		   "               as soon as this returns (umount does the same through\n"
		   "               umount.fuse.virtuscale; fusermount3 -u does not wait)\n"
		   "\n"
		   "residency: for each file, how many of its pages are in the pool now, like\n"
		   "fincore or vmtouch, and a total line. With -r, directories are walked\n"
		   "(symlinks not followed, other mounts not entered, .virtuscale skipped).\n"
		   "Columns: RESIDENT and PAGES (4 KiB pages), PERCENT, RES (resident bytes),\n"
		   "SIZE (file size), FILE.\n"
		   "\n"
		   "Options:\n"
		   "  -v, --verbose     after flush/evict/checkpoint, show the pool's resident\n"
		   "                    and dirty pages before and after\n"
		   "  -t, --timeout SECONDS  (unmount) how long to wait for the daemon\n"
		   "  -r, --recursive   (residency) descend into directories\n"
		   "  -h, --help        this help\n"
		   "\n"
		   "Examples:\n"
		   "  " PROG " /mnt/vs evict                 cold pool for the next benchmark\n"
		   "  " PROG " -v /mnt/vs flush\n"
		   "  " PROG " /mnt/vs stats | grep fuse_requests\n"
		   "  " PROG " /mnt/vs unmount && fsck.virtuscale -n /srv/vs.img\n"
		   "  " PROG " residency /mnt/vs/db/*.sst\n"
		   "  " PROG " residency -r /mnt/vs/src\n"
		   "\n"
		   "A mountpoint literally named 'residency' must be written ./residency.\n"
		   "\n"
		   "Exit status: 0 ok, 1 runtime error (not a VirtuScale mount or file, the\n"
		   "daemon refused the command, a file could not be read, the unmount failed\n"
		   "or timed out), 2 usage error.\n",
		UM_DEFAULT_TIMEOUT);
}

/* ------------------------------------------------------------------ */
/* Control commands                                                   */

static void explain_control_error(const char *cmd, int err)
{
	if (err == -EINVAL && strcmp(cmd, "checkpoint") == 0)
		fprintf(stderr,
			PROG ": checkpoint: refused by the daemon (EINVAL): this filesystem has "
			     "no write-ahead log yet, so there is nothing to checkpoint\n");
	else if (err == -EINVAL)
		fprintf(stderr,
			PROG ": %s: the daemon rejected the command (EINVAL); is it an "
			     "older daemon?\n",
			cmd);
	else if (err == -EACCES || err == -EPERM)
		fprintf(stderr,
			PROG ": %s: permission denied (the control file is writable by "
			     "root only)\n",
			cmd);
	else
		fprintf(stderr, PROG ": %s: %s\n", cmd, strerror(-err));
}

static int send_control(int ctl, const char *cmd)
{
	char buf[64];
	int fd, len, r = 0;
	ssize_t n;

	fd = sf_ctl_open_file(ctl, SF_CONTROL_NAME, O_WRONLY);
	if (fd < 0)
		return fd;
	len = snprintf(buf, sizeof(buf), "%s\n", cmd);
	do
		n = write(fd, buf, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		r = -errno;
	else if (n != len)
		r = -EIO;
	/* A daemon may also answer at flush time (close). */
	if (close(fd) != 0 && r == 0 && errno != EINTR)
		r = -errno;
	return r;
}

static void print_levels(const char *mnt, const char *when)
{
	struct sf_snap s = {0};
	struct sf_view v;

	if (sf_read_mount(mnt, &s) < 0)
		return;
	sf_view_compute(NULL, &s, &v);
	printf("%-7s resident %.0f dirty %.0f of %.0f pages\n", when, v.resident, v.dirty,
	       v.capacity);
	sf_snap_free(&s);
}

static int cat_stats(int ctl)
{
	char buf[8192];
	ssize_t n;
	int fd;

	fd = sf_ctl_open_file(ctl, SF_STATS_NAME, O_RDONLY);
	if (fd < 0)
		return fd;
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			close(fd);
			return (int)n;
		}
		if (fwrite(buf, 1, n, stdout) != (size_t)n)
			break;
	}
	close(fd);
	return 0;
}

static int run_unmount(const char *mnt, bool verbose, double timeout)
{
	struct um_opts o = {
	    .prog = PROG, .timeout = timeout, .verbose = verbose, .require_vs = true};
	char *abs = realpath(mnt, NULL);
	int r;

	if (!abs) {
		sf_mount_error(PROG, mnt, -errno);
		return SF_EXIT_RUNTIME;
	}
	/* The mount point itself (umount2 follows no symlink), checked again
	 * by um_unmount. */
	r = um_unmount(abs, &o);
	free(abs);
	return r == 0 ? SF_EXIT_OK : SF_EXIT_RUNTIME;
}

static int run_command(const char *mnt, const char *cmd, bool verbose, double timeout)
{
	int ctl, r;

	if (strcmp(cmd, "flush") != 0 && strcmp(cmd, "evict") != 0 &&
	    strcmp(cmd, "checkpoint") != 0 && strcmp(cmd, "stats") != 0 &&
	    strcmp(cmd, "unmount") != 0) {
		fprintf(stderr, PROG ": unknown command '%s'\nTry '" PROG " --help'.\n", cmd);
		return SF_EXIT_USAGE;
	}
	if (strcmp(cmd, "unmount") == 0)
		return run_unmount(mnt, verbose, timeout);
	/* Everything below goes through this one checked directory fd: the
	 * path is not looked up again. */
	ctl = sf_ctl_open(mnt);
	if (ctl < 0) {
		sf_mount_error(PROG, mnt, ctl);
		return SF_EXIT_RUNTIME;
	}
	if (strcmp(cmd, "stats") == 0) {
		r = cat_stats(ctl);
		close(ctl);
		if (r < 0) {
			sf_mount_error(PROG, mnt, r);
			return SF_EXIT_RUNTIME;
		}
		return SF_EXIT_OK;
	}
	if (verbose)
		print_levels(mnt, "before:");
	r = send_control(ctl, cmd);
	close(ctl);
	if (r == -ELOOP || r == -EBADFD) {
		sf_mount_error(PROG, mnt, r);
		return SF_EXIT_RUNTIME;
	}
	if (r < 0) {
		explain_control_error(cmd, r);
		return SF_EXIT_RUNTIME;
	}
	if (verbose)
		print_levels(mnt, "after:");
	return SF_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* Residency                                                          */

/* nftw() passes no user pointer, hence file-scope state for one run. */
static struct {
	uint64_t resident, total, files;
	bool failed;
	bool header_done;
} rs;

static void print_row(uint64_t res, uint64_t total, double size, const char *name)
{
	char pct[16], resb[16], sizeb[16];

	if (!rs.header_done) {
		printf("%10s %10s %7s %7s %7s  %s\n", "RESIDENT", "PAGES", "PERCENT", "RES", "SIZE",
		       "FILE");
		rs.header_done = true;
	}
	if (total)
		snprintf(pct, sizeof(pct), "%.1f%%", 100.0 * res / total);
	else
		snprintf(pct, sizeof(pct), "-");
	sf_human_bytes((double)res * SF_PAGE_SIZE, resb, sizeof(resb));
	sf_human_bytes(size, sizeb, sizeof(sizeb));
	printf("%10llu %10llu %7s %7s %7s  %s\n", (unsigned long long)res,
	       (unsigned long long)total, pct, resb, sizeb, name);
}

static void residency_error(const char *path, int err)
{
	if (err == -ENODATA || err == -ENOTSUP || err == -EOPNOTSUPP)
		fprintf(stderr, PROG ": %s: not a file on a VirtuScale mount (no %s xattr)\n", path,
			SF_RESIDENCY_XATTR);
	else if (err == -EBADMSG)
		fprintf(stderr, PROG ": %s: malformed %s value\n", path, SF_RESIDENCY_XATTR);
	else
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(-err));
	rs.failed = true;
}

static void residency_file(const char *path, const struct stat *st)
{
	uint64_t res, total;
	int r = sf_residency_get(path, &res, &total);

	if (r < 0) {
		residency_error(path, r);
		return;
	}
	rs.resident += res;
	rs.total += total;
	rs.files++;
	print_row(res, total, (double)st->st_size, path);
}

static int walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	switch (type) {
	case FTW_D:
		/* The pseudo-files carry no residency and would only add
		 * errors to a walk of the whole mount. */
		if (ftw->level > 0 && strcmp(path + ftw->base, ".virtuscale") == 0)
			return FTW_SKIP_SUBTREE;
		break;
	case FTW_F:
		if (S_ISREG(st->st_mode))
			residency_file(path, st);
		break;
	case FTW_DNR:
		fprintf(stderr, PROG ": %s: cannot read directory\n", path);
		rs.failed = true;
		break;
	case FTW_NS:
		fprintf(stderr, PROG ": %s: cannot stat\n", path);
		rs.failed = true;
		break;
	default: /* symlinks and the like: not pool files */
		break;
	}
	return FTW_CONTINUE;
}

static int run_residency(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"recursive", no_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool recursive = false;
	char pct[16], resb[16];
	int c, i;

	optind = 1;
	while ((c = getopt_long(argc, argv, "rh", longopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			recursive = true;
			break;
		case 'h':
			usage(stdout);
			return SF_EXIT_OK;
		default:
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return SF_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, PROG ": residency: expected PATH...\nTry '" PROG " --help'.\n");
		return SF_EXIT_USAGE;
	}
	for (i = optind; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) != 0) {
			residency_error(argv[i], -errno);
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			if (!recursive) {
				fprintf(stderr, PROG ": %s: is a directory (use -r)\n", argv[i]);
				rs.failed = true;
				continue;
			}
			if (nftw(argv[i], walk_cb, 32, FTW_PHYS | FTW_MOUNT | FTW_ACTIONRETVAL) ==
			    -1) {
				residency_error(argv[i], -errno);
			}
			continue;
		}
		if (!S_ISREG(st.st_mode)) {
			fprintf(stderr, PROG ": %s: not a regular file\n", argv[i]);
			rs.failed = true;
			continue;
		}
		residency_file(argv[i], &st);
	}
	if (rs.total)
		snprintf(pct, sizeof(pct), "%.1f%%", 100.0 * rs.resident / rs.total);
	else
		snprintf(pct, sizeof(pct), "-");
	sf_human_bytes((double)rs.resident * SF_PAGE_SIZE, resb, sizeof(resb));
	if (rs.header_done || !rs.failed)
		printf("%10llu %10llu %7s %7s %7s  total (%llu file%s)\n",
		       (unsigned long long)rs.resident, (unsigned long long)rs.total, pct, resb, "",
		       (unsigned long long)rs.files, rs.files == 1 ? "" : "s");
	if (fflush(stdout) != 0)
		return SF_EXIT_RUNTIME;
	return rs.failed ? SF_EXIT_RUNTIME : SF_EXIT_OK;
}

/* Index of the first argument that is not an option (or an option's
 * value), -1 if none: "residency" there takes the rest of the line with
 * its own options. */
static int first_operand(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		size_t n = strlen(a);

		if (strcmp(a, "--") == 0)
			return i + 1 < argc ? i + 1 : -1;
		if (a[0] != '-' || n == 1)
			return i;
		/* -t SECONDS, --timeout SECONDS, -vt SECONDS */
		if (strcmp(a, "--timeout") == 0 || (a[1] != '-' && a[n - 1] == 't'))
			i++;
	}
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"verbose", no_argument, NULL, 'v'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	double timeout = UM_DEFAULT_TIMEOUT;
	bool verbose = false;
	int c;

	c = first_operand(argc, argv);
	if (c > 0 && strcmp(argv[c], "residency") == 0)
		return run_residency(argc - c, argv + c);
	/* Options anywhere, as getopt_long permutes by default; "--" ends
	 * them (a mountpoint named "-x"). */
	while ((c = getopt_long(argc, argv, "vt:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'v':
			verbose = true;
			break;
		case 't':
			if (sf_parse_interval(optarg, &timeout) < 0) {
				fprintf(stderr,
					PROG ": -t %s: expected a positive number of seconds\n"
					     "Try '" PROG " --help'.\n",
					optarg);
				return SF_EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return SF_EXIT_OK;
		default:
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return SF_EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, PROG ": expected MOUNTPOINT COMMAND\nTry '" PROG " --help'.\n");
		return SF_EXIT_USAGE;
	}
	return run_command(argv[optind], argv[optind + 1], verbose, timeout);
}
