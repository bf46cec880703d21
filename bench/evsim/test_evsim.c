/*
 * test_evsim: the policies of evsim on tiny traces whose hit counts were
 * worked out by hand (the steps are in the comments), and the two trace
 * formats. Plain checks that stay on in release builds.
 */
#include "evsim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);  \
			failures++;                                                            \
		}                                                                              \
	} while (0)

static struct ev_stats run(enum ev_kind k, struct ev_params p, const uint64_t *tr, size_t n,
			   const bool *want_hit)
{
	struct ev_policy *pol = ev_policy_new(k, &p);
	struct ev_stats s;
	CHECK(pol != NULL);
	for (size_t i = 0; i < n; i++) {
		bool hit = ev_access(pol, tr[i]);
		if (want_hit && hit != want_hit[i]) {
			fprintf(stderr, "%s: access %zu (page %llu): %s, expected %s\n",
				ev_kind_name(k), i, (unsigned long long)tr[i], hit ? "hit" : "miss",
				want_hit[i] ? "hit" : "miss");
			failures++;
		}
	}
	ev_stats_get(pol, &s);
	ev_policy_free(pol);
	return s;
}
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* LRU, 4 pages: 1 2 3 4 fill; 1 hits (order 2 3 4 1); 5 evicts 2; 2 evicts
 * 3; 3 evicts 4. One hit, seven misses. */
static void test_lru(void)
{
	const uint64_t tr[] = { 1, 2, 3, 4, 1, 5, 2, 3 };
	const bool hit[] = { 0, 0, 0, 0, 1, 0, 0, 0 };
	struct ev_stats s = run(EV_LRU, (struct ev_params){ .capacity = 4 }, tr, N(tr), hit);
	CHECK(s.hits == 1 && s.misses == 7 && s.evictions == 3 && s.resident == 4);
}

/*
 * The engine's clock, 4 pages: the table has 64 slots, batch 1, no
 * clustering. Slots (the engine's hash): 1->15 2->31 3->46 4->62 5->13
 * 6->29 7->44.
 *   1 2 3 4   fill
 *   5   hand 0..63 marks 1 2 3 4; 64..: slot 15 (1) marked: out. 5 at 13
 *   2   hit, unmarked
 *   6   hand: 13 (5) marks, 31 (2) marks, 46 (3) marked: out. 6 at 29
 *   1   hand: 13 (5) marked: out. 1 at 15 (the tombstone)
 *   4   hit, unmarked
 *   7   hand: 15 (1) marks, 29 (6) marks, 31 (2) marked: out
 *   2   hand: 15 (1) marked: out
 * Hits at 2 and 4: two hits, nine misses, five evictions.
 */
static void test_clock(void)
{
	const uint64_t tr[] = { 1, 2, 3, 4, 5, 2, 6, 1, 4, 7, 2 };
	const bool hit[] = { 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0 };
	struct ev_params p = { .capacity = 4, .cluster = 0 };
	struct ev_stats s = run(EV_CLOCK, p, tr, N(tr), hit);
	CHECK(s.hits == 2 && s.misses == 9 && s.evictions == 5);
}

/*
 * Clustering, 8 pages (batch 2): after 1..8 fill, 9 makes the hand mark
 * all (slot order 5 1 6 2 7 3 8 4) and take 5 first. With clustering 5
 * takes its marked neighbour 4 along (the batch is full); without, the
 * hand goes on to 1. 10 finds a free frame. 4 then misses with clustering
 * (the hand takes 1, and 2 along) and hits without; 3 hits in both.
 */
