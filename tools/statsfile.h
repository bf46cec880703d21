/*
 * statsfile.h - reading MOUNTPOINT/.virtuscale/stats for vsstat, vsctl and
 * vstop.
 *
 * The daemon writes the file in the Prometheus text exposition format:
 *
 *	# HELP virtuscale_pool_loads_total Pages read into the pool.
 *	# TYPE virtuscale_pool_loads_total counter
 *	virtuscale_pool_loads_total 1234
 *	virtuscale_fuse_requests_total{op="read"} 99
 *	virtuscale_backend_info{backend="madvise"} 1
 *
 * sf_parse() turns such text into a snapshot (a flat list of samples);
 * sf_view_compute() turns two snapshots into the rates and levels the tools
 * print.  The tools read nothing else of the daemon, so whatever they show can
 * be checked against `cat MOUNTPOINT/.virtuscale/stats`.
 *
 * Errors: int functions return 0 or a negative errno.
 */
#ifndef VS_TOOLS_STATSFILE_H
#define VS_TOOLS_STATSFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes shared by the tools (documented in each --help). */
#define SF_EXIT_OK	0
#define SF_EXIT_RUNTIME 1
#define SF_EXIT_USAGE	2

/* Pool and file pages are this large (the residency xattr counts them). */
#define SF_PAGE_SIZE 4096

#define SF_CTL_DIR	   ".virtuscale"
#define SF_STATS_NAME	   "stats"
#define SF_CONTROL_NAME	   "control"
#define SF_STATS_REL	   SF_CTL_DIR "/" SF_STATS_NAME
#define SF_CONTROL_REL	   SF_CTL_DIR "/" SF_CONTROL_NAME
#define SF_RESIDENCY_XATTR "user.virtuscale.residency"

/* Refuse stats files larger than this: the daemon's is a few KiB, and a
 * bound keeps a wrong path (a huge regular file) from being slurped. */
#define SF_STATS_MAX (4u << 20)

struct sf_sample {
	const char *name;   /* metric name, e.g. "virtuscale_pool_loads_total" */
	const char *labels; /* text between the braces ("" if none), as written */
	double value;
};

struct sf_snap {
	struct sf_sample *v;
	size_t n, cap;
	char *text;	 /* owned copy of the parsed text; samples point into it */
	double mono;	 /* CLOCK_MONOTONIC seconds when the file was read */
	double realtime; /* CLOCK_REALTIME seconds when the file was read */
};

/*
 * Parse @len bytes of exposition text into @ret (which must be zeroed or
 * freed before).  Comment and blank lines are skipped; a sample line that is
 * not name[{labels}] value [timestamp] fails the whole parse.
 * Errors: -EBADMSG (malformed line), -ENOMEM.  On error @ret is left empty.
 */
int sf_parse(const char *text, size_t len, struct sf_snap *ret);

/* Free a snapshot (NULL or zeroed is fine) and zero it. */
void sf_snap_free(struct sf_snap *snap);

/*
 * Read and parse MOUNTPOINT/.virtuscale/stats into @ret, stamping the clock
 * readings.  Errors: those of sf_ctl_open() and sf_ctl_open_file() when
 * @mnt is not a VirtuScale mount (or does not exist), -EFBIG, read errors,
 * sf_parse() errors.
 */
int sf_read_mount(const char *mnt, struct sf_snap *ret);

/*
 * Open the control directory MNT/.virtuscale of the VirtuScale mount @mnt,
 * after checking that it is one: @mnt is the root of a mount (not a
 * directory inside one), the mount is FUSE (statfs f_type) of type
 * fuse.virtuscale in /proc/self/mountinfo, and .virtuscale is a directory on
 * the same device, not a symlink.  A directory a user made to look like a
 * mount does not pass.  Returns the directory's fd (O_CLOEXEC) or
 * -ENOENT/-ENOTDIR/-EACCES (the path), -ENOTCONN (the daemon is gone),
 * -EMEDIUMTYPE (another filesystem), -EXDEV (inside a mount, not its root),
 * -ELOOP/-EBADFD (.virtuscale is not the daemon's).
 */
int sf_ctl_open(const char *mnt);

/*
 * Open @name ("stats", "control") in the control directory @ctl with
 * @flags (O_RDONLY, O_WRONLY), never following a symlink, never as a
 * controlling terminal, never blocking on a FIFO; a file that is not
 * regular or not on @ctl's device is refused (-EBADFD).  Returns the fd or
 * a negative errno (-ELOOP: a symlink).
 */
int sf_ctl_open_file(int ctl, const char *name, int flags);

/*
 * Check that @mnt is a VirtuScale mount (sf_ctl_open) whose stats file
 * opens.  Returns 0, or a negative errno after which sf_mount_error()
 * prints a useful line.
 */
int sf_check_mount(const char *mnt);

/* Print "PROG: MNT: <why>" to stderr for an error from sf_ctl_open(),
 * sf_check_mount() or sf_read_mount(). */
void sf_mount_error(const char *prog, const char *mnt, int err);

