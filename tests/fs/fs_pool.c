/*
 * fs_pool.c - what only a real mount can show: everything (inode numbers
 * included) survives an unmount and remount, and the pool's stats file,
 * control file and residency xattr tell the truth about loads, eviction and
 * dirty pages.  Against VS_TEST_DIR only the persistence test runs (as a
 * snapshot-equals-itself check); the rest are skipped.
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
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "vt_harness.h"
#include "vt_check.h"
#include "vt_tree.h"

#define MiB (1024L * 1024)

/* Metric names as fs/ writes them (without the virtuscale_ prefix). */
#define ST_LOADS    "pool_loads_total"
#define ST_RESIDENT "pool_resident_pages"
#define ST_DIRTY    "pool_dirty_pages"
#define ST_CAPACITY "pool_capacity_pages"
#define ST_EVICTED  "pool_evictions_total"
#define ST_FAULTS   "page_fault_seconds_count"
#define RESIDENCY   "user.virtuscale.residency"

#define POOL_PAGES (64 * MiB / VT_PAGE)

static struct vt_fs g_fs;

/* Paths below a test's directory (short: on nearly every line). */
#define P vt_pathf

static void write_pattern_file(const char *path, uint64_t tag, off_t off, size_t len)
{
	char *buf = malloc(len ? len : 1);
	int fd = VT_OK(open(path, O_CREAT | O_WRONLY, 0644));

	assert_non_null(buf);
	vt_pattern_fill(buf, len, tag, (uint64_t)off);
	VT_OK(vt_pwrite_all(fd, buf, len, off));
	VT_OK(close(fd));
	free(buf);
}

static uint64_t stat_or_fail(const char *name)
{
	uint64_t v = 0;

	if (vt_stat_get(&g_fs, name, &v) != 0)
		fail_msg("stats file lacks virtuscale_%s", name);
	return v;
}

static void residency(const char *path, uint64_t *ret_res, uint64_t *ret_total)
{
	char buf[64];
	ssize_t n = getxattr(path, RESIDENCY, buf, sizeof(buf) - 1);

	if (n < 0)
		fail_msg("getxattr(%s, %s): %s", path, RESIDENCY, vt_errname(errno));
	buf[n] = 0;
	if (sscanf(buf, "%lu %lu", ret_res, ret_total) != 2)
		fail_msg("residency value '%s' is not \"RESIDENT TOTAL\"", buf);
}

static void build_tree(const char *d)
{
	static char target[4001];
	struct timespec ts[2] = {{.tv_sec = 1111111111, .tv_nsec = 222},
				 {.tv_sec = 1333333333, .tv_nsec = 444444444}};
	char big[10000];

	VT_OK(mkdir(P(d, "a"), 0750));
	write_pattern_file(P(d, "a/small"), 1, 0, 3);
	write_pattern_file(P(d, "a/page"), 2, 0, VT_PAGE);
	write_pattern_file(P(d, "a/page1"), 3, 0, VT_PAGE + 1);
	write_pattern_file(P(d, "a/mid"), 4, 0, MiB + 3);
	write_pattern_file(P(d, "a/sparse"), 5, 0, 5000);
	write_pattern_file(P(d, "a/sparse"), 6, 50 * MiB, 7000);
	VT_OK(truncate(P(d, "a/sparse"), 60 * MiB));
	VT_OK(vt_write_file(P(d, "a/empty"), "", 0));
	VT_OK(mkdir(P(d, "b"), 0755));
	VT_OK(link(P(d, "a/mid"), P(d, "b/hl")));
	VT_OK(symlink("page", P(d, "a/sym")));
	memset(target, 't', 4000);
	VT_OK(symlink(target, P(d, "b/longsym")));
	VT_OK(mkfifo(P(d, "a/fifo"), 0600));
	VT_OK(mknod(P(d, "a/dev"), S_IFCHR | 0640, makedev(4, 64)));
	VT_OK(setxattr(P(d, "a/small"), "user.s", "small", 5, 0));
	vt_pattern_fill(big, sizeof(big), 7, 0);
	if (setxattr(P(d, "a/small"), "user.big", big, sizeof(big), 0) != 0 && !g_fs.external)
		fail_msg("setxattr 10 KB: %s", vt_errname(errno));
	VT_OK(setxattr(P(d, "a"), "user.dir", "d", 1, 0));
	VT_OK(chown(P(d, "a/page"), 12, 34));
	VT_OK(chmod(P(d, "a/page1"), 04711));
	VT_OK(utimensat(AT_FDCWD, P(d, "a/mid"), ts, 0));
	char deep[PATH_MAX] = "";

	for (int i = 0; i < 12; i++) {
		strcat(deep, i ? "/deep" : "deep");
		VT_OK(mkdir(P(d, "%s", deep), 0755));
	}
	write_pattern_file(P(d, "%s/leaf", deep), 8, 0, 100);
	VT_OK(mkdir(P(d, "many"), 0755));
	for (int i = 0; i < 300; i++)
		write_pattern_file(P(d, "many/f%03d", i), 100 + i, 0, (size_t)i * 37);
}

