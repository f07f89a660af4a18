/* The config table's parsers, loading from the environment (defaults, units,
 * malformed values named in the error), and status strings from the X-macro. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

static void test_sizes(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(dc_config_parse_size("64M", &v), 0);
    assert_int_equal(v, 64ull << 20);
    assert_int_equal(dc_config_parse_size("512K", &v), 0);
    assert_int_equal(v, 512ull << 10);
    assert_int_equal(dc_config_parse_size("1G", &v), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(dc_config_parse_size("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(dc_config_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_not_equal(dc_config_parse_size("", &v), 0);
    assert_int_not_equal(dc_config_parse_size("12Q", &v), 0);
    assert_int_not_equal(dc_config_parse_size("-5M", &v), 0);
    assert_int_not_equal(dc_config_parse_size("M", &v), 0);
}

static void test_durations(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(dc_config_parse_duration("5ms", &v), 0);
    assert_int_equal(v, 5000);
    assert_int_equal(dc_config_parse_duration("60s", &v), 0);
    assert_int_equal(v, 60000000ull);
    assert_int_equal(dc_config_parse_duration("2m", &v), 0);
    assert_int_equal(v, 120000000ull);
    assert_int_equal(dc_config_parse_duration("10us", &v), 0);
    assert_int_equal(v, 10);
    assert_int_not_equal(dc_config_parse_duration("5 parsecs", &v), 0);
    assert_int_not_equal(dc_config_parse_duration("", &v), 0);
}

static void test_bools(void **state)
{
    int v;

    (void)state;
    assert_int_equal(dc_config_parse_bool("on", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(dc_config_parse_bool("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(dc_config_parse_bool("yes", &v), 0);
    assert_int_equal(v, 1);
    assert_int_not_equal(dc_config_parse_bool("maybe", &v), 0);
}

static void test_load(void **state)
{
    (void)state;
    unsetenv("DCOMM_FUSION_THRESHOLD");
    setenv("DCOMM_CYCLE_TIME", "5ms", 1);
    setenv("DCOMM_TIMEOUT", "10s", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.fusion_threshold, 128ull << 20);
    assert_int_equal(dc_config.cycle_time_us, 5000);
    assert_int_equal(dc_config.timeout_ms, 10000);
    setenv("DCOMM_FUSION_THRESHOLD", "lots", 1);
    assert_int_equal(dc_config_load(), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dcomm_last_error(), "DCOMM_FUSION_THRESHOLD"));
    unsetenv("DCOMM_FUSION_THRESHOLD");
    /* An unknown DCOMM_ variable is only warned about. */
    setenv("DCOMM_FUSION_TRESHOLD", "1M", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    unsetenv("DCOMM_FUSION_TRESHOLD");
}

static void test_status_strings(void **state)
{
    (void)state;
    assert_string_equal(dcomm_status_string(DCOMM_OK), "success");
    assert_string_equal(dcomm_status_string(DCOMM_ERR_PEER_LOST), "a peer rank was lost");
    assert_string_equal(dcomm_status_string((dcomm_status_t)-999), "unknown status");
    for (int s = DCOMM_ERR_INTERNAL; s <= DCOMM_INPROGRESS; s++) {
        assert_string_not_equal(dcomm_status_string((dcomm_status_t)s), "unknown status");
    }
    assert_int_equal(dcomm_dtype_size(DCOMM_BFLOAT16), 2);
    assert_int_equal(dcomm_dtype_size(DCOMM_FLOAT64), 8);
    assert_int_equal(dcomm_dtype_size((dcomm_dtype_t)99), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),  cmocka_unit_test(test_durations),
        cmocka_unit_test(test_bools),  cmocka_unit_test(test_load),
        cmocka_unit_test(test_status_strings),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
