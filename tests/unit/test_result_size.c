/* Result sizing from peer-supplied counts (core/result_size.c): sums and products
 * that overflow, and results larger than the host could allocate, are refused with
 * an error naming the rank and count; honest counts pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "result_size.h"

static void test_honest_counts(void **state)
{
    size_t counts[3] = {1, 2, 3}, total = 0, bytes = 0;

    (void)state;
    assert_int_equal(dc_result_size("allgather 't'", counts, 3, 4, 1 << 20, &total, &bytes),
                     DCOMM_OK);
    assert_int_equal(total, 6);
    assert_int_equal(bytes, 24);
    /* Exactly at the limit is fine; zero ranks and zero counts too. */
    assert_int_equal(dc_result_size("x", counts, 3, 4, 24, &total, &bytes), DCOMM_OK);
    assert_int_equal(dc_result_size("x", counts, 0, 4, 24, &total, &bytes), DCOMM_OK);
    assert_int_equal(total, 0);
}

/* The review's case: 1 + (2^61 - 1) = 2^61 elements; times 8 bytes wraps to 0. */
static void test_product_overflow(void **state)
{
    size_t counts[2] = {1, ((size_t)1 << 61) - 1}, total = 7, bytes = 7;

    (void)state;
    assert_int_equal(dc_result_size("allgather 'grad'", counts, 2, 8, SIZE_MAX, &total, &bytes),
                     DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "allgather 'grad'"));
    assert_non_null(strstr(dc_error_get(), "rank 1"));
    assert_non_null(strstr(dc_error_get(), "2305843009213693951"));
    assert_int_equal(total, 7); /* outputs untouched on error */
    assert_int_equal(bytes, 7);
    /* With 4-byte elements the product fits, but not in any real memory. */
    assert_int_equal(dc_result_size("alltoall 'a'", counts, 2, 4, (size_t)64 << 30, &total,
                                    &bytes), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "can allocate"));
}

static void test_sum_overflow(void **state)
{
    size_t counts[3] = {5, SIZE_MAX - 2, 1}, total, bytes;

    (void)state;
    assert_int_equal(dc_result_size("alltoall 'b'", counts, 3, 1, SIZE_MAX, &total, &bytes),
                     DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "rank 1"));
}

static void test_limit(void **state)
{
    size_t limit = dc_result_size_limit();

    (void)state;
    assert_true(limit >= ((size_t)64 << 20)); /* any host that runs the tests */
    assert_true(limit < SIZE_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_honest_counts),
        cmocka_unit_test(test_product_overflow),
        cmocka_unit_test(test_sum_overflow),
        cmocka_unit_test(test_limit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
