/* Direct (implicit-GEMM) stride-1 convolution on NHWC tensors, without the
 * im2col matrix. Each image is copied once into a zero-bordered buffer; then
 * for output row oh and kernel row kh, the patch elements (kw, c) of output
 * pixel ow are one contiguous run of k*c floats of padded row oh + kh, starting
 * at pixel ow. So every product reads the padded image and the weights in place,
 * one image at a time (L1/L2 resident), instead of writing, reading and then
 * re-packing the whole batch's patch matrix (40 MB for conv2 at batch 64).
 *
 * The AVX2+FMA register tiles:
 *   forward / input gradient: up to 14 output pixels of a row x 8 channels
 *     (14 accumulators, one weight vector, one broadcast: the 16 ymm registers);
 *   weight gradient: 6 consecutive (kw, c) patch elements x 16 output channels
 *     (12 accumulators), summed over the image's pixels.
 * The input gradient is the forward convolution of the zero-bordered output
 * gradient (border k-1-pad) with the weights flipped in kh, kw and transposed
 * in (channel, output channel). Machines without AVX2/FMA, and channel counts
 * that are not multiples of 8 (forward) or 16 (weight gradient), take plain
 * loops with the same structure. Every sum runs in a fixed order, so results
 * are deterministic. */
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NN_X86 1
#endif

#include "nn.h"
#include "nn_internal.h"

enum { ROW_TILE = 14, WG_TILE = 6, WG_TILE512 = 10 };

/* ---- shapes and scratch ---------------------------------------------------------- */

static int pad_back(const nn_conv_t *s)
{
    return s->k - 1 - s->pad;
}

/* Winograd F(4,5) along the rows (WINO = 8 transformed points, WINO_M = 4
 * outputs a tile) for 5x5 kernels: a row of ow outputs is cut into
 * wino_tiles(ow) tiles, the last one partial. */
enum { WINO = 8, WINO_M = 4 };

static int wino_tiles(int ow)
{
    return (ow + WINO_M - 1) / WINO_M;
}

/* Pixels of a zero-bordered row giving out_w outputs: out_w + k - 1, and for
 * k = 5 zeros up to the last Winograd tile's 8 inputs. */
static int padded_w(int out_w, int k)
{
    return (k == 5 ? wino_tiles(out_w) * WINO_M : out_w) + k - 1;
}

/* Floats of one zero-bordered image: the input's (border pad) or the output
 * gradient's (border k-1-pad), whichever is larger. */
static size_t padded_floats(const nn_conv_t *s)
{
    int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s), pb = pad_back(s);
    size_t in = (size_t)(s->h + 2 * s->pad) * (size_t)padded_w(ow, s->k) * (size_t)s->c;
    size_t out = pb >= 0 ? (size_t)(oh + 2 * pb) * (size_t)padded_w(s->w, s->k) * (size_t)s->oc : 0;

    return in > out ? in : out;
}

/* The floats of one image's transformed input and products, for oh x ow
 * outputs of c channels into oc channels, zero where Winograd does not apply. */
static size_t wino_floats(int oh, int ow, int k, int c, int oc)
{
    if (k != 5) {
        return 0;
    }
    return (size_t)WINO * wino_tiles(ow) * ((size_t)(oh + k - 1) * c + (size_t)oh * oc);
}

static size_t thread_floats(const nn_conv_t *s)
{
    int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s);
    size_t fw = wino_floats(oh, ow, s->k, s->c, s->oc);
    size_t bw = wino_floats(s->h, s->w, s->k, s->oc, s->c);

    return padded_floats(s) + (fw > bw ? fw : bw);
}

size_t nn_conv_direct_scratch_floats(const nn_conv_t *s)
{
    /* the re-laid-out weights (or weight gradient) and their Winograd
     * transform, then a padded image and Winograd planes per thread */
    size_t wn = (size_t)s->oc * s->k * s->k * s->c;

    return wn + (size_t)WINO * s->k * s->c * s->oc + thread_floats(s) * (size_t)nn_threads();
}

int nn_conv_direct_supported(const nn_conv_t *s)
{
    /* the input gradient needs a non-negative border k-1-pad */
    return s->k >= 1 && s->pad >= 0 && pad_back(s) >= 0 && nn_conv_out_h(s) >= 1 &&
           nn_conv_out_w(s) >= 1;
}

/* xp [h+2p][wp][c] = x [h][w][c] with a zero border of width p, and zeros to
 * the right up to wp >= w + 2p pixels. */
