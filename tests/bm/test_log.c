/*
 * test_log.c: engine/log: corruption reports name what is wrong in the
 * error line, and keep the source file and line for a debug line (users
 * read the first; developers ask for the second with -d).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "engine/log.h"

static char got_err[512], got_debug[512];
static int n_err, n_debug;

static void capture(enum vs_log_level level, const char *msg)
{
	if (level == VS_LOG_DEBUG) {
		snprintf(got_debug, sizeof(got_debug), "%s", msg);
		n_debug++;
	} else if (level <= VS_LOG_ERR) {
		snprintf(got_err, sizeof(got_err), "%s", msg);
		n_err++;
	}
}

static void t_corrupt_error_has_no_source_location(void **state)
{
	(void)state;
	vs_log_set_sink(capture);
	int r = VS_CORRUPT("page %d: bad key count", 42);
	vs_log_set_sink(NULL);
	assert_int_equal(r, -EUCLEAN);
	assert_int_equal(n_err, 1);
	assert_string_equal(got_err, "corruption: page 42: bad key count");
	assert_null(strstr(got_err, ".c:"));
	/* the location is still there for whoever debugs it */
	assert_int_equal(n_debug, 1);
	assert_non_null(strstr(got_debug, "test_log.c:"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_corrupt_error_has_no_source_location),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
