/*
 * evsim: replay a page-access trace through several eviction policies at
 * one capacity and print their hit ratios side by side (the policies and
 * the trace formats are in evsim.h), or generate the traces of the
 * workload-aware eviction issue. See bench/evsim/README.md.
 *
 *   evsim [-c PAGES] [-p clock,lru,2q,s3fifo,s3clock] [-b BATCH] [-k CLUSTER]
 *         [-g GHOST_RATIO] [-s SMALL_RATIO] [-F] [-w WINDOW] TRACE...
 *   evsim gen scan [-H HOT] [-S SCAN] [-R ROUNDS] [-s SEED] [-B]
 *   evsim gen zipf [-n PAGES] [-a ALPHA] [-m MOVE_EVERY] [-l LENGTH] [-s SEED] [-B]
 *   evsim gen seq  [-n PAGES] [-P PASSES] [-B]
 *
 * gen writes the trace to stdout (text, or binary with -B). -F keeps
 * s3clock's probation at SMALL_RATIO (no adapting). -w prints, instead of
 * the table, a CSV line per window and policy (hit ratios over time): a
 * window is WINDOW accesses, cut at each marker (0: one window a phase),
 * ev_replay_windows.
 */
#include "evsim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PHASES 8

static uint64_t rng_state = 1;
static uint64_t rng(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static bool out_binary;
static void emit(enum ev_rec kind, uint64_t pid)
{
	if (out_binary) {
		uint64_t v = ev_rec_make(kind, pid);
		uint8_t b[8];
		for (int k = 0; k < 8; k++)
			b[k] = (uint8_t)(v >> (8 * k));
		fwrite(b, 1, 8, stdout);
	} else {
		static const char letter[] = "alemp";
		if (kind == EV_REC_ACCESS)
			printf("%llu\n", (unsigned long long)pid);
		else
			printf("%llu %c\n", (unsigned long long)pid, letter[kind]);
	}
}

static void shuffle(uint64_t *a, uint64_t n)
{
	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = rng() % i, t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

static uint64_t num(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (end == s || *end || errno) {
		fprintf(stderr, "evsim: not a number: %s\n", s);
		exit(2);
	}
	return v;
}

/*
 * The issue's scan experiment, in pages: a hot file of HOT pages read at
 * random until resident (ROUNDS x HOT random reads, then one pass in random
 * order so that every page was read), then one sequential pass over a cold
 * file of SCAN pages, then the hot file once more in random order. Phases
 * 1, 2 and 3 (markers). Defaults: 16 MiB hot, 256 MiB scan (a 64 MiB pool
 * is 16384 pages).
 */
static int gen_scan(int argc, char **argv)
{
	uint64_t hot = 4096, scan = 65536, rounds = 4;
	int o;
	while ((o = getopt(argc, argv, "H:S:R:s:B")) != -1) {
		switch (o) {
		case 'H': hot = num(optarg); break;
		case 'S': scan = num(optarg); break;
		case 'R': rounds = num(optarg); break;
		case 's': rng_state = num(optarg); break;
		case 'B': out_binary = true; break;
		default: return 2;
		}
	}
	const uint64_t hot_base = 1 << 16, scan_base = hot_base + hot + 4096;
	uint64_t *perm = malloc(hot * sizeof(*perm));
	if (!perm || hot == 0)
		return 1;
	if (out_binary)
		fwrite(EV_TRACE_MAGIC, 1, 8, stdout);
	emit(EV_REC_MARK, 1);
	for (uint64_t i = 0; i < rounds * hot; i++)
		emit(EV_REC_ACCESS, hot_base + rng() % hot);
	for (uint64_t i = 0; i < hot; i++)
		perm[i] = hot_base + i;
	shuffle(perm, hot);
	for (uint64_t i = 0; i < hot; i++)
		emit(EV_REC_ACCESS, perm[i]);
	emit(EV_REC_MARK, 2);
	for (uint64_t i = 0; i < scan; i++)
		emit(EV_REC_ACCESS, scan_base + i);
	emit(EV_REC_MARK, 3);
	shuffle(perm, hot);
	for (uint64_t i = 0; i < hot; i++)
		emit(EV_REC_ACCESS, perm[i]);
	free(perm);
	return 0;
}

/*
 * Zipf(ALPHA) over PAGES pages, LENGTH accesses; every MOVE_EVERY accesses
 * the hot set moves: rank r maps to page perm[(r + offset) % PAGES] and the
 * offset jumps. Markers at each move.
 */
static int gen_zipf(int argc, char **argv)
{
	uint64_t pages = 65536, move = 65536, length = 655360;
	double alpha = 0.9;
	int o;
	while ((o = getopt(argc, argv, "n:a:m:l:s:B")) != -1) {
		switch (o) {
		case 'n': pages = num(optarg); break;
		case 'a': alpha = atof(optarg); break;
		case 'm': move = num(optarg); break;
		case 'l': length = num(optarg); break;
		case 's': rng_state = num(optarg); break;
		case 'B': out_binary = true; break;
		default: return 2;
		}
	}
	double *cdf = malloc(pages * sizeof(*cdf));
	uint64_t *perm = malloc(pages * sizeof(*perm));
	if (!cdf || !perm || pages == 0 || move == 0)
		return 1;
	double sum = 0;
	for (uint64_t r = 0; r < pages; r++)
		cdf[r] = sum += 1.0 / pow((double)(r + 1), alpha);
	for (uint64_t i = 0; i < pages; i++)
		perm[i] = (1 << 16) + i;
	shuffle(perm, pages);
	if (out_binary)
		fwrite(EV_TRACE_MAGIC, 1, 8, stdout);
	uint64_t offset = 0;
	for (uint64_t i = 0; i < length; i++) {
		if (i % move == 0) {
			emit(EV_REC_MARK, i / move + 1);
			offset = rng() % pages;
		}
		double u = (double)(rng() >> 11) / (double)(UINT64_C(1) << 53) * sum;
		uint64_t lo = 0, hi = pages - 1;
		while (lo < hi) {
			uint64_t mid = (lo + hi) / 2;
			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		emit(EV_REC_ACCESS, perm[(lo + offset) % pages]);
	}
	free(cdf);
	free(perm);
	return 0;
}

/* PASSES sequential passes over PAGES pages, a marker before each. */
static int gen_seq(int argc, char **argv)
{
	uint64_t pages = 12288, passes = 4;
	int o;
	while ((o = getopt(argc, argv, "n:P:B")) != -1) {
		switch (o) {
		case 'n': pages = num(optarg); break;
		case 'P': passes = num(optarg); break;
		case 'B': out_binary = true; break;
		default: return 2;
		}
	}
	if (out_binary)
		fwrite(EV_TRACE_MAGIC, 1, 8, stdout);
	for (uint64_t p = 0; p < passes; p++) {
		emit(EV_REC_MARK, p + 1);
		for (uint64_t i = 0; i < pages; i++)
			emit(EV_REC_ACCESS, (1 << 16) + i);
	}
	return 0;
}

struct phase {
	uint64_t id, accesses, loads;
	uint64_t misses[EV_NKINDS];
};

static int replay(const char *path, uint64_t capacity, const bool *on,
		  const struct ev_params *base)
{
	struct ev_trace t;
	int r = ev_trace_read(path, &t);
	if (r < 0) {
		fprintf(stderr, "evsim: %s: %s\n", path, strerror(-r));
		return 1;
	}
	long folded = ev_trace_fold(&t);
	if (folded < 0) {
		fprintf(stderr, "evsim: %s: out of memory\n", path);
		return 1;
	}
	struct ev_params p = *base;
	p.capacity = capacity;
	struct ev_policy *pol[EV_NKINDS] = { 0 };
	for (int k = 0; k < EV_NKINDS; k++) {
		if (!on[k])
			continue;
		pol[k] = ev_policy_new(k, &p);
		if (!pol[k]) {
			fprintf(stderr, "evsim: cannot set up %s at %llu pages\n", ev_kind_name(k),
				(unsigned long long)capacity);
			return 1;
		}
	}
	struct phase ph[MAX_PHASES + 1];
	unsigned nph = 1; /* phase 0: before any marker (shown only if used) */
	memset(ph, 0, sizeof(ph));
	uint64_t accesses = 0, loads = 0, evicts = 0;
	for (size_t i = 0; i < t.n; i++) {
		enum ev_rec kind = (enum ev_rec)(t.rec[i] >> 56);
		uint64_t pid = t.rec[i] & EV_PID_MASK;
		if (kind == EV_REC_MARK) {
			if (nph <= MAX_PHASES)
				ph[nph].id = pid;
			nph++;
			continue;
		}
		if (kind == EV_REC_EVICT) {
			evicts++;
			continue;
		}
		if (kind > EV_REC_MARK)
			continue; /* unknown kinds: from a newer writer */
		struct phase *cur = &ph[nph - 1 <= MAX_PHASES ? nph - 1 : MAX_PHASES];
		accesses++;
		cur->accesses++;
		if (kind == EV_REC_LOAD) {
			loads++;
			cur->loads++;
		}
		for (int k = 0; k < EV_NKINDS; k++)
			if (pol[k] && !ev_access(pol[k], pid))
				cur->misses[k]++;
	}
	unsigned shown = nph <= MAX_PHASES + 1 ? nph : MAX_PHASES + 1;
	unsigned first = ph[0].accesses == 0 && nph > 1 ? 1 : 0;
	printf("trace %s: %llu accesses", path, (unsigned long long)accesses);
	if (loads || evicts)
		printf(" (recorded: %llu loads, %llu evictions)", (unsigned long long)loads,
		       (unsigned long long)evicts);
	if (folded)
		printf(" (%ld first uses of prefetched pages folded into the prefetch)", folded);
	printf(", capacity %llu pages\n", (unsigned long long)capacity);
	printf("%-9s %8s %10s %7s", "policy", "hit%", "misses", "/clock");
	for (unsigned i = first; i < shown; i++)
		printf(" %9s%-2llu", "misses@", (unsigned long long)ph[i].id);
	printf("\n");
	uint64_t clock_misses = 0;
	for (int k = 0; k < EV_NKINDS; k++) {
		if (!pol[k])
			continue;
		struct ev_stats s;
		ev_stats_get(pol[k], &s);
		if (k == EV_CLOCK)
			clock_misses = s.misses;
		printf("%-9s %8.3f %10llu", ev_kind_name(k),
		       accesses ? 100.0 * s.hits / accesses : 0.0, (unsigned long long)s.misses);
		if (on[EV_CLOCK] && clock_misses)
			printf(" %7.3f", (double)s.misses / clock_misses);
		else
			printf(" %7s", "-");
		for (unsigned i = first; i < shown; i++)
			printf(" %11llu", (unsigned long long)ph[i].misses[k]);
		printf("\n");
	}
	if (loads) {
		printf("%-9s %8.3f %10llu %7s", "recorded", 100.0 * (accesses - loads) / accesses,
		       (unsigned long long)loads, "");
		for (unsigned i = first; i < shown; i++)
			printf(" %11llu", (unsigned long long)ph[i].loads);
		printf("\n");
	}
	if (nph > 1) {
		printf("%-9s %8s %10s %7s", "(accesses", "", "", ")");
		for (unsigned i = first; i < shown; i++)
			printf(" %11llu", (unsigned long long)ph[i].accesses);
		printf("\n");
	}
	printf("queues at the end: %-9s %8s %8s %8s %10s %10s %10s %8s\n", "policy", "small",
	       "main", "ghost", "evictions", "promoted", "ghost-hits", "small-to");
	for (int k = 0; k < EV_NKINDS; k++) {
		if (!pol[k])
			continue;
		struct ev_stats s;
		ev_stats_get(pol[k], &s);
		printf("                   %-9s %8llu %8llu %8llu %10llu %10llu %10llu %8llu\n",
		       ev_kind_name(k), (unsigned long long)s.small, (unsigned long long)s.main,
		       (unsigned long long)s.ghost, (unsigned long long)s.evictions,
		       (unsigned long long)s.promotions, (unsigned long long)s.ghost_hits,
		       (unsigned long long)s.small_target);
		ev_policy_free(pol[k]);
	}
	ev_trace_free(&t);
	return 0;
}

struct window_out {
	const char *path;
	const bool *on; /* the policies replayed */
	bool recorded;  /* the trace has loads: a row for the pool that recorded it */
};

/* One line per policy: trace,window,phase,first,accesses,policy,hits,hit_ratio */
static void window_print(void *arg, const struct ev_window *w)
{
	const struct window_out *o = arg;
	for (int k = 0; k <= EV_NKINDS; k++) {
		if (k < EV_NKINDS ? !o->on[k] : !o->recorded)
			continue;
		uint64_t hits = k < EV_NKINDS ? w->hits[k] : w->accesses - w->loads;
		printf("%s,%llu,%llu,%llu,%llu,%s,%llu,%.6f\n", o->path,
		       (unsigned long long)w->index, (unsigned long long)w->phase,
		       (unsigned long long)w->first, (unsigned long long)w->accesses,
		       k < EV_NKINDS ? ev_kind_name(k) : "recorded", (unsigned long long)hits,
		       (double)hits / (double)w->accesses);
	}
}

static int replay_windows(const char *path, uint64_t capacity, const bool *on,
			  const struct ev_params *base, uint64_t every)
{
	static bool header;
	struct ev_trace t;
	int r = ev_trace_read(path, &t);
	if (r < 0) {
		fprintf(stderr, "evsim: %s: %s\n", path, strerror(-r));
		return 1;
	}
	if (ev_trace_fold(&t) < 0) {
		fprintf(stderr, "evsim: %s: out of memory\n", path);
		ev_trace_free(&t);
		return 1;
	}
	struct ev_params p = *base;
	p.capacity = capacity;
	struct ev_policy *pol[EV_NKINDS] = { 0 };
	int rc = 0;
	for (int k = 0; k < EV_NKINDS && !rc; k++) {
		if (on[k] && !(pol[k] = ev_policy_new(k, &p))) {
			fprintf(stderr, "evsim: cannot set up %s at %llu pages\n", ev_kind_name(k),
				(unsigned long long)capacity);
			rc = 1;
		}
	}
	struct window_out o = { .path = path, .on = on };
	for (size_t i = 0; i < t.n && !o.recorded; i++)
		o.recorded = (t.rec[i] >> 56) == EV_REC_LOAD;
	if (!rc) {
		if (!header)
			printf("trace,window,phase,first,accesses,policy,hits,hit_ratio\n");
		header = true;
		ev_replay_windows(&t, pol, every, window_print, &o);
	}
	for (int k = 0; k < EV_NKINDS; k++)
		ev_policy_free(pol[k]);
	ev_trace_free(&t);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: evsim [-c PAGES] [-p POLICY,...] [-b BATCH] [-k CLUSTER] [-g GHOST_RATIO] "
		"[-s SMALL_RATIO] [-F] [-w WINDOW] TRACE...\n"
		"       evsim gen scan|zipf|seq [options] > TRACE   (see evsim.c)\n"
		"policies: clock lru 2q s3fifo s3clock (default: all)\n");
}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[1], "gen") == 0) {
		const char *what = argv[2];
		optind = 1;
		argc -= 2;
		argv += 2;
		int r = strcmp(what, "scan") == 0   ? gen_scan(argc, argv)
			: strcmp(what, "zipf") == 0 ? gen_zipf(argc, argv)
			: strcmp(what, "seq") == 0  ? gen_seq(argc, argv)
						    : (usage(), 2);
		if (fflush(stdout) != 0 && r == 0)
			r = 1;
		return r;
	}
	uint64_t capacity = 16384;
	bool on[EV_NKINDS];
	struct ev_params p = { .cluster = -1 };
	for (int k = 0; k < EV_NKINDS; k++)
		on[k] = true;
	int o;
	bool windows = false;
	uint64_t every = 0;
	while ((o = getopt(argc, argv, "c:p:b:k:g:s:Fw:h")) != -1) {
		switch (o) {
		case 'c': capacity = num(optarg); break;
		case 'F': p.fixed_small = true; break;
		case 'w': windows = true; every = num(optarg); break;
		case 'b': p.batch = (unsigned)num(optarg); break;
		case 'k': p.cluster = (int)num(optarg); break;
		case 'g': p.ghost_ratio = atof(optarg); break;
		case 's': p.small_ratio = atof(optarg); break;
		case 'p': {
			memset(on, 0, sizeof(on));
			char *s = strdup(optarg), *save = NULL;
			for (char *w = strtok_r(s, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
				int k = ev_kind_parse(w);
				if (k < 0) {
					fprintf(stderr, "evsim: unknown policy %s\n", w);
					return 2;
				}
				on[k] = true;
			}
			free(s);
			break;
		}
		default:
			usage();
			return 2;
		}
	}
	if (optind == argc) {
		usage();
		return 2;
	}
	int rc = 0;
	for (int i = optind; i < argc; i++)
		rc |= windows ? replay_windows(argv[i], capacity, on, &p, every)
			      : replay(argv[i], capacity, on, &p);
	return rc;
}
