/*
 * unit_fs.c: the filesystem library (fs/fs.h) driven directly, without a
 * mount: namespace rules, file data and holes, xattrs, readdir cookies,
 * orphans across a crash, ENOSPC, and a few threads at once. The mount-level
 * suites (fs_*.c) check the same behaviour through the kernel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/fs.h"
#include "fs/keys.h"

#define MiB (UINT64_C(1) << 20)

static char image[256];
static struct fs *g;
static const struct fs_cred root = {0, 0};

static void make_image(uint64_t size)
{
	const char *tmp = getenv("VS_TEST_TMP") ? getenv("VS_TEST_TMP") : "/tmp";
	struct bm_config bc = {.pool_bytes = 16 * MiB, .backend = BM_BACKEND_PLAIN};
	struct bm *bm;
	int fd;

	snprintf(image, sizeof(image), "%s/unit_fs.XXXXXX", tmp);
	fd = mkstemp(image);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(bm_format(image, size, true), 0);
	bc.path = image;
	assert_int_equal(bm_open(&bc, &bm), 0);
	assert_int_equal(fs_format(bm, 0, 0), 0);
	assert_int_equal(fs_format(bm, 0, 0), -EEXIST);
	assert_int_equal(bm_close(bm), 0);
}

static struct fs *do_mount(void)
{
	struct fs_config cfg = {.image = image, .pool_bytes = 8 * MiB, .backend = BM_BACKEND_PLAIN};
	struct fs *fs = NULL;
	assert_int_equal(fs_mount(&cfg, &fs), 0);
	return fs;
}

static int setup(void **state)
{
	make_image(256 * MiB);
	g = do_mount();
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(fs_unmount(g), 0);
	unlink(image);
	return 0;
}

static uint64_t mk(uint64_t parent, const char *name, mode_t mode)
{
	struct stat st;
	int r = fs_mknod(g, &root, parent, name, mode, 0, &st);
	if (r < 0)
		fail_msg("mknod %s: %s", name, strerror(-r));
	return st.st_ino;
}

static uint64_t lk(uint64_t parent, const char *name)
{
	struct stat st;
	int r = fs_lookup(g, parent, name, &st);
	return r < 0 ? 0 : st.st_ino;
}

static struct stat attr(uint64_t ino)
{
	struct stat st;
	assert_int_equal(fs_getattr(g, ino, &st), 0);
	return st;
}

static uint64_t free_pages(void)
{
	struct statvfs sv;
	assert_int_equal(fs_statfs(g, &sv), 0);
	return sv.f_bfree;
}

/* ------------------------------------------------------------------ */

