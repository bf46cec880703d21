/*
 * vsbench: the engine workload program, shaped like vmcache's benchmark
 * driver (vmcache.cpp, Leis et al.) so that the two can run side by side
 * with the same environment and their CSV output can be concatenated.
 *
 * Environment (vmcache's names and defaults):
 *
 *   BLOCK     image path, regular file or block device     /tmp/bm
 *   VIRTGB    image size in GiB (fractions allowed)        16
 *   PHYSGB    pool size in GiB (fractions allowed)         4
 *   EXMAP     1: exmap backend or fail; 0: madvise backend 0
 *   BATCH     pages per eviction batch                     64
 *   RUNFOR    seconds of measurement                       30
 *   RNDREAD   1: random lookups; 0: TPC-C-like             0
 *   THREADS   worker threads                               1
 *   DATASIZE  RNDREAD=1: tuples (1e6 and 2e7 accepted);    10
 *             RNDREAD=0: warehouses
 *
 * and three of our own:
 *
 *   CLUSTER   eviction clustering: marked neighbours taken   32
 *             along with each victim, per side (dirty ones
 *             written in its run, clean ones dropped with it);
 *             0: none, as vmcache
 *   BTCHECK   1: after the load, run bt_check (a full pass    0
 *             over the tree) and print its shape; fail unless
 *             it holds exactly DATASIZE entries (RNDREAD=1)
 *   TPCCSCALE RNDREAD=0: divide the per-warehouse population  1
 *             (items, customers, orders) by this; only for
 *             quick tests, the result is not TPC-C
 *
 * and, for RNDREAD=1, a skewed key choice whose popular keys move:
 *
 *   ZIPF        Zipf skew of the lookups (0.9: the issue's; 0:    unset
 *               uniform, but through the same mapping and with
 *               the columns below); unset: uniform, as vmcache
 *   ZIPF_MOVE   seconds between moves of the hot set; 0: never    0
 *   ZIPF_SCATTER 0: rank r is key r + shift (the hot keys packed   0
 *               in the fewest leaves: page popularity is Zipf
 *               too, as in evsim's zipf traces); 1: key perm(r)
 *               + shift, perm a multiplicative bijection that
 *               puts consecutive ranks far apart (YCSB's
 *               scrambled Zipfian: the hot keys on as many
 *               leaves as there are of them)
 *
 * With ZIPF set each lookup draws a rank r in [0, DATASIZE) with
 * probability proportional to 1/(r+1)^ZIPF (rejection-inversion, Hoermann
 * and Derflinger 1996: O(1) time and memory for any DATASIZE) and looks up
 * key (perm(r) + shift) mod DATASIZE. The shift is 0 for the first
 * ZIPF_MOVE seconds and jumps to a new pseudo-random value at each move
 * (at the end of seconds ZIPF_MOVE - 1, 2 ZIPF_MOVE - 1, ...), so that
 * after a move the popular keys are other tuples on other pages. The CSV
 * line then has five more columns (workload "zipf"):
 *
 *   ...,batch,hit,loads,fixes,move,probation
 *
 * hit is the pool's hit ratio in that second, 1 - loads/fixes, where
 * loads are pages read from the image and fixes the page fixes (bm_stats
 * hits + loads: a fix that loaded its page counts as a load, not a hit);
 * move counts the moves made before
 * that second; probation is s3clock's adapted probation target in pages
 * (0 under the clock). When the engine records its eviction trace
 * (VS_EVICT_TRACE), vsbench appends a marker record (evsim.h) with id
 * s + 1 at the start of run second s (before that second's move), so
 * that evsim -w 0 can cut the replay at the same seconds. The workers'
 * records reach the file in buffers of 4,096 (BM_TRACE_RECS), so up to
 * that many accesses a thread can land past a marker, unless
 * VS_EVICT_TRACE_SYNC=1 has each written as it is made.
 *
 * RNDREAD=1 formats the image (everything on it is lost), loads DATASIZE
 * tuples (8-byte big-endian key i, 120-byte value starting with the key) on
 * THREADS threads, each a contiguous key range, reports the load rate on
 * stderr, then runs uniform random lookups on THREADS threads for RUNFOR
 * seconds. Every second one CSV line goes to stdout:
 *
 *   ts,tx,rmb,wmb,system,threads,datasize,workload,batch
 *
 * ts counts seconds from 0 (the line for the first second has ts 0, as in
 * vmcache), tx is lookups completed in that second, rmb/wmb are MB (2^20
 * bytes) read from / written to the image in that second. At the end of the
 * run (both workloads) lines on stderr give the pages written back and
 * the latency of the pool's slow paths during the run phase only
 * (bm_stats_get, bm_latency_get):
 *
 *   writebacks: N pages, M of them neighbours written early (CLUSTER)
 *   faults: N, p50 X µs, p99 Y µs, p99.9 Z µs
 *   evict batches: N (avg P pages), p50 X µs, p99 Y µs, p99.9 Z µs
 *
 * A fault is one page read from the image and checksummed; an eviction
 * batch is one clock batch end to end (selection, write-back, frame drop).
 * Percentiles come from log-linear buckets 25% wide (lat_hist.h).
 *
 * RNDREAD=0 formats the image, loads DATASIZE warehouses with the TPC-C
 * population (tpcc.h; items first, then the warehouses spread over THREADS
 * threads), reports the load on stderr, then runs the TPC-C transaction mix
 * on THREADS threads, thread i with home warehouse i % DATASIZE + 1, for
 * RUNFOR seconds: the same CSV with workload "tpcc" and tx the transactions
 * (all five kinds) completed in that second. At the end it runs the spec's
 * consistency checks and prints PASS or FAIL for each on stderr. Like
 * vmcache's, this TPC-C runs without transactions: every B-tree call is
 * atomic on its own (see tpcc.h).
 *
 * Exit status: 0 done, 1 bad environment, an engine error or a failed
 * consistency check.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/tpcc.h"
#include "engine/bm.h"
#include "engine/btree.h"
#include "engine/record.h"

#define KEY_SIZE    8u
#define VALUE_SIZE  120u
#define MAX_THREADS 1024u

struct config {
	const char *block;
	uint64_t virt_bytes;
	uint64_t phys_bytes;
	bool exmap;
	unsigned batch;
	unsigned cluster;
	unsigned runfor;
	bool rndread;
	unsigned threads;
	uint64_t datasize;
	bool btcheck;
	unsigned tpcc_scale;
	bool zipf;	    /* ZIPF set: skewed, moving key choice */
	double zipf_s;	    /* its skew */
	unsigned zipf_move; /* seconds between moves; 0: never */
	bool zipf_scatter;
};

