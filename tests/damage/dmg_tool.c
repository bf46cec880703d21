/*
 * dmg_tool.c: the corruption campaign's instruments (tests/damage/campaign.sh).
 *
 *   dmg_tool map IMAGE
 *       One line per page that holds something, "KIND PID INO SPAN" (SPAN:
 *       the bytes of the page that mean something, from its start: less
 *       than 4096 for the last pages of the bitmap and checksum table):
 *         super    page 0
 *         journal  the journal's pages in use (descriptor and images of the
 *                  last checkpoint; its first page when none is valid)
 *         bitmap   the allocation bitmap's pages
 *         csum     the checksum table's pages that cover allocated pages
 *         inner    inner nodes of the filesystem tree
 *         leaf     leaves of the tree
 *         overflow overflow pages of leaf values (INO: the key's object)
 *         data     file data pages mapped by EXTENT records (INO: the file)
 *       The image is opened read-only through the engine (so an image that
 *       needs its journal replayed is refused: exit 8); the superblock and
 *       journal descriptor are read raw, with the offsets of
 *       engine/bm_internal.h and bm_journal.c.
 *
 *   dmg_tool hit IMAGE PID HOW SEED [SRC [SPAN]]
 *       Damage page PID in place (the checksum table is left alone, as a
 *       disk would leave it). HOW:
 *         flip    one byte XOR'ed with a nonzero value
 *         rand64  64 consecutive bytes replaced with random ones
 *         zero8   one nonzero 8-byte word (8-aligned) zeroed (in the
 *                 checksum table: one entry, which then says "never
 *                 written")
 *         zero    the whole page zeroed
 *         copy    the whole page replaced with page SRC (a misdirected write)
 *         torn    the page from a 512-byte boundary on (1 to 7 sectors in)
 *                 replaced with SRC's bytes there (a write torn between two
 *                 versions)
 *       flip, rand64 and the tear stay within the first SPAN bytes (default
 *       4096).
 *       SEED picks the offsets and bytes (deterministic). Prints what it
 *       did; exits 3 without writing when the page would not change (a
 *       copy of identical bytes).
 *
 *   dmg_tool gen FILE SIZE SEED
 *       Write SIZE pseudo-random bytes (from SEED) to FILE: the campaign's
 *       file contents, reproducible from the seed.
 *
 * Exit status: 0 done, 2 usage, 3 nothing to change (hit), 8 cannot open or
 * read the image.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/bm_internal.h"
#include "engine/btree_node.h"
#include "engine/log.h"
#include "fs/keys.h"

#define MAX_DEPTH 32

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* splitmix64: small, deterministic, good enough to place damage. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static int pread_page(int fd, uint64_t pid, uint8_t *buf)
{
	ssize_t n = pread(fd, buf, BM_PAGE_SIZE, (off_t)(pid * BM_PAGE_SIZE));
	return n == BM_PAGE_SIZE ? 0 : -EIO;
}

struct copy_arg {
	uint64_t pid;
	uint8_t *buf;
};

static int op_copy(struct bm_op *op, void *arg)
{
	struct copy_arg *a = arg;
	struct bm_guard g;
	memcpy(a->buf, bm_fix_s(op, a->pid, &g), BM_PAGE_SIZE);
	bm_unfix(op, &g);
	return 0;
}

struct walk {
	struct bm *bm;
	uint64_t first_data, pages;
	unsigned errors;
};

static void walk(struct walk *w, uint64_t pid, unsigned depth)
{
	uint8_t page[BM_PAGE_SIZE], key[BT_KEY_MAX];
	struct copy_arg a = {.pid = pid, .buf = page};

	if (depth > MAX_DEPTH || pid < w->first_data || pid >= w->pages) {
		w->errors++;
		return;
	}
	if (bm_run(w->bm, op_copy, &a) < 0 || bt_node_verify(page, (char[80]){0}, 80) < 0) {
		fprintf(stderr, "dmg_tool: tree page %llu unreadable or malformed\n",
			(unsigned long long)pid);
		w->errors++;
		return;
	}
	unsigned count = bt_node_count(page);
	if (!bt_node_is_leaf(page)) {
		printf("inner %llu 0 4096\n", (unsigned long long)pid);
		for (unsigned i = 0; i <= count; i++)
			walk(w, bt_node_child(page, i), depth + 1);
		return;
	}
	printf("leaf %llu 0 4096\n", (unsigned long long)pid);
	for (unsigned i = 0; i < count; i++) {
		unsigned klen = bt_node_key(page, i, key);
		uint64_t obj = klen >= 8 ? fs_key_obj(key) : 0;
		if (bt_node_is_overflow(page, i)) {
			printf("overflow %llu %llu 4096\n", (unsigned long long)bt_node_payload_pid(page, i),
			       (unsigned long long)obj);
			continue;
		}
		if (!fs_key_is(key, klen, obj, FS_REC_EXTENT))
			continue;
		unsigned vlen;
		const uint8_t *v = bt_node_payload(page, i, &vlen);
		if (vlen != FS_EXTENT_LEN)
			continue;
		uint64_t first = fs_get_le64(v);
		uint32_t n = fs_get_le32(v + 8);
		for (uint32_t j = 0; j < n && first + j < w->pages; j++)
			printf("data %llu %llu 4096\n", (unsigned long long)(first + j),
			       (unsigned long long)obj);
	}
}

static void quiet_log(enum vs_log_level level, const char *msg)
{
	if (level <= VS_LOG_ERR)
		fprintf(stderr, "dmg_tool: engine: %s\n", msg);
}

static int cmd_map(const char *image)
{
	uint8_t sb[BM_PAGE_SIZE], jd[BM_PAGE_SIZE];
	int fd = open(image, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread_page(fd, 0, sb) < 0) {
		perror(image);
		return 8;
	}
	uint64_t pages = get64(sb + SB_OFF_PAGES);
	uint64_t jr = get64(sb + SB_OFF_JRSTART), jn = get64(sb + SB_OFF_JRPAGES);
	uint64_t bs = get64(sb + SB_OFF_BMSTART), bn = get64(sb + SB_OFF_BMPAGES);
	uint64_t cs = get64(sb + SB_OFF_CSSTART), cn = get64(sb + SB_OFF_CSPAGES);

	/* The journal in use: descriptor pages + images (bm_journal.c layout). */
	uint64_t jused = 1;
	if (pread_page(fd, jr, jd) == 0 && memcmp(jd, "VSJRNL01", 8) == 0) {
		uint64_t n = get64(jd + 16), dp = get64(jd + 24);
		if (dp + n <= jn && dp > 0)
			jused = dp + n;
	}
	close(fd);

	vs_log_set_sink(quiet_log);
	struct bm_config cfg = {
	    .path = image,
	    .pool_bytes = UINT64_C(64) << 20,
	    .backend = BM_BACKEND_PLAIN,
	    .read_only = true,
	    .no_direct = true,
	};
	struct bm *bm;
	int r = bm_open(&cfg, &bm);
	if (r < 0) {
		fprintf(stderr, "dmg_tool: %s: cannot open: %s\n", image, strerror(-r));
		return 8;
	}
	printf("super 0 0 4096\n");
	for (uint64_t i = 0; i < jused && i < jn; i++)
		printf("journal %llu 0 4096\n", (unsigned long long)(jr + i));
	for (uint64_t i = 0; i < bn; i++) {
		uint64_t bits = pages - i * BM_PIDS_PER_BMP;
		uint64_t span = bits >= BM_PIDS_PER_BMP ? BM_PAGE_SIZE : (bits + 7) / 8;
		printf("bitmap %llu 0 %llu\n", (unsigned long long)(bs + i), (unsigned long long)span);
	}
	/* A checksum-table page (or its copy, cn pages further) matters when
	 * it covers an allocated page; all its bytes do, the seal at its end
	 * too. */
	for (uint64_t i = 0; i < cn; i++) {
		bool used = false;
		for (uint64_t p = i * BM_PIDS_PER_CS; p < (i + 1) * BM_PIDS_PER_CS && p < pages; p++)
			used |= p >= bm_first_data_pid(bm) && bm_is_allocated(bm, p);
		if (used)
			printf("csum %llu 0 %u\ncsum %llu 0 %u\n", (unsigned long long)(cs + i),
			       BM_PAGE_SIZE, (unsigned long long)(cs + cn + i), BM_PAGE_SIZE);
	}
	struct walk w = {.bm = bm, .first_data = bm_first_data_pid(bm), .pages = pages};
	walk(&w, bm_sb_get(bm, FS_SB_ROOT), 0);
	bm_close(bm);
	return w.errors ? 8 : 0;
}