static void t_names(void **state)
{
	char big[300];
	uint64_t d = mk(FS_INO_ROOT, "names", S_IFDIR | 0755);
	uint64_t f = mk(d, "f", S_IFREG | 0644);
	struct stat st;

	assert_int_equal(fs_mknod(g, &root, d, "f", S_IFREG | 0644, 0, &st), -EEXIST);
	memset(big, 'n', sizeof(big));
	big[256] = 0;
	assert_int_equal(fs_mknod(g, &root, d, big, S_IFREG | 0644, 0, &st), -ENAMETOOLONG);
	big[255] = 0;
	assert_int_equal(fs_mknod(g, &root, d, big, S_IFREG | 0644, 0, &st), 0);
	assert_int_equal(lk(d, big), st.st_ino);
	assert_int_equal(fs_mknod(g, &root, FS_INO_ROOT, ".virtuscale", S_IFDIR | 0755, 0, &st),
			 -EEXIST);
	assert_int_equal(lk(FS_INO_ROOT, ".virtuscale"), FS_INO_CTLDIR);
	assert_int_equal(lk(FS_INO_CTLDIR, "stats"), FS_INO_STATS);

	/* Directory link counts. */
	assert_int_equal(attr(d).st_nlink, 2);
	uint64_t sub = mk(d, "sub", S_IFDIR | 0700);
	assert_int_equal(attr(d).st_nlink, 3);
	assert_int_equal(fs_rmdir(g, d, "f"), -ENOTDIR);
	assert_int_equal(fs_unlink(g, d, "sub"), -EISDIR);
	mk(sub, "x", S_IFIFO | 0600);
	assert_int_equal(fs_rmdir(g, d, "sub"), -ENOTEMPTY);
	assert_int_equal(fs_unlink(g, sub, "x"), 0);
	assert_int_equal(fs_rmdir(g, d, "sub"), 0);
	assert_int_equal(attr(d).st_nlink, 2);
	assert_int_equal(lk(d, "sub"), 0);

	/* Hard links share the inode. Its attributes may be cached by the
	 * kernel only while it has never had another name taken away. */
	st = attr(f);
	assert_true(fs_attr_cacheable(g, &st));
	assert_int_equal(fs_link(g, f, d, "g", &st), 0);
	assert_int_equal(st.st_ino, f);
	assert_false(fs_attr_cacheable(g, &st));
	assert_int_equal(attr(f).st_nlink, 2);
	assert_int_equal(fs_link(g, d, FS_INO_ROOT, "dl", &st), -EPERM);
	assert_int_equal(fs_unlink(g, d, "f"), 0);
	st = attr(f);
	assert_int_equal(st.st_nlink, 1);
	assert_false(fs_attr_cacheable(g, &st));
	assert_int_equal(lk(d, "g"), f);
	st = attr(d);
	assert_true(fs_attr_cacheable(g, &st));

	/* Devices and symlinks. */
	assert_int_equal(fs_mknod(g, &root, d, "cdev", S_IFCHR | 0600, makedev(1, 3), &st), 0);
	assert_int_equal(st.st_rdev, makedev(1, 3));
	char target[FS_SYMLINK_MAX + 2], back[FS_SYMLINK_MAX + 1];
	size_t len;
	memset(target, 't', FS_SYMLINK_MAX);
	target[FS_SYMLINK_MAX] = 0;
	assert_int_equal(fs_symlink(g, &root, d, "long", target, &st), 0);
	assert_int_equal(st.st_size, FS_SYMLINK_MAX);
	assert_int_equal(fs_readlink(g, st.st_ino, back, sizeof(back), &len), 0);
	assert_int_equal(len, FS_SYMLINK_MAX);
	assert_memory_equal(back, target, len);
	target[FS_SYMLINK_MAX] = 't';
	target[FS_SYMLINK_MAX + 1] = 0;
	assert_int_equal(fs_symlink(g, &root, d, "toolong", target, &st), -ENAMETOOLONG);
}

static void t_rename(void **state)
{
	uint64_t d = mk(FS_INO_ROOT, "ren", S_IFDIR | 0755);
	uint64_t a = mk(d, "a", S_IFDIR | 0755);
	uint64_t b = mk(a, "b", S_IFDIR | 0755);
	uint64_t f = mk(d, "f", S_IFREG | 0644);
	uint64_t h = mk(d, "h", S_IFREG | 0644);
	uint64_t e = mk(d, "e", S_IFDIR | 0755);

	/* Loops, type mismatches, non-empty targets. */
	assert_int_equal(fs_rename(g, d, "a", b, "a2", 0), -EINVAL);
	assert_int_equal(fs_rename(g, d, "a", a, "a2", 0), -EINVAL);
	assert_int_equal(fs_rename(g, d, "a", d, "f", 0), -ENOTDIR);
	assert_int_equal(fs_rename(g, d, "f", d, "a", 0), -EISDIR);
	assert_int_equal(fs_rename(g, d, "e", d, "a", 0), -ENOTEMPTY);
	assert_int_equal(fs_rename(g, d, "f", d, "h", RENAME_NOREPLACE), -EEXIST);
	assert_int_equal(fs_rename(g, d, "f", d, "nope", RENAME_EXCHANGE), -ENOENT);
	assert_int_equal(fs_rename(g, d, "f", d, "h", RENAME_EXCHANGE | RENAME_NOREPLACE), -EINVAL);

	/* Overwrite a file: the old one loses its only link. */
	assert_int_equal(fs_rename(g, d, "f", d, "h", 0), 0);
	assert_int_equal(lk(d, "h"), f);
	assert_int_equal(lk(d, "f"), 0);
	assert_int_equal(fs_getattr(g, h, &(struct stat){0}), 0); /* still looked up */
	fs_forget(g, h, 1);
	assert_int_equal(fs_getattr(g, h, &(struct stat){0}), -ENOENT);

	/* Move a directory: parents' link counts and "..". */
	assert_int_equal(fs_rename(g, a, "b", e, "b", 0), 0);
	assert_int_equal(attr(a).st_nlink, 2);
	assert_int_equal(attr(e).st_nlink, 3);
	/* Replace an empty directory. */
	uint64_t e2 = mk(d, "e2", S_IFDIR | 0755);
	assert_int_equal(fs_rename(g, d, "a", d, "e2", 0), 0);
	assert_int_equal(lk(d, "e2"), a);
	fs_forget(g, e2, 1);
	assert_int_equal(fs_getattr(g, e2, &(struct stat){0}), -ENOENT);

	/* Exchange a file and a directory across directories. */
	uint64_t x = mk(e, "x", S_IFREG | 0600);
	assert_int_equal(fs_rename(g, e, "b", d, "h", RENAME_EXCHANGE), 0);
	assert_int_equal(lk(d, "h"), b);
	assert_int_equal(lk(e, "b"), f);
	assert_int_equal(attr(e).st_nlink, 2);
	assert_int_equal(attr(d).st_nlink, 5); /* e, a(as e2), h(b) + 2 */
	/* Exchanging a directory into its own subtree is a loop. */
	assert_int_equal(fs_rename(g, d, "e", e, "x", RENAME_EXCHANGE), -EINVAL);
	(void)x;
}