/* ------------------------------------------------------------------ */
/* Environment                                                        */

static bool env_bad;

static void env_error(const char *name, const char *value, const char *why)
{
	fprintf(stderr, "vsbench: %s='%s': %s\n", name, value, why);
	env_bad = true;
}

/* A finite number >= @min (and <= @max), the whole string consumed;
 * "1e6" and "0.25" are fine. */
static double env_number(const char *name, double def, double min, double max)
{
	const char *s = getenv(name);
	if (!s)
		return def;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v)) {
		env_error(name, s, "not a number");
		return def;
	}
	if (v < min || v > max) {
		char why[96];
		snprintf(why, sizeof(why), "must be between %g and %g", min, max);
		env_error(name, s, why);
		return def;
	}
	return v;
}

/* A whole number in [min, max]: counts of threads, seconds, tuples. */
static uint64_t env_count(const char *name, uint64_t def, uint64_t min, uint64_t max)
{
	const char *s = getenv(name);
	double v = env_number(name, (double)def, (double)min, (double)max);
	if (s && v != floor(v)) {
		env_error(name, s, "must be a whole number");
		return def;
	}
	return (uint64_t)v;
}

static bool env_flag(const char *name)
{
	const char *s = getenv(name);
	if (!s)
		return false;
	if (strcmp(s, "0") && strcmp(s, "1")) {
		env_error(name, s, "must be 0 or 1");
		return false;
	}
	return s[0] == '1';
}

static int config_read(struct config *c)
{
	const double gib = 1024.0 * 1024 * 1024;
	c->block = getenv("BLOCK");
	if (!c->block)
		c->block = "/tmp/bm";
	if (!*c->block)
		env_error("BLOCK", c->block, "empty path");
	/* Sizes are rounded down to whole pages; bm_format and bm_open
	 * reject what is still too small, with their own message. */
	c->virt_bytes =
	    (uint64_t)(env_number("VIRTGB", 16, 0, 1 << 20) * gib) & ~(uint64_t)(BM_PAGE_SIZE - 1);
	c->phys_bytes =
	    (uint64_t)(env_number("PHYSGB", 4, 0, 1 << 20) * gib) & ~(uint64_t)(BM_PAGE_SIZE - 1);
	c->exmap = env_flag("EXMAP");
	c->batch = (unsigned)env_count("BATCH", 64, 1, 1 << 20);
	c->cluster = (unsigned)env_count("CLUSTER", 32, 0, 256);
	c->runfor = (unsigned)env_count("RUNFOR", 30, 1, 1u << 30);
	c->rndread = env_flag("RNDREAD");
	c->threads = (unsigned)env_count("THREADS", 1, 1, MAX_THREADS);
	c->datasize = env_count("DATASIZE", 10, 1, 1e15);
	c->btcheck = env_flag("BTCHECK");
	c->tpcc_scale = (unsigned)env_count("TPCCSCALE", 1, 1, 10000);
	c->zipf = getenv("ZIPF") != NULL;
	c->zipf_s = env_number("ZIPF", 0, 0, 10);
	c->zipf_move = (unsigned)env_count("ZIPF_MOVE", 0, 0, 1u << 30);
	c->zipf_scatter = env_flag("ZIPF_SCATTER");
	if (!env_bad && getenv("ZIPF_MOVE") && !c->zipf)
		env_error("ZIPF_MOVE", getenv("ZIPF_MOVE"), "only with ZIPF");
	if (!env_bad && getenv("ZIPF_SCATTER") && !c->zipf)
		env_error("ZIPF_SCATTER", getenv("ZIPF_SCATTER"), "only with ZIPF");
	if (!env_bad && c->zipf && !c->rndread)
		env_error("ZIPF", getenv("ZIPF"), "only with RNDREAD=1");
	if (!env_bad && !c->rndread && c->datasize > TPCC_MAX_WAREHOUSES)
		env_error("DATASIZE", getenv("DATASIZE"), "at most 65535 warehouses");
	if (!env_bad && c->virt_bytes == 0)
		env_error("VIRTGB", getenv("VIRTGB"), "rounds to zero pages");
	if (!env_bad && c->phys_bytes == 0)
		env_error("PHYSGB", getenv("PHYSGB"), "rounds to zero pages");
	return env_bad ? -EINVAL : 0;
}

