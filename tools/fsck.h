/*
 * fsck.h: what the files of fsck.virtuscale share. Not a library: the tool
 * is these five files.
 *
 *   fsck.c          options, opening the image, the check / repair / re-check
 *                   sequence, output and exit status
 *   fsck_check.c    the checking passes; each problem found is recorded with
 *                   the repair that fixes it (or none)
 *   fsck_tree.c     the walk over every page of the filesystem tree
 *   fsck_repair.c   the repairs, each one transaction
 *   fsck_salvage.c  a new tree from the records a damaged one still holds,
 *                   before any other repair
 *
 * A check fills struct fsck from scratch (fsck_check); fsck_reset drops
 * what it found. The image is checked read-only first; only when something
 * repairable was found is it reopened for writing, checked again and
 * repaired, in rounds (fsck_repair_round), then reopened read-only and
 * checked once more for the verdict.
 */
#ifndef VS_TOOLS_FSCK_H
#define VS_TOOLS_FSCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/bm.h"

/* fsck(8) exit status bits. */
#define FSCK_OK	       0
#define FSCK_CORRECTED 1
#define FSCK_UNCORR    4
#define FSCK_OPERROR   8

/*
 * Repairs, in the order a round applies them (see fsck_repair.c for why this
 * order). Parameters a..d per kind:
 *
 *   FIX_NONE          not repaired (damage fsck does not touch)
 *   FIX_MARK_USED     pages [a, a + b) in use, some free in the bitmap
 *   FIX_STRAY         records of object a, which has no inode record
 *   FIX_ORPHAN_REC    orphan record of inode a (missing, or still named)
 *   FIX_DIRENT_REMOVE entry at slot b of directory a names missing inode c;
 *                     d is the entry's type (DT_DIR adjusts the parent nlink)
 *   FIX_DIRENT_TYPE   entry at slot b of directory a: type := c
 *   FIX_NLINK         inode a: nlink := b
 *   FIX_DIRSIZE       directory a: size := b
 *   FIX_PARENT        directory a: parent := b
 *   FIX_PAGES         inode a: data pages held := b
 *   FIX_FREE_INODE    inode a (nlink 0, no entry): delete it; b = 1 when its
 *                     extents may be freed with it (no page shared)
 *   FIX_RECONNECT     inode a (nlink > 0, no entry): name it /lost+found/#a
 *   FIX_COUNTERS      the filesystem's inode counters in the superblock
 *   FIX_FREE_LEAKS    allocated pages nothing reaches: freed
 *   FIX_SB_FREE       the superblock's free count: a = recorded
 *   FIX_META_BITS     a metadata pages (the first b) free in the bitmap
 *   FIX_SALVAGE       the tree cannot be read whole: rebuilt from what can
 *                     (fsck_salvage), alone in its round, before the others
 *   FIX_COPIES        a nodes differ from their copies (engine/bm_dup.c):
 *                     the good one of each pair written over the other
 *   FIX_CSTABLE       a checksum-table pages damaged in one copy: written
 *                     again, both copies, by the round's checkpoint
 *   FIX_CSUM_ADOPT    a pages whose checksums were lost with the checksum
 *                     table hold sound tree nodes: they get them back
 *
 * The last three are repairs of pages, not of records: a round applies them
 * first, on a tree read whole or not, since the tree may read whole once
 * they are done (fsck_fix_is_page).
 */
enum fsck_fix {
	FIX_NONE = 0,
	FIX_MARK_USED,
	FIX_STRAY,
	FIX_ORPHAN_REC,
	FIX_DIRENT_REMOVE,
	FIX_DIRENT_TYPE,
	FIX_NLINK,
	FIX_DIRSIZE,
	FIX_PARENT,
	FIX_PAGES,
	FIX_FREE_INODE,
	FIX_RECONNECT,
	FIX_COUNTERS,
	FIX_FREE_LEAKS,
	FIX_SB_FREE,
	FIX_META_BITS,
	FIX_SALVAGE,
	FIX_COPIES,
	FIX_CSTABLE,
	FIX_CSUM_ADOPT,
	FIX_KINDS
};

