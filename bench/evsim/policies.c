/*
 * policies.c: the eviction policies of evsim.h, each over one node pool
 * and one hash map from page id to node. Lists are intrusive and doubly
 * linked: head = newest, tail = oldest.
 */
#include "evsim.h"

#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

enum { Q_NONE, Q_SMALL, Q_MAIN, Q_GHOST };

struct node {
	uint64_t pid;
	uint32_t prev, next;
	uint8_t q;      /* Q_* */
	uint8_t freq;   /* s3fifo: 0..3; s3clock, clock: the reference bit */
	uint8_t marked; /* clock: marked by the hand */
	uint8_t taken;  /* clock: chosen as a victim of the batch in progress */
};

struct list {
	uint32_t head, tail;
	uint64_t n;
};

/* Open addressing, linear probing, deletion by backward shift. */
struct map {
	uint64_t *keys;
	uint32_t *vals;
	uint64_t mask;
};
#define MAP_EMPTY UINT64_MAX

/* The engine's clock table (engine/bm.c, rset_*). */
#define RSET_EMPTY UINT64_MAX
#define RSET_TOMB  (UINT64_MAX - 1)

struct ev_policy {
	enum ev_kind kind;
	struct ev_params p;
	struct node *nodes;
	uint32_t free_head;
	struct map map;
	struct list small, main, ghost;
	uint64_t small_cap, ghost_cap, kin, kout;
	/* s3clock: the small queue's target, adapted (s3clock_adapt), in
	 * 1/256 pages; its bounds */
	uint64_t small_target, small_min, small_max;
	uint64_t resident;
	struct ev_stats st;
	/* clock, s3clock */
	uint64_t *slots, slot_mask, hand;
};

static uint64_t mix(uint64_t pid)
{
	return (pid * UINT64_C(0x9E3779B97F4A7C15)) >> 11; /* engine/bm.c rset_hash */
}

static int map_init(struct map *m, uint64_t entries)
{
	uint64_t n = 64;
	while (n < 2 * entries)
		n <<= 1;
	m->keys = malloc(n * sizeof(*m->keys));
	m->vals = malloc(n * sizeof(*m->vals));
	if (!m->keys || !m->vals)
		return -1;
	memset(m->keys, 0xff, n * sizeof(*m->keys));
	m->mask = n - 1;
	return 0;
}

static uint32_t map_get(const struct map *m, uint64_t pid)
{
	for (uint64_t i = mix(pid) & m->mask;; i = (i + 1) & m->mask) {
		if (m->keys[i] == pid)
			return m->vals[i];
		if (m->keys[i] == MAP_EMPTY)
			return NIL;
	}
}

static void map_put(struct map *m, uint64_t pid, uint32_t v)
{
	uint64_t i = mix(pid) & m->mask;
	while (m->keys[i] != MAP_EMPTY && m->keys[i] != pid)
		i = (i + 1) & m->mask;
	m->keys[i] = pid;
	m->vals[i] = v;
}

static void map_del(struct map *m, uint64_t pid)
{
	uint64_t i = mix(pid) & m->mask;
	while (m->keys[i] != pid) {
		if (m->keys[i] == MAP_EMPTY)
			return;
		i = (i + 1) & m->mask;
	}
	/* Backward shift: move later entries of the run into the hole when
	 * their home is not between the hole and them. */
	for (uint64_t j = (i + 1) & m->mask;; j = (j + 1) & m->mask) {
		if (m->keys[j] == MAP_EMPTY)
			break;
		uint64_t h = mix(m->keys[j]) & m->mask;
		if (((j - h) & m->mask) >= ((j - i) & m->mask)) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			i = j;
		}
	}
	m->keys[i] = MAP_EMPTY;
}

static void list_init(struct list *l)
{
	l->head = l->tail = NIL;
	l->n = 0;
}

static void list_push(struct ev_policy *pol, struct list *l, uint32_t x)
{
	struct node *n = &pol->nodes[x];
	n->prev = NIL;
	n->next = l->head;
	if (l->head != NIL)
		pol->nodes[l->head].prev = x;
	l->head = x;
	if (l->tail == NIL)
		l->tail = x;
	l->n++;
}

static void list_remove(struct ev_policy *pol, struct list *l, uint32_t x)
{
	struct node *n = &pol->nodes[x];
	if (n->prev != NIL)
		pol->nodes[n->prev].next = n->next;
	else
		l->head = n->next;
	if (n->next != NIL)
		pol->nodes[n->next].prev = n->prev;
	else
		l->tail = n->prev;
	l->n--;
}