struct listing {
	int n;
	char names[64][32];
	uint64_t next[64];
	int stop_after;
};

static bool collect(void *ctx, const char *name, uint64_t ino, mode_t type, uint64_t next,
		    const struct stat *st)
{
	struct listing *l = ctx;
	if (l->n == l->stop_after || l->n == 64)
		return false;
	snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
	l->next[l->n++] = next;
	return true;
}

static void t_readdir(void **state)
{
	uint64_t d = mk(FS_INO_ROOT, "rd", S_IFDIR | 0755);
	char name[32];
	struct listing l = {.stop_after = 64};

	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "e%02d", i);
		mk(d, name, S_IFREG | 0644);
	}
	assert_int_equal(fs_readdir(g, d, 0, false, collect, &l), 0);
	assert_int_equal(l.n, 42);
	assert_string_equal(l.names[0], ".");
	assert_string_equal(l.names[1], "..");

	/* Resume after each entry in turn, inserting and removing others in
	 * between: nothing is listed twice. */
	struct listing part = {.stop_after = 10};
	assert_int_equal(fs_readdir(g, d, 0, true, collect, &part), 0);
	assert_int_equal(part.n, 10);
	uint64_t cookie = part.next[9];
	for (int i = 0; i < 8; i++)
		fs_forget(g, lk(d, part.names[2 + i]), 3); /* mk, plus, lk */
	mk(d, "late", S_IFREG | 0644);
	assert_int_equal(fs_unlink(g, d, part.names[9]), 0);
	struct listing rest = {.stop_after = 64};
	assert_int_equal(fs_readdir(g, d, cookie, false, collect, &rest), 0);
	for (int i = 0; i < rest.n; i++)
		for (int j = 0; j < part.n; j++)
			assert_string_not_equal(rest.names[i], part.names[j]);
	assert_true(part.n + rest.n >= 41);
	assert_int_equal(fs_readdir(g, FS_INO_ROOT + 100000, 0, false, collect, &rest), -ENOENT);
}