/*
 * The first sample called @name whose label set contains every pair of
 * @match (a label text like `op="read"`; NULL or "" matches any).
 */
const struct sf_sample *sf_find(const struct sf_snap *snap, const char *name, const char *match);

/* Sum of every sample called @name (all label sets); @ret_found says if any
 * existed (may be NULL). */
double sf_sum(const struct sf_snap *snap, const char *name, bool *ret_found);

/*
 * Copy the (unescaped) value of label @key in the label text @labels into
 * @buf.  Errors: -ENOENT (no such label), -EBADMSG, -ENAMETOOLONG (the value
 * did not fit; @buf holds a truncated copy).
 */
int sf_label_get(const char *labels, const char *key, char *buf, size_t cap);

/*
 * What the tools show, derived from the stats file.  Rates are per second
 * over the interval between two snapshots; without an earlier snapshot they
 * are averages since mount when the daemon exports its uptime, else NaN.
 * Anything the daemon does not export is NaN (levels) or NaN (rates), so a
 * tool prints "-" rather than a made-up zero.
 */
struct sf_view {
	double interval;  /* seconds the rates cover; NaN if no rates */
	bool since_mount; /* rates are averages since mount */

	double loads;	   /* pages read into the pool, per second */
	double hits;	   /* pool hits, per second */
	double hit_ratio;  /* hits / (hits + loads) over the interval, 0..1 */
	double evictions;  /* pages evicted, per second */
	double writebacks; /* pages written back, per second */
	double read_bps;   /* bytes/s read from the backing store */
	double write_bps;  /* bytes/s written to the backing store */
	double fuse_ops;   /* FUSE requests/s, all ops */

	double capacity; /* pool capacity, pages */
	double resident; /* resident pages */
	double dirty;	 /* dirty resident pages */
	double free;	 /* pool frames not holding a page */

	char backend[32]; /* "madvise", "exmap", or "" if unknown */

	/* Page-fault latency quantiles in seconds over the interval (since
	 * mount for the first report), from the daemon's histogram; NaN when
	 * no page was read from the store or the daemon has no histogram. */
	double fault_p50, fault_p99;
};

/*
 * Compute @ret from @cur and the earlier snapshot @prev (NULL for the first
 * report: averages since mount if possible).  A counter that went down (the
 * daemon restarted between snapshots) counts from zero, as Prometheus's
 * rate() does.  Never fails.
 */
void sf_view_compute(const struct sf_snap *prev, const struct sf_snap *cur, struct sf_view *ret);

/*
 * The raw counter delta behind one rate of sf_view (for tests and JSON):
 * @name is one of the metric names in sf_metric_names.
 */
double sf_counter_delta(const struct sf_snap *prev, const struct sf_snap *cur, const char *name);

/* Metric names the view is built from (see statsfile.c for the table). */
struct sf_metric_names {
	const char *loads, *hits, *evictions, *writebacks, *read_bytes, *write_bytes;
	const char *fuse_requests, *uptime;
	const char *capacity, *resident, *dirty, *free_frames, *backend_info;
	const char *fault_seconds, *evict_seconds; /* histograms (base names) */
};
extern const struct sf_metric_names sf_names;

/*
 * The @q quantile (0..1) of the Prometheus histogram @name (the base name:
 * its samples are @name_bucket{le="..."}) over what was observed between
 * @prev and @cur (@prev NULL: everything in @cur), computed the way
 * Prometheus's histogram_quantile() does: linear interpolation inside the
 * bucket holding the rank, the lowest bucket starting at 0, and the last
 * finite bound when the rank falls in +Inf.  A histogram that went down
 * (daemon restarted) counts from zero.  NaN when there is no such histogram,
 * it has no +Inf bucket, or nothing was observed.
 */
double sf_hist_quantile(const struct sf_snap *prev, const struct sf_snap *cur, const char *name,
			double q);

/*
 * Parse the residency xattr value "RESIDENT TOTAL" (pages, decimal,
 * optional trailing newline/NUL).  Errors: -EBADMSG, -ERANGE (resident >
 * total is tolerated: pages appended while counting, clamped; overflow is
 * not).
 */
int sf_residency_parse(const char *value, size_t len, uint64_t *ret_resident, uint64_t *ret_total);

/*
 * Read the residency of the file at @path.  Errors: -ENODATA/-ENOTSUP (not a
 * VirtuScale file), -EISDIR, getxattr/stat errors, sf_residency_parse().
 */
int sf_residency_get(const char *path, uint64_t *ret_resident, uint64_t *ret_total);

/* Format @bytes as "12.3M" style (powers of 1024) into @buf. */
void sf_human_bytes(double bytes, char *buf, size_t cap);

/* Seconds from CLOCK_MONOTONIC / CLOCK_REALTIME. */
double sf_now_mono(void);
double sf_now_real(void);

/* Parse a positive decimal interval in seconds ("1", "0.5"); -EINVAL. */
int sf_parse_interval(const char *s, double *ret);

/* Parse a positive count; -EINVAL. */
int sf_parse_count(const char *s, unsigned long *ret);

#endif
