/*
 * vt_tree.c - tree snapshots and comparison (see vt_tree.h).
 */
#include "vt_tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

uint64_t vt_hash(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i = 0;

	/* A word at a time: the model test hashes hundreds of MiB per check. */
	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	for (; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static int add(struct vt_snap *s, struct vt_entry *e)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		struct vt_entry *n = realloc(s->e, cap * sizeof(*n));

		if (!n)
			return -1;
		s->e = n;
		s->cap = cap;
	}
	s->e[s->n++] = *e;
	return 0;
}

static int hash_file(const char *path, uint64_t *ret)
{
	static char buf[1 << 20];
	uint64_t h = 0xcbf29ce484222325ULL;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		h = vt_hash(h, buf, (size_t)n);
	}
	close(fd);
	*ret = h;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Hash of sorted (name, value) pairs; names (sorted, comma separated) into
 * *ret_names. */
static int hash_xattrs(const char *path, uint64_t *ret_hash, char **ret_names)
{
	static char list[65536];
	static char val[65536];
	char *names[1024];
	size_t n = 0, namelen = 1;
	ssize_t len = llistxattr(path, list, sizeof(list));
	uint64_t h = 0;
	char *joined;

	if (len < 0)
		return errno == ENOTSUP ? 0 : -1;
	for (char *p = list; p < list + len && n < 1024; p += strlen(p) + 1) {
		if (!strncmp(p, "user.virtuscale.", 16))
			continue;
		/* security.* / system.* labels differ between filesystems. */
		if (strncmp(p, "user.", 5) && strncmp(p, "trusted.", 8))
			continue;
		names[n++] = p;
		namelen += strlen(p) + 1;
	}
	qsort(names, n, sizeof(names[0]), cmp_str);
	joined = calloc(1, namelen);
	if (!joined)
		return -1;
	for (size_t i = 0; i < n; i++) {
		ssize_t vl = lgetxattr(path, names[i], val, sizeof(val));

		if (vl < 0) {
			free(joined);
			return -1;
		}
		h = vt_hash(h ? h : 0xcbf29ce484222325ULL, names[i], strlen(names[i]) + 1);
		h = vt_hash(h, &vl, sizeof(vl));
		h = vt_hash(h, val, (size_t)vl);
		if (i)
			strcat(joined, ",");
		strcat(joined, names[i]);
	}
	*ret_hash = h;
	*ret_names = joined;
	return 0;
}

static int walk(struct vt_snap *s, const char *rel, dev_t dev, const char *skip)
{
	char path[PATH_MAX];
	struct vt_entry e = {0};
	struct stat st;

	snprintf(path, sizeof(path), "%s%s%s", s->root, *rel ? "/" : "", rel);
	if (lstat(path, &st) != 0) {
		fprintf(stderr, "vt_snap: lstat %s: %s\n", path, strerror(errno));
		return -1;
	}
	e.path = strdup(rel);
	e.mode = st.st_mode;
	e.nlink = st.st_nlink;
	e.uid = st.st_uid;
	e.gid = st.st_gid;
	e.size = st.st_size;
	e.rdev = st.st_rdev;
	e.ino = st.st_ino;
	e.mtime = st.st_mtim;
	e.ctime = st.st_ctim;
	if (S_ISREG(st.st_mode) && hash_file(path, &e.data_hash) != 0) {
		fprintf(stderr, "vt_snap: read %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (S_ISLNK(st.st_mode)) {
		char t[PATH_MAX + 1];
		ssize_t n = readlink(path, t, sizeof(t) - 1);

		if (n < 0) {
			fprintf(stderr, "vt_snap: readlink %s: %s\n", path, strerror(errno));
			return -1;
		}
		t[n] = 0;
		e.target = strdup(t);
	}
	if ((S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) &&
	    hash_xattrs(path, &e.xattr_hash, &e.xattr_names) != 0) {
		fprintf(stderr, "vt_snap: xattrs of %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (add(s, &e) != 0)
		return -1;
	if (!S_ISDIR(st.st_mode) || st.st_dev != dev)
		return 0;

	DIR *d = opendir(path);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	if (!d) {
		fprintf(stderr, "vt_snap: opendir %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!*rel && skip && !strncmp(de->d_name, skip, strlen(skip)))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names) {
				closedir(d);
				return -1;
			}
		}
		names[n++] = strdup(de->d_name);
	}
	if (errno) {
		fprintf(stderr, "vt_snap: readdir %s: %s\n", path, strerror(errno));
		r = -1;
	}
	closedir(d);
	/* Sorted by name, so two snapshots line up entry by entry. */
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		char sub[PATH_MAX];

		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", names[i]);
		if (r == 0 && walk(s, sub, dev, skip) != 0)
			r = -1;
		free(names[i]);
	}
	free(names);
	return r;
}

int vt_snap_take(const char *root, const char *skip_prefix, struct vt_snap *ret)
{
	struct stat st;

	memset(ret, 0, sizeof(*ret));
	snprintf(ret->root, sizeof(ret->root), "%s", root);
	if (lstat(root, &st) != 0) {
		fprintf(stderr, "vt_snap: %s: %s\n", root, strerror(errno));
		return -1;
	}
	return walk(ret, "", st.st_dev, skip_prefix);
}

void vt_snap_free(struct vt_snap *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->e[i].path);
		free(s->e[i].target);
		free(s->e[i].xattr_names);
	}
	free(s->e);
	memset(s, 0, sizeof(*s));
}

