/*
 * Private to the reduction kernels: the per-ISA kernel tables, and the scalar
 * element operations every ISA must reproduce bit for bit.
 */
#ifndef DC_REDUCE_IMPL_H
#define DC_REDUCE_IMPL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dc_half.h"
#include "dc_reduce.h"

/* dst[i] = a[i] op b[i]; dst may equal a or b. */
typedef void (*dc_reduce_fn_t)(void *dst, const void *a, const void *b, size_t n);

typedef struct dc_reduce_table {
    const char *name;
    /* Indexed [dtype][op]; NULL where (dtype, op) is unsupported. AVG rows point
     * at the SUM kernels. */
    dc_reduce_fn_t fn[DCOMM_DTYPE_COUNT][DCOMM_OP_COUNT];
} dc_reduce_table_t;

extern const dc_reduce_table_t dc_reduce_table_scalar;
#if defined(DC_REDUCE_BUILD_AVX2)
extern const dc_reduce_table_t dc_reduce_table_avx2;
#endif
#if defined(DC_REDUCE_BUILD_AVX512)
extern const dc_reduce_table_t dc_reduce_table_avx512;
#endif

/* Table rows, for kernels named <p>_sum_k, <p>_min_k, ...; AVG shares SUM's. */
#define DC_REDUCE_ROW_INT(p)                                                               \
    {                                                                                      \
        [DCOMM_SUM] = p##_sum_k, [DCOMM_MIN] = p##_min_k, [DCOMM_MAX] = p##_max_k,         \
        [DCOMM_PROD] = p##_prod_k                                                          \
    }
#define DC_REDUCE_ROW_FLOAT(p)                                                             \
    {                                                                                      \
        [DCOMM_SUM] = p##_sum_k, [DCOMM_AVG] = p##_sum_k, [DCOMM_MIN] = p##_min_k,         \
        [DCOMM_MAX] = p##_max_k, [DCOMM_PROD] = p##_prod_k                                 \
    }

/* Floating MIN/MAX: b's NaN wins, then a's; on a tie a is kept. This is exactly
 * what x86 (v)minps(b, a) followed by "take b where b is NaN" computes. */
static inline float dc_fmin_f32(float a, float b)
{
    return isnan(b) ? b : (b < a ? b : a);
}

static inline float dc_fmax_f32(float a, float b)
{
    return isnan(b) ? b : (b > a ? b : a);
}

static inline double dc_fmin_f64(double a, double b)
{
    return isnan(b) ? b : (b < a ? b : a);
}

static inline double dc_fmax_f64(double a, double b)
{
    return isnan(b) ? b : (b > a ? b : a);
}

#endif /* DC_REDUCE_IMPL_H */
