/*
 * statsfile.c - parse the stats exposition file, derive rates, read the
 * residency xattr.  See statsfile.h.
 */
#include "tools/statsfile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/*
 * The metric names the daemon exports (fs/stats.c).  Kept in one table so a
 * rename there is a one-line change here; the unit test feeds these names.
 */
const struct sf_metric_names sf_names = {
    .loads = "virtuscale_pool_loads_total",
    .hits = "virtuscale_pool_hits_total",
    .evictions = "virtuscale_pool_evictions_total",
    .writebacks = "virtuscale_pool_writebacks_total",
    .read_bytes = "virtuscale_store_read_bytes_total",
    .write_bytes = "virtuscale_store_written_bytes_total",
    .fuse_requests = "virtuscale_fuse_requests_total",
    .uptime = "virtuscale_uptime_seconds",
    .capacity = "virtuscale_pool_capacity_pages",
    .resident = "virtuscale_pool_resident_pages",
    .dirty = "virtuscale_pool_dirty_pages",
    .free_frames = "virtuscale_pool_free_pages",
    .backend_info = "virtuscale_backend_info",
    .fault_seconds = "virtuscale_page_fault_seconds",
    .evict_seconds = "virtuscale_evict_batch_seconds",
};

double sf_now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double sf_now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void sf_snap_free(struct sf_snap *snap)
{
	if (!snap)
		return;
	free(snap->v);
	free(snap->text);
	memset(snap, 0, sizeof(*snap));
}

static bool is_name_start(int c)
{
	return isalpha(c) || c == '_' || c == ':';
}

static bool is_name_char(int c)
{
	return isalnum(c) || c == '_' || c == ':';
}

