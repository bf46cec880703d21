/*
 * mem_internal.h: the backend contract behind mem.h. Each backend fills in a
 * struct mem_ops; mem.c dispatches. Nothing outside exmap/ and its tests
 * includes this.
 */
#ifndef VS_EXMAP_MEM_INTERNAL_H
#define VS_EXMAP_MEM_INTERNAL_H

#include "exmap/mem.h"

struct mem_ops {
	const char *name;
	bool faults_on_evicted;
	/* Set up the region; store backend state in m->priv and the region in
	 * m->base. Returns 0 or a negative errno (-ENODEV: not available). */
	int (*open)(struct mem *m, const struct mem_config *cfg);
	void (*close)(struct mem *m);
	int (*thread_attach)(struct mem *m);
	void (*thread_detach)(struct mem *m, int iface);
	int (*read)(struct mem *m, int iface, uint64_t pid);
	int (*alloc)(struct mem *m, int iface, uint64_t pid);
	int (*free)(struct mem *m, int iface, const uint64_t *pids, unsigned n);
	/* Optional batch forms; without them mem.c loops over read/alloc. */
	int (*alloc_many)(struct mem *m, int iface, const uint64_t *pids, unsigned n);
	int (*read_run)(struct mem *m, int iface, uint64_t first, unsigned n);
};

struct mem {
	const struct mem_ops *ops;
	struct mem_config cfg;
	void *base;
	uint64_t region_bytes;
	void *priv;
};

extern const struct mem_ops mem_plain_ops;

/* The plain backend's choice of how to drop a batch of frames (mem.c says
 * why): here so that its tests can drive it with made-up costs. */
enum { FREE_VECTOR, FREE_LOOP, FREE_WAYS };
#define FREE_PROBE 256 /* one batch in FREE_PROBE tries the other way */

/* @ns: ns per page each way has cost lately, 0 when not measured yet;
 * @batch: a running count of batches. */
static inline unsigned plain_free_pick(const uint32_t ns[FREE_WAYS], uint32_t batch)
{
	if (ns[FREE_VECTOR] == 0)
		return FREE_VECTOR;
	if (ns[FREE_LOOP] == 0)
		return FREE_LOOP;
	unsigned best = ns[FREE_LOOP] < ns[FREE_VECTOR] ? FREE_LOOP : FREE_VECTOR;
	return batch % FREE_PROBE == 0 ? FREE_WAYS - 1 - best : best;
}

/* An average that gives the last sample a quarter of the weight. */
static inline uint32_t plain_free_ewma(uint32_t avg, uint32_t sample)
{
	return avg == 0 ? sample : (uint32_t)(((uint64_t)avg * 3 + sample) / 4);
}

/* Batches dropped each way and their cost per page (plain backend; zeros
 * for exmap). */
void mem_free_ways(const struct mem *m, uint64_t batches[FREE_WAYS], uint32_t ns[FREE_WAYS]);
extern const struct mem_ops mem_exmap_ops;

#endif