/* FIX_MARK_USED .. FIX_COUNTERS change records; the space repairs after
 * them need a check of the result first. */
static inline bool fsck_fix_is_record(enum fsck_fix k)
{
	return k >= FIX_STRAY && k <= FIX_COUNTERS;
}

static inline bool fsck_fix_is_page(enum fsck_fix k)
{
	return k >= FIX_COPIES && k <= FIX_CSUM_ADOPT;
}

enum fsck_sev {
	SEV_ERROR, /* damage */
	SEV_NOTE,  /* consistent, but a repair run acts on it (orphan list) */
	SEV_WARN,  /* worth saying, nothing to do */
};

struct fsck_problem {
	enum fsck_sev sev;
	enum fsck_fix fix;
	uint64_t a, b, c, d;
	uint64_t name_ino; /* nonzero: msg is prefixed with this inode's name
			    * once the scan knows the names (fsck_check) */
	char *msg;
};

struct fsck_inode {
	uint64_t ino;
	uint32_t mode;
	uint32_t nlink;
	uint64_t size;
	uint64_t pages;	 /* "data pages held" as recorded */
	uint64_t parent; /* directories only */
	uint32_t flags;
	uint32_t refs;		/* entries naming it */
	uint64_t first_dir;	/* directory of the first entry naming it */
	uint32_t subdirs;	/* directories: entries in it naming directories */
	uint64_t entries;	/* directories: live entries, dangling ones too */
	uint32_t dangling;	/* directories: entries naming nothing */
	uint32_t dangling_dirs; /* directories: those of them of type DT_DIR */
	uint64_t ext_pages;
	bool has_inline;
	bool orphan;	   /* an orphan record names it */
	bool bad;	   /* the record is malformed: checked no further */
	bool bad_extents;  /* an extent fsck cannot account for */
	bool shared_pages; /* a page of its extents belongs to something else too */
};

struct fsck_dirent {
	uint64_t parent;
	uint64_t slot;
	uint64_t child;
	uint8_t type;
	char *name;
};

struct fsck {
	struct bm *bm;
	const char *image;
	bool verbose;
	bool progress;
	uint64_t first_data;
	uint64_t page_count;
	uint64_t root; /* pid of the tree's root */
	bool was_clean;

	/* What a check found; fsck_reset clears it. */
	struct fsck_problem *probs;
	size_t nprobs, cap_probs;

	uint64_t allocated; /* pages set in the bitmap, whole image */
	uint64_t allocated_data;
	uint64_t csum_errors;
	uint8_t *bad_map;    /* per pid: allocated and fails its checksum */
	uint8_t *tree_map;   /* per pid: a page of the tree (nodes, overflow) */
	uint8_t *ext_map;    /* per pid: claimed by an extent */
	uint8_t *shared_map; /* per pid: claimed a second time (never freed) */
	uint64_t tree_pages, ext_pages;
	uint64_t tree_entries, tree_leaves, tree_inners, tree_overflow;
	unsigned tree_height;

	/* Gates: repairs run only on what fsck understood completely. */
	bool tree_ok;	  /* every tree page read and well formed */
	bool scan_ok;	  /* every record seen */
	bool records_ok;  /* root directory fine, no malformed inode record */
	bool space_exact; /* every extent understood: the page maps are exact */

	struct fsck_inode *inodes; /* ascending ino (the scan order) */
	size_t ninodes, cap_inodes;
	struct fsck_dirent *dirents;
	size_t ndirents, cap_dirents;
	uint32_t *by_child; /* dirent indices sorted by child, for paths */
	uint64_t *orphans;
	size_t norphans, cap_orphans;
	uint64_t max_ino;

	/* The scan's position: the inode whose records it is in (NULL until
	 * its INODE record has been seen, so records of a missing inode are
	 * caught), and a run of records of a missing object. */
	struct fsck_inode *cur;
	uint64_t cur_obj;
	bool cur_seen;
	uint64_t ext_end;
	uint64_t stray_obj, stray_records;
	unsigned stray_types; /* bit per record type seen (stray_flush) */
	int oom;
};

