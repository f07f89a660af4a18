/*
 * AVX-512 (F + BW) reduction kernels. Built with -mavx512f -mavx512bw and only
 * called after the CPU check in reduce_dispatch.c; tails go to the scalar kernels.
 */
#include "reduce_impl.h"

#if defined(DC_REDUCE_BUILD_AVX512)
#include <immintrin.h>

/* ---- element-wise vector operations --------------------------------------- */

/* 8-bit multiply, wrapping: even and odd bytes as 16-bit lanes. */
static inline __m512i mul_epi8(__m512i a, __m512i b)
{
    __m512i even = _mm512_mullo_epi16(a, b);
    __m512i odd  = _mm512_mullo_epi16(_mm512_srli_epi16(a, 8), _mm512_srli_epi16(b, 8));

    return _mm512_or_si512(_mm512_and_si512(even, _mm512_set1_epi16(0x00ff)),
                           _mm512_slli_epi16(odd, 8));
}

/* 64-bit multiply without AVX512DQ: lo*lo + ((hi*lo + lo*hi) << 32). */
static inline __m512i mul_epi64(__m512i a, __m512i b)
{
    __m512i lo    = _mm512_mul_epu32(a, b);
    __m512i cross = _mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64(a, 32), b),
                                     _mm512_mul_epu32(a, _mm512_srli_epi64(b, 32)));

    return _mm512_add_epi64(lo, _mm512_slli_epi64(cross, 32));
}

/* vminps(b, a) = b < a ? b : a; then b's NaN wins: see dc_fmin_f32. */
static inline __m512 min_ps(__m512 a, __m512 b)
{
    return _mm512_mask_mov_ps(_mm512_min_ps(b, a), _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), b);
}

static inline __m512 max_ps(__m512 a, __m512 b)
{
    return _mm512_mask_mov_ps(_mm512_max_ps(b, a), _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), b);
}

static inline __m512d min_pd(__m512d a, __m512d b)
{
    return _mm512_mask_mov_pd(_mm512_min_pd(b, a), _mm512_cmp_pd_mask(b, b, _CMP_UNORD_Q), b);
}

static inline __m512d max_pd(__m512d a, __m512d b)
{
    return _mm512_mask_mov_pd(_mm512_max_pd(b, a), _mm512_cmp_pd_mask(b, b, _CMP_UNORD_Q), b);
}

/* ---- loads and stores (unaligned) -------------------------------------------- */

#define LD_I(p)       _mm512_loadu_si512((const void *)(p))
#define ST_I(p, v)    _mm512_storeu_si512((void *)(p), (v))
#define LD_PS(p)      _mm512_loadu_ps((const void *)(p))
#define ST_PS(p, v)   _mm512_storeu_ps((void *)(p), (v))
#define LD_PD(p)      _mm512_loadu_pd((const void *)(p))
#define ST_PD(p, v)   _mm512_storeu_pd((void *)(p), (v))
#define LD_F16(p)     _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define ST_F16(p, v)                                                                       \
    _mm256_storeu_si256((__m256i *)(p), _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))

/* bfloat16 is the top half of a float: interleaving zeros below each element
 * widens 32 of them into two float vectors (unpack works per 128-bit lane, and
 * so does the pack on the way back: the element order comes out unchanged). */
static inline __m512i bf16_round(__m512 v)
{
    /* same rounding as dc_float_to_bf16; the result is in the low 16 bits */
    __m512i bits    = _mm512_castps_si512(v);
    __m512i hi      = _mm512_srli_epi32(bits, 16);
    __m512i lsb     = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb), 16);
    __m512i quiet = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));

    return _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), quiet);
}

#define BF16X32(x, y, vop)                                                                 \
    _mm512_packus_epi32(                                                                   \
        bf16_round(vop(_mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), x)), \
                       _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), y)))), \
        bf16_round(vop(_mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), x)), \
                       _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), y)))))

