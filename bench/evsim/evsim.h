/*
 * evsim.h: a trace-driven simulator of page eviction policies, with no
 * dependency on the engine. One policy instance holds at most `capacity`
 * pages; ev_access replays one page access and says whether it was a hit.
 *
 * Policies (ev_policy_new):
 *
 *   clock    the engine's clock (engine/bm_evict.c), slot for slot: the
 *            resident set is an open-addressing table of 1.5x capacity
 *            rounded up to a power of two, indexed by the same
 *            multiplicative hash; the hand takes 64 slots at a time and
 *            marks unmarked pages, takes marked ones; a hit clears the
 *            mark; eviction runs when a load finds the pool full and takes
 *            a batch (min(64, capacity / 4)) of victims, each with the
 *            marked neighbours (pid +- 1 .. cluster) it would take along
 *            (all pages are clean here: a trace carries no writes).
 *   lru      exact LRU (a list; a hit moves the page to the front).
 *   2q       2Q (Johnson and Shasha, VLDB'94), full version: A1in FIFO of
 *            25% of capacity, A1out ghost of 50%, Am LRU.
 *   s3fifo   S3-FIFO (Yang et al., SOSP'23), as in libCacheSim's S3FIFOv0:
 *            small FIFO of 10% of capacity, main FIFO with a 2-bit
 *            frequency (hits count up to 3, the main hand reinserts a page
 *            with freq > 0 and decrements it), ghost FIFO of the small
 *            queue's evictions with as many entries as the main queue
 *            holds; a page leaves the small queue for main when it was hit
 *            at least `promote` times there, and a miss found in the ghost
 *            goes to main directly.
 *   s3clock  the policy proposed for the engine: S3-FIFO's split with what
 *            the engine can keep without a list move or a counter on a hit.
 *            The reference is one bit (the clock's mark, cleared by a hit:
 *            what a hit does today); a loaded page enters probation (a
 *            FIFO of load order, 10% of capacity); at its tail a page that
 *            was hit goes to main, one that was not goes out and into the
 *            ghost; main is the engine's clock over the resident table
 *            (second chance, hash order); victims are taken in batches as
 *            the engine does. The ghost is bounded by `ghost_ratio` x
 *            capacity entries (4-byte fingerprints in an engine, so 0.9 x
 *            capacity costs 0.09% of the pool's memory). The probation
 *            queue's size adapts between 5% and 50% of capacity: a ghost
 *            hit grows it by 2 pages, a page let go into the ghost shrinks
 *            it by 1/4 page (policies.c, s3clock_adapt); fixed_small keeps
 *            it at small_ratio instead.
 *
 *            What the engine needs to run it, learnt from its traces:
 *            every page the file system reads comes in by a prefetch (or
 *            a fix that loads it) and is used once right after, so "hit
 *            since it came in" must not count that first use (the trace
 *            folds it, ev_trace_fold). With the mark alone the engine
 *            cannot tell a first use from a re-reference: the first use
 *            clears the mark as a second would, and marking later (at the
 *            probation hand's first pass, or some loads after) misses the
 *            hot pages that were reused before it. One bit in the state
 *            word does it, set when the page comes in and cleared by the
 *            first fix in the same CAS that a fix of a marked page does
 *            today (the second fix then clears the mark): still one
 *            state-word access on a hit. Not built yet.
 */
#ifndef VS_BENCH_EVSIM_H
#define VS_BENCH_EVSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ev_kind { EV_CLOCK, EV_LRU, EV_2Q, EV_S3FIFO, EV_S3CLOCK, EV_NKINDS };

struct ev_params {
	uint64_t capacity;  /* pages */
	unsigned batch;     /* clock, s3clock: victims per batch; 0 = min(64, capacity / 4) */
	int cluster;        /* clock: neighbours per side; < 0 = default (32) */
	double small_ratio; /* s3fifo, s3clock: small queue; 0 = 0.1 */
	double ghost_ratio; /* s3fifo, s3clock: ghost entries / capacity; 0 = 1 - small */
	unsigned promote;   /* s3fifo: hits in small to go to main; 0 = 1 */
	bool fixed_small;   /* s3clock: probation stays at small_ratio (no adapting) */
};

