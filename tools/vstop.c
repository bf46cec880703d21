/*
 * vstop - live dashboard of a VirtuScale mount.
 *
 * Every DELAY seconds the stats file is read again (the only source of the
 * pool numbers) and the screen is redrawn: pool occupancy bar, hit ratio and
 * fault/eviction rates as sparklines, backing-store bandwidth, the backend,
 * and the files holding the most pool pages.
 *
 * The file list comes from a scanner thread that walks the mount every SCAN
 * seconds and asks each regular file for its user.virtuscale.residency xattr.
 * That is the expensive part, so it is bounded (MAX files per scan) and runs
 * off the drawing thread: a slow walk delays the list, never the keyboard or
 * the counters.  Its cost, per scan: one readdir per directory, one lookup
 * per entry the kernel has not cached, and one getxattr per regular file,
 * which the kernel never caches and for which the daemon checks every page of
 * the file.  These requests show up in the FUSE ops/s of the dashboard itself.
 *
 * When stdout is not a terminal (or with --text) there is no curses: one
 * plain-text snapshot per DELAY, the file scan done in line.
 */
#include "tools/statsfile.h"

#include <curses.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG "vstop"

#define HISTORY	    512 /* samples kept per sparkline (wider than any screen) */
#define TOP_FILES   64	/* files kept from a scan (more than fit on a screen) */
#define TEXT_FILES  10	/* files printed per text-mode snapshot */
#define PATH_KEEP   256 /* bytes of a file's path kept for display */
#define LABEL_WIDTH 16	/* width of the rate labels before the sparklines */

struct opts {
	const char *mnt;
	double delay;
	unsigned long iterations; /* 0: until q */
	double scan_every;	  /* 0: no file scan */
	unsigned long max_files;
	bool text;
};

/* ------------------------------------------------------------------ */
/* File scan                                                          */

struct top_file {
	uint64_t resident, total;
	char path[PATH_KEEP]; /* relative to the mount; the tail if too long */
};

struct scan_result {
	struct top_file top[TOP_FILES];
	unsigned ntop;
	unsigned long files;  /* regular files asked for their residency */
	unsigned long errors; /* files without a readable residency */
	bool truncated;	      /* stopped at max_files */
	double seconds;	      /* how long the walk took */
	double finished;      /* CLOCK_MONOTONIC when it ended; 0: never ran */
};

/* nftw() passes no user pointer; only one walk runs at a time (the scanner
 * thread, or the main thread in text mode), so file scope is enough. */
static struct {
	struct scan_result res;
	size_t mnt_len;
	unsigned long max_files;
	const atomic_bool *abort; /* set when vstop quits: stop mid-walk */
} walk;

static void top_insert(struct scan_result *r, const char *rel, uint64_t res, uint64_t total)
{
	unsigned i;
	size_t len;

	if (res == 0)
		return;
	if (r->ntop == TOP_FILES && r->top[TOP_FILES - 1].resident >= res)
		return;
	i = r->ntop < TOP_FILES ? r->ntop++ : TOP_FILES - 1;
	while (i > 0 && r->top[i - 1].resident < res) {
		r->top[i] = r->top[i - 1];
		i--;
	}
	r->top[i].resident = res;
	r->top[i].total = total;
	len = strlen(rel);
	/* The end of a long path says more than its beginning. */
	if (len >= PATH_KEEP)
		snprintf(r->top[i].path, PATH_KEEP, "...%s", rel + len - (PATH_KEEP - 4));
	else
		memcpy(r->top[i].path, rel, len + 1);
}

static int walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	uint64_t res, total;
	const char *rel;

	if (type == FTW_D && ftw->level > 0 && strcmp(path + ftw->base, ".virtuscale") == 0)
		return FTW_SKIP_SUBTREE;
	if (walk.abort && atomic_load_explicit(walk.abort, memory_order_relaxed))
		return FTW_STOP;
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return FTW_CONTINUE;
	if (walk.res.files >= walk.max_files) {
		walk.res.truncated = true;
		return FTW_STOP;
	}
	walk.res.files++;
	if (sf_residency_get(path, &res, &total) < 0) {
		walk.res.errors++;
		return FTW_CONTINUE;
	}
	rel = path + walk.mnt_len;
	while (*rel == '/')
		rel++;
	top_insert(&walk.res, rel, res, total);
	return FTW_CONTINUE;
}