/* ------------------------------------------------------------------ */
/* Workers                                                            */

static double clock_secs(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void)
{
	return clock_secs(CLOCK_MONOTONIC);
}

/* CPU time of the calling thread. On a shared machine the wall-clock rate
 * also measures the other tenants; the rate per CPU-second does not (short
 * of what they do to the caches), so the summaries print both. */
static double thread_cpu(void)
{
	return clock_secs(CLOCK_THREAD_CPUTIME_ID);
}

/* One per thread, on its own cache lines: the owner stores its count after
 * every lookup with a plain (relaxed) store, the reporter loads it once a
 * second. No shared read-modify-write on the lookup path. */
struct worker {
	_Alignas(128) _Atomic uint64_t done;
	struct bt tree;
	uint64_t begin, end; /* load: key range */
	uint64_t datasize;
	uint64_t seed;
	int err;
	uint64_t bad; /* lookups that failed or returned the wrong tuple */
	double cpu;   /* seconds of CPU the thread used in its phase */
	pthread_t tid;
	/* TPC-C: the database, and this thread's terminal (its index and
	 * the thread count say which warehouses it loads). */
	struct tpcc *db;
	struct tpcc_term term;
	unsigned index, nthreads;
};

static atomic_bool keep_running = true;

static void key_of(uint64_t i, uint8_t key[KEY_SIZE])
{
	struct rec_key k;
	rec_key_init(&k);
	rec_key_u64(&k, i);
	memcpy(key, k.buf, KEY_SIZE);
}

static void *load_thread(void *arg)
{
	struct worker *w = arg;
	uint8_t value[VALUE_SIZE];
	double cpu0 = thread_cpu();
	memset(value, 0, sizeof(value));
	for (uint64_t i = w->begin; i < w->end; i++) {
		key_of(i, value); /* the value starts with its key */
		int err = bt_insert(&w->tree, value, KEY_SIZE, value, VALUE_SIZE);
		if (err) {
			w->err = err;
			break;
		}
		atomic_store_explicit(&w->done, i - w->begin + 1, memory_order_relaxed);
	}
	w->cpu = thread_cpu() - cpu0;
	return NULL;
}

/* splitmix64, then Lemire's multiply-shift for a uniform index in [0, n):
 * a division per lookup would show in a profile at these rates. */
static uint64_t next_random(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* Look up key @i and check the tuple; false (w->err set) on an engine
 * error. */
static inline bool lookup_one(struct worker *w, uint64_t i)
{
	uint8_t key[KEY_SIZE], value[VALUE_SIZE];
	unsigned len = 0;
	key_of(i, key);
	int err = bt_lookup(&w->tree, key, KEY_SIZE, value, sizeof(value), &len);
	if (err || len != VALUE_SIZE || memcmp(key, value, KEY_SIZE)) {
		if (err && err != -ENOENT) {
			w->err = err;
			return false;
		}
		w->bad++;
	}
	return true;
}

static void *lookup_thread(void *arg)
{
	struct worker *w = arg;
	uint64_t seed = w->seed, count = 0;
	double cpu0 = thread_cpu();
	while (atomic_load_explicit(&keep_running, memory_order_relaxed)) {
		uint64_t i =
		    (uint64_t)(((unsigned __int128)next_random(&seed) * w->datasize) >> 64);
		if (!lookup_one(w, i))
			break;
		atomic_store_explicit(&w->done, ++count, memory_order_relaxed);
	}
	w->cpu = thread_cpu() - cpu0;
	return NULL;
}

/*
 * Zipf ranks by rejection-inversion (W. Hoermann, G. Derflinger,
 * "Rejection-inversion to generate variates from monotone discrete
 * distributions", ACM TOMACS 6(3), 1996; as Apache Commons RNG's
 * RejectionInversionZipfSampler). h(x) = x^-s is the density's hat;
 * H is its integral, with helpers that stay accurate where s is near 1 or
 * x near 1. A draw takes one uniform, a log and an exp, and is accepted
 * at the first try 998 times in 1,000 (s = 0.9; a chi-square test over
 * 1,000 ranks and 10^7 draws fits); no table, so DATASIZE can be anything.
 */
struct zipf {
	double s, n;
	double h_x1, h_n; /* H(1.5) - 1, H(n + 0.5) */
	double squeeze;	  /* 2 - H^-1(H(2.5) - h(2)) */
};

static double zipf_helper1(double x) /* log1p(x) / x */
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}

