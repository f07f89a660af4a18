/* One image of the direct convolution (nn_direct.c): the output, or one kernel
 * row of the weight gradient, in register tiles.
 *
 * The AVX2+FMA register tiles:
 *   forward / input gradient: up to 14 output pixels of a row x 8 channels
 *     (14 accumulators, one weight vector, one broadcast: the 16 ymm registers);
 *   weight gradient: 6 consecutive (kw, c) patch elements x 16 output channels
 *     (12 accumulators), summed over the image's pixels.
 * AVX-512 tiles are twice as wide. Machines without AVX2/FMA, and channel
 * counts that are not multiples of 8 (forward) or 16 (weight gradient), take
 * plain loops with the same structure; every sum runs in a fixed order. */
#include "nn.h"
#include "nn_direct.h"
#include "nn_internal.h"

enum { ROW_TILE = 14, WG_TILE = 6, WG_TILE512 = 10 };

static void conv_image_plain(const geom_t *g, const float *xp, const float *wt, const float *b,
                             float *y)
{
    const int kc = g->kc;

    for (int oh = 0; oh < g->oh; oh++) {
        for (int ow = 0; ow < g->ow; ow++) {
            float *yo = y + ((size_t)oh * g->ow + ow) * g->oc;
            for (int o = 0; o < g->oc; o++) {
                yo[o] = b != NULL ? b[o] : 0.0f;
            }
            for (int kh = 0; kh < g->k; kh++) {
                const float *xr = xp + (size_t)(oh + kh) * g->xrow + (size_t)ow * g->c;
                const float *wr = wt + (size_t)kh * kc * g->oc;
                for (int q = 0; q < kc; q++) {
                    for (int o = 0; o < g->oc; o++) {
                        yo[o] += xr[q] * wr[(size_t)q * g->oc + o];
                    }
                }
            }
        }
    }
}

#ifdef NN_X86

/* nb pixels of one output row x 8 channels; nb and c are constants after
 * inlining, so each broadcast is one load at a fixed offset from xq. */
AVX2_INLINE void fwd_tile(int nb, int c, const geom_t *g, const float *x, const float *wt,
                          __m256 bias, float *y)
{
    const int kc = g->kc;
    const size_t oc = (size_t)g->oc;
    __m256 acc[ROW_TILE];

    for (int j = 0; j < nb; j++) {
        acc[j] = bias;
    }
    for (int kh = 0; kh < g->k; kh++) {
        const float *xq = x + (size_t)kh * g->xrow, *wq = wt + (size_t)kh * kc * oc;
        for (int q = 0; q < kc; q++, xq++, wq += oc) {
            __m256 wv = _mm256_loadu_ps(wq);
            for (int j = 0; j < nb; j++) {
                acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(xq + j * c), wv, acc[j]);
            }
        }
    }
    for (int j = 0; j < nb; j++) {
        _mm256_storeu_ps(y + (size_t)j * oc, acc[j]);
    }
}

AVX2_INLINE void conv_image_tiles(int c, const geom_t *g, const float *xp, const float *wt,
                                  const float *b, float *y)
{
    for (int o = 0; o < g->oc; o += 8) {
        __m256 bias = b != NULL ? _mm256_loadu_ps(b + o) : _mm256_setzero_ps();
        for (int oh = 0; oh < g->oh; oh++) {
            const float *xr = xp + (size_t)oh * g->xrow;
            float *yr = y + (size_t)oh * g->ow * g->oc + o;
            int ow = 0;
            for (; ow + ROW_TILE <= g->ow; ow += ROW_TILE) {
                fwd_tile(ROW_TILE, c, g, xr + (size_t)ow * c, wt + o, bias, yr + (size_t)ow * g->oc);
            }
            for (; ow + 4 <= g->ow; ow += 4) {
                fwd_tile(4, c, g, xr + (size_t)ow * c, wt + o, bias, yr + (size_t)ow * g->oc);
            }
            for (; ow < g->ow; ow++) {
                fwd_tile(1, c, g, xr + (size_t)ow * c, wt + o, bias, yr + (size_t)ow * g->oc);
            }
        }
    }
}

