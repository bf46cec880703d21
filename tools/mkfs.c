/*
 * mkfs.c: mkfs.virtuscale: format a file or block device as a VirtuScale
 * image and create an empty filesystem in it.
 *
 *   mkfs.virtuscale IMAGE [--size SIZE] [--sparse] [--metadata dup|single]
 *                   [--reserved-percent P] [--force] [--quiet]
 *
 * Steps: bm_format (the buffer manager's image layout), then, for a regular
 * file, preallocate it (below), then bm_open, and fs_format (the
 * filesystem's tree, root directory and superblock slots), then bm_close,
 * which writes everything.
 *
 * Preallocation. A sparse image takes host blocks as pages are first
 * written back, so a full host filesystem would fail write-backs long after
 * the mount (EIO, the changes kept only in the pool), and every such write
 * allocates (ext4 then takes the file's lock exclusively, and io_uring hands
 * the write to a worker thread): new data was written 10-15% slower, and an
 * engine run evicting into holes read 20-30% slower. So a file image gets
 * all its blocks now (fallocate: no data is written, it takes a moment), and
 * a host without the room says so here. --sparse keeps the old way.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/bm.h"
#include "fs/fs.h"
#include "fs/keys.h"

#define DEFAULT_SIZE (UINT64_C(1) << 30)
#define MIN_SIZE (UINT64_C(16) << 20)
#define MKFS_POOL    (UINT64_C(16) << 20)

static void usage(FILE *f)
{
	fprintf(f, "usage: mkfs.virtuscale IMAGE [--size SIZE] [--sparse] [--metadata dup|single]\n"
		   "                       [--reserved-percent P] [--force] [--quiet]\n"
		   "\n"
		   "Format IMAGE (a file, created if missing, or a block device) as an empty\n"
		   "VirtuScale filesystem.\n"
		   "\n"
		   "  -s, --size SIZE   image size, e.g. 512M, 20G (a file is created or resized;\n"
		   "                    default: an existing file keeps its size, a new one gets\n"
		   "                    1G, a block device is used whole)\n"
		   "      --sparse      do not preallocate a file image (by default it gets all its\n"
		   "                    blocks now, so that a full host filesystem shows here and\n"
		   "                    not as write errors later)\n"
		   "      --metadata dup|single\n"
		   "                    dup (the default): every tree node (directories, inodes,\n"
		   "                    extents, small files) has a second copy, read when the\n"
		   "                    first is damaged; single: one copy, a little less space\n"
		   "                    and fewer writes\n"
		   "  -m, --reserved-percent P\n"
		   "                    the share of the space only root may fill, 0 to 50\n"
		   "                    (default 5, as ext4; decimals allowed, e.g. 0.5)\n"
		   "  -f, --force       overwrite an existing VirtuScale image\n"
		   "  -q, --quiet       print nothing on success\n"
		   "  -h, --help        this text\n"
		   "\n"
		   "example:\n"
		   "  mkfs.virtuscale /srv/vs.img --size 20G\n"
		   "  virtuscale /srv/vs.img /mnt/vs -o pool=2G\n");
}

/* Give the regular file @image all its blocks (see the top). A block device,
 * or a filesystem that cannot (EOPNOTSUPP), is left as it is, and *note says
 * which; 0 or a negative errno. */
static int preallocate(const char *image, const char **note)
{
	struct stat st;
	int fd = open(image, O_RDWR | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
	} else if (!S_ISREG(st.st_mode)) {
		*note = "";
	} else if (fallocate(fd, 0, 0, st.st_size) < 0) {
		if (errno == EOPNOTSUPP)
			*note = ", sparse (the host filesystem cannot preallocate)";
		else
			r = -errno;
	} else {
		*note = ", preallocated";
	}
	close(fd);
	return r;
}

