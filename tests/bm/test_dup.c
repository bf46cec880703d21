/*
 * Copies of tree nodes (engine/bm_dup.c): a damaged node is read from its
 * copy and rewritten; a damaged copy is found and fixed by bm_dup_scrub;
 * freeing a node frees its copy; recovery writes the copies of the pages it
 * replays; an image formatted single has none.
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

#include "engine/bm.h"
#include "engine/bm_fault.h"
#include "engine/btree.h"
#include "vt_bm.h"

#define NKEYS 3000
#define SLOT_ROOT 1

static char img[256];

static int setup(void **st)
{
	(void)st;
	return vt_tmp_image(img, sizeof(img), "dup");
}

static int teardown(void **st)
{
	(void)st;
	unlink(img);
	return 0;
}

static struct bm *open_img(bool read_only, struct bm_fault *f)
{
	struct bm *bm = NULL;
	struct bm_config cfg = {.path = img, .pool_bytes = 4u << 20, .journal = true,
				.checkpoint_ms = 3600 * 1000, .read_only = read_only,
				.fault = f};
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	return bm;
}

static void key_of(unsigned i, char *k)
{
	snprintf(k, 16, "key%08u", i);
}

/* A value of 60 bytes that names its key, so that a wrong one shows. */
static void val_of(unsigned i, uint8_t *v)
{
	for (unsigned j = 0; j < 60; j++)
		v[j] = (uint8_t)(i * 31 + j);
}

static void fill(struct bm *bm, uint64_t root, unsigned from, unsigned to)
{
	struct bt t = bt_open(bm, root);
	char k[16];
	uint8_t v[60];
	bm_txn_begin(bm);
	for (unsigned i = from; i < to; i++) {
		key_of(i, k);
		val_of(i, v);
		assert_int_equal(bt_put(&t, k, (unsigned)strlen(k), v, sizeof(v)), 0);
	}
	bm_txn_end(bm);
}

static void check(struct bm *bm, uint64_t root, unsigned n)
{
	struct bt t = bt_open(bm, root);
	char k[16];
	uint8_t v[60], got[60];
	unsigned len = 0;
	for (unsigned i = 0; i < n; i++) {
		key_of(i, k);
		val_of(i, v);
		assert_int_equal(bt_lookup(&t, k, (unsigned)strlen(k), got, sizeof(got), &len), 0);
		assert_int_equal(len, sizeof(v));
		assert_memory_equal(got, v, sizeof(v));
	}
}

/* A tree of NKEYS records on a fresh image made with @flags; its root. */
static uint64_t build(unsigned flags)
{
	unlink(img);
	assert_int_equal(bm_format(img, 16u << 20, flags | BM_FORMAT_FORCE), 0);
	struct bm *bm = open_img(false, NULL);
	uint64_t root;
	assert_int_equal(bt_create(bm, &root), 0);
	bm_sb_set(bm, SLOT_ROOT, root);
	fill(bm, root, 0, NKEYS);
	assert_int_equal(bm_close(bm), 0);
	return root;
}

static void img_page(uint64_t pid, uint8_t *buf)
{
	int fd = open(img, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, 4096, (off_t)(pid * 4096)), 4096);
	close(fd);
}

static void img_put(uint64_t pid, const uint8_t *buf)
{
	int fd = open(img, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, 4096, (off_t)(pid * 4096)), 4096);
	close(fd);
}

/* The nodes that have copies, and check that every copy holds its node's
 * bytes. Returns how many; the first in *ret_first. */
static uint64_t pairs(uint64_t *ret_first)
{
	struct bm *bm = open_img(true, NULL);
	uint64_t n = 0;
	uint8_t a[4096], b[4096];
	for (uint64_t p = bm_first_data_pid(bm); p < bm_page_count(bm); p++) {
		if (!bm_is_copy(bm, p))
			continue;
		assert_true(bm_is_allocated(bm, p));
		assert_true(bm_is_allocated(bm, p - 1));
		img_page(p - 1, a);
		img_page(p, b);
		assert_memory_equal(a, b, 4096);
		if (n++ == 0)
			*ret_first = p - 1;
	}
	assert_int_equal(bm_close(bm), 0);
	return n;
}

static void test_every_node_has_a_copy(void **st)
{
	(void)st;
	uint64_t root = build(0), first = 0;
	uint64_t n = pairs(&first);
	/* 3000 records of ~75 bytes: some 60 leaves and an inner node */
	assert_true(n > 20);
	struct bm *bm = open_img(true, NULL);
	assert_true(bm_metadata_dup(bm));
	assert_true(bm_is_copy(bm, root + 1));
	check(bm, root, NKEYS);
	assert_int_equal(bm_close(bm), 0);

	/* single: none */
	root = build(BM_FORMAT_SINGLE);
	assert_int_equal(pairs(&first), 0);
	bm = open_img(true, NULL);
	assert_false(bm_metadata_dup(bm));
	check(bm, root, NKEYS);
	assert_int_equal(bm_close(bm), 0);
}

/* Every node damaged in turn (the root too): each is read from its copy and
 * written back whole. */
