/*
 * test_tools_mount.c - vsstat, vsctl and vstop against a real VirtuScale
 * mount (formatted and mounted in a private temp dir by the tests/lib
 * harness).
 *
 * What is checked:
 *  - vsstat's per-interval numbers add up to the counter deltas of the stats
 *    file read before and after (exactly for --json, within rounding for
 *    the columns) while a cold file is read;
 *  - the residency vsctl reports is the xattr's, full after reading a file,
 *    zero after `vsctl evict`, about half after reading the first half;
 *  - flush leaves no dirty page, checkpoint either works or explains itself;
 *  - vstop, driven in tmux, shows its panels, follows a resize and quits on
 *    q; without a terminal it prints text snapshots.
 *
 * Exits 77 when /dev/fuse, the daemon, mkfs or the tools are missing; the
 * tmux test is skipped alone when tmux is missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "tools/statsfile.h"
#include "tr_run.h"
#include "vt_harness.h"

static struct vt_fs fs;
static const char *vsstat, *vsctl, *vstop;
static struct tr_result res;

#define RUN(...)                                                                                   \
	do {                                                                                       \
		char *argv_[] = {__VA_ARGS__, NULL};                                               \
		assert_int_equal(tr_run(argv_, 60, &res), 0);                                      \
	} while (0)

/*
 * A counter by the tools' name table, summed over its label sets, read with
 * a few lines of parsing here rather than statsfile.c (which is under test).
 */
static uint64_t counter(const char *full_name)
{
	static char buf[65536];
	size_t len = strlen(full_name);
	uint64_t sum = 0;
	bool found = false;
	char *line, *save = NULL;

	assert_true(vt_read_file(vt_path(&fs, SF_STATS_REL), buf, sizeof(buf)) > 0);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, full_name, len) != 0 || (line[len] != ' ' && line[len] != '{'))
			continue;
		sum += strtoull(strrchr(line, ' ') + 1, NULL, 10);
		found = true;
	}
	if (!found)
		fail_msg("stats file has no %s", full_name);
	return sum;
}

static void make_file(const char *path, size_t bytes, uint64_t tag)
{
	size_t chunk = 1 << 20, off;
	char *buf = malloc(chunk);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_non_null(buf);
	assert_true(fd >= 0);
	for (off = 0; off < bytes; off += chunk) {
		size_t n = bytes - off < chunk ? bytes - off : chunk;

		vt_pattern_fill(buf, n, tag, off);
		assert_int_equal(vt_pwrite_all(fd, buf, n, off), 0);
	}
	assert_int_equal(fsync(fd), 0);
	assert_int_equal(close(fd), 0);
	free(buf);
}

/* Drop the kernel's page cache of @path so that the next read reaches the
 * daemon (and therefore the pool) again. */
static void drop_kernel_cache(const char *path)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
}

static void read_range(const char *path, off_t off, size_t len, uint64_t tag)
{
	size_t chunk = 1 << 20, done;
	char *buf = malloc(chunk);
	int fd = open(path, O_RDONLY);

	assert_non_null(buf);
	assert_true(fd >= 0);
	for (done = 0; done < len; done += chunk) {
		size_t n = len - done < chunk ? len - done : chunk;

		assert_int_equal(vt_pread_all(fd, buf, n, off + done), 0);
		assert_int_equal(vt_pattern_check(buf, n, tag, off + done), -1);
	}
	close(fd);
	free(buf);
}

static void vsctl_ok(const char *cmd)
{
	RUN((char *)vsctl, fs.mnt, (char *)cmd);
	if (res.status != 0)
		fail_msg("vsctl %s: exit %d: %s", cmd, res.status, res.err);
}

/* The kernel's asynchronous read-ahead goes on after read() returns: wait
 * until the file's residency holds still for 200 ms (10 s at most). */