static void t_data(void **state)
{
	uint64_t d = mk(FS_INO_ROOT, "data", S_IFDIR | 0755);
	uint64_t f = mk(d, "f", S_IFREG | 0644);
	uint8_t *buf = malloc(4 * MiB), *back = malloc(4 * MiB);
	uint64_t pos;

	assert_int_equal(fs_open(g, f, O_RDWR), 0);
	/* Inline, then converted to pages. */
	assert_int_equal(fs_write(g, f, 0, "hello", 5), 5);
	assert_int_equal(attr(f).st_blocks, 1);
	assert_int_equal(fs_read(g, f, 0, 100, back), 5);
	assert_memory_equal(back, "hello", 5);
	assert_int_equal(fs_write(g, f, 3000, "world", 5), 5);
	assert_int_equal(attr(f).st_size, 3005);
	assert_int_equal(attr(f).st_blocks, 8);
	assert_int_equal(fs_read(g, f, 0, 4096, back), 3005);
	assert_memory_equal(back, "hello", 5);
	for (int i = 5; i < 3000; i++)
		assert_int_equal(back[i], 0);
	assert_memory_equal(back + 3000, "world", 5);

	/* A big write, read back across page and extent boundaries. */
	for (size_t i = 0; i < 4 * MiB; i++)
		buf[i] = (uint8_t)(i * 7 + i / 4096);
	assert_int_equal(fs_write(g, f, 12345, buf, 4 * MiB), (ssize_t)(4 * MiB));
	assert_int_equal(fs_read(g, f, 12345, 4 * MiB, back), (ssize_t)(4 * MiB));
	assert_memory_equal(buf, back, 4 * MiB);

	/* Shrink into a page, grow again: the old tail reads as zeros. */
	struct stat st;
	struct fs_setattr sa = {.valid = FS_SET_SIZE, .size = 10000};
	assert_int_equal(fs_setattr(g, f, &sa, &st), 0);
	sa.size = 20000;
	assert_int_equal(fs_setattr(g, f, &sa, &st), 0);
	assert_int_equal(fs_read(g, f, 9000, 11000, back), 11000);
	for (int i = 1000; i < 11000; i++)
		assert_int_equal(back[i], 0);

	/* 64-bit offsets and holes. */
	uint64_t far = UINT64_C(1) << 42;
	assert_int_equal(fs_write(g, f, far, "end", 3), 3);
	assert_int_equal(attr(f).st_size, (off_t)(far + 3));
	assert_int_equal(fs_read(g, f, far - 2, 5, back), 5);
	assert_memory_equal(back, "\0\0end", 5);
	assert_int_equal(fs_lseek(g, f, 20000, SEEK_DATA, &pos), 0);
	assert_int_equal(pos, far & ~UINT64_C(4095));
	/* Page 0 has data; the write at 12345 left pages 1 and 2 a hole. */
	assert_int_equal(fs_lseek(g, f, 0, SEEK_HOLE, &pos), 0);
	assert_int_equal(pos, 4096);
	assert_int_equal(fs_lseek(g, f, 100, SEEK_DATA, &pos), 0);
	assert_int_equal(pos, 100);
	assert_int_equal(fs_lseek(g, f, far + 3, SEEK_DATA, &pos), -ENXIO);

	/* Punch a hole in the middle of 64 KiB of data; the page count
	 * follows, and the bytes around it survive. */
	assert_int_equal(fs_write(g, f, MiB, buf, 65536), 65536);
	uint64_t blocks = (uint64_t)attr(f).st_blocks;
	assert_int_equal(
	    fs_fallocate(g, f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB + 4000, 12000), 0);
	assert_int_equal((uint64_t)attr(f).st_blocks, blocks - 16);
	assert_int_equal(fs_read(g, f, MiB, 65536, back), 65536);
	assert_memory_equal(back, buf, 4000);
	for (int i = 4000; i < 16000; i++)
		assert_int_equal(back[i], 0);
	assert_memory_equal(back + 16000, buf + 16000, 65536 - 16000);
	assert_int_equal(fs_lseek(g, f, MiB + 4096, SEEK_HOLE, &pos), 0);
	assert_int_equal(pos, MiB + 4096);
	assert_int_equal(fs_lseek(g, f, MiB + 4096, SEEK_DATA, &pos), 0);
	assert_int_equal(pos, MiB + 12288);
	assert_int_equal(fs_fallocate(g, f, FALLOC_FL_COLLAPSE_RANGE, 0, 4096), -EOPNOTSUPP);

	/* fallocate grows, KEEP_SIZE does not. */
	uint64_t g2 = mk(d, "g", S_IFREG | 0644);
	assert_int_equal(fs_fallocate(g, g2, 0, 0, MiB), 0);
	assert_int_equal(attr(g2).st_size, (off_t)MiB);
	assert_int_equal(attr(g2).st_blocks, 2048);
	assert_int_equal(fs_fallocate(g, g2, FALLOC_FL_KEEP_SIZE, MiB, MiB), 0);
	assert_int_equal(attr(g2).st_size, (off_t)MiB);
	assert_int_equal(attr(g2).st_blocks, 4096);

	/* copy_file_range, and it stops at the end of the input. */
	uint64_t s = mk(d, "s", S_IFREG | 0644), c = mk(d, "c", S_IFREG | 0644);
	assert_int_equal(fs_write(g, s, 0, buf, 3 * MiB), (ssize_t)(3 * MiB));
	assert_int_equal(fs_copy_range(g, s, 100, c, 1, 4 * MiB), (ssize_t)(3 * MiB - 100));
	assert_int_equal(fs_read(g, c, 1, 3 * MiB, back), (ssize_t)(3 * MiB - 100));
	assert_memory_equal(back, buf + 100, 3 * MiB - 100);
	assert_int_equal(fs_copy_range(g, g2, MiB - 10, c, 0, 100), 10);

	fs_release(g, f);
	free(buf);
	free(back);
}