static void t_remount_persistence(void **state)
{
	const char *d = vt_fresh_dir(&g_fs, "persist");
	struct vt_snap before, after;
	struct statvfs sv1, sv2;
	size_t diffs;

	assert_non_null(d);
	build_tree(d);
	assert_int_equal(vt_snap_take(d, NULL, &before), 0);
	VT_OK(statvfs(d, &sv1));
	if (vt_fs_remount(&g_fs) != 0)
		fail_msg("remount failed");
	assert_int_equal(vt_snap_take(d, NULL, &after), 0);
	/* Everything, down to inode numbers, nanosecond times and device
	 * numbers, must be as it was. */
	diffs = vt_snap_compare(
	    &before, &after, VT_CMP_INO | VT_CMP_TIMES | VT_CMP_OWNER | VT_CMP_RDEV | VT_CMP_LINKS,
	    30);
	if (diffs)
		fail_msg("%zu differences after remount (listed above)", diffs);
	VT_OK(statvfs(d, &sv2));
	assert_int_equal(sv1.f_blocks, sv2.f_blocks);
	/* Free space should not move by more than a little metadata. */
	if (llabs((long long)sv1.f_bfree - (long long)sv2.f_bfree) * sv1.f_frsize > 2 * MiB)
		fail_msg("f_bfree %llu before remount, %llu after", (unsigned long long)sv1.f_bfree,
			 (unsigned long long)sv2.f_bfree);

	/* The tree stays usable: new names, removal, a second remount. */
	write_pattern_file(P(d, "a/after"), 9, 0, 3 * VT_PAGE);
	VT_OK(unlink(P(d, "a/mid")));
	assert_int_equal(vt_fs_remount(&g_fs), 0);
	{
		struct stat st;

		VT_OK(lstat(P(d, "b/hl"), &st));
		assert_int_equal(st.st_nlink, 1);
		VT_OK(lstat(P(d, "a/after"), &st));
		assert_int_equal(st.st_size, 3 * VT_PAGE);
		/* No inode number in use may be handed out again. */
		for (size_t i = 0; i < before.n; i++)
			if (before.e[i].ino == st.st_ino)
				fail_msg("new file got inode %lu, in use by %s",
					 (unsigned long)st.st_ino, before.e[i].path);
	}
	vt_snap_free(&before);
	vt_snap_free(&after);
}

static void need_mount(void)
{
	if (g_fs.external) {
		printf("note: stats need a real mount; skipped under VS_TEST_DIR\n");
		skip();
	}
}

/* The latency histogram @name (without the virtuscale_ prefix) is declared
 * a histogram; its cumulative buckets never go down and end in +Inf, which
 * equals _count (all read from one rendering of the file). */
