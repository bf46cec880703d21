/*
 * test_tools_cli.c - command-line behaviour of vsstat, vsctl and vstop that
 * needs no daemon: --help, usage errors (exit 2), a path that is not a
 * VirtuScale mount (exit 1), a directory dressed up as a mount to make root
 * write through a symlink (refused, the target untouched), and the output for
 * a hand-written stats file in a fake mount directory, where every number is
 * known in advance (read by the *-plain test builds of the tools, which take
 * a plain directory for a mount; the real tools refuse it).
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "tools/statsfile.h"
#include "tr_run.h"

static const char *vsstat, *vsctl, *vstop;
static const char *vsstat_plain, *vsctl_plain, *vstop_plain;
static char tmp[512];	/* private temp dir */
static char fake[600];	/* fake mount: tmp/fake with .virtuscale/stats */
static char plain[600]; /* a plain directory: tmp/plain */
static char stats_text[4096];
static struct tr_result res;

#define RUN(...)                                                                                   \
	do {                                                                                       \
		char *argv_[] = {__VA_ARGS__, NULL};                                               \
		assert_int_equal(tr_run(argv_, 30, &res), 0);                                      \
	} while (0)

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static char *path_in(const char *dir, const char *rel)
{
	static char bufs[4][1200];
	static unsigned next;
	char *b = bufs[next++ % 4];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, rel);
	return b;
}

/*
 * The fake stats file: 100 s of uptime, so the since-mount line of vsstat is
 * exactly counter / 100.  Names come from the tools' own table.
 */
static void make_fake(void)
{
	const struct sf_metric_names *m = &sf_names;
	char dir[700];

	snprintf(fake, sizeof(fake), "%s/fake", tmp);
	snprintf(dir, sizeof(dir), "%s/.virtuscale", fake);
	assert_int_equal(mkdir(fake, 0755), 0);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(stats_text, sizeof(stats_text),
		 "# HELP %s Pages read into the pool.\n# TYPE %s counter\n%s 1000\n"
		 "%s 3000\n%s 200\n%s 100\n%s 40960000\n%s 2048000\n"
		 "%s{op=\"read\"} 450\n%s{op=\"lookup\"} 50\n"
		 "%s 16384\n%s 4000\n%s 96\n%s{backend=\"madvise\"} 1\n%s 100\n",
		 m->loads, m->loads, m->loads, m->hits, m->evictions, m->writebacks, m->read_bytes,
		 m->write_bytes, m->fuse_requests, m->fuse_requests, m->capacity, m->resident,
		 m->dirty, m->backend_info, m->uptime);
	write_file(path_in(dir, "stats"), stats_text);
	/* A plain file stands in for control: it records what was written. */
	write_file(path_in(dir, "control"), "");
	snprintf(plain, sizeof(plain), "%s/plain", tmp);
	assert_int_equal(mkdir(plain, 0755), 0);
}