static void t_xattr(void **state)
{
	uint64_t f = mk(FS_INO_ROOT, "xa", S_IFREG | 0644);
	static char val[FS_XATTR_VALUE_MAX], back[FS_XATTR_VALUE_MAX];
	char list[256];
	size_t len;

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (char)(i % 251);
	assert_int_equal(fs_getxattr(g, f, "user.a", back, sizeof(back), &len), -ENODATA);
	assert_int_equal(fs_setxattr(g, f, "user.a", "1", 1, XATTR_REPLACE), -ENODATA);
	assert_int_equal(fs_setxattr(g, f, "user.a", "1", 1, XATTR_CREATE), 0);
	assert_int_equal(fs_setxattr(g, f, "user.a", "2", 1, XATTR_CREATE), -EEXIST);
	assert_int_equal(fs_setxattr(g, f, "user.big", val, sizeof(val), 0), 0);
	assert_int_equal(fs_getxattr(g, f, "user.big", NULL, 0, &len), 0);
	assert_int_equal(len, sizeof(val));
	assert_int_equal(fs_getxattr(g, f, "user.big", back, 100, &len), -ERANGE);
	assert_int_equal(fs_getxattr(g, f, "user.big", back, sizeof(back), &len), 0);
	assert_memory_equal(back, val, sizeof(val));
	/* Shrink the big one: its old chunks must go. */
	assert_int_equal(fs_setxattr(g, f, "user.big", "small", 5, XATTR_REPLACE), 0);
	assert_int_equal(fs_getxattr(g, f, "user.big", back, sizeof(back), &len), 0);
	assert_int_equal(len, 5);
	assert_int_equal(fs_setxattr(g, f, "user.empty", "", 0, 0), 0);
	assert_int_equal(fs_listxattr(g, f, list, sizeof(list), &len), 0);
	assert_int_equal(len, strlen("user.a") + strlen("user.big") + strlen("user.empty") + 3);
	assert_int_equal(fs_listxattr(g, f, list, 3, &len), -ERANGE);
	assert_int_equal(fs_removexattr(g, f, "user.a"), 0);
	assert_int_equal(fs_removexattr(g, f, "user.a"), -ENODATA);
	assert_int_equal(fs_setxattr(g, f, "system.posix_acl_access", "x", 1, 0), -EOPNOTSUPP);
	assert_int_equal(fs_setxattr(g, f, "user.virtuscale.residency", "1", 1, 0), -EPERM);
	assert_int_equal(fs_write(g, f, 0, val, 3 * 4096), 3 * 4096);
	assert_int_equal(fs_getxattr(g, f, "user.virtuscale.residency", back, 64, &len), 0);
	back[len] = 0;
	assert_string_equal(back, "3 3");
}

/* With the kernel keeping files' mtime and ctime (writeback caching), a
 * write leaves them as the last setattr gave them; without, it stamps. */
static void t_kernel_cmtime(void **state)
{
	uint64_t f = mk(FS_INO_ROOT, "kt", S_IFREG | 0644);
	struct fs_setattr sa = {.valid = FS_SET_MTIME | FS_SET_CTIME,
				.mtime = {.tv_sec = 1000, .tv_nsec = 123},
				.ctime = {.tv_sec = 2000, .tv_nsec = 456}};
	struct stat st;

	assert_int_equal(fs_setattr(g, f, &sa, &st), 0);
	fs_set_kernel_cmtime(g, true);
	assert_int_equal(fs_write(g, f, 4096, "data", 4), 4);
	st = attr(f);
	fs_set_kernel_cmtime(g, false);
	assert_int_equal(st.st_size, 4100);
	assert_int_equal(st.st_mtim.tv_sec, 1000);
	assert_int_equal(st.st_mtim.tv_nsec, 123);
	assert_int_equal(st.st_ctim.tv_sec, 2000);
	assert_int_equal(st.st_ctim.tv_nsec, 456);
	assert_int_equal(fs_write(g, f, 0, "data", 4), 4);
	st = attr(f);
	assert_true(st.st_mtim.tv_sec > 1000);
	assert_true(st.st_ctim.tv_sec > 2000);
}

