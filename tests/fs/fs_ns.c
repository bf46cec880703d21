/*
 * fs_ns.c - namespace operations on a mounted image: mkdir/rmdir/unlink
 * errors, mknod of special files, hard links, symlinks, every rename flavour,
 * readdir of a large directory (with telldir/seekdir and concurrent
 * changes) and the 255-byte name limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "vt_harness.h"
#include "vt_check.h"

static struct vt_fs g_fs;

/* Paths below a test's directory (short: on nearly every line). */
#define P vt_pathf

static struct stat lstat_of(const char *path)
{
	struct stat st;

	VT_OK(lstat(path, &st));
	return st;
}

static void touch(const char *path, const char *content)
{
	VT_OK(vt_write_file(path, content, strlen(content)));
}

static void expect_content(const char *path, const char *want)
{
	char buf[256];

	VT_EQ(vt_read_file(path, buf, sizeof(buf)), strlen(want));
	assert_string_equal(buf, want);
}

static void t_mkdir_rmdir(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "dirs");
	struct stat st;

	assert_non_null(d);
	assert_int_equal(lstat_of(d).st_nlink, 2);
	VT_OK(mkdir(P(d, "a"), 0750));
	st = lstat_of(P(d, "a"));
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(st.st_nlink, 2);
	/* A subdirectory adds one link to its parent (its ".."). */
	assert_int_equal(lstat_of(d).st_nlink, 3);
	VT_OK(mkdir(P(d, "a/b"), 0755));
	assert_int_equal(lstat_of(P(d, "a")).st_nlink, 3);
	assert_int_equal(lstat_of(P(d, "a/b/..")).st_ino, lstat_of(P(d, "a")).st_ino);
	assert_int_equal(lstat_of(P(d, "a/b/../..")).st_ino, lstat_of(d).st_ino);

	VT_ERR(mkdir(P(d, "a"), 0755), EEXIST);
	touch(P(d, "f"), "x");
	VT_ERR(mkdir(P(d, "f"), 0755), EEXIST);
	VT_ERR(mkdir(P(d, "f/x"), 0755), ENOTDIR);
	VT_ERR(mkdir(P(d, "missing/x"), 0755), ENOENT);
	VT_OK(symlink("a", P(d, "ln")));
	VT_ERR(mkdir(P(d, "ln"), 0755), EEXIST);

	VT_ERR(rmdir(P(d, "a")), ENOTEMPTY);
	VT_ERR(rmdir(P(d, "f")), ENOTDIR);
	VT_ERR(rmdir(P(d, "ln")), ENOTDIR);
	VT_ERR(rmdir(P(d, "missing")), ENOENT);
	VT_ERR(rmdir(P(d, "a/b/.")), EINVAL);
	VT_ERR(rmdir(P(d, "a/b/..")), ENOTEMPTY);
	/* A directory holding only a file is not empty either. */
	touch(P(d, "a/b/g"), "");
	VT_ERR(rmdir(P(d, "a/b")), ENOTEMPTY);
	VT_OK(unlink(P(d, "a/b/g")));
	VT_OK(rmdir(P(d, "a/b")));
	assert_int_equal(lstat_of(P(d, "a")).st_nlink, 2);
	VT_OK(rmdir(P(d, "a")));
	assert_int_equal(lstat_of(d).st_nlink, 2);
	VT_ERR(lstat(P(d, "a"), &st), ENOENT);

	/* A removed directory that is still open reads as empty and refuses
	 * new entries. */
	VT_OK(mkdir(P(d, "gone"), 0755));
	int dfd = VT_OK(open(P(d, "gone"), O_RDONLY | O_DIRECTORY));

	VT_OK(rmdir(P(d, "gone")));
	VT_ERR(openat(dfd, "new", O_CREAT | O_WRONLY, 0644), ENOENT);
	VT_ERR(mkdirat(dfd, "new", 0755), ENOENT);
	VT_OK(fstat(dfd, &st));
	assert_int_equal(st.st_nlink, 0);
	VT_OK(close(dfd));
}

