/*
 * AVX2 (+F16C) reduction kernels. Built with -mavx2 -mf16c and only called
 * after the CPU check in reduce_dispatch.c; tails go to the scalar kernels.
 */
#include "reduce_impl.h"

#if defined(DC_REDUCE_BUILD_AVX2)
#include <immintrin.h>

/* ---- element-wise vector operations --------------------------------------- */

/* 8-bit multiply, wrapping: x86 has none, so multiply even and odd bytes as
 * 16-bit lanes (the low byte of a product only depends on the low bytes). */
static inline __m256i mul_epi8(__m256i a, __m256i b)
{
    __m256i even = _mm256_mullo_epi16(a, b);
    __m256i odd  = _mm256_mullo_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8));

    return _mm256_or_si256(_mm256_and_si256(even, _mm256_set1_epi16(0x00ff)),
                           _mm256_slli_epi16(odd, 8));
}

/* 64-bit multiply, wrapping: lo*lo + ((hi*lo + lo*hi) << 32). */
static inline __m256i mul_epi64(__m256i a, __m256i b)
{
    __m256i lo    = _mm256_mul_epu32(a, b);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                     _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));

    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}

static inline __m256i min_epi64(__m256i a, __m256i b)
{
    return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b));
}

static inline __m256i max_epi64(__m256i a, __m256i b)
{
    return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(b, a));
}

/* (v)minps(b, a) = b < a ? b : a; then b's NaN wins: see dc_fmin_f32. */
static inline __m256 min_ps(__m256 a, __m256 b)
{
    return _mm256_blendv_ps(_mm256_min_ps(b, a), b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
}

static inline __m256 max_ps(__m256 a, __m256 b)
{
    return _mm256_blendv_ps(_mm256_max_ps(b, a), b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
}

static inline __m256d min_pd(__m256d a, __m256d b)
{
    return _mm256_blendv_pd(_mm256_min_pd(b, a), b, _mm256_cmp_pd(b, b, _CMP_UNORD_Q));
}

static inline __m256d max_pd(__m256d a, __m256d b)
{
    return _mm256_blendv_pd(_mm256_max_pd(b, a), b, _mm256_cmp_pd(b, b, _CMP_UNORD_Q));
}

/* ---- loads and stores (unaligned) -------------------------------------------- */

#define LD_I(p)      _mm256_loadu_si256((const __m256i *)(p))
#define ST_I(p, v)   _mm256_storeu_si256((__m256i *)(p), (v))
#define LD_PS(p)     _mm256_loadu_ps((const float *)(p))
#define ST_PS(p, v)  _mm256_storeu_ps((float *)(p), (v))
#define LD_PD(p)     _mm256_loadu_pd((const double *)(p))
#define ST_PD(p, v)  _mm256_storeu_pd((double *)(p), (v))
#define LD_F16(p)    _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define ST_F16(p, v) _mm_storeu_si128((__m128i *)(p), _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))

/* bfloat16 is the top half of a float: interleaving zeros below each element
 * widens 16 of them into two float vectors (unpack works per 128-bit lane, and
 * so does the pack on the way back: the element order comes out unchanged). */
static inline __m256i bf16_round(__m256 v)
{
    /* same rounding as dc_float_to_bf16; the result is in the low 16 bits */
    __m256i bits    = _mm256_castps_si256(v);
    __m256i hi      = _mm256_srli_epi32(bits, 16);
    __m256i lsb     = _mm256_and_si256(hi, _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), lsb), 16);
    __m256i quiet  = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));

    return _mm256_blendv_epi8(rounded, quiet, is_nan);
}

#define BF16X16(x, y, vop)                                                                 \
    _mm256_packus_epi32(                                                                   \
        bf16_round(vop(_mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), x)), \
                       _mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), y)))), \
        bf16_round(vop(_mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), x)), \
                       _mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), y)))))

static inline __m256i bf16_sum(__m256i x, __m256i y) { return BF16X16(x, y, _mm256_add_ps); }
static inline __m256i bf16_prod(__m256i x, __m256i y) { return BF16X16(x, y, _mm256_mul_ps); }
static inline __m256i bf16_min(__m256i x, __m256i y) { return BF16X16(x, y, min_ps); }
static inline __m256i bf16_max(__m256i x, __m256i y) { return BF16X16(x, y, max_ps); }

/* ---- kernels ----------------------------------------------------------------- */

/* Two vectors per iteration, then one, then the scalar kernel for the tail. All
 * loads of an iteration happen before its stores, so dst may equal a or b. */