static void check_histogram(const char *name)
{
	static char buf[65536];
	char want[128];
	double prev = 0, inf = -1, count;
	int buckets = 0;
	char *p;

	if (vt_read_file(vt_path(&g_fs, ".virtuscale/stats"), buf, sizeof(buf)) <= 0)
		fail_msg("reading .virtuscale/stats: %s", vt_errname(errno));
	snprintf(want, sizeof(want), "# TYPE virtuscale_%s histogram\n", name);
	if (!strstr(buf, want))
		fail_msg("stats file lacks '%s'", want);
	snprintf(want, sizeof(want), "virtuscale_%s_bucket{le=\"", name);
	for (p = strstr(buf, want); p; p = strstr(p + 1, want)) {
		char *le = p + strlen(want), *sp = strchr(le, ' ');
		double v = strtod(sp + 1, NULL);

		if (v < prev)
			fail_msg("%s buckets go down: '%.60s'", name, p);
		prev = v;
		buckets++;
		if (!strncmp(le, "+Inf\"}", 6))
			inf = v;
	}
	snprintf(want, sizeof(want), "virtuscale_%s_count ", name);
	p = strstr(buf, want);
	if (buckets < 2 || inf < 0 || !p || !strstr(buf, "_sum "))
		fail_msg("histogram %s incomplete (%d buckets)", name, buckets);
	count = strtod(p + strlen(want), NULL);
	if (count != inf)
		fail_msg("%s: +Inf bucket %.0f but _count %.0f", name, inf, count);
}

static void t_stats_file(void **state)
{
	static char buf[65536];
	uint64_t cap, res;
	ssize_t n;
	int lines = 0;

	need_mount();
	n = vt_read_file(vt_path(&g_fs, ".virtuscale/stats"), buf, sizeof(buf));
	if (n <= 0)
		fail_msg("reading .virtuscale/stats: %s", n < 0 ? vt_errname(errno) : "empty");
	/* Every sample line is "virtuscale_NAME[{labels}] NUMBER". */
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char *sp, *end;

		if (line[0] == '#')
			continue;
		if (strncmp(line, "virtuscale_", 11))
			fail_msg("stats line without the virtuscale_ prefix: '%s'", line);
		sp = strrchr(line, ' ');
		if (!sp)
			fail_msg("stats line without a value: '%s'", line);
		strtod(sp + 1, &end);
		if (end == sp + 1 || *end)
			fail_msg("stats value is not a number: '%s'", line);
		lines++;
	}
	assert_true(lines >= 5);
	cap = stat_or_fail(ST_CAPACITY);
	res = stat_or_fail(ST_RESIDENT);
	stat_or_fail(ST_DIRTY);
	stat_or_fail(ST_LOADS);
	stat_or_fail(ST_EVICTED);
	assert_int_equal(cap, POOL_PAGES);
	assert_true(res <= cap);
	check_histogram("page_fault_seconds");
	check_histogram("evict_batch_seconds");

	/* The control directory is reachable but not listed; the stats file
	 * cannot be written, control rejects unknown commands. */
	struct stat st;

	VT_OK(stat(vt_path(&g_fs, ".virtuscale"), &st));
	assert_true(S_ISDIR(st.st_mode));
	{
		int fd = open(vt_path(&g_fs, ".virtuscale/stats"), O_WRONLY);

		if (fd >= 0) {
			if (write(fd, "x\n", 2) >= 0)
				fail_msg("writing to the stats file succeeded");
			close(fd);
		}
	}
	assert_int_not_equal(vt_control(&g_fs, "no-such-command"), 0);
	if (mkdir(vt_path(&g_fs, ".virtuscale/x"), 0755) == 0)
		fail_msg("mkdir inside .virtuscale succeeded");
	/* Not listed in the root. */
	{
		struct dirent *de;
		DIR *dir = opendir(g_fs.mnt);

		assert_non_null(dir);
		while ((de = readdir(dir)))
			if (!strcmp(de->d_name, ".virtuscale"))
				fail_msg(".virtuscale is listed by readdir of the root");
		closedir(dir);
	}
	if (mkdir(vt_path(&g_fs, ".virtuscale"), 0755) == 0)
		fail_msg("mkdir .virtuscale in the root succeeded");
}