/* Where two regular files first differ, for the report. */
static long long first_diff(const char *a, const char *b)
{
	static char ba[65536], bb[65536];
	int fa = open(a, O_RDONLY), fb = open(b, O_RDONLY);
	long long off = 0, r = -1;

	if (fa < 0 || fb < 0)
		goto out;
	for (;;) {
		ssize_t na = read(fa, ba, sizeof(ba)), nb = read(fb, bb, sizeof(bb));

		if (na < 0 || nb < 0)
			break;
		for (ssize_t i = 0; i < na && i < nb; i++)
			if (ba[i] != bb[i]) {
				r = off + i;
				goto out;
			}
		if (na != nb) {
			r = off + (na < nb ? na : nb);
			break;
		}
		if (na == 0)
			break;
		off += na;
	}
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return r;
}

static int cmp_entry_path(const struct vt_entry *a, const struct vt_entry *b)
{
	return strcmp(a->path, b->path);
}

#define REPORT(...)                                                                                \
	do {                                                                                       \
		if (diffs++ < max_report)                                                          \
			fprintf(stderr, __VA_ARGS__);                                              \
	} while (0)

static const char *type_name(mode_t m)
{
	return S_ISREG(m)    ? "file"
	       : S_ISDIR(m)  ? "dir"
	       : S_ISLNK(m)  ? "symlink"
	       : S_ISFIFO(m) ? "fifo"
	       : S_ISSOCK(m) ? "socket"
	       : S_ISCHR(m)  ? "chardev"
	       : S_ISBLK(m)  ? "blockdev"
			     : "?";
}

static size_t compare_links(const struct vt_snap *a, const struct vt_snap *b, size_t max_report,
			    size_t diffs)
{
	/* For every pair of entries with one inode on side a, side b must
	 * have one inode too, and the reverse: check via first occurrence. */
	size_t n = a->n < b->n ? a->n : b->n;

	for (size_t i = 0; i < n; i++) {
		if (S_ISDIR(a->e[i].mode) || a->e[i].nlink < 2)
			continue;
		for (size_t j = i + 1; j < n; j++) {
			bool same_a = a->e[j].ino == a->e[i].ino;
			bool same_b = b->e[j].ino == b->e[i].ino;

			if (same_a != same_b)
				REPORT("  %s and %s: %s inode on %s, not on %s\n", a->e[i].path,
				       a->e[j].path, same_a ? "one" : "different", a->root,
				       b->root);
		}
	}
	return diffs;
}