static uint32_t node_new(struct ev_policy *pol, uint64_t pid, uint8_t q)
{
	uint32_t x = pol->free_head;
	pol->free_head = pol->nodes[x].next;
	memset(&pol->nodes[x], 0, sizeof(pol->nodes[x]));
	pol->nodes[x].pid = pid;
	pol->nodes[x].q = q;
	map_put(&pol->map, pid, x);
	return x;
}

static void node_free(struct ev_policy *pol, uint32_t x)
{
	map_del(&pol->map, pol->nodes[x].pid);
	pol->nodes[x].q = Q_NONE;
	pol->nodes[x].next = pol->free_head;
	pol->free_head = x;
}

/* A resident page goes: out of the map, its node freed. */
static void evict_node(struct ev_policy *pol, uint32_t x)
{
	node_free(pol, x);
	pol->resident--;
	pol->st.evictions++;
}

/* Into the ghost FIFO (its oldest entry dropped when full); the node is
 * reused as the ghost entry. */
static void ghost_add(struct ev_policy *pol, uint32_t x)
{
	pol->resident--;
	pol->st.evictions++;
	if (pol->ghost_cap == 0) {
		node_free(pol, x);
		return;
	}
	if (pol->ghost.n >= pol->ghost_cap) {
		uint32_t old = pol->ghost.tail;
		list_remove(pol, &pol->ghost, old);
		node_free(pol, old);
	}
	pol->nodes[x].q = Q_GHOST;
	list_push(pol, &pol->ghost, x);
}

/* ------------------------------------------------------------------ */
/* The engine's clock, and the clock that serves as s3clock's main.    */

static void slot_insert(struct ev_policy *pol, uint64_t pid)
{
	uint64_t i = mix(pid) & pol->slot_mask;
	while (pol->slots[i] != RSET_EMPTY && pol->slots[i] != RSET_TOMB)
		i = (i + 1) & pol->slot_mask;
	pol->slots[i] = pid;
}

static void slot_remove(struct ev_policy *pol, uint64_t pid)
{
	uint64_t i = mix(pid) & pol->slot_mask;
	while (pol->slots[i] != pid)
		i = (i + 1) & pol->slot_mask; /* it is there: no bound needed */
	pol->slots[i] = RSET_TOMB; /* as the engine: tombstones stay */
}

/* The marked neighbours of @pid, nearest first on each side, stopping at
 * the first that is not (engine/bm_evict.c, neighbours). */
static unsigned neighbours(struct ev_policy *pol, uint64_t pid, uint32_t *out, unsigned room)
{
	unsigned n = 0;
	for (int side = 0; side < 2; side++) {
		for (uint64_t k = 1; k <= (uint64_t)pol->p.cluster && n < room; k++) {
			if (side == 0 && k > pid)
				break;
			uint32_t x = map_get(&pol->map, side == 0 ? pid - k : pid + k);
			if (x == NIL || pol->nodes[x].q != Q_MAIN || !pol->nodes[x].marked ||
			    pol->nodes[x].taken)
				break;
			pol->nodes[x].taken = 1;
			out[n++] = x;
		}
	}
	return n;
}

/* One pass of the hand (engine/bm_evict.c, bm_evict_batch): up to @want
 * victims into @out. Pages in the small queue (s3clock) are not the main
 * hand's. */
static unsigned clock_collect(struct ev_policy *pol, uint32_t *out, unsigned want, bool cluster)
{
	const uint64_t slots = pol->slot_mask + 1;
	unsigned n = 0;
	for (uint64_t seen = 0; n < want && seen < 2 * slots;) {
		uint64_t start = pol->hand;
		pol->hand += 64;
		for (uint64_t k = 0; k < 64 && n < want; k++, seen++) {
			uint64_t pid = pol->slots[(start + k) & pol->slot_mask];
			if (pid >= RSET_TOMB)
				continue;
			uint32_t x = map_get(&pol->map, pid);
			struct node *nd = &pol->nodes[x];
			if (nd->q != Q_MAIN || nd->taken)
				continue;
			if (!nd->marked) {
				nd->marked = 1;
			} else {
				nd->taken = 1;
				out[n++] = x;
				if (cluster)
					n += neighbours(pol, pid, out + n, want - n);
			}
		}
	}
	return n;
}

