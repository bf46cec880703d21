/*
 * vt_bm.h - which buffer-manager backend the engine's cmocka tests use.
 *
 * Every engine test that opens a pool takes its backend from here, so one
 * environment variable runs the same tests on either memory backend:
 *
 *   VS_TEST_BACKEND=madvise  (default; "plain" is accepted too) anonymous
 *                            memory, pread, madvise(MADV_DONTNEED)
 *   VS_TEST_BACKEND=exmap    /dev/exmap, or the open FAILS: a test run that
 *                            asked for exmap never quietly tests madvise
 *   VS_TEST_BACKEND=auto     exmap when /dev/exmap works, else madvise
 *
 * tests/vm/ runs tests/bm and tests/btree with VS_TEST_BACKEND=exmap inside
 * a VM that has the module loaded.
 *
 * The same tests size their long loops with vt_test_scaled(): VS_TEST_SCALE=N
 * multiplies them (-Dlong_tests uses 10), and a fraction such as 0.2 shortens
 * them, which is how tests/vm keeps them within minutes under emulation.
 */
#ifndef VT_BM_H
#define VT_BM_H

#include "engine/bm.h"

/* The backend VS_TEST_BACKEND names. An unknown value prints a message and
 * exits with status 1 (a failure, not a skip). */
enum bm_backend_mode vt_bm_backend(void);

/* bm_open() with @cfg->backend set to vt_bm_backend(). When exmap was asked
 * for, a pool that opened on anything else is closed again and the result is
 * -ENODEV, with a message. Returns 0 or bm_open's negative errno. */
int vt_bm_open(struct bm_config *cfg, struct bm **ret_bm);

/* @n times VS_TEST_SCALE (a positive number, fractions allowed; 1 when
 * unset), but at least @min: the smallest run in which the test still
 * checks what it is for. A malformed value prints a message and exits 1. */
uint64_t vt_test_scaled(uint64_t n, uint64_t min);

/* A fresh temporary file for an image: @buf (at least 64 bytes) gets the
 * path, under $TMPDIR or /tmp, with @tag in its name. 0 or -1. */
int vt_tmp_image(char *buf, size_t size, const char *tag);

/* Page @pid holds @val in every 8-byte word, xor'ed with the word's index,
 * so that a torn or mixed page shows. Returns bm_run's result. */
int vt_page_set(struct bm *bm, uint64_t pid, uint64_t val);

/* What vt_page_set left in page @pid: its value, 0 for a page of zeros
 * (never written), UINT64_MAX for a page that is neither (torn). Returns
 * bm_run's result. */
int vt_page_get(struct bm *bm, uint64_t pid, uint64_t *ret_val);

#endif