static void t_evict_then_cold_read(void **state)
{
	const char *d;
	const size_t size = 16 * MiB;
	const uint64_t pages = size / VT_PAGE;
	uint64_t res, total, loads0, loads1, faults0, faults1;
	char *buf;
	void *abuf = NULL;
	int fd;

	need_mount();
	d = vt_fresh_dir(&g_fs, "cold");
	assert_non_null(d);
	write_pattern_file(P(d, "f"), 20, 0, size);
	fd = VT_OK(open(P(d, "f"), O_RDONLY));
	VT_OK(fsync(fd));
	VT_OK(close(fd));
	assert_int_equal(vt_control(&g_fs, "flush"), 0);
	assert_int_equal(vt_control(&g_fs, "evict"), 0);

	residency(P(d, "f"), &res, &total);
	assert_int_equal(total, pages);
	if (res != 0)
		fail_msg("after evict the file still has %lu of %lu pages resident", res, total);

	/* Read through O_DIRECT so the kernel's page cache cannot answer. */
	loads0 = stat_or_fail(ST_LOADS);
	faults0 = stat_or_fail(ST_FAULTS);
	assert_int_equal(posix_memalign(&abuf, VT_PAGE, MiB), 0);
	buf = abuf;
	fd = open(P(d, "f"), O_RDONLY | O_DIRECT);
	if (fd < 0) {
		fd = VT_OK(open(P(d, "f"), O_RDONLY));
		VT_OK(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED));
	}
	for (size_t off = 0; off < size; off += MiB) {
		VT_OK(vt_pread_all(fd, buf, MiB, (off_t)off));
		if (vt_pattern_check(buf, MiB, 20, off) >= 0)
			fail_msg("data differs in the MiB at %zu after evict", off);
	}
	VT_OK(close(fd));
	free(abuf);
	loads1 = stat_or_fail(ST_LOADS);
	faults1 = stat_or_fail(ST_FAULTS);
	if (loads1 - loads0 < pages)
		fail_msg("reading %lu cold pages raised loads by only %lu (%lu -> %lu)", pages,
			 loads1 - loads0, loads0, loads1);
	/* Every page read from the image is timed in the fault histogram. */
	if (faults1 - faults0 < pages)
		fail_msg("reading %lu cold pages raised the fault histogram's count by only %lu",
			 pages, faults1 - faults0);
	check_histogram("page_fault_seconds");
	residency(P(d, "f"), &res, &total);
	if (res != pages)
		fail_msg("after reading it all, %lu of %lu pages resident", res, total);
}

/* A file larger than half the pool, read in large pieces, streams past the
 * pool: right bytes, counted as loads and read-through pages, and its pages
 * do not displace the pool's (README "Streaming reads"). Small reads of it
 * still go through the pool. */