static int setup(void **state)
{
	const char *t = getenv("TMPDIR");

	vsstat = tr_tool("VS_VSSTAT");
	vsctl = tr_tool("VS_VSCTL");
	vstop = tr_tool("VS_VSTOP"); /* not built without ncursesw: its tests skip */
	vsstat_plain = tr_tool("VS_VSSTAT_PLAIN");
	vsctl_plain = tr_tool("VS_VSCTL_PLAIN");
	vstop_plain = tr_tool("VS_VSTOP_PLAIN");
	if (!vsstat || !vsctl || !vsstat_plain || !vsctl_plain) {
		fprintf(stderr, "SKIP: tools not built\n");
		exit(77);
	}
	snprintf(tmp, sizeof(tmp), "%s/vstools.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmp))
		return -1;
	make_fake();
	return 0;
}

static int teardown(void **state)
{
	char cmd[700];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_help(void **state)
{
	const char *tools[] = {vsstat, vsctl, vstop};

	for (int i = 0; i < 3 && tools[i]; i++) {
		RUN((char *)tools[i], "--help");
		assert_int_equal(res.status, 0);
		assert_non_null(strstr(res.out, "Usage:"));
		assert_non_null(strstr(res.out, "Examples:"));
		assert_non_null(strstr(res.out, "Exit status: 0 ok, 1 runtime error"));
		assert_non_null(strstr(res.out, "2 usage error"));
	}
}

static void test_usage_errors(void **state)
{
	char *const cases[][5] = {
	    {(char *)vsstat, NULL},
	    {(char *)vsstat, fake, "0", NULL},
	    {(char *)vsstat, fake, "1", "0", NULL},
	    {(char *)vsstat, fake, "x", NULL},
	    {(char *)vsstat, fake, "1", "2", "3"},
	    {(char *)vsstat, "--bogus", fake, NULL},
	    {(char *)vsctl, NULL},
	    {(char *)vsctl, fake, NULL},
	    {(char *)vsctl, fake, "bogus", NULL},
	    {(char *)vsctl, "residency", NULL},
	    {(char *)vsctl, "residency", "-z", fake, NULL},
	    {(char *)vstop, NULL},
	    {(char *)vstop, "-d", "0", fake, NULL},
	    {(char *)vstop, "-n", "x", fake, NULL},
	    {(char *)vstop, fake, fake, NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[6] = {0};

		if (!cases[i][0])
			continue; /* vstop not built */

		memcpy(argv, cases[i], sizeof(cases[i]));
		assert_int_equal(tr_run(argv, 30, &res), 0);
		if (res.status != 2)
			fail_msg("case %zu (%s %s): exit %d, want 2; stderr: %s", i, argv[0],
				 argv[1] ? argv[1] : "", res.status, res.err);
		/* A usage error says what is wrong and where to look. */
		assert_non_null(strstr(res.err, "--help"));
	}
}

static void test_not_a_mount(void **state)
{
	char missing[700];

	snprintf(missing, sizeof(missing), "%s/does-not-exist", tmp);
	RUN((char *)vsstat, plain);
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "not a VirtuScale mount"));
	RUN((char *)vsstat, plain, "1", "1");
	assert_int_equal(res.status, 1);
	RUN((char *)vsctl, plain, "evict");
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "not a VirtuScale mount"));
	RUN((char *)vsctl, plain, "stats");
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "not a VirtuScale mount"));
	if (vstop) {
		RUN((char *)vstop, plain);
		assert_int_equal(res.status, 1);
		assert_non_null(strstr(res.err, "not a VirtuScale mount"));
		assert_int_equal(res.out_len, 0);
	}
	RUN((char *)vsstat, missing);
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "No such file"));
	/* A file is not a mountpoint either. */
	RUN((char *)vsstat, path_in(fake, ".virtuscale/stats"));
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "not a directory"));

	/* A file outside any VirtuScale mount has no residency. */
	write_file(path_in(plain, "f"), "hello");
	RUN((char *)vsctl, "residency", path_in(plain, "f"));
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "not a file on a VirtuScale mount"));
	RUN((char *)vsctl, "residency", plain);
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "is a directory (use -r)"));
}

static unsigned count_char(const char *s, char c)
{
	unsigned n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

/* The fields of a vsstat text line, in column order. */
struct text_line {
	double loads, hits, hit_pct, evict, wb, read_mib, write_mib, ops, resident, dirty, free;
};

/* Split a data line into its 11 columns; "-" (unknown) becomes NaN.
 * Returns -1 for a header line or anything else. */
static int parse_text_line(const char *line, struct text_line *t)
{
	double *f[] = {&t->loads,     &t->hits, &t->hit_pct,  &t->evict, &t->wb,  &t->read_mib,
		       &t->write_mib, &t->ops,	&t->resident, &t->dirty, &t->free};
	char copy[512], *tok, *save = NULL, *end;
	unsigned i = 0;

	snprintf(copy, sizeof(copy), "%s", line);
	for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (i == 11)
			return -1;
		if (strcmp(tok, "-") == 0) {
			*f[i++] = NAN;
			continue;
		}
		*f[i++] = strtod(tok, &end);
		if (end == tok || *end)
			return -1;
	}
	return i == 11 ? 0 : -1;
}

static void test_vsstat_fake(void **state)
{
	struct text_line t;
	char *last;

	/* One line: header (2 lines) + averages over the 100 s uptime. */
	RUN((char *)vsstat_plain, fake);
	assert_int_equal(res.status, 0);
	assert_int_equal(count_char(res.out, '\n'), 3);
	assert_int_equal(tr_count_lines(res.out, "loads"), 1);
	last = strrchr(res.out, '\n');
	*last = '\0';
	last = strrchr(res.out, '\n') + 1;
	assert_int_equal(parse_text_line(last, &t), 0);
	assert_true(t.loads == 10 && t.hits == 30 && t.hit_pct == 75.0);
	assert_true(t.evict == 2 && t.wb == 1);
	assert_true(fabs(t.read_mib - 40960000.0 / 100 / (1 << 20)) < 0.051);
	assert_true(t.ops == 5);
	assert_true(t.resident == 4000 && t.dirty == 96 && t.free == 16384 - 4000);

	/* The header comes back every 20 lines, like vmstat; -n prints it once. */
	RUN((char *)vsstat_plain, fake, "0.01", "45");
	assert_int_equal(res.status, 0);
	assert_int_equal(tr_count_lines(res.out, "resident"), 3);
	assert_int_equal(tr_count_lines(res.out, "16384") + tr_count_lines(res.out, "12384"), 45);
	RUN((char *)vsstat_plain, "-n", fake, "0.01", "45");
	assert_int_equal(res.status, 0);
	assert_int_equal(tr_count_lines(res.out, "resident"), 1);
}