static void clock_drop(struct ev_policy *pol, uint32_t x)
{
	slot_remove(pol, pol->nodes[x].pid);
	evict_node(pol, x);
}

static bool clock_access(struct ev_policy *pol, uint64_t pid)
{
	uint32_t x = map_get(&pol->map, pid);
	if (x != NIL) {
		pol->nodes[x].marked = 0;
		return true;
	}
	if (pol->resident >= pol->p.capacity) {
		uint32_t v[512];
		unsigned n = clock_collect(pol, v, pol->p.batch, pol->p.cluster > 0);
		for (unsigned i = 0; i < n; i++)
			clock_drop(pol, v[i]);
	}
	x = node_new(pol, pid, Q_MAIN);
	slot_insert(pol, pid);
	pol->resident++;
	return false;
}

/* ------------------------------------------------------------------ */

static bool lru_access(struct ev_policy *pol, uint64_t pid)
{
	uint32_t x = map_get(&pol->map, pid);
	if (x != NIL) {
		list_remove(pol, &pol->main, x);
		list_push(pol, &pol->main, x);
		return true;
	}
	if (pol->resident >= pol->p.capacity) {
		uint32_t old = pol->main.tail;
		list_remove(pol, &pol->main, old);
		evict_node(pol, old);
	}
	list_push(pol, &pol->main, node_new(pol, pid, Q_MAIN));
	pol->resident++;
	return false;
}

/* 2Q: small = A1in, ghost = A1out, main = Am. */
static void twoq_reclaim(struct ev_policy *pol)
{
	if (pol->small.n > pol->kin || pol->main.n == 0) {
		uint32_t x = pol->small.tail;
		list_remove(pol, &pol->small, x);
		ghost_add(pol, x);
	} else {
		uint32_t x = pol->main.tail;
		list_remove(pol, &pol->main, x);
		evict_node(pol, x);
	}
}

static bool twoq_access(struct ev_policy *pol, uint64_t pid)
{
	uint32_t x = map_get(&pol->map, pid);
	if (x != NIL && pol->nodes[x].q == Q_MAIN) {
		list_remove(pol, &pol->main, x);
		list_push(pol, &pol->main, x);
		return true;
	}
	if (x != NIL && pol->nodes[x].q == Q_SMALL)
		return true;
	if (x != NIL) { /* in A1out */
		list_remove(pol, &pol->ghost, x);
		node_free(pol, x);
		pol->st.ghost_hits++;
		pol->st.promotions++;
	}
	if (pol->resident >= pol->p.capacity)
		twoq_reclaim(pol);
	uint32_t y = node_new(pol, pid, x != NIL ? Q_MAIN : Q_SMALL);
	list_push(pol, x != NIL ? &pol->main : &pol->small, y);
	pol->resident++;
	return false;
}

/* S3-FIFO. */
static void s3_evict_main(struct ev_policy *pol)
{
	while (pol->main.n > 0) {
		uint32_t x = pol->main.tail;
		list_remove(pol, &pol->main, x);
		if (pol->nodes[x].freq > 0) {
			pol->nodes[x].freq--;
			list_push(pol, &pol->main, x);
		} else {
			evict_node(pol, x);
			return;
		}
	}
}

static void s3_evict_small(struct ev_policy *pol)
{
	while (pol->small.n > 0) {
		uint32_t x = pol->small.tail;
		list_remove(pol, &pol->small, x);
		if (pol->nodes[x].freq >= pol->p.promote) {
			pol->nodes[x].freq = 0;
			pol->nodes[x].q = Q_MAIN;
			list_push(pol, &pol->main, x);
			pol->st.promotions++;
			if (pol->main.n > pol->p.capacity - pol->small_cap) {
				s3_evict_main(pol);
				return;
			}
		} else {
			ghost_add(pol, x);
			return;
		}
	}
}

static bool s3fifo_access(struct ev_policy *pol, uint64_t pid)
{
	uint32_t x = map_get(&pol->map, pid);
	if (x != NIL && pol->nodes[x].q != Q_GHOST) {
		if (pol->nodes[x].freq < 3)
			pol->nodes[x].freq++;
		return true;
	}
	bool ghost = x != NIL;
	if (ghost) {
		list_remove(pol, &pol->ghost, x);
		node_free(pol, x);
		pol->st.ghost_hits++;
	}
	while (pol->resident >= pol->p.capacity) {
		if (pol->small.n >= pol->small_cap || pol->main.n == 0)
			s3_evict_small(pol);
		else
			s3_evict_main(pol);
	}
	uint32_t y = node_new(pol, pid, ghost ? Q_MAIN : Q_SMALL);
	list_push(pol, ghost ? &pol->main : &pol->small, y);
	pol->resident++;
	return false;
}

