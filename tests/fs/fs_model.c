/*
 * fs_model.c - randomized model test: the same random sequence of file and
 * namespace operations is applied to a directory on the mount and to a
 * reference directory on another filesystem (ext4 or tmpfs under /tmp).
 * After every step the two results (return value, errno, bytes read,
 * attributes) must agree; every VS_MODEL_CHECK steps and after each
 * unmount+remount the whole trees (names, types, sizes, bytes, link counts,
 * hard-link structure, symlink targets, xattrs, modes) must agree too.
 *
 * The pool (64 MiB) is far smaller than the data the run keeps live (a few
 * hundred MiB), so pages are evicted and reloaded all the time.
 *
 * Reproduce a failure with the printed seed:
 *   VS_MODEL_SEED=<seed> VS_MODEL_STEPS=<n> ./fs_model
 * VS_TEST_SCALE=N runs N times as many steps; VS_MODEL_VERBOSE=1 logs each
 * step; VS_MODEL_REF=<dir> chooses where the reference tree goes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "vt_harness.h"
#include "vt_check.h"
#include "vt_tree.h"

#define MiB (1024L * 1024)

/* Live data bounds: above ALLOC_CAP (reference st_blocks) or SIZE_CAP (sum
 * of file sizes) the run prefers shrinking operations until it is back
 * under 70% of the cap. The image is 2 GiB; the mount keeps the trees of
 * all seeds. */
#define ALLOC_CAP (320 * MiB)
#define SIZE_CAP  (640 * MiB)

#define NSLOT	   4 /* descriptors kept open across steps */
#define MAX_WRITE  (8 * MiB)
#define HISTORY	   40
#define POOL_PAGES (64 * MiB / VT_PAGE) /* pool=64M */

static struct vt_fs g_fs;
static char g_ref_base[1024];

struct side {
	char root[1100];
	int fd[NSLOT];
};

static struct side S[2]; /* 0: the mount, 1: the reference */

struct res {
	long ret;
	int err;
	uint64_t hash; /* bytes read, or a digest of attributes */
};

struct args {
	char p1[512], p2[512];
	char target[512];
	off_t off, len;
	uint64_t tag;
	int flags, mode, slot;
	char xname[32];
};

static struct vt_rng g_rng;
static char *g_buf; /* write payload, MAX_WRITE bytes */
static char *g_rbuf[2];
static char g_hist[HISTORY][2048];
static unsigned g_nhist;
static bool g_verbose;

/* Names are few so that operations collide: the same name is a file in one
 * step and a directory in the next, renames hit existing targets, and so on. */
static const char *const g_names[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
#define NNAMES (sizeof(g_names) / sizeof(g_names[0]))

/* ---- the reference tree's current entries (for picking paths) ---- */

struct ent {
	char path[512];
	mode_t mode;
	off_t size;
	blkcnt_t blocks;
	ino_t ino;
};

static struct ent *g_ents;
static size_t g_nents, g_capents;
static off_t g_alloc, g_sizes;

static void scan(const char *root, const char *rel, int depth)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char sub[512];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (strlen(rel) + strlen(de->d_name) + 2 > sizeof(sub))
			continue; /* deeper than any path the model can name */
		snprintf(sub, sizeof(sub), "%.250s%s%.255s", rel, *rel ? "/" : "", de->d_name);
		snprintf(path, sizeof(path), "%s/%s", root, sub);
		if (lstat(path, &st) != 0)
			continue;
		if (g_nents == g_capents) {
			g_capents = g_capents ? g_capents * 2 : 256;
			g_ents = realloc(g_ents, g_capents * sizeof(*g_ents));
			assert_non_null(g_ents);
		}
		struct ent *e = &g_ents[g_nents++];

		snprintf(e->path, sizeof(e->path), "%s", sub);
		e->mode = st.st_mode;
		e->size = st.st_size;
		e->blocks = st.st_blocks;
		e->ino = st.st_ino;
		if (S_ISREG(st.st_mode)) {
			/* Count each inode once (hard links). */
			bool dup = false;

			for (size_t i = 0; st.st_nlink > 1 && i + 1 < g_nents; i++)
				if (g_ents[i].ino == st.st_ino)
					dup = true;
			if (!dup) {
				g_alloc += st.st_blocks * 512;
				g_sizes += st.st_size;
			}
		}
		if (S_ISDIR(st.st_mode) && depth < 8)
			scan(root, sub, depth + 1);
	}
	closedir(d);
}

