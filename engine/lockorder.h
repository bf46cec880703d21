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
 *                       room_mu, ckpt_wait_mu, the fault-injection mutex,
 *                       s3clock's probation mutex (bm_evict.c: its holder
 *                       only tries page latches; eviction takes it, and
 *                       bm_s3_tick at the end of an operation only tries
 *                       it, holding nothing);
 *                       fs: ino_mu, the node table, the stats; wire.c's
 *                       reader hand-off; uring.c's ur.mu (an answered
 *                       fsync's entry handed to a spare: taken in the
 *                       reply, under whatever the fsync holds, and only
 *                       signals; spares wait on it holding nothing else).
 *                       Held for a few instructions; no wait for anything
 *                       above while one is held.
 *
 * Who waits for what, in short: requests that change the filesystem begin
 * their transaction (2) before any inode lock (4); requests that only look
 * (lookup, getattr, readdir, getxattr, lseek, residency) take inode locks
 * and latches without a transaction, and so must never meet a checkpoint
 * wait, which is why the fault path never starts one; fsync and the control
 * file hold nothing when they wait for a checkpoint.
 *
 * The checks (debug builds, !NDEBUG): lo_acquire fails loudly when a lock
 * of levels 3 or 4 is taken out of order, and lo_assert_may_wait_checkpoint
 * when a thread that holds anything of levels 2-5 is about to wait for a
 * checkpoint.
 *
 * The lock-holder table (all builds). Every thread that takes a lock of
 * levels 1-4 or waits for one of the waits below owns a slot in one global
 * table: what it holds (levels 1-4, with the inode numbers of its inode
 * locks) and what it waits for right now, since when. Only the owner writes
 * its slot, with relaxed stores and no lock; the slots are never freed (a
 * thread that exits leaves its slot for the next one), so a reader may walk
 * the table at any time, even from a signal handler, and sees at worst a
 * line half updated. Page latches are not recorded as held (one store per
 * guard on the hottest path, and a latch is held for microseconds), but a
 * latch wait that outlasts SPIN_LIMIT spins is. lo_dump writes the table;
 * lo_dump_install makes SIGUSR2 write it (see there for where it goes).
 * What it is for: a hang, where the kernel and gdb stacks say where each
 * thread sleeps but not who holds what it sleeps on.
 */
#ifndef VS_ENGINE_LOCKORDER_H
#define VS_ENGINE_LOCKORDER_H

#include <stdbool.h>
#include <stdint.h>

/* The levels a thread can hold, recorded in its slot. */
enum lo_level {
	LO_CHECKPOINT = 1, /* leadership of the checkpoint (ckpt_busy) */
	LO_TXN = 2,        /* the transaction lock: shared, or a checkpoint's exclusive */
	LO_RENAME = 3,
	LO_INODE = 4,
};

/* What a thread can be waiting for; each names where the wait is. */
enum lo_wait {
	LO_WAIT_NONE = 0,
	LO_WAIT_TXN_LOCK,   /* bm_txn_begin: the transaction lock a checkpoint holds */
	LO_WAIT_TXN_DRAIN,  /* a checkpoint: running transactions to end */
	LO_WAIT_CHECKPOINT, /* ckpt_lead: a checkpoint another thread runs */
	LO_WAIT_ROOM,       /* bm_txn_begin (room_take): journal room */
	LO_WAIT_RENAME,     /* fs_rename: rename_mu */
	LO_WAIT_INODE,      /* fs inode lock; detail: the inode number */
	LO_WAIT_FRAME,      /* bm_load.c frame_reserve: a frame to come free */
	LO_WAIT_LATCH,      /* a page latch, past SPIN_LIMIT spins; detail: the pid */
};

/*
 * A lock of @level taken (@excl: exclusively) by the calling thread; @ino is
 * the inode number for LO_INODE, else 0. Records it in the thread's slot
 * and, in debug builds, checks the order first (levels 3 and 4). The first
 * call of a thread registers its slot (one allocation, once per thread).
 * rename_mu and inode locks are recorded before they are taken, so that
 * the check comes before any wait: while the thread then waits for the
 * lock (LO_WAIT_RENAME, LO_WAIT_INODE), the dump shows the last one
 * recorded as awaited, not held.
 */
void lo_acquire(enum lo_level level, uint64_t ino, bool excl);
/* The lock released. For LO_INODE, @ino names which one (0: the one taken
 * last, for callers that keep only stripes, fs_unlock_many). */
void lo_release(enum lo_level level, uint64_t ino);

/* The calling thread starts waiting for @what (@detail: an inode number or
 * a pid, else 0), since now, or since @since_ns (CLOCK_MONOTONIC) for a
 * wait that began earlier (a frame wait across restarts). One wait at a
 * time: a new one replaces the last. lo_wait_end: the wait is over. */
void lo_wait_begin(enum lo_wait what, uint64_t detail);
void lo_wait_begin_at(enum lo_wait what, uint64_t detail, uint64_t since_ns);
void lo_wait_end(void);

/*
 * Write the table to @fd: a header line, one line per thread that holds or
 * waits for anything,
 *   tid 1234: holds txn(read), inode 5678(write); waits for inode 91011 lock for 12.3 s
 * and "end of lock-holder table". Async-signal-safe: write(2) only, no
 * allocation, no lock. Returns the number of thread lines, or a negative
 * errno when a write failed.
 */
int lo_dump(int fd);

/*
 * Make SIGUSR2 write the table (once per process; later calls do nothing).
 * It goes to the file $VS_LOCKDUMP (read now, appended to), else to stderr,
 * else, when stderr is /dev/null or closed (a daemon in the background), to
 * /tmp/virtuscale-locks.PID. The signal is taken by a thread of its own,
 * the only one with SIGUSR2 unblocked (threads created by the caller after
 * this call inherit the block): a signal that interrupted a worker would
 * end an io_uring wait with EINTR. Returns 0 or a negative errno.
 */
int lo_dump_install(void);

#ifndef NDEBUG
/* Fails loudly (abort, after a message saying what is held) when the
 * calling thread holds a lock of levels 2-5; @what names the wait. */
void lo_assert_may_wait_checkpoint(const char *what);
#else
static inline void lo_assert_may_wait_checkpoint(const char *what)
{
	(void)what;
}
#endif

#endif
