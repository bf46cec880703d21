/*
 * fuzz_image.c: a fuzz target over everything that reads an image from disk:
 * the superblock and layout checks, journal recovery, the checksum table, the
 * tree's node accessors, fsck's passes and repairs, and the filesystem's
 * lookups, readdir, reads, readlink and xattrs.
 *
 * One input is a small image in a sparse encoding (so that a fuzzer mutates
 * the bytes that matter and not a megabyte of zeros):
 *
 *   OFFSET SIZE MEANING
 *        0    1 flags (below)
 *        1    2 image pages, little-endian (clamped to 100 .. FZ_MAX_PAGES)
 *        3    . records until the end: u16 pid (modulo the page count),
 *               u16 length n (clamped to 4096), n bytes: the page's first n
 *               bytes (the rest zero). A later record for a pid wins.
 *
 *   flags bit 0  seal the superblock (its XXH3 at 4088), so that mutations
 *                of its fields reach the layout checks
 *         bit 1  recompute the checksum-table entry of every page whose entry
 *                is nonzero, and the table pages' seals and copy, so that
 *                mutations of pages reach the parsers behind the checksum
 *                check
 *         bit 2  seal the journal descriptor and its image hashes, so that
 *                mutations reach recovery
 *         bit 3  open for writing with the journal (recovery, fsck repairs,
 *                the filesystem's mount-time work); else read-only
 *
 * What runs: bm_open; fsck's check (and with bit 3 one repair round and a
 * second check); bm_close; then fs_mount and a bounded walk of the tree
 * (readdir, getattr, read, readlink, listxattr/getxattr); fs_unmount. Any
 * error return is fine; a crash, a sanitizer report, a hang or an abort is
 * a finding.
 *
 * Built two ways (tests/damage/meson.build): with -Dfuzz=true under clang,
 * a libFuzzer target (also usable by AFL++ through afl-clang-fast
 * -fsanitize=fuzzer); otherwise with a main() that replays the files named
 * on its command line (the regression test over tests/damage/regress/).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/bm.h"
#include "engine/bm_internal.h"
#include "engine/log.h"
#include "fs/fs.h"
#include "fs/keys.h"
#include "tools/fsck.h"

#define FZ_MIN_PAGES 100
#define FZ_MAX_PAGES 512
#define FZ_POOL	     (UINT64_C(2) << 20)
#define FZ_MAX_FILES 64	   /* inodes the walk visits */
#define FZ_MAX_READ  65536 /* bytes read per file */

#define FZ_SEAL_SB   1u
#define FZ_SEAL_CSUM 2u
#define FZ_SEAL_JRNL 4u
#define FZ_WRITE     8u

static char img_path[64];
static bool verbose; /* VS_FUZZ_VERBOSE: say what each step did */
static uint8_t *img; /* the decoded image, FZ_MAX_PAGES pages */

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static uint64_t page_hash(const uint8_t *page)
{
	uint64_t h = XXH3_64bits(page, BM_PAGE_SIZE);
	return h ? h : 1;
}

static void quiet(enum vs_log_level level, const char *msg)
{
	(void)level;
	(void)msg;
}

/* Decode @data into img; returns the page count. */
static uint64_t decode(const uint8_t *data, size_t size, unsigned *ret_flags)
{
	uint64_t pages = FZ_MIN_PAGES;
	*ret_flags = 0;
	memset(img, 0, (size_t)FZ_MAX_PAGES * BM_PAGE_SIZE);
	if (size >= 3) {
		*ret_flags = data[0];
		pages = data[1] | (uint64_t)data[2] << 8;
		if (pages < FZ_MIN_PAGES)
			pages = FZ_MIN_PAGES;
		if (pages > FZ_MAX_PAGES)
			pages = FZ_MAX_PAGES;
	}
	size_t i = 3;
	while (i + 4 <= size) {
		uint64_t pid = (data[i] | (uint64_t)data[i + 1] << 8) % pages;
		size_t n = data[i + 2] | (size_t)data[i + 3] << 8;
		i += 4;
		if (n > BM_PAGE_SIZE)
			n = BM_PAGE_SIZE;
		if (n > size - i)
			n = size - i;
		uint8_t *p = img + pid * BM_PAGE_SIZE;
		memcpy(p, data + i, n);
		memset(p + n, 0, BM_PAGE_SIZE - n);
		i += n;
	}
	return pages;
}