/* Specialised for dtrain's channel counts (1, 32, 64), generic otherwise. */
AVX2 static void conv_image_avx2(const geom_t *g, const float *xp, const float *wt, const float *b,
                                 float *y)
{
    switch (g->c) {
    case 1: conv_image_tiles(1, g, xp, wt, b, y); break;
    case 32: conv_image_tiles(32, g, xp, wt, b, y); break;
    case 64: conv_image_tiles(64, g, xp, wt, b, y); break;
    default: conv_image_tiles(g->c, g, xp, wt, b, y); break;
    }
}

/* acc[j] (16 channels as two vectors) += xp patch element q0 + j times dy, over
 * every output pixel of the image, for kernel row kh. */
AVX2_INLINE void wgrad_tile(int nq, const geom_t *g, const float *xp, const float *dy, int kh,
                            int q0, int o, float *dwt)
{
    const int kc = g->kc;
    float *d = dwt + ((size_t)kh * kc + q0) * g->oc + o;
    __m256 a0[WG_TILE], a1[WG_TILE];

    for (int j = 0; j < nq; j++) {
        a0[j] = _mm256_loadu_ps(d + (size_t)j * g->oc);
        a1[j] = _mm256_loadu_ps(d + (size_t)j * g->oc + 8);
    }
    for (int oh = 0; oh < g->oh; oh++) {
        const float *xr = xp + (size_t)(oh + kh) * g->xrow + q0;
        const float *dr = dy + (size_t)oh * g->ow * g->oc + o;
        for (int ow = 0; ow < g->ow; ow++) {
            __m256 d0 = _mm256_loadu_ps(dr + (size_t)ow * g->oc);
            __m256 d1 = _mm256_loadu_ps(dr + (size_t)ow * g->oc + 8);
            const float *xs = xr + (size_t)ow * g->c;
            for (int j = 0; j < nq; j++) {
                __m256 xv = _mm256_broadcast_ss(xs + j);
                a0[j] = _mm256_fmadd_ps(xv, d0, a0[j]);
                a1[j] = _mm256_fmadd_ps(xv, d1, a1[j]);
            }
        }
    }
    for (int j = 0; j < nq; j++) {
        _mm256_storeu_ps(d + (size_t)j * g->oc, a0[j]);
        _mm256_storeu_ps(d + (size_t)j * g->oc + 8, a1[j]);
    }
}

AVX2 static void wgrad_row_avx2(const geom_t *g, const float *xp, const float *dy, int kh, int o_lo,
                                int o_hi, float *dwt)
{
    const int kc = g->kc;

    for (int o = o_lo; o < o_hi; o += 16) {
        {
            int q = 0;
            for (; q + WG_TILE <= kc; q += WG_TILE) {
                wgrad_tile(WG_TILE, g, xp, dy, kh, q, o, dwt);
            }
            switch (kc - q) {
            case 5: wgrad_tile(5, g, xp, dy, kh, q, o, dwt); break;
            case 4: wgrad_tile(4, g, xp, dy, kh, q, o, dwt); break;
            case 3: wgrad_tile(3, g, xp, dy, kh, q, o, dwt); break;
            case 2: wgrad_tile(2, g, xp, dy, kh, q, o, dwt); break;
            case 1: wgrad_tile(1, g, xp, dy, kh, q, o, dwt); break;
            default: break;
            }
        }
    }
}

/* ---- AVX-512: the same tiles twice as wide (32 registers): 14 pixels x 32
 * channels forward, 10 patch elements x 32 channels for the weight gradient;
 * broadcasts fold into the FMAs. ---- */

