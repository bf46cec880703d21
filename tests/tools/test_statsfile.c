/*
 * test_statsfile.c - unit tests of the stats-file parser and the rate
 * arithmetic shared by vsstat, vsctl and vstop (tools/statsfile.c).  No mount
 * needed: the exposition text is built here from the same metric-name table
 * the tools use.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tools/statsfile.h"

static int parse_str(const char *text, struct sf_snap *ret)
{
	memset(ret, 0, sizeof(*ret));
	return sf_parse(text, strlen(text), ret);
}

static void test_parse_samples(void **state)
{
	static const char text[] =
	    "# HELP virtuscale_x_total Things.\n"
	    "# TYPE virtuscale_x_total counter\n"
	    "\n"
	    "virtuscale_x_total 42\n"
	    "virtuscale_req_total{op=\"read\"} 7\n"
	    "virtuscale_req_total{op=\"write\",kind=\"a\\\"b,}\"} 3 1700000000000\n"
	    "  virtuscale_nan   NaN\r\n"
	    "virtuscale_inf{a=\"1\",} +Inf\n"
	    "virtuscale_neg -1.5e3\n"
	    "virtuscale_last 9"; /* no final newline */
	struct sf_snap s;
	const struct sf_sample *x;

	assert_int_equal(parse_str(text, &s), 0);
	assert_int_equal(s.n, 7);
	assert_string_equal(s.v[0].name, "virtuscale_x_total");
	assert_string_equal(s.v[0].labels, "");
	assert_true(s.v[0].value == 42);
	assert_string_equal(s.v[2].labels, "op=\"write\",kind=\"a\\\"b,}\"");
	assert_true(s.v[2].value == 3);
	assert_true(isnan(s.v[3].value));
	assert_true(isinf(s.v[4].value) && s.v[4].value > 0);
	assert_true(s.v[5].value == -1500);
	assert_true(s.v[6].value == 9);

	x = sf_find(&s, "virtuscale_req_total", "op=\"write\"");
	assert_non_null(x);
	assert_true(x->value == 3);
	x = sf_find(&s, "virtuscale_req_total", "kind=\"a\\\"b,}\",op=\"write\"");
	assert_non_null(x);
	assert_null(sf_find(&s, "virtuscale_req_total", "op=\"unlink\""));
	assert_null(sf_find(&s, "virtuscale_req", NULL)); /* names match whole */
	assert_true(sf_find(&s, "virtuscale_req_total", NULL)->value == 7);
	sf_snap_free(&s);
	assert_null(s.v);
	sf_snap_free(&s); /* twice is fine */
}

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
	    "virtuscale_a\n",			   /* no value */
	    "virtuscale_a b\n",			   /* value not a number */
	    "virtuscale_a{x=1} 2\n",		   /* unquoted label value */
	    "virtuscale_a{x=\"1\" 2\n",		   /* unclosed label set */
	    "virtuscale_a{x=\"1\\q\"} 2\n",	   /* bad escape */
	    "1virtuscale 2\n",			   /* name starts with a digit */
	    "virtuscale-a 2\n",			   /* '-' not in names */
	    "virtuscale_a 1 2x\n",		   /* timestamp not an integer */
	    "virtuscale_a 1 2 3\n",		   /* trailing junk */
	    "virtuscale_a 1\nok 1\n{x=\"1\"} 1\n", /* a bad line anywhere */
	};
	struct sf_snap s;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse_str(bad[i], &s);

		if (r != -EBADMSG)
			fail_msg("accepted or wrong error %d for: %s", r, bad[i]);
		assert_null(s.v);
		assert_int_equal(s.n, 0);
	}
	/* Embedded NUL: not text. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sf_parse("a 1\n\0b 2\n", 9, &s), -EBADMSG);
	/* Empty and comment-only files are valid and empty. */
	assert_int_equal(parse_str("", &s), 0);
	assert_int_equal(s.n, 0);
	sf_snap_free(&s);
	assert_int_equal(parse_str("# just a comment\n\n", &s), 0);
	assert_int_equal(s.n, 0);
	sf_snap_free(&s);
}

