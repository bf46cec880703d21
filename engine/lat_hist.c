/*
 * lat_hist.c: snapshots and percentiles of the latency histogram
 * (lat_hist.h). Recording is inline in the header.
 */
#include "engine/lat_hist.h"

#include <string.h>

uint64_t lh_bucket_upper(unsigned i)
{
	if (i == 0)
		return LH_MIN_NS;
	if (i >= LH_BUCKETS - 1)
		return UINT64_MAX;
	unsigned k = (i - 1) / LH_SUB, j = (i - 1) % LH_SUB;
	return (UINT64_C(250) << k) * (5 + j);
}

uint64_t lh_bucket_lower(unsigned i)
{
	return i == 0 ? 0 : lh_bucket_upper(i - 1);
}

void lh_snapshot(struct lat_hist *h, struct lat_snap *ret)
{
	ret->count = 0;
	for (unsigned i = 0; i < LH_BUCKETS; i++) {
		ret->bucket[i] = atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		ret->count += ret->bucket[i];
	}
	ret->sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
	ret->max_ns = atomic_load_explicit(&h->max_ns, memory_order_relaxed);
}

void lh_snap_sub(const struct lat_snap *cur, const struct lat_snap *prev, struct lat_snap *ret)
{
	struct lat_snap d;
	d.count = 0;
	for (unsigned i = 0; i < LH_BUCKETS; i++) {
		/* Buckets only grow; a snapshot taken with relaxed loads can
		 * still not run behind an earlier one of the same thread. */
		d.bucket[i] =
		    cur->bucket[i] >= prev->bucket[i] ? cur->bucket[i] - prev->bucket[i] : 0;
		d.count += d.bucket[i];
	}
	d.sum_ns = cur->sum_ns >= prev->sum_ns ? cur->sum_ns - prev->sum_ns : 0;
	d.max_ns = cur->max_ns > prev->max_ns ? cur->max_ns : 0;
	*ret = d;
}

uint64_t lh_count_le(const struct lat_snap *s, uint64_t ns)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < LH_BUCKETS && lh_bucket_upper(i) <= ns; i++)
		n += s->bucket[i];
	return n;
}

double lh_quantile(const struct lat_snap *s, double q)
{
	if (s->count == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	double rank = q * (double)s->count, cum = 0, v = 0;
	for (unsigned i = 0; i < LH_BUCKETS; i++) {
		if (s->bucket[i] == 0)
			continue;
		if (cum + (double)s->bucket[i] >= rank || i == LH_BUCKETS - 1) {
			double lo = (double)lh_bucket_lower(i),
			       frac = (rank - cum) / (double)s->bucket[i];
			if (frac < 0)
				frac = 0;
			if (frac > 1)
				frac = 1;
			if (i == LH_BUCKETS - 1) /* no upper edge: the maximum, or the lower one */
				v = s->max_ns > lo ? (double)s->max_ns : lo;
			else
				v = lo + frac * ((double)lh_bucket_upper(i) - lo);
			break;
		}
		cum += (double)s->bucket[i];
	}
	if (s->max_ns && v > (double)s->max_ns)
		v = (double)s->max_ns;
	return v;
}

double lh_mean(const struct lat_snap *s)
{
	return s->count ? (double)s->sum_ns / (double)s->count : 0;
}