static void rescan(void)
{
	g_nents = 0;
	g_alloc = g_sizes = 0;
	scan(S[1].root, "", 0);
}

static uint64_t rnd(uint64_t n)
{
	return vt_rng_below(&g_rng, n);
}

static bool chance(int percent)
{
	return rnd(100) < (uint64_t)percent;
}

/* An existing entry of the wanted kind (0: any), or NULL. */
static const struct ent *pick_existing(mode_t kind)
{
	size_t start, i;

	if (!g_nents)
		return NULL;
	start = rnd(g_nents);
	for (i = 0; i < g_nents; i++) {
		const struct ent *e = &g_ents[(start + i) % g_nents];

		if (!kind || (e->mode & S_IFMT) == kind)
			return e;
	}
	return NULL;
}

/* A path: mostly an existing entry, otherwise a fresh name inside an
 * existing directory (or a random, possibly invalid, path). */
static void pick_path(char *out, size_t cap, mode_t kind, int existing_pct)
{
	const struct ent *e;

	if (chance(existing_pct) && (e = pick_existing(kind))) {
		snprintf(out, cap, "%s", e->path);
		return;
	}
	if (chance(80)) {
		e = chance(35) ? NULL : pick_existing(S_IFDIR);
		if (e)
			snprintf(out, cap, "%.400s/%s", e->path, g_names[rnd(NNAMES)]);
		else
			snprintf(out, cap, "%s", g_names[rnd(NNAMES)]);
		return;
	}
	/* Random depth-3 path: may run through files or symlinks. */
	snprintf(out, cap, "%s/%s/%s", g_names[rnd(NNAMES)], g_names[rnd(NNAMES)],
		 g_names[rnd(NNAMES)]);
}

static void full(const struct side *s, const char *rel, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", s->root, rel);
}

#define RES(r, e) ((struct res){.ret = (r), .err = (r) < 0 ? (e) : 0})

/* ---- operations: each runs on one side and reports what happened ---- */

static struct res op_create(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	int fd;

	full(s, a->p1, p, sizeof(p));
	fd = open(p, O_CREAT | O_WRONLY | a->flags, a->mode);
	if (fd < 0)
		return RES(-1, errno);
	close(fd);
	return RES(0, 0);
}

static struct res op_write(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	ssize_t n;
	int fd;

	full(s, a->p1, p, sizeof(p));
	fd = open(p, O_WRONLY | a->flags, 0644);
	if (fd < 0)
		return RES(-1, errno);
	n = pwrite(fd, g_buf, (size_t)a->len, a->off);
	struct res r = RES(n, errno);

	close(fd);
	return r;
}

static struct res op_read(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	char *buf = g_rbuf[s == &S[0] ? 0 : 1];
	ssize_t n;
	int fd;

	full(s, a->p1, p, sizeof(p));
	fd = open(p, O_RDONLY);
	if (fd < 0)
		return RES(-1, errno);
	n = pread(fd, buf, (size_t)a->len, a->off);
	struct res r = RES(n, errno);

	if (n > 0)
		r.hash = vt_hash(1, buf, (size_t)n);
	close(fd);
	return r;
}

