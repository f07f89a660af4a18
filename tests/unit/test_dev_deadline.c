/* Deadlines of device (NCCL) operations (core/dev_deadline.c): DCOMM_TIMEOUT=0
 * means none, a large operation gets the time its bytes need at the floor rate on
 * top of DCOMM_TIMEOUT, and nothing wraps around. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dev_deadline.h"

#define MS 1000000ull
#define S  1000000000ull

static void test_zero_is_never(void **state)
{
    (void)state;
    /* The old code gave now + 0: every NCCL operation timed out at once. */
    assert_true(dc_dev_op_deadline(5 * S, 0, 0) == DC_DEV_NO_DEADLINE);
    assert_true(dc_dev_op_deadline(5 * S, 0, (size_t)1 << 40) == DC_DEV_NO_DEADLINE);
    assert_int_equal(dc_dev_wait_ms(0), INT_MAX);
    assert_int_equal(dc_dev_wait_ms(30000), 30000);
    assert_int_equal(dc_dev_wait_ms((uint64_t)1 << 40), INT_MAX);
}

static void test_size_allowance(void **state)
{
    uint64_t start = 100 * S;

    (void)state;
    /* A small operation: DCOMM_TIMEOUT from its start. */
    assert_true(dc_dev_op_deadline(start, 30000, 0) == start + 30 * S);
    assert_true(dc_dev_op_deadline(start, 30000, 1024) < start + 30 * S + MS);
    /* 10 GiB at 10 MiB/s: 1024 s more; an operation longer than DCOMM_TIMEOUT
     * (here 1 s) does not fail for its length. */
    assert_true(dc_dev_op_deadline(start, 1000, (size_t)10 << 30) == start + S + 1024 * S);
    /* Half a floor-second of bytes: half a second. */
    assert_true(dc_dev_op_deadline(start, 1000, DC_DEV_FLOOR_BYTES_PER_S / 2) ==
                start + S + S / 2);
}

static void test_saturates(void **state)
{
    (void)state;
    assert_true(dc_dev_op_deadline(UINT64_MAX - 5, 1, 0) == UINT64_MAX);
    assert_true(dc_dev_op_deadline(0, UINT64_MAX / 2, 0) == UINT64_MAX);
    assert_true(dc_dev_op_deadline(1, 1, SIZE_MAX) == UINT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_is_never),
        cmocka_unit_test(test_size_allowance),
        cmocka_unit_test(test_saturates),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