static void test_vsstat_fake_intervals(void **state)
{
	char *line, *save = NULL;
	unsigned data = 0;
	struct text_line t;

	RUN((char *)vsstat_plain, "-n", fake, "0.01", "5");
	assert_int_equal(res.status, 0);
	for (line = strtok_r(res.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (parse_text_line(line, &t) != 0)
			continue;
		if (data++ == 0)
			continue; /* since mount */
		/* Nothing changed between reads: zero rates, no hit ratio. */
		assert_true(t.loads == 0 && t.hits == 0 && t.evict == 0 && t.ops == 0);
		assert_true(t.read_mib == 0 && t.write_mib == 0);
		assert_true(isnan(t.hit_pct));
		assert_true(t.resident == 4000 && t.dirty == 96);
	}
	assert_int_equal(data, 5);
}

static void test_vsstat_json_fake(void **state)
{
	char *line, *save = NULL;
	unsigned n = 0;

	RUN((char *)vsstat_plain, "--json", fake, "0.01", "3");
	assert_int_equal(res.status, 0);
	for (line = strtok_r(res.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		assert_true(line[0] == '{' && line[strlen(line) - 1] == '}');
		assert_non_null(strstr(line, "\"backend\":\"madvise\""));
		assert_non_null(strstr(line, "\"resident_pages\":4000"));
		assert_non_null(strstr(line, "\"free_pages\":12384"));
		if (n == 0) {
			assert_non_null(strstr(line, "\"since_mount\":true"));
			assert_non_null(strstr(line, "\"interval\":100,"));
			assert_non_null(strstr(line, "\"loads_per_s\":10,"));
			assert_non_null(strstr(line, "\"loads\":1000,"));
			assert_non_null(strstr(line, "\"hit_ratio\":0.75,"));
			assert_non_null(strstr(line, "\"fuse_ops\":500,"));
			assert_non_null(strstr(line, "\"read_bytes\":40960000,"));
		} else {
			assert_non_null(strstr(line, "\"since_mount\":false"));
			assert_non_null(strstr(line, "\"loads\":0,"));
			/* Nothing fixed in the interval: no ratio, and JSON has
			 * no NaN. */
			assert_non_null(strstr(line, "\"hit_ratio\":null,"));
		}
		n++;
	}
	assert_int_equal(n, 3);
}

static void test_vsctl_fake(void **state)
{
	char buf[256] = "";
	FILE *f;

	RUN((char *)vsctl_plain, fake, "stats");
	assert_int_equal(res.status, 0);
	assert_string_equal(res.out, stats_text);

	RUN((char *)vsctl_plain, fake, "evict");
	assert_int_equal(res.status, 0);
	f = fopen(path_in(fake, ".virtuscale/control"), "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	/* The protocol: the word and a newline, as `echo evict >` writes. */
	assert_string_equal(buf, "evict\n");

	/* Residency from the xattr, where this filesystem can store one. */
	write_file(path_in(fake, "a"), "x");
	mkdir(path_in(fake, "sub"), 0755);
	write_file(path_in(fake, "sub/b"), "y");
	if (setxattr(path_in(fake, "a"), SF_RESIDENCY_XATTR, "3 4", 3, 0) != 0 ||
	    setxattr(path_in(fake, "sub/b"), SF_RESIDENCY_XATTR, "1 4", 3, 0) != 0) {
		fprintf(stderr, "note: %s has no user xattrs; residency output not checked here\n",
			tmp);
		return;
	}
	RUN((char *)vsctl_plain, "residency", path_in(fake, "a"));
	assert_int_equal(res.status, 0);
	assert_int_equal(tr_count_lines(res.out, "75.0%"), 2); /* the file and the total */
	assert_int_equal(tr_count_lines(res.out, "total (1 file)"), 1);
	RUN((char *)vsctl_plain, "residency", "-r", fake);
	assert_int_equal(res.status, 0);
	assert_int_equal(tr_count_lines(res.out, "total (2 files)"), 1);
	assert_int_equal(tr_count_lines(res.out, "50.0%"), 1); /* (3 + 1) / (4 + 4) */
	/* .virtuscale is skipped: its files have no residency. */
	assert_int_equal(tr_count_lines(res.out, ".virtuscale"), 0);
}

static void test_vstop_text_fake(void **state)
{
	if (!vstop_plain)
		skip();
	RUN((char *)vstop_plain, "-n", "2", "-d", "0.05", fake);
	assert_int_equal(res.status, 0);
	/* stdout is a pipe: plain text, one snapshot per refresh. */
	assert_int_equal(tr_count_lines(res.out, "vstop "), 2);
	assert_int_equal(tr_count_lines(res.out, "backend: madvise"), 2);
	assert_int_equal(tr_count_lines(res.out, "Pool "), 2);
	assert_int_equal(tr_count_lines(res.out, "resident 4000 (24.4%) dirty 96"), 2);
	assert_int_equal(tr_count_lines(res.out, "Most resident files"), 2);
	assert_null(strchr(res.out, '\033')); /* no terminal escapes */
}

/*
 * The attack: a user makes a directory with a fake stats file and a control
 * "file" that is a symlink to a file of root's, and waits for root to run
 * `vsctl DIR evict`.  Every tool must refuse the directory, say why, exit 1,
 * and leave the target as it was; the fake numbers must not be shown.
 */
static void test_fake_mount_refused(void **state)
{
	char evil[700], target[700], buf[64] = "";
	const char *const cmds[] = {"evict", "flush", "checkpoint", "stats", "unmount"};
	FILE *f;

	snprintf(evil, sizeof(evil), "%s/evil", tmp);
	snprintf(target, sizeof(target), "%s/precious", tmp);
	write_file(target, "precious data\n");
	assert_int_equal(mkdir(evil, 0755), 0);
	assert_int_equal(mkdir(path_in(evil, ".virtuscale"), 0755), 0);
	write_file(path_in(evil, ".virtuscale/stats"), stats_text);
	assert_int_equal(symlink(target, path_in(evil, ".virtuscale/control")), 0);

	for (unsigned i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		RUN((char *)vsctl, evil, (char *)cmds[i]);
		assert_int_equal(res.status, 1);
		assert_non_null(strstr(res.err, "not a VirtuScale mount"));
		assert_int_equal(res.out_len, 0); /* no fake stats printed */
	}
	RUN((char *)vsctl, "-v", evil, "evict");
	assert_int_equal(res.status, 1);
	assert_int_equal(res.out_len, 0); /* no fake "before:" levels */
	RUN((char *)vsstat, evil);
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "not a VirtuScale mount"));
	assert_int_equal(res.out_len, 0);
	if (vstop) {
		RUN((char *)vstop, "-n", "1", evil);
		assert_int_equal(res.status, 1);
		assert_non_null(strstr(res.err, "not a VirtuScale mount"));
		assert_int_equal(res.out_len, 0);
	}

	/* Even a tool that took a plain directory for a mount (the test
	 * builds) does not follow the symlink, and says so. */
	RUN((char *)vsctl_plain, evil, "evict");
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "refusing .virtuscale"));
	/* Nor a FIFO in place of control, which would hang the open. */
	assert_int_equal(unlink(path_in(evil, ".virtuscale/control")), 0);
	assert_int_equal(mkfifo(path_in(evil, ".virtuscale/control"), 0600), 0);
	RUN((char *)vsctl_plain, evil, "evict");
	assert_int_equal(res.status, 1);
	assert_non_null(strstr(res.err, "refusing .virtuscale"));

	f = fopen(target, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "precious data\n");
}