static void pad_image(int h, int w, int c, int p, int wp, const float *x, float *xp)
{
    const size_t row = (size_t)w * c, right = (size_t)(wp - w - p) * c;

    memset(xp, 0, (size_t)p * wp * c * sizeof(float));
    for (int i = 0; i < h; i++) {
        float *dst = xp + ((size_t)(i + p) * wp) * c;
        memset(dst, 0, (size_t)p * c * sizeof(float));
        memcpy(dst + (size_t)p * c, x + (size_t)i * row, row * sizeof(float));
        memset(dst + (size_t)p * c + row, 0, right * sizeof(float));
    }
    memset(xp + (size_t)(h + p) * wp * c, 0, (size_t)p * wp * c * sizeof(float));
}

/* ---- one image: y [oh][ow][oc] = conv(xp, wt) + b, wt [k][k][c][oc] ---------------- */

typedef struct geom {
    int oh, ow, c, oc, k;
    int kc;         /* floats of a patch row: k * c (direct), c (a Winograd plane) */
    size_t xrow;    /* floats per padded input row */
} geom_t;

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
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

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
#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX512_INLINE __attribute__((target("avx512f,fma"), always_inline)) static inline

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

static void conv_image(const geom_t *g, const float *xp, const float *wt, const float *b, float *y)
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

/* dwt [kh][k*c][o_lo..o_hi) += sum over the image's pixels of patch x dy. */
static void wgrad_row(const geom_t *g, const float *xp, const float *dy, int kh, int o_lo, int o_hi,
                      float *dwt)
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

/* ---- Winograd F(4,5) along each row, for the 5x5 layers with AVX-512: four
 * neighbouring outputs of a row come from 8 inputs with 8 products per
 * (kh, channel, output channel) instead of 20, so the tiled product shrinks to
 * 0.4 of the direct one (0.46 with dtrain's 14-wide rows, whose last tile is
 * half used). Points 0, 1, -1, 2, -2, 1/2, -1/2, infinity:
 *   v = B^T d (8 inputs -> 8), u = G g (5 taps -> 8), y = A^T (u . v) (8 -> 4).
 * For each point the products over (kh, c) are a convolution of one "plane"
 * (rows of wino_tiles(ow) tiles x c) with a kh-only kernel, which the direct
 * tiles run. The forward and the input gradient take it, and the weight
 * gradient by the same transform: dW = G^T [(A dy) . (B^T x)] summed over the
 * tiles (y = A^T [(G w) . (B^T x)] differentiated; dy is zero past the row's
 * end); per point the sum over images and tiles of V [c] x M [oc] is a direct
 * weight gradient of the point's plane, and G^T (8 points -> 5 taps) is
 * applied once at the end. The matrices come from the Toom-Cook construction
 * (A^T [i][j] = a_j^i, G [j][k] = a_j^k / prod_{l != j} (a_j - a_l), row j of
 * B^T = the coefficients of prod_{l != j} (x - a_l), infinity's rows last). ---- */

static const float wino_at[WINO_M][WINO] = {
    {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f},
    {0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 0.5f, -0.5f, 0.0f},
    {0.0f, 1.0f, 1.0f, 4.0f, 4.0f, 0.25f, 0.25f, 0.0f},
    {0.0f, 1.0f, -1.0f, 8.0f, -8.0f, 0.125f, -0.125f, 1.0f},
};
static const float wino_g[WINO][5] = {
    {-1.0f, 0.0f, 0.0f, 0.0f, 0.0f},
    {-2.0f / 9, -2.0f / 9, -2.0f / 9, -2.0f / 9, -2.0f / 9},
    {-2.0f / 9, 2.0f / 9, -2.0f / 9, 2.0f / 9, -2.0f / 9},
    {1.0f / 90, 1.0f / 45, 2.0f / 45, 4.0f / 45, 8.0f / 45},
    {1.0f / 90, -1.0f / 45, 2.0f / 45, -4.0f / 45, 8.0f / 45},
    {32.0f / 45, 16.0f / 45, 8.0f / 45, 4.0f / 45, 2.0f / 45},
    {32.0f / 45, -16.0f / 45, 8.0f / 45, -4.0f / 45, 2.0f / 45},
    {0.0f, 0.0f, 0.0f, 0.0f, 1.0f},
};
static const float wino_bt[WINO][WINO] = {
    {-1.0f, 0.0f, 5.25f, 0.0f, -5.25f, 0.0f, 1.0f, 0.0f},
    {0.0f, 1.0f, 1.0f, -4.25f, -4.25f, 1.0f, 1.0f, 0.0f},
    {0.0f, -1.0f, 1.0f, 4.25f, -4.25f, -1.0f, 1.0f, 0.0f},
    {0.0f, 0.5f, 0.25f, -2.5f, -1.25f, 2.0f, 1.0f, 0.0f},
    {0.0f, -0.5f, 0.25f, 2.5f, -1.25f, -2.0f, 1.0f, 0.0f},
    {0.0f, 2.0f, 4.0f, -2.5f, -5.0f, 0.5f, 1.0f, 0.0f},
    {0.0f, -2.0f, 4.0f, 2.5f, -5.0f, -0.5f, 1.0f, 0.0f},
    {0.0f, -1.0f, 0.0f, 5.25f, 0.0f, -5.25f, 0.0f, 1.0f},
};