/* s3clock: small is a FIFO of load order; main is the clock table (its
 * `marked` is the negated reference bit, as the engine's mark); the
 * reference bit of a small page is `freq` (0/1). Victims in batches. */
static unsigned s3clock_collect(struct ev_policy *pol, uint32_t *out, unsigned want)
{
	unsigned n = 0;
	pol->small_cap = pol->small_target >> 8;
	while (n < want && pol->small.n > 0 &&
	       (pol->small.n >= pol->small_cap || pol->main.n == 0)) {
		uint32_t x = pol->small.tail;
		list_remove(pol, &pol->small, x);
		if (pol->nodes[x].freq) {
			/* to main, as a page just used: unmarked */
			pol->nodes[x].q = Q_MAIN;
			pol->nodes[x].marked = 0;
			pol->main.n++;
			pol->st.promotions++;
		} else {
			pol->nodes[x].taken = 1;
			out[n++] = x;
		}
	}
	if (n < want)
		n += clock_collect(pol, out + n, want - n, false);
	return n;
}

/*
 * The small queue's size adapts, within [small_min, small_max]: a ghost hit
 * (a page the small queue let go too early came back) grows it by
 * ADAPT_UP/256 pages; a page leaving it for the ghost shrinks it by
 * ADAPT_DOWN/256. It grows while more than ADAPT_DOWN/ADAPT_UP (1 in 8)
 * of what it lets go comes back: a hot set that moves, a loop a little
 * larger than the pool. A scan, whose pages never come back, shrinks it
 * to small_min and leaves main (the hot set) alone. Two counters on the
 * eviction path, nothing on a hit.
 */
#define ADAPT_UP   512
#define ADAPT_DOWN 64
static void s3clock_adapt(struct ev_policy *pol, bool ghost_hit)
{
	if (ghost_hit)
		pol->small_target += ADAPT_UP;
	else if (pol->small_target >= ADAPT_DOWN)
		pol->small_target -= ADAPT_DOWN;
	if (pol->small_target < pol->small_min << 8)
		pol->small_target = pol->small_min << 8;
	if (pol->small_target > pol->small_max << 8)
		pol->small_target = pol->small_max << 8;
}

static bool s3clock_access(struct ev_policy *pol, uint64_t pid)
{
	uint32_t x = map_get(&pol->map, pid);
	if (x != NIL && pol->nodes[x].q != Q_GHOST) {
		pol->nodes[x].marked = 0;
		pol->nodes[x].freq = 1;
		return true;
	}
	bool ghost = x != NIL;
	if (ghost) {
		list_remove(pol, &pol->ghost, x);
		node_free(pol, x);
		pol->st.ghost_hits++;
		s3clock_adapt(pol, true);
	}
	if (pol->resident >= pol->p.capacity) {
		uint32_t v[512];
		unsigned n = s3clock_collect(pol, v, pol->p.batch);
		for (unsigned i = 0; i < n; i++) {
			uint32_t y = v[i];
			slot_remove(pol, pol->nodes[y].pid);
			if (pol->nodes[y].q == Q_SMALL) {
				ghost_add(pol, y);
				s3clock_adapt(pol, false);
			} else {
				pol->main.n--;
				evict_node(pol, y);
			}
		}
	}
	uint32_t y = node_new(pol, pid, ghost ? Q_MAIN : Q_SMALL);
	if (ghost)
		pol->main.n++; /* main is the clock table: only counted */
	else
		list_push(pol, &pol->small, y);
	slot_insert(pol, pid);
	pol->resident++;
	return false;
}

/* ------------------------------------------------------------------ */

static const char *const names[EV_NKINDS] = { "clock", "lru", "2q", "s3fifo", "s3clock" };

const char *ev_kind_name(enum ev_kind k)
{
	return k < EV_NKINDS ? names[k] : "?";
}

int ev_kind_parse(const char *name)
{
	for (int k = 0; k < EV_NKINDS; k++)
		if (strcmp(name, names[k]) == 0)
			return k;
	return -1;
}

