/*
 * fsck.c: fsck.virtuscale: check a VirtuScale image, and repair it.
 *
 *   fsck.virtuscale [-n] [-v] IMAGE
 *
 * What happens, in order:
 *
 *   1. The image is opened read-only and checked (fsck_check.c lists the
 *      passes). Every problem is recorded with the repair that fixes it, if
 *      any. With -n, or when nothing is repairable, that is the verdict:
 *      nothing was written, not even the superblock.
 *   2. Otherwise the image is reopened for writing with its journal, and
 *      repaired in rounds: check, repair (fsck_repair.c; one transaction per
 *      repair, a checkpoint per round), until a check finds nothing more to
 *      repair (at most MAX_ROUNDS). The inode counters are brought in line
 *      and the image is closed, clean. A tree that cannot be read whole is
 *      rebuilt first, in a round of its own (fsck_salvage.c), when the
 *      read-only check found it worth it (some inode record can be read);
 *      with -n, what that rebuild would keep and lose is printed instead.
 *   3. It is opened read-only again and checked once more: what that check
 *      finds is what is left.
 *
 * An image whose journal must be replayed cannot be opened read-only: with
 * -n that is an operational error, without it the replay is the first
 * repair (opening for writing replays it).
 *
 * Output: one line per problem ("ERROR: ..."), per repair ("FIXED: what:
 * what was done"), per path a salvage could not save ("lost: ..."), then a
 * line of totals and "N problems corrected, M left".
 * Exit status, as fsck(8), bits or'ed: 0 clean, 1 problems corrected, 4
 * problems left uncorrected, 8 operational error (not an image, in use,
 * cannot be read or written), 16 usage or syntax error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/log.h"
#include "fs/keys.h"
#include "tools/fsck.h"

/* fsck(8): usage or syntax error. */
#define FSCK_USAGE 16

/* Progress lines only for images where a pass takes noticeable time. */
#define PROGRESS_MIN_BYTES (UINT64_C(1) << 30)

/* Repairs that make new work (a freed directory's children to reconnect,
 * then the pages of what was freed) settle in three rounds, four after a
 * salvage (a round of its own); more means a repair that does not hold, and
 * the final check will say so. */
#define MAX_ROUNDS 8

/* Engine messages (a checksum mismatch logs one per page) would repeat what
 * fsck reports in its own words; show them only with -v. */
static bool log_verbose;
static void log_sink(enum vs_log_level level, const char *msg)
{
	if (log_verbose || level <= VS_LOG_ERR)
		fprintf(stderr, "fsck.virtuscale: engine: %s\n", msg);
}

static void log_sink_quiet(enum vs_log_level level, const char *msg)
{
	if (log_verbose)
		log_sink(level, msg);
}

/* While opening, the engine's reasons are held back, to be shown only when
 * the refusal is final (an image that needs its journal replayed is not,
 * without -n: the next open replays it). */
#define HELD_MAX 4
static char held[HELD_MAX][256];
static unsigned nheld;

static void log_sink_hold(enum vs_log_level level, const char *msg)
{
	if (log_verbose || level <= VS_LOG_ERR) {
		if (nheld < HELD_MAX)
			snprintf(held[nheld++], sizeof(held[0]), "%s", msg);
	}
}

static void held_flush(bool show)
{
	for (unsigned i = 0; i < nheld && show; i++)
		fprintf(stderr, "fsck.virtuscale: engine: %s\n", held[i]);
	nheld = 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: fsck.virtuscale [-n] [-v] IMAGE\n"
		     "\n"
		     "Check a VirtuScale image (it must not be mounted) and repair what can be\n"
		     "repaired safely: the allocation bitmap against the pages in use, link\n"
		     "counts, directory sizes, entries naming missing inodes, inodes no entry\n"
		     "names (freed when unlinked, else put in /lost+found), stray records.\n"
		     "A tree that cannot be read whole is rebuilt first from every record\n"
		     "that can (leaves found by scanning the image too); what is lost is\n"
		     "listed on \"lost:\" lines. File data that fails its checksum is\n"
		     "reported, not repaired. Repairs are journaled: a crash during fsck\n"
		     "leaves the image as before a round of repairs or after it.\n"
		     "\n"
		     "  -n, --no-action  check only; open the image read-only, write nothing\n"
		     "  -p, -a, -y, -f   accepted for fsck(8); repairing is the default\n"
		     "  -v, --verbose    statistics of each pass, and the engine's messages\n"
		     "  -h, --help       this text\n"
		     "\n"
		     "exit status (fsck(8), or'ed): 0 clean, 1 problems corrected,\n"
		     "  4 problems left uncorrected, 8 operational error (not an image,\n"
		     "  in use, I/O error; with -n also: needs journal replay),\n"
		     "  16 usage error\n");
}

