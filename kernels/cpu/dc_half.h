/*
 * Conversions between float and the 16-bit floating formats (IEEE binary16,
 * bfloat16), header-only: the kernels inline them, and programs that only
 * fill and check buffers (bench/) use them without linking the kernels.
 * NaN handling as x86 F16C.
 */
#ifndef DC_HALF_H
#define DC_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t dc_f32_bits(float f)
{
    uint32_t u;

    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float dc_f32_from_bits(uint32_t u)
{
    float f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

static inline float dc_half_to_float_inl(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t fexp;

    if (exp == 0x1f) {
        /* inf, or NaN quieted with its payload kept (as vcvtph2ps does) */
        return dc_f32_from_bits(sign | 0x7f800000u | (mant ? 0x400000u | (mant << 13) : 0));
    }
    if (exp != 0) {
        return dc_f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
    }
    if (mant == 0) {
        return dc_f32_from_bits(sign);
    }
    /* subnormal half: normalise; its value is mant * 2^-24 */
    fexp = 113;
    while (!(mant & 0x400u)) {
        mant <<= 1;
        fexp--;
    }
    return dc_f32_from_bits(sign | (fexp << 23) | ((mant & 0x3ffu) << 13));
}

/* Shifts m right by shift (1..31), rounding to nearest, ties to even. */
static inline uint32_t dc_shift_round_even(uint32_t m, unsigned shift)
{
    uint32_t r    = m >> shift;
    uint32_t rem  = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);

    if (rem > half || (rem == half && (r & 1u))) {
        r++;
    }
    return r;
}

static inline uint16_t dc_float_to_half_inl(float f)
{
    uint32_t bits = dc_f32_bits(f);
    uint32_t sign = (bits >> 16) & 0x8000u;
    uint32_t exp  = (bits >> 23) & 0xffu;
    uint32_t mant = bits & 0x7fffffu;
    int e         = (int)exp - 127 + 15; /* biased half exponent */

    if (exp == 0xff) {
        /* NaN: quiet bit set, payload truncated to its top bits (as vcvtps2ph) */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
    }
    if (e >= 31) {
        return (uint16_t)(sign | 0x7c00u); /* |f| >= 65536: rounds to inf */
    }
    if (e <= 0) {
        if (e < -10) {
            return (uint16_t)sign; /* below 2^-25: rounds to zero */
        }
        /* half subnormal, in units of 2^-24; may round up to the smallest normal */
        return (uint16_t)(sign | dc_shift_round_even(mant | 0x800000u, (unsigned)(14 - e)));
    }
    /* a mantissa carry moves into the exponent, up to inf, as it should */
    return (uint16_t)(sign + dc_shift_round_even(((uint32_t)e << 23) | mant, 13));
}

static inline float dc_bf16_to_float_inl(uint16_t h)
{
    return dc_f32_from_bits((uint32_t)h << 16);
}

static inline uint16_t dc_float_to_bf16_inl(float f)
{
    uint32_t bits = dc_f32_bits(f);

    if (isnan(f)) {
        return (uint16_t)((bits >> 16) | 0x40u);
    }
    /* round to nearest even; a carry past the largest finite value gives inf */
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

#endif /* DC_HALF_H */