static void t_unlinked_open(void **state)
{
	uint64_t before = free_pages();
	uint64_t f = mk(FS_INO_ROOT, "tmpfile", S_IFREG | 0644);
	char buf[8];

	assert_int_equal(fs_open(g, f, O_RDWR), 0);
	assert_int_equal(fs_write(g, f, 0, "x", 1), 1);
	assert_int_equal(fs_write(g, f, 8 * MiB, "y", 1), 1);
	assert_int_equal(fs_unlink(g, FS_INO_ROOT, "tmpfile"), 0);
	assert_int_equal(lk(FS_INO_ROOT, "tmpfile"), 0);
	/* Still readable and writable through the open file. */
	assert_int_equal(fs_write(g, f, 1, "z", 1), 1);
	assert_int_equal(fs_read(g, f, 0, 2, buf), 2);
	assert_memory_equal(buf, "xz", 2);
	assert_int_equal(attr(f).st_nlink, 0);
	fs_release(g, f);
	assert_int_equal(fs_getattr(g, f, &(struct stat){0}), 0); /* the lookup remains */
	fs_forget(g, f, 1);
	assert_int_equal(fs_getattr(g, f, &(struct stat){0}), -ENOENT);
	assert_int_equal(free_pages(), before);
}

/* A daemon that dies with an unlinked file open leaves an orphan; the next
 * mount frees it. */
static void t_orphan_after_crash(void **state)
{
	uint64_t before = free_pages();
	assert_int_equal(fs_unmount(g), 0);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct fs *fs = do_mount();
		struct stat st;
		static char data[64 * 1024];
		if (fs_mknod(fs, &root, FS_INO_ROOT, "orph", S_IFREG | 0644, 0, &st) < 0 ||
		    fs_open(fs, st.st_ino, O_RDWR) < 0 ||
		    fs_write(fs, st.st_ino, 0, data, sizeof(data)) != sizeof(data) ||
		    fs_unlink(fs, FS_INO_ROOT, "orph") < 0 || fs_sync(fs) < 0)
			_exit(1);
		_exit(0); /* no unmount: a crash */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	g = do_mount();
	assert_int_equal(free_pages(), before);
	assert_int_equal(lk(FS_INO_ROOT, "orph"), 0);
}

static void t_persist(void **state)
{
	uint64_t f = mk(FS_INO_ROOT, "keep", S_IFREG | 0640);
	char buf[16];

	assert_int_equal(fs_write(g, f, 100000, "persist", 7), 7);
	assert_int_equal(fs_setxattr(g, f, "user.k", "v", 1, 0), 0);
	assert_int_equal(fs_unmount(g), 0);
	g = do_mount();
	assert_int_equal(lk(FS_INO_ROOT, "keep"), f);
	assert_int_equal(fs_read(g, f, 100000, 16, buf), 7);
	assert_memory_equal(buf, "persist", 7);
	assert_int_equal(attr(f).st_mode & 07777, 0640);
	/* Numbers are never reused, even across mounts. */
	uint64_t f2 = mk(FS_INO_ROOT, "keep2", S_IFREG | 0640);
	assert_true(f2 > f);
}

static void t_enospc(void **state)
{
	static uint8_t chunk[MiB];
	struct fs *saved = g;
	char saved_image[256];
	uint64_t ino[64];
	int n = 0, created = 0;
	ssize_t w = 0;

	memcpy(saved_image, image, sizeof(image));
	/* The smallest image mkfs makes: its journal takes a whole 1 MiB
	 * write, which is one transaction. */
	make_image(16 * MiB);
	g = do_mount();
	memset(chunk, 0xab, sizeof(chunk));
	uint64_t before = free_pages();
	for (n = 0; n < 64; n++) {
		char name[16];
		snprintf(name, sizeof(name), "f%d", n);
		struct stat st;
		int r = fs_mknod(g, &root, FS_INO_ROOT, name, S_IFREG | 0644, 0, &st);
		if (r == -ENOSPC)
			break;
		assert_int_equal(r, 0);
		ino[n] = st.st_ino;
		created++;
		w = fs_write(g, ino[n], 0, chunk, sizeof(chunk));
		if (w < (ssize_t)sizeof(chunk))
			break;
	}
	assert_true(n < 64);
	assert_true(w == -ENOSPC || (w >= 0 && w < (ssize_t)sizeof(chunk)));
	/* What was written before is intact. */
	static uint8_t back[MiB];
	assert_int_equal(fs_read(g, ino[0], 0, sizeof(back), back), (ssize_t)sizeof(back));
	assert_memory_equal(back, chunk, sizeof(back));
	/* Deleting makes room again. */
	for (int i = 0; i < created; i++) {
		char name[16];
		snprintf(name, sizeof(name), "f%d", i);
		assert_int_equal(fs_unlink(g, FS_INO_ROOT, name), 0);
		fs_forget(g, ino[i], 1);
	}
	/* All data pages back; a few tree pages may stay with the tree. */
	assert_true(free_pages() + 8 >= before);
	uint64_t f = mk(FS_INO_ROOT, "again", S_IFREG | 0644);
	assert_int_equal(fs_write(g, f, 0, chunk, sizeof(chunk)), (ssize_t)sizeof(chunk));
	assert_int_equal(fs_unmount(g), 0);
	unlink(image);
	memcpy(image, saved_image, sizeof(image));
	g = saved;
}