static void settle(const char *path)
{
	char last[64] = "", val[64];

	for (int i = 0; i < 50; i++) {
		ssize_t n = getxattr(path, SF_RESIDENCY_XATTR, val, sizeof(val) - 1);

		assert_true(n > 0);
		val[n] = '\0';
		if (strcmp(val, last) == 0)
			return;
		snprintf(last, sizeof(last), "%s", val);
		usleep(200000);
	}
	fail_msg("residency of %s still changing after 10 s", path);
}

/* Resident and total pages of @path as printed by `vsctl residency`,
 * checked against the xattr read here directly. */
static void residency(const char *path, uint64_t *ret_res, uint64_t *ret_total)
{
	unsigned long long r, t;
	char val[64], *line;
	uint64_t xr, xt;
	ssize_t n;

	settle(path);
	RUN((char *)vsctl, "residency", (char *)path);
	if (res.status != 0)
		fail_msg("vsctl residency %s: exit %d: %s", path, res.status, res.err);
	line = strchr(res.out, '\n'); /* skip the header */
	assert_non_null(line);
	assert_int_equal(sscanf(line + 1, "%llu %llu", &r, &t), 2);
	assert_non_null(strstr(line, path));
	assert_non_null(strstr(res.out, "total (1 file)"));
	n = getxattr(path, SF_RESIDENCY_XATTR, val, sizeof(val));
	assert_true(n > 0);
	assert_int_equal(sf_residency_parse(val, n, &xr, &xt), 0);
	/* Settled, and nothing else runs on the mount: the same numbers. */
	assert_int_equal(r, xr);
	assert_int_equal(t, xt);
	*ret_res = r;
	*ret_total = t;
}

static int setup(void **state)
{
	int r;

	vsstat = tr_tool("VS_VSSTAT");
	vsctl = tr_tool("VS_VSCTL");
	vstop = tr_tool("VS_VSTOP"); /* not built without ncursesw: its tests skip */
	if (!vsstat || !vsctl) {
		fprintf(stderr, "SKIP: tools not built\n");
		exit(77);
	}
	if (getenv("VS_TEST_DIR")) {
		fprintf(stderr, "SKIP: the tools need a real mount, not VS_TEST_DIR\n");
		exit(77);
	}
	r = vt_fs_start(&fs, "256M", "pool=64M");
	if (r == VT_SKIP)
		exit(77);
	return r;
}

static int teardown(void **state)
{
	return vt_fs_cleanup(&fs) == 0 ? 0 : -1;
}

static void test_residency(void **state)
{
	const size_t size = 16 << 20;
	const uint64_t pages = size / SF_PAGE_SIZE;
	const char *f = vt_path(&fs, "res");
	uint64_t r, t;

	make_file(f, size, 1);
	vsctl_ok("evict");
	drop_kernel_cache(f);
	read_range(f, 0, size, 1);
	residency(f, &r, &t);
	assert_int_equal(t, pages);
	assert_int_equal(r, pages);
	assert_non_null(strstr(res.out, "100.0%"));

	vsctl_ok("evict");
	residency(f, &r, &t);
	assert_int_equal(t, pages);
	assert_int_equal(r, 0);
	assert_non_null(strstr(res.out, " 0.0%"));

	/* Half the file: at least the pages read, plus at most the kernel's
	 * read-ahead beyond them (1 MiB by default, 10% allowed). */
	drop_kernel_cache(f);
	read_range(f, 0, size / 2, 1);
	residency(f, &r, &t);
	assert_int_equal(t, pages);
	if (r < pages / 2 || r > pages / 2 + pages / 10)
		fail_msg("after reading half: %llu of %llu pages resident", (unsigned long long)r,
			 (unsigned long long)t);

	/* -r: every regular file below, one total. */
	assert_non_null(vt_fresh_dir(&fs, "tree"));
	assert_int_equal(mkdir(vt_path(&fs, "tree/sub"), 0755), 0);
	make_file(vt_path(&fs, "tree/a"), 1 << 20, 2);
	make_file(vt_path(&fs, "tree/sub/b"), 3 << 20, 3);
	RUN((char *)vsctl, "residency", "-r", (char *)vt_path(&fs, "tree"));
	assert_int_equal(res.status, 0);
	assert_non_null(strstr(res.out, "/tree/a\n"));
	assert_non_null(strstr(res.out, "/tree/sub/b\n"));
	assert_non_null(strstr(res.out, "total (2 files)"));
	{
		unsigned long long tr, tt;
		char *tl = strstr(res.out, "total (");

		while (tl > res.out && tl[-1] != '\n')
			tl--;
		assert_int_equal(sscanf(tl, "%llu %llu", &tr, &tt), 2);
		assert_int_equal(tt, (4u << 20) / SF_PAGE_SIZE);
		assert_true(tr <= tt);
	}
	/* The whole mount: .virtuscale is skipped, so no error. */
	RUN((char *)vsctl, "residency", "-r", fs.mnt);
	if (res.status != 0)
		fail_msg("residency -r of the mount: exit %d: %s", res.status, res.err);
	assert_non_null(strstr(res.out, "total (3 files)")); /* res, a, b */
}