static void t_unlink(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "unlink");

	assert_non_null(d);
	VT_OK(mkdir(P(d, "sub"), 0755));
	touch(P(d, "f"), "data");
	VT_ERR(unlink(P(d, "sub")), EISDIR);
	VT_ERR(unlink(P(d, "missing")), ENOENT);
	VT_ERR(unlink(P(d, "f/x")), ENOTDIR);
	VT_ERR(unlinkat(AT_FDCWD, P(d, "f"), AT_REMOVEDIR), ENOTDIR);
	VT_OK(unlinkat(AT_FDCWD, P(d, "sub"), AT_REMOVEDIR));
	/* Unlinking a symlink removes the link, not its target. */
	VT_OK(symlink("f", P(d, "ln")));
	VT_OK(unlink(P(d, "ln")));
	expect_content(P(d, "f"), "data");
	VT_OK(unlink(P(d, "f")));
	VT_ERR(unlink(P(d, "f")), ENOENT);
	/* The name can be reused at once, for any type. */
	VT_OK(mkdir(P(d, "f"), 0755));
	VT_OK(rmdir(P(d, "f")));
	touch(P(d, "f"), "again");
	expect_content(P(d, "f"), "again");
}

static void t_mknod(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "mknod");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	char buf[16];
	int r, w, s, c, a;

	assert_non_null(d);
	/* FIFO: the type survives, and it works as a pipe. */
	VT_OK(mkfifo(P(d, "fifo"), 0640));
	st = lstat_of(P(d, "fifo"));
	assert_true(S_ISFIFO(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_size, 0);
	r = VT_OK(open(P(d, "fifo"), O_RDONLY | O_NONBLOCK));
	w = VT_OK(open(P(d, "fifo"), O_WRONLY));
	VT_EQ(write(w, "pipe", 4), 4);
	VT_EQ(read(r, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "pipe", 4);
	VT_OK(close(w));
	VT_OK(close(r));

	/* Socket node by mknod, and by bind() of a unix socket. */
	VT_OK(mknod(P(d, "sock"), S_IFSOCK | 0600, 0));
	assert_true(S_ISSOCK(lstat_of(P(d, "sock")).st_mode));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", P(d, "bound"));
	if (strlen(P(d, "bound")) < sizeof(sa.sun_path)) {
		s = VT_OK(socket(AF_UNIX, SOCK_STREAM, 0));
		VT_OK(bind(s, (struct sockaddr *)&sa, sizeof(sa)));
		VT_OK(listen(s, 1));
		assert_true(S_ISSOCK(lstat_of(P(d, "bound")).st_mode));
		c = VT_OK(socket(AF_UNIX, SOCK_STREAM, 0));
		VT_OK(connect(c, (struct sockaddr *)&sa, sizeof(sa)));
		a = VT_OK(accept(s, NULL, NULL));
		VT_EQ(write(c, "sock", 4), 4);
		VT_EQ(read(a, buf, sizeof(buf)), 4);
		assert_memory_equal(buf, "sock", 4);
		close(a);
		close(c);
		close(s);
	}

	/* Device nodes keep their type and number (the mount is nodev, so
	 * they are not opened). */
	VT_OK(mknod(P(d, "null"), S_IFCHR | 0666, makedev(1, 3)));
	st = lstat_of(P(d, "null"));
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(major(st.st_rdev), 1);
	assert_int_equal(minor(st.st_rdev), 3);
	VT_OK(mknod(P(d, "blk"), S_IFBLK | 0600, makedev(259, 70000)));
	st = lstat_of(P(d, "blk"));
	assert_true(S_ISBLK(st.st_mode));
	assert_int_equal(major(st.st_rdev), 259);
	assert_int_equal(minor(st.st_rdev), 70000);

	/* mknod of a regular file, and the usual collisions. */
	VT_OK(mknod(P(d, "reg"), S_IFREG | 0600, 0));
	st = lstat_of(P(d, "reg"));
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 0);
	VT_ERR(mknod(P(d, "reg"), S_IFIFO | 0600, 0), EEXIST);
	VT_ERR(mkfifo(P(d, "null"), 0600), EEXIST);
	VT_ERR(mknod(P(d, "reg/x"), S_IFIFO | 0600, 0), ENOTDIR);
	VT_OK(unlink(P(d, "null")));
	VT_OK(unlink(P(d, "fifo")));
}