static void t_streaming_read(void **state)
{
	const char *d;
	uint64_t cap = stat_or_fail(ST_CAPACITY);
	const size_t size = (size_t)(cap / 2 + cap / 4) * VT_PAGE; /* 3/4 of the pool */
	const uint64_t pages = size / VT_PAGE;
	uint64_t res, total;
	void *abuf = NULL;
	int fd;

	need_mount();
	d = vt_fresh_dir(&g_fs, "stream");
	assert_non_null(d);
	write_pattern_file(P(d, "big"), 31, 0, size);
	assert_int_equal(vt_control(&g_fs, "flush"), 0);
	assert_int_equal(vt_control(&g_fs, "evict"), 0);

	uint64_t rt0 = stat_or_fail("pool_read_through_pages_total");
	uint64_t loads0 = stat_or_fail(ST_LOADS);
	assert_int_equal(posix_memalign(&abuf, VT_PAGE, MiB), 0);
	fd = VT_OK(open(P(d, "big"), O_RDONLY | O_DIRECT));
	for (size_t off = 0; off < size; off += MiB) {
		size_t n = size - off < MiB ? size - off : MiB;
		VT_OK(vt_pread_all(fd, abuf, n, (off_t)off));
		if (vt_pattern_check(abuf, n, 31, off) >= 0)
			fail_msg("streamed data differs in the MiB at %zu", off);
	}
	uint64_t rt1 = stat_or_fail("pool_read_through_pages_total");
	uint64_t loads1 = stat_or_fail(ST_LOADS);
	if (rt1 - rt0 < pages * 9 / 10)
		fail_msg("a %lu-page stream read %lu pages past the pool", pages, rt1 - rt0);
	if (loads1 - loads0 < pages)
		fail_msg("a %lu-page stream counted %lu loads", pages, loads1 - loads0);
	residency(P(d, "big"), &res, &total);
	if (res > pages / 10)
		fail_msg("after streaming, %lu of %lu pages are in the pool", res, total);

	/* 4 KiB reads: through the pool */
	for (size_t off = 0; off < 64 * (size_t)VT_PAGE; off += VT_PAGE) {
		VT_OK(vt_pread_all(fd, abuf, VT_PAGE, (off_t)off));
		if (vt_pattern_check(abuf, VT_PAGE, 31, off) >= 0)
			fail_msg("4 KiB read differs at %zu", off);
	}
	residency(P(d, "big"), &res, &total);
	if (res < 64)
		fail_msg("after 64 small reads, %lu pages are in the pool", res);
	VT_OK(close(fd));
	free(abuf);
	VT_OK(unlink(P(d, "big")));
}

/* Writing a new file larger than half the pool in large pieces streams
 * its whole new pages to the image: they are counted, stay out of the
 * pool, and read back right, after an evict and after a remount. */
static void t_streaming_write(void **state)
{
	const char *d;
	uint64_t cap = stat_or_fail(ST_CAPACITY);
	const size_t size = (size_t)(cap + cap / 2) * VT_PAGE; /* 1.5 pools */
	const uint64_t pages = size / VT_PAGE;
	uint64_t res, total;
	void *abuf = NULL;
	int fd;

	need_mount();
	d = vt_fresh_dir(&g_fs, "wstream");
	assert_non_null(d);
	uint64_t wt0 = stat_or_fail("pool_write_through_pages_total");
	assert_int_equal(posix_memalign(&abuf, VT_PAGE, MiB), 0);
	fd = VT_OK(open(P(d, "big"), O_CREAT | O_WRONLY | O_DIRECT, 0644));
	for (size_t off = 0; off < size; off += MiB) {
		size_t n = size - off < MiB ? size - off : MiB;
		vt_pattern_fill(abuf, n, 41, off);
		VT_OK(vt_pwrite_all(fd, abuf, n, (off_t)off));
	}
	VT_OK(fsync(fd));
	VT_OK(close(fd));
	uint64_t wt1 = stat_or_fail("pool_write_through_pages_total");
	/* the first half pool of the file goes through it, the rest past it */
	if (wt1 - wt0 < pages / 2)
		fail_msg("a %lu-page stream wrote %lu pages past the pool", pages, wt1 - wt0);
	/* the streamed pages never took a frame */
	residency(P(d, "big"), &res, &total);
	assert_int_equal(total, pages);
	if (res + (wt1 - wt0) > pages)
		fail_msg("%lu pages streamed, yet %lu of %lu are in the pool", wt1 - wt0, res,
			 pages);

	for (int round = 0; round < 2; round++) {
		if (round == 0)
			assert_int_equal(vt_control(&g_fs, "evict"), 0);
		else
			assert_int_equal(vt_fs_remount(&g_fs), 0);
		fd = VT_OK(open(P(d, "big"), O_RDONLY | O_DIRECT));
		for (size_t off = 0; off < size; off += MiB) {
			size_t n = size - off < MiB ? size - off : MiB;
			VT_OK(vt_pread_all(fd, abuf, n, (off_t)off));
			if (vt_pattern_check(abuf, n, 41, off) >= 0)
				fail_msg("streamed write reads back wrong in the MiB at %zu (%s)",
					 off, round ? "after a remount" : "after evict");
		}
		VT_OK(close(fd));
	}
	free(abuf);
	VT_OK(unlink(P(d, "big")));
}

