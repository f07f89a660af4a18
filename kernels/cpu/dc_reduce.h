/*
 * Element-wise reductions on host memory for every dtype/op of dcomm: the inner
 * loop of every allreduce/reducescatter. SIMD variants are picked at run time.
 */
#ifndef DC_REDUCE_H
#define DC_REDUCE_H

#include <stddef.h>
#include <stdint.h>

#include "dcomm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when (dtype, op) is valid: every dtype with SUM/MIN/MAX/PROD; AVG only for
 * FLOAT16/BFLOAT16/FLOAT32/FLOAT64. 0 otherwise (also for out-of-range values). */
int dc_reduce_supported(dcomm_dtype_t dtype, dcomm_op_t op);

/* Bytes per element; 0 when dtype is unknown. */
size_t dc_reduce_dtype_size(dcomm_dtype_t dtype);

/* dst[i] = dst[i] op src[i] for n elements. AVG reduces as SUM (the caller scales
 * once at the end with dc_reduce_scale). Semantics:
 *  - integer SUM/PROD wrap modulo 2^bits (signed types too);
 *  - FLOAT16/BFLOAT16 are computed in float and rounded to nearest even after
 *    each operation;
 *  - floating MIN/MAX propagate NaN: with src[i] NaN the result is src[i], else
 *    with dst[i] NaN it is dst[i] (quieted for the 16-bit types); on equal
 *    inputs (+0 and -0) dst[i] is kept.
 * Any alignment works. dst and src must not partially overlap (dst == src is
 * fine). An unsupported (dtype, op) leaves dst untouched: check
 * dc_reduce_supported first. Every ISA gives bit-identical results, except the
 * payload of a NaN result of SUM/PROD when both inputs are NaN. */
void dc_reduce(void *dst, const void *src, size_t n, dcomm_dtype_t dtype, dcomm_op_t op);

/* dst[i] = a[i] op b[i]: reduce while copying. dst may equal a or b (not a
 * partial overlap). Same semantics as dc_reduce with a in the role of dst. */
void dc_reduce3(void *dst, const void *a, const void *b, size_t n, dcomm_dtype_t dtype,
                dcomm_op_t op);

/* buf[i] *= factor for floating dtypes (for AVG: factor = 1/size): the exact
 * product is rounded once, to nearest even, to the dtype (no double rounding
 * through float or double). Integer dtypes are left untouched. */
void dc_reduce_scale(void *buf, size_t n, dcomm_dtype_t dtype, double factor);

/* IEEE binary16 <-> float, round to nearest even; inf, NaN (quieted, payload
 * kept/truncated as x86 F16C does) and subnormals handled. */
float dc_half_to_float(uint16_t h);
uint16_t dc_float_to_half(float f);

/* bfloat16 <-> float, round to nearest even; a NaN stays NaN (quieted). */
float dc_bf16_to_float(uint16_t h);
uint16_t dc_float_to_bf16(float f);

/* What dispatch chose: "avx512", "avx2" or "scalar". The default is the best
 * level this CPU and build support; dcomm_init sets the level that
 * dc_reduce_isa_choose gives for DCOMM_REDUCE_ISA (a level above what is
 * supported, or an unknown value, is ignored). */
const char *dc_reduce_isa(void);

/* Forces the level ("scalar", "avx2", "avx512"), or NULL to go back to the
 * default (dcomm_init, tests and benchmarks). Returns 0, or -1 when the name is unknown or
 * this CPU/build cannot run it (nothing changes then). Not meant to race with
 * reductions in flight: those finish on either level. */
int dc_reduce_set_isa(const char *isa);

/* The level the default selection gives for a DCOMM_REDUCE_ISA value (NULL:
 * unset) on this CPU and build; exposed so tests can check the policy. */
const char *dc_reduce_isa_choose(const char *requested);

#ifdef __cplusplus
}
#endif

#endif /* DC_REDUCE_H */