static const char *open_error(int r)
{
	switch (r) {
	case -EBUSY:
		return "image is in use (mounted?); unmount it first";
	case -EROFS:
		return "the image needs its journal replayed, which -n does not do; run "
		       "fsck.virtuscale without -n (or mount it once)";
	case -EUCLEAN:
		return "not checked: not a VirtuScale image, or its superblock is damaged";
	case -EPROTONOSUPPORT:
		return "an image of another format version";
	default:
		return strerror(-r);
	}
}

static uint64_t pool_bytes(void)
{
	long phys = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t pool = UINT64_C(256) << 20;
	if (phys > 0 && psz > 0 && (uint64_t)phys * (uint64_t)psz / 4 < pool)
		pool = (uint64_t)phys * (uint64_t)psz / 4;
	if (pool < (UINT64_C(16) << 20))
		pool = UINT64_C(16) << 20;
	return pool;
}

/* Open the image: read-only, or for writing with the journal (repairs are
 * transactions). Opening logs its own reason for a refusal, which helps
 * (held_flush shows it); after that the engine's per-page messages are
 * only noise next to ours. */
static int open_image(struct fsck *f, bool rw)
{
	struct bm_config cfg = {
	    .path = f->image,
	    .pool_bytes = pool_bytes(),
	    .backend = BM_BACKEND_PLAIN,
	    .read_only = !rw,
	    .journal = rw,
	    .bitmap_repair = true, /* the walk rebuilds it */
	};
	vs_log_set_sink(log_sink_hold);
	int r = bm_open(&cfg, &f->bm);
	vs_log_set_sink(log_sink_quiet);
	if (r == 0)
		held_flush(log_verbose);
	if (r < 0) {
		f->bm = NULL;
		return r;
	}
	if (bm_sb_get(f->bm, FS_SB_MAGIC) != FS_MAGIC) {
		bm_close(f->bm);
		f->bm = NULL;
		return -EMEDIUMTYPE;
	}
	f->page_count = bm_page_count(f->bm);
	f->first_data = bm_first_data_pid(f->bm);
	f->root = bm_sb_get(f->bm, FS_SB_ROOT);
	f->progress = f->page_count * BM_PAGE_SIZE > PROGRESS_MIN_BYTES;
	return 0;
}

static void open_failed(const struct fsck *f, int r)
{
	bool explained = nheld > 0;

	held_flush(true);
	if (r == -EUCLEAN && explained)
		fprintf(stderr, "fsck.virtuscale: %s: not checked (the reason is above)\n",
			f->image);
	else if (r == -EMEDIUMTYPE)
		fprintf(stderr,
			"fsck.virtuscale: %s: no filesystem in this image (run "
			"mkfs.virtuscale)\n",
			f->image);
	else
		fprintf(stderr, "fsck.virtuscale: %s: %s\n", f->image, open_error(r));
}

static void close_image(struct fsck *f, int *rc)
{
	int r = bm_close(f->bm);
	f->bm = NULL;
	if (r < 0) {
		fprintf(stderr, "fsck.virtuscale: %s: writing the image failed: %s\n", f->image,
			strerror(-r));
		*rc |= FSCK_OPERROR;
	}
}

static size_t count_fixable(const struct fsck *f)
{
	size_t n = 0;
	for (size_t i = 0; i < f->nprobs; i++)
		n += fsck_can_fix(f, &f->probs[i]);
	return n;
}

static size_t count_fixable_errors(const struct fsck *f)
{
	size_t n = 0;
	for (size_t i = 0; i < f->nprobs; i++)
		n += f->probs[i].sev == SEV_ERROR && fsck_can_fix(f, &f->probs[i]);
	return n;
}

static size_t count_errors(const struct fsck *f)
{
	size_t n = 0;
	for (size_t i = 0; i < f->nprobs; i++)
		n += f->probs[i].sev == SEV_ERROR;
	return n;
}

/* The problems of the last check; with -n, say which a repair run fixes. */
static void print_problems(const struct fsck *f, bool hint)
{
	size_t notes = 0;
	for (size_t i = 0; i < f->nprobs; i++) {
		const struct fsck_problem *p = &f->probs[i];
		bool fix = hint && fsck_can_fix(f, p);
		switch (p->sev) {
		case SEV_ERROR:
			printf("ERROR: %s%s\n", p->msg, fix ? " (repairable)" : "");
			break;
		case SEV_WARN:
			printf("warning: %s\n", p->msg);
			break;
		case SEV_NOTE:
			notes++;
			if (f->verbose)
				printf("note: %s\n", p->msg);
			break;
		}
	}
	if (notes)
		printf("note: %zu inode%s on the orphan list (unlinked while open): the next "
		       "mount frees %s, or fsck without -n\n",
		       notes, notes == 1 ? "" : "s", notes == 1 ? "it" : "them");
}

