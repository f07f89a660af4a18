/* The config table's parsers, loading from the environment (defaults, units,
 * malformed values named in the error), the rows that dlaunch sets (the secret
 * never printed), dcomm-info's listings, a row reaching the layer below core
 * (DCOMM_REDUCE_ISA through dcomm_init), and status strings from the X-macro. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "dc_reduce.h"
#include "dcomm.h"

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

static const char *const hvd_vars[] = {
    "HOROVOD_FUSION_THRESHOLD", "HOROVOD_CYCLE_TIME", "HOROVOD_CACHE_CAPACITY",
    "HOROVOD_TIMELINE", "HOROVOD_TIMELINE_MARK_CYCLES", "HOROVOD_AUTOTUNE",
    "HOROVOD_AUTOTUNE_LOG", "HOROVOD_STALL_CHECK_DISABLE", "HOROVOD_STALL_CHECK_TIME_SECONDS",
    "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "HOROVOD_LOG_LEVEL", "DCOMM_FUSION_THRESHOLD",
    "DCOMM_CYCLE_TIME", "DCOMM_STALL_CHECK", "DCOMM_LOG_LEVEL", "DCOMM_TIMELINE",
};

static void clear_hvd(void)
{
    for (size_t i = 0; i < sizeof(hvd_vars) / sizeof(hvd_vars[0]); i++) {
        unsetenv(hvd_vars[i]);
    }
}

static void test_ms(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(dc_config_parse_ms("0.5", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(dc_config_parse_ms("5", &v), 0);
    assert_int_equal(v, 5000);
    assert_int_equal(dc_config_parse_ms("2s", &v), 0);
    assert_int_equal(v, 2000000);
    assert_int_equal(dc_config_parse_ms("250us", &v), 0);
    assert_int_equal(v, 250);
    assert_int_not_equal(dc_config_parse_ms("-1", &v), 0);
    assert_int_not_equal(dc_config_parse_ms("fast", &v), 0);
    /* Beyond 64 bits is an error, not a wrapped value. */
    assert_int_not_equal(dc_config_parse_ms("1e30", &v), 0);
    assert_int_not_equal(dc_config_parse_size("1e30T", &v), 0);
}