static void scan_once(const char *mnt, unsigned long max_files, const atomic_bool *abort,
		      struct scan_result *ret)
{
	double start = sf_now_mono();

	memset(&walk, 0, sizeof(walk));
	walk.mnt_len = strlen(mnt);
	walk.max_files = max_files;
	walk.abort = abort;
	/* FTW_MOUNT: a filesystem mounted below ours is not ours to scan. */
	nftw(mnt, walk_cb, 16, FTW_PHYS | FTW_MOUNT | FTW_ACTIONRETVAL);
	walk.res.finished = sf_now_mono();
	walk.res.seconds = walk.res.finished - start;
	*ret = walk.res;
}

struct scanner {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;	   /* under lock */
	atomic_bool abort; /* the same, read by the walk without the lock */
	bool running;
	const struct opts *o;
	struct scan_result latest; /* under lock */
};

static void *scanner_main(void *arg)
{
	struct scanner *s = arg;
	struct scan_result *r = malloc(sizeof(*r));

	if (!r)
		return NULL;
	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		struct timespec until;
		double t;

		pthread_mutex_unlock(&s->lock);
		scan_once(s->o->mnt, s->o->max_files, &s->abort, r);
		pthread_mutex_lock(&s->lock);
		if (s->stop)
			break; /* an aborted walk is incomplete: not published */
		s->latest = *r;
		t = r->finished + s->o->scan_every;
		/* The condvar uses CLOCK_MONOTONIC (set in scanner_start). */
		until.tv_sec = (time_t)t;
		until.tv_nsec = (long)((t - (time_t)t) * 1e9);
		while (!s->stop && sf_now_mono() < t)
			pthread_cond_timedwait(&s->wake, &s->lock, &until);
	}
	pthread_mutex_unlock(&s->lock);
	free(r);
	return NULL;
}

static int scanner_start(struct scanner *s, const struct opts *o)
{
	pthread_condattr_t ca;
	sigset_t block, old;
	int r;

	memset(s, 0, sizeof(*s));
	s->o = o;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&s->abort, false);
	if (o->scan_every <= 0)
		return 0;
	/* The thread inherits a mask blocking the signals the drawing thread
	 * waits for: a SIGWINCH or SIGINT taken by the scanner would not
	 * interrupt getch(), and the screen would react a refresh late. */
	sigemptyset(&block);
	sigaddset(&block, SIGWINCH);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	r = pthread_create(&s->thread, NULL, scanner_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		pthread_cond_destroy(&s->wake);
		pthread_mutex_destroy(&s->lock);
		return -r;
	}
	s->running = true;
	return 0;
}

static void scanner_stop(struct scanner *s)
{
	if (s->running) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		atomic_store(&s->abort, true);
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->lock);
		/* A walk in progress stops at its next entry; only a getxattr
		 * already sent to the daemon is waited for. */
		pthread_join(s->thread, NULL);
		s->running = false;
	}
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->lock);
}

/* ------------------------------------------------------------------ */
/* History                                                            */

enum series { S_HIT, S_LOADS, S_EVICT, S_WB, S_FUSE, S_READ, S_WRITE, S_COUNT };

struct history {
	double v[S_COUNT][HISTORY];
	unsigned n; /* samples pushed in all; the newest is at (n - 1) % HISTORY */
};

static void history_push(struct history *h, const struct sf_view *v)
{
	unsigned i = h->n % HISTORY;

	h->v[S_HIT][i] = v->hit_ratio;
	h->v[S_LOADS][i] = v->loads;
	h->v[S_EVICT][i] = v->evictions;
	h->v[S_WB][i] = v->writebacks;
	h->v[S_FUSE][i] = v->fuse_ops;
	h->v[S_READ][i] = v->read_bps;
	h->v[S_WRITE][i] = v->write_bps;
	h->n++;
}

/* ------------------------------------------------------------------ */
/* Formatting shared by both modes                                    */

static void fmt_rate(char *buf, size_t cap, double v)
{
	if (isnan(v))
		snprintf(buf, cap, "-");
	else if (v >= 1e6)
		snprintf(buf, cap, "%.1fM", v / 1e6);
	else if (v >= 1e4)
		snprintf(buf, cap, "%.1fk", v / 1e3);
	else
		snprintf(buf, cap, "%.0f", v);
}