static void test_label_get(void **state)
{
	char buf[16];

	assert_int_equal(sf_label_get("backend=\"madvise\"", "backend", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "madvise");
	assert_int_equal(sf_label_get("a=\"x\\\"y\\\\z\\n\", b = \"2\"", "a", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "x\"y\\z\n");
	assert_int_equal(sf_label_get("a=\"x\\\"y\\\\z\\n\", b = \"2\"", "b", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "2");
	/* "ab" is not "a": keys compare whole. */
	assert_int_equal(sf_label_get("ab=\"1\"", "a", buf, sizeof(buf)), -ENOENT);
	assert_int_equal(sf_label_get("", "a", buf, sizeof(buf)), -ENOENT);
	assert_int_equal(sf_label_get("a=\"0123456789abcdefXYZ\"", "a", buf, sizeof(buf)),
			 -ENAMETOOLONG);
	assert_string_equal(buf, "0123456789abcde");
	assert_int_equal(sf_label_get("a=1", "a", buf, sizeof(buf)), -EBADMSG);
}

/* Exposition text from the tools' own name table, so a metric renamed in
 * statsfile.c is renamed here too. */
static int make_snap(struct sf_snap *s, double mono, double loads, double hits, double evict,
		     double wb, double rbytes, double wbytes, double fuse_read, double fuse_other,
		     double cap, double res, double dirty, const char *extra)
{
	const struct sf_metric_names *m = &sf_names;
	char text[4096];
	int r;

	snprintf(text, sizeof(text),
		 "# TYPE %s counter\n%s %.0f\n%s %.0f\n%s %.0f\n%s %.0f\n%s %.0f\n%s %.0f\n"
		 "%s{op=\"read\"} %.0f\n%s{op=\"lookup\"} %.0f\n"
		 "%s %.0f\n%s %.0f\n%s %.0f\n%s{backend=\"exmap\"} 1\n%s",
		 m->loads, m->loads, loads, m->hits, hits, m->evictions, evict, m->writebacks, wb,
		 m->read_bytes, rbytes, m->write_bytes, wbytes, m->fuse_requests, fuse_read,
		 m->fuse_requests, fuse_other, m->capacity, cap, m->resident, res, m->dirty, dirty,
		 m->backend_info, extra ? extra : "");
	r = parse_str(text, s);
	s->mono = mono;
	return r;
}

static void test_view_rates(void **state)
{
	struct sf_snap a, b;
	struct sf_view v;

	assert_int_equal(
	    make_snap(&a, 100.0, 1000, 9000, 10, 5, 4096000, 8192, 50, 50, 16384, 2000, 100, NULL),
	    0);
	assert_int_equal(
	    make_snap(&b, 102.0, 1400, 9600, 30, 9, 5734400, 16384, 150, 70, 16384, 2400, 40, NULL),
	    0);
	sf_view_compute(&a, &b, &v);
	assert_false(v.since_mount);
	assert_true(fabs(v.interval - 2.0) < 1e-9);
	assert_true(fabs(v.loads - 200) < 1e-9);
	assert_true(fabs(v.hits - 300) < 1e-9);
	assert_true(fabs(v.hit_ratio - 600.0 / 1000.0) < 1e-12);
	assert_true(fabs(v.evictions - 10) < 1e-9);
	assert_true(fabs(v.writebacks - 2) < 1e-9);
	assert_true(fabs(v.read_bps - 819200) < 1e-6);
	assert_true(fabs(v.write_bps - 4096) < 1e-6);
	assert_true(fabs(v.fuse_ops - 60) < 1e-9); /* summed over op labels */
	assert_true(v.capacity == 16384 && v.resident == 2400 && v.dirty == 40);
	assert_true(v.free == 16384 - 2400);
	assert_string_equal(v.backend, "exmap");
	/* rate * interval gives back the exact delta a consumer sums. */
	assert_true(sf_counter_delta(&a, &b, sf_names.loads) == 400);
	assert_true(fabs(v.loads * v.interval - 400) < 1e-9);
	sf_snap_free(&a);
	sf_snap_free(&b);
}

static void test_view_counter_reset(void **state)
{
	struct sf_snap a, b;
	struct sf_view v;

	/* The daemon restarted between the reads: counters start over. */
	assert_int_equal(make_snap(&a, 10, 5000, 5000, 0, 0, 0, 0, 0, 0, 100, 10, 0, NULL), 0);
	assert_int_equal(make_snap(&b, 11, 30, 70, 0, 0, 0, 0, 0, 0, 100, 10, 0, NULL), 0);
	sf_view_compute(&a, &b, &v);
	assert_true(v.loads == 30);
	assert_true(v.hits == 70);
	assert_true(fabs(v.hit_ratio - 0.7) < 1e-12);
	/* Two reads in the same tick: no rate, never inf. */
	b.mono = a.mono;
	sf_view_compute(&a, &b, &v);
	assert_true(isnan(v.loads));
	assert_true(isnan(v.interval));
	sf_snap_free(&a);
	sf_snap_free(&b);
}

static void test_view_first_line(void **state)
{
	struct sf_snap s;
	struct sf_view v;
	char extra[128];

	/* With the uptime: averages since mount. */
	snprintf(extra, sizeof(extra), "%s 50\n", sf_names.uptime);
	assert_int_equal(make_snap(&s, 1, 1000, 3000, 0, 0, 0, 0, 0, 0, 64, 8, 2, extra), 0);
	sf_view_compute(NULL, &s, &v);
	assert_true(v.since_mount);
	assert_true(v.interval == 50);
	assert_true(v.loads == 20);
	assert_true(fabs(v.hit_ratio - 0.75) < 1e-12);
	sf_snap_free(&s);

	/* Without: no rates, but levels and the since-mount hit ratio. */
	assert_int_equal(make_snap(&s, 1, 1000, 3000, 0, 0, 0, 0, 0, 0, 64, 8, 2, NULL), 0);
	sf_view_compute(NULL, &s, &v);
	assert_false(v.since_mount);
	assert_true(isnan(v.loads) && isnan(v.fuse_ops) && isnan(v.interval));
	assert_true(fabs(v.hit_ratio - 0.75) < 1e-12);
	assert_true(v.resident == 8 && v.free == 56);
	sf_snap_free(&s);

	/* The daemon's own free gauge wins over capacity - resident. */
	snprintf(extra, sizeof(extra), "%s 50\n", sf_names.free_frames);
	assert_int_equal(make_snap(&s, 1, 0, 0, 0, 0, 0, 0, 0, 0, 64, 8, 2, extra), 0);
	sf_view_compute(NULL, &s, &v);
	assert_true(v.free == 50);
	assert_true(isnan(v.hit_ratio)); /* nothing fixed yet */
	sf_snap_free(&s);

	/* A file without pool metrics: unknowns stay unknown (NaN), no crash. */
	assert_int_equal(parse_str("other_metric 1\n", &s), 0);
	sf_view_compute(NULL, &s, &v);
	assert_true(isnan(v.resident) && isnan(v.capacity) && isnan(v.hit_ratio));
	assert_string_equal(v.backend, "");
	sf_snap_free(&s);
}

/* A fault-latency histogram in the daemon's form: cumulative buckets at
 * 1, 2, 4, 8, 16 us and +Inf holding @c1 .. @c16, @cinf. */
static void fault_hist(char *buf, size_t cap, double c1, double c2, double c4, double c8,
		       double c16, double cinf)
{
	const char *h = sf_names.fault_seconds;

	snprintf(buf, cap,
		 "# HELP %s Time to bring one page in.\n# TYPE %s histogram\n"
		 "%s_bucket{le=\"0.000001\"} %.0f\n%s_bucket{le=\"0.000002\"} %.0f\n"
		 "%s_bucket{le=\"0.000004\"} %.0f\n%s_bucket{le=\"0.000008\"} %.0f\n"
		 "%s_bucket{le=\"0.000016\"} %.0f\n%s_bucket{le=\"+Inf\"} %.0f\n"
		 "%s_sum 0.000600000\n%s_count %.0f\n",
		 h, h, h, c1, h, c2, h, c4, h, c8, h, c16, h, cinf, h, h, cinf);
}

static void test_hist_quantile(void **state)
{
	const char *h = sf_names.fault_seconds;
	struct sf_snap a, b;
	struct sf_view v;
	char text[2048];

	/* 10 values in (2, 4] us, 80 in (4, 8], 10 in (8, 16]. */
	fault_hist(text, sizeof(text), 0, 0, 10, 90, 100, 100);
	assert_int_equal(make_snap(&b, 2, 0, 0, 0, 0, 0, 0, 0, 0, 64, 8, 0, text), 0);
	assert_non_null(sf_find(&b, "virtuscale_page_fault_seconds_bucket", "le=\"+Inf\""));
	assert_true(sf_find(&b, "virtuscale_page_fault_seconds_count", NULL)->value == 100);
	/* Interpolated inside the bucket holding the rank, as Prometheus. */
	assert_true(fabs(sf_hist_quantile(NULL, &b, h, 0.5) - 6e-6) < 1e-12);
	assert_true(fabs(sf_hist_quantile(NULL, &b, h, 0.99) - 15.2e-6) < 1e-12);
	assert_true(fabs(sf_hist_quantile(NULL, &b, h, 0.05) - 3e-6) < 1e-12);
	sf_view_compute(NULL, &b, &v);
	assert_true(fabs(v.fault_p50 - 6e-6) < 1e-12);
	assert_true(fabs(v.fault_p99 - 15.2e-6) < 1e-12);
	/* No such histogram: NaN, never 0. */
	assert_true(isnan(sf_hist_quantile(NULL, &b, "virtuscale_nope_seconds", 0.5)));

	/* Over an interval: only what was observed since @a. */
	fault_hist(text, sizeof(text), 0, 0, 10, 10, 10, 10);
	assert_int_equal(make_snap(&a, 1, 0, 0, 0, 0, 0, 0, 0, 0, 64, 8, 0, text), 0);
	assert_true(fabs(sf_hist_quantile(&a, &b, h, 0.5) - 6.25e-6) < 1e-12);
	sf_view_compute(&a, &b, &v);
	assert_true(fabs(v.fault_p50 - 6.25e-6) < 1e-12);
	/* Nothing new: no quantile. */
	assert_true(isnan(sf_hist_quantile(&b, &b, h, 0.5)));
	/* Went down (daemon restarted): counts from zero, i.e. @b alone. */
	assert_true(fabs(sf_hist_quantile(&b, &a, h, 0.5) - 3e-6) < 1e-12);
	sf_snap_free(&a);

	/* Everything above the last finite bound: that bound. */
	fault_hist(text, sizeof(text), 0, 0, 0, 0, 0, 5);
	assert_int_equal(make_snap(&a, 1, 0, 0, 0, 0, 0, 0, 0, 0, 64, 8, 0, text), 0);
	assert_true(fabs(sf_hist_quantile(NULL, &a, h, 0.5) - 16e-6) < 1e-12);
	sf_snap_free(&a);

	/* An older daemon without the histogram: the view says unknown. */
	assert_int_equal(make_snap(&a, 1, 0, 0, 0, 0, 0, 0, 0, 0, 64, 8, 0, NULL), 0);
	sf_view_compute(NULL, &a, &v);
	assert_true(isnan(v.fault_p50) && isnan(v.fault_p99));
	sf_snap_free(&a);
	sf_snap_free(&b);
}

static void test_residency_parse(void **state)
{
	uint64_t res = 99, total = 99;

	assert_int_equal(sf_residency_parse("12 34", 5, &res, &total), 0);
	assert_true(res == 12 && total == 34);
	assert_int_equal(sf_residency_parse("0 0\n", 4, &res, &total), 0);
	assert_true(res == 0 && total == 0);
	assert_int_equal(sf_residency_parse("7 9", 4, &res, &total), 0); /* with its NUL */
	assert_true(res == 7 && total == 9);
	/* Resident above total (file shrank while counting): clamped. */
	assert_int_equal(sf_residency_parse("5 3", 3, &res, &total), 0);
	assert_true(res == 3 && total == 3);

	res = total = 99;
	assert_int_equal(sf_residency_parse("", 0, &res, &total), -EBADMSG);
	assert_int_equal(sf_residency_parse("12", 2, &res, &total), -EBADMSG);
	assert_int_equal(sf_residency_parse("-1 3", 4, &res, &total), -EBADMSG);
	assert_int_equal(sf_residency_parse("1 2 3", 5, &res, &total), -EBADMSG);
	assert_int_equal(sf_residency_parse("1 x", 3, &res, &total), -EBADMSG);
	assert_int_equal(sf_residency_parse("1,2", 3, &res, &total), -EBADMSG);
	assert_int_equal(sf_residency_parse("99999999999999999999999 1", 25, &res, &total),
			 -ERANGE);
	assert_true(res == 99 && total == 99); /* untouched on failure */
}

static void test_arg_parsers(void **state)
{
	double d;
	unsigned long n;
	char buf[16];

	assert_int_equal(sf_parse_interval("1", &d), 0);
	assert_true(d == 1);
	assert_int_equal(sf_parse_interval("0.25", &d), 0);
	assert_true(d == 0.25);
	assert_int_equal(sf_parse_interval("0", &d), -EINVAL);
	assert_int_equal(sf_parse_interval("-1", &d), -EINVAL);
	assert_int_equal(sf_parse_interval("1s", &d), -EINVAL);
	assert_int_equal(sf_parse_interval("nan", &d), -EINVAL);
	assert_int_equal(sf_parse_interval("", &d), -EINVAL);
	assert_int_equal(sf_parse_count("3", &n), 0);
	assert_true(n == 3);
	assert_int_equal(sf_parse_count("0", &n), -EINVAL);
	assert_int_equal(sf_parse_count("-3", &n), -EINVAL);
	assert_int_equal(sf_parse_count("3x", &n), -EINVAL);

	sf_human_bytes(512, buf, sizeof(buf));
	assert_string_equal(buf, "512B");
	sf_human_bytes(4096, buf, sizeof(buf));
	assert_string_equal(buf, "4.0K");
	sf_human_bytes(64.0 * (1 << 20), buf, sizeof(buf));
	assert_string_equal(buf, "64M");
	sf_human_bytes(NAN, buf, sizeof(buf));
	assert_string_equal(buf, "-");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_samples),      cmocka_unit_test(test_parse_rejects),
	    cmocka_unit_test(test_label_get),	       cmocka_unit_test(test_view_rates),
	    cmocka_unit_test(test_view_counter_reset), cmocka_unit_test(test_view_first_line),
	    cmocka_unit_test(test_residency_parse),    cmocka_unit_test(test_arg_parsers),
	    cmocka_unit_test(test_hist_quantile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