/* Horovod's names, in Horovod's units, when the DCOMM_* variable is unset. */
static void test_horovod_aliases(void **state)
{
    (void)state;
    clear_hvd();
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_null(dc_config_source("DCOMM_CYCLE_TIME"));
    assert_int_equal(dc_config.stall_check, 1);
    assert_int_equal(dc_config.stall_warning_ms, 60000);

    setenv("HOROVOD_CYCLE_TIME", "0.5", 1);
    setenv("HOROVOD_FUSION_THRESHOLD", "0", 1);
    setenv("HOROVOD_CACHE_CAPACITY", "7", 1);
    setenv("HOROVOD_TIMELINE", "/tmp/tl.json", 1);
    setenv("HOROVOD_TIMELINE_MARK_CYCLES", "1", 1);
    setenv("HOROVOD_AUTOTUNE", "1", 1);
    setenv("HOROVOD_AUTOTUNE_LOG", "/tmp/at.csv", 1);
    setenv("HOROVOD_STALL_CHECK_TIME_SECONDS", "30", 1);
    setenv("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "90", 1);
    setenv("HOROVOD_LOG_LEVEL", "warning", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.cycle_time_us, 500);
    assert_int_equal(dc_config.fusion_threshold, 0);
    assert_int_equal(dc_config.cache_capacity, 7);
    assert_string_equal(dc_config.timeline, "/tmp/tl.json");
    assert_int_equal(dc_config.timeline_mark_cycles, 1);
    assert_int_equal(dc_config.autotune, 1);
    assert_string_equal(dc_config.autotune_log, "/tmp/at.csv");
    assert_int_equal(dc_config.stall_warning_ms, 30000);
    assert_int_equal(dc_config.stall_shutdown_ms, 90000);
    assert_int_equal(dc_config.log_level, 2); /* warn */
    assert_string_equal(dc_config_source("DCOMM_CYCLE_TIME"), "HOROVOD_CYCLE_TIME");
    assert_string_equal(dc_config_source("DCOMM_FUSION_THRESHOLD"), "HOROVOD_FUSION_THRESHOLD");

    setenv("HOROVOD_CYCLE_TIME", "5", 1); /* milliseconds, not DCOMM's bare seconds */
    setenv("HOROVOD_LOG_LEVEL", "FATAL", 1);
    setenv("HOROVOD_TIMELINE", "DYNAMIC", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.cycle_time_us, 5000);
    assert_int_equal(dc_config.log_level, 1); /* error: dcomm has no fatal-only level */
    assert_string_equal(dc_config.timeline, "");

    /* The DCOMM_* variable wins. */
    setenv("DCOMM_CYCLE_TIME", "3ms", 1);
    setenv("DCOMM_FUSION_THRESHOLD", "1M", 1);
    setenv("DCOMM_LOG_LEVEL", "warn", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.cycle_time_us, 3000);
    assert_int_equal(dc_config.fusion_threshold, 1ull << 20);
    assert_string_equal(dc_config_source("DCOMM_CYCLE_TIME"), "DCOMM_CYCLE_TIME");
    assert_string_equal(dc_config_source("DCOMM_CACHE_CAPACITY"), "HOROVOD_CACHE_CAPACITY");

    /* The stall check off: neither warning nor shutdown. */
    setenv("HOROVOD_STALL_CHECK_DISABLE", "1", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.stall_check, 0);
    assert_true(dc_config.stall_warning_ms == UINT64_MAX);
    assert_int_equal(dc_config.stall_shutdown_ms, 0);
    setenv("DCOMM_STALL_CHECK", "on", 1); /* wins over the alias */
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.stall_check, 1);
    assert_int_equal(dc_config.stall_warning_ms, 30000);

    /* A malformed alias is an error naming it and its DCOMM_* row. */
    setenv("HOROVOD_CACHE_CAPACITY", "many", 1);
    assert_int_equal(dc_config_load(), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dcomm_last_error(), "HOROVOD_CACHE_CAPACITY='many'"));
    assert_non_null(strstr(dcomm_last_error(), "DCOMM_CACHE_CAPACITY"));
    unsetenv("HOROVOD_CACHE_CAPACITY");
    setenv("HOROVOD_LOG_LEVEL", "loud", 1);
    unsetenv("DCOMM_LOG_LEVEL");
    assert_int_equal(dc_config_load(), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dcomm_last_error(), "HOROVOD_LOG_LEVEL"));
    /* Unknown HOROVOD_* variables are no error (Horovod has many dcomm ignores). */
    unsetenv("HOROVOD_LOG_LEVEL");
    setenv("HOROVOD_HIERARCHICAL_ALLREDUCE", "1", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    unsetenv("HOROVOD_HIERARCHICAL_ALLREDUCE");
    clear_hvd();
    unsetenv("DCOMM_CACHE_CAPACITY");
}

/* Rows added for every DCOMM_* variable that used to be read elsewhere. */
static void test_more_rows(void **state)
{
    (void)state;
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.fusion_bypass, 1ull << 20);
    assert_int_equal(dc_config.shm_ring_size, 0);
    assert_int_equal(dc_config.start_timeout_ms, 0);
    assert_int_equal(dc_config.rank, 0);
    assert_int_equal(dc_config.size, 1);
    assert_null(dc_config_source("DCOMM_RANK"));
    setenv("DCOMM_FUSION_BYPASS", "256K", 1);
    setenv("DCOMM_SHM_RING_SIZE", "64K", 1);
    setenv("DCOMM_START_TIMEOUT", "90", 1); /* dlaunch's whole seconds */
    setenv("DCOMM_RANK", "3", 1);
    setenv("DCOMM_SIZE", "4", 1);
    setenv("DCOMM_JOB_ID", "0123abcd", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_int_equal(dc_config.fusion_bypass, 256ull << 10);
    assert_int_equal(dc_config.shm_ring_size, 64ull << 10);
    assert_int_equal(dc_config.start_timeout_ms, 90000);
    assert_int_equal(dc_config.rank, 3);
    assert_int_equal(dc_config.size, 4);
    assert_string_equal(dc_config_source("DCOMM_RANK"), "DCOMM_RANK");
    assert_string_equal(dc_config_source("DCOMM_JOB_ID"), "DCOMM_JOB_ID");
    setenv("DCOMM_RANK", "two", 1);
    assert_int_equal(dc_config_load(), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dcomm_last_error(), "DCOMM_RANK='two'"));
    unsetenv("DCOMM_RANK");
    unsetenv("DCOMM_SIZE");
    unsetenv("DCOMM_JOB_ID");
    unsetenv("DCOMM_FUSION_BYPASS");
    unsetenv("DCOMM_SHM_RING_SIZE");
    unsetenv("DCOMM_START_TIMEOUT");

    /* One row alone, as dlaunch loads DCOMM_LOG_LEVEL and DCOMM_RDV_ADDR. */
    setenv("DCOMM_RDV_ADDR", "10.1.2.3", 1);
    assert_int_equal(dc_config_load_one("DCOMM_RDV_ADDR"), DCOMM_OK);
    assert_string_equal(dc_config.rdv_addr, "10.1.2.3");
    assert_string_equal(dc_config_source("DCOMM_RDV_ADDR"), "DCOMM_RDV_ADDR");
    unsetenv("DCOMM_RDV_ADDR");
    assert_int_equal(dc_config_load_one("DCOMM_RDV_ADDR"), DCOMM_OK);
    assert_string_equal(dc_config.rdv_addr, "");
    assert_null(dc_config_source("DCOMM_RDV_ADDR"));
    assert_int_equal(dc_config_load_one("DCOMM_NO_SUCH_ROW"), DCOMM_ERR_INVALID_ARG);
}