#define MAX_LINES 64
static char lines[MAX_LINES][4096];

static bool json_line(const char *l)
{
	return l[0] == '{';
}

static bool text_data_line(const char *l)
{
	return !strstr(l, "loads") && !strstr(l, "---");
}

/*
 * Run vsstat (@argv, interval 1 s) around a cold read of @f: wait for its
 * first report (so its first sample is taken), read the file, then keep
 * reading vsstat's output until a report arrives that was certainly sampled
 * after the read ended: first drain what is already printed, then wait for
 * one more.  Then stop vsstat.  Whatever the machine's speed, every load of
 * the read falls between the first and the last sample.  Returns the number
 * of lines (headers included) in lines[].
 */
static unsigned vsstat_around_read(char *const argv[], bool (*is_data)(const char *), const char *f,
				   size_t size, uint64_t tag)
{
	unsigned n = 0;
	pid_t pid;
	int fd;

	assert_int_equal(tr_spawn(argv, &pid, &fd), 0);
	do {
		assert_true(n < MAX_LINES);
		assert_true(tr_read_line(fd, lines[n], sizeof(lines[n]), 20) > 0);
	} while (!is_data(lines[n++]));
	read_range(f, 0, size, tag);
	/* Lines are single pipe writes (atomic), so a short timeout never
	 * leaves half a line behind. */
	while (n < MAX_LINES && tr_read_line(fd, lines[n], sizeof(lines[n]), 0.05) > 0)
		n++;
	do {
		assert_true(n < MAX_LINES);
		if (tr_read_line(fd, lines[n], sizeof(lines[n]), 20) <= 0)
			fail_msg("vsstat stopped reporting");
	} while (!is_data(lines[n++]));
	kill(pid, SIGTERM);
	assert_int_equal(tr_wait(pid, 20), 128 + SIGTERM);
	close(fd);
	return n;
}

/*
 * Sum vsstat's interval lines while a cold file is read, and compare with
 * the counters read before vsstat starts and after it ends.  Nothing else
 * touches the mount, so the window between our reads and vsstat's first and
 * last samples holds no pool activity: the sums must match exactly.
 */