static void t_link(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "link");
	struct stat a, b;

	assert_non_null(d);
	VT_OK(mkdir(P(d, "sub"), 0755));
	touch(P(d, "f"), "one");
	VT_OK(link(P(d, "f"), P(d, "sub/g")));
	a = lstat_of(P(d, "f"));
	b = lstat_of(P(d, "sub/g"));
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_nlink, 2);
	assert_int_equal(b.st_nlink, 2);
	/* One inode: a write through either name shows through the other. */
	touch(P(d, "sub/g"), "two");
	expect_content(P(d, "f"), "two");

	for (int i = 0; i < 50; i++)
		VT_OK(link(P(d, "f"), P(d, "l%d", i)));
	assert_int_equal(lstat_of(P(d, "sub/g")).st_nlink, 52);
	for (int i = 0; i < 50; i++)
		VT_OK(unlink(P(d, "l%d", i)));
	assert_int_equal(lstat_of(P(d, "f")).st_nlink, 2);

	VT_OK(unlink(P(d, "f")));
	b = lstat_of(P(d, "sub/g"));
	assert_int_equal(b.st_nlink, 1);
	assert_int_equal(b.st_ino, a.st_ino);
	expect_content(P(d, "sub/g"), "two");

	VT_ERR(link(P(d, "sub"), P(d, "dirlink")), EPERM);
	touch(P(d, "other"), "");
	VT_ERR(link(P(d, "sub/g"), P(d, "other")), EEXIST);
	VT_ERR(link(P(d, "missing"), P(d, "x")), ENOENT);
	VT_ERR(link(P(d, "other"), P(d, "missing/x")), ENOENT);

	/* link() does not follow a symlink: the new name is the symlink. */
	VT_OK(symlink("sub/g", P(d, "sl")));
	VT_OK(link(P(d, "sl"), P(d, "sl2")));
	a = lstat_of(P(d, "sl2"));
	assert_true(S_ISLNK(a.st_mode));
	assert_int_equal(a.st_nlink, 2);
	expect_content(P(d, "sl2"), "two");
}

