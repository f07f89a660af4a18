/* fp16/bf16 conversions of the reduction kernels (every half value, rounding
 * cases and random floats against a bisection reference) and AVG scaling
 * against an exact (__float128) reference (kernels_ref.c). */
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

/* ---- tests: conversions ----------------------------------------------------------- */

static void test_half_all_values(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = dc_half_to_float((uint16_t)h), r = ref_half_to_float((uint16_t)h);
        int nan = ((h & 0x7c00) == 0x7c00) && (h & 0x3ff);

        assert_int_equal(f32_bits(f), f32_bits(r));
        /* exact round trip, NaNs quieted with their payload and sign */
        assert_int_equal(dc_float_to_half(f), nan ? (h | 0x200) : h);
        assert_int_equal(f32_bits(dc_bf16_to_float((uint16_t)h)), h << 16);
        nan = ((h & 0x7f80) == 0x7f80) && (h & 0x7f);
        assert_int_equal(dc_float_to_bf16(dc_bf16_to_float((uint16_t)h)), nan ? (h | 0x40) : h);
    }
}

static void test_half_rounding(void **state)
{
    static const struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f801000, 0x3c00}, /* 1 + 2^-11: tie, to even 1.0 */
        {0x3f803000, 0x3c02}, /* 1 + 3*2^-11: tie, to even 1 + 2^-9 */
        {0x3f801001, 0x3c01}, /* just above the tie */
        {0x477fe000, 0x7bff}, /* 65504, the largest half */
        {0x477fefff, 0x7bff}, /* just below 65520 */
        {0x477ff000, 0x7c00}, /* 65520: tie, to even is inf */
        {0x49742400, 0x7c00}, /* 1e6 */
        {0xc9742400, 0xfc00}, /* -1e6 */
        {0x7f800000, 0x7c00},
        {0xff800000, 0xfc00},
        {0x33800000, 0x0001}, /* 2^-24, smallest subnormal */
        {0x33000000, 0x0000}, /* 2^-25: tie, to even 0 */
        {0xb3000000, 0x8000}, /* -2^-25 */
        {0x33000001, 0x0001}, /* just above 2^-25 */
        {0x33c00000, 0x0002}, /* 1.5 * 2^-24: tie, to even 2 */
        {0x387fe000, 0x0400}, /* 1023.5 * 2^-24: tie, up to the smallest normal */
        {0x387fa000, 0x03fe}, /* 1022.5 * 2^-24: tie, to even 1022 */
        {0x00000001, 0x0000}, /* float subnormal */
        {0x80000001, 0x8000},
        {0x7f800001, 0x7e00}, /* signalling NaN comes back quiet */
        {0x7fbfffff, 0x7fff}, /* payload truncated */
        {0xffc00000, 0xfe00},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint16_t got = dc_float_to_half(f32_of(cases[i].f));
        if (got != cases[i].h) {
            fail_msg("float %08x: half %04x, want %04x", cases[i].f, got, cases[i].h);
        }
        assert_int_equal(ref_float_to_half(f32_of(cases[i].f)), cases[i].h);
    }
    for (int i = 0; i < 400000; i++) {
        uint32_t b = (uint32_t)rng_next();
        if (i & 1) { /* concentrate on the half range */
            b = (b & 0x807fffff) | ((uint32_t)(100 + (b >> 8) % 45) << 23);
        }
        assert_int_equal(dc_float_to_half(f32_of(b)), ref_float_to_half(f32_of(b)));
    }
}

static void test_bf16_rounding(void **state)
{
    static const struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f808000, 0x3f80}, /* tie, to even */
        {0x3f818000, 0x3f82}, /* tie, to even (up) */
        {0x3f808001, 0x3f81},
        {0x3f807fff, 0x3f80},
        {0x7f7f7fff, 0x7f7f},
        {0x7f7f8000, 0x7f80}, /* tie past the largest finite: inf */
        {0x7f7fffff, 0x7f80},
        {0xff7fffff, 0xff80},
        {0x00008000, 0x0000}, /* subnormal tie to even */
        {0x00018000, 0x0002},
        {0x807fffff, 0x8080}, /* largest subnormal rounds to the smallest normal */
        {0x7f800000, 0x7f80},
        {0x7f800001, 0x7fc0}, /* signalling NaN: quiet, never inf */
        {0xff800001, 0xffc0},
        {0x7fffffff, 0x7fff},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint16_t got = dc_float_to_bf16(f32_of(cases[i].f));
        if (got != cases[i].h) {
            fail_msg("float %08x: bf16 %04x, want %04x", cases[i].f, got, cases[i].h);
        }
        assert_int_equal(ref_float_to_bf16(f32_of(cases[i].f)), cases[i].h);
    }
    for (int i = 0; i < 400000; i++) {
        uint32_t b = (uint32_t)rng_next();
        assert_int_equal(dc_float_to_bf16(f32_of(b)), ref_float_to_bf16(f32_of(b)));
    }
}

/* ---- tests: AVG scaling ------------------------------------------------------------ */

static const double scale_factors[] = {1.0 / 3,  1.0 / 5,    1.0 / 6, 1.0 / 7,
                                       0.1,      1.0 / 12,   1.0 / 24, 1.0 / 1000,
                                       3.0,      0.5,        1.0 / 65536};
#define NUM_FACTORS (sizeof(scale_factors) / sizeof(scale_factors[0]))

