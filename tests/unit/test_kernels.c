/* Reduction kernels: every dtype x op on every ISA level this CPU runs, checked
 * element by element against a reference written from the spec (not from the
 * kernels), and the dispatch policy. fp16/bf16 conversions and AVG scaling:
 * test_kernels_convert.c; the references: kernels_ref.c. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "dc_reduce.h"
#include "kernels_ref.h"

static const char *const all_isas[] = {"scalar", "avx2", "avx512"};
#define NUM_ISAS (sizeof(all_isas) / sizeof(all_isas[0]))

static const size_t lengths[] = {0, 1, 7, 33, 1000, 4097};
#define NUM_LENGTHS (sizeof(lengths) / sizeof(lengths[0]))

#define GUARD_BYTES 64
#define GUARD_BYTE  0xa5

/* ---- reduction checks ------------------------------------------------------------ */

enum { MODE_REDUCE, MODE_REDUCE3, MODE_ALIAS_A, MODE_ALIAS_B, MODE_ALIAS_ALL, MODE_COUNT };

static void print_elem(const char *what, const unsigned char *p, size_t sz)
{
    print_error(" %s=", what);
    for (size_t k = sz; k-- > 0;) {
        print_error("%02x", p[k]);
    }
}

/* Runs one reduction of n random elements (dst at byte offset off_d from an
 * aligned block, the other input at off_s) and compares every element with the
 * reference, and the bytes after the end with their guard. Returns the number
 * of failures, printing the first few. */
static int check_case(dcomm_dtype_t dt, dcomm_op_t op, size_t n, size_t off_d, size_t off_s,
                      int mode)
{
    size_t sz = dc_reduce_dtype_size(dt), bytes = n * sz, total = bytes + GUARD_BYTES + 16;
    unsigned char *a_buf = malloc(total), *b_buf = malloc(total), *d_buf = malloc(total);
    unsigned char *a = a_buf + off_d, *b = b_buf + off_s, *d = d_buf + off_d;
    unsigned char *a_in = malloc(bytes + 1), *b_in = malloc(bytes + 1);
    unsigned char *want = malloc(bytes + 1), *nan_ok = malloc(n + 1), *dst;
    int failures = 0;

    assert_true(a_buf && b_buf && d_buf && a_in && b_in && want && nan_ok);
    memset(a_buf, GUARD_BYTE, total);
    memset(b_buf, GUARD_BYTE, total);
    memset(d_buf, GUARD_BYTE, total);
    fill_random(dt, a, n);
    fill_random(dt, b, n);
    if (mode == MODE_ALIAS_ALL) {
        memcpy(b, a, bytes);
    }
    memcpy(a_in, a, bytes);
    memcpy(b_in, b, bytes);
    for (size_t i = 0; i < n; i++) {
        int both_nan;

        ref_elem(dt, op, a + i * sz, b + i * sz, want + i * sz, &both_nan);
        nan_ok[i] = (unsigned char)both_nan;
    }
    switch (mode) {
    case MODE_REDUCE:
        memcpy(d, a, bytes);
        dc_reduce(d, b, n, dt, op);
        dst = d;
        break;
    case MODE_REDUCE3:
        dc_reduce3(d, a, b, n, dt, op);
        dst = d;
        break;
    case MODE_ALIAS_A:
        dc_reduce3(a, a, b, n, dt, op);
        dst = a;
        break;
    case MODE_ALIAS_B:
        dc_reduce3(b, a, b, n, dt, op);
        dst = b;
        break;
    default:
        dc_reduce3(a, a, a, n, dt, op);
        dst = a;
        break;
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char *got = dst + i * sz;

        if (memcmp(got, want + i * sz, sz) == 0 || (nan_ok[i] && elem_is_nan(dt, got))) {
            continue;
        }
        if (failures++ < 5) {
            print_error("[%s] dtype %d op %d n %zu off %zu/%zu mode %d elem %zu:",
                        dc_reduce_isa(), dt, op, n, off_d, off_s, mode, i);
            print_elem("a", a_in + i * sz, sz);
            print_elem("b", b_in + i * sz, sz);
            print_elem("got", got, sz);
            print_elem("want", want + i * sz, sz);
            print_error("\n");
        }
    }
    for (size_t i = 0; i < GUARD_BYTES; i++) {
        if (dst[bytes + i] != GUARD_BYTE) {
            print_error("[%s] dtype %d op %d n %zu mode %d: wrote past the end\n",
                        dc_reduce_isa(), dt, op, n, mode);
            failures++;
            break;
        }
    }
    free(nan_ok);
    free(want);
    free(b_in);
    free(a_in);
    free(d_buf);
    free(b_buf);
    free(a_buf);
    return failures;
}