struct ev_policy *ev_policy_new(enum ev_kind k, const struct ev_params *p)
{
	if (p->capacity < 4 || p->capacity > UINT32_MAX / 4)
		return NULL;
	struct ev_policy *pol = calloc(1, sizeof(*pol));
	if (!pol)
		return NULL;
	pol->kind = k;
	pol->p = *p;
	uint64_t cap = p->capacity;
	if (pol->p.batch == 0)
		pol->p.batch = 64;
	if (pol->p.batch > 256)
		pol->p.batch = 256;
	if (pol->p.batch > cap / 4) /* engine/bm.c */
		pol->p.batch = (unsigned)(cap / 4);
	if (pol->p.cluster < 0)
		pol->p.cluster = 32;
	if (pol->p.cluster > 256)
		pol->p.cluster = 256;
	if (pol->p.small_ratio <= 0)
		pol->p.small_ratio = 0.1;
	if (pol->p.promote == 0)
		pol->p.promote = 1;
	pol->small_cap = (uint64_t)(cap * pol->p.small_ratio);
	if (pol->small_cap < 1)
		pol->small_cap = 1;
	if (pol->p.ghost_ratio <= 0)
		pol->p.ghost_ratio = 1.0 - pol->p.small_ratio;
	pol->ghost_cap = (uint64_t)(cap * pol->p.ghost_ratio);
	pol->small_target = pol->small_cap << 8;
	pol->small_min = cap / 20 ? cap / 20 : 1;
	pol->small_max = cap / 2;
	if (pol->small_min > pol->small_cap)
		pol->small_min = pol->small_cap;
	if (p->fixed_small)
		pol->small_min = pol->small_max = pol->small_cap;
	pol->kin = cap / 4;
	pol->kout = cap / 2;
	if (k == EV_2Q)
		pol->ghost_cap = pol->kout;
	if (k == EV_CLOCK || k == EV_LRU)
		pol->ghost_cap = 0;
	uint64_t nodes = cap + pol->ghost_cap + 1;
	pol->nodes = malloc(nodes * sizeof(*pol->nodes));
	if (!pol->nodes || map_init(&pol->map, nodes) < 0)
		goto fail;
	for (uint64_t i = 0; i < nodes; i++)
		pol->nodes[i].next = i + 1 < nodes ? (uint32_t)(i + 1) : NIL;
	pol->free_head = 0;
	list_init(&pol->small);
	list_init(&pol->main);
	list_init(&pol->ghost);
	if (k == EV_CLOCK || k == EV_S3CLOCK) {
		uint64_t n = 64; /* engine/bm.c rset_init */
		while (n < cap + cap / 2)
			n <<= 1;
		pol->slots = malloc(n * sizeof(*pol->slots));
		if (!pol->slots)
			goto fail;
		memset(pol->slots, 0xff, n * sizeof(*pol->slots));
		pol->slot_mask = n - 1;
	}
	return pol;
fail:
	ev_policy_free(pol);
	return NULL;
}

void ev_policy_free(struct ev_policy *pol)
{
	if (!pol)
		return;
	free(pol->nodes);
	free(pol->map.keys);
	free(pol->map.vals);
	free(pol->slots);
	free(pol);
}

bool ev_access(struct ev_policy *pol, uint64_t pid)
{
	bool hit;
	switch (pol->kind) {
	case EV_CLOCK:
		hit = clock_access(pol, pid);
		break;
	case EV_LRU:
		hit = lru_access(pol, pid);
		break;
	case EV_2Q:
		hit = twoq_access(pol, pid);
		break;
	case EV_S3FIFO:
		hit = s3fifo_access(pol, pid);
		break;
	default:
		hit = s3clock_access(pol, pid);
		break;
	}
	if (hit)
		pol->st.hits++;
	else
		pol->st.misses++;
	return hit;
}

void ev_stats_get(const struct ev_policy *pol, struct ev_stats *ret)
{
	*ret = pol->st;
	ret->resident = pol->resident;
	ret->small = pol->small.n;
	ret->main = pol->kind == EV_LRU || pol->kind == EV_CLOCK ? pol->resident : pol->main.n;
	ret->ghost = pol->ghost.n;
	ret->small_target = pol->kind == EV_S3CLOCK ? pol->small_target >> 8
			    : pol->kind == EV_S3FIFO ? pol->small_cap
			    : pol->kind == EV_2Q     ? pol->kin
						     : 0;
}