/* The fix-ups of the flags: make checksums agree with mutated content. */
static void seal(uint64_t pages, unsigned flags)
{
	uint8_t *sb = img;
	if (flags & FZ_SEAL_JRNL) {
		uint64_t jr = get64(sb + SB_OFF_JRSTART), jn = get64(sb + SB_OFF_JRPAGES);
		uint8_t *d = img + (jr < pages ? jr : 1) * BM_PAGE_SIZE;
		if (jr > 0 && jr < pages && jn <= pages - jr && memcmp(d, "VSJRNL01", 8) == 0) {
			uint64_t n = get64(d + 16), dp = get64(d + 24);
			if (dp >= 1 && dp <= jn && n <= jn - dp) {
				/* Entries: (home pid, hash of the image), image i
				 * at jr + dp + i; new pages (field 40 counts them
				 * at the end) are hashed at home. */
				uint64_t h = get64(d + 40);
				for (uint64_t i = 0; i < n && 64 + 16 * (i + 1) <= dp * BM_PAGE_SIZE;
				     i++) {
					uint8_t *e = d + 64 + 16 * i;
					uint64_t home = get64(e), at = jr + dp + i;
					if (h <= n && i >= n - h)
						at = home;
					if (at < pages)
						put64(e + 8, page_hash(img + at * BM_PAGE_SIZE));
				}
				put64(d + 32, 0);
				put64(d + 32, XXH3_64bits(d, dp * BM_PAGE_SIZE));
			}
		}
	}
	if (flags & FZ_SEAL_CSUM) {
		/* Entries of the pages that have one, the seals, and the copy
		 * made identical to the table. */
		uint64_t cs = get64(sb + SB_OFF_CSSTART), cn = get64(sb + SB_OFF_CSPAGES);
		uint64_t cs2 = get64(sb + SB_OFF_CS2START);
		if (cs > 0 && cs < pages && cn <= pages - cs) {
			for (uint64_t i = 0; i < cn; i++) {
				uint8_t *tp = img + (cs + i) * BM_PAGE_SIZE;
				for (uint64_t j = 0; j < BM_PIDS_PER_CS; j++) {
					uint64_t p = i * BM_PIDS_PER_CS + j;
					uint64_t e = get64(tp + 8 * j);
					if (p < pages && e != 0 && e != BM_CSUM_COPY &&
					    e != BM_CSUM_UNKNOWN && (p < cs || p >= cs + 2 * cn))
						put64(tp + 8 * j, page_hash(img + p * BM_PAGE_SIZE));
				}
				uint64_t seal = XXH3_64bits_withSeed(tp, BM_CS_SEAL_OFF, i);
				put64(tp + BM_CS_SEAL_OFF, seal ? seal : 1);
				if (cs2 > cs && cs2 < pages && cn <= pages - cs2 && cs2 + i != cs + i)
					memcpy(img + (cs2 + i) * BM_PAGE_SIZE, tp, BM_PAGE_SIZE);
			}
		}
	}
	if (flags & FZ_SEAL_SB)
		put64(sb + SB_OFF_CSUM, XXH3_64bits(sb, SB_OFF_CSUM));
}