/* Calls fn once per ISA level this CPU runs (at least scalar), then restores
 * the default level. */
static void for_each_isa(void (*fn)(void))
{
    int ran = 0;

    for (size_t i = 0; i < NUM_ISAS; i++) {
        if (dc_reduce_set_isa(all_isas[i]) != 0) {
            print_message("  isa %s: not available here, skipped\n", all_isas[i]);
            continue;
        }
        assert_string_equal(dc_reduce_isa(), all_isas[i]);
        fn();
        ran++;
    }
    assert_int_equal(dc_reduce_set_isa(NULL), 0);
    assert_true(ran >= 1);
}

/* ---- tests: reductions ----------------------------------------------------------- */

static void run_all_pairs(void)
{
    static const size_t offsets[][2] = {{0, 0}, {1, 3}, {5, 2}};
    int failures = 0;

    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (int op = 0; op < DCOMM_OP_COUNT; op++) {
            if (!dc_reduce_supported(dt, op)) {
                continue;
            }
            for (size_t l = 0; l < NUM_LENGTHS; l++) {
                for (size_t o = 0; o < sizeof(offsets) / sizeof(offsets[0]); o++) {
                    for (int mode = 0; mode < MODE_COUNT; mode++) {
                        failures += check_case(dt, op, lengths[l], offsets[o][0],
                                               offsets[o][1], mode);
                    }
                }
            }
        }
    }
    assert_int_equal(failures, 0);
}

static void test_reduce_every_dtype_op(void **state)
{
    (void)state;
    for_each_isa(run_all_pairs);
}

/* One element pattern repeated over 37 elements: vector body and scalar tail. */
#define PATTERN_LEN 37

static void check_pattern(dcomm_dtype_t dt, dcomm_op_t op, const void *a, const void *b,
                          const void *want, size_t npat)
{
    size_t sz = dc_reduce_dtype_size(dt);
    unsigned char d[PATTERN_LEN * 8], s[PATTERN_LEN * 8], w[PATTERN_LEN * 8];

    for (size_t i = 0; i < PATTERN_LEN; i++) {
        memcpy(d + i * sz, (const unsigned char *)a + (i % npat) * sz, sz);
        memcpy(s + i * sz, (const unsigned char *)b + (i % npat) * sz, sz);
        memcpy(w + i * sz, (const unsigned char *)want + (i % npat) * sz, sz);
    }
    dc_reduce(d, s, PATTERN_LEN, dt, op);
    for (size_t i = 0; i < PATTERN_LEN; i++) {
        if (memcmp(d + i * sz, w + i * sz, sz) != 0) {
            fail_msg("[%s] dtype %d op %d element %zu (pattern %zu) differs", dc_reduce_isa(),
                     dt, op, i, i % npat);
        }
    }
}