AVX512_INLINE void fwd_tile32(int nb, int c, const geom_t *g, const float *x, const float *wt,
                              __m512 b0, __m512 b1, float *y)
{
    const int kc = g->kc;
    const size_t oc = (size_t)g->oc;
    __m512 a0[ROW_TILE], a1[ROW_TILE];

    for (int j = 0; j < nb; j++) {
        a0[j] = b0;
        a1[j] = b1;
    }
    for (int kh = 0; kh < g->k; kh++) {
        const float *xq = x + (size_t)kh * g->xrow, *wq = wt + (size_t)kh * kc * oc;
        for (int q = 0; q < kc; q++, xq++, wq += oc) {
            __m512 w0 = _mm512_loadu_ps(wq), w1 = _mm512_loadu_ps(wq + 16);
            for (int j = 0; j < nb; j++) {
                __m512 xv = _mm512_set1_ps(xq[j * c]);
                a0[j] = _mm512_fmadd_ps(xv, w0, a0[j]);
                a1[j] = _mm512_fmadd_ps(xv, w1, a1[j]);
            }
        }
    }
    for (int j = 0; j < nb; j++) {
        _mm512_storeu_ps(y + (size_t)j * oc, a0[j]);
        _mm512_storeu_ps(y + (size_t)j * oc + 16, a1[j]);
    }
}

AVX512_INLINE void conv_image_tiles32(int c, const geom_t *g, const float *xp, const float *wt,
                                      const float *b, float *y)
{
    for (int o = 0; o < g->oc; o += 32) {
        __m512 b0 = b != NULL ? _mm512_loadu_ps(b + o) : _mm512_setzero_ps();
        __m512 b1 = b != NULL ? _mm512_loadu_ps(b + o + 16) : _mm512_setzero_ps();
        for (int oh = 0; oh < g->oh; oh++) {
            const float *xr = xp + (size_t)oh * g->xrow;
            float *yr = y + (size_t)oh * g->ow * g->oc + o;
            int ow = 0;
            for (; ow + ROW_TILE <= g->ow; ow += ROW_TILE) {
                fwd_tile32(ROW_TILE, c, g, xr + (size_t)ow * c, wt + o, b0, b1,
                           yr + (size_t)ow * g->oc);
            }
            for (; ow + 7 <= g->ow; ow += 7) { /* remainders of 7 to 13 pixels */
                fwd_tile32(7, c, g, xr + (size_t)ow * c, wt + o, b0, b1, yr + (size_t)ow * g->oc);
            }
            for (; ow + 4 <= g->ow; ow += 4) {
                fwd_tile32(4, c, g, xr + (size_t)ow * c, wt + o, b0, b1, yr + (size_t)ow * g->oc);
            }
            for (; ow < g->ow; ow++) {
                fwd_tile32(1, c, g, xr + (size_t)ow * c, wt + o, b0, b1, yr + (size_t)ow * g->oc);
            }
        }
    }
}

AVX512 static void conv_image_avx512(const geom_t *g, const float *xp, const float *wt,
                                     const float *b, float *y)
{
    switch (g->c) {
    case 1: conv_image_tiles32(1, g, xp, wt, b, y); break;
    case 32: conv_image_tiles32(32, g, xp, wt, b, y); break;
    case 64: conv_image_tiles32(64, g, xp, wt, b, y); break;
    default: conv_image_tiles32(g->c, g, xp, wt, b, y); break;
    }
}