static int wino_ok(const geom_t *g)
{
    return nn_isa() >= NN_ISA_AVX512 && g->k == 5 && g->oc % 32 == 0 && g->c >= 8;
}

/* One transform of n-float vectors: out [r * out_step] = bias + sum over j of
 * mat [r * rs + j * cs] in [j * in_step], for rows r < nout and inputs j < nin
 * (the other inputs are zero). */
typedef struct wmat {
    const float *mat;
    int rs, cs, nin, nout;
} wmat_t;

#ifdef NN_X86
AVX512_INLINE void wino_apply(wmat_t t, const float *in, size_t in_step, float *out,
                              size_t out_step, int n, const float *bias)
{
    for (int i = 0; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        __m512 x[WINO];
        for (int j = 0; j < t.nin; j++) {
            x[j] = _mm512_maskz_loadu_ps(mk, in + j * in_step + i);
        }
        for (int r = 0; r < t.nout; r++) {
            __m512 acc = bias != NULL ? _mm512_maskz_loadu_ps(mk, bias + i) : _mm512_setzero_ps();
            for (int j = 0; j < t.nin; j++) {
                float f = t.mat[r * t.rs + j * t.cs];
                if (f != 0.0f) {
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(f), x[j], acc);
                }
            }
            _mm512_mask_storeu_ps(out + r * out_step + i, mk, acc);
        }
    }
}
/* Only AVX-512 machines take this path: its transforms are compiled for it. */
#define WINO_FN AVX512 static
#else
static void wino_apply(wmat_t t, const float *in, size_t in_step, float *out, size_t out_step,
                       int n, const float *bias)
{
    for (int r = 0; r < t.nout; r++) {
        for (int i = 0; i < n; i++) {
            float acc = bias != NULL ? bias[i] : 0.0f;
            for (int j = 0; j < t.nin; j++) {
                acc += t.mat[r * t.rs + j * t.cs] * in[j * in_step + i];
            }
            out[r * out_step + i] = acc;
        }
    }
}
#define WINO_FN static
#endif

/* u [8][k][c][oc] = G wt [k][k][c][oc] along kw */
WINO_FN void wino_weights(const geom_t *g, const float *wt, float *u)
{
    const size_t co = (size_t)g->c * g->oc;
    const wmat_t t = {.mat = &wino_g[0][0], .rs = 5, .cs = 1, .nin = 5, .nout = WINO};

    for (int kh = 0; kh < g->k; kh++) {
        wino_apply(t, wt + kh * g->k * co, co, u + kh * co, g->k * co, (int)co, NULL);
    }
}

/* dwt [k][k][c][oc] = G^T du [8][k][c][oc] along the points */
WINO_FN void wino_wgrad_out(const geom_t *g, const float *du, float *dwt)
{
    const size_t co = (size_t)g->c * g->oc;
    const wmat_t t = {.mat = &wino_g[0][0], .rs = 1, .cs = 5, .nin = WINO, .nout = 5};

    for (int kh = 0; kh < g->k; kh++) {
        wino_apply(t, du + kh * co, g->k * co, dwt + kh * g->k * co, co, (int)co, NULL);
    }
}

/* v [8][oh+4][tiles][c] = B^T of each row tile of 8 inputs (stride 4) of xp,
 * padded [oh+4][>= tiles*4+4][c]. */