static char *skip_blank(char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/*
 * Check a label set starting just after '{' and return the position of the
 * closing '}', or NULL if the text is not name="value"{,name="value"}[,].
 * Label values may hold any byte but an unescaped quote, including '}' and
 * ',', which is why a plain strchr(p, '}') would not do.
 */
static char *scan_labels(char *p)
{
	for (;;) {
		p = skip_blank(p);
		if (*p == '}')
			return p;
		if (!is_name_start((unsigned char)*p) || *p == ':')
			return NULL;
		while (is_name_char((unsigned char)*p) && *p != ':')
			p++;
		p = skip_blank(p);
		if (*p++ != '=')
			return NULL;
		p = skip_blank(p);
		if (*p++ != '"')
			return NULL;
		while (*p != '"') {
			if (*p == '\0')
				return NULL;
			if (*p == '\\') {
				p++;
				if (*p != '\\' && *p != '"' && *p != 'n')
					return NULL;
			}
			p++;
		}
		p = skip_blank(p + 1);
		if (*p == ',')
			p++;
		else if (*p != '}')
			return NULL;
	}
}

/* strtod() but only for the value forms the format allows: decimal or hex
 * floats, NaN, +Inf, -Inf; no leading blanks (already skipped). */
static int parse_value(char *p, char **ret_end, double *ret)
{
	char *end;
	double v;

	if (*p == '\0' || isspace((unsigned char)*p))
		return -EBADMSG;
	errno = 0;
	v = strtod(p, &end);
	if (end == p)
		return -EBADMSG;
	/* Overflow to +-HUGE_VAL is acceptable for display; underflow too. */
	*ret_end = end;
	*ret = v;
	return 0;
}

/* Parse one line (NUL-terminated, modified in place); 1 if it produced a
 * sample in @ret, 0 if it was a comment or blank, -EBADMSG. */
static int parse_line(char *line, struct sf_sample *ret)
{
	char *p = skip_blank(line), *name, *labels = "", *end;
	double v;
	int r;

	if (*p == '\0' || *p == '#')
		return 0;
	if (!is_name_start((unsigned char)*p))
		return -EBADMSG;
	name = p;
	while (is_name_char((unsigned char)*p))
		p++;
	end = p;
	p = skip_blank(p);
	if (*p == '{') {
		char *close = scan_labels(p + 1);

		if (!close)
			return -EBADMSG;
		labels = p + 1;
		*close = '\0';
		p = skip_blank(close + 1);
	} else if (p == end) {
		return -EBADMSG; /* name runs into garbage, e.g. "a-b 1" */
	}
	*end = '\0';
	r = parse_value(p, &p, &v);
	if (r < 0)
		return r;
	if (*p != '\0' && *p != ' ' && *p != '\t')
		return -EBADMSG;
	p = skip_blank(p);
	if (*p != '\0') {
		/* Optional timestamp in milliseconds: an integer, ignored. */
		if (*p == '-' || *p == '+')
			p++;
		if (!isdigit((unsigned char)*p))
			return -EBADMSG;
		while (isdigit((unsigned char)*p))
			p++;
		if (*skip_blank(p) != '\0')
			return -EBADMSG;
	}
	ret->name = name;
	ret->labels = labels;
	ret->value = v;
	return 1;
}

int sf_parse(const char *text, size_t len, struct sf_snap *ret)
{
	struct sf_snap s = {0};
	char *p, *next;
	int r;

	s.text = malloc(len + 1);
	if (!s.text)
		return -ENOMEM;
	memcpy(s.text, text, len);
	s.text[len] = '\0';
	if (memchr(s.text, '\0', len)) {
		free(s.text);
		return -EBADMSG;
	}
	for (p = s.text; p && *p; p = next) {
		struct sf_sample sample;
		size_t l;

		next = strchr(p, '\n');
		if (next)
			*next++ = '\0';
		l = strlen(p);
		if (l && p[l - 1] == '\r')
			p[l - 1] = '\0';
		r = parse_line(p, &sample);
		if (r < 0)
			goto fail;
		if (r == 0)
			continue;
		if (s.n == s.cap) {
			size_t cap = s.cap ? s.cap * 2 : 64;
			struct sf_sample *v = realloc(s.v, cap * sizeof(*v));

			if (!v) {
				r = -ENOMEM;
				goto fail;
			}
			s.v = v;
			s.cap = cap;
		}
		s.v[s.n++] = sample;
	}
	*ret = s;
	return 0;
fail:
	sf_snap_free(&s);
	return r;
}

/* ------------------------------------------------------------------ */
/* Is this a VirtuScale mount?                                        */

/*
 * The tools run as root and write to MOUNTPOINT/.virtuscale/control, so a
 * directory that merely holds files with those names must not pass: anyone
 * can make one, with `control` a symlink to a file of root's.  A mount
 * passes when the directory is the root of a mount (not a directory inside
 * one: a user may create .virtuscale there), that mount is a FUSE
 * filesystem of type fuse.virtuscale in /proc/self/mountinfo, and the
 * control directory and its files are on the same device, opened without
 * following symlinks.
 *
 * Tests build a copy of this file with SF_TEST_PLAIN_DIRS to feed the tools
 * hand-written stats files from a plain directory; the installed tools
 * never accept one.
 */
#ifdef SF_TEST_PLAIN_DIRS
static int check_vs_root(int dir)
{
	(void)dir;
	return 0;
}
#else
#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

/* The id of the mount @fd is on, from /proc/self/fdinfo (Linux 3.15+). */
static int fd_mnt_id(int fd, long *ret)
{
	char path[64], line[256];
	FILE *f;
	int r = -ENOENT;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "mnt_id: %ld", ret) == 1) {
			r = 0;
			break;
		}
	fclose(f);
	return r;
}

/* Type and root of mount @id, from /proc/self/mountinfo:
 *   ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER */
static int mountinfo_find(long id, char *type, size_t tcap, char *root, size_t rcap)
{
	char *line = NULL;
	size_t cap = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *tok = strtok_r(line, " ", &save);
		char *fields[4] = {0};
		unsigned i;

		if (!tok || strtol(tok, NULL, 10) != id)
			continue;
		for (i = 0; i < 4 && (tok = strtok_r(NULL, " ", &save)); i++)
			fields[i] = tok; /* parent, maj:min, root, mountpoint */
		while (tok && strcmp(tok, "-") != 0)
			tok = strtok_r(NULL, " ", &save);
		tok = tok ? strtok_r(NULL, " ", &save) : NULL;
		if (i == 4 && tok) {
			snprintf(type, tcap, "%s", tok);
			snprintf(root, rcap, "%s", fields[2]);
			r = 0;
		}
		break;
	}
	free(line);
	fclose(f);
	return r;
}

static bool is_vs_type(const char *type)
{
	return strcmp(type, "fuse.virtuscale") == 0 || strcmp(type, "fuseblk.virtuscale") == 0;
}

/* 0 if @dir is the root of a VirtuScale mount, else -EMEDIUMTYPE (another
 * filesystem) or -EXDEV (a directory inside one, or a bind mount of one). */