static inline __m512i bf16_sum(__m512i x, __m512i y) { return BF16X32(x, y, _mm512_add_ps); }
static inline __m512i bf16_prod(__m512i x, __m512i y) { return BF16X32(x, y, _mm512_mul_ps); }
static inline __m512i bf16_min(__m512i x, __m512i y) { return BF16X32(x, y, min_ps); }
static inline __m512i bf16_max(__m512i x, __m512i y) { return BF16X32(x, y, max_ps); }

/* ---- kernels ----------------------------------------------------------------- */

/* Two vectors per iteration, then one, then the scalar kernel for the tail. All
 * loads of an iteration happen before its stores, so dst may equal a or b. */
#define AVX512_KERNEL(name, type, dtype, op, vtype, width, LOAD, STORE, vop)               \
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
    AVX512_KERNEL(p##_sum_k, type, dtype, DCOMM_SUM, __m512i, width, LD_I, ST_I, vsum)     \
    AVX512_KERNEL(p##_prod_k, type, dtype, DCOMM_PROD, __m512i, width, LD_I, ST_I, vprod)  \
    AVX512_KERNEL(p##_min_k, type, dtype, DCOMM_MIN, __m512i, width, LD_I, ST_I, vmin)     \
    AVX512_KERNEL(p##_max_k, type, dtype, DCOMM_MAX, __m512i, width, LD_I, ST_I, vmax)

#define FLOAT_KERNELS(p, type, dtype, vtype, width, LOAD, STORE, vsum, vprod, vmin, vmax)  \
    AVX512_KERNEL(p##_sum_k, type, dtype, DCOMM_SUM, vtype, width, LOAD, STORE, vsum)      \
    AVX512_KERNEL(p##_prod_k, type, dtype, DCOMM_PROD, vtype, width, LOAD, STORE, vprod)   \
    AVX512_KERNEL(p##_min_k, type, dtype, DCOMM_MIN, vtype, width, LOAD, STORE, vmin)      \
    AVX512_KERNEL(p##_max_k, type, dtype, DCOMM_MAX, vtype, width, LOAD, STORE, vmax)

INT_KERNELS(u8, uint8_t, DCOMM_UINT8, 64, _mm512_add_epi8, mul_epi8, _mm512_min_epu8,
            _mm512_max_epu8)
INT_KERNELS(i8, int8_t, DCOMM_INT8, 64, _mm512_add_epi8, mul_epi8, _mm512_min_epi8,
            _mm512_max_epi8)
INT_KERNELS(i32, int32_t, DCOMM_INT32, 16, _mm512_add_epi32, _mm512_mullo_epi32,
            _mm512_min_epi32, _mm512_max_epi32)
INT_KERNELS(i64, int64_t, DCOMM_INT64, 8, _mm512_add_epi64, mul_epi64, _mm512_min_epi64,
            _mm512_max_epi64)
FLOAT_KERNELS(f32, float, DCOMM_FLOAT32, __m512, 16, LD_PS, ST_PS, _mm512_add_ps,
              _mm512_mul_ps, min_ps, max_ps)
FLOAT_KERNELS(f64, double, DCOMM_FLOAT64, __m512d, 8, LD_PD, ST_PD, _mm512_add_pd,
              _mm512_mul_pd, min_pd, max_pd)
FLOAT_KERNELS(f16, uint16_t, DCOMM_FLOAT16, __m512, 16, LD_F16, ST_F16, _mm512_add_ps,
              _mm512_mul_ps, min_ps, max_ps)
FLOAT_KERNELS(bf16, uint16_t, DCOMM_BFLOAT16, __m512i, 32, LD_I, ST_I, bf16_sum, bf16_prod,
              bf16_min, bf16_max)

const dc_reduce_table_t dc_reduce_table_avx512 = {
    .name = "avx512",
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
/* Not an x86 build with AVX-512 support: nothing here (ISO C wants a declaration). */
typedef int dc_reduce_avx512_unused_t;
#endif
