/* Inputs, references and checks shared by the collective matrix tests. Inputs
 * are small integers so SUM/PROD/MIN/MAX are exact in every dtype; AVG allows
 * one rounding of the final scaling. */
#ifndef MATRIX_UTIL_H
#define MATRIX_UTIL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dc_reduce.h"
#include "rank_util.h"

static const char *const dtype_names[] = {"uint8", "int8",     "int32",   "int64",
                                          "float16", "bfloat16", "float32", "float64"};
static const char *const op_names[] = {"sum", "avg", "min", "max", "prod"};

/* Input of rank r at element i, as a double; PROD gets values of magnitude <= 2. */
static inline double input(int r, size_t i, dcomm_dtype_t dt, dcomm_op_t op)
{
    long v = (long)((i * 7 + (size_t)r * 13 + (i >> 5)) % 11);

    if (op == DCOMM_PROD) {
        static const int pv[] = {1, 2, -1, 1, -2, 1, 2, 1, -1, 1, 2};
        v = pv[v];
        return dt == DCOMM_UINT8 ? (double)(v < 0 ? 3 : v) : (double)v;
    }
    return dt == DCOMM_UINT8 ? (double)v : (double)(v - 5);
}

static inline void store(void *buf, size_t i, dcomm_dtype_t dt, double v)
{
    switch (dt) {
    case DCOMM_UINT8: ((uint8_t *)buf)[i] = (uint8_t)(int)v; break;
    case DCOMM_INT8: ((int8_t *)buf)[i] = (int8_t)(int)v; break;
    case DCOMM_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case DCOMM_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case DCOMM_FLOAT16: ((uint16_t *)buf)[i] = dc_float_to_half((float)v); break;
    case DCOMM_BFLOAT16: ((uint16_t *)buf)[i] = dc_float_to_bf16((float)v); break;
    case DCOMM_FLOAT32: ((float *)buf)[i] = (float)v; break;
    default: ((double *)buf)[i] = v; break;
    }
}

static inline double load(const void *buf, size_t i, dcomm_dtype_t dt)
{
    switch (dt) {
    case DCOMM_UINT8: return ((const uint8_t *)buf)[i];
    case DCOMM_INT8: return ((const int8_t *)buf)[i];
    case DCOMM_INT32: return ((const int32_t *)buf)[i];
    case DCOMM_INT64: return (double)((const int64_t *)buf)[i];
    case DCOMM_FLOAT16: return dc_half_to_float(((const uint16_t *)buf)[i]);
    case DCOMM_BFLOAT16: return dc_bf16_to_float(((const uint16_t *)buf)[i]);
    case DCOMM_FLOAT32: return ((const float *)buf)[i];
    default: return ((const double *)buf)[i];
    }
}

/* Reference with the dtype's own wrap-around for integers. */
static inline double reference(int size, size_t i, dcomm_dtype_t dt, dcomm_op_t op)
{
    double acc = input(0, i, dt, op);

    for (int r = 1; r < size; r++) {
        double v = input(r, i, dt, op);

        switch (op) {
        case DCOMM_MIN: acc = v < acc ? v : acc; break;
        case DCOMM_MAX: acc = v > acc ? v : acc; break;
        case DCOMM_PROD: acc *= v; break;
        default: acc += v; break;
        }
    }
    if (op == DCOMM_AVG) {
        acc /= size;
    }
    /* Integers wrap: store/load through the dtype gives the wrapped value. */
    if (dt == DCOMM_UINT8) {
        return (double)(uint8_t)(int)acc;
    }
    if (dt == DCOMM_INT8) {
        return (double)(int8_t)(int)acc;
    }
    return acc;
}

static inline double tolerance(dcomm_dtype_t dt, dcomm_op_t op, double ref)
{
    static const double eps[] = {0, 0, 0, 0, 1.0 / 1024, 1.0 / 128, 1.0 / (1 << 23),
                                 1.0 / (1ull << 52)};

    return op == DCOMM_AVG ? fabs(ref) * eps[dt] + 1e-30 : 0.0;
}

static inline uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

#endif
