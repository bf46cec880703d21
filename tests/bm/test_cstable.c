/*
 * The checksum table's own protection (engine/bm_meta.c): every table page
 * carries a seal and the table is written twice. Damage to one copy loses
 * nothing and is repaired by the next checkpoint; damage to both copies
 * makes the pages that table page covers fail to load (never read as zeros
 * or as whatever the image holds), until bm_csum_adopt takes a page back.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "engine/bm.h"
#include "vt_bm.h"

/* The on-disk layout, as engine/bm_internal.h documents it. */
#define SB_OFF_CSSTART  40
#define SB_OFF_CSPAGES  48
#define SB_OFF_CS2START 112
#define PIDS_PER_CS     511
#define SEAL_OFF        4088

static char img[256];

static int setup(void **st)
{
	(void)st;
	return vt_tmp_image(img, sizeof(img), "cs");
}

static int teardown(void **st)
{
	(void)st;
	unlink(img);
	return 0;
}

static struct bm *open_img(bool read_only)
{
	struct bm *bm = NULL;
	struct bm_config cfg = {.path = img, .pool_bytes = 4u << 20, .journal = true,
				.checkpoint_ms = 3600 * 1000, .read_only = read_only};
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	return bm;
}

static uint64_t img_u64(uint64_t off)
{
	uint64_t v;
	int fd = open(img, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &v, 8, (off_t)off), 8);
	close(fd);
	return v;
}