struct worker {
	int id;
	int err;
};

static void *worker_fn(void *arg)
{
	struct worker *w = arg;
	char name[32], buf[8192], back[8192];
	struct stat st;

	snprintf(name, sizeof(name), "w%d", w->id);
	if (fs_mknod(g, &root, FS_INO_ROOT, name, S_IFDIR | 0755, 0, &st) < 0) {
		w->err = 1;
		return NULL;
	}
	uint64_t dir = st.st_ino;
	for (int i = 0; i < 200 && !w->err; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		if (fs_mknod(g, &root, dir, name, S_IFREG | 0644, 0, &st) < 0) {
			w->err = 2;
			break;
		}
		memset(buf, (char)(i + w->id), sizeof(buf));
		if (fs_write(g, st.st_ino, (uint64_t)i * 100, buf, sizeof(buf)) != sizeof(buf) ||
		    fs_read(g, st.st_ino, (uint64_t)i * 100, sizeof(back), back) != sizeof(back) ||
		    memcmp(buf, back, sizeof(buf)) != 0)
			w->err = 3;
		char out[48];
		snprintf(out, sizeof(out), "w%d-%s", w->id, name);
		if (i % 3 == 0 && (fs_rename(g, dir, name, FS_INO_ROOT, out, 0) < 0 ||
				   fs_rename(g, FS_INO_ROOT, out, dir, name, 0) < 0))
			w->err = 4;
	}
	return NULL;
}

/* A read reply held straight from the pool takes its pages from the pin
 * budget (engine/bm_load.c); with the budget spent, the read copies,
 * group by group, and returns the same bytes. */