static int cmd_hit(const char *image, uint64_t pid, const char *how, uint64_t seed, uint64_t src,
		   uint64_t span)
{
	uint8_t page[BM_PAGE_SIZE], other[BM_PAGE_SIZE], before[BM_PAGE_SIZE];
	if (span < 64 || span > BM_PAGE_SIZE)
		span = BM_PAGE_SIZE;
	uint64_t s = seed * 2654435761u + pid;
	int fd = open(image, O_RDWR | O_CLOEXEC);
	if (fd < 0 || pread_page(fd, pid, page) < 0) {
		perror(image);
		return 8;
	}
	memcpy(before, page, sizeof(page));
	if (!strcmp(how, "flip")) {
		unsigned off = (unsigned)(rng_next(&s) % span);
		uint8_t x = (uint8_t)(1 + rng_next(&s) % 255);
		page[off] ^= x;
		printf("flip pid %llu offset %u xor 0x%02x\n", (unsigned long long)pid, off, x);
	} else if (!strcmp(how, "rand64")) {
		unsigned off = (unsigned)(rng_next(&s) % (span - 63));
		for (unsigned i = 0; i < 64; i++)
			page[off + i] = (uint8_t)rng_next(&s);
		printf("rand64 pid %llu offset %u\n", (unsigned long long)pid, off);
	} else if (!strcmp(how, "zero8")) {
		/* One of the nonzero words (a zero one would change nothing). */
		unsigned nz = 0, off = 0, pick;
		for (unsigned o = 0; o + 8 <= span; o += 8)
			nz += get64(page + o) != 0;
		pick = nz ? (unsigned)(rng_next(&s) % nz) : 0;
		for (unsigned o = 0; o + 8 <= span; o += 8) {
			if (get64(page + o) != 0 && pick-- == 0) {
				off = o;
				break;
			}
		}
		memset(page + off, 0, 8);
		printf("zero8 pid %llu offset %u\n", (unsigned long long)pid, off);
	} else if (!strcmp(how, "zero")) {
		memset(page, 0, sizeof(page));
		printf("zero pid %llu\n", (unsigned long long)pid);
	} else if (!strcmp(how, "copy") || !strcmp(how, "torn")) {
		if (pread_page(fd, src, other) < 0) {
			perror("source page");
			close(fd);
			return 8;
		}
		/* Torn at a sector boundary inside the bytes that mean
		 * something (the whole page but for the bitmap's and the
		 * checksum table's last pages). */
		unsigned sectors = span >= BM_PAGE_SIZE ? 7 : (unsigned)(span - 1) / 512;
		unsigned from = sectors ? 512 * (unsigned)(1 + rng_next(&s) % sectors)
					: (unsigned)span / 2;
		if (!strcmp(how, "copy"))
			from = 0;
		memcpy(page + from, other + from, BM_PAGE_SIZE - from);
		printf("%s pid %llu from %llu at %u\n", how, (unsigned long long)pid,
		       (unsigned long long)src, from);
	} else {
		fprintf(stderr, "dmg_tool: unknown damage %s\n", how);
		close(fd);
		return 2;
	}
	if (!memcmp(page, before, sizeof(page))) {
		printf("unchanged\n");
		close(fd);
		return 3;
	}
	if (pwrite(fd, page, BM_PAGE_SIZE, (off_t)(pid * BM_PAGE_SIZE)) != BM_PAGE_SIZE ||
	    fsync(fd) < 0) {
		perror("write");
		close(fd);
		return 8;
	}
	close(fd);
	return 0;
}

