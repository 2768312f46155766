/* tests/unit/test_relay.c - unit tests of worker/relay.c's one decision:
 * when the relay naps before reading its source again (reading in
 * gulps). Never in a chunk's first MiB, never while rows are waiting,
 * never when the socket cannot say. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "relay.h"

static void test_no_nap_in_a_small_chunk(void **state)
{
    (void)state;
    assert_false(relay_nap_due(0, 0));
    assert_false(relay_nap_due(1024 * 1024 - 1, 0));
}

static void test_nap_when_read_dry_past_the_first_mib(void **state)
{
    (void)state;
    assert_true(relay_nap_due(1024 * 1024, 0));
    assert_true(relay_nap_due(INT64_C(50) * 1024 * 1024 * 1024, 0));
}

static void test_no_nap_while_rows_wait(void **state)
{
    (void)state;
    assert_false(relay_nap_due(64 * 1024 * 1024, 1));
    assert_false(relay_nap_due(64 * 1024 * 1024, 212992));
}

static void test_no_nap_when_the_queue_is_unknown(void **state)
{
    (void)state;
    assert_false(relay_nap_due(64 * 1024 * 1024, -1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_nap_in_a_small_chunk),
        cmocka_unit_test(test_nap_when_read_dry_past_the_first_mib),
        cmocka_unit_test(test_no_nap_while_rows_wait),
        cmocka_unit_test(test_no_nap_when_the_queue_is_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