static double zipf_helper2(double x) /* expm1(x) / x */
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x));
}

static double zipf_h(const struct zipf *z, double x)
{
	return exp(-z->s * log(x));
}

static double zipf_hint(const struct zipf *z, double x)
{
	double lx = log(x);
	return zipf_helper2((1 - z->s) * lx) * lx;
}

static double zipf_hint_inv(const struct zipf *z, double x)
{
	double t = x * (1 - z->s);
	if (t < -1)
		t = -1; /* rounding, near the end of the range */
	return exp(zipf_helper1(t) * x);
}

static void zipf_init(struct zipf *z, double s, uint64_t n)
{
	z->s = s;
	z->n = (double)n;
	z->h_x1 = zipf_hint(z, 1.5) - 1;
	z->h_n = zipf_hint(z, z->n + 0.5);
	z->squeeze = 2 - zipf_hint_inv(z, zipf_hint(z, 2.5) - zipf_h(z, 2));
}

/* A rank in [0, n): rank 0 the most popular. */
static uint64_t zipf_next(const struct zipf *z, uint64_t *seed)
{
	for (;;) {
		double u01 = (double)(next_random(seed) >> 11) * 0x1p-53;
		double u = z->h_n + u01 * (z->h_x1 - z->h_n);
		double x = zipf_hint_inv(z, u);
		double k = floor(x + 0.5);
		if (k < 1)
			k = 1;
		else if (k > z->n)
			k = z->n;
		if (k - x <= z->squeeze || u >= zipf_hint(z, k + 0.5) - zipf_h(z, k))
			return (uint64_t)k - 1;
	}
}

/* Where the ranks land (ZIPF_SCATTER): rank r is key (r * zipf_mul + shift)
 * mod DATASIZE, zipf_mul = 1 or an odd multiplier near DATASIZE / phi that
 * is prime to DATASIZE (so the map is a bijection, and consecutive ranks
 * land far apart, spread as evenly as the golden ratio spreads them). The
 * shift is the moving part: the reporter stores a new one at each move,
 * the workers load it before each lookup. */
static uint64_t zipf_mul = 1;
static _Atomic uint64_t zipf_shift;
static struct zipf zipf_dist;

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

static void zipf_setup(const struct config *c)
{
	zipf_init(&zipf_dist, c->zipf_s, c->datasize);
	zipf_mul = 1;
	if (c->zipf_scatter && c->datasize > 2) {
		uint64_t m = (uint64_t)((double)c->datasize * 0.6180339887498949) | 1;
		while (gcd_u64(m, c->datasize) != 1)
			m += 2;
		zipf_mul = m % c->datasize;
	}
	atomic_store(&zipf_shift, 0);
}

/* The shift after move @k (k >= 1): pseudo-random, the same every run. */
static uint64_t zipf_shift_of(uint64_t k, uint64_t n)
{
	uint64_t s = 0x2f0a5eedu + k * 0x100000001b3u;
	return (uint64_t)(((unsigned __int128)next_random(&s) * n) >> 64);
}

static void *zipf_lookup_thread(void *arg)
{
	struct worker *w = arg;
	uint64_t seed = w->seed, count = 0, n = w->datasize;
	double cpu0 = thread_cpu();
	while (atomic_load_explicit(&keep_running, memory_order_relaxed)) {
		uint64_t r = zipf_next(&zipf_dist, &seed);
		uint64_t shift = atomic_load_explicit(&zipf_shift, memory_order_relaxed);
		uint64_t i = zipf_mul == 1 ? r : (uint64_t)((unsigned __int128)r * zipf_mul % n);
		i += shift;
		if (i >= n)
			i -= n;
		if (!lookup_one(w, i))
			break;
		atomic_store_explicit(&w->done, ++count, memory_order_relaxed);
	}
	w->cpu = thread_cpu() - cpu0;
	return NULL;
}

static uint64_t total_done(struct worker *w, unsigned n)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < n; i++)
		sum += atomic_load_explicit(&w[i].done, memory_order_relaxed);
	return sum;
}

static int start_all(struct worker *w, unsigned n, void *(*fn)(void *))
{
	for (unsigned i = 0; i < n; i++) {
		int err = pthread_create(&w[i].tid, NULL, fn, &w[i]);
		if (err) {
			fprintf(stderr, "vsbench: pthread_create: %s\n", strerror(err));
			atomic_store(&keep_running, false);
			for (unsigned j = 0; j < i; j++)
				pthread_join(w[j].tid, NULL);
			return -err;
		}
	}
	return 0;
}

static double total_cpu(const struct worker *w, unsigned n)
{
	double sum = 0;
	for (unsigned i = 0; i < n; i++)
		sum += w[i].cpu;
	return sum;
}