/* Options go anywhere, as with getopt_long: after the operands too. */
static void test_options_anywhere(void **state)
{
	RUN((char *)vsctl_plain, fake, "stats", "-v");
	assert_int_equal(res.status, 0);
	assert_string_equal(res.out, stats_text);
	RUN((char *)vsctl_plain, fake, "evict", "-v");
	assert_int_equal(res.status, 0);
	assert_int_equal(tr_count_lines(res.out, "before:"), 1);
	assert_int_equal(tr_count_lines(res.out, "after:"), 1);
	RUN((char *)vsctl_plain, fake, "evict", "--bogus");
	assert_int_equal(res.status, 2);
	RUN((char *)vsstat_plain, fake, "0.01", "2", "-n");
	assert_int_equal(res.status, 0);
	assert_int_equal(tr_count_lines(res.out, "resident"), 1);
	if (vstop_plain) {
		RUN((char *)vstop_plain, fake, "-n", "1", "-d", "0.05");
		assert_int_equal(res.status, 0);
		assert_int_equal(tr_count_lines(res.out, "vstop "), 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_help),
	    cmocka_unit_test(test_usage_errors),
	    cmocka_unit_test(test_not_a_mount),
	    cmocka_unit_test(test_vsstat_fake),
	    cmocka_unit_test(test_vsstat_fake_intervals),
	    cmocka_unit_test(test_vsstat_json_fake),
	    cmocka_unit_test(test_vsctl_fake),
	    cmocka_unit_test(test_vstop_text_fake),
	    cmocka_unit_test(test_fake_mount_refused),
	    cmocka_unit_test(test_options_anywhere),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
