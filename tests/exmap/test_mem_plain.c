/*
 * test_mem_plain.c: the plain (madvise) backend's two ways of dropping a
 * batch of frames and the choice between them. The choice is driven with
 * made-up costs; the real calls are checked to drop what they are given,
 * and only that, whichever way a batch goes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "exmap/mem_internal.h"

#define PAGES 1024u
#define BATCH 64u

static int image_fd = -1;

/* Nothing measured: each way is tried once before any comparison. */
static void test_pick_tries_both_first(void **state)
{
	uint32_t ns[FREE_WAYS] = {0, 0};

	assert_int_equal(plain_free_pick(ns, 1), FREE_VECTOR);
	ns[FREE_VECTOR] = 500;
	assert_int_equal(plain_free_pick(ns, 2), FREE_LOOP);
	ns[FREE_VECTOR] = 0;
	ns[FREE_LOOP] = 500;
	assert_int_equal(plain_free_pick(ns, 3), FREE_VECTOR);
}

/* The cheaper way wins every batch but one in FREE_PROBE, which goes the
 * other way; the winner changes when the costs do. */
static void test_pick_cheaper_and_probes(void **state)
{
	uint32_t ns[FREE_WAYS] = {[FREE_VECTOR] = 34000, [FREE_LOOP] = 8000};
	unsigned took[FREE_WAYS] = {0, 0};

	for (uint32_t b = 1; b <= 4 * FREE_PROBE; b++)
		took[plain_free_pick(ns, b)]++;
	assert_int_equal(took[FREE_VECTOR], 4);
	assert_int_equal(took[FREE_LOOP], 4 * FREE_PROBE - 4);
	assert_int_equal(plain_free_pick(ns, FREE_PROBE), FREE_VECTOR);

	ns[FREE_LOOP] = 82000; /* another thread started on another CPU */
	assert_int_equal(plain_free_pick(ns, 1), FREE_VECTOR);
	assert_int_equal(plain_free_pick(ns, 2 * FREE_PROBE), FREE_LOOP);
}

static void test_ewma(void **state)
{
	assert_int_equal(plain_free_ewma(0, 1234), 1234); /* first sample */
	assert_int_equal(plain_free_ewma(1000, 1000), 1000);
	assert_int_equal(plain_free_ewma(1000, 5000), 2000);
	/* A probe that finds the other way cheaper moves the average there
	 * within a few probes. */
	uint32_t avg = 80000;
	for (int i = 0; i < 8; i++)
		avg = plain_free_ewma(avg, 8000);
	assert_true(avg < 16000);
	/* No overflow at the top of the range. */
	assert_int_equal(plain_free_ewma(UINT32_MAX, UINT32_MAX), UINT32_MAX);
}

/* Real batches: after every mem_free the pages given read as zeros (their
 * frames are gone) and their neighbours keep their bytes, over enough
 * batches that both ways are used, and both get a cost. */
