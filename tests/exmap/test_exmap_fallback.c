/*
 * test_exmap_fallback.c: on a machine without /dev/exmap (this one, and most),
 * exmap=auto must fall back to the madvise backend and exmap=on must fail
 * with -ENODEV and a log line saying what is missing. No emulation here: the
 * real open(2) answers. Skipped (77) where the device exists.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/log.h"
#include "exmap/exmap.h"
#include "exmap/mem.h"

static char log_text[4096];

static void log_capture(enum vs_log_level level, const char *msg)
{
	size_t used = strlen(log_text);
	snprintf(log_text + used, sizeof(log_text) - used, "%d %s\n", (int)level, msg);
}

static int image_fd = -1;

static void test_auto_falls_back(void **state)
{
	struct mem_config cfg = {
	    .fd = image_fd, .virt_pages = 256, .frames = 16, .max_threads = 4, .mode = MEM_AUTO};
	struct mem *m = NULL;
	char buf[16];

	log_text[0] = 0;
	assert_int_equal(mem_open(&cfg, &m), 0);
	assert_non_null(m);
	assert_string_equal(mem_name(m), "madvise");
	assert_false(mem_faults_on_evicted(m));
	assert_true(strstr(log_text, "madvise") != NULL);
	/* No error-level line for an optional feature that is absent. */
	assert_null(strstr(log_text, "3 exmap"));

	/* And the fallback works: the image's bytes come in. */
	int iface = mem_thread_attach(m);
	assert_true(iface >= 0);
	assert_int_equal(mem_read(m, iface, 3), 0);
	assert_int_equal(pread(image_fd, buf, sizeof(buf), 3 * 4096), (ssize_t)sizeof(buf));
	assert_memory_equal((char *)mem_base(m) + 3 * 4096, buf, sizeof(buf));
	mem_thread_detach(m, iface);
	mem_close(m);
}

static void test_exmap_on_fails(void **state)
{
	struct mem_config cfg = {
	    .fd = image_fd, .virt_pages = 256, .frames = 16, .max_threads = 4, .mode = MEM_EXMAP};
	struct mem *m = NULL;

	log_text[0] = 0;
	assert_int_equal(mem_open(&cfg, &m), -ENODEV);
	assert_null(m);
	/* Logged as an error, naming the device and the cure. */
	assert_non_null(strstr(log_text, "3 exmap: /dev/exmap not found"));
	assert_non_null(strstr(log_text, "kernel module"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auto_falls_back),
	    cmocka_unit_test(test_exmap_on_fails),
	};
	char path[] = "/tmp/vs-exmap-fallback-XXXXXX";
	char page[4096];
	int r;

	if (access(EXMAP_DEVICE_PATH, F_OK) == 0) {
		fprintf(stderr, "%s exists here: the fallback cannot be observed\n",
			EXMAP_DEVICE_PATH);
		return 77;
	}
	image_fd = mkstemp(path);
	if (image_fd < 0)
		return 1;
	unlink(path);
	for (int p = 0; p < 256; p++) {
		memset(page, 'a' + p % 26, sizeof(page));
		if (pwrite(image_fd, page, sizeof(page), (off_t)p * 4096) != (ssize_t)sizeof(page))
			return 1;
	}
	vs_log_set_sink(log_capture);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	vs_log_set_sink(NULL);
	close(image_fd);
	return r;
}
