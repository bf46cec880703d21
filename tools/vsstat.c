/*
 * vsstat - vmstat-like report of a VirtuScale mount's buffer pool.
 *
 * Reads only MOUNTPOINT/.virtuscale/stats: every INTERVAL seconds it reads the
 * file again and prints the counter deltas as rates, and the gauges as
 * levels.  Like vmstat, the first line covers the time since mount (averages
 * over the daemon's uptime when the stats file exports it; otherwise only the
 * levels and the hit ratio since mount, rates shown as "-").
 */
#include "tools/statsfile.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "vsstat"

/* vmstat repeats its header every screenful; a fixed count keeps logs of a
 * pipe readable the same way. */
#define HEADER_EVERY 20

struct opts {
	const char *mnt;
	double interval;     /* 0: one report and exit */
	unsigned long count; /* 0: forever */
	bool json;
	bool latency;
	bool one_header;
	bool timestamp;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " [OPTIONS] MOUNTPOINT [INTERVAL [COUNT]]\n"
		"\n"
		"Report a VirtuScale mount's buffer pool activity, like vmstat. Without\n"
		"INTERVAL, print one line and exit; with it, print a line every INTERVAL\n"
		"seconds (decimals allowed), COUNT lines in all (default: until killed).\n"
		"\n"
		"The first line covers the time since mount: rates averaged over the daemon's\n"
		"uptime when the stats file has virtuscale_uptime_seconds, otherwise '-'\n"
		"(levels and hit%% are always shown). Later lines cover one interval each.\n"
		"\n"
		"Columns:\n"
		"  loads  hits    pool misses (pages read from the store) and hits per second\n"
		"  hit%%           hits / (hits + loads) over the interval\n"
		"  evict  wb      pages evicted and pages written back per second\n"
		"  read  write    MiB/s read from and written to the backing store\n"
		"  ops            FUSE requests per second, all operations\n"
		"  resident dirty free   pool pages now (free: frames holding no page)\n"
		"  p50  p99       with -l: page-fault latency (a page read from the store),\n"
		"                 median and 99th percentile in microseconds over the\n"
		"                 interval, interpolated in the stats file's histogram\n"
		"                 (buckets a factor of 2 wide); '-' when nothing was read\n"
		"\n"
		"Options:\n"
		"  -j, --json        one JSON object per line instead of columns (always\n"
		"                    with fault_p50_seconds and fault_p99_seconds)\n"
		"  -l, --latency     add the page-fault latency columns\n"
		"  -n, --one-header  print the header once, not every %d lines\n"
		"  -t, --timestamp   add the time of day to each line\n"
		"  -h, --help        this help\n"
		"\n"
		"Examples:\n"
		"  " PROG " /mnt/vs             one line: levels and averages since mount\n"
		"  " PROG " /mnt/vs 1           a line per second until Ctrl-C\n"
		"  " PROG " /mnt/vs 0.5 10      ten lines, half a second apart\n"
		"  " PROG " --json /mnt/vs 5 | jq .hit_ratio\n"
		"\n"
		"Exit status: 0 ok, 1 runtime error (not a VirtuScale mount, stats file\n"
		"unreadable or malformed), 2 usage error.\n",
		HEADER_EVERY);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"latency", no_argument, NULL, 'l'},
	    {"one-header", no_argument, NULL, 'n'},
	    {"timestamp", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	memset(o, 0, sizeof(*o));
	while ((c = getopt_long(argc, argv, "jlnth", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'l':
			o->latency = true;
			break;
		case 'n':
			o->one_header = true;
			break;
		case 't':
			o->timestamp = true;
			break;
		case 'h':
			usage(stdout);
			exit(SF_EXIT_OK);
		default:
			goto bad;
		}
	}
	if (optind >= argc || argc - optind > 3) {
		fprintf(stderr, PROG ": expected MOUNTPOINT [INTERVAL [COUNT]]\n");
		goto bad;
	}
	o->mnt = argv[optind++];
	if (optind < argc && sf_parse_interval(argv[optind++], &o->interval) < 0) {
		fprintf(stderr, PROG ": INTERVAL must be a positive number of seconds\n");
		goto bad;
	}
	if (optind < argc && sf_parse_count(argv[optind++], &o->count) < 0) {
		fprintf(stderr, PROG ": COUNT must be a positive integer\n");
		goto bad;
	}
	if (o->interval == 0)
		o->count = 1;
	return 0;
bad:
	fprintf(stderr, "Try '" PROG " --help'.\n");
	return -EINVAL;
}

/*
 * A rate or level rounded to an integer in @width columns; values that do not
 * fit are scaled by 1000 with a k/M/G/T suffix, so columns never shift.
 */
static void fmt_num(char *buf, size_t cap, double v, int width)
{
	static const char suffix[] = " kMGT";
	unsigned s = 0;

	if (isnan(v)) {
		snprintf(buf, cap, "%*s", width, "-");
		return;
	}
	if (snprintf(buf, cap, "%*.0f", width, v) <= width)
		return;
	do {
		v /= 1000;
		s++;
	} while (s + 1 < sizeof(suffix) - 1 &&
		 snprintf(buf, cap, "%*.0f%c", width - 1, v, suffix[s]) > width);
	snprintf(buf, cap, "%*.0f%c", width - 1, v, suffix[s]);
}

static void fmt_fixed1(char *buf, size_t cap, double v, int width)
{
	if (isnan(v))
		snprintf(buf, cap, "%*s", width, "-");
	else if (snprintf(buf, cap, "%*.1f", width, v) > width)
		fmt_num(buf, cap, v, width);
}

/* @title centred in a run of dashes @width wide, as vmstat's group line. */
static void print_group(const char *title, int width, bool last)
{
	int len = (int)strlen(title) + 2, left = (width - len) / 2, i;

	for (i = 0; i < left; i++)
		putchar('-');
	printf(" %s ", title);
	for (i = left + len; i < width; i++)
		putchar('-');
	if (!last)
		putchar(' ');
}

static void print_header(const struct opts *o)
{
	print_group("pool /s", 7 + 1 + 7 + 1 + 5 + 1 + 7 + 1 + 7, false);
	print_group("store MiB/s", 6 + 1 + 6, false);
	print_group("fuse", 6, false);
	print_group("pool pages", 8 + 1 + 8 + 1 + 8, !o->timestamp && !o->latency);
	if (o->latency)
		print_group("fault us", 6 + 1 + 6, !o->timestamp);
	if (o->timestamp)
		print_group("time", 8, true);
	putchar('\n');
	printf("%7s %7s %5s %7s %7s %6s %6s %6s %8s %8s %8s", "loads", "hits", "hit%", "evict",
	       "wb", "read", "write", "ops", "resident", "dirty", "free");
	if (o->latency)
		printf(" %6s %6s", "p50", "p99");
	if (o->timestamp)
		printf(" %8s", "hh:mm:ss");
	putchar('\n');
}

static void print_text(const struct opts *o, const struct sf_view *v, double when)
{
	char c[11][24];

	fmt_num(c[0], sizeof(c[0]), v->loads, 7);
	fmt_num(c[1], sizeof(c[1]), v->hits, 7);
	fmt_fixed1(c[2], sizeof(c[2]), v->hit_ratio * 100, 5);
	fmt_num(c[3], sizeof(c[3]), v->evictions, 7);
	fmt_num(c[4], sizeof(c[4]), v->writebacks, 7);
	fmt_fixed1(c[5], sizeof(c[5]), v->read_bps / (1 << 20), 6);
	fmt_fixed1(c[6], sizeof(c[6]), v->write_bps / (1 << 20), 6);
	fmt_num(c[7], sizeof(c[7]), v->fuse_ops, 6);
	fmt_num(c[8], sizeof(c[8]), v->resident, 8);
	fmt_num(c[9], sizeof(c[9]), v->dirty, 8);
	fmt_num(c[10], sizeof(c[10]), v->free, 8);
	printf("%s %s %s %s %s %s %s %s %s %s %s", c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
	       c[8], c[9], c[10]);
	if (o->latency) {
		fmt_num(c[0], sizeof(c[0]), v->fault_p50 * 1e6, 6);
		fmt_num(c[1], sizeof(c[1]), v->fault_p99 * 1e6, 6);
		printf(" %s %s", c[0], c[1]);
	}
	if (o->timestamp) {
		time_t t = (time_t)when;
		struct tm tm;
		char ts[16];

		localtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
		printf(" %s", ts);
	}
	putchar('\n');
}

/* JSON has no NaN: unknown values are null. */
static void json_num(const char *key, double v, bool last)
{
	if (isnan(v) || isinf(v))
		printf("\"%s\":null%s", key, last ? "" : ",");
	else
		printf("\"%s\":%.15g%s", key, v, last ? "" : ",");
}

static void json_str(const char *key, const char *s)
{
	const char *p;

	printf("\"%s\":\"", key);
	for (p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	printf("\",");
}

/*
 * One object per line.  Besides the rates it carries the raw counter deltas
 * the rates were computed from, so a consumer can sum them exactly across
 * lines instead of multiplying rounded rates back.
 */
static void print_json(const struct sf_snap *prev, const struct sf_snap *cur,
		       const struct sf_view *v)
{
	const struct sf_metric_names *m = &sf_names;

	printf("{");
	json_num("time", cur->realtime, false);
	json_num("interval", v->interval, false);
	printf("\"since_mount\":%s,", prev ? "false" : "true");
	json_str("backend", v->backend);
	json_num("loads_per_s", v->loads, false);
	json_num("hits_per_s", v->hits, false);
	json_num("hit_ratio", v->hit_ratio, false);
	json_num("evictions_per_s", v->evictions, false);
	json_num("writebacks_per_s", v->writebacks, false);
	json_num("read_bytes_per_s", v->read_bps, false);
	json_num("written_bytes_per_s", v->write_bps, false);
	json_num("fuse_ops_per_s", v->fuse_ops, false);
	json_num("fault_p50_seconds", v->fault_p50, false);
	json_num("fault_p99_seconds", v->fault_p99, false);
	json_num("loads", sf_counter_delta(prev, cur, m->loads), false);
	json_num("hits", sf_counter_delta(prev, cur, m->hits), false);
	json_num("evictions", sf_counter_delta(prev, cur, m->evictions), false);
	json_num("writebacks", sf_counter_delta(prev, cur, m->writebacks), false);
	json_num("read_bytes", sf_counter_delta(prev, cur, m->read_bytes), false);
	json_num("written_bytes", sf_counter_delta(prev, cur, m->write_bytes), false);
	json_num("fuse_ops", sf_counter_delta(prev, cur, m->fuse_requests), false);
	json_num("capacity_pages", v->capacity, false);
	json_num("resident_pages", v->resident, false);
	json_num("dirty_pages", v->dirty, false);
	json_num("free_pages", v->free, true);
	printf("}\n");
}

static void sleep_until(double deadline)
{
	struct timespec ts = {
	    .tv_sec = (time_t)deadline,
	    .tv_nsec = (long)((deadline - (time_t)deadline) * 1e9),
	};

	if (ts.tv_nsec >= 1000000000L)
		ts.tv_nsec = 999999999L;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int main(int argc, char **argv)
{
	struct sf_snap prev = {0}, cur = {0};
	unsigned long line;
	struct opts o;
	double next;
	int r;

	if (parse_args(argc, argv, &o) < 0)
		return SF_EXIT_USAGE;
	r = sf_check_mount(o.mnt);
	if (r == 0)
		r = sf_read_mount(o.mnt, &prev);
	if (r < 0) {
		sf_mount_error(PROG, o.mnt, r);
		return SF_EXIT_RUNTIME;
	}
	/* Lines must reach a pipe (a test, `| tee`) as they are produced. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	next = prev.mono;
	for (line = 0; o.count == 0 || line < o.count; line++) {
		struct sf_view v;
		const struct sf_snap *p = line ? &prev : NULL;
		struct sf_snap *c = line ? &cur : &prev;

		if (line) {
			/* Absolute deadlines: the time spent reading and
			 * printing does not accumulate as drift. */
			next += o.interval;
			sleep_until(next);
			r = sf_read_mount(o.mnt, &cur);
			if (r < 0) {
				sf_mount_error(PROG, o.mnt, r);
				break;
			}
		}
		sf_view_compute(p, c, &v);
		if (o.json) {
			print_json(p, c, &v);
		} else {
			if (line == 0 || (!o.one_header && line % HEADER_EVERY == 0))
				print_header(&o);
			print_text(&o, &v, c->realtime);
		}
		if (line) {
			sf_snap_free(&prev);
			prev = cur;
			memset(&cur, 0, sizeof(cur));
		}
	}
	sf_snap_free(&prev);
	sf_snap_free(&cur);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": write error: %s\n", strerror(errno));
		return SF_EXIT_RUNTIME;
	}
	return r < 0 ? SF_EXIT_RUNTIME : SF_EXIT_OK;
}