static void test_damaged_node_read_from_copy(void **st)
{
	(void)st;
	uint64_t root = build(0), first = 0;
	uint64_t n = pairs(&first);
	struct bm *bm = open_img(true, NULL);
	uint64_t *nodes = calloc(n, sizeof(*nodes)), k = 0;
	for (uint64_t p = bm_first_data_pid(bm); p < bm_page_count(bm); p++)
		if (bm_is_copy(bm, p))
			nodes[k++] = p - 1;
	assert_int_equal(bm_close(bm), 0);
	assert_int_equal(k, n);

	uint8_t junk[4096], good[4096], now[4096];
	memset(junk, 0xa5, sizeof(junk));
	for (uint64_t i = 0; i < n; i++) {
		img_page(nodes[i], good);
		img_put(nodes[i], junk);
		bm = open_img(false, NULL);
		check(bm, root, NKEYS);
		struct bm_stats s;
		bm_stats_get(bm, &s);
		assert_int_equal(s.copy_reads, 1);
		assert_int_equal(s.csum_errors, 1);
		assert_int_equal(bm_close(bm), 0);
		img_page(nodes[i], now);
		assert_memory_equal(now, good, 4096); /* rewritten at once */
	}
	free(nodes);

	/* read-only: served from the copy, left as it is */
	img_page(root, good);
	img_put(root, junk);
	bm = open_img(true, NULL);
	check(bm, root, NKEYS);
	assert_int_equal(bm_close(bm), 0);
	img_page(root, now);
	assert_memory_equal(now, junk, 4096);

	/* both damaged: an error, not wrong records */
	img_put(root + 1, junk);
	bm = open_img(true, NULL);
	struct bt t = bt_open(bm, root);
	uint8_t got[60];
	assert_int_equal(bt_lookup(&t, "key00000001", 11, got, sizeof(got), NULL), -EUCLEAN);
	assert_int_equal(bm_close(bm), 0);
}

/* The nodes that have copies, in pid order: *ret_n of them. */
static uint64_t *node_list(uint64_t *ret_n)
{
	struct bm *bm = open_img(true, NULL);
	uint64_t *nodes = calloc(bm_page_count(bm), sizeof(*nodes)), n = 0;
	for (uint64_t p = bm_first_data_pid(bm); p < bm_page_count(bm); p++)
		if (bm_is_copy(bm, p))
			nodes[n++] = p - 1;
	assert_int_equal(bm_close(bm), 0);
	*ret_n = n;
	return nodes;
}

/* One pair with a damaged copy, one with a damaged node: found, counted,
 * made whole; a pair damaged in both pages is not counted (the node's
 * load fails and says so). */
static void test_scrub(void **st)
{
	(void)st;
	build(0);
	uint64_t n;
	uint64_t *nodes = node_list(&n);
	assert_true(n >= 3);
	uint8_t junk[4096], good0[4096], good1[4096], now[4096];
	memset(junk, 0x5a, sizeof(junk));
	img_page(nodes[0], good0);
	img_page(nodes[1], good1);
	img_put(nodes[0] + 1, junk); /* a copy */
	img_put(nodes[1], junk);     /* a node */
	img_put(nodes[2], junk);     /* both */
	img_put(nodes[2] + 1, junk);

	struct bm *bm = open_img(true, NULL);
	uint64_t fixed = 99;
	assert_int_equal(bm_dup_scrub(bm, true, &fixed), 2);
	assert_int_equal(fixed, 0); /* read-only */
	assert_int_equal(bm_close(bm), 0);

	bm = open_img(false, NULL);
	assert_int_equal(bm_dup_scrub(bm, true, &fixed), 2);
	assert_int_equal(fixed, 2);
	assert_int_equal(bm_dup_scrub(bm, false, &fixed), 0);
	assert_int_equal(bm_close(bm), 0);
	img_page(nodes[0] + 1, now);
	assert_memory_equal(now, good0, 4096);
	img_page(nodes[1], now);
	assert_memory_equal(now, good1, 4096);

	free(nodes);
}

/* Deleting every record frees the nodes and their copies with them. */
static void test_free_takes_the_copy(void **st)
{
	(void)st;
	unlink(img);
	assert_int_equal(bm_format(img, 16u << 20, BM_FORMAT_FORCE), 0);
	struct bm *bm = open_img(false, NULL);
	uint64_t before = bm_free_pages(bm), root;
	assert_int_equal(bt_create(bm, &root), 0);
	fill(bm, root, 0, NKEYS);
	assert_true(bm_free_pages(bm) < before - 40);
	bm_txn_begin(bm);
	assert_int_equal(bt_destroy(bm, root), 0);
	bm_txn_end(bm);
	assert_int_equal(bm_free_pages(bm), before);
	for (uint64_t p = bm_first_data_pid(bm); p < bm_page_count(bm); p++)
		assert_false(bm_is_copy(bm, p));
	assert_int_equal(bm_close(bm), 0);
}

/* A gate on the first sync of the checkpoint: from then on every write
 * fails, so the checkpoint commits (its journal is synced) and writes
 * nothing home. */
static void fail_home_writes(struct bm_fault *f, uint64_t n)
{
	(void)n;
	if (f->fail_write_at == 0) {
		f->fail_write_at = f->writes + 1;
		f->fail_write_err = EIO;
		f->fail_writes_after = true;
	}
}

/* Recovery at open writes the journal's pages home before the checksum
 * table is in memory: the copies of the nodes among them follow. */
static void test_recovery_writes_copies(void **st)
{
	(void)st;
	uint64_t root = build(0), first = 0;
	struct bm_fault f = {0};
	pthread_mutex_init(&f.mu, NULL);
	struct bm *bm = open_img(false, &f);
	f.on_sync = fail_home_writes;
	fill(bm, root, NKEYS, NKEYS + 600); /* new leaves, and changed ones */
	assert_true(bm_checkpoint(bm) < 0);
	bm_abandon(bm);
	pthread_mutex_destroy(&f.mu);

	bm = open_img(false, NULL);
	assert_true(bm_recovered_pages(bm) > 0);
	check(bm, root, NKEYS + 600);
	assert_int_equal(bm_close(bm), 0);
	assert_true(pairs(&first) > 20); /* every copy equal to its node */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_every_node_has_a_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_node_read_from_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scrub, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_takes_the_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_writes_copies, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