static void t_symlink(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "symlink");
	static char target[4097], buf[4200];
	struct stat st;
	int fd;

	assert_non_null(d);
	VT_OK(mkdir(P(d, "dir"), 0755));
	touch(P(d, "dir/f"), "via link");
	VT_OK(symlink("dir", P(d, "ld")));
	VT_OK(symlink("dir/f", P(d, "lf")));
	VT_OK(symlink("nowhere", P(d, "dangling")));

	st = lstat_of(P(d, "lf"));
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(st.st_size, 5);
	VT_EQ(readlink(P(d, "lf"), buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "dir/f", 5);
	/* A short buffer truncates silently. */
	VT_EQ(readlink(P(d, "lf"), buf, 3), 3);
	assert_memory_equal(buf, "dir", 3);
	expect_content(P(d, "lf"), "via link");
	expect_content(P(d, "ld/f"), "via link");
	VT_OK(stat(P(d, "ld"), &st));
	assert_true(S_ISDIR(st.st_mode));
	VT_ERR(stat(P(d, "dangling"), &st), ENOENT);
	VT_ERR(open(P(d, "lf"), O_RDONLY | O_NOFOLLOW), ELOOP);
	VT_ERR(readlink(P(d, "dir/f"), buf, sizeof(buf)), EINVAL);
	VT_ERR(symlink("x", P(d, "lf")), EEXIST);
	VT_ERR(symlink("", P(d, "empty")), ENOENT);

	/* Loops are detected. */
	VT_OK(symlink("loop2", P(d, "loop1")));
	VT_OK(symlink("loop1", P(d, "loop2")));
	VT_ERR(open(P(d, "loop1"), O_RDONLY), ELOOP);

	/* Longest target the kernel accepts: 4095 bytes (PATH_MAX with NUL). */
	for (int i = 0; i < 4095; i++)
		target[i] = (i % 64 == 63) ? '/' : 'a' + i % 26;
	target[4095] = 0;
	VT_OK(symlink(target, P(d, "long")));
	st = lstat_of(P(d, "long"));
	assert_int_equal(st.st_size, 4095);
	VT_EQ(readlink(P(d, "long"), buf, sizeof(buf)), 4095);
	assert_memory_equal(buf, target, 4095);
	target[4095] = 'z';
	target[4096] = 0;
	VT_ERR(symlink(target, P(d, "toolong")), ENAMETOOLONG);

	/* Targets of every length up to a few pages' worth of records. */
	for (int len = 1; len < 4095; len = len * 3 + 1) {
		memset(target, 'q', len);
		target[len] = 0;
		VT_OK(symlink(target, P(d, "len%d", len)));
		VT_EQ(readlink(P(d, "len%d", len), buf, sizeof(buf)), len);
		assert_memory_equal(buf, target, len);
	}

	/* O_CREAT through a symlink to a missing file in an existing dir. */
	VT_OK(symlink("dir/created", P(d, "lc")));
	fd = VT_OK(open(P(d, "lc"), O_CREAT | O_WRONLY, 0644));
	VT_OK(close(fd));
	assert_true(S_ISREG(lstat_of(P(d, "dir/created")).st_mode));
}

static int renameat2_(const char *a, const char *b, unsigned flags)
{
	return renameat2(AT_FDCWD, a, AT_FDCWD, b, flags);
}

static void t_rename_files(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "rename");
	struct stat a, b, old;
	int fd;

	assert_non_null(d);
	VT_OK(mkdir(P(d, "sub"), 0755));
	touch(P(d, "a"), "A");
	touch(P(d, "b"), "B");
	a = lstat_of(P(d, "a"));
	old = lstat_of(P(d, "b"));

	/* Overwrite: b becomes a's inode; the replaced inode lives on while
	 * it is open. */
	fd = VT_OK(open(P(d, "b"), O_RDONLY));
	VT_OK(rename(P(d, "a"), P(d, "b")));
	VT_ERR(lstat(P(d, "a"), &b), ENOENT);
	b = lstat_of(P(d, "b"));
	assert_int_equal(b.st_ino, a.st_ino);
	expect_content(P(d, "b"), "A");
	{
		char c;
		struct stat st;

		VT_EQ(pread(fd, &c, 1, 0), 1);
		assert_int_equal(c, 'B');
		VT_OK(fstat(fd, &st));
		assert_int_equal(st.st_ino, old.st_ino);
		assert_int_equal(st.st_nlink, 0);
	}
	VT_OK(close(fd));

	/* Across directories. */
	VT_OK(rename(P(d, "b"), P(d, "sub/moved")));
	expect_content(P(d, "sub/moved"), "A");
	assert_int_equal(lstat_of(P(d, "sub/moved")).st_ino, a.st_ino);

	/* Same name, and two links of one inode: both are no-ops. */
	VT_OK(rename(P(d, "sub/moved"), P(d, "sub/moved")));
	VT_OK(link(P(d, "sub/moved"), P(d, "hl")));
	VT_OK(rename(P(d, "hl"), P(d, "sub/moved")));
	assert_int_equal(lstat_of(P(d, "hl")).st_nlink, 2);
	assert_int_equal(lstat_of(P(d, "sub/moved")).st_nlink, 2);

	/* RENAME_NOREPLACE. */
	touch(P(d, "c"), "C");
	VT_ERR(renameat2_(P(d, "c"), P(d, "hl"), RENAME_NOREPLACE), EEXIST);
	expect_content(P(d, "c"), "C");
	VT_OK(renameat2_(P(d, "c"), P(d, "c2"), RENAME_NOREPLACE));
	expect_content(P(d, "c2"), "C");
	VT_ERR(renameat2_(P(d, "c2"), P(d, "hl"), RENAME_NOREPLACE | RENAME_EXCHANGE), EINVAL);

	/* RENAME_EXCHANGE of two files in different directories. */
	a = lstat_of(P(d, "c2"));
	b = lstat_of(P(d, "sub/moved"));
	VT_OK(renameat2_(P(d, "c2"), P(d, "sub/moved"), RENAME_EXCHANGE));
	expect_content(P(d, "c2"), "A");
	expect_content(P(d, "sub/moved"), "C");
	assert_int_equal(lstat_of(P(d, "c2")).st_ino, b.st_ino);
	assert_int_equal(lstat_of(P(d, "sub/moved")).st_ino, a.st_ino);
	VT_ERR(renameat2_(P(d, "c2"), P(d, "nothere"), RENAME_EXCHANGE), ENOENT);

	/* Errors. */
	VT_ERR(rename(P(d, "missing"), P(d, "x")), ENOENT);
	VT_ERR(rename(P(d, "c2"), P(d, "missing/x")), ENOENT);
	VT_ERR(rename(P(d, "c2"), P(d, "sub")), EISDIR);
	VT_ERR(rename(P(d, "sub"), P(d, "c2")), ENOTDIR);
	VT_ERR(rename(P(d, "c2"), P(d, "c2/x")), ENOTDIR);

	/* Symlinks are renamed, not followed. */
	VT_OK(symlink("c2", P(d, "sl")));
	VT_OK(rename(P(d, "sl"), P(d, "sub/sl")));
	assert_true(S_ISLNK(lstat_of(P(d, "sub/sl")).st_mode));
	assert_true(S_ISREG(lstat_of(P(d, "c2")).st_mode));
}

