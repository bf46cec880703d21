/*
 * bm_fault.h: fault injection under the buffer manager, for tests.
 *
 * Every write and sync of the image goes through one place in the buffer
 * manager; with a struct bm_fault in bm_config.fault, that place can fail
 * the Nth write or sync, and can keep an undo record of every write since
 * the last sync so that bm_fault_power_loss can later make some of those
 * writes not have happened, and tear one: what a power cut does to a disk
 * with a volatile write cache.
 *
 * Usage: set the fields, open the bm with it, run, then either close
 * normally or call bm_abandon (a crash: nothing more is written) and
 * bm_fault_power_loss, then reopen and check.
 */
#ifndef VS_ENGINE_BM_FAULT_H
#define VS_ENGINE_BM_FAULT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct bm;

struct bm_fault_undo {
	uint64_t off;
	uint32_t len;
	uint8_t *old; /* the bytes before the write */
};

struct bm_fault {
	/* settings */
	uint64_t fail_write_at; /* fail the Nth page write (1-based), 0 = never */
	int fail_write_err;     /* ... with this errno (EIO, ENOSPC) */
	bool fail_writes_after; /* and every write after it too */
	uint64_t fail_sync_at;  /* fail the Nth sync, 0 = never */
	int fail_sync_err;
	bool fail_syncs_after;  /* and every sync after it too: the disk is gone,
				 * writes since the last good sync may or may not
				 * have reached it (bm_fault_power_loss decides) */
	bool record;            /* keep undo records for bm_fault_power_loss */
	/* Called before each sync with its number (1-based), with no lock
	 * held: a test may block in it to hold a checkpoint at that point.
	 * The failure settings are read after it returns. */
	void (*on_sync)(struct bm_fault *f, uint64_t n);
	/* The same before each page write (1-based count of writes): a test
	 * may hold one thread's writes there while others go on. */
	void (*on_write)(struct bm_fault *f, uint64_t n);
	/* Called by a checkpoint once it has taken the pages it will write
	 * (bm_journal.c, ckpt_take), before it reads them; no lock held but
	 * the checkpoint's own (the transaction lock, the pages shared). */
	void (*on_ckpt_taken)(struct bm_fault *f);
	/* Called by bm_free after it has released an evicted page it frees,
	 * with no lock held: a test may look at the page from there, as a
	 * stale optimistic reader would. */
	void (*on_discard)(struct bm_fault *f, uint64_t pid);
	/* counters and records, maintained by the buffer manager */
	pthread_mutex_t mu;
	uint64_t writes, syncs;
	struct bm_fault_undo *undo;
	uint64_t nundo, capundo;
};

/* Set up (everything zero: no fault armed; set the fields after) and
 * release the struct (the mutex and the undo list). */
void bm_fault_init(struct bm_fault *f);
void bm_fault_fini(struct bm_fault *f);

/* Crash: release everything of @bm without writing anything more. */
void bm_abandon(struct bm *bm);

/* Power loss on @path: of the writes since the last sync, undo each with
 * probability 1/2 (seeded by @seed), and when @tear, tear one of those that
 * stay at a random 512-byte boundary (its second part is undone). Returns
 * the number of writes undone, or a negative errno. */
int bm_fault_power_loss(struct bm_fault *f, const char *path, uint64_t seed, bool tear);

#endif