static void t_read_without_pins(void **state)
{
	static uint8_t buf[MiB + 8192], back[MiB + 8192];
	struct bm *bm = fs_bm(g);
	uint64_t f = mk(FS_INO_ROOT, "pinned", S_IFREG | 0644);

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 31 + i / 4096);
	assert_int_equal(fs_write(g, f, 0, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	/* Spend the whole budget, as many concurrent large reads would. */
	unsigned spent = 0;
	while (bm_pin_try(bm, 1))
		spent++;
	assert_true(spent >= 256);
	/* 1 MiB from an unaligned offset: 257 pages, more than one group. */
	memset(back, 0, sizeof(back));
	assert_int_equal(fs_read(g, f, 100, MiB, back), (ssize_t)MiB);
	assert_memory_equal(back, buf + 100, MiB);
	struct bm_stats s;
	bm_stats_get(bm, &s);
	assert_int_equal(s.pinned_pages, spent); /* the copying read took none */
	bm_pin_release(bm, spent);
	/* With the budget back, the same read is served from the pool. */
	memset(back, 0, sizeof(back));
	assert_int_equal(fs_read(g, f, 100, MiB, back), (ssize_t)MiB);
	assert_memory_equal(back, buf + 100, MiB);
	bm_stats_get(bm, &s);
	assert_int_equal(s.pinned_pages, 0);
}

/* Pages of @f in the pool now. */
static uint64_t resident(uint64_t f)
{
	uint64_t res, total;
	assert_int_equal(fs_residency(g, f, &res, &total), 0);
	return res;
}

/* cache=kernel (fs.h): a read of pages not in the pool takes them from the
 * image without loading them, even a small read of a small file (which
 * cache=both loads); resident pages are still read from the pool, and
 * writes still go through it. */
static void t_cache_kernel(void **state)
{
	static uint8_t buf[64 * 1024], back[sizeof(buf)];
	struct bm *bm = fs_bm(g);
	struct bm_stats s0, s1;
	uint64_t f = mk(FS_INO_ROOT, "kcache", S_IFREG | 0644);

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + i / 4096);
	assert_int_equal(fs_write(g, f, 0, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	assert_int_equal(fs_sync(g), 0);
	assert_true(bm_evict_all(bm, true) >= 0);
	assert_int_equal(resident(f), 0);

	fs_cache_mode_set(FS_CACHE_KERNEL);
	bm_stats_get(bm, &s0);
	assert_int_equal(fs_read(g, f, 4096 + 10, 100, back), 100);
	assert_memory_equal(back, buf + 4096 + 10, 100);
	assert_int_equal(fs_read(g, f, 0, sizeof(back), back), (ssize_t)sizeof(back));
	assert_memory_equal(back, buf, sizeof(buf));
	bm_stats_get(bm, &s1);
	assert_int_equal(resident(f), 0);
	assert_int_equal(s1.read_through - s0.read_through, 1 + sizeof(buf) / 4096);
	/* A write loads its page (it goes through the journal); the read
	 * after it takes that page from the pool, the others from the image. */
	memcpy(buf + 8192 + 5, "kernel", 6);
	assert_int_equal(fs_write(g, f, 8192 + 5, "kernel", 6), 6);
	assert_int_equal(resident(f), 1);
	bm_stats_get(bm, &s0);
	assert_int_equal(fs_read(g, f, 0, sizeof(back), back), (ssize_t)sizeof(back));
	assert_memory_equal(back, buf, sizeof(buf));
	bm_stats_get(bm, &s1);
	assert_int_equal(s1.read_through - s0.read_through, sizeof(buf) / 4096 - 1);
	assert_int_equal(resident(f), 1);

	/* cache=both loads what it reads. */
	fs_cache_mode_set(FS_CACHE_BOTH);
	assert_int_equal(fs_read(g, f, 0, sizeof(back), back), (ssize_t)sizeof(back));
	assert_memory_equal(back, buf, sizeof(buf));
	assert_int_equal(resident(f), sizeof(buf) / 4096);
}

static void t_threads(void **state)
{
	pthread_t t[4];
	struct worker w[4];

	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.id = i};
		pthread_create(&t[i], NULL, worker_fn, &w[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].err, 0);
	}
}

static void t_stats(void **state)
{
	char buf[65536];
	fs_count(g, FS_REQ_READ);
	ssize_t n = fs_stats_render(g, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = 0;
	assert_non_null(strstr(buf, "# TYPE virtuscale_pool_capacity_pages gauge\n"));
	assert_non_null(strstr(buf, "virtuscale_backend_info{backend=\"madvise\"} 1\n"));
	assert_non_null(strstr(buf, "virtuscale_fuse_requests_total{op=\"read\"} "));
	assert_non_null(strstr(buf, "# TYPE virtuscale_cache_mode_info gauge\n"
				    "virtuscale_cache_mode_info{mode=\"both\"} 1\n"));
	fs_cache_mode_set(FS_CACHE_POOL);
	n = fs_stats_render(g, buf, sizeof(buf) - 1);
	fs_cache_mode_set(FS_CACHE_BOTH);
	assert_true(n > 0);
	buf[n] = 0;
	assert_non_null(strstr(buf, "virtuscale_cache_mode_info{mode=\"pool\"} 1\n"));
	assert_int_equal(fs_stats_render(g, buf, 10), -ENOBUFS);
	assert_int_equal(fs_control(g, "flush\n", 6), 0);
	assert_int_equal(fs_control(g, "evict", 5), 0);
	assert_int_equal(fs_control(g, "bogus\n", 6), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_names),
	    cmocka_unit_test(t_rename),
	    cmocka_unit_test(t_readdir),
	    cmocka_unit_test(t_data),
	    cmocka_unit_test(t_xattr),
	    cmocka_unit_test(t_kernel_cmtime),
	    cmocka_unit_test(t_unlinked_open),
	    cmocka_unit_test(t_orphan_after_crash),
	    cmocka_unit_test(t_persist),
	    cmocka_unit_test(t_enospc),
	    cmocka_unit_test(t_read_without_pins),
	    cmocka_unit_test(t_cache_kernel),
	    cmocka_unit_test(t_threads),
	    cmocka_unit_test(t_stats),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