static void t_rename_dirs(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "renamedir");
	struct stat st;
	ino_t p1, p2, x;

	assert_non_null(d);
	VT_OK(mkdir(P(d, "p1"), 0755));
	VT_OK(mkdir(P(d, "p2"), 0755));
	VT_OK(mkdir(P(d, "p1/x"), 0755));
	touch(P(d, "p1/x/file"), "inside");
	VT_OK(mkdir(P(d, "p1/x/deep"), 0755));
	p1 = lstat_of(P(d, "p1")).st_ino;
	p2 = lstat_of(P(d, "p2")).st_ino;
	x = lstat_of(P(d, "p1/x")).st_ino;

	/* Moving a directory moves its ".." link between the parents. */
	VT_OK(rename(P(d, "p1/x"), P(d, "p2/x")));
	assert_int_equal(lstat_of(P(d, "p1")).st_nlink, 2);
	assert_int_equal(lstat_of(P(d, "p2")).st_nlink, 3);
	assert_int_equal(lstat_of(P(d, "p2/x/..")).st_ino, p2);
	assert_int_equal(lstat_of(P(d, "p2/x")).st_ino, x);
	expect_content(P(d, "p2/x/file"), "inside");
	VT_OK(mkdir(P(d, "p2/x/deep/more"), 0755));

	/* Into itself or its own subdirectory. */
	VT_ERR(rename(P(d, "p2/x"), P(d, "p2/x/deep/x")), EINVAL);
	VT_ERR(rename(P(d, "p2"), P(d, "p2/x/y")), EINVAL);
	/* Onto an ancestor (which is never empty). */
	VT_ERR(rename(P(d, "p2/x/deep"), P(d, "p2/x")), ENOTEMPTY);

	/* Over a non-empty directory, an empty one, a file. */
	VT_OK(mkdir(P(d, "full"), 0755));
	touch(P(d, "full/f"), "");
	VT_ERR(rename(P(d, "p2/x"), P(d, "full")), ENOTEMPTY);
	VT_ERR(renameat2_(P(d, "p2/x"), P(d, "full"), RENAME_NOREPLACE), EEXIST);
	VT_OK(mkdir(P(d, "empty"), 0755));
	VT_OK(rename(P(d, "p2/x"), P(d, "empty")));
	assert_int_equal(lstat_of(P(d, "empty")).st_ino, x);
	assert_int_equal(lstat_of(P(d, "empty/..")).st_ino, lstat_of(d).st_ino);
	assert_int_equal(lstat_of(P(d, "p2")).st_nlink, 2);
	/* d holds p1, p2, full, empty: 2 + 4. */
	assert_int_equal(lstat_of(d).st_nlink, 6);
	touch(P(d, "file"), "f");
	VT_ERR(rename(P(d, "empty"), P(d, "file")), ENOTDIR);
	VT_ERR(rename(P(d, "file"), P(d, "empty")), EISDIR);

	/* RENAME_EXCHANGE of a file and a directory in different parents:
	 * the link counts and ".." follow the directory. */
	VT_OK(renameat2_(P(d, "file"), P(d, "p1"), RENAME_EXCHANGE)); /* same parent */
	assert_true(S_ISDIR(lstat_of(P(d, "file")).st_mode));
	assert_true(S_ISREG(lstat_of(P(d, "p1")).st_mode));
	expect_content(P(d, "p1"), "f");
	assert_int_equal(lstat_of(P(d, "file")).st_ino, p1);
	VT_OK(renameat2_(P(d, "p1"), P(d, "empty/deep"), RENAME_EXCHANGE)); /* cross parent */
	st = lstat_of(P(d, "p1"));
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(lstat_of(P(d, "p1/..")).st_ino, lstat_of(d).st_ino);
	assert_true(S_ISDIR(lstat_of(P(d, "p1/more")).st_mode));
	expect_content(P(d, "empty/deep"), "f");
	/* empty lost its subdirectory deep; d gained one (p1 is a dir again). */
	assert_int_equal(lstat_of(P(d, "empty")).st_nlink, 2);
	assert_int_equal(lstat_of(d).st_nlink, 7);
	/* Exchanging a directory into its own subtree is refused. */
	VT_ERR(renameat2_(P(d, "p1"), P(d, "p1/more"), RENAME_EXCHANGE), EINVAL);

	/* Two directories exchanged: both subtrees intact. */
	touch(P(d, "full/g"), "G");
	VT_OK(renameat2_(P(d, "full"), P(d, "p1"), RENAME_EXCHANGE));
	expect_content(P(d, "p1/g"), "G");
	assert_true(S_ISDIR(lstat_of(P(d, "full/more")).st_mode));
}