#ifdef __SIZEOF_FLOAT128__
/* The exact product, rounded once by bisection: independent of the library. */
static uint16_t ref_scale16(uint16_t h, double factor, int half)
{
    float x = half ? ref_half_to_float(h) : ref_bf16_to_float(h);
    __float128 q = (__float128)x * (__float128)factor;
    uint16_t sign = (signbit(x) != 0) != (signbit(factor) != 0) ? 0x8000 : 0;

    if (isnan(x)) {
        return (uint16_t)(h | (half ? 0x200 : 0x40));
    }
    if (q < 0) {
        q = -q;
    }
    return (uint16_t)(sign | (half ? round_search_q(q, half_code_value, 0x7c00)
                                   : round_search_q(q, bf16_code_value, 0x7f80)));
}

static void test_scale_16bit(void **state)
{
    uint16_t *buf = malloc(65536 * 2 + 2);
    uint16_t v;
    size_t naive_differs = 0;

    (void)state;
    assert_non_null(buf);
    for (int half = 0; half <= 1; half++) {
        for (size_t f = 0; f < NUM_FACTORS; f++) {
            unsigned char *p = (unsigned char *)buf + 1; /* unaligned on purpose */

            for (uint32_t h = 0; h <= 0xffff; h++) {
                v = (uint16_t)h;
                memcpy(p + 2 * h, &v, 2);
            }
            dc_reduce_scale(p, 65536, half ? DCOMM_FLOAT16 : DCOMM_BFLOAT16,
                            scale_factors[f]);
            for (uint32_t h = 0; h <= 0xffff; h++) {
                uint16_t want = ref_scale16((uint16_t)h, scale_factors[f], half);
                float x = half ? ref_half_to_float((uint16_t)h) : ref_bf16_to_float((uint16_t)h);
                float naive = (float)((double)x * scale_factors[f]);

                memcpy(&v, p + 2 * h, 2);
                if (v != want) {
                    fail_msg("%s %04x * %.17g: got %04x, want %04x", half ? "fp16" : "bf16", h,
                             scale_factors[f], v, want);
                }
                if (half && !isnan(x) && ref_float_to_half(naive) != want) {
                    naive_differs++;
                }
            }
        }
    }
    /* rounding via float would have failed here: the data reaches the hard cases */
    print_message("  fp16: %zu products where rounding twice is wrong\n", naive_differs);
    assert_true(naive_differs > 0);
    free(buf);
}

static void test_scale_32_64(void **state)
{
    enum { N = 50000 };
    unsigned char *fbuf = malloc(N * 4 + 3), *dbuf = malloc(N * 8 + 5);
    float *fin = malloc(N * 4), *fal = malloc(N * 4);
    double *din = malloc(N * 8);

    (void)state;
    assert_true(fbuf && dbuf && fin && din && fal);
    for (size_t f = 0; f < NUM_FACTORS; f++) {
        double k = scale_factors[f];

        fill_random(DCOMM_FLOAT32, (unsigned char *)fin, N);
        fill_random(DCOMM_FLOAT64, (unsigned char *)din, N);
        memcpy(fbuf + 3, fin, N * 4);
        memcpy(dbuf + 5, din, N * 8);
        dc_reduce_scale(fbuf + 3, N, DCOMM_FLOAT32, k);
        dc_reduce_scale(dbuf + 5, N, DCOMM_FLOAT64, k);
        for (size_t i = 0; i < N; i++) {
            float got, want = (float)((__float128)fin[i] * k);
            double dgot, dwant = (double)((__float128)din[i] * k);

            memcpy(&got, fbuf + 3 + 4 * i, 4);
            memcpy(&dgot, dbuf + 5 + 8 * i, 8);
            if (isnan(fin[i]) ? !isnan(got) : f32_bits(got) != f32_bits(want)) {
                fail_msg("f32 %08x * %.17g: got %08x, want %08x", f32_bits(fin[i]), k,
                         f32_bits(got), f32_bits(want));
            }
            if (isnan(din[i]) ? !isnan(dgot) : f64_bits(dgot) != f64_bits(dwant)) {
                fail_msg("f64 %016llx * %.17g: got %016llx", (unsigned long long)f64_bits(din[i]),
                         k, (unsigned long long)f64_bits(dgot));
            }
        }
        /* aligned floats take the in-place path where the factor is a float */
        memcpy(fal, fin, N * 4);
        dc_reduce_scale(fal, N - 5, DCOMM_FLOAT32, k);
        for (size_t i = 0; i < N; i++) {
            float want = i < N - 5 ? (float)((__float128)fin[i] * k) : fin[i];

            if (isnan(fin[i]) ? !isnan(fal[i]) : f32_bits(fal[i]) != f32_bits(want)) {
                fail_msg("aligned f32 %08x * %.17g at %zu: got %08x, want %08x",
                         f32_bits(fin[i]), k, i, f32_bits(fal[i]), f32_bits(want));
            }
        }
    }
    free(din);
    free(fin);
    free(fal);
    free(dbuf);
    free(fbuf);
}
#endif

static void test_scale_integers_untouched(void **state)
{
    int32_t v[5] = {1, -2, 3, 400, INT32_MIN};
    const int32_t orig[5] = {1, -2, 3, 400, INT32_MIN};

    (void)state;
    dc_reduce_scale(v, 5, DCOMM_INT32, 0.5);
    dc_reduce_scale(v, 5, DCOMM_DTYPE_COUNT, 0.5);
    assert_memory_equal(v, orig, sizeof(v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_all_values),
        cmocka_unit_test(test_half_rounding),
        cmocka_unit_test(test_bf16_rounding),
#ifdef __SIZEOF_FLOAT128__
        cmocka_unit_test(test_scale_16bit),
        cmocka_unit_test(test_scale_32_64),
#endif
        cmocka_unit_test(test_scale_integers_untouched),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
