/* Reduction kernels: every dtype x op on every ISA level this CPU runs, checked
 * element by element against a reference written from the spec (not from the
 * kernels); fp16/bf16 conversions and rounding; AVG scaling against an exact
 * (__float128) reference; the dispatch policy. */
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

static const char *const all_isas[] = {"scalar", "avx2", "avx512"};
#define NUM_ISAS (sizeof(all_isas) / sizeof(all_isas[0]))

static const size_t lengths[] = {0, 1, 7, 33, 1000, 4097};
#define NUM_LENGTHS (sizeof(lengths) / sizeof(lengths[0]))

#define GUARD_BYTES 64
#define GUARD_BYTE  0xa5

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    /* xorshift64*: deterministic, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;

    memcpy(&u, &f, 4);
    return u;
}

static float f32_of(uint32_t u)
{
    float f;

    memcpy(&f, &u, 4);
    return f;
}

static uint64_t f64_bits(double d)
{
    uint64_t u;

    memcpy(&u, &d, 8);
    return u;
}

static double f64_of(uint64_t u)
{
    double d;

    memcpy(&d, &u, 8);
    return d;
}

static int is_float_dtype(dcomm_dtype_t dt)
{
    return dt == DCOMM_FLOAT16 || dt == DCOMM_BFLOAT16 || dt == DCOMM_FLOAT32 ||
           dt == DCOMM_FLOAT64;
}

/* ---- reference conversions (from the format definitions) ----------------------- */

/* Magnitude of a non-negative half code; 0x7c00 gives 65536, the value the next
 * binade would start at, which is where rounding to inf begins. */
static double half_code_value(unsigned code)
{
    unsigned exp = code >> 10, mant = code & 0x3ff;

    return exp ? ldexp(1024.0 + mant, (int)exp - 25) : ldexp(mant, -24);
}

/* Same for bfloat16: 0x7f80 gives 2^128. */
static double bf16_code_value(unsigned code)
{
    unsigned exp = code >> 7, mant = code & 0x7f;

    return exp ? ldexp(128.0 + mant, (int)exp - 134) : ldexp(mant, -133);
}

/* Round mag >= 0 to the nearest code in [0, inf_code], ties to the even code,
 * by bisection over the (monotone) code values. T is double or __float128. */
#define DEFINE_ROUND_SEARCH(name, T)                                                       \
    static unsigned name(T mag, double (*value)(unsigned), unsigned inf_code)              \
    {                                                                                      \
        unsigned lo = 0, hi = inf_code;                                                    \
        T dlo, dhi;                                                                        \
                                                                                           \
        if (mag >= (T)value(inf_code)) {                                                   \
            return inf_code;                                                               \
        }                                                                                  \
        while (hi - lo > 1) {                                                              \
            unsigned mid = (lo + hi) / 2;                                                  \
            if ((T)value(mid) <= mag) {                                                    \
                lo = mid;                                                                  \
            } else {                                                                       \
                hi = mid;                                                                  \
            }                                                                              \
        }                                                                                  \
        dlo = mag - (T)value(lo);                                                          \
        dhi = (T)value(hi) - mag;                                                          \
        if (dlo != dhi) {                                                                  \
            return dlo < dhi ? lo : hi;                                                    \
        }                                                                                  \
        return (lo & 1) ? hi : lo;                                                         \
    }

DEFINE_ROUND_SEARCH(round_search, double)
#ifdef __SIZEOF_FLOAT128__
DEFINE_ROUND_SEARCH(round_search_q, __float128)
#endif

static float ref_half_to_float(uint16_t h)
{
    unsigned exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float mag;

    if (exp == 0x1f && mant != 0) {
        return f32_of(((uint32_t)(h & 0x8000) << 16) | 0x7fc00000u | (mant << 13));
    }
    mag = (exp == 0x1f) ? INFINITY : (float)half_code_value(h & 0x7fff);
    return (h & 0x8000) ? -mag : mag;
}

static uint16_t ref_float_to_half(float f)
{
    uint32_t b     = f32_bits(f);
    uint16_t sign  = (uint16_t)((b >> 16) & 0x8000);

    if (isnan(f)) {
        return (uint16_t)(sign | 0x7e00 | ((b & 0x7fffff) >> 13));
    }
    return (uint16_t)(sign | round_search(fabs((double)f), half_code_value, 0x7c00));
}

static float ref_bf16_to_float(uint16_t h)
{
    return f32_of((uint32_t)h << 16);
}