/* Would a repair run rebuild the tree? (-n then says what it would keep.) */
static bool salvage_pending(const struct fsck *f)
{
	for (size_t i = 0; i < f->nprobs; i++)
		if (f->probs[i].fix == FIX_SALVAGE && fsck_can_fix(f, &f->probs[i]))
			return true;
	return false;
}

/* Before the image is opened for writing: would a rebuild of the tree keep
 * anything? When not, the salvage problem is left unrepaired and nothing is
 * written. 1 yes, 0 no, or a negative errno (reported). */
static int salvage_worth_it(struct fsck *f)
{
	int r = fsck_salvage(f, SALVAGE_PROBE);
	if (r == 0) {
		for (size_t i = 0; i < f->nprobs; i++)
			if (f->probs[i].fix == FIX_SALVAGE)
				f->probs[i].fix = FIX_NONE;
	}
	return r;
}

static void print_stats(const struct fsck *f)
{
	if (!f->verbose)
		return;
	printf("checksums: %llu allocated data pages read, %llu bad\n",
	       (unsigned long long)f->allocated_data, (unsigned long long)f->csum_errors);
	printf("tree: root %llu, height %u, %llu entries, %llu leaves, %llu inner, %llu "
	       "overflow pages\n",
	       (unsigned long long)f->root, f->tree_height, (unsigned long long)f->tree_entries,
	       (unsigned long long)f->tree_leaves, (unsigned long long)f->tree_inners,
	       (unsigned long long)f->tree_overflow);
	printf("records: %zu inodes, %zu directory entries, %zu orphans, %llu extent pages\n",
	       f->ninodes, f->ndirents, f->norphans, (unsigned long long)f->ext_pages);
}

static void print_totals(const struct fsck *f, size_t errors)
{
	size_t warnings = 0;
	for (size_t i = 0; i < f->nprobs; i++)
		warnings += f->probs[i].sev == SEV_WARN;
	printf("%s: %llu pages, %llu allocated, %zu inodes, %zu errors, %zu warnings\n", f->image,
	       (unsigned long long)f->page_count, (unsigned long long)f->allocated, f->ninodes,
	       errors, warnings);
}

static int check(struct fsck *f)
{
	fsck_reset(f);
	f->was_clean = bm_was_clean(f->bm);
	int r = fsck_check(f);
	if (r < 0)
		fprintf(stderr, "fsck.virtuscale: out of memory\n");
	return r;
}

/* Step 2: repair in rounds on the image open for writing. Returns the
 * repairs made, or -1 after an operational error (reported). */
