/*
 * mem_internal.h: the backend contract behind mem.h. Each backend fills in a
 * struct mem_ops; mem.c dispatches. Nothing outside exmap/ includes this.
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
extern const struct mem_ops mem_exmap_ops;

#endif