static void run_minmax_nan(void)
{
    /* b's NaN wins over a's; a's NaN over a number; on a tie (+0/-0) a is kept */
    const float fa[]     = {1.0f, f32_of(0x7fc00001), f32_of(0x7fc00002), 2.0f, 0.0f, -0.0f};
    const float fb[]     = {f32_of(0xffc00003), 1.0f, f32_of(0x7fc00004), 3.0f, -0.0f, 0.0f};
    const float fmin[]   = {fb[0], fa[1], fb[2], 2.0f, 0.0f, -0.0f};
    const float fmax[]   = {fb[0], fa[1], fb[2], 3.0f, 0.0f, -0.0f};
    const double da[]    = {1.0, f64_of(0x7ff8000000000001ull), -INFINITY, 0.0};
    const double db[]    = {f64_of(0xfff8000000000002ull), -5.0, f64_of(0x7ff8000000000003ull),
                            -0.0};
    const double dmin[]  = {db[0], da[1], db[2], 0.0};
    const double dmax[]  = {db[0], da[1], db[2], 0.0};
    /* fp16: signalling NaNs come back quiet (0x7c01 -> 0x7e01), as F16C does */
    const uint16_t ha[]   = {0x3c00, 0x7c01, 0x7e05, 0x4000, 0x0000, 0x8001};
    const uint16_t hb[]   = {0xfe03, 0xbc00, 0x7d06, 0x4200, 0x8000, 0x0001};
    const uint16_t hmin[] = {0xfe03, 0x7e01, 0x7f06, 0x4000, 0x0000, 0x8001};
    const uint16_t hmax[] = {0xfe03, 0x7e01, 0x7f06, 0x4200, 0x0000, 0x0001};
    const uint16_t ba[]   = {0x3f80, 0x7f81, 0x7fc5, 0x4000, 0x0000};
    const uint16_t bb[]   = {0xffc3, 0xbf80, 0x7f86, 0x4040, 0x8000};
    const uint16_t bmin[] = {0xffc3, 0x7fc1, 0x7fc6, 0x4000, 0x0000};
    const uint16_t bmax[] = {0xffc3, 0x7fc1, 0x7fc6, 0x4040, 0x0000};

    check_pattern(DCOMM_FLOAT32, DCOMM_MIN, fa, fb, fmin, 6);
    check_pattern(DCOMM_FLOAT32, DCOMM_MAX, fa, fb, fmax, 6);
    check_pattern(DCOMM_FLOAT64, DCOMM_MIN, da, db, dmin, 4);
    check_pattern(DCOMM_FLOAT64, DCOMM_MAX, da, db, dmax, 4);
    check_pattern(DCOMM_FLOAT16, DCOMM_MIN, ha, hb, hmin, 6);
    check_pattern(DCOMM_FLOAT16, DCOMM_MAX, ha, hb, hmax, 6);
    check_pattern(DCOMM_BFLOAT16, DCOMM_MIN, ba, bb, bmin, 5);
    check_pattern(DCOMM_BFLOAT16, DCOMM_MAX, ba, bb, bmax, 5);
}

static void test_minmax_nan(void **state)
{
    (void)state;
    for_each_isa(run_minmax_nan);
}

static void run_integer_wrap(void)
{
    const uint8_t ua[] = {255, 16, 200, 0, 7}, ub[] = {1, 16, 2, 255, 9};
    const uint8_t usum[] = {0, 32, 202, 255, 16}, uprod[] = {255, 0, 144, 0, 63};
    const int8_t ia[] = {127, -128, 100, -1}, ib[] = {1, -1, 3, -128};
    const int8_t isum[] = {-128, 127, 103, 127}, iprod[] = {127, -128, 44, -128};
    const int8_t imin[] = {1, -128, 3, -128}, imax[] = {127, -1, 100, -1};
    const int32_t la[] = {INT32_MAX, INT32_MIN, 65536, 65537};
    const int32_t lb[] = {1, -1, 65536, 65537};
    const int32_t lsum[] = {INT32_MIN, INT32_MAX, 131072, 131074};
    const int32_t lprod[] = {INT32_MAX, INT32_MIN, 0, 131073};
    const int64_t qa[] = {INT64_MAX, INT64_MIN, 4294967297ll, -3};
    const int64_t qb[] = {1, -1, 4294967297ll, INT64_MIN};
    const int64_t qsum[] = {INT64_MIN, INT64_MAX, 8589934594ll, INT64_MAX - 2};
    const int64_t qprod[] = {INT64_MAX, INT64_MIN, 8589934593ll, INT64_MIN};
    const int64_t qmin[] = {1, INT64_MIN, 4294967297ll, INT64_MIN};

    check_pattern(DCOMM_UINT8, DCOMM_SUM, ua, ub, usum, 5);
    check_pattern(DCOMM_UINT8, DCOMM_PROD, ua, ub, uprod, 5);
    check_pattern(DCOMM_INT8, DCOMM_SUM, ia, ib, isum, 4);
    check_pattern(DCOMM_INT8, DCOMM_PROD, ia, ib, iprod, 4);
    check_pattern(DCOMM_INT8, DCOMM_MIN, ia, ib, imin, 4);
    check_pattern(DCOMM_INT8, DCOMM_MAX, ia, ib, imax, 4);
    check_pattern(DCOMM_INT32, DCOMM_SUM, la, lb, lsum, 4);
    check_pattern(DCOMM_INT32, DCOMM_PROD, la, lb, lprod, 4);
    check_pattern(DCOMM_INT64, DCOMM_SUM, qa, qb, qsum, 4);
    check_pattern(DCOMM_INT64, DCOMM_PROD, qa, qb, qprod, 4);
    check_pattern(DCOMM_INT64, DCOMM_MIN, qa, qb, qmin, 4);
}