#define AVX2_KERNEL(name, type, dtype, op, vtype, width, LOAD, STORE, vop)                 \
    static void name(void *dst, const void *a, const void *b, size_t n)                    \
    {                                                                                      \
        unsigned char *pd       = dst;                                                     \
        const unsigned char *pa = a;                                                       \
        const unsigned char *pb = b;                                                       \
        const size_t w          = (width);                                                 \
        size_t i                = 0;                                                       \
                                                                                           \
        for (; i + 2 * w <= n; i += 2 * w) {                                               \
            vtype x0 = LOAD(pa + i * sizeof(type));                                        \
            vtype y0 = LOAD(pb + i * sizeof(type));                                        \
            vtype x1 = LOAD(pa + (i + w) * sizeof(type));                                  \
            vtype y1 = LOAD(pb + (i + w) * sizeof(type));                                  \
            STORE(pd + i * sizeof(type), vop(x0, y0));                                     \
            STORE(pd + (i + w) * sizeof(type), vop(x1, y1));                               \
        }                                                                                  \
        for (; i + w <= n; i += w) {                                                       \
            vtype x0 = LOAD(pa + i * sizeof(type));                                        \
            vtype y0 = LOAD(pb + i * sizeof(type));                                        \
            STORE(pd + i * sizeof(type), vop(x0, y0));                                     \
        }                                                                                  \
        if (i < n) {                                                                       \
            dc_reduce_table_scalar.fn[dtype][op](pd + i * sizeof(type),                    \
                                                 pa + i * sizeof(type),                    \
                                                 pb + i * sizeof(type), n - i);            \
        }                                                                                  \
    }

#define INT_KERNELS(p, type, dtype, width, vsum, vprod, vmin, vmax)                        \
    AVX2_KERNEL(p##_sum_k, type, dtype, DCOMM_SUM, __m256i, width, LD_I, ST_I, vsum)       \
    AVX2_KERNEL(p##_prod_k, type, dtype, DCOMM_PROD, __m256i, width, LD_I, ST_I, vprod)    \
    AVX2_KERNEL(p##_min_k, type, dtype, DCOMM_MIN, __m256i, width, LD_I, ST_I, vmin)       \
    AVX2_KERNEL(p##_max_k, type, dtype, DCOMM_MAX, __m256i, width, LD_I, ST_I, vmax)

#define FLOAT_KERNELS(p, type, dtype, vtype, width, LOAD, STORE, vsum, vprod, vmin, vmax)  \
    AVX2_KERNEL(p##_sum_k, type, dtype, DCOMM_SUM, vtype, width, LOAD, STORE, vsum)        \
    AVX2_KERNEL(p##_prod_k, type, dtype, DCOMM_PROD, vtype, width, LOAD, STORE, vprod)     \
    AVX2_KERNEL(p##_min_k, type, dtype, DCOMM_MIN, vtype, width, LOAD, STORE, vmin)        \
    AVX2_KERNEL(p##_max_k, type, dtype, DCOMM_MAX, vtype, width, LOAD, STORE, vmax)

INT_KERNELS(u8, uint8_t, DCOMM_UINT8, 32, _mm256_add_epi8, mul_epi8, _mm256_min_epu8,
            _mm256_max_epu8)
INT_KERNELS(i8, int8_t, DCOMM_INT8, 32, _mm256_add_epi8, mul_epi8, _mm256_min_epi8,
            _mm256_max_epi8)
INT_KERNELS(i32, int32_t, DCOMM_INT32, 8, _mm256_add_epi32, _mm256_mullo_epi32,
            _mm256_min_epi32, _mm256_max_epi32)
INT_KERNELS(i64, int64_t, DCOMM_INT64, 4, _mm256_add_epi64, mul_epi64, min_epi64, max_epi64)
FLOAT_KERNELS(f32, float, DCOMM_FLOAT32, __m256, 8, LD_PS, ST_PS, _mm256_add_ps, _mm256_mul_ps,
              min_ps, max_ps)
FLOAT_KERNELS(f64, double, DCOMM_FLOAT64, __m256d, 4, LD_PD, ST_PD, _mm256_add_pd,
              _mm256_mul_pd, min_pd, max_pd)
FLOAT_KERNELS(f16, uint16_t, DCOMM_FLOAT16, __m256, 8, LD_F16, ST_F16, _mm256_add_ps,
              _mm256_mul_ps, min_ps, max_ps)
FLOAT_KERNELS(bf16, uint16_t, DCOMM_BFLOAT16, __m256i, 16, LD_I, ST_I, bf16_sum, bf16_prod,
              bf16_min, bf16_max)

const dc_reduce_table_t dc_reduce_table_avx2 = {
    .name = "avx2",
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

#else
/* Not an x86 build with AVX2 support: nothing here (ISO C wants a declaration). */
typedef int dc_reduce_avx2_unused_t;
#endif
