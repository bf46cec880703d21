/*
 * lockorder.h: every lock and latch of the daemon, in one order, and the
 * rule for each wait. Debug builds check the order as locks are taken.
 *
 * Lock order, outermost first. A thread takes a lock only while every lock
 * it already holds comes earlier in this list.
 *
 *   0. (nothing held)   Only here may a thread run a checkpoint or wait for
 *                       one: bm_checkpoint, bm_checkpoint_notify,
 *                       bm_txn_begin (its dirty-limit checkpoint, its wait
 *                       for journal room, its wait for the transaction lock
 *                       that a checkpoint holds), bm_flush, bm_evict_all,
 *                       bm_close. A checkpoint waits for every running
 *                       transaction to end, and a transaction may be waiting
 *                       for any lock below: so whoever holds one of them and
 *                       waited for a checkpoint could wait forever.
 *   1. checkpoint       ckpt_mu / ckpt_busy (leadership, bm_journal.c), then
 *                       the transaction lock exclusively. Held by the one
 *                       thread that runs the checkpoint; while it holds them
 *                       it takes page latches shared (step 4: it waits only
 *                       for exclusive holders, none of which waits for it)
 *                       and leaf mutexes (6).
 *   2. transaction      txn_lock shared (bm_txn_begin .. bm_txn_end), with
 *                       its journal room. Nested transactions of one thread
 *                       join the outer one and wait for nothing.
 *   3. rename_mu        fs/dir.c: one cross-directory rename at a time.
 *   4. inode locks      fs/inode.c: striped rwlocks, several taken at once
 *                       only by fs_lock_many, in stripe order.
 *   5. page latches     S and X guards of bm_run operations (bm.h). A wait
 *                       for a latch while holding another gives up after
 *                       SPIN_LIMIT spins and restarts the operation, which
 *                       releases everything it holds: two operations never
 *                       wait on each other. Frames: a page load that finds
 *                       the pool full evicts (write-back I/O) and, when
 *                       nothing can be evicted, sleeps; it never runs or
 *                       waits for a checkpoint (it asks the background
 *                       checkpointer), restarts its operation to release its
 *                       latches after FRAME_SPINS_HELD fruitless rounds, and
 *                       fails with -ENOMEM after BM_FRAME_WAIT_MS (bm_load.c).
 *   6. leaf mutexes     alloc_mu, dl_mu, sb_mu, threads_mu, flush_mu,
 *                       room_mu, ckpt_wait_mu, the fault-injection mutex;
 *                       fs: ino_mu, the node table, the stats; wire.c's
 *                       reader hand-off. Held for a few instructions; no
 *                       wait for anything above while one is held.
 *
 * Who waits for what, in short: requests that change the filesystem begin
 * their transaction (2) before any inode lock (4); requests that only look
 * (lookup, getattr, readdir, getxattr, lseek, residency) take inode locks
 * and latches without a transaction, and so must never meet a checkpoint
 * wait, which is why the fault path never starts one; fsync and the control
 * file hold nothing when they wait for a checkpoint.
 *
 * The checks (debug builds, !NDEBUG): lo_acquire/lo_release record the
 * locks of levels 3 and 4 per thread (the transaction and the latches are
 * known to the engine already); lo_acquire fails loudly when a lock is
 * taken out of order, and lo_assert_may_wait_checkpoint when a thread that
 * holds anything of levels 2-5 is about to wait for a checkpoint.
 */
#ifndef VS_ENGINE_LOCKORDER_H
#define VS_ENGINE_LOCKORDER_H

#include <stdbool.h>

enum lo_level {
	LO_RENAME = 3,
	LO_INODE = 4,
};

#ifndef NDEBUG
void lo_acquire(enum lo_level level, const char *what);
void lo_release(enum lo_level level);
/* Fails loudly (abort, after a message saying what is held) when the
 * calling thread holds a lock of levels 2-5; @what names the wait. */
void lo_assert_may_wait_checkpoint(const char *what);
#else
static inline void lo_acquire(enum lo_level level, const char *what)
{
	(void)level;
	(void)what;
}
static inline void lo_release(enum lo_level level)
{
	(void)level;
}
static inline void lo_assert_may_wait_checkpoint(const char *what)
{
	(void)what;
}
#endif

#endif
