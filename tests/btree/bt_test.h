/* Helpers shared by the B-tree tests: a pool over an image in a private temp
 * directory (on the backend VS_TEST_BACKEND names: tests/lib/vt_bm.h), a
 * deterministic random generator, the VS_TEST_SCALE knob. */
#ifndef VS_TESTS_BT_TEST_H
#define VS_TESTS_BT_TEST_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/btree.h"
#include "vt_bm.h"

struct tenv {
	char dir[256];
	char path[300];
	struct bm_config cfg;
	struct bm *bm;
};

/* Format an image of @image_bytes and open it with a pool of @pool_bytes.
 * Reads go through the page cache (no O_DIRECT): the tests evict all the
 * time and want that to be cheap (VS_TEST_DIRECT=1: O_DIRECT). Tests that
 * wrap every change in bm_txn_begin/end pass @txns, and then
 * VS_TEST_JOURNAL=1 runs them in journal mode (no steal, checkpoints).
 * Returns 0 or a negative errno. */
static inline int tenv_open_txn(struct tenv *e, uint64_t image_bytes, uint64_t pool_bytes,
				bool txns)
{
	const char *tmp = getenv("TMPDIR");
	int r;
	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "%s/vs-btree-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(e->dir))
		return -errno;
	snprintf(e->path, sizeof(e->path), "%s/image", e->dir);
	r = bm_format(e->path, image_bytes, false);
	if (r < 0)
		return r;
	e->cfg.path = e->path;
	e->cfg.pool_bytes = pool_bytes;
	e->cfg.no_direct = getenv("VS_TEST_DIRECT") == NULL;
	e->cfg.journal = txns && getenv("VS_TEST_JOURNAL") != NULL;
	/* VS_TEST_BACKEND=madvise (default) | exmap | auto: tests/lib/vt_bm.h */
	return vt_bm_open(&e->cfg, &e->bm);
}

static inline int tenv_open(struct tenv *e, uint64_t image_bytes, uint64_t pool_bytes)
{
	return tenv_open_txn(e, image_bytes, pool_bytes, false);
}

static inline int tenv_reopen(struct tenv *e)
{
	int r = bm_close(e->bm);
	e->bm = NULL;
	if (r < 0)
		return r;
	return vt_bm_open(&e->cfg, &e->bm);
}

static inline void tenv_close(struct tenv *e)
{
	bm_close(e->bm);
	e->bm = NULL;
	unlink(e->path);
	rmdir(e->dir);
}

static inline uint64_t tenv_free_pages(struct tenv *e)
{
	struct bm_stats s;
	bm_stats_get(e->bm, &s);
	return s.free_pages;
}

/* VS_TEST_SCALE=N multiplies the work of the long tests. */
static inline unsigned test_scale(void)
{
	const char *s = getenv("VS_TEST_SCALE");
	long v = s ? strtol(s, NULL, 10) : 1;
	return v >= 1 ? (unsigned)v : 1;
}

/* xorshift64*: small, fast, the same sequence everywhere. */
static inline uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

/* Fill @buf with @len bytes derived from @seed (values checkable later). */
static inline void fill_bytes(uint8_t *buf, unsigned len, uint64_t seed)
{
	uint64_t s = seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
	for (unsigned i = 0; i < len; i += 8) {
		uint64_t v = rng_next(&s);
		memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
	}
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

#endif