static void test_integer_wrap(void **state)
{
    (void)state;
    for_each_isa(run_integer_wrap);
}

static void test_unsupported_untouched(void **state)
{
    int32_t d[4] = {1, 2, 3, 4}, s[4] = {5, 6, 7, 8};
    const int32_t orig[4] = {1, 2, 3, 4};

    (void)state;
    dc_reduce(d, s, 4, DCOMM_INT32, DCOMM_AVG);
    dc_reduce(d, s, 4, DCOMM_DTYPE_COUNT, DCOMM_SUM);
    dc_reduce(d, s, 4, DCOMM_INT32, (dcomm_op_t)99);
    assert_memory_equal(d, orig, sizeof(d));
    dc_reduce(NULL, NULL, 0, DCOMM_FLOAT32, DCOMM_SUM); /* n = 0 touches nothing */
}

static void test_supported_table(void **state)
{
    (void)state;
    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (int op = 0; op < DCOMM_OP_COUNT; op++) {
            int want = (op != DCOMM_AVG) || is_float_dtype(dt);
            assert_int_equal(dc_reduce_supported(dt, op), want);
        }
        assert_int_equal(dc_reduce_supported(dt, DCOMM_OP_COUNT), 0);
        assert_int_equal(dc_reduce_supported(dt, (dcomm_op_t)-1), 0);
    }
    assert_int_equal(dc_reduce_supported(DCOMM_DTYPE_COUNT, DCOMM_SUM), 0);
    assert_int_equal(dc_reduce_supported((dcomm_dtype_t)-1, DCOMM_SUM), 0);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_UINT8), 1);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_INT8), 1);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_INT32), 4);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_INT64), 8);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_FLOAT16), 2);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_BFLOAT16), 2);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_FLOAT32), 4);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_FLOAT64), 8);
    assert_int_equal(dc_reduce_dtype_size(DCOMM_DTYPE_COUNT), 0);
    assert_int_equal(dc_reduce_dtype_size((dcomm_dtype_t)-3), 0);
}

/* ---- tests: dispatch ------------------------------------------------------------------ */

static void test_isa_policy(void **state)
{
    const char *best = dc_reduce_isa_choose(NULL);
    const char *before;
#if defined(__x86_64__)
    unsigned eax, ebx, ecx, edx;
#endif

    (void)state;
    assert_string_equal(dc_reduce_isa_choose("no-such-isa"), best);
    assert_string_equal(dc_reduce_isa_choose("scalar"), "scalar");
    for (size_t i = 0; i < NUM_ISAS; i++) {
        if (dc_reduce_set_isa(all_isas[i]) == 0) {
            /* an available level is honoured ... */
            assert_string_equal(dc_reduce_isa_choose(all_isas[i]), all_isas[i]);
        } else {
            /* ... one the CPU cannot run falls back to the best */
            assert_string_equal(dc_reduce_isa_choose(all_isas[i]), best);
        }
    }
    assert_int_equal(dc_reduce_set_isa(NULL), 0);
    before = dc_reduce_isa();
    assert_int_equal(dc_reduce_set_isa("no-such-isa"), -1);
    assert_string_equal(dc_reduce_isa(), before);
#if defined(__x86_64__)
    /* the build must not silently lose the SIMD levels on a CPU that has them */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) &&
        (ecx & bit_F16C)) {
        assert_int_equal(dc_reduce_set_isa("avx2"), 0);
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
        assert_int_equal(dc_reduce_set_isa("avx512"), 0);
        assert_string_equal(best, "avx512");
    }
    assert_int_equal(dc_reduce_set_isa(NULL), 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_supported_table),
        cmocka_unit_test(test_unsupported_untouched),
        cmocka_unit_test(test_reduce_every_dtype_op),
        cmocka_unit_test(test_minmax_nan),
        cmocka_unit_test(test_integer_wrap),
        cmocka_unit_test(test_isa_policy),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