static int check_vs_root(int dir)
{
	char type[64], root[16];
	struct statfs sfs;
	long id, parent_id;
	int up, r;

	if (fstatfs(dir, &sfs) != 0)
		return -errno;
	if (sfs.f_type != FUSE_SUPER_MAGIC)
		return -EMEDIUMTYPE;
	r = fd_mnt_id(dir, &id);
	if (r < 0)
		return r;
	/* A mount root's ".." is on the parent mount. */
	up = openat(dir, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (up < 0)
		return -errno;
	r = fd_mnt_id(up, &parent_id);
	close(up);
	if (r < 0)
		return r;
	if (parent_id == id)
		return -EXDEV;
	r = mountinfo_find(id, type, sizeof(type), root, sizeof(root));
	if (r < 0)
		return r;
	if (!is_vs_type(type))
		return -EMEDIUMTYPE;
	if (strcmp(root, "/") != 0)
		return -EXDEV;
	return 0;
}
#endif /* SF_TEST_PLAIN_DIRS */

int sf_ctl_open(const char *mnt)
{
	struct stat dst, cst;
	int dir, ctl, r;

	dir = open(mnt, O_RDONLY | O_DIRECTORY | O_NOCTTY | O_CLOEXEC);
	if (dir < 0)
		return -errno;
	r = check_vs_root(dir);
	if (r < 0)
		goto out;
	ctl = openat(dir, SF_CTL_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (ctl < 0) {
		/* ENOTDIR: a file or a symlink where the directory should be */
		r = errno == ENOTDIR || errno == ELOOP ? -ELOOP : -errno;
		goto out;
	}
	if (fstat(dir, &dst) != 0 || fstat(ctl, &cst) != 0) {
		r = -errno;
		close(ctl);
		goto out;
	}
	if (dst.st_dev != cst.st_dev) {
		close(ctl);
		r = -EBADFD;
		goto out;
	}
	r = ctl;
out:
	close(dir);
	return r;
}

int sf_ctl_open_file(int ctl, const char *name, int flags)
{
	struct stat cst, st;
	int fd, r;

	/* O_NONBLOCK: a FIFO in its place must not hang the open. */
	fd = openat(ctl, name, flags | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) /* ENXIO: a FIFO nobody reads */
		return errno == ENXIO ? -EBADFD : -errno;
	if (fstat(ctl, &cst) != 0 || fstat(fd, &st) != 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_dev != cst.st_dev) {
		r = -EBADFD;
		goto fail;
	}
	r = fcntl(fd, F_GETFL);
	if (r < 0 || fcntl(fd, F_SETFL, (r & ~O_NONBLOCK) | (flags & O_NONBLOCK)) != 0) {
		r = -errno;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return r;
}

int sf_check_mount(const char *mnt)
{
	int ctl, fd;

	ctl = sf_ctl_open(mnt);
	if (ctl < 0)
		return ctl;
	fd = sf_ctl_open_file(ctl, SF_STATS_NAME, O_RDONLY);
	close(ctl);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

void sf_mount_error(const char *prog, const char *mnt, int err)
{
	struct stat st;

	if (err == -ENOENT && stat(mnt, &st) == 0)
		fprintf(stderr,
			"%s: %s: not a VirtuScale mount (no %s there; is the daemon running?)\n",
			prog, mnt, SF_STATS_REL);
	else if (err == -EMEDIUMTYPE)
		fprintf(stderr,
			"%s: %s: not a VirtuScale mount (the filesystem there is not "
			"fuse.virtuscale; is the daemon running?)\n",
			prog, mnt);
	else if (err == -EXDEV)
		fprintf(stderr,
			"%s: %s: not a VirtuScale mount point (a directory inside a mount, or a "
			"bind mount of one): give the mount point itself\n",
			prog, mnt);
	else if (err == -ELOOP || err == -EBADFD)
		fprintf(stderr,
			"%s: %s: refusing %s: not the daemon's files (a symbolic link, not a "
			"regular file, or on another filesystem)\n",
			prog, mnt, SF_CTL_DIR);
	else if (err == -ENOTDIR)
		fprintf(stderr, "%s: %s: not a directory (expected a VirtuScale mountpoint)\n",
			prog, mnt);
	else if (err == -ENOTCONN)
		fprintf(stderr, "%s: %s: mount is dead (daemon gone?): %s\n", prog, mnt,
			strerror(-err));
	else if (err == -EBADMSG)
		fprintf(stderr, "%s: %s/%s: malformed stats file\n", prog, mnt, SF_STATS_REL);
	else
		fprintf(stderr, "%s: %s: %s\n", prog, mnt, strerror(-err));
}

int sf_read_mount(const char *mnt, struct sf_snap *ret)
{
	size_t cap = 16384, len = 0;
	char *buf;
	int ctl, fd, r;

	ctl = sf_ctl_open(mnt);
	if (ctl < 0)
		return ctl;
	fd = sf_ctl_open_file(ctl, SF_STATS_NAME, O_RDONLY);
	close(ctl);
	if (fd < 0)
		return fd;
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	/* The daemon serves the file direct_io and regenerates it on open, so
	 * read to EOF in one open rather than trusting st_size. */
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *b;

			if (cap >= SF_STATS_MAX) {
				r = -EFBIG;
				goto out;
			}
			b = realloc(buf, cap * 2);
			if (!b) {
				r = -ENOMEM;
				goto out;
			}
			buf = b;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += n;
	}
	r = sf_parse(buf, len, ret);
	if (r == 0) {
		ret->mono = sf_now_mono();
		ret->realtime = sf_now_real();
	}
out:
	free(buf);
	close(fd);
	return r;
}

/*
 * Unescape the quoted value starting at @p (just after the opening quote)
 * into @buf; returns the position after the closing quote, or NULL.
 * @ret_trunc is set when @buf was too small.
 */
static const char *copy_value(const char *p, char *buf, size_t cap, bool *ret_trunc)
{
	size_t o = 0;

	*ret_trunc = false;
	while (*p != '"') {
		char c = *p;

		if (c == '\0')
			return NULL;
		if (c == '\\') {
			p++;
			if (*p == 'n')
				c = '\n';
			else if (*p == '\\' || *p == '"')
				c = *p;
			else
				return NULL;
		}
		if (buf && o + 1 < cap)
			buf[o++] = c;
		else
			*ret_trunc = true;
		p++;
	}
	if (buf && cap)
		buf[o] = '\0';
	return p + 1;
}

int sf_label_get(const char *labels, const char *key, char *buf, size_t cap)
{
	const char *p = labels;
	size_t klen = strlen(key);

	if (!p)
		return -ENOENT;
	for (;;) {
		const char *name;
		size_t nlen;
		bool trunc;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			return -ENOENT;
		name = p;
		while (is_name_char((unsigned char)*p))
			p++;
		nlen = p - name;
		while (*p == ' ' || *p == '\t')
			p++;
		if (nlen == 0 || *p++ != '=')
			return -EBADMSG;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p++ != '"')
			return -EBADMSG;
		if (nlen == klen && memcmp(name, key, klen) == 0) {
			if (!copy_value(p, buf, cap, &trunc))
				return -EBADMSG;
			return trunc ? -ENAMETOOLONG : 0;
		}
		p = copy_value(p, NULL, 0, &trunc);
		if (!p)
			return -EBADMSG;
	}
}

/* Does the label text @have contain every name="value" pair of @match? */
static bool labels_match(const char *have, const char *match)
{
	const char *p = match;

	if (!match || !*match)
		return true;
	for (;;) {
		char key[128], want[256], got[256];
		const char *name;
		size_t nlen;
		bool trunc;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			return true;
		name = p;
		while (is_name_char((unsigned char)*p))
			p++;
		nlen = p - name;
		if (nlen == 0 || nlen >= sizeof(key) || *p++ != '=' || *p++ != '"')
			return false;
		memcpy(key, name, nlen);
		key[nlen] = '\0';
		p = copy_value(p, want, sizeof(want), &trunc);
		if (!p || trunc)
			return false;
		if (sf_label_get(have, key, got, sizeof(got)) != 0 || strcmp(got, want) != 0)
			return false;
	}
}

const struct sf_sample *sf_find(const struct sf_snap *snap, const char *name, const char *match)
{
	size_t i;

	if (!snap || !name)
		return NULL;
	for (i = 0; i < snap->n; i++)
		if (strcmp(snap->v[i].name, name) == 0 && labels_match(snap->v[i].labels, match))
			return &snap->v[i];
	return NULL;
}

double sf_sum(const struct sf_snap *snap, const char *name, bool *ret_found)
{
	double sum = 0;
	bool found = false;
	size_t i;

	for (i = 0; snap && name && i < snap->n; i++) {
		if (strcmp(snap->v[i].name, name) == 0) {
			sum += snap->v[i].value;
			found = true;
		}
	}
	if (ret_found)
		*ret_found = found;
	return sum;
}

/* A level (gauge) or NaN when the daemon does not export it. */
static double level(const struct sf_snap *snap, const char *name)
{
	bool found;
	double v = sf_sum(snap, name, &found);

	return found ? v : NAN;
}

double sf_counter_delta(const struct sf_snap *prev, const struct sf_snap *cur, const char *name)
{
	bool found_cur, found_prev;
	double c = sf_sum(cur, name, &found_cur);
	double p = prev ? sf_sum(prev, name, &found_prev) : 0;

	if (!found_cur)
		return NAN;
	if (!prev || !found_prev)
		return c;
	/* A counter that went backwards was reset (daemon restarted on the same
	 * mountpoint): what we saw since is the new value itself. */
	return c >= p ? c - p : c;
}

/* Buckets of one histogram: upper bounds ascending, cumulative counts. */
#define HIST_MAX 128

struct hist {
	size_t n;
	double le[HIST_MAX], cum[HIST_MAX];
};

static void hist_read(const struct sf_snap *snap, const char *name, struct hist *h)
{
	char bucket[256], val[64];
	size_t i;

	h->n = 0;
	if (!snap || (size_t)snprintf(bucket, sizeof(bucket), "%s_bucket", name) >= sizeof(bucket))
		return;
	for (i = 0; i < snap->n && h->n < HIST_MAX; i++) {
		double le;
		char *end;
		size_t j;

		if (strcmp(snap->v[i].name, bucket) != 0 ||
		    sf_label_get(snap->v[i].labels, "le", val, sizeof(val)) != 0)
			continue;
		le = strtod(val, &end);
		if (end == val || *end || isnan(le))
			continue;
		/* Insertion by bound: the daemon writes them in order, but a
		 * scraper's file need not be. */
		for (j = h->n; j > 0 && h->le[j - 1] > le; j--) {
			h->le[j] = h->le[j - 1];
			h->cum[j] = h->cum[j - 1];
		}
		h->le[j] = le;
		h->cum[j] = snap->v[i].value;
		h->n++;
	}
}

double sf_hist_quantile(const struct sf_snap *prev, const struct sf_snap *cur, const char *name,
			double q)
{
	struct hist c, p;
	double rank, lo, below;
	size_t i;

	hist_read(cur, name, &c);
	if (c.n == 0 || !isinf(c.le[c.n - 1]) || isnan(q))
		return NAN;
	hist_read(prev, name, &p);
	/* Subtract the earlier counts bucket by bucket, unless the histogram
	 * was reset in between (or its bounds changed): then it is new. */
	if (p.n == c.n && p.cum[p.n - 1] <= c.cum[c.n - 1]) {
		for (i = 0; i < c.n && p.le[i] == c.le[i]; i++)
			;
		if (i == c.n)
			for (i = 0; i < c.n; i++)
				c.cum[i] -= p.cum[i];
	}
	if (!(c.cum[c.n - 1] > 0))
		return NAN;
	q = q < 0 ? 0 : q > 1 ? 1 : q;
	rank = q * c.cum[c.n - 1];
	for (i = 0; i < c.n - 1 && c.cum[i] < rank; i++)
		;
	if (i == c.n - 1) /* in +Inf: the highest finite bound is all we know */
		return c.n >= 2 ? c.le[c.n - 2] : NAN;
	lo = i ? c.le[i - 1] : (c.le[0] > 0 ? 0 : c.le[0]);
	below = i ? c.cum[i - 1] : 0;
	if (!(c.cum[i] > below))
		return c.le[i];
	return lo + (c.le[i] - lo) * (rank - below) / (c.cum[i] - below);
}

void sf_view_compute(const struct sf_snap *prev, const struct sf_snap *cur, struct sf_view *ret)
{
	const struct sf_metric_names *m = &sf_names;
	const struct sf_sample *backend;
	double dt = NAN;
	double d_hits, d_loads;

	memset(ret, 0, sizeof(*ret));
	if (prev) {
		dt = cur->mono - prev->mono;
		/* Two reads in the same clock tick: no rate rather than inf. */
		if (!(dt > 0))
			dt = NAN;
	} else {
		double up = level(cur, m->uptime);

		if (up > 0) {
			dt = up;
			ret->since_mount = true;
		}
	}
	ret->interval = dt;

	d_loads = sf_counter_delta(prev, cur, m->loads);
	d_hits = sf_counter_delta(prev, cur, m->hits);
	ret->loads = d_loads / dt;
	ret->hits = d_hits / dt;
	ret->evictions = sf_counter_delta(prev, cur, m->evictions) / dt;
	ret->writebacks = sf_counter_delta(prev, cur, m->writebacks) / dt;
	ret->read_bps = sf_counter_delta(prev, cur, m->read_bytes) / dt;
	ret->write_bps = sf_counter_delta(prev, cur, m->write_bytes) / dt;
	ret->fuse_ops = sf_counter_delta(prev, cur, m->fuse_requests) / dt;
	/* The ratio needs no interval: it is defined whenever anything was
	 * fixed, including for the since-mount line without an uptime. */
	ret->hit_ratio = d_hits + d_loads > 0 ? d_hits / (d_hits + d_loads) : NAN;

	ret->capacity = level(cur, m->capacity);
	ret->resident = level(cur, m->resident);
	ret->dirty = level(cur, m->dirty);
	/* Older daemons had no free gauge; it is capacity - resident. */
	ret->free = level(cur, m->free_frames);
	if (isnan(ret->free))
		ret->free = ret->capacity - ret->resident;
	if (ret->free < 0)
		ret->free = 0;

	ret->fault_p50 = sf_hist_quantile(prev, cur, m->fault_seconds, 0.5);
	ret->fault_p99 = sf_hist_quantile(prev, cur, m->fault_seconds, 0.99);

	backend = sf_find(cur, m->backend_info, NULL);
	if (backend && sf_label_get(backend->labels, "backend", ret->backend,
				    sizeof(ret->backend)) == -EBADMSG)
		ret->backend[0] = '\0';
}

int sf_residency_parse(const char *value, size_t len, uint64_t *ret_resident, uint64_t *ret_total)
{
	char buf[64], *p, *end;
	unsigned long long res, total;

	/* getxattr values are not NUL-terminated; tolerate a trailing NUL or
	 * newline from a daemon that includes one. */
	while (len && (value[len - 1] == '\0' || value[len - 1] == '\n'))
		len--;
	if (len == 0 || len >= sizeof(buf))
		return -EBADMSG;
	memcpy(buf, value, len);
	buf[len] = '\0';
	p = buf;
	if (!isdigit((unsigned char)*p))
		return -EBADMSG;
	errno = 0;
	res = strtoull(p, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (end == p || (*end != ' ' && *end != '\t'))
		return -EBADMSG;
	p = end;
	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char)*p))
		return -EBADMSG;
	total = strtoull(p, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end != '\0')
		return -EBADMSG;
	/* The two numbers are not one atomic snapshot of a file that is
	 * growing or shrinking; never report more than 100%. */
	*ret_resident = res > total ? total : res;
	*ret_total = total;
	return 0;
}