static uint16_t ref_float_to_bf16(float f)
{
    uint32_t b    = f32_bits(f);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);

    if (isnan(f)) {
        return (uint16_t)((b >> 16) | 0x40);
    }
    return (uint16_t)(sign | round_search(fabs((double)f), bf16_code_value, 0x7f80));
}

/* ---- reference reductions --------------------------------------------------------- */

static float ref_fop(dcomm_op_t op, float a, float b)
{
    switch (op) {
    case DCOMM_SUM:
    case DCOMM_AVG:
        return a + b;
    case DCOMM_PROD:
        return a * b;
    case DCOMM_MIN:
        return isnan(b) ? b : isnan(a) ? a : (b < a) ? b : a;
    default:
        return isnan(b) ? b : isnan(a) ? a : (b > a) ? b : a;
    }
}

static double ref_dop(dcomm_op_t op, double a, double b)
{
    switch (op) {
    case DCOMM_SUM:
    case DCOMM_AVG:
        return a + b;
    case DCOMM_PROD:
        return a * b;
    case DCOMM_MIN:
        return isnan(b) ? b : isnan(a) ? a : (b < a) ? b : a;
    default:
        return isnan(b) ? b : isnan(a) ? a : (b > a) ? b : a;
    }
}

/* Integers: sign-extended (signed types) or zero-extended into int64, operated on
 * in uint64 and truncated: that is wrap-around modulo 2^bits. */
static int64_t ref_iop(dcomm_op_t op, int64_t a, int64_t b)
{
    switch (op) {
    case DCOMM_SUM:
        return (int64_t)((uint64_t)a + (uint64_t)b);
    case DCOMM_PROD:
        return (int64_t)((uint64_t)a * (uint64_t)b);
    case DCOMM_MIN:
        return b < a ? b : a;
    default:
        return b > a ? b : a;
    }
}

static int64_t load_int(dcomm_dtype_t dt, const unsigned char *p)
{
    int8_t i8;
    int32_t i32;
    int64_t i64;

    switch (dt) {
    case DCOMM_UINT8:
        return *p;
    case DCOMM_INT8:
        memcpy(&i8, p, 1);
        return i8;
    case DCOMM_INT32:
        memcpy(&i32, p, 4);
        return i32;
    default:
        memcpy(&i64, p, 8);
        return i64;
    }
}

/* out = a op b for one element; *both_nan set when a SUM/PROD of two NaNs,
 * whose payload the spec leaves open. */
static void ref_elem(dcomm_dtype_t dt, dcomm_op_t op, const unsigned char *a,
                     const unsigned char *b, unsigned char *out, int *both_nan)
{
    size_t sz = dc_reduce_dtype_size(dt);
    uint16_t ha, hb, hr;
    float fa, fb, fr;
    double da, db, dr;
    uint64_t ir;

    *both_nan = 0;
    switch (dt) {
    case DCOMM_FLOAT16:
    case DCOMM_BFLOAT16:
        memcpy(&ha, a, 2);
        memcpy(&hb, b, 2);
        fa = dt == DCOMM_FLOAT16 ? ref_half_to_float(ha) : ref_bf16_to_float(ha);
        fb = dt == DCOMM_FLOAT16 ? ref_half_to_float(hb) : ref_bf16_to_float(hb);
        fr = ref_fop(op, fa, fb);
        hr = dt == DCOMM_FLOAT16 ? ref_float_to_half(fr) : ref_float_to_bf16(fr);
        memcpy(out, &hr, 2);
        *both_nan = isnan(fa) && isnan(fb);
        break;
    case DCOMM_FLOAT32:
        memcpy(&fa, a, 4);
        memcpy(&fb, b, 4);
        fr = ref_fop(op, fa, fb);
        memcpy(out, &fr, 4);
        *both_nan = isnan(fa) && isnan(fb);
        break;
    case DCOMM_FLOAT64:
        memcpy(&da, a, 8);
        memcpy(&db, b, 8);
        dr = ref_dop(op, da, db);
        memcpy(out, &dr, 8);
        *both_nan = isnan(da) && isnan(db);
        break;
    default:
        ir = (uint64_t)ref_iop(op, load_int(dt, a), load_int(dt, b));
        memcpy(out, &ir, sz); /* little endian: the low bytes */
        break;
    }
    if (op != DCOMM_SUM && op != DCOMM_AVG && op != DCOMM_PROD) {
        *both_nan = 0;
    }
}

