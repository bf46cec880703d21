/*
 * page_state.h: the 64-bit state word that guards one page of the pool.
 *
 * Every page id (pid) has one word in an array indexed by pid. The word says
 * whether the page is resident, who holds it, whether it is dirty, and a
 * version that changes each time the page's contents may have changed.
 *
 *     63        56 55  54                                            0
 *    +-----------+---+-----------------------------------------------+
 *    |   state   | D |                    version                    |
 *    +-----------+---+-----------------------------------------------+
 *
 *    state   PS_EVICTED (0)    not in memory; the zero word, so a fresh
 *                              anonymous mapping is an array of evicted pages
 *            PS_UNLOCKED (1)   resident, nobody holds it
 *            2 .. PS_SHARED_MAX  resident, held shared by (state - 1) readers
 *            PS_MARKED         resident, unlocked, picked by the clock: the
 *                              next clock pass evicts it unless someone uses
 *                              it first (any fix clears the mark)
 *            PS_LOCKED         held exclusively (writer, loader or evictor)
 *    D       dirty: the page differs from its copy in the backing store.
 *            Set when an exclusive holder releases the page, cleared by the
 *            writer-back while it holds the page shared.
 *    version bumped by every exclusive release, so an optimistic reader that
 *            recorded it can tell whether the page changed under it.
 *
 * Transitions (each a compare-and-swap on the whole word):
 *
 *            ps_lock_x (load)               ps_unlock_x (version+1, D set)
 *   EVICTED -----------------> LOCKED <-------------------------------+
 *      ^                        |  ^ \                                 |
 *      | ps_unlock_evicted      |  |  `--ps_unlock_x------> UNLOCKED --+ ps_lock_x
 *      | (evictor, after the    |  |                       |  ^  |  ^
 *      |  frame is dropped)     |  | ps_upgrade_sx         |  |  |  | ps_clear_mark
 *      +------------------------+  | (sole reader)        |  |  v  | (any fix)
 *                                  |            ps_lock_s |  |  MARKED
 *                              SHARED(n) <----------------+  |  (ps_mark by clock)
 *                                  |       ps_unlock_s (n=1)  |
 *                                  +--------------------------+
 *
 * MARKED behaves as UNLOCKED for everyone but the clock: readers and writers
 * take it exactly as they take an unlocked page, which clears the mark.
 *
 * Invariants:
 *   - only the holder of PS_LOCKED changes the page bytes or the version;
 *   - D is set only together with a PS_LOCKED -> PS_UNLOCKED release and
 *     cleared only by a holder of a shared lock that has just written the
 *     page back (so no writer can have dirtied it in between);
 *   - an EVICTED page has D clear.
 */
#ifndef VS_ENGINE_PAGE_STATE_H
#define VS_ENGINE_PAGE_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define PS_EVICTED    0u
#define PS_UNLOCKED   1u
#define PS_SHARED_MAX 252u /* 251 concurrent readers */
#define PS_MARKED     253u
#define PS_LOCKED     254u

#define PS_STATE_SHIFT 56
#define PS_DIRTY       (UINT64_C(1) << 55)
#define PS_VERSION     (PS_DIRTY - 1)

typedef _Atomic uint64_t ps_word;

static inline unsigned ps_state(uint64_t w)
{
	return (unsigned)(w >> PS_STATE_SHIFT);
}

static inline uint64_t ps_version(uint64_t w)
{
	return w & PS_VERSION;
}

static inline bool ps_dirty(uint64_t w)
{
	return (w & PS_DIRTY) != 0;
}

/* The same dirty bit and version with another state. */
static inline uint64_t ps_with_state(uint64_t w, unsigned state)
{
	return (w & (PS_DIRTY | PS_VERSION)) | ((uint64_t)state << PS_STATE_SHIFT);
}

static inline uint64_t ps_load(ps_word *p)
{
	return atomic_load_explicit(p, memory_order_acquire);
}

static inline bool ps_cas(ps_word *p, uint64_t *expected, uint64_t desired)
{
	return atomic_compare_exchange_strong_explicit(p, expected, desired, memory_order_acq_rel,
						       memory_order_acquire);
}

