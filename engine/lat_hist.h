/*
 * lat_hist.h: a lock-free latency histogram (log-linear buckets, like
 * HdrHistogram with two significant bits).
 *
 * Any number of threads record into one histogram at once; a reader takes a
 * snapshot at any time and asks it for percentiles or for the cumulative
 * counts a Prometheus histogram prints. Recording is one relaxed atomic add
 * on the bucket, one on the sum and a relaxed load (rarely a CAS) for the
 * maximum: no lock, no allocation, cheap next to anything worth timing
 * (a read from the backing store costs microseconds).
 *
 * Buckets (values in nanoseconds, each bucket a half-open range (lo, hi], so
 * that "count of values <= an edge" is exact, as Prometheus's `le` means):
 *
 *   index        range (ns)                          width
 *   0            [0, 1000]                           underflow: up to 1 us
 *   1 + 4k + j   (250 * 2^k * (4 + j),               2^k * 250 ns
 *                 250 * 2^k * (5 + j)]
 *                k = 0 .. LH_OCTAVES-1, j = 0..3     (4 per power of two)
 *   LH_BUCKETS-1 (1000 * 2^LH_OCTAVES, inf)           overflow: > ~134 s
 *
 * so octave k spans (2^k us, 2^(k+1) us] in four equal steps: every bucket
 * is at most 25% wider than its lower edge, which bounds the error of a
 * percentile read from it. Octave edges are whole microseconds times a power
 * of two, so they print exactly in seconds (0.000001, 0.000512, 1.048576).
 *
 * The count is not kept apart: it is the sum of the buckets, so a snapshot's
 * count always equals its buckets' total, whatever races with it (the sum may
 * lag or lead by the values being recorded meanwhile).
 */
#ifndef VS_ENGINE_LAT_HIST_H
#define VS_ENGINE_LAT_HIST_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define LH_OCTAVES 27 /* 1 us .. 2^27 us (134 s) */
#define LH_SUB	   4  /* buckets per power of two */
#define LH_BUCKETS (1 + LH_OCTAVES * LH_SUB + 1)
#define LH_MIN_NS  1000u /* upper edge of the underflow bucket */

struct lat_hist {
	_Atomic uint64_t bucket[LH_BUCKETS];
	_Atomic uint64_t sum_ns;
	_Atomic uint64_t max_ns;
};

/* A copy of a histogram at one moment, or the difference of two. */
struct lat_snap {
	uint64_t bucket[LH_BUCKETS];
	uint64_t count;	 /* sum of the buckets */
	uint64_t sum_ns; /* sum of the recorded values */
	uint64_t max_ns; /* largest value recorded; 0 when unknown (a delta) */
};

/* Nanoseconds on CLOCK_MONOTONIC (a vDSO call with kvm-clock or tsc: ~50 ns
 * measured on these VMs, no syscall). */
static inline uint64_t lh_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The bucket a value of @ns falls in. */
static inline unsigned lh_bucket_of(uint64_t ns)
{
	if (ns <= LH_MIN_NS)
		return 0;
	/* Edges are 250 * m ns with m = 2^k * (4 + j); the largest edge below
	 * ns is the largest such m <= u. u >= 4 here. */
	uint64_t u = (ns - 1) / 250;
	unsigned top = 63u - (unsigned)__builtin_clzll(u); /* floor(log2 u) >= 2 */
	unsigned k = top - 2;
	if (k >= LH_OCTAVES)
		return LH_BUCKETS - 1;
	return 1 + k * LH_SUB + (unsigned)(u >> k) - 4;
}

/* Record one value. Safe from any number of threads at once. */
static inline void lh_record(struct lat_hist *h, uint64_t ns)
{
	atomic_fetch_add_explicit(&h->bucket[lh_bucket_of(ns)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
	uint64_t m = atomic_load_explicit(&h->max_ns, memory_order_relaxed);
	while (ns > m && !atomic_compare_exchange_weak_explicit(
			     &h->max_ns, &m, ns, memory_order_relaxed, memory_order_relaxed))
		;
}

/* Lower and upper edge of bucket @i in ns (the upper edge of the overflow
 * bucket is UINT64_MAX). A value v is in bucket i when lower < v <= upper
 * (bucket 0 also holds 0). */
uint64_t lh_bucket_lower(unsigned i);
uint64_t lh_bucket_upper(unsigned i);

/* Copy @h into @ret (relaxed loads: a consistent-enough picture while
 * others record). */
void lh_snapshot(struct lat_hist *h, struct lat_snap *ret);

/* @ret = @cur - @prev: what was recorded between the two snapshots. The
 * maximum is kept when it grew in between (it was recorded then), else 0. */
void lh_snap_sub(const struct lat_snap *cur, const struct lat_snap *prev, struct lat_snap *ret);

/* Values recorded that were <= @ns. Exact when @ns is a bucket edge
 * (lh_bucket_upper); otherwise the count up to the last edge below it. */
uint64_t lh_count_le(const struct lat_snap *s, uint64_t ns);

/* The @q quantile (0 <= q <= 1) in ns: the bucket holding rank q*count,
 * interpolated linearly inside it, never above the maximum when that is
 * known. 0 for an empty snapshot. */
double lh_quantile(const struct lat_snap *s, double q);

/* Mean in ns; 0 for an empty snapshot. */
double lh_mean(const struct lat_snap *s);

#endif
