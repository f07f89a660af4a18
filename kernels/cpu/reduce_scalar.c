/*
 * Portable reduction kernels: the fallback on any CPU, the tail handler of the
 * SIMD kernels, and the definition of the semantics they all must match.
 */
#include "reduce_impl.h"

/* Integer SUM/PROD go through the unsigned type: wrap-around, no signed overflow. */
static inline uint8_t u8_sum(uint8_t a, uint8_t b) { return (uint8_t)(a + b); }
static inline uint8_t u8_prod(uint8_t a, uint8_t b) { return (uint8_t)((unsigned)a * b); }
static inline uint8_t u8_min(uint8_t a, uint8_t b) { return b < a ? b : a; }
static inline uint8_t u8_max(uint8_t a, uint8_t b) { return b > a ? b : a; }

static inline int8_t i8_sum(int8_t a, int8_t b) { return (int8_t)u8_sum((uint8_t)a, (uint8_t)b); }
static inline int8_t i8_prod(int8_t a, int8_t b) { return (int8_t)u8_prod((uint8_t)a, (uint8_t)b); }
static inline int8_t i8_min(int8_t a, int8_t b) { return b < a ? b : a; }
static inline int8_t i8_max(int8_t a, int8_t b) { return b > a ? b : a; }

static inline int32_t i32_sum(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static inline int32_t i32_prod(int32_t a, int32_t b) { return (int32_t)((uint32_t)a * (uint32_t)b); }
static inline int32_t i32_min(int32_t a, int32_t b) { return b < a ? b : a; }
static inline int32_t i32_max(int32_t a, int32_t b) { return b > a ? b : a; }

static inline int64_t i64_sum(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t i64_prod(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }
static inline int64_t i64_min(int64_t a, int64_t b) { return b < a ? b : a; }
static inline int64_t i64_max(int64_t a, int64_t b) { return b > a ? b : a; }

static inline float f32_sum(float a, float b) { return a + b; }
static inline float f32_prod(float a, float b) { return a * b; }
static inline float f32_min(float a, float b) { return dc_fmin_f32(a, b); }
static inline float f32_max(float a, float b) { return dc_fmax_f32(a, b); }

static inline double f64_sum(double a, double b) { return a + b; }
static inline double f64_prod(double a, double b) { return a * b; }
static inline double f64_min(double a, double b) { return dc_fmin_f64(a, b); }
static inline double f64_max(double a, double b) { return dc_fmax_f64(a, b); }

/* 16-bit floats: widen, operate in float, round back once. */
#define HALF_LIKE_OPS(prefix, to_float, from_float)                                        \
    static inline uint16_t prefix##_sum(uint16_t a, uint16_t b)                            \
    {                                                                                      \
        return from_float(to_float(a) + to_float(b));                                      \
    }                                                                                      \
    static inline uint16_t prefix##_prod(uint16_t a, uint16_t b)                           \
    {                                                                                      \
        return from_float(to_float(a) * to_float(b));                                      \
    }                                                                                      \
    static inline uint16_t prefix##_min(uint16_t a, uint16_t b)                            \
    {                                                                                      \
        return from_float(dc_fmin_f32(to_float(a), to_float(b)));                          \
    }                                                                                      \
    static inline uint16_t prefix##_max(uint16_t a, uint16_t b)                            \
    {                                                                                      \
        return from_float(dc_fmax_f32(to_float(a), to_float(b)));                          \
    }

HALF_LIKE_OPS(f16, dc_half_to_float_inl, dc_float_to_half_inl)
HALF_LIKE_OPS(bf16, dc_bf16_to_float_inl, dc_float_to_bf16_inl)

/* Loads and stores go through memcpy: buffers need not be aligned to the type. */
#define SCALAR_KERNEL(name, type, elem_op)                                                 \
    static void name(void *dst, const void *a, const void *b, size_t n)                    \
    {                                                                                      \
        unsigned char *pd       = dst;                                                     \
        const unsigned char *pa = a;                                                       \
        const unsigned char *pb = b;                                                       \
        type x, y, r;                                                                      \
                                                                                           \
        for (size_t i = 0; i < n; i++) {                                                   \
            memcpy(&x, pa + i * sizeof(type), sizeof(type));                               \
            memcpy(&y, pb + i * sizeof(type), sizeof(type));                               \
            r = elem_op(x, y);                                                             \
            memcpy(pd + i * sizeof(type), &r, sizeof(type));                               \
        }                                                                                  \
    }

#define SCALAR_KERNELS(prefix, type)                                                       \
    SCALAR_KERNEL(prefix##_sum_k, type, prefix##_sum)                                      \
    SCALAR_KERNEL(prefix##_prod_k, type, prefix##_prod)                                    \
    SCALAR_KERNEL(prefix##_min_k, type, prefix##_min)                                      \
    SCALAR_KERNEL(prefix##_max_k, type, prefix##_max)

SCALAR_KERNELS(u8, uint8_t)
SCALAR_KERNELS(i8, int8_t)
SCALAR_KERNELS(i32, int32_t)
SCALAR_KERNELS(i64, int64_t)
SCALAR_KERNELS(f32, float)
SCALAR_KERNELS(f64, double)
SCALAR_KERNELS(f16, uint16_t)
SCALAR_KERNELS(bf16, uint16_t)

const dc_reduce_table_t dc_reduce_table_scalar = {
    .name = "scalar",
    .fn   = {
        [DCOMM_UINT8]    = DC_REDUCE_ROW_INT(u8),
        [DCOMM_INT8]     = DC_REDUCE_ROW_INT(i8),
        [DCOMM_INT32]    = DC_REDUCE_ROW_INT(i32),
        [DCOMM_INT64]    = DC_REDUCE_ROW_INT(i64),
        [DCOMM_FLOAT16]  = DC_REDUCE_ROW_FLOAT(f16),
        [DCOMM_BFLOAT16] = DC_REDUCE_ROW_FLOAT(bf16),
        [DCOMM_FLOAT32]  = DC_REDUCE_ROW_FLOAT(f32),
        [DCOMM_FLOAT64]  = DC_REDUCE_ROW_FLOAT(f64),
    },
};
