/*
 * test_trace: the engine's eviction trace (bm_config.evict_trace) read back
 * with evsim's reader: a pool of 256 frames, 1024 pages written and read
 * twice, each read done twice (so the pool evicts, and hits), then the trace's loads, evictions and hits
 * against the pool's own counters, and evsim's clock replaying it.
 */
#include "evsim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/bm.h"

static int failures;
#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);  \
			failures++;                                                            \
		}                                                                              \
	} while (0)

struct arg {
	uint64_t pid;
	bool write;
};

static int op_touch(struct bm_op *op, void *p)
{
	struct arg *a = p;
	struct bm_guard g;
	if (a->write) {
		uint64_t *v = bm_fix_x(op, a->pid, &g);
		*v = a->pid;
	} else {
		bm_fix_s(op, a->pid, &g);
	}
	bm_unfix(op, &g);
	return 0;
}

int main(void)
{
	char dir[] = "/tmp/evsim-trace-XXXXXX";
	if (!mkdtemp(dir))
		return 77;
	char img[64], trace[64];
	snprintf(img, sizeof(img), "%s/img", dir);
	snprintf(trace, sizeof(trace), "%s/trace", dir);
	CHECK(bm_format(img, 16 << 20, true) == 0);
	struct bm_config cfg = { .path = img, .pool_bytes = 1 << 20, .evict_trace = trace };
	struct bm *bm = NULL;
	CHECK(bm_open(&cfg, &bm) == 0);
	if (!bm)
		return 1;
	const uint64_t n = 1024;
	uint64_t first;
	CHECK(bm_alloc(bm, n, BM_PID_NONE, &first) == 0);
	for (int pass = 0; pass < 3; pass++)
		for (uint64_t i = 0; i < n; i++) {
			struct arg a = { .pid = first + i, .write = pass == 0 };
			CHECK(bm_run(bm, op_touch, &a) == 0);
			if (pass > 0) /* a hit right after the load */
				CHECK(bm_run(bm, op_touch, &a) == 0);
		}
	struct bm_stats st;
	bm_stats_get(bm, &st);
	CHECK(bm_close(bm) == 0);

	struct ev_trace t;
	CHECK(ev_trace_read(trace, &t) == 0);
	uint64_t kinds[4] = { 0 }, data_loads = 0;
	for (size_t i = 0; i < t.n; i++) {
		unsigned k = (unsigned)(t.rec[i] >> 56);
		uint64_t pid = t.rec[i] & EV_PID_MASK;
		CHECK(k <= EV_REC_EVICT);
		if (k <= EV_REC_EVICT)
			kinds[k]++;
		if (k == EV_REC_LOAD && pid >= first && pid < first + n)
			data_loads++;
	}
	printf("trace: %zu records: %llu hits, %llu loads, %llu evictions; pool: %llu hits, "
	       "%llu loads, %llu evictions\n",
	       t.n, (unsigned long long)kinds[0], (unsigned long long)kinds[1],
	       (unsigned long long)kinds[2], (unsigned long long)st.hits,
	       (unsigned long long)(st.loads + st.zero_loads), (unsigned long long)st.evictions);
	/* Every load and eviction is there (those of close too, after the
	 * snapshot: at least as many); a hit right after its own load is the
	 * load's record, not a second one. */
	CHECK(kinds[EV_REC_LOAD] >= st.loads + st.zero_loads);
	CHECK(kinds[EV_REC_EVICT] >= st.evictions && st.evictions > 0);
	CHECK(kinds[EV_REC_ACCESS] <= st.hits);
	CHECK(kinds[EV_REC_ACCESS] >= 2 * n); /* the second read of each page */
	/* 3 passes of 1024 pages over 256 frames: each page comes in each pass. */
	CHECK(data_loads >= 3 * n);
	/* The simulated clock at the pool's size misses as often as the pool. */
	struct ev_params p = { .capacity = 256, .cluster = -1 };
	struct ev_policy *pol = ev_policy_new(EV_CLOCK, &p);
	uint64_t misses = 0;
	for (size_t i = 0; i < t.n; i++)
		if ((t.rec[i] >> 56) <= EV_REC_LOAD && !ev_access(pol, t.rec[i] & EV_PID_MASK))
			misses++;
	CHECK(misses >= 3 * n);
	ev_policy_free(pol);
	ev_trace_free(&t);
	unlink(trace);
	unlink(img);
	rmdir(dir);
	if (!failures)
		printf("test_trace: all passed\n");
	return failures ? 1 : 0;
}