static struct res op_truncate(struct side *s, const struct args *a)
{
	char p[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	return RES(truncate(p, a->off), errno);
}

static struct res op_punch(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	int fd, r;

	full(s, a->p1, p, sizeof(p));
	fd = open(p, O_WRONLY);
	if (fd < 0)
		return RES(-1, errno);
	r = fallocate(fd, a->flags, a->off, a->len);
	struct res res = RES(r, errno);

	close(fd);
	return res;
}

static struct res op_rename(struct side *s, const struct args *a)
{
	char p[PATH_MAX], q[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	full(s, a->p2, q, sizeof(q));
	return RES(renameat2(AT_FDCWD, p, AT_FDCWD, q, (unsigned)a->flags), errno);
}

static struct res op_link(struct side *s, const struct args *a)
{
	char p[PATH_MAX], q[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	full(s, a->p2, q, sizeof(q));
	return RES(link(p, q), errno);
}

static struct res op_unlink(struct side *s, const struct args *a)
{
	char p[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	return RES(unlink(p), errno);
}

static struct res op_mkdir(struct side *s, const struct args *a)
{
	char p[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	return RES(mkdir(p, a->mode), errno);
}

static struct res op_rmdir(struct side *s, const struct args *a)
{
	char p[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	return RES(rmdir(p), errno);
}

static struct res op_symlink(struct side *s, const struct args *a)
{
	char p[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	return RES(symlink(a->target, p), errno);
}

static struct res op_setxattr(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	int r;

	full(s, a->p1, p, sizeof(p));
	if (a->mode) /* through a symlink */
		r = setxattr(p, a->xname, g_buf, (size_t)a->len, a->flags);
	else
		r = lsetxattr(p, a->xname, g_buf, (size_t)a->len, a->flags);
	return RES(r, errno);
}

static struct res op_removexattr(struct side *s, const struct args *a)
{
	char p[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	return RES(lremovexattr(p, a->xname), errno);
}

static struct res op_getxattr(struct side *s, const struct args *a)
{
	char p[PATH_MAX], v[1024];
	ssize_t n;

	full(s, a->p1, p, sizeof(p));
	n = lgetxattr(p, a->xname, v, sizeof(v));
	struct res r = RES(n, errno);

	if (n > 0)
		r.hash = vt_hash(1, v, (size_t)n);
	return r;
}

static struct res op_chmod(struct side *s, const struct args *a)
{
	char p[PATH_MAX];

	full(s, a->p1, p, sizeof(p));
	return RES(chmod(p, a->mode), errno);
}

/* lstat digest: type, permission bits, size (not for dirs), link count; for
 * directories also the sorted names. */
static struct res op_stat(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	struct stat st;
	struct res r;

	full(s, a->p1, p, sizeof(p));
	if (lstat(p, &st) != 0)
		return RES(-1, errno);
	r = RES(0, 0);
	r.hash = vt_hash(1, &st.st_mode, sizeof(st.st_mode));
	r.hash = vt_hash(r.hash, &st.st_nlink, sizeof(st.st_nlink));
	if (!S_ISDIR(st.st_mode))
		r.hash = vt_hash(r.hash, &st.st_size, sizeof(st.st_size));
	if (S_ISDIR(st.st_mode)) {
		struct dirent **list;
		int n = scandir(p, &list, NULL, alphasort);

		if (n < 0)
			return RES(-1, errno);
		for (int i = 0; i < n; i++) {
			r.hash = vt_hash(r.hash, list[i]->d_name, strlen(list[i]->d_name) + 1);
			free(list[i]);
		}
		free(list);
	}
	return r;
}

static struct res op_fsync(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	int fd, r;

	full(s, a->p1, p, sizeof(p));
	fd = open(p, O_RDONLY);
	if (fd < 0)
		return RES(-1, errno);
	r = a->flags ? fdatasync(fd) : fsync(fd);
	struct res res = RES(r, errno);

	close(fd);
	return res;
}

/* Descriptor slots: open/close, and I/O through an fd whose name may have
 * been renamed or unlinked since. */
static struct res op_fdopen(struct side *s, const struct args *a)
{
	char p[PATH_MAX];
	int fd;

