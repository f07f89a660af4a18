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

void dc_reduce_scale(void *buf, size_t n, dcomm_dtype_t dtype, double factor)
{
    split_factor_t sf = split_factor_make(factor);

    switch (dtype) {
    case DCOMM_FLOAT64:
        SCALE_LOOP(double, buf, n, x * factor);
        break;
    case DCOMM_FLOAT32:
        SCALE_LOOP(float, buf, n, (float)mul_round_odd(x, &sf));
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