/* fsck_check.c */
void fsck_problem(struct fsck *f, enum fsck_sev sev, enum fsck_fix fix, uint64_t a, uint64_t b,
		  uint64_t c, uint64_t d, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
/* Run every pass on the open image. Returns 0, or -ENOMEM (nothing else
 * stops a check: damage is recorded as problems). */
int fsck_check(struct fsck *f);
void fsck_reset(struct fsck *f);
static inline const char *fsck_s(uint64_t n)
{
	return n == 1 ? "" : "s";
}

/* Is this problem repairable in this check's circumstances? */
bool fsck_can_fix(const struct fsck *f, const struct fsck_problem *p);
struct fsck_inode *fsck_find_inode(struct fsck *f, uint64_t ino);
/* "inode 20 (/a/b)": a description for messages, from one of a few static
 * buffers (at most four in one printf). */
const char *fsck_ino_name(struct fsck *f, uint64_t ino);

static inline bool fsck_map_get(const uint8_t *map, uint64_t pid)
{
	return (map[pid >> 3] >> (pid & 7)) & 1;
}

static inline void fsck_map_set(uint8_t *map, uint64_t pid)
{
	map[pid >> 3] |= (uint8_t)(1u << (pid & 7));
}

/* fsck_tree.c: walk every page of the tree from f->root, filling tree_map
 * and the tree statistics; sets tree_ok unless a page is unreadable or
 * malformed. Pages in use but free in the bitmap are repairable problems. */
int fsck_walk_tree(struct fsck *f);

/* fsck_repair.c: apply the repairs of the last check (the image open for
 * writing). Records first; the space repairs only in a round without record
 * repairs, since those move pages. Prints one line per repair. Returns the
 * repairs made, or a negative errno when the changes could not be made
 * durable (a failed checkpoint). */
int fsck_repair_round(struct fsck *f, bool *ret_more);
/* Bring the inode counters in the superblock slots in line with the tree
 * (before closing an image fsck wrote to). */
int fsck_sync_counters(struct fsck *f, bool *ret_changed);
/* Mark @pid in use in the bitmap, keeping what it holds (loaded, checksum
 * verified, written again at the next checkpoint). 0 or a negative errno. */
int fsck_claim_page(struct fsck *f, uint64_t pid);

/* fsck_tree.c: copy page @pid of the data area out of the pool (checksum
 * verified) into @buf (BT_PAGE bytes). 0, -ERANGE, or why it failed. */
int fsck_read_page(struct fsck *f, uint64_t pid, void *buf);

/* fsck_check.c: room for element @n of the array *@arr of *@cap elements
 * of @elem bytes (doubling). 0 or -ENOMEM. */
int fsck_grow(void **arr, size_t *cap, size_t n, size_t elem);

/* fsck_check.c: the allocated pages whose checksums were lost with a
 * checksum-table page damaged in both copies: how many hold tree nodes that
 * verify (*ret_nodes) and how many do not (*ret_other); with @adopt, those
 * nodes get their checksums back (bm_csum_adopt). 0 or a negative errno. */
int fsck_lost_checksums(struct fsck *f, bool adopt, uint64_t *ret_nodes, uint64_t *ret_other);

/* fsck_salvage.c: collect every record of the tree that can be trusted and
 * judge what is lost. SALVAGE_PLAN prints that ("lost:" lines and totals:
 * what fsck -n says a repair run would do); SALVAGE_PROBE prints nothing
 * and only answers whether a rebuild is worth it; SALVAGE_BUILD (the image
 * open for writing) prints, builds a new tree from the records and points
 * FS_SB_ROOT (and f->root) at it, without a checkpoint (the caller's round
 * ends with one). Returns 1 when the tree was (or would be) rebuilt, 0 when
 * not (no inode record can be read: said why), or a negative errno (the
 * image keeps its old tree). */
enum fsck_salvage_mode { SALVAGE_PLAN, SALVAGE_PROBE, SALVAGE_BUILD };
int fsck_salvage(struct fsck *f, enum fsck_salvage_mode mode);

#endif