WINO_FN void wino_input(const geom_t *g, const float *xp, float *v)
{
    const int tiles = wino_tiles(g->ow), rows = g->oh + g->k - 1, c = g->c;
    const size_t vplane = (size_t)rows * tiles * c;
    const wmat_t t = {.mat = &wino_bt[0][0], .rs = WINO, .cs = 1, .nin = WINO, .nout = WINO};

    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < tiles; i++) {
            wino_apply(t, xp + r * g->xrow + (size_t)WINO_M * i * c, c,
                       v + ((size_t)r * tiles + i) * c, vplane, c, NULL);
        }
    }
}

/* y [oh][ow][oc] = A^T m [8][oh][tiles][oc] along the points (+ b) */
WINO_FN void wino_output(const geom_t *g, const float *m, const float *b, float *y)
{
    const int tiles = wino_tiles(g->ow), oc = g->oc;
    const size_t mplane = (size_t)g->oh * tiles * oc;

    for (int r = 0; r < g->oh; r++) {
        for (int i = 0; i < tiles; i++) {
            const int left = g->ow - WINO_M * i;
            const wmat_t t = {.mat = &wino_at[0][0], .rs = WINO, .cs = 1, .nin = WINO,
                              .nout = left < WINO_M ? left : WINO_M};
            wino_apply(t, m + ((size_t)r * tiles + i) * oc, mplane,
                       y + ((size_t)r * g->ow + WINO_M * i) * oc, oc, oc, b);
        }
    }
}

/* m [8][oh][tiles][oc] = A dy [oh][ow][oc] for each tile of 4 pixels (zero past ow) */
WINO_FN void wino_dy(const geom_t *g, const float *dy, float *m)
{
    const int tiles = wino_tiles(g->ow), oc = g->oc;
    const size_t mplane = (size_t)g->oh * tiles * oc;

    for (int r = 0; r < g->oh; r++) {
        for (int i = 0; i < tiles; i++) {
            const int left = g->ow - WINO_M * i;
            const wmat_t t = {.mat = &wino_at[0][0], .rs = 1, .cs = WINO,
                              .nin = left < WINO_M ? left : WINO_M, .nout = WINO};
            wino_apply(t, dy + ((size_t)r * g->ow + WINO_M * i) * oc, oc,
                       m + ((size_t)r * tiles + i) * oc, mplane, oc, NULL);
        }
    }
}

/* The geometry of one point's plane: its kernel is k rows by one column, so
 * the plane's rows of tiles chain into one row of oh * tiles outputs (row kh
 * of the kernel reads kh rows further on) and the tiles run along all of it. */
static geom_t wino_plane(const geom_t *g)
{
    const int tiles = wino_tiles(g->ow);

    return (geom_t){.oh = 1, .ow = g->oh * tiles, .c = g->c, .oc = g->oc, .k = g->k, .kc = g->c,
                    .xrow = (size_t)tiles * g->c};
}

/* One image: xp padded [oh+4][>= tiles*4+4][c] -> y [oh][ow][oc] (+ b). v:
 * scratch of wino_floats() floats (the 8 input planes, then the 8 product planes). */
static void wino_image(const geom_t *g, const float *xp, const float *u, const float *b, float *v,
                       float *y)
{
    const int tiles = wino_tiles(g->ow), rows = g->oh + g->k - 1;
    const size_t vplane = (size_t)rows * tiles * g->c, mplane = (size_t)g->oh * tiles * g->oc;
    const size_t uplane = (size_t)g->k * g->c * g->oc;
    float *m = v + WINO * vplane;
    const geom_t gp = wino_plane(g);

    wino_input(g, xp, v);
    for (int p = 0; p < WINO; p++) {
        conv_image(&gp, v + p * vplane, u + p * uplane, NULL, m + p * mplane);
    }
    wino_output(g, m, b, y);
}

/* ---- threads: images (forward, input gradient) or (kh, 32 channels) slices
 * of the weight gradient ((point, kh, 32 channels) with Winograd) are split
 * between nn_threads() threads; each output is computed by one thread in the
 * same order whatever the count, so results do not depend on it. ---- */

typedef struct work {
    const nn_conv_t *s;
    const geom_t *g;
    const float *in, *wt, *b, *dy;  /* in: images to pad (x, or dy for the input gradient) */
    float *out, *dwt, *scratch;     /* scratch: one padded image per thread */
    int in_h, in_w, in_c, pad;      /* the images in `in` and their border */
    size_t in_img, out_img, pad_img;
    int items;                      /* images, or weight-gradient slices */
    const float *u;                 /* Winograd weights, or NULL: direct */
    size_t thread_img;              /* floats of scratch per thread */
} work_t;