static long repair(struct fsck *f, bool sb_free_stale, uint64_t sb_free_was)
{
	long corrected = 0;
	int r = open_image(f, true);
	if (r < 0) {
		open_failed(f, r);
		return -1;
	}
	for (unsigned round = 0; round < MAX_ROUNDS; round++) {
		if (check(f) < 0)
			goto fail;
		if (count_fixable(f) == 0)
			break;
		bool more;
		r = fsck_repair_round(f, &more);
		if (r < 0)
			goto fail;
		corrected += r;
		if (r == 0 || !more)
			break; /* nothing more would change: the final check says what is left */
	}
	bool changed;
	r = fsck_sync_counters(f, &changed);
	if (r < 0) {
		fprintf(stderr, "fsck.virtuscale: %s: counting inodes: %s\n", f->image,
			strerror(-r));
	} else if (changed && f->verbose) {
		printf("note: inode counters updated (count %llu, next number %llu)\n",
		       (unsigned long long)bm_sb_get(f->bm, FS_SB_INODES),
		       (unsigned long long)bm_sb_get(f->bm, FS_SB_INO_NEXT));
	}
	if (sb_free_stale) {
		struct bm_stats st;
		bm_stats_get(f->bm, &st);
		printf("FIXED: superblock: free page count %llu disagreed with the bitmap: "
		       "rewritten from the (repaired) bitmap: %llu\n",
		       (unsigned long long)sb_free_was, (unsigned long long)st.free_pages);
		corrected++;
	}
	fsck_reset(f);
	int rc = 0;
	close_image(f, &rc);
	return rc ? -1 : corrected;
fail:
	fsck_reset(f);
	bm_close(f->bm); /* what was checkpointed stands; the rest is dropped */
	f->bm = NULL;
	return -1;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
	    {"no-action", no_argument, NULL, 'n'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct fsck f = {0};
	bool no_action = false;
	long corrected = 0;
	int c, r, rc = 0;

	while ((c = getopt_long(argc, argv, "nvhpayf", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			no_action = true;
			break;
		case 'v':
			f.verbose = true;
			break;
		case 'p':
		case 'a':
		case 'y':
		case 'f':
			break;
		case 'h':
			usage(stdout);
			return FSCK_OK;
		default:
			usage(stderr);
			return FSCK_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "fsck.virtuscale: %s\n",
			optind == argc ? "no image given" : "more than one image given");
		usage(stderr);
		return FSCK_USAGE;
	}
	f.image = argv[optind];
	log_verbose = f.verbose;

	r = open_image(&f, false);
	if (r == -EROFS && !no_action) {
		/* Why the journal must be replayed: a checkpoint cut short, or
		 * a damaged superblock whose copy the journal holds. */
		bool sb_damaged = false;
		char why[64] = "";
		for (unsigned i = 0; i < nheld; i++) {
			const char *d = strstr(held[i], "superblock is damaged (");
			if (d) {
				sb_damaged = true;
				sscanf(d + strlen("superblock is damaged ("), "%63[^)]", why);
			}
		}
		held_flush(log_verbose);
		/* Replaying is what opening for writing does first. */
		r = open_image(&f, true);
		if (r == 0) {
			uint64_t n = bm_recovered_pages(f.bm);
			bool changed;
			/* Closing marks the image clean, so the next mount will
			 * not recount after the crash: do it here. */
			f.was_clean = bm_was_clean(f.bm);
			if (fsck_sync_counters(&f, &changed) < 0)
				rc |= FSCK_OPERROR;
			close_image(&f, &rc);
			if (rc)
				return rc;
			if (sb_damaged)
				printf("FIXED: superblock: damaged (%s): restored from the "
				       "journal's copy (%llu pages replayed)\n",
				       why, (unsigned long long)n);
			else
				printf("FIXED: journal: the image was left in the middle of a "
				       "checkpoint: %llu pages replayed\n",
				       (unsigned long long)n);
			corrected++;
			r = open_image(&f, false);
		}
	}
	if (r < 0) {
		open_failed(&f, r);
		return FSCK_OPERROR;
	}
	if (check(&f) < 0) {
		rc = FSCK_OPERROR;
		goto out;
	}
	/* With -n, or when a rebuild would keep nothing, the plan says what
	 * it would keep, or why not. */
	bool plan = false;
	if (salvage_pending(&f)) {
		r = salvage_worth_it(&f);
		if (r < 0) {
			rc = FSCK_OPERROR;
			goto out;
		}
		plan = no_action || r == 0;
	}
	size_t fixable = count_fixable(&f);
	if (no_action || fixable == 0) {
		print_problems(&f, no_action);
		if (plan && fsck_salvage(&f, SALVAGE_PLAN) < 0)
			rc |= FSCK_OPERROR;
		print_stats(&f);
		size_t left = count_errors(&f);
		print_totals(&f, left);
		printf("%ld problems corrected, %zu left", corrected, left);
		if (no_action && count_fixable_errors(&f))
			printf(" (%zu repairable: run without -n)", count_fixable_errors(&f));
		putchar('\n');
		rc |= (corrected ? FSCK_CORRECTED : 0) | (left ? FSCK_UNCORR : 0);
		goto out;
	}

	bool sb_free_stale = false;
	uint64_t sb_free_was = 0;
	for (size_t i = 0; i < f.nprobs; i++) {
		if (f.probs[i].fix == FIX_SB_FREE && fsck_can_fix(&f, &f.probs[i])) {
			sb_free_stale = true;
			sb_free_was = f.probs[i].a;
		}
	}
	fsck_reset(&f);
	close_image(&f, &rc);
	if (rc)
		goto out;
	long n = repair(&f, sb_free_stale, sb_free_was);
	if (n < 0) {
		rc |= FSCK_OPERROR;
		goto out;
	}
	corrected += n;

	r = open_image(&f, false);
	if (r < 0) {
		open_failed(&f, r);
		rc |= FSCK_OPERROR;
		goto out;
	}
	if (check(&f) < 0) {
		rc |= FSCK_OPERROR;
		goto out;
	}
	print_problems(&f, false);
	print_stats(&f);
	size_t left = count_errors(&f);
	print_totals(&f, left);
	printf("%ld problems corrected, %zu left\n", corrected, left);
	rc |= (corrected ? FSCK_CORRECTED : 0) | (left ? FSCK_UNCORR : 0);
out:
	fsck_reset(&f);
	if (f.bm)
		bm_close(f.bm);
	return rc;
}