static int join_all(struct worker *w, unsigned n, const char *phase)
{
	int first = 0;
	for (unsigned i = 0; i < n; i++) {
		pthread_join(w[i].tid, NULL);
		if (w[i].err && !first) {
			fprintf(stderr, "vsbench: %s failed on thread %u: %s%s\n", phase, i,
				strerror(-w[i].err),
				w[i].err == -ENOSPC ? " (image full: raise VIRTGB)" : "");
			first = w[i].err;
		}
	}
	return first;
}

/* ------------------------------------------------------------------ */
/* Phases                                                             */

/* The tree's shape says how full the bulk load left the pages, which is
 * what decides how much of the data fits a given pool. */
static int check_tree(const struct config *c, struct bt *t)
{
	struct bt_info info;
	double t0 = now();
	int err = bt_check(t, &info);
	if (err) {
		fprintf(stderr, "vsbench: bt_check after the load: %s\n", strerror(-err));
		return err;
	}
	fprintf(stderr,
		"tree: height %u, %llu leaves, %llu inner nodes, %.1f entries per leaf "
		"(checked in %.2f s)\n",
		info.height, (unsigned long long)info.leaves, (unsigned long long)info.inners,
		(double)info.entries / (double)(info.leaves ? info.leaves : 1), now() - t0);
	if (info.entries != c->datasize) {
		fprintf(stderr, "vsbench: the tree holds %llu entries, expected %llu\n",
			(unsigned long long)info.entries, (unsigned long long)c->datasize);
		return -EUCLEAN;
	}
	return 0;
}

static int load(const struct config *c, struct worker *w)
{
	struct bm_stats before, st;
	bm_stats_get(w[0].tree.bm, &before);
	double t0 = now();
	for (unsigned i = 0; i < c->threads; i++) {
		w[i].begin = c->datasize * i / c->threads;
		w[i].end = c->datasize * (i + 1) / c->threads;
	}
	int err = start_all(w, c->threads, load_thread);
	if (!err)
		err = join_all(w, c->threads, "load");
	if (err)
		return err;
	double secs = now() - t0;
	/* Pages the load allocated: what the tree costs, without the
	 * image's own metadata. */
	bm_stats_get(w[0].tree.bm, &st);
	double used = (double)(before.free_pages - st.free_pages) * BM_PAGE_SIZE;
	fprintf(stderr,
		"load: %llu tuples in %.3f s: %.0f tuples/s (%.0f per thread, %.0f per "
		"CPU-second)\n",
		(unsigned long long)c->datasize, secs, (double)c->datasize / secs,
		(double)c->datasize / secs / c->threads,
		(double)c->datasize / total_cpu(w, c->threads));
	fprintf(stderr, "space: %.3f GB of tree, %.1f bytes per tuple, pool %.3f GB (%s)\n",
		used / (1 << 30), used / (double)c->datasize,
		(double)st.capacity_pages * BM_PAGE_SIZE / (1 << 30), st.backend);
	if (c->btcheck)
		return check_tree(c, &w[0].tree);
	return 0;
}

/* Sleep until @t on the monotonic clock (absolute, so lines do not drift). */
static void sleep_until(double t)
{
	struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - floor(t)) * 1e9)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* ", p50 X µs, p99 Y µs, p99.9 Z µs (mean M µs)" of @s, or nothing when it
 * is empty (no made-up zeros). */
static void print_quantiles(const struct lat_snap *s)
{
	if (s->count)
		fprintf(stderr, ", p50 %.1f µs, p99 %.1f µs, p99.9 %.1f µs (mean %.1f µs)",
			lh_quantile(s, 0.5) / 1e3, lh_quantile(s, 0.99) / 1e3,
			lh_quantile(s, 0.999) / 1e3, lh_mean(s) / 1e3);
	fputc('\n', stderr);
}

/* The run phase's fault and eviction-batch latency (between two
 * bm_latency_get snapshots), in microseconds. */
static void print_latency(const struct bm_latency *before, const struct bm_latency *after)
{
	struct lat_snap f, e;
	lh_snap_sub(&after->fault, &before->fault, &f);
	lh_snap_sub(&after->evict, &before->evict, &e);
	uint64_t pages = after->evict_pages - before->evict_pages;
	fprintf(stderr, "faults: %llu", (unsigned long long)f.count);
	print_quantiles(&f);
	fprintf(stderr, "evict batches: %llu (avg %.1f pages)", (unsigned long long)e.count,
		e.count ? (double)pages / (double)e.count : 0.0);
	print_quantiles(&e);
}

/* The marker that starts run second @s in the eviction trace (-1: none
 * asked for): 8 bytes, little endian, kind 3 (bench/evsim/evsim.h), id
 * s + 1. One write on an O_APPEND descriptor: it cannot tear. */