/* What a policy did, and how its queues stand. */
struct ev_stats {
	uint64_t hits, misses, evictions;
	uint64_t promotions;  /* small -> main (2q: A1out -> Am) */
	uint64_t ghost_hits;  /* misses found in the ghost */
	uint64_t resident, small, main, ghost; /* pages in each queue now */
	uint64_t small_target; /* the small queue's size: s3clock's adapted one,
				* s3fifo's, 2q's Kin; 0 for the others */
};

struct ev_policy;

const char *ev_kind_name(enum ev_kind k);
int ev_kind_parse(const char *name); /* -1 when unknown */
/* NULL when out of memory or capacity < 4. */
struct ev_policy *ev_policy_new(enum ev_kind k, const struct ev_params *p);
void ev_policy_free(struct ev_policy *pol);
/* Replay one access of page @pid; true when it was resident. */
bool ev_access(struct ev_policy *pol, uint64_t pid);
void ev_stats_get(const struct ev_policy *pol, struct ev_stats *ret);

/*
 * Traces. One access per record, in one of two formats:
 *
 *   text    one record a line: a decimal page id, optionally followed by a
 *           kind letter (a access, l load, e eviction, m marker); blank
 *           lines and lines starting with '#' are skipped.
 *   binary  the 8 bytes "VSEVTR01", then records of 8 bytes, little
 *           endian: bits 0-55 the page id, bits 56-63 the kind (below).
 *           This is what the engine writes (bm_config.evict_trace).
 *
 * Kinds: EV_REC_ACCESS (0) a hit in the pool that recorded it, or any
 * access of a generated trace; EV_REC_LOAD (1) a load (a miss there);
 * EV_REC_EVICT (2) an eviction there; EV_REC_MARK (3) a phase marker (the
 * id is the phase's number); EV_REC_PREFETCH (4) a load ahead of use (the
 * file system's read-ahead of the pages of one request). The simulator
 * replays accesses and loads as accesses, counts the recorded evictions,
 * and starts a new phase at each marker. A prefetch and the first access
 * of that page after it are one access (ev_trace_fold): the read that asked
 * for the prefetch is the first use, as a load by a fix is, so that a
 * policy does not take the pair for a re-reference.
 */
#define EV_TRACE_MAGIC "VSEVTR01"
enum ev_rec {
	EV_REC_ACCESS = 0,
	EV_REC_LOAD = 1,
	EV_REC_EVICT = 2,
	EV_REC_MARK = 3,
	EV_REC_PREFETCH = 4,
};
#define EV_PID_MASK ((UINT64_C(1) << 56) - 1)

static inline uint64_t ev_rec_make(enum ev_rec kind, uint64_t pid)
{
	return (pid & EV_PID_MASK) | ((uint64_t)kind << 56);
}

struct ev_trace {
	uint64_t *rec;
	size_t n, cap;
};

/* Read a trace file (either format; "-" is stdin). 0 or a negative errno. */
int ev_trace_read(const char *path, struct ev_trace *ret);
int ev_trace_push(struct ev_trace *t, uint64_t rec);
void ev_trace_free(struct ev_trace *t);
/* Fold each prefetch and the next access of its page into one load record
 * (in place). Returns how many accesses were folded, or -ENOMEM. */
long ev_trace_fold(struct ev_trace *t);

/*
 * Hit ratios over time (window.c). ev_replay_windows replays @t (folded
 * already) through the policies pol[0..EV_NKINDS) (NULL entries skipped)
 * and calls @fn once per window with the window's counts. A window closes
 * after @every accesses (0: never) and at each marker, so that none spans
 * two phases; an empty window is not reported. Recorded evictions are
 * skipped, as in the table. Returns the number of windows reported.
 */
struct ev_window {
	uint64_t index;    /* 0, 1, ... */
	uint64_t phase;    /* the id of the last marker before it; 0 before any */
	uint64_t first;    /* accesses before it */
	uint64_t accesses; /* accesses in it */
	uint64_t loads;    /* of them, loads in the pool that recorded the trace */
	uint64_t hits[EV_NKINDS]; /* of them, each policy's hits */
};
typedef void ev_window_fn(void *arg, const struct ev_window *w);
uint64_t ev_replay_windows(const struct ev_trace *t, struct ev_policy *const *pol, uint64_t every,
			   ev_window_fn *fn, void *arg);

#endif