/* Names of varying lengths, so directory records straddle pages. */
static void rd_name(char *buf, size_t cap, int i)
{
	int pad = (i * 37) % 180;

	snprintf(
	    buf, cap, "e%05d-%.*s", i, pad,
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxx");
}

/* Index of an "e%05d-..." name, or -1. */
static int rd_index(const char *name)
{
	if (name[0] != 'e' || strlen(name) < 7 || name[6] != '-')
		return -1;
	return atoi(name + 1);
}

#define NDIRENT 5000

static const char *make_big_dir(const char *rel)
{
	const char *d = vt_fresh_dir(&g_fs, rel);
	char name[256];

	assert_non_null(d);
	for (int i = 0; i < NDIRENT; i++) {
		int fd;

		rd_name(name, sizeof(name), i);
		if (i % 500 == 0) {
			VT_OK(mkdir(P(d, "%s", name), 0755));
			continue;
		}
		fd = VT_OK(open(P(d, "%s", name), O_CREAT | O_WRONLY, 0644));
		VT_OK(close(fd));
	}
	return d;
}

static void t_readdir_big(void **state)
{
	const char *d = make_big_dir("bigdir");
	static unsigned char seen[NDIRENT];
	char name[256];
	struct dirent *de;
	int dots = 0, dotdots = 0, count = 0;
	DIR *dir;

	memset(seen, 0, sizeof(seen));
	dir = opendir(d);
	assert_non_null(dir);
	while ((errno = 0, de = readdir(dir))) {
		struct stat st;
		int i;

		if (!strcmp(de->d_name, ".")) {
			dots++;
			continue;
		}
		if (!strcmp(de->d_name, "..")) {
			dotdots++;
			continue;
		}
		i = rd_index(de->d_name);
		if (i < 0 || i >= NDIRENT)
			fail_msg("unexpected entry '%s'", de->d_name);
		rd_name(name, sizeof(name), i);
		if (strcmp(name, de->d_name))
			fail_msg("entry '%s' is not a name we created", de->d_name);
		if (seen[i]++)
			fail_msg("entry '%s' returned twice", de->d_name);
		count++;
		/* d_type and d_ino must agree with lstat. */
		VT_OK(fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW));
		assert_int_equal(de->d_ino, st.st_ino);
		assert_int_equal(de->d_type, i % 500 == 0 ? DT_DIR : DT_REG);
	}
	assert_int_equal(errno, 0);
	closedir(dir);
	assert_int_equal(dots, 1);
	assert_int_equal(dotdots, 1);
	assert_int_equal(count, NDIRENT);
}