static void test_vsstat_adds_up(void **state)
{
	const size_t size = 24 << 20;
	const char *f = vt_path(&fs, "cold");
	uint64_t loads0, loads1, rb0, rb1, fuse0, fuse1;
	double sum_loads = 0, sum_rb = 0, sum_fuse = 0, sum_rate_loads = 0;
	char *argv[] = {(char *)vsstat, "--json", fs.mnt, "1", "60", NULL};
	unsigned n, i;

	make_file(f, size, 4);
	vsctl_ok("evict");
	drop_kernel_cache(f);
	loads0 = counter(sf_names.loads);
	rb0 = counter(sf_names.read_bytes);
	fuse0 = counter(sf_names.fuse_requests);
	n = vsstat_around_read(argv, json_line, f, size, 4);
	loads1 = counter(sf_names.loads);
	rb1 = counter(sf_names.read_bytes);
	fuse1 = counter(sf_names.fuse_requests);

	assert_true(n >= 2);
	assert_non_null(strstr(lines[0], "\"since_mount\":true"));
	for (i = 1; i < n; i++) {
		double interval, loads, rate, rb, fuse;
		char *p;

		assert_non_null(strstr(lines[i], "\"since_mount\":false"));
		assert_non_null(p = strstr(lines[i], "\"interval\":"));
		interval = strtod(p + 11, NULL);
		assert_non_null(p = strstr(lines[i], "\"loads_per_s\":"));
		rate = strtod(p + 14, NULL);
		assert_non_null(p = strstr(lines[i], "\"loads\":"));
		loads = strtod(p + 8, NULL);
		assert_non_null(p = strstr(lines[i], "\"read_bytes\":"));
		rb = strtod(p + 13, NULL);
		assert_non_null(p = strstr(lines[i], "\"fuse_ops\":"));
		fuse = strtod(p + 11, NULL);
		/* Measured, so near the 1 s asked for (a loaded box is late). */
		assert_true(interval > 0.9 && interval < 10);
		/* Each rate is its delta over the measured interval. */
		assert_true(fabs(rate * interval - loads) <= 1e-6 * (loads + 1));
		sum_loads += loads;
		sum_rate_loads += rate * interval;
		sum_rb += rb;
		sum_fuse += fuse;
	}
	fprintf(stderr,
		"json: %u lines; loads %llu -> %llu, summed %.0f; read bytes %llu -> %llu, "
		"summed %.0f\n",
		n, (unsigned long long)loads0, (unsigned long long)loads1, sum_loads,
		(unsigned long long)rb0, (unsigned long long)rb1, sum_rb);
	/* A cold read loads every page of the file at least. */
	assert_true(loads1 - loads0 >= size / SF_PAGE_SIZE);
	assert_true(sum_loads == (double)(loads1 - loads0));
	assert_true(fabs(sum_rate_loads - sum_loads) < 1e-3 * sum_loads + 1);
	assert_true(sum_rb == (double)(rb1 - rb0));
	assert_true(rb1 - rb0 >= size);
	/* Our own reads of the stats file are FUSE requests outside vsstat's
	 * window, so only a bound holds; the file's reads are inside. */
	assert_true(sum_fuse <= (double)(fuse1 - fuse0));
	/* ... and at least one read request per MiB (max_read). */
	assert_true(sum_fuse >= (double)size / (1 << 20));
}

/* The same in the column format: rounded rates, so within rounding. */
static void test_vsstat_text(void **state)
{
	const size_t size = 16 << 20;
	const char *f = vt_path(&fs, "cold2");
	char *argv[] = {(char *)vsstat, fs.mnt, "1", "60", NULL};
	unsigned n, i, data = 0, headers = 0;
	uint64_t loads0, loads1;
	double sum = 0;

	make_file(f, size, 5);
	vsctl_ok("evict");
	drop_kernel_cache(f);
	loads0 = counter(sf_names.loads);
	n = vsstat_around_read(argv, text_data_line, f, size, 5);
	loads1 = counter(sf_names.loads);
	for (i = 0; i < n; i++) {
		double loads;

		if (!text_data_line(lines[i])) {
			headers++;
			continue;
		}
		assert_int_equal(sscanf(lines[i], "%lf", &loads), 1);
		if (data++ > 0)
			sum += loads; /* per second, over ~1 s */
	}
	assert_true(data >= 2);
	assert_int_equal(headers, 2 * (1 + (data - 1) / 20));
	fprintf(stderr, "text: %u reports; loads delta %llu, summed rates %.0f\n", data,
		(unsigned long long)(loads1 - loads0), sum);
	/* The text format prints rates, not the intervals they cover: an
	 * interval that a busy machine stretches past 1 s lowers the rate
	 * but never raises it. So the rates can undercount, within reason,
	 * and never overcount beyond rounding (the JSON test checks exact
	 * sums against the counters). */
	double delta = (double)(loads1 - loads0);
	assert_true(sum <= 1.02 * delta + data);
	assert_true(sum >= 0.5 * delta);
}