static void t_flush_clears_dirty(void **state)
{
	const char *d;
	uint64_t dirty;
	int fd;

	need_mount();
	d = vt_fresh_dir(&g_fs, "dirty");
	assert_non_null(d);
	write_pattern_file(P(d, "f"), 21, 0, 8 * MiB);
	fd = VT_OK(open(P(d, "f"), O_RDONLY));
	VT_OK(fsync(fd));
	VT_OK(close(fd));
	assert_int_equal(vt_control(&g_fs, "flush"), 0);
	dirty = stat_or_fail(ST_DIRTY);
	if (dirty != 0)
		fail_msg("%lu dirty pages after flush", dirty);
	/* Still all there. */
	fd = VT_OK(open(P(d, "f"), O_RDONLY));
	char *buf = malloc(8 * MiB);

	assert_non_null(buf);
	VT_OK(vt_pread_all(fd, buf, 8 * MiB, 0));
	assert_true(vt_pattern_check(buf, 8 * MiB, 21, 0) < 0);
	free(buf);
	VT_OK(close(fd));
}

static void t_pool_stays_bounded(void **state)
{
	const char *d;
	uint64_t ev0, ev1, res, cap;
	char *buf = malloc(MiB);

	need_mount();
	d = vt_fresh_dir(&g_fs, "bounded");
	assert_non_null(d);
	assert_non_null(buf);
	ev0 = stat_or_fail(ST_EVICTED);
	/* 120 MiB through a 64 MiB pool. */
	for (int f = 0; f < 4; f++) {
		int fd = VT_OK(open(P(d, "f%d", f), O_CREAT | O_WRONLY, 0644));

		for (int i = 0; i < 30; i++) {
			vt_pattern_fill(buf, MiB, 30 + f, (uint64_t)i * MiB);
			VT_OK(vt_pwrite_all(fd, buf, MiB, (off_t)i * MiB));
		}
		VT_OK(fsync(fd));
		VT_OK(close(fd));
		res = stat_or_fail(ST_RESIDENT);
		cap = stat_or_fail(ST_CAPACITY);
		if (res > cap)
			fail_msg("%lu pages resident in a pool of %lu", res, cap);
	}
	ev1 = stat_or_fail(ST_EVICTED);
	if (ev1 - ev0 < 30 * MiB / VT_PAGE)
		fail_msg("writing 120 MiB through a 64 MiB pool evicted only %lu pages", ev1 - ev0);
	for (int f = 0; f < 4; f++) {
		int fd = VT_OK(open(P(d, "f%d", f), O_RDONLY | O_DIRECT));
		void *abuf = NULL;

		assert_int_equal(posix_memalign(&abuf, VT_PAGE, MiB), 0);
		for (int i = 0; i < 30; i += 7) {
			VT_OK(vt_pread_all(fd, abuf, MiB, (off_t)i * MiB));
			if (vt_pattern_check(abuf, MiB, 30 + f, (uint64_t)i * MiB) >= 0)
				fail_msg("file %d MiB %d differs after eviction", f, i);
		}
		free(abuf);
		VT_OK(close(fd));
		VT_OK(unlink(P(d, "f%d", f)));
	}
	free(buf);
}