AVX512_INLINE void wgrad_tile32(int nq, const geom_t *g, const float *xp, const float *dy, int kh,
                                int q0, int o, float *dwt)
{
    const int kc = g->kc;
    float *d = dwt + ((size_t)kh * kc + q0) * g->oc + o;
    __m512 a0[WG_TILE512], a1[WG_TILE512];

    for (int j = 0; j < nq; j++) {
        a0[j] = _mm512_loadu_ps(d + (size_t)j * g->oc);
        a1[j] = _mm512_loadu_ps(d + (size_t)j * g->oc + 16);
    }
    for (int oh = 0; oh < g->oh; oh++) {
        const float *xr = xp + (size_t)(oh + kh) * g->xrow + q0;
        const float *dr = dy + (size_t)oh * g->ow * g->oc + o;
        for (int ow = 0; ow < g->ow; ow++) {
            __m512 d0 = _mm512_loadu_ps(dr + (size_t)ow * g->oc);
            __m512 d1 = _mm512_loadu_ps(dr + (size_t)ow * g->oc + 16);
            const float *xs = xr + (size_t)ow * g->c;
            for (int j = 0; j < nq; j++) {
                __m512 xv = _mm512_set1_ps(xs[j]);
                a0[j] = _mm512_fmadd_ps(xv, d0, a0[j]);
                a1[j] = _mm512_fmadd_ps(xv, d1, a1[j]);
            }
        }
    }
    for (int j = 0; j < nq; j++) {
        _mm512_storeu_ps(d + (size_t)j * g->oc, a0[j]);
        _mm512_storeu_ps(d + (size_t)j * g->oc + 16, a1[j]);
    }
}

AVX512 static void wgrad_row_avx512(const geom_t *g, const float *xp, const float *dy, int kh,
                                    int o_lo, int o_hi, float *dwt)
{
    const int kc = g->kc;

    for (int o = o_lo; o < o_hi; o += 32) {
        {
            int q = 0;
            if (kc % WG_TILE512 != 0 && kc % 8 == 0) { /* a Winograd plane's c = 32, 64 */
                for (; q < kc; q += 8) {
                    wgrad_tile32(8, g, xp, dy, kh, q, o, dwt);
                }
            }
            for (; q + WG_TILE512 <= kc; q += WG_TILE512) {
                wgrad_tile32(WG_TILE512, g, xp, dy, kh, q, o, dwt);
            }
            for (; q + 5 <= kc; q += 5) {
                wgrad_tile32(5, g, xp, dy, kh, q, o, dwt);
            }
            for (; q < kc; q++) {
                wgrad_tile32(1, g, xp, dy, kh, q, o, dwt);
            }
        }
    }
}

#endif

void nn_direct_conv_image(const geom_t *g, const float *xp, const float *wt, const float *b,
                          float *y)
{
#ifdef NN_X86
    if (nn_isa() >= NN_ISA_AVX512 && g->oc % 32 == 0) {
        conv_image_avx512(g, xp, wt, b, y);
        return;
    }
    if (nn_isa() >= NN_ISA_AVX2 && g->oc % 8 == 0) {
        conv_image_avx2(g, xp, wt, b, y);
        return;
    }
#endif
    conv_image_plain(g, xp, wt, b, y);
}

void nn_direct_wgrad_row(const geom_t *g, const float *xp, const float *dy, int kh, int o_lo,
                         int o_hi, float *dwt)
{
    const int kc = g->kc;

#ifdef NN_X86
    if (nn_isa() >= NN_ISA_AVX512 && g->oc % 32 == 0) {
        wgrad_row_avx512(g, xp, dy, kh, o_lo, o_hi, dwt);
        return;
    }
    if (nn_isa() >= NN_ISA_AVX2 && g->oc % 16 == 0) {
        wgrad_row_avx2(g, xp, dy, kh, o_lo, o_hi, dwt);
        return;
    }
#endif
    float *d = dwt + (size_t)kh * kc * g->oc;
    for (int oh = 0; oh < g->oh; oh++) {
        for (int ow = 0; ow < g->ow; ow++) {
            const float *dp = dy + ((size_t)oh * g->ow + ow) * g->oc;
            const float *xr = xp + (size_t)(oh + kh) * g->xrow + (size_t)ow * g->c;
            for (int q = 0; q < kc; q++) {
                for (int o = o_lo; o < o_hi; o++) {
                    d[(size_t)q * g->oc + o] += xr[q] * dp[o];
                }
            }
        }
    }
}
