/*
 * B-tree lookup benchmark: 1e6 random 8-byte keys with 120-byte values, the
 * whole tree in memory, then random lookups from one thread (and, with
 * VS_BENCH_THREADS=N, from N threads). vmcache reports about 1.2-1.4 M
 * lookups/s per thread for this setup on its hardware.
 *
 * Prints insert and lookup rates; exits 1 if any lookup fails. Environment:
 * VS_BENCH_KEYS (default 1000000), VS_BENCH_SECONDS (default 3).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "bt_test.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long env_ul(const char *name, unsigned long dflt)
{
	const char *s = getenv(name);
	return s && *s ? strtoul(s, NULL, 10) : dflt;
}

struct bench {
	struct bt t;
	uint64_t *keys;
	uint64_t nkeys;
	double seconds;
	_Atomic uint64_t total;
	_Atomic unsigned errors;
	_Atomic uint64_t cpu_ns; /* CPU time the lookup threads used (the machine may be shared) */
};

static void *lookup_thread(void *arg)
{
	struct bench *b = arg;
	uint64_t rng = (uint64_t)(uintptr_t)&rng | 1, done = 0;
	uint8_t key[8], val[256];
	unsigned len;
	double end = now() + b->seconds, c0 = cpu_now();

	while (now() < end) {
		for (unsigned i = 0; i < 10000; i++) {
			uint64_t k = b->keys[rng_next(&rng) % b->nkeys];
			put_be64(key, k);
			if (bt_lookup(&b->t, key, 8, val, sizeof(val), &len) != 0 || len != 120 ||
			    get_be64(val) != k)
				b->errors++;
		}
		done += 10000;
	}
	b->total += done;
	b->cpu_ns += (uint64_t)((cpu_now() - c0) * 1e9);
	return NULL;
}

int main(void)
{
	struct tenv env;
	struct bench b = {.seconds = (double)env_ul("VS_BENCH_SECONDS", 3)};
	unsigned threads = (unsigned)env_ul("VS_BENCH_THREADS", 0);
	uint64_t root, rng = 12345;
	uint8_t key[8], val[120];
	int r;

	b.nkeys = env_ul("VS_BENCH_KEYS", 1000000);
	/* The pool holds the whole tree (about 200 MiB for 1e6 keys). */
	r = tenv_open(&env, 2ull << 30, 1ull << 30);
	if (r < 0) {
		fprintf(stderr, "cannot set up the image: %s\n", strerror(-r));
		return 1;
	}
	b.keys = malloc(b.nkeys * sizeof(*b.keys));
	for (uint64_t i = 0; i < b.nkeys; i++)
		b.keys[i] = rng_next(&rng);
	bt_create(env.bm, &root);
	b.t = bt_open(env.bm, root);

	double t0 = now();
	for (uint64_t i = 0; i < b.nkeys; i++) {
		put_be64(key, b.keys[i]);
		put_be64(val, b.keys[i]);
		memset(val + 8, (int)i, sizeof(val) - 8);
		r = bt_insert(&b.t, key, 8, val, sizeof(val));
		if (r != 0 && r != -EEXIST) {
			fprintf(stderr, "insert: %s\n", strerror(-r));
			return 1;
		}
	}
	double t1 = now();
	struct bt_info info;
	if (bt_check(&b.t, &info) != 0)
		return 1;
	printf("insert: %.0f keys/s (%llu keys, height %u, %llu leaves, %.0f%% full)\n",
	       (double)b.nkeys / (t1 - t0), (unsigned long long)info.entries, info.height,
	       (unsigned long long)info.leaves,
	       100.0 * (double)info.entries * (8 + 120 + 10) / ((double)info.leaves * 4000));

	lookup_thread(&b);
	/* Per CPU second as well: on a shared machine the wall-clock rate
	 * says more about the neighbours than about the tree. */
	printf("lookup, 1 thread: %.0f lookups/s (%.0f per CPU second)\n",
	       (double)b.total / b.seconds, (double)b.total * 1e9 / (double)b.cpu_ns);
	if (threads > 1) {
		pthread_t th[64];
		b.total = 0;
		for (unsigned i = 0; i < threads && i < 64; i++)
			pthread_create(&th[i], NULL, lookup_thread, &b);
		for (unsigned i = 0; i < threads && i < 64; i++)
			pthread_join(th[i], NULL);
		printf("lookup, %u threads: %.0f lookups/s\n", threads,
		       (double)b.total / b.seconds);
	}
	/* Ascending inserts (new inodes, appended extents) fill leaves
	 * completely: splits cut after the last entry. */
	uint64_t root2;
	bt_create(env.bm, &root2);
	struct bt t2 = bt_open(env.bm, root2);
	uint64_t n2 = b.nkeys / 4;
	t0 = now();
	for (uint64_t i = 0; i < n2; i++) {
		put_be64(key, i);
		put_be64(val, i);
		if (bt_insert(&t2, key, 8, val, sizeof(val)) != 0)
			return 1;
	}
	t1 = now();
	if (bt_check(&t2, &info) != 0)
		return 1;
	printf("ascending insert: %.0f keys/s (%llu keys, %llu leaves, %.0f%% full)\n",
	       (double)n2 / (t1 - t0), (unsigned long long)info.entries,
	       (unsigned long long)info.leaves,
	       100.0 * (double)info.entries * (8 + 120 + 10) / ((double)info.leaves * 4000));

	struct bm_stats s;
	bm_stats_get(env.bm, &s);
	printf("pool: %llu resident pages, %llu restarts\n", (unsigned long long)s.resident_pages,
	       (unsigned long long)s.restarts);
	free(b.keys);
	tenv_close(&env);
	if (b.errors) {
		fprintf(stderr, "%u lookups failed\n", b.errors);
		return 1;
	}
	return 0;
}