static void test_clock_cluster(void)
{
	const uint64_t tr[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 4, 3 };
	const bool hit_c[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	const bool hit_n[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1 };
	struct ev_stats s = run(EV_CLOCK, (struct ev_params){ .capacity = 8, .cluster = 32 }, tr,
				N(tr), hit_c);
	CHECK(s.hits == 1 && s.evictions == 4);
	s = run(EV_CLOCK, (struct ev_params){ .capacity = 8, .cluster = 0 }, tr, N(tr), hit_n);
	CHECK(s.hits == 2 && s.evictions == 2);
}

/*
 * 2Q, 4 pages: Kin 1, Kout 2 (heads first).
 *   1 2 1 3 4   A1in [4 3 2 1], 1 hits in A1in (no move)
 *   5   A1in over Kin: 1 to A1out [1]
 *   1   in A1out: to Am [1]; 2 to A1out [2]
 *   2   in A1out: to Am [2 1]; 3 to A1out [3]
 *   1   hit, Am [1 2]
 *   6   4 to A1out [4 3]; A1in [6 5]
 *   3   in A1out: Am [3 1 2]; 5 to A1out [5 4]; A1in [6]
 *   7   A1in at Kin: Am's tail 2 goes (no ghost); A1in [7 6]
 *   2   not a ghost: 6 to A1out [6 5] (4 drops off); A1in [2 7]
 *   4   not a ghost: 7 to A1out [7 6]
 * Two hits, twelve misses, three ghost hits.
 */
static void test_2q(void)
{
	const uint64_t tr[] = { 1, 2, 1, 3, 4, 5, 1, 2, 1, 6, 3, 7, 2, 4 };
	const bool hit[] = { 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0 };
	struct ev_stats s = run(EV_2Q, (struct ev_params){ .capacity = 4 }, tr, N(tr), hit);
	CHECK(s.hits == 2 && s.misses == 12 && s.ghost_hits == 3);
	CHECK(s.small == 2 && s.main == 2 && s.ghost == 2);
}

/*
 * S3-FIFO, 4 pages: small 1, main 3, ghost 3 (heads first).
 *   1 2 3 4   S [4 3 2 1]; 1 hits (freq 1)
 *   5   S's tail 1 was hit: to M [1]; 2 to G [2]
 *   6   3 to G [3 2]
 *   2   in G: to M [2 1]; 4 to G [4 3]
 *   1   hit (freq 1)
 *   7   5 to G [5 4 3]
 *   3   in G: to M [3 2 1]; 6 to G [6 5 4]
 *   8 9 4   7, 8, 9 to G in turn (3 4 5 drop off): G [9 8 7]; S [4]
 *   4   hit (freq 1)
 *   10  4 to M [4 3 2 1], over 3: M's tail 1 (freq 1) goes round with 0,
 *       2 (freq 0) goes; S [10]
 *   1   hit
 *   2   not a ghost: 10 to G [10 9 8]; S [2]
 * Four hits, fourteen misses, two ghost hits, two promotions, ten
 * evictions.
 */
static void test_s3fifo(void)
{
	const uint64_t tr[] = { 1, 2, 3, 4, 1, 5, 6, 2, 1, 7, 3, 8, 9, 4, 4, 10, 1, 2 };
	const bool hit[] = { 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0 };
	struct ev_stats s = run(EV_S3FIFO, (struct ev_params){ .capacity = 4 }, tr, N(tr), hit);
	CHECK(s.hits == 4 && s.misses == 14 && s.ghost_hits == 2 && s.promotions == 2);
	CHECK(s.evictions == 10 && s.small == 1 && s.main == 3 && s.ghost == 3);
}

/*
 * s3clock, 4 pages: small 1, ghost 3, batch 1.
 *   1 2 3 4   S [4 3 2 1]; 1 hits
 *   5   S's tail 1 was hit: to main; 2 out, G [2]
 *   6   3 out, G [3 2]
 *   1   hit (main)
 *   5   hit (S)
 *   2   in G: into main; 4 out, G [4 3]
 *   7   5 was hit: to main; 6 out, G [6 4 3]
 *   1   hit (main)
 * Four hits; eight misses (1 2 3 4 5 6 2 7), one ghost hit, two
 * promotions (1 and 5).
 */
static void test_s3clock(void)
{
	const uint64_t tr[] = { 1, 2, 3, 4, 1, 5, 6, 1, 5, 2, 7, 1 };
	const bool hit[] = { 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1 };
	struct ev_stats s = run(EV_S3CLOCK, (struct ev_params){ .capacity = 4 }, tr, N(tr), hit);
	CHECK(s.hits == 4 && s.misses == 8 && s.ghost_hits == 1 && s.promotions == 2);
	CHECK(s.small == 1 && s.main == 3 && s.ghost == 3);
}

/*
 * Scan resistance, 40 pages: 8 hot pages read twice, a scan of 200 cold
 * pages, the hot pages once more. The clock loses them all (the scan is
 * five pools long); S3-FIFO and s3clock promoted them at their second
 * read and keep all 8; LRU loses them too. (Hits: the 8 second reads,
 * plus the 8 of the last pass for the two that keep them.)
 */
static void test_scan(void)
{
	uint64_t tr[8 * 2 + 200 + 8];
	size_t n = 0;
	for (int r = 0; r < 2; r++)
		for (uint64_t i = 0; i < 8; i++)
			tr[n++] = 100 + i;
	for (uint64_t i = 0; i < 200; i++)
		tr[n++] = 1000 + i;
	for (uint64_t i = 0; i < 8; i++)
		tr[n++] = 100 + i;
	struct ev_params p = { .capacity = 40, .cluster = -1 };
	CHECK(run(EV_CLOCK, p, tr, n, NULL).hits == 8);
	CHECK(run(EV_LRU, p, tr, n, NULL).hits == 8);
	CHECK(run(EV_S3FIFO, p, tr, n, NULL).hits == 16);
	CHECK(run(EV_S3CLOCK, p, tr, n, NULL).hits == 16);
}

/*
 * s3clock's probation queue adapts, 100 pages (10 to start, 5 to 50): a
 * loop over 120 pages brings back what probation let go (ghost hits, two
 * pages of growth each against a quarter page per page let go), so it
 * grows to its bound; a scan of new pages, none of which come back,
 * shrinks it to its floor.
 */
static void test_s3clock_adapts(void)
{
	struct ev_params p = { .capacity = 100 };
	struct ev_policy *pol = ev_policy_new(EV_S3CLOCK, &p);
	struct ev_stats s;
	CHECK(pol != NULL);
	ev_stats_get(pol, &s);
	CHECK(s.small_target == 10);
	for (int pass = 0; pass < 20; pass++)
		for (uint64_t i = 0; i < 120; i++)
			ev_access(pol, 1000 + i);
	ev_stats_get(pol, &s);
	CHECK(s.ghost_hits > 0);
	CHECK(s.small_target == 50);
	for (uint64_t i = 0; i < 1000; i++)
		ev_access(pol, 5000 + i);
	ev_stats_get(pol, &s);
	CHECK(s.small_target == 5);
	ev_policy_free(pol);

	/* fixed_small (evsim -F): the same loop leaves it where it was */
	p.fixed_small = true;
	p.small_ratio = 0.2;
	pol = ev_policy_new(EV_S3CLOCK, &p);
	CHECK(pol != NULL);
	for (int pass = 0; pass < 20; pass++)
		for (uint64_t i = 0; i < 120; i++)
			ev_access(pol, 1000 + i);
	ev_stats_get(pol, &s);
	CHECK(s.ghost_hits > 0);
	CHECK(s.small_target == 20);
	ev_policy_free(pol);
}

/*
 * Windows (ev_replay_windows), LRU of 4 pages, windows of 3 accesses:
 *   1 2             miss miss               window 0, phase 0 (cut by the marker)
 *   marker 7
 *   1 3 (load) 4    hit miss miss           window 1, its one recorded load
 *   1 5 (evict 2) 2 hit, 5 evicts 2, 2 evicts 3: window 2 (the eviction
 *                   record is skipped, not counted)
 *   1               hit                     window 3, cut by the marker
 *   marker 8, marker 9 (nothing between: no window)
 *   3               miss                    window 4, cut by the end
 * Windows (phase, first, accesses, loads, hits): (0 0 2 0 0) (7 2 3 1 1)
 * (7 5 3 0 1) (7 8 1 0 1) (9 9 1 0 0). With no window size: one a phase,
 * (0 0 2 0 0) (7 2 7 1 3) (9 9 1 0 0).
 */
struct win_log {
	unsigned n;
	struct ev_window w[8];
};

static void win_note(void *arg, const struct ev_window *w)
{
	struct win_log *l = arg;
	if (l->n < 8)
		l->w[l->n] = *w;
	l->n++;
}

static void test_windows(void)
{
	struct ev_trace t = { 0 };
	const uint64_t rec[] = {
		ev_rec_make(EV_REC_ACCESS, 1), ev_rec_make(EV_REC_ACCESS, 2),
		ev_rec_make(EV_REC_MARK, 7),   ev_rec_make(EV_REC_ACCESS, 1),
		ev_rec_make(EV_REC_LOAD, 3),   ev_rec_make(EV_REC_ACCESS, 4),
		ev_rec_make(EV_REC_ACCESS, 1), ev_rec_make(EV_REC_ACCESS, 5),
		ev_rec_make(EV_REC_EVICT, 2),  ev_rec_make(EV_REC_ACCESS, 2),
		ev_rec_make(EV_REC_ACCESS, 1), ev_rec_make(EV_REC_MARK, 8),
		ev_rec_make(EV_REC_MARK, 9),   ev_rec_make(EV_REC_ACCESS, 3),
	};
	for (size_t i = 0; i < N(rec); i++)
		CHECK(ev_trace_push(&t, rec[i]) == 0);
	const uint64_t want3[][5] = {
		{ 0, 0, 2, 0, 0 }, { 7, 2, 3, 1, 1 }, { 7, 5, 3, 0, 1 }, { 7, 8, 1, 0, 1 },
		{ 9, 9, 1, 0, 0 },
	};
	const uint64_t want0[][5] = { { 0, 0, 2, 0, 0 }, { 7, 2, 7, 1, 3 }, { 9, 9, 1, 0, 0 } };
	for (int pass = 0; pass < 2; pass++) {
		struct ev_params p = { .capacity = 4 };
		struct ev_policy *pol[EV_NKINDS] = { 0 };
		pol[EV_LRU] = ev_policy_new(EV_LRU, &p);
		CHECK(pol[EV_LRU] != NULL);
		struct win_log l = { 0 };
		uint64_t every = pass == 0 ? 3 : 0;
		const uint64_t(*want)[5] = pass == 0 ? want3 : want0;
		unsigned nwant = pass == 0 ? N(want3) : N(want0);
		CHECK(ev_replay_windows(&t, pol, every, win_note, &l) == nwant);
		CHECK(l.n == nwant);
		for (unsigned i = 0; i < l.n && i < nwant; i++) {
			const struct ev_window *w = &l.w[i];
			if (w->index != i || w->phase != want[i][0] || w->first != want[i][1] ||
			    w->accesses != want[i][2] || w->loads != want[i][3] ||
			    w->hits[EV_LRU] != want[i][4] || w->hits[EV_CLOCK] != 0) {
				fprintf(stderr,
					"window %u (every %llu): phase %llu first %llu accesses %llu "
					"loads %llu hits %llu\n",
					i, (unsigned long long)every, (unsigned long long)w->phase,
					(unsigned long long)w->first, (unsigned long long)w->accesses,
					(unsigned long long)w->loads,
					(unsigned long long)w->hits[EV_LRU]);
				failures++;
			}
		}
		ev_policy_free(pol[EV_LRU]);
	}
	ev_trace_free(&t);
}

static void test_formats(void)
{
	char text[] = "/tmp/evsim-test-XXXXXX";
	int fd = mkstemp(text);
	CHECK(fd >= 0);
	const char body[] = "# comment\n5\n\n  7 l\n9 e\n2 m\n11 a";
	CHECK(write(fd, body, strlen(body)) == (ssize_t)strlen(body));
	close(fd);
	struct ev_trace t;
	CHECK(ev_trace_read(text, &t) == 0);
	CHECK(t.n == 5);
	if (t.n == 5) {
		CHECK(t.rec[0] == ev_rec_make(EV_REC_ACCESS, 5));
		CHECK(t.rec[1] == ev_rec_make(EV_REC_LOAD, 7));
		CHECK(t.rec[2] == ev_rec_make(EV_REC_EVICT, 9));
		CHECK(t.rec[3] == ev_rec_make(EV_REC_MARK, 2));
		CHECK(t.rec[4] == ev_rec_make(EV_REC_ACCESS, 11));
	}
	ev_trace_free(&t);
	FILE *f = fopen(text, "w");
	CHECK(f != NULL);
	fputs("12 x\n", f);
	fclose(f);
	CHECK(ev_trace_read(text, &t) < 0);

	/* Binary, little endian, with a torn last record left out. */
	f = fopen(text, "wb");
	const uint8_t bin[] = { 'V', 'S', 'E', 'V', 'T', 'R', '0', '1',
				0x34, 0x12, 0, 0, 0, 0, 0, 0x01, /* load of 0x1234 */
				0x05, 0, 0, 0, 0, 0, 0, 0,       /* access of 5 */
				0x07, 0, 0 };
	CHECK(fwrite(bin, 1, sizeof(bin), f) == sizeof(bin));
	fclose(f);
	CHECK(ev_trace_read(text, &t) == 0);
	CHECK(t.n == 2);
	if (t.n == 2) {
		CHECK(t.rec[0] == ev_rec_make(EV_REC_LOAD, 0x1234));
		CHECK(t.rec[1] == ev_rec_make(EV_REC_ACCESS, 5));
	}
	ev_trace_free(&t);

	/* Folding: a prefetch of 3 and 4, then 3 used twice and 4 evicted
	 * unused, then 4 used: 3's first use folds into its prefetch, its
	 * second stays; 4's prefetch ends at the eviction, so its later use
	 * stays (a load or a hit of its own). */
	f = fopen(text, "w");
	fputs("3 p\n4 p\n3\n3\n4 e\n4 l\n", f);
	fclose(f);
	CHECK(ev_trace_read(text, &t) == 0);
	CHECK(ev_trace_fold(&t) == 1);
	CHECK(t.n == 5);
	if (t.n == 5) {
		CHECK(t.rec[0] == ev_rec_make(EV_REC_LOAD, 3));
		CHECK(t.rec[1] == ev_rec_make(EV_REC_LOAD, 4));
		CHECK(t.rec[2] == ev_rec_make(EV_REC_ACCESS, 3));
		CHECK(t.rec[3] == ev_rec_make(EV_REC_EVICT, 4));
		CHECK(t.rec[4] == ev_rec_make(EV_REC_LOAD, 4));
	}
	ev_trace_free(&t);
	unlink(text);
}

int main(void)
{
	test_lru();
	test_clock();
	test_clock_cluster();
	test_2q();
	test_s3fifo();
	test_s3clock();
	test_scan();
	test_s3clock_adapts();
	test_windows();
	test_formats();
	if (failures)
		fprintf(stderr, "test_evsim: %d failures\n", failures);
	else
		printf("test_evsim: all passed\n");
	return failures ? 1 : 0;
}
