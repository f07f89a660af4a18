/*
 * dc_reduce_scale: multiplies a floating buffer by a double factor (AVG's final
 * 1/size), rounding the exact product once to the dtype.
 *
 * x * factor is not exact in double (24 + 53 bits for a float), so rounding it
 * to double and then to float could round twice. Instead the exact product is
 * kept as the unevaluated sum s + t, rounded to double "to odd" (sticky), and
 * then rounded once more to nearest even: round-to-odd at >= p+2 bits followed
 * by round-to-nearest at p bits equals one correct rounding at p bits. The
 * 16-bit types go double -> float -> half, both steps to odd but the last.
 * Assumes the product neither overflows double nor underflows into its
 * subnormals (true for any factor in the range of 1/size).
 */
#include "reduce_impl.h"

typedef struct split_factor {
    double factor;
    double hi; /* the top 26 significant bits of factor */
    double lo; /* factor - hi, exact, at most 27 bits */
    int exact; /* 0 when factor is inf/NaN: multiply plainly */
} split_factor_t;

static split_factor_t split_factor_make(double factor)
{
    split_factor_t sf = {.factor = factor, .hi = factor, .lo = 0.0, .exact = isfinite(factor)};
    uint64_t bits;

    if (sf.exact) {
        memcpy(&bits, &factor, sizeof(bits));
        bits &= ~((UINT64_C(1) << 27) - 1);
        memcpy(&sf.hi, &bits, sizeof(bits));
        sf.lo = factor - sf.hi;
    }
    return sf;
}

static double f64_step_to_odd(double s, int away_from_zero)
{
    uint64_t bits;

    memcpy(&bits, &s, sizeof(bits));
    if (!(bits & 1)) {
        bits = away_from_zero ? bits + 1 : bits - 1;
    }
    memcpy(&s, &bits, sizeof(bits));
    return s;
}

/* x * factor rounded to double to odd; x must have at most 24 significant bits
 * (any float, half or bfloat16 value), so x*hi and x*lo are exact. */
static double mul_round_odd(double x, const split_factor_t *sf)
{
    double a, b, s, bb, t;

    if (!sf->exact || !isfinite(x)) {
        return x * sf->factor;
    }
    a = x * sf->hi;
    b = x * sf->lo;
    /* two-sum: s + t == a + b exactly (needs -ffp-contract=off) */
    s  = a + b;
    bb = s - a;
    t  = (a - (s - bb)) + (b - bb);
    if ((t == 0.0) || !isfinite(s)) {
        return s;
    }
    return f64_step_to_odd(s, (t > 0.0) == (s > 0.0));
}

/* d rounded to float to odd. */
static float f32_round_odd(double d)
{
    float f = (float)d;
    uint32_t bits;

    if (((double)f == d) || isnan(d)) {
        return f;
    }
    bits = dc_f32_bits(f);
    if (fabs((double)f) > fabs(d)) {
        bits--; /* f rounded away from zero: the truncation is one below */
    }
    return dc_f32_from_bits(bits | 1u);
}

#define SCALE_LOOP(type, buf, n, expr_of_x)                                                \
    do {                                                                                   \
        unsigned char *p_ = (buf);                                                         \
        type x;                                                                            \
        for (size_t i_ = 0; i_ < (n); i_++) {                                              \
            memcpy(&x, p_ + i_ * sizeof(type), sizeof(type));                              \
            x = (expr_of_x);                                                               \
            memcpy(p_ + i_ * sizeof(type), &x, sizeof(type));                              \
        }                                                                                  \
    } while (0)

/* float32 fast paths. A factor that is a float itself (1/2, 1/4 ...): one
 * float multiplication is the exact product rounded once. Any other factor:
 * the product rounded to double and then to float is the exact product rounded
 * once unless the double lands exactly on a midpoint between two floats (then
 * the tie may break the wrong way; the exact path redoes such a block), or in
 * the subnormal range (also redone). Blocks keep the input until they pass. */
#define SCALE_BLOCK 64 /* a constant trip count, so that the loops vectorize */

/* out = in * factor for one block; 1 when the block must be redone exactly. */
static inline uint32_t scale_f32_block(float *out, const float *in, double factor, float ff,
                                       int exact_ff)
{
    uint32_t redo = 0;

    if (exact_ff) {
        for (size_t k = 0; k < SCALE_BLOCK; k++) {
            out[k] = in[k] * ff;
        }
        return 0;
    }
    for (size_t k = 0; k < SCALE_BLOCK; k++) {
        double d = (double)in[k] * factor, a = fabs(d);
        uint64_t bits;

        memcpy(&bits, &d, sizeof(bits));
        out[k] = (float)d;
        redo |= (uint32_t)((bits & 0x1fffffffu) == 0x10000000u) |
                (uint32_t)(a < 0x1p-126 && a != 0.0) | (uint32_t)!(a <= 0x1p+128);
    }
    return redo;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
/* The blocks vectorize four times wider with AVX2 (float <-> double too). Not
 * under ThreadSanitizer: GCC instruments the clones' ifunc resolver, which the
 * dynamic loader runs before the TSan runtime is up, and every program crashes
 * at load time. */
__attribute__((target_clones("avx2", "default")))
#endif
static void scale_f32(unsigned char *p, size_t n, double factor, const split_factor_t *sf)
{
    float ff = (float)factor, in[SCALE_BLOCK], out[SCALE_BLOCK];
    int exact_ff = (double)ff == factor && isfinite(factor);
    size_t i = 0;

    if (exact_ff && ((uintptr_t)p & (sizeof(float) - 1)) == 0) { /* in place */
        float *f = (float *)(void *)p;

        for (; i + SCALE_BLOCK <= n; i += SCALE_BLOCK) {
            scale_f32_block(f + i, f + i, factor, ff, 1);
        }
    }
    for (; i < n; i += SCALE_BLOCK) {
        size_t m = n - i < SCALE_BLOCK ? n - i : SCALE_BLOCK;

        if (m == SCALE_BLOCK) {
            memcpy(in, p + i * 4, sizeof(in));
        } else {
            memset(in, 0, sizeof(in));
            memcpy(in, p + i * 4, m * 4);
        }
        if (scale_f32_block(out, in, factor, ff, exact_ff)) {
            for (size_t k = 0; k < m; k++) {
                out[k] = (float)mul_round_odd(in[k], sf);
            }
        }
        if (m == SCALE_BLOCK) {
            memcpy(p + i * 4, out, sizeof(out));
        } else {
            memcpy(p + i * 4, out, m * 4);
        }
    }
}

void dc_reduce_scale(void *buf, size_t n, dcomm_dtype_t dtype, double factor)
{
    split_factor_t sf = split_factor_make(factor);

    switch (dtype) {
    case DCOMM_FLOAT64:
        SCALE_LOOP(double, buf, n, x * factor);
        break;
    case DCOMM_FLOAT32:
        scale_f32(buf, n, factor, &sf);
        break;
    case DCOMM_FLOAT16:
        SCALE_LOOP(uint16_t, buf, n,
                   dc_float_to_half_inl(
                       f32_round_odd(mul_round_odd(dc_half_to_float_inl(x), &sf))));
        break;
    case DCOMM_BFLOAT16:
        SCALE_LOOP(uint16_t, buf, n,
                   dc_float_to_bf16_inl(
                       f32_round_odd(mul_round_odd(dc_bf16_to_float_inl(x), &sf))));
        break;
    default:
        break; /* integers: AVG is not defined for them */
    }
}