/* Read entries into names[] (skipping dots) until @n or the end; returns
 * how many. */
static int read_names(DIR *dir, char names[][256], int n)
{
	struct dirent *de;
	int got = 0;

	while (got < n && (de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(names[got++], 256, "%s", de->d_name);
	}
	return got;
}

static void t_telldir_seekdir(void **state)
{
	const char *d = vt_path(&g_fs, "bigdir");
	static char first[20][256], again[20][256], skip[1500][256];
	long pos;
	DIR *dir;

	/* Reuses t_readdir_big's directory. */
	dir = opendir(d);
	assert_non_null(dir);
	assert_int_equal(read_names(dir, skip, 1234), 1234);
	pos = telldir(dir);
	assert_true(pos >= 0);
	assert_int_equal(read_names(dir, first, 20), 20);

	/* Back to the saved position in the same stream. */
	seekdir(dir, pos);
	assert_int_equal(read_names(dir, again, 20), 20);
	for (int i = 0; i < 20; i++)
		assert_string_equal(first[i], again[i]);

	/* The position is a cookie that a new stream accepts too. */
	closedir(dir);
	dir = opendir(d);
	assert_non_null(dir);
	seekdir(dir, pos);
	assert_int_equal(read_names(dir, again, 20), 20);
	for (int i = 0; i < 20; i++)
		assert_string_equal(first[i], again[i]);

	/* rewinddir starts over with the same first entries. */
	rewinddir(dir);
	assert_int_equal(read_names(dir, again, 20), 20);
	for (int i = 0; i < 20; i++)
		assert_string_equal(skip[i], again[i]);
	closedir(dir);
}

static void t_readdir_while_changing(void **state)
{
	const char *d = make_big_dir("churn");
	static unsigned char seen[NDIRENT];
	static unsigned char seen_new[1000];
	char name[256];
	int got = 0;
	DIR *dir;

	memset(seen, 0, sizeof(seen));
	memset(seen_new, 0, sizeof(seen_new));
	dir = opendir(d);
	assert_non_null(dir);
	for (;;) {
		struct dirent *de;
		int i;

		if (got == NDIRENT / 2) {
			/* Halfway: add 1000 names and remove every 10th original
			 * we have not seen yet.  Originals that stay must each
			 * still come exactly once; new ones at most once. */
			for (int k = 0; k < 1000; k++) {
				int fd = VT_OK(open(P(d, "new%04d", k), O_CREAT | O_WRONLY, 0644));

				VT_OK(close(fd));
			}
			for (i = 1; i < NDIRENT; i += 10) {
				if (seen[i] || i % 500 == 0)
					continue;
				rd_name(name, sizeof(name), i);
				VT_OK(unlink(P(d, "%s", name)));
				seen[i] = 2; /* removed: may or may not appear */
			}
		}
		errno = 0;
		de = readdir(dir);
		if (!de)
			break;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!strncmp(de->d_name, "new", 3)) {
			int k = atoi(de->d_name + 3);

			if (seen_new[k]++)
				fail_msg("new entry '%s' returned twice", de->d_name);
			continue;
		}
		i = rd_index(de->d_name);
		if (i < 0 || i >= NDIRENT)
			fail_msg("unexpected entry '%s'", de->d_name);
		if (seen[i] == 1 || seen[i] == 3)
			fail_msg("entry '%s' returned twice", de->d_name);
		seen[i] = seen[i] == 2 ? 3 : 1;
		got++;
	}
	assert_int_equal(errno, 0);
	closedir(dir);
	for (int i = 0; i < NDIRENT; i++)
		if (seen[i] == 0)
			fail_msg("entry %d was never returned", i);
}