static void fmt_pct(char *buf, size_t cap, double ratio)
{
	if (isnan(ratio) || isinf(ratio))
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.1f%%", ratio * 100);
}

static void fmt_mib(char *buf, size_t cap, double bps)
{
	if (isnan(bps))
		snprintf(buf, cap, "- MiB/s");
	else
		snprintf(buf, cap, "%.1f MiB/s", bps / (1 << 20));
}

static double share(double part, double whole)
{
	return whole > 0 ? part / whole : NAN;
}

/* Cells of a @width-wide occupancy bar: clean resident, dirty, free. */
static void bar_split(const struct sf_view *v, int width, int *ret_clean, int *ret_dirty)
{
	double cap = v->capacity, dirty = isnan(v->dirty) ? 0 : v->dirty;
	double res = isnan(v->resident) ? 0 : v->resident;
	int d, c;

	if (!(cap > 0) || width <= 0) {
		*ret_clean = *ret_dirty = 0;
		return;
	}
	if (res > cap)
		res = cap;
	if (dirty > res)
		dirty = res;
	/* Round up a non-zero share to one cell: a few dirty pages in a big
	 * pool are exactly what one wants to notice. */
	d = (int)(dirty / cap * width + 0.5);
	if (d == 0 && dirty > 0)
		d = 1;
	c = (int)(res / cap * width + 0.5) - d;
	if (c < 0)
		c = 0;
	if (c == 0 && res - dirty > 0 && c + d < width)
		c = 1;
	if (c + d > width)
		c = width - d;
	*ret_clean = c;
	*ret_dirty = d;
}

/* ------------------------------------------------------------------ */
/* Plain-text mode                                                    */

static void text_bar(const struct sf_view *v, int width)
{
	int clean, dirty, i;

	bar_split(v, width, &clean, &dirty);
	putchar('[');
	for (i = 0; i < width; i++)
		putchar(i < clean ? '#' : i < clean + dirty ? 'D' : '.');
	putchar(']');
}

static void text_snapshot(const struct opts *o, const struct sf_snap *cur, const struct sf_view *v,
			  const struct scan_result *scan)
{
	char a[32], b[32], c[32], d[32], e[32], f[32];
	time_t t = (time_t)cur->realtime;
	struct tm tm;
	char when[32];
	unsigned i;

	localtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	printf("vstop %s  %s  backend: %s\n", when, o->mnt, v->backend[0] ? v->backend : "?");
	printf("Pool      ");
	text_bar(v, 40);
	fmt_pct(a, sizeof(a), share(v->resident, v->capacity));
	fmt_pct(b, sizeof(b), share(v->dirty, v->capacity));
	fmt_pct(c, sizeof(c), share(v->free, v->capacity));
	printf(" resident %.0f (%s) dirty %.0f (%s) free %.0f (%s) of %.0f pages\n", v->resident, a,
	       v->dirty, b, v->free, c, v->capacity);
	fmt_pct(a, sizeof(a), v->hit_ratio);
	fmt_rate(b, sizeof(b), v->loads);
	fmt_rate(c, sizeof(c), v->hits);
	fmt_rate(d, sizeof(d), v->evictions);
	fmt_rate(e, sizeof(e), v->writebacks);
	fmt_rate(f, sizeof(f), v->fuse_ops);
	printf("Rates     hit ratio %s  loads/s %s  hits/s %s  evictions/s %s  write-backs/s %s  "
	       "fuse ops/s %s\n",
	       a, b, c, d, e, f);
	fmt_mib(a, sizeof(a), v->read_bps);
	fmt_mib(b, sizeof(b), v->write_bps);
	printf("Store     read %s  write %s\n", a, b);
	if (o->scan_every <= 0) {
		printf("Most resident files: scan disabled (-s 0)\n\n");
		return;
	}
	printf("Most resident files (%lu scanned%s, %lu without residency, %.2f s)\n", scan->files,
	       scan->truncated ? ", stopped at --max-files" : "", scan->errors, scan->seconds);
	printf("  %10s %10s %7s  %s\n", "RESIDENT", "PAGES", "PERCENT", "FILE");
	for (i = 0; i < scan->ntop && i < TEXT_FILES; i++) {
		fmt_pct(a, sizeof(a), share(scan->top[i].resident, scan->top[i].total));
		printf("  %10llu %10llu %7s  %s\n", (unsigned long long)scan->top[i].resident,
		       (unsigned long long)scan->top[i].total, a, scan->top[i].path);
	}
	putchar('\n');
}

