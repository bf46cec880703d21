/*
 * lockorder.c: the debug-build checks of lockorder.h.
 */
#include "engine/lockorder.h"

#ifndef NDEBUG

#include <stdlib.h>

#include "engine/bm_internal.h"
#include "engine/log.h"

static _Thread_local unsigned held[LO_INODE + 1];

static _Noreturn void lo_die(const char *msg, const char *what)
{
	vs_log(VS_LOG_ERR,
	       "internal: lock order violated: %s (%s); held: transaction %u, rename %u, "
	       "inode locks %u, page latches %u (engine/lockorder.h)",
	       msg, what, bm_thread_txn_depth(), held[LO_RENAME], held[LO_INODE],
	       bm_thread_latches());
	abort();
}

void lo_acquire(enum lo_level level, const char *what)
{
	/* Deeper levels must not be held; the same level may (fs_lock_many
	 * takes several inode locks in stripe order). */
	for (unsigned l = level + 1; l <= LO_INODE; l++)
		if (held[l] > 0)
			lo_die("a lock taken while holding a later one", what);
	if (bm_thread_latches() > 0)
		lo_die("a lock taken while holding page latches", what);
	held[level]++;
}

void lo_release(enum lo_level level)
{
	if (held[level] == 0)
		lo_die("a lock released that is not held", "release");
	held[level]--;
}

void lo_assert_may_wait_checkpoint(const char *what)
{
	if (bm_thread_txn_depth() > 0 || held[LO_RENAME] > 0 || held[LO_INODE] > 0 ||
	    bm_thread_latches() > 0)
		lo_die("a wait for a checkpoint while holding a lock", what);
}

#endif