int sf_residency_get(const char *path, uint64_t *ret_resident, uint64_t *ret_total)
{
	char val[64];
	struct stat st;
	ssize_t n;

	if (stat(path, &st) != 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	n = getxattr(path, SF_RESIDENCY_XATTR, val, sizeof(val));
	if (n < 0)
		return errno == ERANGE ? -EBADMSG : -errno;
	return sf_residency_parse(val, n, ret_resident, ret_total);
}

void sf_human_bytes(double bytes, char *buf, size_t cap)
{
	static const char units[] = "BKMGTPE";
	unsigned u = 0;

	if (isnan(bytes)) {
		snprintf(buf, cap, "-");
		return;
	}
	while (bytes >= 1024 && u + 1 < sizeof(units) - 1) {
		bytes /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%.0f%c", bytes, units[u]);
	else
		snprintf(buf, cap, bytes < 10 ? "%.1f%c" : "%.0f%c", bytes, units[u]);
}

int sf_parse_interval(const char *s, double *ret)
{
	char *end;
	double v;

	if (!s || !*s || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end != '\0' || !(v > 0) || v > 86400 || isinf(v))
		return -EINVAL;
	*ret = v;
	return 0;
}

int sf_parse_count(const char *s, unsigned long *ret)
{
	char *end;
	unsigned long v;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end != '\0' || v == 0)
		return -EINVAL;
	*ret = v;
	return 0;
}