static void t_name_max(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "names");
	char n255[256], n255b[256], n256[257];
	struct dirent *de;
	bool found = false;
	DIR *dir;
	int fd;

	assert_non_null(d);
	memset(n255, 'n', 255);
	n255[255] = 0;
	memset(n255b, 'm', 255);
	n255b[255] = 0;
	memset(n256, 'o', 256);
	n256[256] = 0;

	fd = VT_OK(open(P(d, "%s", n255), O_CREAT | O_WRONLY, 0644));
	VT_EQ(write(fd, "max", 3), 3);
	VT_OK(close(fd));
	expect_content(P(d, "%s", n255), "max");
	dir = opendir(d);
	assert_non_null(dir);
	while ((de = readdir(dir)))
		if (!strcmp(de->d_name, n255))
			found = true;
	closedir(dir);
	assert_true(found);
	VT_OK(rename(P(d, "%s", n255), P(d, "%s", n255b)));
	VT_OK(link(P(d, "%s", n255b), P(d, "%s", n255)));
	VT_OK(unlink(P(d, "%s", n255b)));
	VT_OK(mkdir(P(d, "%s", n255b), 0755));
	char up[300];

	snprintf(up, sizeof(up), "../%s", n255);
	VT_OK(symlink(up, P(d, "%s/%s", n255b, n255)));
	expect_content(P(d, "%s/%s", n255b, n255), "max");
	VT_OK(unlink(P(d, "%s/%s", n255b, n255)));
	VT_OK(rmdir(P(d, "%s", n255b)));

	struct stat st;

	VT_ERR(open(P(d, "%s", n256), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
	VT_ERR(lstat(P(d, "%s", n256), &st), ENAMETOOLONG);
	VT_ERR(mkdir(P(d, "%s", n256), 0755), ENAMETOOLONG);
	VT_ERR(symlink("x", P(d, "%s", n256)), ENAMETOOLONG);
	VT_ERR(link(P(d, "%s", n255), P(d, "%s", n256)), ENAMETOOLONG);
	VT_ERR(rename(P(d, "%s", n255), P(d, "%s", n256)), ENAMETOOLONG);
	VT_ERR(mknod(P(d, "%s", n256), S_IFIFO | 0644, 0), ENAMETOOLONG);
	expect_content(P(d, "%s", n255), "max");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_mkdir_rmdir),	 cmocka_unit_test(t_unlink),
	    cmocka_unit_test(t_mknod),		 cmocka_unit_test(t_link),
	    cmocka_unit_test(t_symlink),	 cmocka_unit_test(t_rename_files),
	    cmocka_unit_test(t_rename_dirs),	 cmocka_unit_test(t_readdir_big),
	    cmocka_unit_test(t_telldir_seekdir), cmocka_unit_test(t_readdir_while_changing),
	    cmocka_unit_test(t_name_max),
	};
	int r = vt_fs_start(&g_fs, "256M", NULL);

	if (r != 0)
		return r == VT_SKIP ? VT_SKIP : 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	if (vt_fs_cleanup(&g_fs) != 0 && r == 0)
		r = 1;
	return r;
}