static int elem_is_nan(dcomm_dtype_t dt, const unsigned char *p)
{
    uint16_t h;
    float f;
    double d;

    switch (dt) {
    case DCOMM_FLOAT16:
        memcpy(&h, p, 2);
        return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    case DCOMM_BFLOAT16:
        memcpy(&h, p, 2);
        return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
    case DCOMM_FLOAT32:
        memcpy(&f, p, 4);
        return isnan(f);
    case DCOMM_FLOAT64:
        memcpy(&d, p, 8);
        return isnan(d);
    default:
        return 0;
    }
}

/* ---- test data ------------------------------------------------------------------- */

static const uint32_t f32_specials[] = {
    0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001,
    0x7fa12345, 0x7f7fffff, 0xff7fffff, 0x00800000, 0x00000001, 0x807fffff, 0x3f800000,
    0xbf800000, 0x477fe000 /* 65504 */, 0x477ff000 /* 65520 */, 0x33800000 /* 2^-24 */};

static const uint64_t f64_specials[] = {
    0x0000000000000000ull, 0x8000000000000000ull, 0x7ff0000000000000ull,
    0xfff0000000000000ull, 0x7ff8000000000000ull, 0x7ff0000000000001ull,
    0xfff4000000000abcull, 0x7fefffffffffffffull, 0x0000000000000001ull,
    0x0010000000000000ull, 0x3ff0000000000000ull, 0xbff0000000000000ull};

static const uint16_t h16_specials[] = {0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7c01,
                                        0xfd55, 0x7bff, 0xfbff, 0x0001, 0x03ff, 0x0400,
                                        0x3c00, 0xbc00, 0x7f80, 0xff80, 0x7fc0, 0x7f81,
                                        0x7f7f, 0x0080, 0x007f};

static const int64_t int_specials[] = {0,  1,        -1,         INT8_MIN,  INT8_MAX,
                                       255, INT32_MIN, INT32_MAX, INT64_MIN, INT64_MAX};

/* Fills n elements: a third specials, a third random bits, a third values of
 * moderate magnitude (so sums land on rounding ties and do not just saturate). */
static void fill_random(dcomm_dtype_t dt, unsigned char *p, size_t n)
{
    size_t sz = dc_reduce_dtype_size(dt);

    for (size_t i = 0; i < n; i++) {
        uint64_t r = rng_next(), kind = r % 3, v = r >> 8;
        unsigned char *e = p + i * sz;

        if (kind == 1) {
            v = rng_next();
        } else if (kind == 0) {
            switch (dt) {
            case DCOMM_FLOAT16:
            case DCOMM_BFLOAT16:
                v = h16_specials[v % (sizeof(h16_specials) / sizeof(h16_specials[0]))];
                break;
            case DCOMM_FLOAT32:
                v = f32_specials[v % (sizeof(f32_specials) / sizeof(f32_specials[0]))];
                break;
            case DCOMM_FLOAT64:
                v = f64_specials[v % (sizeof(f64_specials) / sizeof(f64_specials[0]))];
                break;
            default:
                v = (uint64_t)int_specials[v % (sizeof(int_specials) / sizeof(int_specials[0]))];
                break;
            }
        } else {
            switch (dt) {
            case DCOMM_FLOAT16: /* exponent 12..19: 2^-3 .. 2^4 */
                v = (v & 0x83ff) | ((12 + (v >> 16) % 8) << 10);
                break;
            case DCOMM_BFLOAT16:
                v = (v & 0x807f) | ((124 + (v >> 16) % 8) << 7);
                break;
            case DCOMM_FLOAT32:
                v = f32_bits((float)((int64_t)(v % 200001) - 100000) / 64.0f);
                break;
            case DCOMM_FLOAT64:
                v = f64_bits((double)((int64_t)(v % 2000001) - 1000000) / 3.0);
                break;
            default:
                v = v % 7;
                break;
            }
        }
        memcpy(e, &v, sz); /* little endian: the low bytes */
    }
}

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
        cmocka_unit_test(test_half_all_values),
        cmocka_unit_test(test_half_rounding),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_reduce_every_dtype_op),
        cmocka_unit_test(test_minmax_nan),
        cmocka_unit_test(test_integer_wrap),
#ifdef __SIZEOF_FLOAT128__
        cmocka_unit_test(test_scale_16bit),
        cmocka_unit_test(test_scale_32_64),
#endif
        cmocka_unit_test(test_scale_integers_untouched),
        cmocka_unit_test(test_isa_policy),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