static void sleep_until(double deadline)
{
	struct timespec ts = {
	    .tv_sec = (time_t)deadline,
	    .tv_nsec = (long)((deadline - (time_t)deadline) * 1e9),
	};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int run_text(const struct opts *o)
{
	struct sf_snap prev = {0}, cur = {0};
	struct scan_result *scan = calloc(1, sizeof(*scan));
	double next = sf_now_mono();
	unsigned long it;
	int r = 0;

	if (!scan)
		return -ENOMEM;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (it = 0; o->iterations == 0 || it < o->iterations; it++) {
		struct sf_view v;

		if (it)
			sleep_until(next += o->delay);
		r = sf_read_mount(o->mnt, &cur);
		if (r < 0)
			break;
		if (o->scan_every > 0 &&
		    (scan->finished == 0 || sf_now_mono() >= scan->finished + o->scan_every))
			scan_once(o->mnt, o->max_files, NULL, scan);
		sf_view_compute(it ? &prev : NULL, &cur, &v);
		text_snapshot(o, &cur, &v, scan);
		if (ferror(stdout)) {
			r = -EIO;
			break;
		}
		sf_snap_free(&prev);
		prev = cur;
		memset(&cur, 0, sizeof(cur));
	}
	sf_snap_free(&prev);
	sf_snap_free(&cur);
	free(scan);
	return r;
}

/* ------------------------------------------------------------------ */
/* Curses mode                                                        */

enum { PAIR_CLEAN = 1, PAIR_DIRTY, PAIR_TITLE, PAIR_SPARK };

static volatile sig_atomic_t quit_signal;
static bool utf8;

static void on_signal(int sig)
{
	quit_signal = sig;
}

/* printf at (y, x), clipped to the screen instead of wrapping. */
static void put(int y, int x, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (y < 0 || y >= LINES || x >= COLS)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	mvaddnstr(y, x, buf, COLS - x);
}

static void title(int y, const char *text)
{
	if (y >= LINES)
		return;
	attron(A_BOLD | COLOR_PAIR(PAIR_TITLE));
	put(y, 0, "%s", text);
	attroff(A_BOLD | COLOR_PAIR(PAIR_TITLE));
}

/*
 * A sparkline of series @s in @width cells ending at column @x + @width,
 * newest sample rightmost.  Each line is scaled to its own visible maximum
 * (rates of very different magnitude share the screen); @fixed_max > 0 pins
 * the scale instead (the hit ratio, 0..1).  NaN samples (no rate yet) are
 * blank.
 */
static void sparkline(const struct history *h, enum series s, int y, int x, int width,
		      double fixed_max)
{
	static const char *const blocks[] = {"\u2581", "\u2582", "\u2583", "\u2584",
					     "\u2585", "\u2586", "\u2587", "\u2588"};
	static const char ascii[] = "_.-:=+*#";
	unsigned avail = h->n < HISTORY ? h->n : HISTORY;
	unsigned shown, i;
	double max = fixed_max;

	if (y >= LINES || width <= 0)
		return;
	shown = (unsigned)width < avail ? (unsigned)width : avail;
	if (max <= 0) {
		for (i = 0; i < shown; i++) {
			double v = h->v[s][(h->n - 1 - i) % HISTORY];

			if (!isnan(v) && v > max)
				max = v;
		}
	}
	attron(COLOR_PAIR(PAIR_SPARK));
	for (i = 0; i < shown; i++) {
		/* i = 0 is the oldest shown sample. */
		double v = h->v[s][(h->n - shown + i) % HISTORY];
		int col = x + width - (int)shown + (int)i, level;

		if (col >= COLS)
			break;
		if (isnan(v))
			continue;
		level = max > 0 ? (int)(v / max * 7 + 0.5) : 0;
		if (level < 0)
			level = 0;
		if (level > 7)
			level = 7;
		if (utf8)
			mvaddstr(y, col, blocks[level]);
		else
			mvaddch(y, col, ascii[level]);
	}
	attroff(COLOR_PAIR(PAIR_SPARK));
}

static void draw_bar(int y, const struct sf_view *v)
{
	int width = COLS - 2, clean, dirty, i;

	if (y >= LINES || width < 4)
		return;
	bar_split(v, width, &clean, &dirty);
	mvaddch(y, 0, '[');
	attron(COLOR_PAIR(PAIR_CLEAN) | A_REVERSE);
	for (i = 0; i < clean; i++)
		mvaddch(y, 1 + i, '#');
	attroff(COLOR_PAIR(PAIR_CLEAN) | A_REVERSE);
	attron(COLOR_PAIR(PAIR_DIRTY) | A_REVERSE);
	for (; i < clean + dirty; i++)
		mvaddch(y, 1 + i, 'D');
	attroff(COLOR_PAIR(PAIR_DIRTY) | A_REVERSE);
	for (; i < width; i++)
		mvaddch(y, 1 + i, '.');
	mvaddch(y, COLS - 1, ']');
}

static void draw(const struct opts *o, const struct sf_snap *cur, const struct sf_view *v,
		 const struct history *h, const struct scan_result *scan)
{
	char a[32], b[32], c[32], when[16];
	time_t t = (time_t)cur->realtime;
	int y = 0, spark_x = LABEL_WIDTH + 10, spark_w = COLS - spark_x;
	struct tm tm;
	unsigned i;

	erase();
	localtime_r(&t, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	attron(A_BOLD);
	put(y, 0, "vstop  %s", o->mnt);
	attroff(A_BOLD);
	put(y, COLS > 30 ? COLS - 30 : 0, "%30s", when);
	y++;
	sf_human_bytes(v->capacity * SF_PAGE_SIZE, a, sizeof(a));
	put(y++, 0, "Backend: %s   pool %s (%.0f pages)   refresh %.3g s   q: quit",
	    v->backend[0] ? v->backend : "?", a, v->capacity, o->delay);
	y++;

	title(y++, "Pool occupancy");
	draw_bar(y++, v);
	fmt_pct(a, sizeof(a), share(v->resident, v->capacity));
	fmt_pct(b, sizeof(b), share(v->dirty, v->capacity));
	fmt_pct(c, sizeof(c), share(v->free, v->capacity));
	put(y++, 0, "# resident %.0f (%s)   D dirty %.0f (%s)   . free %.0f (%s)", v->resident, a,
	    v->dirty, b, v->free, c);
	y++;

	title(y++, "Rates (sparklines: one sample per refresh, newest right)");
	fmt_pct(a, sizeof(a), v->hit_ratio);
	put(y, 0, "%-*s %8s", LABEL_WIDTH, "hit ratio", a);
	sparkline(h, S_HIT, y++, spark_x, spark_w, 1.0);
	fmt_rate(a, sizeof(a), v->loads);
	put(y, 0, "%-*s %8s", LABEL_WIDTH, "faults (loads)/s", a);
	sparkline(h, S_LOADS, y++, spark_x, spark_w, 0);
	fmt_rate(a, sizeof(a), v->evictions);
	put(y, 0, "%-*s %8s", LABEL_WIDTH, "evictions/s", a);
	sparkline(h, S_EVICT, y++, spark_x, spark_w, 0);
	fmt_rate(a, sizeof(a), v->writebacks);
	put(y, 0, "%-*s %8s", LABEL_WIDTH, "write-backs/s", a);
	sparkline(h, S_WB, y++, spark_x, spark_w, 0);
	fmt_rate(a, sizeof(a), v->fuse_ops);
	put(y, 0, "%-*s %8s", LABEL_WIDTH, "fuse ops/s", a);
	sparkline(h, S_FUSE, y++, spark_x, spark_w, 0);
	y++;

	title(y++, "Backing store");
	fmt_mib(a, sizeof(a), v->read_bps);
	put(y, 0, "%-*s %12s", LABEL_WIDTH - 4, "read", a);
	sparkline(h, S_READ, y++, spark_x, spark_w, 0);
	fmt_mib(a, sizeof(a), v->write_bps);
	put(y, 0, "%-*s %12s", LABEL_WIDTH - 4, "write", a);
	sparkline(h, S_WRITE, y++, spark_x, spark_w, 0);
	y++;

	if (o->scan_every <= 0) {
		title(y++, "Most resident files: scan disabled (-s 0)");
	} else if (scan->finished == 0) {
		title(y++, "Most resident files (first scan running)");
	} else {
		char head[160];

		snprintf(head, sizeof(head),
			 "Most resident files (every %.3g s: %lu files%s in %.2f s, %.0f s ago)",
			 o->scan_every, scan->files, scan->truncated ? " (max reached)" : "",
			 scan->seconds, sf_now_mono() - scan->finished);
		title(y++, head);
		put(y++, 0, "%10s %10s %7s  %s", "RESIDENT", "PAGES", "PERCENT", "FILE");
		for (i = 0; i < scan->ntop && y < LINES; i++) {
			fmt_pct(a, sizeof(a), share(scan->top[i].resident, scan->top[i].total));
			put(y++, 0, "%10llu %10llu %7s  %s",
			    (unsigned long long)scan->top[i].resident,
			    (unsigned long long)scan->top[i].total, a, scan->top[i].path);
		}
	}
	refresh();
}

static int run_curses(const struct opts *o)
{
	struct sf_snap prev = {0}, cur = {0};
	struct history *h = calloc(1, sizeof(*h));
	struct scan_result *scan = calloc(1, sizeof(*scan));
	struct scanner scanner;
	struct sf_view v;
	struct sigaction sa = {.sa_handler = on_signal};
	unsigned long it = 0;
	double next;
	int r;

	if (!h || !scan) {
		free(h);
		free(scan);
		return -ENOMEM;
	}
	r = sf_read_mount(o->mnt, &cur);
	if (r < 0)
		goto out_free;
	r = scanner_start(&scanner, o);
	if (r < 0)
		goto out_free;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
	initscr();
	cbreak();
	noecho();
	keypad(stdscr, TRUE);
	curs_set(0);
	if (has_colors()) {
		start_color();
		use_default_colors();
		init_pair(PAIR_CLEAN, COLOR_GREEN, -1);
		init_pair(PAIR_DIRTY, COLOR_RED, -1);
		init_pair(PAIR_TITLE, COLOR_CYAN, -1);
		init_pair(PAIR_SPARK, COLOR_YELLOW, -1);
	}

	next = cur.mono;
	/* The first view (averages since mount) is shown but kept out of the
	 * sparklines: it is not a sample of the same length as the others and
	 * would flatten them. */
	sf_view_compute(NULL, &cur, &v);
	for (;;) {
		double now;
		int ch;

		pthread_mutex_lock(&scanner.lock);
		*scan = scanner.latest;
		pthread_mutex_unlock(&scanner.lock);
		draw(o, &cur, &v, h, scan);
		if (o->iterations && ++it >= o->iterations)
			break;
		/* Wait for a key until the next sample is due; a resize
		 * redraws at once without taking a sample. */
		next += o->delay;
		for (;;) {
			now = sf_now_mono();
			if (quit_signal || now >= next)
				break;
			timeout((int)((next - now) * 1000) + 1);
			ch = getch();
			if (ch == 'q' || ch == 'Q')
				goto done;
			if (ch == KEY_RESIZE) {
				pthread_mutex_lock(&scanner.lock);
				*scan = scanner.latest;
				pthread_mutex_unlock(&scanner.lock);
				draw(o, &cur, &v, h, scan);
			}
		}
		if (quit_signal)
			break;
		sf_snap_free(&prev);
		prev = cur;
		memset(&cur, 0, sizeof(cur));
		r = sf_read_mount(o->mnt, &cur);
		if (r < 0)
			break;
		sf_view_compute(&prev, &cur, &v);
		history_push(h, &v);
	}
done:
	endwin();
	scanner_stop(&scanner);
out_free:
	sf_snap_free(&prev);
	sf_snap_free(&cur);
	free(h);
	free(scan);
	return r;
}

/* ------------------------------------------------------------------ */
/* Main                                                               */

static void usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " [OPTIONS] MOUNTPOINT\n"
		   "\n"
		   "Live dashboard of a VirtuScale mount: pool occupancy (resident, dirty,\n"
		   "free), hit ratio and fault/eviction/write-back/FUSE rates as sparklines,\n"
		   "backing-store bandwidth, the backend in use and the most resident files.\n"
		   "Keys: q quits. The layout follows terminal resizes.\n"
		   "\n"
		   "The numbers come from MOUNTPOINT/.virtuscale/stats. The file list comes\n"
		   "from walking the mount every SCAN seconds in a background thread and\n"
		   "reading each regular file's user.virtuscale.residency xattr, at most MAX\n"
		   "files per walk. Cost per walk: a readdir per directory, a lookup per\n"
		   "uncached entry and a getxattr per file (the daemon checks each page of\n"
		   "the file); these requests show in the dashboard's own fuse ops/s. Use\n"
		   "-s 0 on huge trees, or a larger -s.\n"
		   "\n"
		   "When stdout is not a terminal (or with --text), prints a plain-text\n"
		   "snapshot every DELAY seconds instead, scanning in line.\n"
		   "\n"
		   "Options:\n"
		   "  -d, --delay=SECONDS      refresh interval (default 1)\n"
		   "  -n, --iterations=N       stop after N refreshes (default: until q)\n"
		   "  -s, --scan=SECONDS       file scan interval (default 5; 0 disables)\n"
		   "  -m, --max-files=MAX      files per scan at most (default 10000)\n"
		   "  -t, --text               plain-text snapshots even on a terminal\n"
		   "  -h, --help               this help\n"
		   "\n"
		   "Examples:\n"
		   "  " PROG " /mnt/vs\n"
		   "  " PROG " -d 0.5 -s 30 /mnt/vs          faster refresh, rarer file scan\n"
		   "  " PROG " -n 3 /mnt/vs > snapshot.txt   three text snapshots, a second apart\n"
		   "\n"
		   "Exit status: 0 ok, 1 runtime error (not a VirtuScale mount, stats file\n"
		   "unreadable, mount gone while running), 2 usage error.\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	    {"delay", required_argument, NULL, 'd'},
	    {"iterations", required_argument, NULL, 'n'},
	    {"scan", required_argument, NULL, 's'},
	    {"max-files", required_argument, NULL, 'm'},
	    {"text", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->delay = 1;
	o->scan_every = 5;
	o->max_files = 10000;
	while ((c = getopt_long(argc, argv, "d:n:s:m:th", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (sf_parse_interval(optarg, &o->delay) < 0) {
				fprintf(stderr, PROG ": --delay must be a positive number\n");
				goto bad;
			}
			break;
		case 'n':
			if (sf_parse_count(optarg, &o->iterations) < 0) {
				fprintf(stderr, PROG ": --iterations must be a positive integer\n");
				goto bad;
			}
			break;
		case 's':
			if (strcmp(optarg, "0") == 0)
				o->scan_every = 0;
			else if (sf_parse_interval(optarg, &o->scan_every) < 0) {
				fprintf(stderr, PROG ": --scan must be a number of seconds\n");
				goto bad;
			}
			break;
		case 'm':
			if (sf_parse_count(optarg, &o->max_files) < 0) {
				fprintf(stderr, PROG ": --max-files must be a positive integer\n");
				goto bad;
			}
			break;
		case 't':
			o->text = true;
			break;
		case 'h':
			usage(stdout);
			exit(SF_EXIT_OK);
		default:
			goto bad;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, PROG ": expected one MOUNTPOINT\n");
		goto bad;
	}
	o->mnt = argv[optind];
	return 0;
bad:
	fprintf(stderr, "Try '" PROG " --help'.\n");
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct opts o;
	int r;

	setlocale(LC_ALL, "");
	if (parse_args(argc, argv, &o) < 0)
		return SF_EXIT_USAGE;
	r = sf_check_mount(o.mnt);
	if (r < 0) {
		sf_mount_error(PROG, o.mnt, r);
		return SF_EXIT_RUNTIME;
	}
	if (o.text || !isatty(STDOUT_FILENO))
		r = run_text(&o);
	else
		r = run_curses(&o);
	if (r == -EIO && ferror(stdout)) {
		fprintf(stderr, PROG ": write error\n");
		return SF_EXIT_RUNTIME;
	}
	if (r < 0) {
		sf_mount_error(PROG, o.mnt, r);
		return SF_EXIT_RUNTIME;
	}
	return SF_EXIT_OK;
}