size_t vt_snap_compare(const struct vt_snap *a, const struct vt_snap *b, unsigned flags,
		       size_t max_report)
{
	size_t i = 0, j = 0, diffs = 0;
	bool aligned = true;

	while (i < a->n || j < b->n) {
		int c = i >= a->n ? 1 : j >= b->n ? -1 : cmp_entry_path(&a->e[i], &b->e[j]);

		if (c < 0) {
			REPORT("  only in %s: %s (%s)\n", a->root, a->e[i].path,
			       type_name(a->e[i].mode));
			i++;
			aligned = false;
			continue;
		}
		if (c > 0) {
			REPORT("  only in %s: %s (%s)\n", b->root, b->e[j].path,
			       type_name(b->e[j].mode));
			j++;
			aligned = false;
			continue;
		}
		const struct vt_entry *x = &a->e[i++], *y = &b->e[j++];
		const char *p = *x->path ? x->path : ".";

		if ((x->mode & S_IFMT) != (y->mode & S_IFMT)) {
			REPORT("  %s: type %s vs %s\n", p, type_name(x->mode), type_name(y->mode));
			continue;
		}
		if ((x->mode & 07777) != (y->mode & 07777))
			REPORT("  %s: mode %04o vs %04o\n", p, x->mode & 07777, y->mode & 07777);
		if (x->nlink != y->nlink)
			REPORT("  %s: nlink %lu vs %lu\n", p, (unsigned long)x->nlink,
			       (unsigned long)y->nlink);
		if ((flags & VT_CMP_OWNER) && (x->uid != y->uid || x->gid != y->gid))
			REPORT("  %s: owner %u:%u vs %u:%u\n", p, x->uid, x->gid, y->uid, y->gid);
		if ((flags & VT_CMP_INO) && x->ino != y->ino)
			REPORT("  %s: inode %lu vs %lu\n", p, (unsigned long)x->ino,
			       (unsigned long)y->ino);
		if ((flags & VT_CMP_RDEV) && (S_ISCHR(x->mode) || S_ISBLK(x->mode)) &&
		    x->rdev != y->rdev)
			REPORT("  %s: rdev %lx vs %lx\n", p, (unsigned long)x->rdev,
			       (unsigned long)y->rdev);
		if ((flags & VT_CMP_TIMES) && !S_ISLNK(x->mode)) {
			if (x->mtime.tv_sec != y->mtime.tv_sec ||
			    x->mtime.tv_nsec != y->mtime.tv_nsec)
				REPORT("  %s: mtime %lld.%09ld vs %lld.%09ld\n", p,
				       (long long)x->mtime.tv_sec, x->mtime.tv_nsec,
				       (long long)y->mtime.tv_sec, y->mtime.tv_nsec);
			if (x->ctime.tv_sec != y->ctime.tv_sec ||
			    x->ctime.tv_nsec != y->ctime.tv_nsec)
				REPORT("  %s: ctime %lld.%09ld vs %lld.%09ld\n", p,
				       (long long)x->ctime.tv_sec, x->ctime.tv_nsec,
				       (long long)y->ctime.tv_sec, y->ctime.tv_nsec);
		}
		if (S_ISREG(x->mode) || S_ISLNK(x->mode)) {
			if (x->size != y->size)
				REPORT("  %s: size %lld vs %lld\n", p, (long long)x->size,
				       (long long)y->size);
		}
		if (S_ISREG(x->mode) && x->size == y->size && x->data_hash != y->data_hash) {
			char pa[PATH_MAX], pb[PATH_MAX];

			snprintf(pa, sizeof(pa), "%s/%s", a->root, x->path);
			snprintf(pb, sizeof(pb), "%s/%s", b->root, y->path);
			REPORT("  %s: contents differ (first at byte %lld)\n", p,
			       first_diff(pa, pb));
		}
		if (S_ISLNK(x->mode) && strcmp(x->target, y->target))
			REPORT("  %s: symlink target '%.80s' vs '%.80s'\n", p, x->target,
			       y->target);
		if (x->xattr_hash != y->xattr_hash)
			REPORT("  %s: xattrs differ: [%.200s] vs [%.200s]\n", p,
			       x->xattr_names ? x->xattr_names : "",
			       y->xattr_names ? y->xattr_names : "");
	}
	if ((flags & VT_CMP_LINKS) && aligned)
		diffs = compare_links(a, b, max_report, diffs);
	if (diffs > max_report)
		fprintf(stderr, "  ... %zu differences in all\n", diffs);
	return diffs;
}