static int write_image(uint64_t pages)
{
	int fd = open(img_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int r = 0;
	for (uint64_t p = 0; p < pages && r == 0; p++) {
		const uint8_t *pg = img + p * BM_PAGE_SIZE;
		bool zero = true;
		for (unsigned i = 0; i < BM_PAGE_SIZE && zero; i += 8)
			zero = get64(pg + i) == 0;
		if (!zero && pwrite(fd, pg, BM_PAGE_SIZE, (off_t)(p * BM_PAGE_SIZE)) != BM_PAGE_SIZE)
			r = -EIO;
	}
	if (r == 0 && ftruncate(fd, (off_t)(pages * BM_PAGE_SIZE)) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* fsck in-process, as fsck.c's main does it. */
static void run_fsck(bool rw)
{
	struct fsck f = {.image = img_path};
	struct bm_config cfg = {
	    .path = img_path,
	    .pool_bytes = FZ_POOL,
	    .backend = BM_BACKEND_PLAIN,
	    .read_only = !rw,
	    .journal = rw,
	    .no_direct = true,
	};
	int r = bm_open(&cfg, &f.bm);
	if (verbose)
		fprintf(stderr, "  fsck: open %s: %d\n", rw ? "rw" : "ro", r);
	if (r < 0)
		return;
	if (bm_sb_get(f.bm, FS_SB_MAGIC) != FS_MAGIC)
		goto out;
	f.page_count = bm_page_count(f.bm);
	f.first_data = bm_first_data_pid(f.bm);
	f.root = bm_sb_get(f.bm, FS_SB_ROOT);
	f.was_clean = bm_was_clean(f.bm);
	if (fsck_check(&f) < 0)
		goto out;
	if (verbose)
		fprintf(stderr, "  fsck: %zu problems, %zu inodes, tree %s\n", f.nprobs, f.ninodes,
			f.tree_ok ? "ok" : "damaged");
	if (rw) {
		size_t fixable = 0;
		for (size_t i = 0; i < f.nprobs; i++)
			fixable += fsck_can_fix(&f, &f.probs[i]);
		if (fixable) {
			bool more;
			fsck_reset(&f);
			f.was_clean = bm_was_clean(f.bm);
			if (fsck_check(&f) == 0 && fsck_repair_round(&f, &more) >= 0) {
				fsck_reset(&f);
				fsck_check(&f);
			}
		}
		bool changed;
		fsck_reset(&f);
		fsck_sync_counters(&f, &changed);
	}
out:
	fsck_reset(&f);
	bm_close(f.bm);
}

struct walk {
	struct fs *fs;
	uint64_t inos[FZ_MAX_FILES];
	unsigned n;
};

static bool dirent_fn(void *ctx, const char *name, uint64_t ino, mode_t type, uint64_t next,
		      const struct stat *st)
{
	struct walk *w = ctx;
	(void)type;
	(void)next;
	(void)st;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return true;
	for (unsigned i = 0; i < w->n; i++)
		if (w->inos[i] == ino)
			return true;
	if (w->n >= FZ_MAX_FILES)
		return false;
	w->inos[w->n++] = ino;
	return true;
}

static void visit(struct walk *w, uint64_t ino, uint8_t *buf)
{
	struct stat st;
	size_t len;
	if (fs_getattr(w->fs, ino, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		fs_readdir(w->fs, ino, 0, false, dirent_fn, w);
	} else if (S_ISREG(st.st_mode)) {
		if (fs_open(w->fs, ino, O_RDONLY) == 0) {
			for (uint64_t off = 0; off < FZ_MAX_READ; off += 16384)
				if (fs_read(w->fs, ino, off, 16384, buf) <= 0)
					break;
			fs_release(w->fs, ino);
		}
	} else if (S_ISLNK(st.st_mode)) {
		fs_readlink(w->fs, ino, (char *)buf, FS_SYMLINK_MAX, &len);
	}
	if (fs_listxattr(w->fs, ino, (char *)buf, 65536, &len) == 0) {
		for (size_t i = 0; i < len;) {
			size_t nl = strnlen((char *)buf + i, len - i);
			char name[FS_NAME_MAX + 1];
			size_t vlen;
			snprintf(name, sizeof(name), "%.*s", (int)nl, (char *)buf + i);
			fs_getxattr(w->fs, ino, name, buf + 65536, 65536, &vlen);
			i += nl + 1;
		}
	}
}

static void run_fs(bool rw)
{
	struct fs_config cfg = {
	    .image = img_path,
	    .pool_bytes = FZ_POOL,
	    .backend = BM_BACKEND_PLAIN,
	    .read_only = !rw,
	};
	struct walk w = {0};
	static uint8_t buf[2 * 65536];
	int r = fs_mount(&cfg, &w.fs);
	if (verbose)
		fprintf(stderr, "  fs: mount %s: %d\n", rw ? "rw" : "ro", r);
	if (r < 0)
		return;
	w.inos[w.n++] = FS_INO_ROOT;
	for (unsigned i = 0; i < w.n; i++)
		visit(&w, w.inos[i], buf);
	if (verbose)
		fprintf(stderr, "  fs: %u inodes visited\n", w.n);
	fs_unmount(w.fs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!img) {
		img = malloc((size_t)FZ_MAX_PAGES * BM_PAGE_SIZE);
		const char *dir = getenv("VS_FUZZ_TMP");
		snprintf(img_path, sizeof(img_path), "%s/vs-fuzz.%d.img", dir ? dir : "/dev/shm",
			 (int)getpid());
		verbose = getenv("VS_FUZZ_VERBOSE") != NULL;
		if (!verbose)
			vs_log_set_sink(quiet);
	}
	unsigned flags;
	uint64_t pages = decode(data, size, &flags);
	seal(pages, flags);
	const char *dump = getenv("VS_FUZZ_DUMP");
	if (dump) {
		/* Write the image out for the real tools, and stop there. */
		snprintf(img_path, sizeof(img_path), "%s", dump);
		return write_image(pages);
	}
	if (write_image(pages) == 0) {
		run_fsck(flags & FZ_WRITE);
		run_fs(flags & FZ_WRITE);
	}
	unlink(img_path);
	return 0;
}

#ifndef DMG_LIBFUZZER
/* Replay: run each file named on the command line once. VS_FUZZ_DUMP=FILE
 * writes the (first) input's image to FILE instead, for fsck.virtuscale and
 * the daemon. */
int main(int argc, char **argv)
{
	static uint8_t data[4u << 20];
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) {
			perror(argv[i]);
			return 2;
		}
		size_t n = fread(data, 1, sizeof(data), f);
		fclose(f);
		fprintf(stderr, "replay %s (%zu bytes)\n", argv[i], n);
		LLVMFuzzerTestOneInput(data, n);
	}
	return 0;
}
#endif