static void test_vsctl_commands(void **state)
{
	const char *f = vt_path(&fs, "dirty");
	char buf[4096];
	uint64_t dirty;
	int fd;

	RUN((char *)vsctl, fs.mnt, "stats");
	assert_int_equal(res.status, 0);
	assert_non_null(strstr(res.out, "# TYPE "));
	assert_non_null(strstr(res.out, sf_names.loads));
	assert_non_null(strstr(res.out, sf_names.resident));

	/* Dirty some pages without fsync, then flush. */
	fd = open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	for (int i = 0; i < 256; i++) {
		vt_pattern_fill(buf, sizeof(buf), 6, (uint64_t)i * sizeof(buf));
		assert_int_equal(vt_pwrite_all(fd, buf, sizeof(buf), (off_t)i * sizeof(buf)), 0);
	}
	close(fd);
	RUN((char *)vsctl, "-v", fs.mnt, "flush");
	if (res.status != 0)
		fail_msg("vsctl flush: exit %d: %s", res.status, res.err);
	assert_non_null(strstr(res.out, "before:"));
	assert_non_null(strstr(res.out, "after:"));
	dirty = counter(sf_names.dirty);
	assert_int_equal(dirty, 0);

	/* checkpoint works, or says clearly why not (no log yet: EINVAL). */
	RUN((char *)vsctl, fs.mnt, "checkpoint");
	if (res.status != 0) {
		assert_int_equal(res.status, 1);
		assert_non_null(strstr(res.err, "no write-ahead log"));
	}

	/* A directory that is not the mount root has no stats file. */
	RUN((char *)vsstat, fs.base);
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "not a VirtuScale mount"));
}

static void test_vstop_text(void **state)
{
	const char *f = vt_path(&fs, "hot-text");
	char backend[64] = "", line[512];
	FILE *p;

	if (!vstop)
		skip(); /* not built (no ncursesw) */
	/* Room in the pool, so that nothing of the file is evicted before
	 * the scan sees it. */
	vsctl_ok("evict");
	make_file(f, 4 << 20, 7);
	drop_kernel_cache(f);
	read_range(f, 0, 4 << 20, 7);
	/* The backend as the stats file names it. */
	RUN((char *)vsctl, fs.mnt, "stats");
	p = fmemopen(res.out, res.out_len, "r");
	while (p && fgets(line, sizeof(line), p)) {
		char *b = strstr(line, "backend=\"");

		if (strncmp(line, sf_names.backend_info, strlen(sf_names.backend_info)) == 0 && b)
			sscanf(b + 9, "%63[^\"]", backend);
	}
	if (p)
		fclose(p);
	assert_true(backend[0]);

	RUN((char *)vstop, "-n", "2", "-d", "0.5", fs.mnt);
	assert_int_equal(res.status, 0);
	assert_int_equal(tr_count_lines(res.out, "vstop "), 2);
	snprintf(line, sizeof(line), "backend: %s", backend);
	assert_int_equal(tr_count_lines(res.out, line), 2);
	assert_int_equal(tr_count_lines(res.out, "Most resident files"), 2);
	assert_true(tr_count_lines(res.out, "hot-text") >= 1);
}

/* ---- vstop in tmux ---- */

static char tmux_sock[1200];

/* Run tmux on the test's private server with the NULL-terminated @args. */
static int tmux(struct tr_result *out, const char *const *args)
{
	char *argv[32] = {"/usr/bin/env", "tmux", "-S", tmux_sock, "-f", "/dev/null"};
	unsigned n = 6;

	while (*args && n + 1 < sizeof(argv) / sizeof(argv[0]))
		argv[n++] = (char *)*args++;
	argv[n] = NULL;
	if (tr_run(argv, 20, out) != 0)
		return -1;
	return out->status;
}