	if (s->fd[a->slot] >= 0)
		close(s->fd[a->slot]);
	full(s, a->p1, p, sizeof(p));
	fd = open(p, O_RDWR | a->flags, 0644);
	s->fd[a->slot] = fd;
	return RES(fd < 0 ? -1 : 0, errno);
}

static struct res op_fdclose(struct side *s, const struct args *a)
{
	int r = s->fd[a->slot] >= 0 ? close(s->fd[a->slot]) : 0;

	s->fd[a->slot] = -1;
	return RES(r, errno);
}

static struct res op_fdwrite(struct side *s, const struct args *a)
{
	if (s->fd[a->slot] < 0)
		return RES(0, 0);
	return RES(pwrite(s->fd[a->slot], g_buf, (size_t)a->len, a->off), errno);
}

static struct res op_fdread(struct side *s, const struct args *a)
{
	char *buf = g_rbuf[s == &S[0] ? 0 : 1];
	ssize_t n;

	if (s->fd[a->slot] < 0)
		return RES(0, 0);
	n = pread(s->fd[a->slot], buf, (size_t)a->len, a->off);
	struct res r = RES(n, errno);

	if (n > 0)
		r.hash = vt_hash(1, buf, (size_t)n);
	return r;
}

static struct res op_fdtruncate(struct side *s, const struct args *a)
{
	struct stat st;
	struct res r;

