/*
 * References for the reduction kernels' tests (test_kernels*.c; not a test
 * itself), written from the format definitions and the spec, not from the
 * kernels: bit casts, fp16/bf16 conversions rounded by bisection, one
 * element's reduction, and test data rich in special values.
 */
#ifndef KERNELS_REF_H
#define KERNELS_REF_H

#include <stddef.h>
#include <stdint.h>

#include "dc_reduce.h"

/* xorshift64*: deterministic, so a failure reproduces */
uint64_t rng_next(void);
uint32_t f32_bits(float f);
float f32_of(uint32_t u);
uint64_t f64_bits(double d);
double f64_of(uint64_t u);
int is_float_dtype(dcomm_dtype_t dt);

/* Magnitude of a non-negative half code; 0x7c00 gives 65536, the value the next
 * binade would start at, which is where rounding to inf begins. */
double half_code_value(unsigned code);
/* Same for bfloat16: 0x7f80 gives 2^128. */
double bf16_code_value(unsigned code);
/* Round mag >= 0 to the nearest code in [0, inf_code], ties to the even code,
 * by bisection over the (monotone) code values. */
unsigned round_search(double mag, double (*value)(unsigned), unsigned inf_code);
#ifdef __SIZEOF_FLOAT128__
unsigned round_search_q(__float128 mag, double (*value)(unsigned), unsigned inf_code);
#endif
float ref_half_to_float(uint16_t h);
uint16_t ref_float_to_half(float f);
float ref_bf16_to_float(uint16_t h);
uint16_t ref_float_to_bf16(float f);

/* out = a op b for one element; *both_nan set when a SUM/PROD of two NaNs,
 * whose payload the spec leaves open. */
void ref_elem(dcomm_dtype_t dt, dcomm_op_t op, const unsigned char *a, const unsigned char *b,
              unsigned char *out, int *both_nan);
int elem_is_nan(dcomm_dtype_t dt, const unsigned char *p);

/* Fills n elements: a third specials, a third random bits, a third values of
 * moderate magnitude (so sums land on rounding ties and do not just saturate). */
void fill_random(dcomm_dtype_t dt, unsigned char *p, size_t n);

#endif
