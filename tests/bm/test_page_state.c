/* Every transition of the page-state word (engine/page_state.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "engine/page_state.h"

static uint64_t word(unsigned state, bool dirty, uint64_t version)
{
	return ((uint64_t)state << PS_STATE_SHIFT) | (dirty ? PS_DIRTY : 0) | version;
}

static void test_zero_word_is_evicted(void **st)
{
	ps_word w = 0;
	assert_int_equal(ps_state(ps_load(&w)), PS_EVICTED);
	assert_false(ps_dirty(ps_load(&w)));
}

static void test_evicted_lock_unlock(void **st)
{
	ps_word w = word(PS_EVICTED, false, 7);
	assert_true(ps_try_lock_x(&w, ps_load(&w)));
	assert_int_equal(ps_state(w), PS_LOCKED);
	assert_int_equal(ps_version(w), 7);
	/* A load publishes a clean page with a new version. */
	assert_false(ps_unlock_x(&w, false));
	assert_int_equal(ps_state(w), PS_UNLOCKED);
	assert_int_equal(ps_version(w), 8);
	assert_false(ps_dirty(w));
}

static void test_exclusive_sets_dirty_and_version(void **st)
{
	ps_word w = word(PS_UNLOCKED, false, 1);
	assert_true(ps_try_lock_x(&w, ps_load(&w)));
	assert_false(ps_try_lock_x(&w, ps_load(&w)));   /* X excludes X */
	assert_false(ps_try_lock_s(&w, ps_load(&w)));   /* and S */
	assert_false(ps_try_mark(&w, ps_load(&w)));     /* and the clock */
	assert_true(ps_unlock_x(&w, true));             /* clean -> dirty */
	assert_true(ps_dirty(w));
	assert_int_equal(ps_version(w), 2);
	assert_true(ps_try_lock_x(&w, ps_load(&w)));
	assert_false(ps_unlock_x(&w, true)); /* already dirty: not counted twice */
	assert_true(ps_dirty(w));
	assert_int_equal(ps_version(w), 3);
}

static void test_stale_word_fails(void **st)
{
	ps_word w = word(PS_UNLOCKED, false, 1);
	uint64_t seen = ps_load(&w);
	assert_true(ps_try_lock_x(&w, ps_load(&w)));
	ps_unlock_x(&w, false);
	assert_false(ps_try_lock_x(&w, seen)); /* the CAS is on the whole word */
	assert_false(ps_try_lock_s(&w, seen));
}

static void test_shared_counts_and_limit(void **st)
{
	ps_word w = word(PS_UNLOCKED, true, 5);
	unsigned readers = 0;
	while (ps_try_lock_s(&w, ps_load(&w)))
		readers++;
	assert_int_equal(readers, PS_SHARED_MAX - 1); /* 251 readers */
	assert_int_equal(ps_state(w), PS_SHARED_MAX);
	assert_false(ps_try_lock_x(&w, ps_load(&w)));
	assert_false(ps_try_upgrade_sx(&w)); /* not the sole reader */
	while (readers-- > 1)
		ps_unlock_s(&w);
	assert_int_equal(ps_state(w), 2);
	assert_true(ps_try_upgrade_sx(&w));
	assert_int_equal(ps_state(w), PS_LOCKED);
	assert_int_equal(ps_version(w), 5); /* shared use never bumps it */
	assert_true(ps_dirty(w));
	ps_unlock_x(&w, false);
	assert_int_equal(ps_state(w), PS_UNLOCKED);
	assert_true(ps_dirty(w)); /* an X release never cleans */
}

static void test_last_reader_unlocks(void **st)
{
	ps_word w = word(PS_UNLOCKED, false, 3);
	assert_true(ps_try_lock_s(&w, ps_load(&w)));
	assert_true(ps_try_lock_s(&w, ps_load(&w)));
	ps_unlock_s(&w);
	assert_int_equal(ps_state(w), 2);
	ps_unlock_s(&w);
	assert_int_equal(ps_state(w), PS_UNLOCKED);
	assert_int_equal(ps_version(w), 3);
}