static void img_put(uint64_t off, const void *buf, size_t len)
{
	int fd = open(img, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void img_get(uint64_t off, void *buf, size_t len)
{
	int fd = open(img, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

/* Does page @pid of the image hold a sound table page @i (of either copy)? */
static bool page_sealed_as(uint64_t pid, uint64_t i)
{
	uint8_t page[4096];
	uint64_t seal;
	img_get(pid * 4096, page, sizeof(page));
	memcpy(&seal, page + SEAL_OFF, 8);
	uint64_t want = XXH3_64bits_withSeed(page, SEAL_OFF, i);
	return seal == (want ? want : 1);
}

static bool page_sealed(uint64_t pid)
{
	uint64_t cs = img_u64(SB_OFF_CSSTART), cn = img_u64(SB_OFF_CSPAGES);
	return page_sealed_as(pid, pid - (pid >= cs + cn ? cs + cn : cs));
}

/* An image with @n pages written, each to its pid + 1000, from the first
 * data page on: they span the first two checksum-table pages. */
static uint64_t build(uint64_t n)
{
	unlink(img);
	assert_int_equal(bm_format(img, 16u << 20, true), 0);
	struct bm *bm = open_img(false);
	uint64_t first;
	bm_txn_begin(bm);
	assert_int_equal(bm_alloc(bm, n, BM_PID_NONE, &first), 0);
	for (uint64_t i = 0; i < n; i++)
		assert_int_equal(vt_page_set(bm, first + i, first + i + 1000), 0);
	bm_txn_end(bm);
	assert_int_equal(bm_close(bm), 0);
	return first;
}

static void check_all(struct bm *bm, uint64_t first, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = 0;
		assert_int_equal(vt_page_get(bm, first + i, &v), 0);
		assert_int_equal(v, first + i + 1000);
	}
}

static void test_layout(void **st)
{
	(void)st;
	uint64_t first = build(8);
	uint64_t cs = img_u64(SB_OFF_CSSTART), cn = img_u64(SB_OFF_CSPAGES);
	assert_int_equal(img_u64(SB_OFF_CS2START), cs + cn);
	assert_int_equal(cn, (4096 + PIDS_PER_CS - 1) / PIDS_PER_CS); /* 16 MiB */
	for (uint64_t i = 0; i < cn; i++) {
		assert_true(page_sealed(cs + i));
		assert_true(page_sealed(cs + cn + i));
	}
	/* the same bytes in both copies, and the entries where they belong */
	uint64_t ti = first / PIDS_PER_CS;
	uint8_t a[4096], b[4096];
	img_get((cs + ti) * 4096, a, 4096);
	img_get((cs + cn + ti) * 4096, b, 4096);
	assert_memory_equal(a, b, 4096);
	uint64_t e;
	memcpy(&e, a + 8 * (first % PIDS_PER_CS), 8);
	assert_true(e != 0);
}

/* One entry of the table zeroed, as a disk might: the old format served
 * that page as zeros with no error. Now the seal fails and the copy
 * serves; a writable open rewrites the damaged page. */
static void test_one_copy_damaged(void **st)
{
	(void)st;
	uint64_t n = 700, first = build(n);
	uint64_t cs = img_u64(SB_OFF_CSSTART), cn = img_u64(SB_OFF_CSPAGES);
	uint64_t ti = first / PIDS_PER_CS, zero = 0;
	img_put((cs + ti) * 4096 + 8 * (first % PIDS_PER_CS + 3), &zero, 8);
	assert_false(page_sealed(cs + ti));

	struct bm *bm = open_img(true);
	uint64_t fixed = 0;
	assert_int_equal(bm_csum_table_damage(bm, &fixed), 0);
	assert_int_equal(fixed, 1);
	check_all(bm, first, n);
	assert_int_equal(bm_close(bm), 0);
	assert_false(page_sealed(cs + ti)); /* read-only: nothing written */

	bm = open_img(false);
	check_all(bm, first, n);
	assert_int_equal(bm_close(bm), 0);
	assert_true(page_sealed(cs + ti));

	/* The copy damaged instead (a whole page of garbage) */
	uint8_t junk[4096];
	for (unsigned i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7 + 3);
	img_put((cs + cn + ti + 1) * 4096, junk, sizeof(junk));
	bm = open_img(false);
	assert_int_equal(bm_csum_table_damage(bm, &fixed), 0);
	assert_int_equal(fixed, 0); /* an open reads the table, not its copy */
	check_all(bm, first, n);
	assert_int_equal(bm_csum_table_scrub(bm), 1); /* fsck's reading does */
	assert_int_equal(bm_close(bm), 0);
	assert_true(page_sealed(cs + cn + ti + 1));
	bm = open_img(true);
	assert_int_equal(bm_csum_table_scrub(bm), 0);
	assert_int_equal(bm_close(bm), 0);
}

/* Both copies of the table page of the first data pages damaged: the pages
 * it covers fail with -EUCLEAN, never read as zeros; those of the next
 * table page read fine; bm_csum_adopt takes a page back. */
static void test_both_copies_damaged(void **st)
{
	(void)st;
	uint64_t n = 700, first = build(n);
	uint64_t cs = img_u64(SB_OFF_CSSTART), cn = img_u64(SB_OFF_CSPAGES);
	uint64_t ti = first / PIDS_PER_CS, end = (ti + 1) * PIDS_PER_CS;
	assert_true(first + n > end); /* the next table page covers some */
	uint8_t zeros[4096] = {0};
	img_put((cs + ti) * 4096, zeros, sizeof(zeros));
	img_put((cs + cn + ti) * 4096, zeros, sizeof(zeros));

	struct bm *bm = open_img(false);
	uint64_t fixed = 0;
	assert_int_equal(bm_csum_table_damage(bm, &fixed), 1);
	assert_int_equal(fixed, 0);
	uint64_t lost = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pid = first + i, v = 0;
		int r = vt_page_get(bm, pid, &v);
		if (pid < end) {
			assert_true(bm_csum_unknown(bm, pid));
			assert_int_equal(r, -EUCLEAN);
			lost++;
		} else {
			assert_false(bm_csum_unknown(bm, pid));
			assert_int_equal(r, 0);
			assert_int_equal(v, pid + 1000);
		}
	}
	assert_int_equal(lost, end - first);

	/* fsck's way back for a page it has checked by other means */
	uint8_t page[4096];
	assert_int_equal(bm_read_raw(bm, first, page), 0);
	assert_int_equal(bm_csum_adopt(bm, first, page), 0);
	assert_int_equal(bm_csum_adopt(bm, first, page), -EINVAL); /* no longer lost */
	uint64_t v = 0;
	assert_int_equal(vt_page_get(bm, first, &v), 0);
	assert_int_equal(v, first + 1000);
	assert_int_equal(bm_close(bm), 0);

	/* The loss is written down (sealed, in both copies): the next open
	 * sees no damaged table page, and the lost pages still fail. */
	assert_true(page_sealed(cs + ti));
	assert_true(page_sealed(cs + cn + ti));
	bm = open_img(true);
	assert_int_equal(bm_csum_table_damage(bm, &fixed), 0);
	assert_int_equal(fixed, 0);
	assert_int_equal(vt_page_get(bm, first, &v), 0);
	assert_int_equal(v, first + 1000);
	assert_int_equal(vt_page_get(bm, first + 1, &v), -EUCLEAN);
	assert_int_equal(bm_close(bm), 0);
}

/* A table page written in another's place (a misdirected write) is sound
 * in itself, but not where it is: its seal names its index. */
static void test_misplaced_page(void **st)
{
	(void)st;
	uint64_t n = 700, first = build(n);
	uint64_t cs = img_u64(SB_OFF_CSSTART);
	uint64_t ti = first / PIDS_PER_CS;
	uint8_t other[4096];
	img_get((cs + ti + 1) * 4096, other, sizeof(other));
	assert_true(page_sealed_as(cs + ti + 1, ti + 1));
	img_put((cs + ti) * 4096, other, sizeof(other));
	assert_false(page_sealed(cs + ti));

	struct bm *bm = open_img(true);
	uint64_t fixed = 0;
	assert_int_equal(bm_csum_table_damage(bm, &fixed), 0);
	assert_int_equal(fixed, 1);
	check_all(bm, first, n);
	assert_int_equal(bm_close(bm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_copy_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_both_copies_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_misplaced_page, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