/* "5", "0.5", "12.3": tenths of a percent, 0 to 500. */
static int parse_percent(const char *s, unsigned *ret_tenths)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0 && v <= 50))
		return -EINVAL;
	*ret_tenths = (unsigned)(v * 10 + 0.5);
	return 0;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
	    {"size", required_argument, NULL, 's'},
	    {"force", no_argument, NULL, 'f'},
	    {"sparse", no_argument, NULL, 'S'},
	    {"reserved-percent", required_argument, NULL, 'm'},
	    {"metadata", required_argument, NULL, 'M'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *image, *size_arg = NULL, *reserved_arg = NULL;
	bool force = false, quiet = false, sparse = false, single = false;
	const char *alloc_note = "";
	uint64_t size = 0;
	struct stat st;
	struct bm *bm;
	int c, r;

	while ((c = getopt_long(argc, argv, "s:m:fqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			reserved_arg = optarg;
			break;
		case 's':
			size_arg = optarg;
			break;
		case 'f':
			force = true;
			break;
		case 'S':
			sparse = true;
			break;
		case 'M':
			if (strcmp(optarg, "single") != 0 && strcmp(optarg, "dup") != 0) {
				fprintf(stderr, "mkfs.virtuscale: --metadata %s: use dup (two copies "
						"of every tree node, the default) or single\n",
					optarg);
				return 2;
			}
			single = strcmp(optarg, "single") == 0;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	unsigned reserved_tenths = FS_RESERVED_DEFAULT;
	if (reserved_arg && parse_percent(reserved_arg, &reserved_tenths) < 0) {
		fprintf(stderr,
			"mkfs.virtuscale: --reserved-percent %s: use a percentage from 0 to 50, "
			"e.g. 5 or 0.5\n",
			reserved_arg);
		return 2;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "mkfs.virtuscale: %s\n",
			optind == argc ? "no image given" : "more than one image given");
		usage(stderr);
		return 2;
	}
	image = argv[optind];
	if (size_arg && (bm_parse_size(size_arg, &size) < 0 || size == 0)) {
		fprintf(stderr, "mkfs.virtuscale: --size %s: not a size (e.g. 512M, 20G)\n",
			size_arg);
		return 2;
	}
	if (size_arg && size < MIN_SIZE) {
		fprintf(stderr,
			"mkfs.virtuscale: --size %s: too small, at least 16M (the journal, an "
			"eighth of the image, must take a 1 MiB write and its records)\n",
			size_arg);
		return 2;
	}
	if (!size_arg) {
		/* 0 tells bm_format to keep an existing file's size or to take
		 * a whole device. */
		bool exists = stat(image, &st) == 0;
		if (!exists || (S_ISREG(st.st_mode) && st.st_size == 0))
			size = DEFAULT_SIZE;
	}

	bool created = stat(image, &st) != 0;
	r = bm_format(image, size,
		      (force ? BM_FORMAT_FORCE : 0) | (single ? BM_FORMAT_SINGLE : 0));
	if (r == -EEXIST) {
		fprintf(stderr,
			"mkfs.virtuscale: %s already holds a VirtuScale image; use --force to "
			"overwrite it (everything in it will be lost)\n",
			image);
		return 1;
	}
	if (r == -EBUSY) {
		fprintf(stderr, "mkfs.virtuscale: %s: image is in use (mounted?)\n", image);
		return 1;
	}
	if (r == -EINVAL) {
		fprintf(stderr, "mkfs.virtuscale: %s: too small (at least a few hundred KiB)\n",
			image);
		return 1;
	}
	if (r < 0) {
		fprintf(stderr, "mkfs.virtuscale: %s: %s\n", image, strerror(-r));
		return 1;
	}

	if (!sparse) {
		r = preallocate(image, &alloc_note);
		if (r < 0) {
			fprintf(stderr, "mkfs.virtuscale: %s: cannot preallocate the image: %s%s\n",
				image, strerror(-r),
				r == -ENOSPC ? " (the host filesystem is too full for it; "
					       "use a smaller --size, or --sparse)"
					     : "");
			if (created)
				unlink(image);
			return 1;
		}
	}

	struct bm_config cfg = {
	    .path = image,
	    .pool_bytes = MKFS_POOL,
	    .backend = BM_BACKEND_PLAIN,
	};
	r = bm_open(&cfg, &bm);
	if (r < 0) {
		fprintf(stderr, "mkfs.virtuscale: %s: cannot open the new image: %s\n", image,
			strerror(-r));
		return 1;
	}
	fs_format_reserve(bm, reserved_tenths);
	r = fs_format(bm, getuid(), getgid());
	if (r < 0) {
		fprintf(stderr, "mkfs.virtuscale: %s: creating the filesystem: %s\n", image,
			strerror(-r));
		bm_close(bm);
		return 1;
	}
	uint64_t pages = bm_page_count(bm);
	r = bm_close(bm);
	if (r < 0) {
		fprintf(stderr, "mkfs.virtuscale: %s: writing the image: %s\n", image,
			strerror(-r));
		return 1;
	}
	if (!quiet)
		printf("%s: VirtuScale filesystem of %llu pages (%llu MiB)%s, metadata %s\n",
		       image, (unsigned long long)pages, (unsigned long long)(pages >> 8),
		       alloc_note, single ? "single" : "dup");
	return 0;
}
