/*
 * umount_helper.c - umount.fuse.virtuscale, the helper umount(8) runs for
 * a mount of type fuse.virtuscale.
 *
 *   umount.fuse.virtuscale MOUNTPOINT [-flnrv] [-t TYPE] [-N NAMESPACE]
 *
 * util-linux's umount looks for /sbin/umount.TYPE (then /sbin/fs.d and
 * /sbin/fs).  For a FUSE mount (2.38, as root) TYPE comes from statfs and
 * is plain "fuse", unless libmount's utab (/run/mount/utab) holds options
 * for the mount: mount(8) keeps helper=fuse.virtuscale there when the
 * fstab line (or -o) has it, and umount then runs this helper (checked:
 * LIBMOUNT_DEBUG=cxt umount).  A daemon started by hand has no utab entry,
 * so umount(8) unmounts it without us: `vsctl MOUNTPOINT unmount` waits
 * instead.  umount passes the mount point, its own flags and -t TYPE.
 * We unmount (as root
 * with umount2(), which runs no helper, so this does not recurse) and wait
 * until the daemon has written everything back and released the image
 * (unmount.h), so that `umount M; fsck.virtuscale -n IMAGE` and a remount
 * right after work.
 */
#include "tools/unmount.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "umount.fuse.virtuscale"

/* mount(8)'s exit codes, which umount(8) passes on. */
#define EXIT_USAGE  1
#define EXIT_FAILED 32

static void usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " MOUNTPOINT [-flnrv] [-t TYPE] [-N NAMESPACE]\n"
		   "\n"
		   "Run by umount(8) for a VirtuScale mount: unmount MOUNTPOINT, then wait\n"
		   "until the daemon has written everything back and released the image\n"
		   "(at most %.0f s), so that the image can be checked, copied or mounted\n"
		   "again as soon as umount returns.\n"
		   "\n"
		   "  -l          lazy unmount (MNT_DETACH): the daemon goes when the last user\n"
		   "              lets go, so there is nothing to wait for\n"
		   "  -f          force (MNT_FORCE)\n"
		   "  -v          say what is waited for and how long it took\n"
		   "  -n, -r      accepted and ignored (no mtab; nothing to remount)\n"
		   "  -t TYPE     accepted (umount passes the mount's type)\n"
		   "  -N NS       unmount in the mount namespace NS (a path or a pid)\n"
		   "\n"
		   "Without root the unmount goes through fusermount3 -u.\n"
		   "Exit status: 0 unmounted and the image released, 1 usage error, 32 not\n"
		   "unmounted, or the daemon still held the image when the wait ended.\n",
		UM_DEFAULT_TIMEOUT);
}

/* -N: a path such as /proc/PID/ns/mnt, or a pid. */
static int enter_namespace(const char *ns)
{
	char path[64];
	char *end;
	long pid = strtol(ns, &end, 10);
	int fd;

	if (*ns && !*end && pid > 0) {
		snprintf(path, sizeof(path), "/proc/%ld/ns/mnt", pid);
		ns = path;
	}
	fd = open(ns, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNS) != 0) {
		fprintf(stderr, PROG ": %s: cannot enter this mount namespace: %s\n", ns,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct um_opts o = {.prog = PROG, .timeout = UM_DEFAULT_TIMEOUT};
	const char *ns = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "flnrvt:N:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			o.force = true;
			break;
		case 'l':
			o.lazy = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'n':
		case 'r':
		case 't':
			break;
		case 'N':
			ns = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, PROG ": expected one MOUNTPOINT\nTry '" PROG " --help'.\n");
		return EXIT_USAGE;
	}
	if (ns && enter_namespace(ns) < 0)
		return EXIT_FAILED;
	return um_unmount(argv[optind], &o) == 0 ? 0 : EXIT_FAILED;
}
