/* References for the reduction kernels' tests (kernels_ref.h). */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels_ref.h"

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

uint64_t rng_next(void)
{
    /* xorshift64*: deterministic, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

uint32_t f32_bits(float f)
{
    uint32_t u;

    memcpy(&u, &f, 4);
    return u;
}

float f32_of(uint32_t u)
{
    float f;

    memcpy(&f, &u, 4);
    return f;
}

uint64_t f64_bits(double d)
{
    uint64_t u;

    memcpy(&u, &d, 8);
    return u;
}

double f64_of(uint64_t u)
{
    double d;

    memcpy(&d, &u, 8);
    return d;
}

int is_float_dtype(dcomm_dtype_t dt)
{
    return dt == DCOMM_FLOAT16 || dt == DCOMM_BFLOAT16 || dt == DCOMM_FLOAT32 ||
           dt == DCOMM_FLOAT64;
}

/* ---- reference conversions (from the format definitions) ----------------------- */

/* Magnitude of a non-negative half code; 0x7c00 gives 65536, the value the next
 * binade would start at, which is where rounding to inf begins. */
double half_code_value(unsigned code)
{
    unsigned exp = code >> 10, mant = code & 0x3ff;

    return exp ? ldexp(1024.0 + mant, (int)exp - 25) : ldexp(mant, -24);
}

/* Same for bfloat16: 0x7f80 gives 2^128. */
double bf16_code_value(unsigned code)
{
    unsigned exp = code >> 7, mant = code & 0x7f;

    return exp ? ldexp(128.0 + mant, (int)exp - 134) : ldexp(mant, -133);
}

/* Round mag >= 0 to the nearest code in [0, inf_code], ties to the even code,
 * by bisection over the (monotone) code values. T is double or __float128. */
#define DEFINE_ROUND_SEARCH(name, T)                                                       \
    unsigned name(T mag, double (*value)(unsigned), unsigned inf_code)                     \
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

float ref_half_to_float(uint16_t h)
{
    unsigned exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float mag;

    if (exp == 0x1f && mant != 0) {
        return f32_of(((uint32_t)(h & 0x8000) << 16) | 0x7fc00000u | (mant << 13));
    }
    mag = (exp == 0x1f) ? INFINITY : (float)half_code_value(h & 0x7fff);
    return (h & 0x8000) ? -mag : mag;
}

uint16_t ref_float_to_half(float f)
{
    uint32_t b     = f32_bits(f);
    uint16_t sign  = (uint16_t)((b >> 16) & 0x8000);

    if (isnan(f)) {
        return (uint16_t)(sign | 0x7e00 | ((b & 0x7fffff) >> 13));
    }
    return (uint16_t)(sign | round_search(fabs((double)f), half_code_value, 0x7c00));
}

float ref_bf16_to_float(uint16_t h)
{
    return f32_of((uint32_t)h << 16);
}

uint16_t ref_float_to_bf16(float f)
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
void ref_elem(dcomm_dtype_t dt, dcomm_op_t op, const unsigned char *a,
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

int elem_is_nan(dcomm_dtype_t dt, const unsigned char *p)
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
void fill_random(dcomm_dtype_t dt, unsigned char *p, size_t n)
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