#define TMUX(...) tmux(&res, (const char *const[]){__VA_ARGS__, NULL})

/* capture-pane into res.out until it contains every string of @want (NULL-
 * terminated), or @timeout_s passes; returns 0 if it did. */
static int wait_screen(const char *const *want, double timeout_s)
{
	for (double t = 0; t < timeout_s; t += 0.2) {
		bool all = true;

		if (TMUX("capture-pane", "-p", "-t", "vs") == 0) {
			for (const char *const *w = want; *w; w++)
				all = all && strstr(res.out, *w);
			if (all)
				return 0;
		}
		usleep(200000);
	}
	return -1;
}

/* Length of the occupancy bar line ("[###...]") on the captured screen. */
static int bar_width(void)
{
	char *l = strstr(res.out, "\n[");
	char *end;

	if (!l)
		return -1;
	l++;
	end = strchr(l, '\n');
	while (end && end > l && end[-1] == ' ')
		end--;
	return end ? (int)(end - l) : -1;
}

static void test_vstop_tmux(void **state)
{
	const char *f = vt_path(&fs, "hot-tmux");
	const char *want[] = {"Pool occupancy",
			      "hit ratio",
			      "faults (loads)/s",
			      "evictions/s",
			      "Backing store",
			      "Backend: ",
			      "Most resident files (every",
			      "hot-tmux",
			      NULL};
	const char *small[] = {"Pool occupancy", "Backend: ", NULL};
	char cmd[4096], status_path[1200], status[16] = "";
	int r;

	if (!vstop || !tr_in_path("tmux"))
		skip(); /* vstop not built (no ncursesw), or no tmux */
	snprintf(tmux_sock, sizeof(tmux_sock), "%s/tmux.sock", fs.base);
	snprintf(status_path, sizeof(status_path), "%s/vstop.status", fs.base);
	vsctl_ok("evict");
	make_file(f, 8 << 20, 8);
	drop_kernel_cache(f);
	read_range(f, 0, 8 << 20, 8);

	snprintf(cmd, sizeof(cmd), "'%s' -s 1 '%s'; echo $? > '%s'", vstop, fs.mnt, status_path);
	r = TMUX("new-session", "-d", "-s", "vs", "-x", "120", "-y", "40", cmd);
	if (r != 0)
		fail_msg("tmux new-session: %d: %s", r, res.err);
	r = wait_screen(want, 20);
	if (r != 0) {
		TMUX("kill-server");
		fail_msg("vstop screen never showed all panels; last capture:\n%s", res.out);
	}
	assert_int_equal(bar_width(), 120);

	/* A smaller terminal: the layout follows (KEY_RESIZE). */
	r = TMUX("resize-window", "-t", "vs", "-x", "70", "-y", "20");
	assert_int_equal(r, 0);
	for (int i = 0; i < 50 && (wait_screen(small, 5) != 0 || bar_width() != 70); i++)
		usleep(100000);
	if (bar_width() != 70) {
		TMUX("kill-server");
		fail_msg("vstop did not follow the resize; capture:\n%s", res.out);
	}

	/* q quits: the session (whose only command is vstop) goes away. */
	assert_int_equal(TMUX("send-keys", "-t", "vs", "q"), 0);
	for (int i = 0; i < 50 && TMUX("has-session", "-t", "vs") == 0; i++)
		usleep(100000);
	r = TMUX("has-session", "-t", "vs");
	TMUX("kill-server");
	assert_int_not_equal(r, 0);
	assert_true(vt_read_file(status_path, status, sizeof(status)) > 0);
	assert_string_equal(status, "0\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_residency),	cmocka_unit_test(test_vsstat_adds_up),
	    cmocka_unit_test(test_vsstat_text), cmocka_unit_test(test_vsctl_commands),
	    cmocka_unit_test(test_vstop_text),	cmocka_unit_test(test_vstop_tmux),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