static int cmd_gen(const char *path, uint64_t size, uint64_t seed)
{
	FILE *f = fopen(path, "w");
	uint64_t s = seed, buf[512];
	if (!f) {
		perror(path);
		return 8;
	}
	while (size > 0) {
		size_t n = size < sizeof(buf) ? (size_t)size : sizeof(buf);
		for (unsigned i = 0; i < 512; i++)
			buf[i] = rng_next(&s);
		if (fwrite(buf, 1, n, f) != n)
			break;
		size -= n;
	}
	if (fclose(f) != 0 || size > 0) {
		perror(path);
		return 8;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "gen"))
		return cmd_gen(argv[2], strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0));
	if (argc == 3 && !strcmp(argv[1], "map"))
		return cmd_map(argv[2]);
	if (argc >= 6 && argc <= 8 && !strcmp(argv[1], "hit"))
		return cmd_hit(argv[2], strtoull(argv[3], NULL, 0), argv[4],
			       strtoull(argv[5], NULL, 0), argc >= 7 ? strtoull(argv[6], NULL, 0) : 0,
			       argc >= 8 ? strtoull(argv[7], NULL, 0) : BM_PAGE_SIZE);
	fprintf(stderr, "usage: dmg_tool map IMAGE\n"
			"       dmg_tool hit IMAGE PID flip|rand64|zero8|zero|copy|torn SEED [SRC [SPAN]]\n"
			"       dmg_tool gen FILE SIZE SEED\n");
	return 2;
}
