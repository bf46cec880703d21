/*
 * fs_perm.c - permission semantics, checked from an unprivileged process:
 * the tests run as root, so each check forks a child that drops to nobody.
 * The mount uses allow_other (otherwise FUSE refuses every other user) and
 * the daemon's default_permissions, so the kernel enforces modes; the
 * daemon's part is ownership of new inodes, setgid inheritance and clearing
 * suid/sgid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "vt_harness.h"
#include "vt_check.h"

#define NOBODY	VT_NOBODY_UID
#define NOGROUP VT_NOBODY_GID

static struct vt_fs g_fs;
static const char *g_dir; /* the current test's directory */

static const char *P(const char *fmt, ...)
{
	static char bufs[8][PATH_MAX];
	static unsigned next;
	char *b = bufs[next++ % 8];
	char rel[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(b, PATH_MAX, "%s/%s", g_dir, rel);
	return b;
}

static struct stat lstat_of(const char *path)
{
	struct stat st;

	VT_OK(lstat(path, &st));
	return st;
}

static void as_nobody(int (*fn)(void *), const char *what)
{
	int r = vt_run_as(NOBODY, NOGROUP, fn, NULL);

	if (r != 0)
		fail_msg("%s: unprivileged child failed (exit %d); see the line above", what, r);
}

/* In a child: expect -1/errno. */
#define C_ERR(expr, err)                                                                           \
	do {                                                                                       \
		errno = 0;                                                                         \
		long c_r_ = (long)(expr);                                                          \
		if (c_r_ != -1 || errno != (err)) {                                                \
			fprintf(stderr, "%s:%d: %s = %ld errno %s, want errno %s\n", __FILE__,     \
				__LINE__, #expr, c_r_, vt_errname(errno), vt_errname(err));        \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

#define C_OK(expr)                                                                                 \
	({                                                                                         \
		errno = 0;                                                                         \
		long c_r_ = (long)(expr);                                                          \
		if (c_r_ == -1) {                                                                  \
			fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,       \
				vt_errname(errno));                                                \
			return 1;                                                                  \
		}                                                                                  \
		c_r_;                                                                              \
	})

static int child_can_see(void *arg)
{
	struct stat st;

	if (lstat(g_dir, &st) != 0) {
		fprintf(stderr, "nobody cannot stat %s: %s (mount without allow_other?)\n", g_dir,
			vt_errname(errno));
		return 1;
	}
	return 0;
}

static void setup_dir(const char *name)
{
	g_dir = vt_fresh_dir(&g_fs, name);
	assert_non_null(g_dir);
	as_nobody(child_can_see, "preflight");
}

static int child_denied(void *arg)
{
	struct timespec ts[2] = {{.tv_sec = 1}, {.tv_sec = 2}};
	char buf[16];
	int fd;

	/* Readable, not writable. */
	fd = C_OK(open(P("rootfile"), O_RDONLY));
	VT_CHILD_CHECK(read(fd, buf, sizeof(buf)) == 6 && !memcmp(buf, "secret", 6));
	close(fd);
	C_ERR(open(P("rootfile"), O_WRONLY), EACCES);
	C_ERR(open(P("rootfile"), O_RDWR | O_TRUNC), EACCES);
	C_ERR(truncate(P("rootfile"), 0), EACCES);
	/* No write permission on the directory: no create, unlink, rename. */
	C_ERR(open(P("new"), O_CREAT | O_WRONLY, 0644), EACCES);
	C_ERR(mkdir(P("newdir"), 0755), EACCES);
	C_ERR(unlink(P("rootfile")), EACCES);
	C_ERR(rename(P("rootfile"), P("moved")), EACCES);
	C_ERR(symlink("x", P("sl")), EACCES);
	/* Only the owner changes mode, owner and explicit times. */
	C_ERR(chmod(P("rootfile"), 0777), EPERM);
	C_ERR(chown(P("rootfile"), NOBODY, NOGROUP), EPERM);
	C_ERR(utimensat(AT_FDCWD, P("rootfile"), ts, 0), EPERM);
	C_ERR(utimensat(AT_FDCWD, P("rootfile"), NULL, 0), EACCES);
	C_ERR(setxattr(P("rootfile"), "user.x", "v", 1, 0), EACCES);
	/* A 0700 directory cannot be searched or listed. */
	C_ERR(lstat(P("private/f"), &(struct stat){0}), EACCES);
	C_ERR(open(P("private"), O_RDONLY | O_DIRECTORY), EACCES);
	/* A world-writable file: writes and "touch" are allowed, explicit
	 * times are not. */
	fd = C_OK(open(P("public"), O_WRONLY));
	VT_CHILD_CHECK(write(fd, "pub", 3) == 3);
	close(fd);
	C_OK(utimensat(AT_FDCWD, P("public"), NULL, 0));
	C_ERR(utimensat(AT_FDCWD, P("public"), ts, 0), EPERM);
	return 0;
}

static void t_denied(void **state)
{
	setup_dir("denied");
	VT_OK(vt_write_file(P("rootfile"), "secret", 6));
	VT_OK(chmod(P("rootfile"), 0644));
	VT_OK(mkdir(P("private"), 0700));
	VT_OK(vt_write_file(P("private/f"), "", 0));
	VT_OK(vt_write_file(P("public"), "", 0));
	VT_OK(chmod(P("public"), 0666));
	as_nobody(child_denied, "denied");
	assert_int_equal(lstat_of(P("public")).st_size, 3);
	assert_int_equal(lstat_of(P("rootfile")).st_mode & 07777, 0644);
}

static int child_sticky(void *arg)
{
	struct stat st;
	int fd;

	/* New inodes belong to the creator. */
	fd = C_OK(open(P("sticky/mine"), O_CREAT | O_WRONLY, 0640));
	close(fd);
	C_OK(lstat(P("sticky/mine"), &st));
	VT_CHILD_CHECK(st.st_uid == NOBODY && st.st_gid == NOGROUP);
	VT_CHILD_CHECK((st.st_mode & 07777) == 0640);
	C_OK(mkdir(P("sticky/mydir"), 0700));
	C_OK(lstat(P("sticky/mydir"), &st));
	VT_CHILD_CHECK(st.st_uid == NOBODY && st.st_gid == NOGROUP);
	C_OK(symlink("mine", P("sticky/mylink")));
	C_OK(lstat(P("sticky/mylink"), &st));
	VT_CHILD_CHECK(st.st_uid == NOBODY && st.st_gid == NOGROUP);
	/* The owner may chmod and set explicit times. */
	C_OK(chmod(P("sticky/mine"), 0600));
	C_OK(utimensat(AT_FDCWD, P("sticky/mine"),
		       (struct timespec[2]){{.tv_sec = 5}, {.tv_sec = 6}}, 0));
	/* Sticky directory: others' entries cannot be removed or renamed. */
	C_ERR(unlink(P("sticky/rootfile")), EPERM);
	C_ERR(rename(P("sticky/rootfile"), P("sticky/x")), EPERM);
	C_ERR(rename(P("sticky/mine"), P("sticky/rootfile")), EPERM);
	C_OK(rename(P("sticky/mine"), P("sticky/mine2")));
	C_OK(unlink(P("sticky/mine2")));
	C_OK(rmdir(P("sticky/mydir")));
	return 0;
}

static void t_sticky_and_owner(void **state)
{
	setup_dir("sticky_t");
	VT_OK(mkdir(P("sticky"), 0777));
	VT_OK(chmod(P("sticky"), 01777));
	VT_OK(vt_write_file(P("sticky/rootfile"), "r", 1));
	VT_OK(chmod(P("sticky/rootfile"), 0666));
	as_nobody(child_sticky, "sticky");
	assert_true(S_ISREG(lstat_of(P("sticky/rootfile")).st_mode));
	assert_int_equal(lstat_of(P("sticky/mylink")).st_uid, NOBODY);
}

static int child_write_suid(void *arg)
{
	int fd;

	fd = C_OK(open(P("own"), O_WRONLY));
	VT_CHILD_CHECK(pwrite(fd, "w", 1, 0) == 1);
	close(fd);
	fd = C_OK(open(P("rootowned"), O_WRONLY));
	VT_CHILD_CHECK(pwrite(fd, "w", 1, 0) == 1);
	close(fd);
	fd = C_OK(open(P("nogx"), O_WRONLY));
	VT_CHILD_CHECK(pwrite(fd, "w", 1, 0) == 1);
	close(fd);
	fd = C_OK(open(P("trunc"), O_WRONLY));
	C_OK(ftruncate(fd, 1));
	close(fd);
	return 0;
}

static void mkfile(const char *name, uid_t uid, gid_t gid, mode_t mode)
{
	VT_OK(vt_write_file(P("%s", name), "data", 4));
	VT_OK(chown(P("%s", name), uid, gid));
	VT_OK(chmod(P("%s", name), mode));
	assert_int_equal(lstat_of(P("%s", name)).st_mode & 07777, mode);
}

static void t_suid_cleared_on_write(void **state)
{
	int fd;

	setup_dir("suidw");
	mkfile("own", NOBODY, NOGROUP, 06755);
	mkfile("rootowned", 0, 0, 06777);
	mkfile("nogx", NOBODY, NOGROUP, 06745); /* sgid without group exec */
	mkfile("trunc", NOBODY, NOGROUP, 06755);
	mkfile("rootwrite", NOBODY, NOGROUP, 06755);
	as_nobody(child_write_suid, "write as nobody");
	assert_int_equal(lstat_of(P("own")).st_mode & 07777, 0755);
	assert_int_equal(lstat_of(P("rootowned")).st_mode & 07777, 0777);
	/* Without group-exec, S_ISGID marks mandatory locking, not privilege:
	 * only S_ISUID goes. */
	assert_int_equal(lstat_of(P("nogx")).st_mode & 07777, 02745);
	assert_int_equal(lstat_of(P("trunc")).st_mode & 07777, 0755);
	/* A writer with CAP_FSETID (root) keeps the bits. */
	fd = VT_OK(open(P("rootwrite"), O_WRONLY));
	VT_EQ(pwrite(fd, "r", 1, 0), 1);
	VT_OK(close(fd));
	assert_int_equal(lstat_of(P("rootwrite")).st_mode & 07777, 06755);
}

static int child_write_one(void *arg)
{
	int fd = C_OK(open(P("%s", (const char *)arg), O_WRONLY));

	VT_CHILD_CHECK(pwrite(fd, "w", 1, 0) == 1);
	close(fd);
	return 0;
}

/* The mode a stat shows right after another user's write cleared the
 * set-ID bits: the daemon cleared them on its own, so the kernel's cached
 * attributes (cached just before, by the stat here) must not outlive it.
 * statx asking for the mode alone is answered from that cache when it is
 * valid. */
static void t_suid_cleared_seen_at_once(void **state)
{
	struct statx sx;

	setup_dir("suidseen");
	for (int i = 0; i < 4; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%d", i);
		mkfile(name, NOBODY, NOGROUP, 06755);
		VT_OK(statx(AT_FDCWD, P("%s", name), 0, STATX_MODE, &sx));
		assert_int_equal(sx.stx_mode & 07777, 06755);
		if (vt_run_as(NOBODY, NOGROUP, child_write_one, name) != 0)
			fail_msg("write as nobody failed; see the line above");
		VT_OK(statx(AT_FDCWD, P("%s", name), 0, STATX_MODE, &sx));
		if ((sx.stx_mode & 07777) != 0755)
			fail_msg("%s: mode %04o after another user's write, want 0755", name,
				 sx.stx_mode & 07777);
		assert_int_equal(lstat_of(P("%s", name)).st_mode & 07777, 0755);
	}
}

static int child_strip_paths(void *arg)
{
	int fd;

	/* open(O_TRUNC): FUSE_OPEN_KILL_SUIDGID */
	fd = C_OK(open(P("otrunc"), O_WRONLY | O_TRUNC));
	close(fd);
	/* the capability goes with a write */
	fd = C_OK(open(P("capped"), O_WRONLY));
	VT_CHILD_CHECK(pwrite(fd, "w", 1, 0) == 1);
	close(fd);
	/* and with an O_DIRECT write, with the set-ID bits */
	void *blk = NULL;
	VT_CHILD_CHECK(posix_memalign(&blk, 4096, 4096) == 0);
	memset(blk, 'd', 4096);
	fd = C_OK(open(P("direct"), O_WRONLY | O_DIRECT));
	VT_CHILD_CHECK(pwrite(fd, blk, 4096, 0) == 4096);
	close(fd);
	free(blk);
	return 0;
}

/* The daemon strips powers itself when the kernel says so (it negotiates
 * FUSE_HANDLE_KILLPRIV_V2, fs/wire.c): each path that carries the request
 * ends with the bits and the capability gone; root (CAP_FSETID) keeps the
 * bits on O_TRUNC. */
static void t_privs_stripped_by_daemon(void **state)
{
	/* struct vfs_cap_data, revision 2: CAP_NET_BIND_SERVICE permitted
	 * and effective */
	static const uint32_t cap[5] = { 0x02000001, 1u << 10, 0, 0, 0 };
	char v[32];

	setup_dir("strip");
	mkfile("otrunc", NOBODY, NOGROUP, 06755);
	mkfile("capped", NOBODY, NOGROUP, 0755);
	VT_OK(setxattr(P("capped"), "security.capability", cap, sizeof(cap), 0));
	VT_EQ(getxattr(P("capped"), "security.capability", v, sizeof(v)), (ssize_t)sizeof(cap));
	mkfile("direct", NOBODY, NOGROUP, 06755);
	mkfile("roototrunc", NOBODY, NOGROUP, 06755);
	as_nobody(child_strip_paths, "strip as nobody");
	assert_int_equal(lstat_of(P("otrunc")).st_mode & 07777, 0755);
	assert_int_equal(lstat_of(P("otrunc")).st_size, 0);
	VT_ERR(getxattr(P("capped"), "security.capability", v, sizeof(v)), ENODATA);
	assert_int_equal(lstat_of(P("direct")).st_mode & 07777, 0755);
	int fd = VT_OK(open(P("roototrunc"), O_WRONLY | O_TRUNC));
	VT_OK(close(fd));
	assert_int_equal(lstat_of(P("roototrunc")).st_mode & 07777, 06755);
}

static void t_suid_cleared_on_chown(void **state)
{
	setup_dir("suidc");
	mkfile("f", 0, 0, 06755);
	VT_OK(chown(P("f"), NOBODY, NOGROUP));
	assert_int_equal(lstat_of(P("f")).st_mode & 07777, 0755);
	mkfile("g", 0, 0, 04755);
	VT_OK(chown(P("g"), (uid_t)-1, NOGROUP));
	assert_int_equal(lstat_of(P("g")).st_mode & 07777, 0755);
	/* Directories keep their setgid bit across chown. */
	VT_OK(mkdir(P("d"), 0755));
	VT_OK(chmod(P("d"), 02755));
	VT_OK(chown(P("d"), NOBODY, NOGROUP));
	assert_int_equal(lstat_of(P("d")).st_mode & 07777, 02755);
}

static int child_sgid_dir(void *arg)
{
	struct stat st;
	int fd;

	fd = C_OK(open(P("g/file"), O_CREAT | O_WRONLY, 0644));
	close(fd);
	C_OK(lstat(P("g/file"), &st));
	VT_CHILD_CHECK(st.st_uid == NOBODY);
	VT_CHILD_CHECK(st.st_gid == 1234); /* inherited from the directory */
	C_OK(mkdir(P("g/sub"), 0755));
	C_OK(lstat(P("g/sub"), &st));
	VT_CHILD_CHECK(st.st_gid == 1234);
	VT_CHILD_CHECK(st.st_mode & S_ISGID); /* and the bit, for directories */
	/* Not a member of group 1234: asking for S_ISGID on a new file does
	 * not grant it. */
	fd = C_OK(open(P("g/sgidreq"), O_CREAT | O_WRONLY, 02755));
	close(fd);
	C_OK(lstat(P("g/sgidreq"), &st));
	VT_CHILD_CHECK((st.st_mode & 07777) == 0755);
	return 0;
}

static void t_sgid_directory(void **state)
{
	setup_dir("sgid");
	VT_OK(mkdir(P("g"), 0777));
	VT_OK(chown(P("g"), 0, 1234));
	VT_OK(chmod(P("g"), 02777));
	as_nobody(child_sgid_dir, "sgid dir");
	/* Root creating there gets the group too. */
	VT_OK(vt_write_file(P("g/byroot"), "", 0));
	assert_int_equal(lstat_of(P("g/byroot")).st_gid, 1234);
	assert_int_equal(lstat_of(P("g/sub/..")).st_gid, 1234);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_denied),
	    cmocka_unit_test(t_sticky_and_owner),
	    cmocka_unit_test(t_suid_cleared_on_write),
	    cmocka_unit_test(t_suid_cleared_seen_at_once),
	    cmocka_unit_test(t_suid_cleared_on_chown),
	    cmocka_unit_test(t_privs_stripped_by_daemon),
	    cmocka_unit_test(t_sgid_directory),
	};
	int r;

	if (geteuid() != 0) {
		fprintf(stderr, "SKIP: the permission tests need root to switch users\n");
		return VT_SKIP;
	}
	r = vt_fs_start(&g_fs, "256M", "pool=64M,allow_other");
	if (r != 0)
		return r == VT_SKIP ? VT_SKIP : 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	if (vt_fs_cleanup(&g_fs) != 0 && r == 0)
		r = 1;
	return r;
}