static void t_residency_xattr(void **state)
{
	const char *d;
	uint64_t res, total;
	char buf[64];

	need_mount();
	d = vt_fresh_dir(&g_fs, "resid");
	assert_non_null(d);
	write_pattern_file(P(d, "f"), 22, 0, 10 * VT_PAGE + 1);
	residency(P(d, "f"), &res, &total);
	assert_int_equal(total, 11);
	assert_true(res <= total);
	/* Virtual: not listed, not settable, not on directories. */
	{
		char list[4096];
		ssize_t n = VT_OK(listxattr(P(d, "f"), list, sizeof(list)));

		for (char *p = list; p < list + n; p += strlen(p) + 1)
			if (!strcmp(p, RESIDENCY))
				fail_msg("%s is listed by listxattr", RESIDENCY);
	}
	VT_ERR(setxattr(P(d, "f"), RESIDENCY, "1 1", 3, 0), EPERM);
	VT_ERR(removexattr(P(d, "f"), RESIDENCY), EPERM);
	errno = 0;
	if (getxattr(d, RESIDENCY, buf, sizeof(buf)) >= 0)
		fail_msg("a directory has %s", RESIDENCY);
}

/* Requests the kernel need not send. FLUSH, on every close, is answered
 * ENOSYS once and then stops for the mount. An fsync of pages the file
 * already had does not make the next write fetch the attributes again (an
 * fsync that allocated does: st_blocks changed; fs_meta checks that one). */
static void t_quiet_requests(void **state)
{
	char f[PATH_MAX], buf[4096];
	int fd;

	if (g_fs.external)
		skip();
	snprintf(f, sizeof(f), "%s/f", vt_fresh_dir(&g_fs, "quiet"));
	memset(buf, 'q', sizeof(buf));
	VT_OK(fd = open(f, O_CREAT | O_RDWR, 0644));
	VT_OK(vt_pwrite_all(fd, buf, sizeof(buf), 0));
	VT_OK(fsync(fd));
	uint64_t ga0 = stat_or_fail("fuse_requests_total{op=\"getattr\"}");
	for (int i = 0; i < 20; i++) {
		buf[0] = (char)i;
		VT_OK(vt_pwrite_all(fd, buf, sizeof(buf), 0));
		VT_OK(fsync(fd));
	}
	uint64_t ga1 = stat_or_fail("fuse_requests_total{op=\"getattr\"}");
	/* (reading the stats file may cost a getattr of its own) */
	if (ga1 - ga0 > 2)
		fail_msg("20 overwrites with fsync took %llu getattr requests",
			 (unsigned long long)(ga1 - ga0));
	VT_OK(close(fd));

	/* The kernel asks for security.capability before a write only until
	 * it knows the file has none (FUSE_HANDLE_KILLPRIV_V2, fs/wire.c),
	 * not before each one. */
	VT_OK(fd = open(f, O_WRONLY));
	uint64_t gx0 = stat_or_fail("fuse_requests_total{op=\"getxattr\"}");
	for (int i = 0; i < 20; i++)
		VT_OK(vt_pwrite_all(fd, buf, 100, 100 * i));
	uint64_t gx1 = stat_or_fail("fuse_requests_total{op=\"getxattr\"}");
	if (gx1 - gx0 > 1)
		fail_msg("20 writes took %llu getxattr requests", (unsigned long long)(gx1 - gx0));
	VT_OK(close(fd));

	uint64_t fl0 = stat_or_fail("fuse_requests_total{op=\"flush\"}");
	for (int i = 0; i < 20; i++) {
		VT_OK(fd = open(f, O_RDONLY));
		VT_OK(close(fd));
	}
	uint64_t fl1 = stat_or_fail("fuse_requests_total{op=\"flush\"}");
	if (fl1 - fl0 > 1)
		fail_msg("20 closes sent %llu flush requests", (unsigned long long)(fl1 - fl0));
	VT_OK(unlink(f));
}