	if (s->fd[a->slot] < 0)
		return RES(0, 0);
	r = RES(ftruncate(s->fd[a->slot], a->off), errno);
	if (r.ret == 0 && fstat(s->fd[a->slot], &st) == 0) {
		r.hash = vt_hash(1, &st.st_size, sizeof(st.st_size));
		r.hash = vt_hash(r.hash, &st.st_nlink, sizeof(st.st_nlink));
	}
	return r;
}

struct op {
	const char *name;
	struct res (*fn)(struct side *s, const struct args *a);
	int weight;
	bool grows; /* skipped while over the space caps */
};

enum {
	OP_CREATE,
	OP_WRITE,
	OP_READ,
	OP_TRUNCATE,
	OP_PUNCH,
	OP_RENAME,
	OP_LINK,
	OP_UNLINK,
	OP_MKDIR,
	OP_RMDIR,
	OP_SYMLINK,
	OP_SETXATTR,
	OP_REMOVEXATTR,
	OP_GETXATTR,
	OP_CHMOD,
	OP_STAT,
	OP_FSYNC,
	OP_FDOPEN,
	OP_FDCLOSE,
	OP_FDWRITE,
	OP_FDREAD,
	OP_FDTRUNCATE,
	OP_COUNT
};

static const struct op g_ops[OP_COUNT] = {
    [OP_CREATE] = {"create", op_create, 8, false},
    [OP_WRITE] = {"write", op_write, 24, true},
    [OP_READ] = {"read", op_read, 8, false},
    [OP_TRUNCATE] = {"truncate", op_truncate, 5, false},
    [OP_PUNCH] = {"fallocate", op_punch, 2, false},
    [OP_RENAME] = {"rename", op_rename, 10, false},
    [OP_LINK] = {"link", op_link, 4, false},
    [OP_UNLINK] = {"unlink", op_unlink, 4, false},
    [OP_MKDIR] = {"mkdir", op_mkdir, 5, false},
    [OP_RMDIR] = {"rmdir", op_rmdir, 3, false},
    [OP_SYMLINK] = {"symlink", op_symlink, 4, false},
    [OP_SETXATTR] = {"setxattr", op_setxattr, 4, false},
    [OP_REMOVEXATTR] = {"removexattr", op_removexattr, 2, false},
    [OP_GETXATTR] = {"getxattr", op_getxattr, 2, false},
    [OP_CHMOD] = {"chmod", op_chmod, 2, false},
    [OP_STAT] = {"stat", op_stat, 6, false},
    [OP_FSYNC] = {"fsync", op_fsync, 1, false},
    [OP_FDOPEN] = {"fdopen", op_fdopen, 3, false},
    [OP_FDCLOSE] = {"fdclose", op_fdclose, 2, false},
    [OP_FDWRITE] = {"fdwrite", op_fdwrite, 5, true},
    [OP_FDREAD] = {"fdread", op_fdread, 3, false},
    [OP_FDTRUNCATE] = {"fdtruncate", op_fdtruncate, 2, false},
};

/* ---- generating arguments ---- */

static off_t pick_len(void)
{
	uint64_t r = rnd(100);

	if (r < 40)
		return (off_t)rnd(8192) + 1;
	if (r < 75)
		return (off_t)rnd(256 * 1024) + 1;
	return (off_t)rnd(MAX_WRITE - MiB) + MiB;
}

/* Offsets: mostly appending or inside the current size, sometimes a little
 * sparse gap, rarely far out. */
static off_t pick_off(off_t size)
{
	uint64_t r = rnd(100);

	if (r < 35)
		return size;
	if (r < 70)
		return size ? (off_t)rnd((uint64_t)size + 1) : 0;
	if (r < 90)
		return (off_t)rnd(4 * MiB);
	return (off_t)rnd(40 * MiB);
}

static off_t size_of(const char *rel)
{
	for (size_t i = 0; i < g_nents; i++)
		if (!strcmp(g_ents[i].path, rel))
			return g_ents[i].size;
	return 0;
}

static int pick_op(bool shrinking)
{
	int total = 0, r;

	for (int i = 0; i < OP_COUNT; i++)
		total += g_ops[i].weight;
	for (;;) {
		r = (int)rnd((uint64_t)total);
		for (int i = 0; i < OP_COUNT; i++) {
			if (r < g_ops[i].weight) {
				if (shrinking && g_ops[i].grows)
					return chance(50) ? OP_UNLINK : OP_TRUNCATE;
				return i;
			}
			r -= g_ops[i].weight;
		}
	}
}

static void gen_args(int op, struct args *a, bool shrinking)
{
	static const int modes[] = {0644, 0600, 0755, 0444, 0700, 0777, 04755, 01777};

	memset(a, 0, sizeof(*a));
	a->slot = (int)rnd(NSLOT);
	switch (op) {
	case OP_CREATE:
		pick_path(a->p1, sizeof(a->p1), 0, 25);
		a->flags = chance(30) ? O_EXCL : chance(10) ? O_TRUNC : 0;
		a->mode = chance(80) ? 0644 : modes[rnd(6)];
		break;
	case OP_WRITE:
	case OP_FDWRITE:
		pick_path(a->p1, sizeof(a->p1), S_IFREG, 75);
		a->flags = chance(40) ? O_CREAT : 0;
		if (chance(4))
			a->flags |= O_APPEND;
		else if (chance(3))
			a->flags |= O_TRUNC;
		a->len = pick_len();
		a->off = pick_off(size_of(a->p1));
		a->tag = vt_rng_next(&g_rng);
		break;
	case OP_READ:
	case OP_FDREAD:
		pick_path(a->p1, sizeof(a->p1), S_IFREG, 85);
		a->len = pick_len();
		a->off = chance(80) ? pick_off(size_of(a->p1)) : (off_t)rnd(64 * MiB);
		break;
	case OP_TRUNCATE:
	case OP_FDTRUNCATE:
		pick_path(a->p1, sizeof(a->p1), S_IFREG, 85);
		if (shrinking || chance(12)) {
			a->off = chance(50) ? 0 : (off_t)rnd(64 * 1024);
		} else {
			/* Mostly trimming a little or growing (sparse). */
			off_t size = size_of(a->p1);

			a->off = chance(50) ? size / 2 + (off_t)rnd((uint64_t)size / 2 + 1)
					    : size + (off_t)rnd(8 * MiB);
		}
		if (chance(2))
			a->off = -1;
		break;
	case OP_PUNCH:
		pick_path(a->p1, sizeof(a->p1), S_IFREG, 85);
		a->flags =
		    chance(80) ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_KEEP_SIZE;
		a->off = pick_off(size_of(a->p1));
		a->len = pick_len();
		break;
	case OP_RENAME:
		pick_path(a->p1, sizeof(a->p1), 0, 85);
		pick_path(a->p2, sizeof(a->p2), 0, 40);
		a->flags = chance(70) ? 0 : chance(50) ? RENAME_NOREPLACE : RENAME_EXCHANGE;
		break;
	case OP_LINK:
		pick_path(a->p1, sizeof(a->p1), S_IFREG, 80);
		pick_path(a->p2, sizeof(a->p2), 0, 15);
		break;
	case OP_UNLINK:
		pick_path(a->p1, sizeof(a->p1), shrinking ? S_IFREG : 0, 85);
		break;
	case OP_MKDIR:
		pick_path(a->p1, sizeof(a->p1), 0, 10);
		a->mode = chance(85) ? 0755 : modes[rnd(8)];
		break;
	case OP_RMDIR:
		pick_path(a->p1, sizeof(a->p1), S_IFDIR, 85);
		break;
	case OP_SYMLINK:
		pick_path(a->p1, sizeof(a->p1), 0, 10);
		/* Relative targets without "..": they can never leave the
		 * test root, on either side. */
		if (chance(50))
			snprintf(a->target, sizeof(a->target), "%s", g_names[rnd(NNAMES)]);
		else
			snprintf(a->target, sizeof(a->target), "%s/%s", g_names[rnd(NNAMES)],
				 g_names[rnd(NNAMES)]);
		break;
	case OP_SETXATTR:
		pick_path(a->p1, sizeof(a->p1), 0, 85);
		snprintf(a->xname, sizeof(a->xname), "user.%s", g_names[rnd(4)]);
		/* Small values: ext4 keeps all of an inode's xattrs in one block. */
		a->len = (off_t)rnd(200);
		a->flags = chance(60) ? 0 : chance(50) ? XATTR_CREATE : XATTR_REPLACE;
		a->mode = chance(15);
		a->tag = vt_rng_next(&g_rng);
		break;
	case OP_REMOVEXATTR:
	case OP_GETXATTR:
		pick_path(a->p1, sizeof(a->p1), 0, 85);
		snprintf(a->xname, sizeof(a->xname), "user.%s", g_names[rnd(4)]);
		break;
	case OP_CHMOD:
		pick_path(a->p1, sizeof(a->p1), 0, 85);
		a->mode = modes[rnd(8)];
		/* Directories stay traversable and writable for the model. */
		break;
	case OP_STAT:
		pick_path(a->p1, sizeof(a->p1), 0, 80);
		break;
	case OP_FSYNC:
		pick_path(a->p1, sizeof(a->p1), 0, 90);
		a->flags = chance(50);
		break;
	case OP_FDOPEN:
		pick_path(a->p1, sizeof(a->p1), S_IFREG, 80);
		a->flags = chance(30) ? O_CREAT : 0;
		break;
	case OP_FDCLOSE:
		break;
	}
	if (a->len > MAX_WRITE)
		a->len = MAX_WRITE;
}

static void describe(int op, const struct args *a, char *out, size_t cap)
{
	snprintf(
	    out, cap,
	    "%s p1='%s' p2='%s' target='%s' off=%lld len=%lld flags=0x%x mode=0%o slot=%d x=%s",
	    g_ops[op].name, a->p1, a->p2, a->target, (long long)a->off, (long long)a->len, a->flags,
	    a->mode, a->slot, a->xname);
}

static void dump_history(void)
{
	unsigned n = g_nhist < HISTORY ? g_nhist : HISTORY;

	fprintf(stderr, "last %u steps:\n", n);
	for (unsigned i = g_nhist - n; i < g_nhist; i++)
		fprintf(stderr, "  %s\n", g_hist[i % HISTORY]);
}

static void close_all(void)
{
	for (int s = 0; s < 2; s++)
		for (int i = 0; i < NSLOT; i++) {
			if (S[s].fd[i] >= 0)
				close(S[s].fd[i]);
			S[s].fd[i] = -1;
		}
}

/* Pool counters restart with every mount: add them up before each remount. */
static uint64_t g_evicted, g_loaded;

static void count_pool(void)
{
	uint64_t v;

	if (g_fs.external)
		return;
	if (vt_stat_get(&g_fs, "pool_evictions_total", &v) == 0)
		g_evicted += v;
	if (vt_stat_get(&g_fs, "pool_loads_total", &v) == 0)
		g_loaded += v;
}

static void compare_trees(uint64_t seed, unsigned step, const char *when)
{
	struct vt_snap m, r;
	size_t diffs;

	if (vt_snap_take(S[0].root, NULL, &m) != 0 || vt_snap_take(S[1].root, NULL, &r) != 0) {
		dump_history();
		fail_msg("seed %lu step %u (%s): could not walk the trees", seed, step, when);
	}
	diffs = vt_snap_compare(&m, &r, VT_CMP_OWNER | VT_CMP_LINKS, 40);
	vt_snap_free(&m);
	vt_snap_free(&r);
	if (diffs) {
		dump_history();
		fail_msg("seed %lu step %u (%s): %zu differences between %s and %s (above)", seed,
			 step, when, diffs, S[0].root, S[1].root);
	}
}

static void run_seed(uint64_t seed, unsigned steps, unsigned check_every, unsigned remount_every)
{
	char rel[64];
	bool shrinking = false;
	unsigned long written = 0;

	vt_rng_seed(&g_rng, seed);
	g_nhist = 0;
	snprintf(rel, sizeof(rel), "model-%lu", seed);
	assert_non_null(vt_fresh_dir(&g_fs, rel));
	snprintf(S[0].root, sizeof(S[0].root), "%s", vt_path(&g_fs, rel));
	snprintf(S[1].root, sizeof(S[1].root), "%s/%s", g_ref_base, rel);
	vt_rm_rf(S[1].root);
	VT_OK(mkdir(S[1].root, 0755));
	for (int i = 0; i < NSLOT; i++)
		S[0].fd[i] = S[1].fd[i] = -1;
	rescan();

	for (unsigned step = 1; step <= steps; step++) {
		struct args a;
		struct res r[2];
		int op;

		if (step % 25 == 0 || shrinking) {
			if (g_alloc > ALLOC_CAP || g_sizes > SIZE_CAP)
				shrinking = true;
			else if (g_alloc < ALLOC_CAP * 7 / 10 && g_sizes < SIZE_CAP * 7 / 10)
				shrinking = false;
		}
		op = pick_op(shrinking);
		gen_args(op, &a, shrinking);
		if (a.tag)
			vt_pattern_fill(g_buf, (size_t)a.len, a.tag, (uint64_t)a.off);
		describe(op, &a, g_hist[g_nhist % HISTORY], sizeof(g_hist[0]));
		g_nhist++;
		if (g_verbose)
			fprintf(stderr, "[%lu:%u] %s\n", seed, step,
				g_hist[(g_nhist - 1) % HISTORY]);

		r[0] = g_ops[op].fn(&S[0], &a);
		r[1] = g_ops[op].fn(&S[1], &a);
		if (r[0].ret != r[1].ret || r[0].err != r[1].err || r[0].hash != r[1].hash) {
			dump_history();
			fail_msg("seed %lu step %u: %s: mount returned %ld (%s)%s, reference %ld "
				 "(%s)",
				 seed, step, g_ops[op].name, r[0].ret, vt_errname(r[0].err),
				 r[0].hash != r[1].hash ? " with different data/attributes" : "",
				 r[1].ret, vt_errname(r[1].err));
		}
		if ((op == OP_WRITE || op == OP_FDWRITE) && r[0].ret > 0)
			written += (unsigned long)r[0].ret;
		rescan();

		if (step % check_every == 0 || step == steps) {
			if (g_verbose)
				fprintf(stderr, "[%lu:%u] live %lld MiB allocated, %zu entries\n",
					seed, step, (long long)(g_alloc >> 20), g_nents);
			compare_trees(seed, step, "periodic check");
		}
		if (remount_every && (step % remount_every == 0 || step == steps)) {
			close_all();
			count_pool();
			if (vt_fs_remount(&g_fs) != 0) {
				dump_history();
				fail_msg("seed %lu step %u: remount failed", seed, step);
			}
			compare_trees(seed, step, "after remount");
		}
	}
	close_all();
	printf("seed %lu: %u steps, %lu MiB written, final live data %lld MiB allocated / %lld "
	       "MiB in file sizes\n",
	       seed, steps, written >> 20, (long long)(g_alloc >> 20), (long long)(g_sizes >> 20));
	/* The mount keeps every seed's tree, so later seeds run with the
	 * earlier data competing for the pool; the reference can go. */
	vt_rm_rf(S[1].root);
}

static unsigned env_uint(const char *name, unsigned dflt)
{
	const char *v = getenv(name);

	return v && *v ? (unsigned)strtoul(v, NULL, 0) : dflt;
}

static void t_model(void **state)
{
	unsigned scale = vt_scale();
	unsigned steps = env_uint("VS_MODEL_STEPS", 1200 * scale);
	unsigned check = env_uint("VS_MODEL_CHECK", 300);
	unsigned remount = env_uint("VS_MODEL_REMOUNT", 600);
	const char *one = getenv("VS_MODEL_SEED");

	if (one && *one) {
		run_seed(strtoull(one, NULL, 0), steps, check, remount);
		return;
	}
	/* Fixed seeds: a failure reproduces. */
	for (uint64_t seed = 1; seed <= 3; seed++)
		run_seed(seed, steps, check, remount);
	if (!g_fs.external && remount) {
		printf("pool: %lu pages evicted, %lu loaded from the image\n", g_evicted, g_loaded);
		/* The point of a 64 MiB pool: the data went through it many
		 * times over, so pages were evicted and read back. */
		if (g_evicted < 4 * POOL_PAGES || g_loaded < POOL_PAGES)
			fail_msg(
			    "only %lu evictions and %lu loads: the run did not stress the pool",
			    g_evicted, g_loaded);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_model),
	};
	const char *ref = getenv("VS_MODEL_REF");
	int r;