static void trace_mark(int fd, unsigned s)
{
	if (fd < 0)
		return;
	uint64_t v = (uint64_t)(s + 1) | (UINT64_C(3) << 56);
	uint8_t b[8];
	for (int k = 0; k < 8; k++)
		b[k] = (uint8_t)(v >> (8 * k));
	if (write(fd, b, sizeof(b)) != (ssize_t)sizeof(b))
		fprintf(stderr, "vsbench: writing a marker to the eviction trace failed\n");
}

/* Run @fn on every worker for RUNFOR seconds, printing the CSV header and
 * one line a second (workload @workload), then stop and join them.
 * *ret_secs gets the wall time from start to join; lat[0] and lat[1] the
 * pool's latency histograms at start and after the join. With ZIPF the
 * lines have the hit ratio's columns, the hot set moves every ZIPF_MOVE
 * seconds, and @trace_fd (or -1) gets a marker at each second. */
static int measure(const struct config *c, struct worker *w, struct bm *bm, const char *workload,
		   void *(*fn)(void *), double *ret_secs, struct bm_latency lat[2], int trace_fd)
{
	const double mb = 1024.0 * 1024;
	struct bm_stats first, prev, cur;
	bm_stats_get(bm, &prev);
	first = prev;
	bm_latency_get(bm, &lat[0]);
	uint64_t prev_done = 0, moves = 0;

	printf("ts,tx,rmb,wmb,system,threads,datasize,workload,batch%s\n",
	       c->zipf ? ",hit,loads,fixes,move,probation" : "");
	fflush(stdout);
	trace_mark(trace_fd, 0);
	double t0 = now();
	int err = start_all(w, c->threads, fn);
	if (err)
		return err;
	for (unsigned s = 0; s < c->runfor; s++) {
		sleep_until(t0 + s + 1);
		uint64_t done = total_done(w, c->threads);
		bm_stats_get(bm, &cur);
		uint64_t cur_moves = moves;
		if (s + 1 < c->runfor)
			trace_mark(trace_fd, s + 1); /* before the move: its lookups after it */
		if (c->zipf && c->zipf_move && (s + 1) % c->zipf_move == 0) {
			atomic_store_explicit(&zipf_shift, zipf_shift_of(++moves, c->datasize),
					      memory_order_relaxed);
		}
		printf("%u,%llu,%.2f,%.2f,virtuscale,%u,%llu,%s,%u", s,
		       (unsigned long long)(done - prev_done),
		       (double)(cur.read_bytes - prev.read_bytes) / mb,
		       (double)(cur.write_bytes - prev.write_bytes) / mb, c->threads,
		       (unsigned long long)c->datasize, workload, c->batch);
		if (c->zipf) {
			uint64_t loads = cur.loads - prev.loads, fixes = cur.hits - prev.hits + loads;
			printf(",%.4f,%llu,%llu,%llu,%llu",
			       fixes ? 1 - (double)loads / (double)fixes : 0.0,
			       (unsigned long long)loads, (unsigned long long)fixes,
			       (unsigned long long)cur_moves,
			       (unsigned long long)cur.probation_target);
		}
		printf("\n");
		fflush(stdout);
		prev = cur;
		prev_done = done;
	}
	atomic_store(&keep_running, false);
	err = join_all(w, c->threads, workload);
	*ret_secs = now() - t0;
	bm_latency_get(bm, &lat[1]);
	bm_stats_get(bm, &cur);
	fprintf(stderr, "writebacks: %llu pages, %llu of them neighbours written early (CLUSTER)\n",
		(unsigned long long)(cur.writebacks - first.writebacks),
		(unsigned long long)(cur.cluster_writebacks - first.cluster_writebacks));
	return err;
}