/* dcomm-info -c: every row, with its source; the job's secret never shows,
 * neither there nor in the error for a malformed one. */
static void test_listing(void **state)
{
    static const char secret[] =
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char *list = NULL, *md = NULL;
    size_t list_len = 0, md_len = 0;
    FILE *f;
    int rows = 0;

    (void)state;
    setenv("DCOMM_JOB_SECRET", secret, 1);
    setenv("DCOMM_CYCLE_TIME", "2ms", 1);
    assert_int_equal(dc_config_load(), DCOMM_OK);
    assert_string_equal(dc_config.job_secret, secret);
    f = open_memstream(&list, &list_len);
    fputc('\n', f); /* each row then starts after a newline */
    dc_config_print(f);
    fclose(f);
    f = open_memstream(&md, &md_len);
    dc_config_print_markdown(f);
    fclose(f);
    assert_null(strstr(list, "00112233"));
    assert_null(strstr(md, "00112233"));
    assert_non_null(strstr(list, "DCOMM_JOB_SECRET           = (hidden)"));
    assert_non_null(strstr(list, "(from DCOMM_CYCLE_TIME; default 1ms)"));
    assert_non_null(strstr(list, "DCOMM_FUSION_THRESHOLD     = 134217728    (default)"));
    /* The listing and the Markdown table have the same rows. */
    for (char *line = strtok(md, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char name[64], row[80];

        if (sscanf(line, "| `%63[A-Z_]`", name) == 1) {
            snprintf(row, sizeof(row), "\n%-26s = ", name);
            assert_non_null(strstr(list, row));
            rows++;
        }
    }
    for (const char *p = strstr(list, "\nDCOMM_"); p != NULL; p = strstr(p + 1, "\nDCOMM_")) {
        rows--;
    }
    assert_int_equal(rows, 0);
    free(list);
    free(md);
    /* Too long for its row: the error names the row, not the value. */
    char long_secret[sizeof(secret) + 1];
    memcpy(long_secret, secret, sizeof(secret) - 1);
    memcpy(long_secret + sizeof(secret) - 1, "f", 2);
    setenv("DCOMM_JOB_SECRET", long_secret, 1);
    assert_int_equal(dc_config_load(), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dcomm_last_error(), "DCOMM_JOB_SECRET is not valid"));
    assert_null(strstr(dcomm_last_error(), "00112233"));
    unsetenv("DCOMM_JOB_SECRET");
    unsetenv("DCOMM_CYCLE_TIME");
}

/* A row for a layer below core reaches it through dcomm_init: the kernels do
 * not read DCOMM_REDUCE_ISA themselves. */
static void test_reduce_isa_through_init(void **state)
{
    (void)state;
    setenv("DCOMM_REDUCE_ISA", "scalar", 1);
    assert_int_equal(dcomm_init(), DCOMM_OK);
    assert_string_equal(dc_reduce_isa(), "scalar");
    assert_int_equal(dcomm_shutdown(), DCOMM_OK);
    unsetenv("DCOMM_REDUCE_ISA");
    assert_int_equal(dcomm_init(), DCOMM_OK);
    assert_string_equal(dc_reduce_isa(), dc_reduce_isa_choose(NULL));
    assert_int_equal(dcomm_shutdown(), DCOMM_OK);
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
        cmocka_unit_test(test_ms),     cmocka_unit_test(test_horovod_aliases),
        cmocka_unit_test(test_more_rows), cmocka_unit_test(test_listing),
        cmocka_unit_test(test_reduce_isa_through_init), cmocka_unit_test(test_status_strings),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
