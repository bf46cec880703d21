/*
 * fs_concurrent.c - four forked processes create, write, append, rename,
 * link and delete files (and make and remove directories) in the same four
 * shared directories at once, and append fixed-size records to one shared
 * O_APPEND log.  Each process owns the names it makes, so it knows what its
 * files must hold; it publishes that in shared memory.  Afterwards the
 * parent checks that the shared directories hold exactly the union of what
 * the processes say exists, that every file's bytes are right, and that the
 * log holds every record exactly once, whole; then again after a remount.
 * All of them also publish versions of one shared file by renaming a
 * private temp file over it, while others read it: a reader must always see
 * one complete version, never a mix.
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
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vt_harness.h"
#include "vt_check.h"

#define NPROC	4
#define NDIRS	4
#define MAXF	96 /* files a worker keeps at most */
#define RECSIZE 64

struct file {
	bool alive;
	int dir;
	char name[40];
	uint64_t tag; /* content is vt_pattern(tag) over [0, size) */
	off_t size;
};

struct worker {
	struct file f[MAXF];
	unsigned records; /* log records appended */
	unsigned pubs;	  /* versions of s0/current published */
	unsigned ops;
	int failed;
};

static struct vt_fs g_fs;
static char g_root[1100];
static struct worker *g_w; /* shared with the children */

static void dir_path(char *out, size_t cap, int dir)
{
	snprintf(out, cap, "%s/s%d", g_root, dir);
}

static void file_path(char *out, size_t cap, int dir, const char *name)
{
	snprintf(out, cap, "%s/s%d/%s", g_root, dir, name);
}

#define W_FAIL(...)                                                                                \
	do {                                                                                       \
		fprintf(stderr, "worker %d op %u: ", w, me->ops);                                  \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fprintf(stderr, " (errno %s)\n", vt_errname(errno));                               \
		me->failed = 1;                                                                    \
		return -1;                                                                         \
	} while (0)

static char *g_buf;

/* Write the whole content of @f to @path (new file or O_TRUNC). */
static int write_content(int w, struct worker *me, const char *path, const struct file *f)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);

	if (fd < 0)
		W_FAIL("create %s", path);
	vt_pattern_fill(g_buf, (size_t)f->size, f->tag, 0);
	if (vt_pwrite_all(fd, g_buf, (size_t)f->size, 0) != 0) {
		close(fd);
		W_FAIL("write %s", path);
	}
	if (close(fd) != 0)
		W_FAIL("close %s", path);
	return 0;
}