/* Is the page resident and free for the taking (unlocked or only marked)? */
static inline bool ps_is_free(unsigned s)
{
	return s == PS_UNLOCKED || s == PS_MARKED;
}

/* Take the page exclusively from UNLOCKED, MARKED or EVICTED, given the word
 * @w the caller read. Fails when the word changed or the page is held. */
static inline bool ps_try_lock_x(ps_word *p, uint64_t w)
{
	unsigned s = ps_state(w);
	if (!ps_is_free(s) && s != PS_EVICTED)
		return false;
	return ps_cas(p, &w, ps_with_state(w, PS_LOCKED));
}

/* Release an exclusive lock on a resident page: bump the version and, when
 * @dirty, set the dirty bit. Returns true when the page went from clean to
 * dirty (so the caller can count dirty pages). */
static inline bool ps_unlock_x(ps_word *p, bool dirty)
{
	uint64_t w = ps_load(p);
	uint64_t v = (ps_version(w) + 1) & PS_VERSION;
	uint64_t d = (w & PS_DIRTY) | (dirty ? PS_DIRTY : 0);
	atomic_store_explicit(p, ((uint64_t)PS_UNLOCKED << PS_STATE_SHIFT) | d | v,
			      memory_order_release);
	return dirty && !(w & PS_DIRTY);
}

/* Release an exclusive lock and leave the page evicted (its frame is gone).
 * The version is bumped so that optimistic readers of the old frame fail. */
static inline void ps_unlock_evicted(ps_word *p)
{
	uint64_t w = ps_load(p);
	atomic_store_explicit(p, (w + 1) & PS_VERSION, memory_order_release);
}

/* Add a reader, from UNLOCKED, MARKED or SHARED(n < max). */
static inline bool ps_try_lock_s(ps_word *p, uint64_t w)
{
	unsigned s = ps_state(w);
	unsigned next;
	if (ps_is_free(s))
		next = 2;
	else if (s >= 2 && s < PS_SHARED_MAX)
		next = s + 1;
	else
		return false;
	return ps_cas(p, &w, ps_with_state(w, next));
}

/* Drop one reader; the last one leaves the page in state @last. */
static inline void ps_release_s(ps_word *p, unsigned last)
{
	uint64_t w = ps_load(p);
	for (;;) {
		unsigned s = ps_state(w);
		unsigned next = s == 2 ? last : s - 1;
		if (ps_cas(p, &w, ps_with_state(w, next)))
			return;
	}
}

static inline void ps_unlock_s(ps_word *p)
{
	ps_release_s(p, PS_UNLOCKED);
}

/* Release a shared hold and leave the page marked for the clock, in one
 * step, when this was the only reader (a page the clock had marked, held
 * for a moment by the eviction that wrote it back); with other readers
 * still there it is in use: only this hold goes. */
static inline void ps_unlock_s_marked(ps_word *p)
{
	ps_release_s(p, PS_MARKED);
}

/* Shared -> exclusive, only for the sole reader. */
static inline bool ps_try_upgrade_sx(ps_word *p)
{
	uint64_t w = ps_load(p);
	if (ps_state(w) != 2)
		return false;
	return ps_cas(p, &w, ps_with_state(w, PS_LOCKED));
}

/* The clock's mark: UNLOCKED -> MARKED, same version. */
static inline bool ps_try_mark(ps_word *p, uint64_t w)
{
	if (ps_state(w) != PS_UNLOCKED)
		return false;
	return ps_cas(p, &w, ps_with_state(w, PS_MARKED));
}

/* A reader clears the mark of a page it uses: MARKED -> UNLOCKED. */
static inline void ps_clear_mark(ps_word *p, uint64_t w)
{
	if (ps_state(w) == PS_MARKED)
		ps_cas(p, &w, ps_with_state(w, PS_UNLOCKED));
}

/* Clear the dirty bit; the caller holds the page shared and wrote it back. */
static inline void ps_clear_dirty(ps_word *p)
{
	atomic_fetch_and_explicit(p, ~PS_DIRTY, memory_order_acq_rel);
}

#endif