/* Polling (fs/wire.c, on by default): back-to-back requests are read by a
 * thread still spinning, and a request that waits on the disk passes the
 * reading on first. */
static void t_polling(void **state)
{
	char f[PATH_MAX];
	void *buf = NULL;
	int fd;

	if (g_fs.external)
		skip();
	if (getenv("VS_TEST_OPTS") && strstr(getenv("VS_TEST_OPTS"), "poll=0"))
		skip(); /* polling turned off for this run */
	uint64_t ring = 0;
	if (vt_stat_get(&g_fs, "fuse_transport_info{transport=\"uring\"}", &ring) == 0 && ring)
		skip(); /* FUSE over io_uring (fs/uring.c): nothing is read from /dev/fuse */
	snprintf(f, sizeof(f), "%s/f", vt_fresh_dir(&g_fs, "polling"));
	assert_int_equal(posix_memalign(&buf, 4096, 4096), 0);
	memset(buf, 'p', 4096);
	VT_OK(fd = open(f, O_CREAT | O_RDWR | O_DIRECT, 0644));
	VT_OK(vt_pwrite_all(fd, buf, 4096, 0));

	uint64_t s0 = stat_or_fail("fuse_reads_total{thread=\"awake\"}");
	uint64_t w0 = stat_or_fail("fuse_reads_total{thread=\"woken\"}");
	uint64_t r0 = stat_or_fail("fuse_requests_total{op=\"read\"}");
	for (int i = 0; i < 2000; i++)
		VT_OK(pread(fd, buf, 4096, 0));
	uint64_t s1 = stat_or_fail("fuse_reads_total{thread=\"awake\"}");
	uint64_t w1 = stat_or_fail("fuse_reads_total{thread=\"woken\"}");
	uint64_t r1 = stat_or_fail("fuse_requests_total{op=\"read\"}");
	/* every request read is counted one way or the other; O_DIRECT reads
	 * back to back arrive within the spin (all of them on an idle
	 * machine: at least some on a busy one) */
	if ((s1 - s0) + (w1 - w0) < r1 - r0 || r1 - r0 < 2000)
		fail_msg("%llu reads served, %llu + %llu requests counted",
			 (unsigned long long)(r1 - r0), (unsigned long long)(s1 - s0),
			 (unsigned long long)(w1 - w0));
	if (s1 == s0)
		fail_msg("2000 back-to-back reads, none found by an awake thread");

	/* An fsync waits for a checkpoint's syncs: its thread passes the
	 * reading on before it waits. */
	uint64_t h0 = stat_or_fail("fuse_reader_handoffs_total{why=\"wait\"}");
	for (int i = 0; i < 5; i++) {
		((char *)buf)[0] = (char)i;
		VT_OK(vt_pwrite_all(fd, buf, 4096, 0));
		VT_OK(fsync(fd));
	}
	uint64_t h1 = stat_or_fail("fuse_reader_handoffs_total{why=\"wait\"}");
	if (h1 == h0)
		fail_msg("5 fsyncs, and the reading thread never passed the role on");
	VT_OK(close(fd));
	VT_OK(unlink(f));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_remount_persistence),  cmocka_unit_test(t_stats_file),
	    cmocka_unit_test(t_evict_then_cold_read), cmocka_unit_test(t_flush_clears_dirty),
	    cmocka_unit_test(t_pool_stays_bounded),   cmocka_unit_test(t_residency_xattr),
	    cmocka_unit_test(t_quiet_requests),       cmocka_unit_test(t_polling),       cmocka_unit_test(t_streaming_read),
	    cmocka_unit_test(t_streaming_write),
	};
	int r = vt_fs_start(&g_fs, "512M", "pool=64M");

	if (r != 0)
		return r == VT_SKIP ? VT_SKIP : 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	if (vt_fs_cleanup(&g_fs) != 0 && r == 0)
		r = 1;
	return r;
}