static int check_content(const char *path, const struct file *f, char *buf, char *why,
			 size_t whycap)
{
	struct stat st;
	ssize_t bad;
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		snprintf(why, whycap, "open: %s", vt_errname(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || st.st_size != f->size) {
		snprintf(why, whycap, "size %lld, want %lld", (long long)st.st_size,
			 (long long)f->size);
		close(fd);
		return -1;
	}
	if (vt_pread_all(fd, buf, (size_t)f->size, 0) != 0) {
		snprintf(why, whycap, "read: %s", vt_errname(errno));
		close(fd);
		return -1;
	}
	close(fd);
	bad = vt_pattern_check(buf, (size_t)f->size, f->tag, 0);
	if (bad >= 0) {
		snprintf(why, whycap, "byte %zd differs", bad);
		return -1;
	}
	return 0;
}

/* The shared file s0/current: a 16-byte header "P<worker:2><seq:13>" and
 * then the pattern of tag (worker+1)<<40 | seq.  Written to @tmp, then
 * renamed over it. */
static int publish(int w, struct worker *me, const char *tmp, off_t size)
{
	char path[PATH_MAX], head[17];
	uint64_t tag = ((uint64_t)(w + 1) << 40) | me->pubs;
	int fd;

	snprintf(head, sizeof(head), "P%02d%013u", w, me->pubs);
	memcpy(g_buf, head, 16);
	vt_pattern_fill(g_buf + 16, (size_t)size, tag, 16);
	fd = open(tmp, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (fd < 0)
		W_FAIL("create %s", tmp);
	if (vt_pwrite_all(fd, g_buf, (size_t)size + 16, 0) != 0 || close(fd) != 0)
		W_FAIL("write %s", tmp);
	snprintf(path, sizeof(path), "%s/s0/current", g_root);
	if (rename(tmp, path) != 0)
		W_FAIL("rename %s over %s", tmp, path);
	me->pubs++;
	return 0;
}

/* 1: s0/current is one whole version; 0: it does not exist; -1: torn. */
static int check_current(char *why, size_t whycap)
{
	static char *buf;
	char path[PATH_MAX];
	unsigned w, seq;
	struct stat st;
	ssize_t bad;
	int fd;

	if (!buf)
		buf = malloc(16 << 20);
	snprintf(path, sizeof(path), "%s/s0/current", g_root);
	fd = open(path, O_RDONLY);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 16 || st.st_size > (16 << 20) ||
	    vt_pread_all(fd, buf, (size_t)st.st_size, 0) != 0) {
		snprintf(why, whycap, "s0/current: cannot read it whole (%s)", vt_errname(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	if (sscanf(buf, "P%02u%13u", &w, &seq) != 2 || w >= NPROC) {
		snprintf(why, whycap, "s0/current: bad header '%.16s'", buf);
		return -1;
	}
	bad = vt_pattern_check(buf + 16, (size_t)st.st_size - 16, ((uint64_t)(w + 1) << 40) | seq,
			       16);
	if (bad >= 0) {
		snprintf(why, whycap,
			 "s0/current (worker %u version %u): byte %zd is not that "
			 "version's",
			 w, seq, bad + 16);
		return -1;
	}
	return 1;
}

static int pick_alive(struct vt_rng *rng, struct worker *me)
{
	int start = (int)vt_rng_below(rng, MAXF);

	for (int i = 0; i < MAXF; i++)
		if (me->f[(start + i) % MAXF].alive)
			return (start + i) % MAXF;
	return -1;
}

static int pick_free(struct worker *me)
{
	for (int i = 0; i < MAXF; i++)
		if (!me->f[i].alive)
			return i;
	return -1;
}

static off_t pick_size(struct vt_rng *rng)
{
	uint64_t r = vt_rng_below(rng, 100);

	if (r < 50)
		return (off_t)vt_rng_below(rng, 5000);
	if (r < 90)
		return (off_t)vt_rng_below(rng, 200000);
	return (off_t)vt_rng_below(rng, 2 << 20);
}

static int worker_run(int w, unsigned nops)
{
	struct worker *me = &g_w[w];
	struct vt_rng rng;
	char path[PATH_MAX], path2[PATH_MAX], why[128];
	unsigned serial = 0;
	int logfd;

	vt_rng_seed(&rng, 1000 + (uint64_t)w);
	snprintf(path, sizeof(path), "%s/log", g_root);
	logfd = open(path, O_WRONLY | O_APPEND);
	if (logfd < 0)
		W_FAIL("open log");
	for (me->ops = 0; me->ops < nops; me->ops++) {
		uint64_t r = vt_rng_below(&rng, 100);
		int i = pick_alive(&rng, me), j;
		struct file *f = i >= 0 ? &me->f[i] : NULL;

		if (r < 22 || !f) {
			/* Create a new file. */
			j = pick_free(me);
			if (j < 0)
				continue;
			struct file *n = &me->f[j];

			n->dir = (int)vt_rng_below(&rng, NDIRS);
			snprintf(n->name, sizeof(n->name), "w%d-%u", w, serial++);
			n->tag = ((uint64_t)w << 48) | ((uint64_t)serial << 16);
			n->size = pick_size(&rng);
			file_path(path, sizeof(path), n->dir, n->name);
			if (write_content(w, me, path, n))
				return -1;
			n->alive = true;
		} else if (r < 32) {
			/* Replace the content atomically: temp file + rename over. */
			struct file t = *f;

			t.tag = f->tag + 1;
			t.size = pick_size(&rng);
			snprintf(path2, sizeof(path2), "%s/s%d/w%d-tmp", g_root,
				 (int)vt_rng_below(&rng, NDIRS), w);
			if (write_content(w, me, path2, &t))
				return -1;
			file_path(path, sizeof(path), f->dir, f->name);
			/* rename() only within one filesystem, any directories. */
			if (rename(path2, path) != 0)
				W_FAIL("rename %s over %s", path2, path);
			*f = t;
		} else if (r < 42 && f->size < (6 << 20)) {
			/* Append, continuing the pattern. */
			off_t add = pick_size(&rng) / 4 + 1;
			int fd;

			file_path(path, sizeof(path), f->dir, f->name);
			fd = open(path, O_WRONLY | O_APPEND);
			if (fd < 0)
				W_FAIL("open %s for append", path);
			vt_pattern_fill(g_buf, (size_t)add, f->tag, (uint64_t)f->size);
			if (write(fd, g_buf, (size_t)add) != add) {
				close(fd);
				W_FAIL("append to %s", path);
			}
			close(fd);
			f->size += add;
		} else if (r < 55) {
			/* Move to another shared directory under a new name. */
			int nd = (int)vt_rng_below(&rng, NDIRS);
			char nn[40];

			snprintf(nn, sizeof(nn), "w%d-%u", w, serial++);
			file_path(path, sizeof(path), f->dir, f->name);
			file_path(path2, sizeof(path2), nd, nn);
			if (rename(path, path2) != 0)
				W_FAIL("rename %s -> %s", path, path2);
			f->dir = nd;
			snprintf(f->name, sizeof(f->name), "%s", nn);
		} else if (r < 65) {
			/* Delete. */
			file_path(path, sizeof(path), f->dir, f->name);
			if (unlink(path) != 0)
				W_FAIL("unlink %s", path);
			f->alive = false;
		} else if (r < 72) {
			/* A hard link elsewhere: same bytes, two links, then gone. */
			struct stat st;

			file_path(path, sizeof(path), f->dir, f->name);
			snprintf(path2, sizeof(path2), "%s/s%d/w%d-link", g_root,
				 (int)vt_rng_below(&rng, NDIRS), w);
			if (link(path, path2) != 0)
				W_FAIL("link %s -> %s", path, path2);
			if (lstat(path2, &st) != 0 || st.st_nlink != 2)
				W_FAIL("link %s has nlink %lu", path2, (unsigned long)st.st_nlink);
			if (check_content(path2, f, g_buf, why, sizeof(why)))
				W_FAIL("through link %s: %s", path2, why);
			if (unlink(path2) != 0)
				W_FAIL("unlink %s", path2);
		} else if (r < 78) {
			/* A private subdirectory in a shared one, used and removed. */
			int d = (int)vt_rng_below(&rng, NDIRS);

			snprintf(path, sizeof(path), "%s/s%d/w%d-dir", g_root, d, w);
			snprintf(path2, sizeof(path2), "%s/s%d/w%d-dir/inner", g_root, d, w);
			if (mkdir(path, 0755) != 0)
				W_FAIL("mkdir %s", path);
			if (vt_write_file(path2, "x", 1) != 0)
				W_FAIL("create %s", path2);
			if (rmdir(path) == 0 || errno != ENOTEMPTY)
				W_FAIL("rmdir of non-empty %s", path);
			if (unlink(path2) != 0 || rmdir(path) != 0)
				W_FAIL("removing %s", path);
		} else if (r < 84) {
			/* Publish a version of the shared file. */
			snprintf(path, sizeof(path), "%s/s%d/w%d-pub", g_root,
				 (int)vt_rng_below(&rng, NDIRS), w);
			if (publish(w, me, path, pick_size(&rng)))
				return -1;
		} else if (r < 87) {
			/* Read the shared file: whichever version, it is whole. */
			if (check_current(why, sizeof(why)) < 0)
				W_FAIL("%s", why);
		} else if (r < 90) {
			/* Verify one of ours. */
			file_path(path, sizeof(path), f->dir, f->name);
			if (check_content(path, f, g_buf, why, sizeof(why)))
				W_FAIL("%s: %s", path, why);
		} else if (r < 97) {
			/* A whole record to the shared log. */
			char rec[RECSIZE + 1];

			snprintf(rec, sizeof(rec), "w%d %08u %-51s\n", w, me->records, "record");
			if (write(logfd, rec, RECSIZE) != RECSIZE)
				W_FAIL("append to log");
			me->records++;
		} else {
			/* Our files in that directory must all be listed. */
			int d = (int)vt_rng_below(&rng, NDIRS);
			int want = 0, got = 0;
			struct dirent *de;
			DIR *dir;

			for (int k = 0; k < MAXF; k++)
				if (me->f[k].alive && me->f[k].dir == d)
					want++;
			dir_path(path, sizeof(path), d);
			dir = opendir(path);
			if (!dir)
				W_FAIL("opendir %s", path);
			while ((de = readdir(dir))) {
				for (int k = 0; k < MAXF; k++)
					if (me->f[k].alive && me->f[k].dir == d &&
					    !strcmp(me->f[k].name, de->d_name))
						got++;
			}
			closedir(dir);
			if (got != want)
				W_FAIL("readdir of s%d shows %d of our %d files", d, got, want);
		}
	}
	close(logfd);
	return 0;
}

/* Parent: the shared directories hold exactly what the workers report. */
static void verify_all(const char *when)
{
	char path[PATH_MAX], why[128];
	char *buf = malloc(16 << 20);
	int expected = 0, found = 0;

	assert_non_null(buf);
	for (int w = 0; w < NPROC; w++)
		for (int i = 0; i < MAXF; i++) {
			struct file *f = &g_w[w].f[i];

			if (!f->alive)
				continue;
			expected++;
			file_path(path, sizeof(path), f->dir, f->name);
			if (check_content(path, f, buf, why, sizeof(why)))
				fail_msg("%s: %s: %s", when, path, why);
		}
	for (int d = 0; d < NDIRS; d++) {
		struct dirent *de;
		DIR *dir;

		dir_path(path, sizeof(path), d);
		dir = opendir(path);
		assert_non_null(dir);
		while ((de = readdir(dir))) {
			bool known = false;

			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (d == 0 && !strcmp(de->d_name, "current")) {
				found++;
				continue; /* checked below */
			}
			for (int w = 0; w < NPROC && !known; w++)
				for (int i = 0; i < MAXF; i++)
					if (g_w[w].f[i].alive && g_w[w].f[i].dir == d &&
					    !strcmp(g_w[w].f[i].name, de->d_name)) {
						known = true;
						break;
					}
			if (!known)
				fail_msg("%s: unexpected entry s%d/%s", when, d, de->d_name);
			found++;
		}
		closedir(dir);
		struct stat st;

		VT_OK(lstat(path, &st));
		assert_int_equal(st.st_nlink, 2);
	}
	/* The shared file: present once anyone published, one whole version. */
	unsigned pubs = 0;

	for (int w = 0; w < NPROC; w++)
		pubs += g_w[w].pubs;
	int cur = check_current(why, sizeof(why));

	if (cur < 0)
		fail_msg("%s: %s", when, why);
	if (cur != (pubs ? 1 : 0))
		fail_msg("%s: %u versions published but s0/current %s", when, pubs,
			 cur ? "exists" : "is missing");
	expected += cur;
	assert_int_equal(found, expected);

	/* The log: every record whole, each worker's in order, none lost. */
	unsigned next[NPROC] = {0}, total = 0;
	ssize_t n;

	for (int w = 0; w < NPROC; w++)
		total += g_w[w].records;
	snprintf(path, sizeof(path), "%s/log", g_root);
	n = vt_read_file(path, buf, 16 << 20);
	assert_int_equal(n, (ssize_t)total * RECSIZE);
	for (unsigned k = 0; k < total; k++) {
		const char *rec = buf + (size_t)k * RECSIZE;
		unsigned w, seq;

		if (sscanf(rec, "w%u %08u", &w, &seq) != 2 || w >= NPROC ||
		    rec[RECSIZE - 1] != '\n')
			fail_msg("%s: log record %u is torn: '%.64s'", when, k, rec);
		if (seq != next[w])
			fail_msg("%s: log record %u: worker %u seq %u, want %u", when, k, w, seq,
				 next[w]);
		next[w]++;
	}
	free(buf);
	printf("%s: %d files, %u log records verified\n", when, expected, total);
}

static void t_concurrent(void **state)
{
	unsigned nops = 1000 * vt_scale();
	pid_t pids[NPROC];
	char path[PATH_MAX];
	int fd;

	snprintf(g_root, sizeof(g_root), "%s", vt_fresh_dir(&g_fs, "conc"));
	for (int d = 0; d < NDIRS; d++) {
		dir_path(path, sizeof(path), d);
		VT_OK(mkdir(path, 0755));
	}
	snprintf(path, sizeof(path), "%s/log", g_root);
	fd = VT_OK(open(path, O_CREAT | O_WRONLY, 0644));
	VT_OK(close(fd));
	memset(g_w, 0, sizeof(*g_w) * NPROC);

	fflush(NULL);
	for (int w = 0; w < NPROC; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0)
			_exit(worker_run(w, nops) == 0 ? 0 : 1);
	}
	for (int w = 0; w < NPROC; w++) {
		int status;

		VT_OK(waitpid(pids[w], &status, 0));
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || g_w[w].failed)
			fail_msg("worker %d failed (status 0x%x) at op %u", w, status, g_w[w].ops);
	}
	verify_all("after the run");
	if (vt_fs_remount(&g_fs) != 0)
		fail_msg("remount failed");
	verify_all("after remount");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_concurrent),
	};
	int r;

	g_buf = malloc(16 << 20);
	g_w = mmap(NULL, sizeof(*g_w) * NPROC, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		   -1, 0);
	if (!g_buf || g_w == MAP_FAILED)
		return 1;
	r = vt_fs_start(&g_fs, "1G", "pool=64M");
	if (r != 0)
		return r == VT_SKIP ? VT_SKIP : 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	if (vt_fs_cleanup(&g_fs) != 0 && r == 0)
		r = 1;
	return r;
}