static float *thread_pad(work_t *w, int t)
{
    return w->scratch + (size_t)t * w->thread_img;
}

/* xp = image n of `in`, zero-bordered into rows of the geometry's width */
static void pad_input(const work_t *w, int n, float *xp)
{
    pad_image(w->in_h, w->in_w, w->in_c, w->pad, (int)(w->g->xrow / (size_t)w->in_c),
              w->in + (size_t)n * w->in_img, xp);
}

/* images [lo, hi): pad, then convolve */
static void conv_share(void *ctx, int t, int lo, int hi)
{
    work_t *w = ctx;
    float *xp = thread_pad(w, t);

    for (int n = lo; n < hi; n++) {
        pad_input(w, n, xp);
        if (w->u != NULL) {
            wino_image(w->g, xp, w->u, w->b, xp + w->pad_img, w->out + (size_t)n * w->out_img);
        } else {
            conv_image(w->g, xp, w->wt, w->b, w->out + (size_t)n * w->out_img);
        }
    }
}

/* slices [lo, hi) of the weight gradient (kh, and 32 channels where they
 * divide), summed over every image */
static int wgrad_slices(const geom_t *g)
{
    return g->oc % 32 == 0 ? g->oc / 32 : 1;
}

static void wgrad_share(void *ctx, int t, int lo, int hi)
{
    work_t *w = ctx;
    const geom_t *g = w->g;
    const int per = wgrad_slices(g), width = g->oc / per;
    float *xp = thread_pad(w, t);

    for (int n = 0; n < w->s->n; n++) {
        pad_input(w, n, xp);
        for (int i = lo; i < hi; i++) {
            int o = (i % per) * width;
            wgrad_row(g, xp, w->dy + (size_t)n * w->out_img, i / per, o, o + width, w->dwt);
        }
    }
}

/* Winograd weight gradient: slices [lo, hi) of (point, kh, 32 channels) of
 * du [8][k][c][oc], summed over every image (each image's transforms are
 * computed by every thread that has a slice). */
static void wino_wgrad_share(void *ctx, int t, int lo, int hi)
{
    work_t *w = ctx;
    const geom_t *g = w->g, gp = wino_plane(g);
    const int per = wgrad_slices(g), width = g->oc / per;
    const size_t vplane = (size_t)(g->oh + g->k - 1) * wino_tiles(g->ow) * g->c;
    const size_t mplane = (size_t)gp.ow * g->oc, uplane = (size_t)g->k * g->c * g->oc;
    float *xp = thread_pad(w, t), *v = xp + w->pad_img, *m = v + WINO * vplane;

    for (int n = 0; n < w->s->n; n++) {
        pad_input(w, n, xp);
        wino_input(g, xp, v);
        wino_dy(g, w->dy + (size_t)n * w->out_img, m);
        for (int i = lo; i < hi; i++) {
            int p = i / (g->k * per), kh = i / per % g->k, o = (i % per) * width;
            wgrad_row(&gp, v + p * vplane, m + p * mplane, kh, o, o + width, w->dwt + p * uplane);
        }
    }
}

/* ---- the layer ------------------------------------------------------------------- */

static size_t uwn(const nn_conv_t *s)
{
    return (size_t)WINO * s->k * s->c * s->oc;
}

/* The Winograd weights of wt into u where that path applies, else NULL. */
static const float *wino_prepare(const geom_t *g, const float *wt, float *u)
{
    if (!wino_ok(g)) {
        return NULL;
    }
    wino_weights(g, wt, u);
    return u;
}

void nn_conv2d_direct_forward(const nn_conv_t *s, const float *x, const float *w, const float *b,
                              float *scratch, float *y)
{
    const int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s), kk = s->k * s->k;
    const geom_t g = {.oh = oh, .ow = ow, .c = s->c, .oc = s->oc, .k = s->k, .kc = s->k * s->c,
                      .xrow = (size_t)padded_w(ow, s->k) * s->c};
    const size_t wn = (size_t)s->oc * kk * s->c;
    float *wt = scratch;

    /* wt [kh][kw][c][oc] = w [oc][kh][kw][c] */
    for (int o = 0; o < s->oc; o++) {
        for (int t = 0; t < kk * s->c; t++) {
            wt[(size_t)t * s->oc + o] = w[(size_t)o * kk * s->c + t];
        }
    }
    work_t wk = {.s = s, .g = &g, .in = x, .wt = wt, .b = b, .out = y,
                 .scratch = scratch + wn + uwn(s), .in_h = s->h, .in_w = s->w, .in_c = s->c,
                 .pad = s->pad, .in_img = (size_t)s->h * s->w * s->c,
                 .out_img = (size_t)oh * ow * s->oc, .pad_img = padded_floats(s),
                 .items = s->n, .u = wino_prepare(&g, wt, scratch + wn),
                 .thread_img = thread_floats(s)};
    nn_parallel_run(s->n, conv_share, &wk);
}

