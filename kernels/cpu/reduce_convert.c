/*
 * Exported conversions between float and the 16-bit floating formats (IEEE
 * binary16, bfloat16); the code is inline in dc_half.h.
 */
#include "reduce_impl.h"

float dc_half_to_float(uint16_t h)
{
    return dc_half_to_float_inl(h);
}

uint16_t dc_float_to_half(float f)
{
    return dc_float_to_half_inl(f);
}

float dc_bf16_to_float(uint16_t h)
{
    return dc_bf16_to_float_inl(h);
}

uint16_t dc_float_to_bf16(float f)
{
    return dc_float_to_bf16_inl(f);
}