static void test_free_drops_exactly_the_batch(void **state)
{
	struct mem_config cfg = {
	    .fd = image_fd, .virt_pages = PAGES, .frames = PAGES, .max_threads = 2, .mode = MEM_PLAIN};
	struct mem *m = NULL;
	uint64_t pids[BATCH];
	uint64_t batches[FREE_WAYS];
	uint32_t ns[FREE_WAYS];

	assert_int_equal(mem_open(&cfg, &m), 0);
	assert_string_equal(mem_name(m), "madvise");
	int iface = mem_thread_attach(m);
	assert_true(iface >= 0);
	uint8_t *base = mem_base(m);

	const unsigned rounds = 2 * FREE_PROBE + 3;
	for (unsigned r = 0; r < rounds; r++) {
		/* Every third page, from a moving start, with one run of
		 * neighbours (merged into one range by the vector). */
		for (unsigned i = 0; i < BATCH; i++) {
			unsigned p = (r * 7 + i * 3) % (PAGES - 8);
			if (i >= BATCH - 4)
				p = (r * 7 + 3 * (BATCH - 4)) % (PAGES - 8) + (i - (BATCH - 4)) + 1;
			pids[i] = p;
		}
		for (unsigned i = 0; i < BATCH; i++) {
			memset(base + pids[i] * MEM_PAGE_SIZE, 0xA5, MEM_PAGE_SIZE);
			/* the page before each: a neighbour to keep, unless it
			 * is in the batch too */
			if (pids[i] > 0)
				memset(base + (pids[i] - 1) * MEM_PAGE_SIZE, 0x5A, 16);
		}
		for (unsigned i = 0; i < BATCH; i++) {
			if (pids[i] > 0)
				base[(pids[i] - 1) * MEM_PAGE_SIZE + 16] = 0x77;
			/* and the page after each: a run must end where it does */
			base[(pids[i] + 1) * MEM_PAGE_SIZE + 32] = 0x66;
		}
		assert_int_equal(mem_free(m, iface, pids, BATCH), 0);
		for (unsigned i = 0; i < BATCH; i++) {
			const uint8_t *pg = base + pids[i] * MEM_PAGE_SIZE;
			assert_int_equal(pg[0], 0);
			assert_int_equal(pg[MEM_PAGE_SIZE - 1], 0);
		}
		for (unsigned i = 0; i < BATCH; i++) {
			if (pids[i] == 0)
				continue;
			bool in_batch = false;
			for (unsigned j = 0; j < BATCH; j++)
				in_batch |= pids[j] == pids[i] - 1;
			if (!in_batch)
				assert_int_equal(base[(pids[i] - 1) * MEM_PAGE_SIZE + 16], 0x77);
		}
		for (unsigned i = 0; i < BATCH; i++) {
			bool in_batch = false;
			for (unsigned j = 0; j < BATCH; j++)
				in_batch |= pids[j] == pids[i] + 1;
			if (!in_batch)
				assert_int_equal(base[(pids[i] + 1) * MEM_PAGE_SIZE + 32], 0x66);
		}
	}
	mem_free_ways(m, batches, ns);
	assert_int_equal(batches[FREE_VECTOR] + batches[FREE_LOOP], rounds);
	if (batches[FREE_VECTOR] == 0) {
		/* No process_madvise here (an old kernel, or valgrind, which
		 * lacks pidfd_open): the loop alone, untimed. */
		assert_int_equal(batches[FREE_LOOP], rounds);
	} else {
		/* Both ways tried first, then the loser at every probe. */
		assert_true(batches[FREE_VECTOR] >= 2);
		assert_true(batches[FREE_LOOP] >= 2);
		assert_true(ns[FREE_VECTOR] > 0);
		assert_true(ns[FREE_LOOP] > 0);
	}
	mem_thread_detach(m, iface);
	mem_close(m);
}

/* One page, or more than a vector holds: the loop, untimed. */
static void test_small_and_huge_batches(void **state)
{
	struct mem_config cfg = {
	    .fd = image_fd, .virt_pages = PAGES, .frames = PAGES, .max_threads = 2, .mode = MEM_PLAIN};
	struct mem *m = NULL;
	uint64_t batches[FREE_WAYS];
	uint32_t ns[FREE_WAYS];
	uint64_t pids[300];

	assert_int_equal(mem_open(&cfg, &m), 0);
	int iface = mem_thread_attach(m);
	uint8_t *base = mem_base(m);
	for (unsigned i = 0; i < 300; i++) {
		pids[i] = 2 * i + 1;
		base[pids[i] * MEM_PAGE_SIZE] = 1;
	}
	assert_int_equal(mem_free(m, iface, pids, 1), 0);
	assert_int_equal(base[pids[0] * MEM_PAGE_SIZE], 0);
	assert_int_equal(mem_free(m, iface, pids, 300), 0);
	for (unsigned i = 0; i < 300; i++)
		assert_int_equal(base[pids[i] * MEM_PAGE_SIZE], 0);
	mem_free_ways(m, batches, ns);
	assert_int_equal(batches[FREE_LOOP], 2);
	assert_int_equal(batches[FREE_VECTOR], 0);
	assert_int_equal(ns[FREE_LOOP], 0);
	assert_int_equal(ns[FREE_VECTOR], 0);
	/* A pid outside the region is refused, not ignored. */
	uint64_t bad[2] = {3, 1ull << 40};
	assert_int_equal(mem_free(m, iface, bad, 2), -EINVAL);
	mem_thread_detach(m, iface);
	mem_close(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pick_tries_both_first),
	    cmocka_unit_test(test_pick_cheaper_and_probes),
	    cmocka_unit_test(test_ewma),
	    cmocka_unit_test(test_free_drops_exactly_the_batch),
	    cmocka_unit_test(test_small_and_huge_batches),
	};
	char path[] = "/tmp/vs-mem-plain-XXXXXX";

	image_fd = mkstemp(path);
	if (image_fd < 0)
		return 1;
	unlink(path);
	if (ftruncate(image_fd, (off_t)PAGES * MEM_PAGE_SIZE) < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