	g_verbose = getenv("VS_MODEL_VERBOSE") != NULL;
	g_buf = malloc(MAX_WRITE);
	g_rbuf[0] = malloc(MAX_WRITE);
	g_rbuf[1] = malloc(MAX_WRITE);
	if (!g_buf || !g_rbuf[0] || !g_rbuf[1])
		return 1;
	r = vt_fs_start(&g_fs, "2G", "pool=64M");
	if (r != 0)
		return r == VT_SKIP ? VT_SKIP : 1;
	snprintf(g_ref_base, sizeof(g_ref_base), "%s/vsmodel-ref.XXXXXX",
		 ref && *ref ? ref : (getenv("VS_TEST_TMP") ?: "/tmp"));
	if (!mkdtemp(g_ref_base)) {
		perror("mkdtemp reference");
		vt_fs_cleanup(&g_fs);
		return 1;
	}
	/* The reference must take user xattrs (tmpfs before Linux 6.6 does
	 * not), or every setxattr step would differ for the wrong reason. */
	if (lsetxattr(g_ref_base, "user.probe", "1", 1, 0) != 0) {
		fprintf(stderr,
			"SKIP: %s does not take user xattrs (%s); point VS_MODEL_REF "
			"at ext4/xfs/btrfs\n",
			g_ref_base, vt_errname(errno));
		vt_rm_rf(g_ref_base);
		vt_fs_cleanup(&g_fs);
		return VT_SKIP;
	}
	r = cmocka_run_group_tests(tests, NULL, NULL);
	vt_rm_rf(g_ref_base);
	if (vt_fs_cleanup(&g_fs) != 0 && r == 0)
		r = 1;
	return r;
}