static int rndread(const struct config *c, struct worker *w, struct bm *bm)
{
	for (unsigned i = 0; i < c->threads; i++) {
		atomic_store(&w[i].done, 0);
		w[i].datasize = c->datasize;
		w[i].seed = 0x5eed0000u + i * 0x100000001b3u;
	}
	double secs;
	struct bm_latency *lat = malloc(2 * sizeof(*lat)); /* 3.5 KiB each */
	if (!lat)
		return -ENOMEM;
	int trace_fd = -1;
	struct bm_stats st0;
	if (c->zipf) {
		zipf_setup(c);
		bm_stats_get(bm, &st0);
		char every[32] = "never moving";
		if (c->zipf_move)
			snprintf(every, sizeof(every), "moving every %u s", c->zipf_move);
		fprintf(stderr,
			"zipf: skew %g over %llu keys, %s, hot set %s; pool %llu pages, "
			"eviction %s\n",
			c->zipf_s, (unsigned long long)c->datasize,
			c->zipf_scatter ? "ranks scattered" : "ranks packed", every,
			(unsigned long long)st0.capacity_pages, st0.evict_policy);
		const char *tp = getenv("VS_EVICT_TRACE");
		if (tp && *tp) {
			trace_fd = open(tp, O_WRONLY | O_APPEND | O_CLOEXEC);
			if (trace_fd < 0)
				fprintf(stderr, "vsbench: %s: %s (no markers)\n", tp,
					strerror(errno));
		}
	}
	int err = measure(c, w, bm, c->zipf ? "zipf" : "rndread",
			  c->zipf ? zipf_lookup_thread : lookup_thread, &secs, lat, trace_fd);
	if (trace_fd >= 0)
		close(trace_fd);
	if (c->zipf) {
		struct bm_stats st;
		bm_stats_get(bm, &st);
		uint64_t loads = st.loads - st0.loads, fixes = st.hits - st0.hits + loads;
		fprintf(stderr,
			"zipf: hit ratio %.4f over the run (%llu loads, %llu fixes); probation "
			"%llu of %llu target, %llu promotions, %llu ghost hits\n",
			fixes ? 1 - (double)loads / (double)fixes : 0.0, (unsigned long long)loads,
			(unsigned long long)fixes, (unsigned long long)st.probation_pages,
			(unsigned long long)st.probation_target,
			(unsigned long long)(st.promotions - st0.promotions),
			(unsigned long long)(st.ghost_hits - st0.ghost_hits));
	}

	uint64_t done = total_done(w, c->threads), bad = 0;
	for (unsigned i = 0; i < c->threads; i++)
		bad += w[i].bad;
	fprintf(stderr, "lookups: %llu in %.3f s: %.0f /s (%.0f per thread, %.0f per CPU-second)\n",
		(unsigned long long)done, secs, (double)done / secs,
		(double)done / secs / c->threads, (double)done / total_cpu(w, c->threads));
	print_latency(&lat[0], &lat[1]);
	free(lat);
	if (bad) {
		fprintf(stderr, "vsbench: %llu lookups missed or returned the wrong tuple\n",
			(unsigned long long)bad);
		if (!err)
			err = -EUCLEAN;
	}
	return err;
}

/* ------------------------------------------------------------------ */
/* TPC-C-like workload (tpcc.h)                                       */

/* Thread i loads warehouses i + 1, i + 1 + THREADS, ... */
static void *tpcc_load_thread(void *arg)
{
	struct worker *w = arg;
	double cpu0 = thread_cpu();
	uint64_t n = 0;
	for (uint64_t wh = w->index + 1; wh <= w->datasize; wh += w->nthreads) {
		int err = tpcc_load_warehouse(w->db, (unsigned)wh);
		if (err) {
			w->err = err;
			break;
		}
		atomic_store_explicit(&w->done, ++n, memory_order_relaxed);
	}
	w->cpu = thread_cpu() - cpu0;
	return NULL;
}

static void *tpcc_thread(void *arg)
{
	struct worker *w = arg;
	uint64_t count = 0;
	double cpu0 = thread_cpu();
	while (atomic_load_explicit(&keep_running, memory_order_relaxed)) {
		int err = tpcc_term_run(&w->term);
		if (err) {
			w->err = err;
			/* One broken terminal ends the run for all. */
			atomic_store(&keep_running, false);
			break;
		}
		atomic_store_explicit(&w->done, ++count, memory_order_relaxed);
	}
	w->cpu = thread_cpu() - cpu0;
	return NULL;
}

static int tpcc_load(const struct config *c, struct worker *w, struct bm *bm)
{
	struct bm_stats before, st;
	bm_stats_get(bm, &before);
	double t0 = now(), cpu0 = thread_cpu();
	int err = tpcc_load_items(w[0].db);
	if (err) {
		fprintf(stderr, "vsbench: loading the items: %s%s\n", strerror(-err),
			err == -ENOSPC ? " (image full: raise VIRTGB)" : "");
		return err;
	}
	double item_cpu = thread_cpu() - cpu0;
	for (unsigned i = 0; i < c->threads; i++) {
		w[i].index = i;
		w[i].nthreads = c->threads;
		w[i].datasize = c->datasize;
	}
	err = start_all(w, c->threads, tpcc_load_thread);
	if (!err)
		err = join_all(w, c->threads, "load");
	if (err)
		return err;
	double secs = now() - t0;
	bm_stats_get(bm, &st);
	double used = (double)(before.free_pages - st.free_pages) * BM_PAGE_SIZE;
	fprintf(stderr, "load: %llu warehouses in %.3f s (%.1f s of CPU)%s\n",
		(unsigned long long)c->datasize, secs, item_cpu + total_cpu(w, c->threads),
		c->tpcc_scale > 1 ? " (scaled down by TPCCSCALE: not a TPC-C population)" : "");
	fprintf(stderr,
		"space: %.3f GB of trees (%.1f MB per warehouse), pool %.3f GB (%s), "
		"%llu pages read, %llu written during the load\n",
		used / (1 << 30), used / (1 << 20) / (double)c->datasize,
		(double)st.capacity_pages * BM_PAGE_SIZE / (1 << 30), st.backend,
		(unsigned long long)((st.read_bytes - before.read_bytes) / BM_PAGE_SIZE),
		(unsigned long long)((st.write_bytes - before.write_bytes) / BM_PAGE_SIZE));
	return 0;
}