static void test_unlock_s_marked(void **st)
{
	ps_word w = word(PS_MARKED, true, 5);
	assert_true(ps_try_lock_s(&w, ps_load(&w)));
	assert_true(ps_try_lock_s(&w, ps_load(&w)));
	/* another reader is still there: the page is in use, no mark */
	ps_unlock_s_marked(&w);
	assert_int_equal(ps_state(w), 2);
	/* the last one leaves it marked, same version, dirty bit kept */
	ps_unlock_s_marked(&w);
	assert_int_equal(ps_state(w), PS_MARKED);
	assert_int_equal(ps_version(w), 5);
	assert_true(ps_dirty(w));
}

static void test_mark_transitions(void **st)
{
	ps_word w = word(PS_UNLOCKED, false, 9);
	assert_true(ps_try_mark(&w, ps_load(&w)));
	assert_int_equal(ps_state(w), PS_MARKED);
	assert_false(ps_try_mark(&w, ps_load(&w))); /* only from unlocked */
	/* marked -> unlocked: a reader clears the mark */
	ps_clear_mark(&w, ps_load(&w));
	assert_int_equal(ps_state(w), PS_UNLOCKED);
	assert_int_equal(ps_version(w), 9);
	/* marked -> shared and marked -> exclusive */
	assert_true(ps_try_mark(&w, ps_load(&w)));
	assert_true(ps_try_lock_s(&w, ps_load(&w)));
	assert_int_equal(ps_state(w), 2);
	ps_unlock_s(&w);
	assert_true(ps_try_mark(&w, ps_load(&w)));
	assert_true(ps_try_lock_x(&w, ps_load(&w)));
	assert_int_equal(ps_state(w), PS_LOCKED);
	ps_unlock_x(&w, false);
	assert_int_equal(ps_version(w), 10);
}

static void test_unlock_evicted(void **st)
{
	ps_word w = word(PS_UNLOCKED, true, 11);
	assert_true(ps_try_lock_x(&w, ps_load(&w)));
	ps_unlock_evicted(&w);
	assert_int_equal(ps_state(w), PS_EVICTED);
	assert_false(ps_dirty(w));
	assert_int_equal(ps_version(w), 12);
	/* shared lock and mark are refused on an evicted page */
	assert_false(ps_try_lock_s(&w, ps_load(&w)));
	assert_false(ps_try_mark(&w, ps_load(&w)));
}

static void test_clear_dirty_under_shared(void **st)
{
	ps_word w = word(PS_UNLOCKED, true, 4);
	assert_true(ps_try_lock_s(&w, ps_load(&w)));
	ps_clear_dirty(&w);
	assert_false(ps_dirty(w));
	assert_int_equal(ps_state(w), 2);
	assert_int_equal(ps_version(w), 4);
	ps_unlock_s(&w);
}

static void test_version_wraps_inside_its_bits(void **st)
{
	ps_word w = word(PS_UNLOCKED, false, PS_VERSION);
	assert_true(ps_try_lock_x(&w, ps_load(&w)));
	ps_unlock_x(&w, false);
	assert_int_equal(ps_version(w), 0);
	assert_false(ps_dirty(w)); /* the carry did not leak into D */
	assert_int_equal(ps_state(w), PS_UNLOCKED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zero_word_is_evicted),
		cmocka_unit_test(test_evicted_lock_unlock),
		cmocka_unit_test(test_exclusive_sets_dirty_and_version),
		cmocka_unit_test(test_stale_word_fails),
		cmocka_unit_test(test_shared_counts_and_limit),
		cmocka_unit_test(test_last_reader_unlocks),
		cmocka_unit_test(test_unlock_s_marked),
		cmocka_unit_test(test_mark_transitions),
		cmocka_unit_test(test_unlock_evicted),
		cmocka_unit_test(test_clear_dirty_under_shared),
		cmocka_unit_test(test_version_wraps_inside_its_bits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
