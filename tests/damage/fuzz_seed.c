/*
 * fuzz_seed.c: write the seed corpus of fuzz_image.c: small real images (a
 * few hundred KiB, below what mkfs.virtuscale accepts, so made with
 * bm_format and fs_format directly) with files of each kind in them, each
 * encoded in fuzz_image.c's sparse format.
 *
 *   fuzz_seed DIR
 *
 * Seeds:
 *   clean     a filesystem closed cleanly: an inline file, a file of three
 *             data pages, a directory, a symlink, a hard link, xattrs
 *   crashed   the same, then more changes and a crash (no final
 *             checkpoint): the journal holds the last checkpoint
 *   replay    a crash after a checkpoint's commit but before its home
 *             writes: the journal must be replayed at the next open
 *   empty     a fresh filesystem
 * each read-only (flags 0x03) and for writing (0x0b), and both again with
 * the journal descriptor re-sealed after mutation (0x07, 0x0f).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/bm_fault.h"
#include "fs/fs.h"
#include "fs/keys.h"

#define PAGES 160

static const char *tmp_img = "/tmp/vs-fuzz-seed.img";

static void die(const char *what, int r)
{
	fprintf(stderr, "fuzz_seed: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

static void format(void)
{
	struct bm *bm;
	unlink(tmp_img);
	int r = bm_format(tmp_img, (uint64_t)PAGES * BM_PAGE_SIZE, true);
	if (r < 0)
		die("bm_format", r);
	struct bm_config cfg = {.path = tmp_img, .pool_bytes = 2u << 20,
				.backend = BM_BACKEND_PLAIN};
	if ((r = bm_open(&cfg, &bm)) < 0)
		die("bm_open", r);
	if ((r = fs_format(bm, 0, 0)) < 0)
		die("fs_format", r);
	if ((r = bm_close(bm)) < 0)
		die("bm_close", r);
}

static struct fs *mount_it(struct bm_fault *fault)
{
	struct fs_config cfg = {.image = tmp_img, .pool_bytes = 2u << 20,
				.backend = BM_BACKEND_PLAIN, .fault = fault};
	struct fs *fs;
	int r = fs_mount(&cfg, &fs);
	if (r < 0)
		die("fs_mount", r);
	return fs;
}

static uint64_t make(struct fs *fs, uint64_t parent, const char *name, mode_t mode)
{
	static const struct fs_cred cred = {0, 0};
	struct stat st;
	int r = fs_mknod(fs, &cred, parent, name, mode, 0, &st);
	if (r < 0)
		die(name, r);
	return st.st_ino;
}

static void populate(struct fs *fs, const char *tag)
{
	static const struct fs_cred cred = {0, 0};
	uint8_t buf[3 * 4096];
	struct stat st;
	char name[32];
	for (unsigned i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + tag[0]);
	snprintf(name, sizeof(name), "dir-%s", tag);
	uint64_t d = make(fs, FS_INO_ROOT, name, S_IFDIR | 0755);
	uint64_t small = make(fs, d, "small", S_IFREG | 0644);
	if (fs_write(fs, small, 0, "hello, inline\n", 14) != 14)
		die("write small", EIO);
	uint64_t big = make(fs, FS_INO_ROOT, tag, S_IFREG | 0600);
	if (fs_write(fs, big, 0, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		die("write big", EIO);
	if (fs_setxattr(fs, big, "user.tag", tag, strlen(tag), 0) < 0)
		die("setxattr", EIO);
	if (fs_setxattr(fs, small, "user.long", buf, 1500, 0) < 0)
		die("setxattr long", EIO);
	snprintf(name, sizeof(name), "link-%s", tag);
	if (fs_symlink(fs, &cred, FS_INO_ROOT, name, "dir/small", &st) < 0)
		die("symlink", EIO);
	snprintf(name, sizeof(name), "hard-%s", tag);
	if (fs_link(fs, big, d, name, &st) < 0)
		die("link", EIO);
}

/* Encode the image in fuzz_image.c's format: trailing zeros of each page
 * dropped, zero pages left out. */
static void encode(const char *dir, const char *name, unsigned flags)
{
	char path[4096];
	uint8_t page[BM_PAGE_SIZE];
	int fd = open(tmp_img, O_RDONLY);
	if (fd < 0)
		die(tmp_img, errno);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *out = fopen(path, "wb");
	if (!out)
		die(path, errno);
	uint8_t hdr[3] = {(uint8_t)flags, PAGES & 0xff, PAGES >> 8};
	fwrite(hdr, 1, 3, out);
	for (unsigned p = 0; p < PAGES; p++) {
		if (pread(fd, page, BM_PAGE_SIZE, (off_t)p * BM_PAGE_SIZE) != BM_PAGE_SIZE)
			die("read image", EIO);
		unsigned n = BM_PAGE_SIZE;
		while (n > 0 && page[n - 1] == 0)
			n--;
		if (n == 0)
			continue;
		uint8_t rec[4] = {p & 0xff, p >> 8, n & 0xff, n >> 8};
		fwrite(rec, 1, 4, out);
		fwrite(page, 1, n, out);
	}
	if (fclose(out) != 0)
		die(path, errno);
	close(fd);
}

static void both(const char *dir, const char *name)
{
	static const struct {
		const char *suffix;
		unsigned flags;
	} v[] = {{"ro", 0x03}, {"rw", 0x0b}, {"ro-j", 0x07}, {"rw-j", 0x0f}};
	char n[64];
	for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		snprintf(n, sizeof(n), "%s-%s", name, v[i].suffix);
		encode(dir, n, v[i].flags);
	}
}

/* Replay seed: when the checkpoint's commit sync (the first sync of the
 * fs_sync below) is done, fail every write after it: the home writes. */
static uint64_t commit_sync;
static void on_sync(struct bm_fault *f, uint64_t n)
{
	if (commit_sync && n == commit_sync) {
		f->fail_write_at = f->writes + 1;
		f->fail_write_err = EIO;
		f->fail_writes_after = true;
		f->fail_sync_at = n + 1;
		f->fail_sync_err = EIO;
		f->fail_syncs_after = true;
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_seed DIR\n");
		return 2;
	}
	const char *dir = argv[1];

	format();
	both(dir, "empty");

	struct fs *fs = mount_it(NULL);
	populate(fs, "a");
	if (fs_unmount(fs) < 0)
		die("unmount", EIO);
	both(dir, "clean");

	fs = mount_it(NULL);
	populate(fs, "b");
	fs_sync(fs);
	populate(fs, "c");
	fs_abandon(fs);
	both(dir, "crashed");

	format();
	struct bm_fault fault;
	bm_fault_init(&fault);
	fault.on_sync = on_sync;
	fs = mount_it(&fault);
	populate(fs, "d");
	pthread_mutex_lock(&fault.mu);
	commit_sync = fault.syncs + 1;
	pthread_mutex_unlock(&fault.mu);
	fs_sync(fs); /* fails after its commit: the home writes are refused */
	fs_abandon(fs);
	bm_fault_fini(&fault);
	both(dir, "replay");
	unlink(tmp_img);
	return 0;
}