static int tpcc(const struct config *c, struct worker *w, struct bm *bm)
{
	struct tpcc_size size;
	struct tpcc *db;
	tpcc_size_scaled(&size, c->tpcc_scale);
	int err = tpcc_create(bm, (unsigned)c->datasize, &size, 0x7cc5eedu, &db);
	if (err) {
		fprintf(stderr, "vsbench: creating the TPC-C tables: %s\n", strerror(-err));
		return err;
	}
	for (unsigned i = 0; i < c->threads; i++)
		w[i].db = db;
	err = tpcc_load(c, w, bm);
	if (err)
		goto out;

	for (unsigned i = 0; i < c->threads; i++) {
		atomic_store(&w[i].done, 0);
		w[i].cpu = 0;
		tpcc_term_init(&w[i].term, db, i, (unsigned)(i % c->datasize + 1),
			       0x7e50000u + i * 0x100000001b3u);
	}
	double secs;
	struct bm_latency *lat = malloc(2 * sizeof(*lat));
	if (!lat) {
		err = -ENOMEM;
		goto out;
	}
	err = measure(c, w, bm, "tpcc", tpcc_thread, &secs, lat, -1);

	uint64_t done = total_done(w, c->threads), kinds[TPCC_TX_KINDS] = {0}, rollbacks = 0;
	for (unsigned i = 0; i < c->threads; i++) {
		for (unsigned k = 0; k < TPCC_TX_KINDS; k++)
			kinds[k] += w[i].term.done[k];
		rollbacks += w[i].term.rollbacks;
	}
	double cpu = total_cpu(w, c->threads);
	fprintf(stderr,
		"tpcc: %llu transactions in %.3f s: %.0f /s (%.0f per thread, %.0f per "
		"CPU-second); %.0f new-orders/min\n",
		(unsigned long long)done, secs, (double)done / secs,
		(double)done / secs / c->threads, cpu > 0 ? (double)done / cpu : 0,
		(double)kinds[TPCC_NEW_ORDER] * 60 / secs);
	fprintf(stderr, "tpcc mix:");
	for (unsigned k = 0; k < TPCC_TX_KINDS; k++)
		fprintf(stderr, " %s %llu%s", tpcc_tx_names[k], (unsigned long long)kinds[k],
			k + 1 < TPCC_TX_KINDS ? "," : "");
	fprintf(stderr, " (%llu new-orders rolled back)\n", (unsigned long long)rollbacks);
	print_latency(&lat[0], &lat[1]);
	free(lat);
	if (err)
		goto out;

	double t0 = now();
	err = tpcc_check(db, stderr);
	if (err == -EUCLEAN)
		fprintf(stderr, "vsbench: consistency checks FAILED\n");
	else if (err)
		fprintf(stderr, "vsbench: consistency checks: %s\n", strerror(-err));
	else
		fprintf(stderr, "consistency checks passed in %.2f s\n", now() - t0);
out:
	tpcc_destroy(db);
	return err;
}

int main(void)
{
	struct config c;
	if (config_read(&c))
		return 1;
	int err = bm_format(c.block, c.virt_bytes, true);
	if (err) {
		fprintf(stderr, "vsbench: cannot format %s (%llu bytes): %s\n", c.block,
			(unsigned long long)c.virt_bytes, strerror(-err));
		return 1;
	}
	struct bm_config bc = {
	    .path = c.block,
	    .pool_bytes = c.phys_bytes,
	    .backend = c.exmap ? BM_BACKEND_EXMAP : BM_BACKEND_PLAIN,
	    .evict_batch = c.batch,
	    .evict_cluster = c.cluster ? (int)c.cluster : -1,
	};
	struct bm *bm;
	err = bm_open(&bc, &bm);
	if (err) {
		if (err == -ENODEV && c.exmap)
			fprintf(stderr,
				"vsbench: EXMAP=1 but the exmap backend is unavailable "
				"(is the exmap module loaded and /dev/exmap accessible?)\n");
		else
			fprintf(stderr, "vsbench: cannot open %s: %s\n", c.block, strerror(-err));
		return 1;
	}

	uint64_t root;
	struct worker *w = aligned_alloc(_Alignof(struct worker), sizeof(*w) * c.threads);
	if (!w) {
		err = -ENOMEM;
		fprintf(stderr, "vsbench: out of memory\n");
		goto out;
	}
	memset(w, 0, sizeof(*w) * c.threads);
	if (!c.rndread) {
		err = tpcc(&c, w, bm);
		goto out;
	}
	err = bt_create(bm, &root);
	if (err) {
		fprintf(stderr, "vsbench: bt_create: %s\n", strerror(-err));
		goto out;
	}
	for (unsigned i = 0; i < c.threads; i++)
		w[i].tree = bt_open(bm, root);

	err = load(&c, w);
	if (!err)
		err = rndread(&c, w, bm);
out:
	free(w);
	int cerr = bm_close(bm);
	if (cerr && !err) {
		fprintf(stderr, "vsbench: closing the image: %s\n", strerror(-cerr));
		err = cerr;
	}
	return err ? 1 : 0;
}