void nn_conv2d_direct_backward(const nn_conv_t *s, const float *x, const float *w, const float *dy,
                               float *dw, float *db, float *scratch, float *dx)
{
    const int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s), kk = s->k * s->k, pb = pad_back(s);
    const size_t out_img = (size_t)oh * ow * s->oc, in_img = (size_t)s->h * s->w * s->c;
    const size_t wn = (size_t)s->oc * kk * s->c;
    const geom_t g = {.oh = oh, .ow = ow, .c = s->c, .oc = s->oc, .k = s->k, .kc = s->k * s->c,
                      .xrow = (size_t)padded_w(ow, s->k) * s->c};
    float *wt = scratch;

    /* bias: the sum of dy over all pixels, in pixel order */
    memset(db, 0, (size_t)s->oc * sizeof(float));
    for (size_t p = 0; p < (size_t)s->n * oh * ow; p++) {
        const float *dp = dy + p * s->oc;
        for (int o = 0; o < s->oc; o++) {
            db[o] += dp[o];
        }
    }
    /* weights: wt [kh][kw*c][oc] accumulated image by image (directly, or
     * per Winograd point into the u area and then transformed), then transposed */
    const int wino = wino_ok(&g);
    float *acc = wino ? scratch + wn : wt;
    memset(acc, 0, (wino ? uwn(s) : wn) * sizeof(float));
    work_t wk = {.s = s, .g = &g, .in = x, .dy = dy, .dwt = acc, .scratch = scratch + wn + uwn(s),
                 .in_h = s->h, .in_w = s->w, .in_c = s->c, .pad = s->pad, .in_img = in_img,
                 .out_img = out_img, .pad_img = padded_floats(s),
                 .items = (wino ? WINO : 1) * s->k * wgrad_slices(&g),
                 .thread_img = thread_floats(s)};
    nn_parallel_run(wk.items, wino ? wino_wgrad_share : wgrad_share, &wk);
    if (wino) {
        wino_wgrad_out(&g, acc, wt);
    }
    for (int o = 0; o < s->oc; o++) {
        for (int t = 0; t < kk * s->c; t++) {
            dw[(size_t)o * kk * s->c + t] = wt[(size_t)t * s->oc + o];
        }
    }
    if (dx == NULL) {
        return;
    }
    /* input: the output gradient, bordered by k-1-pad, convolved with
     * wf [kh][kw][oc][c] = w [oc][k-1-kh][k-1-kw][c] */
    const geom_t gb = {.oh = s->h, .ow = s->w, .c = s->oc, .oc = s->c, .k = s->k,
                       .kc = s->k * s->oc, .xrow = (size_t)padded_w(s->w, s->k) * s->oc};
    for (int kh = 0; kh < s->k; kh++) {
        for (int kw = 0; kw < s->k; kw++) {
            const float *src = w + ((size_t)(s->k - 1 - kh) * s->k + (s->k - 1 - kw)) * s->c;
            float *dst = wt + ((size_t)kh * s->k + kw) * s->oc * s->c;
            for (int o = 0; o < s->oc; o++) {
                for (int c = 0; c < s->c; c++) {
                    dst[(size_t)o * s->c + c] = src[(size_t)o * kk * s->c + c];
                }
            }
        }
    }
    work_t wb = {.s = s, .g = &gb, .in = dy, .wt = wt, .b = NULL, .out = dx,
                 .scratch = scratch + wn + uwn(s), .in_h = oh, .in_w = ow, .in_c = s->oc,
                 .pad = pb, .in_img = out_img, .out_img = in_img, .pad_img = padded_floats(s),
                 .items = s->n, .u = wino_prepare(&gb, wt, scratch + wn),
                 .thread_img = thread_floats(s)};
    nn_parallel_run(s->n, conv_share, &wb);
}
