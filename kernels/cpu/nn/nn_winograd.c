/* Winograd F(4,5) along the rows for the direct convolution's 5x5 layers on
 * AVX-512 machines (nn_direct.c): the transforms of weights, input, output and
 * output gradient; the products per point are direct tiles (nn_direct_tiles.c). */
#include "nn.h"
#include "nn_direct.h"
#include "nn_internal.h"

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

int nn_wino_ok(const geom_t *g)
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
#define WINO_FN AVX512
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
#define WINO_FN
#endif

WINO_FN void nn_wino_weights(const geom_t *g, const float *wt, float *u)
{
    const size_t co = (size_t)g->c * g->oc;
    const wmat_t t = {.mat = &wino_g[0][0], .rs = 5, .cs = 1, .nin = 5, .nout = WINO};

    for (int kh = 0; kh < g->k; kh++) {
        wino_apply(t, wt + kh * g->k * co, co, u + kh * co, g->k * co, (int)co, NULL);
    }
}

WINO_FN void nn_wino_wgrad_out(const geom_t *g, const float *du, float *dwt)
{
    const size_t co = (size_t)g->c * g->oc;
    const wmat_t t = {.mat = &wino_g[0][0], .rs = 1, .cs = 5, .nin = WINO, .nout = 5};

    for (int kh = 0; kh < g->k; kh++) {
        wino_apply(t, du + kh * co, g->k * co, dwt + kh * g->k * co, co, (int)co, NULL);
    }
}

/* v [8][oh+4][tiles][c] = B^T of each row tile of 8 inputs (stride 4) of xp,
 * padded [oh+4][>= tiles*4+4][c]. */
WINO_FN void nn_wino_input(const geom_t *g, const float *xp, float *v)
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
static WINO_FN void wino_output(const geom_t *g, const float *m, const float *b, float *y)
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
WINO_FN void nn_wino_dy(const geom_t *g, const float *dy, float *m)
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
geom_t nn_wino_plane(const geom_t *g)
{
    const int tiles = wino_tiles(g->ow);

    return (geom_t){.oh = 1, .ow = g->oh * tiles, .c = g->c, .oc = g->oc, .k = g->k, .kc = g->c,
                    .xrow = (size_t)tiles * g->c};
}

/* One image: xp padded [oh+4][>= tiles*4+4][c] -> y [oh][ow][oc] (+ b). v:
 * scratch of wino_floats() floats (the 8 input planes, then the 8 product planes). */
void nn_wino_image(const geom_t *g, const float *xp, const float *u, const float *b, float *v,
                   float *y)
{
    const int tiles = wino_tiles(g->ow), rows = g->oh + g->k - 1;
    const size_t vplane = (size_t)rows * tiles * g->c, mplane = (size_t)g->oh * tiles * g->oc;
    const size_t uplane = (size_t)g->k * g->c * g->oc;
    float *m = v + WINO * vplane;
    const geom_t gp = nn_wino_plane(g);

    nn_wino_input(g, xp, v);
    for (int p = 0; p < WINO; p++) {
        nn_direct_conv_image(&gp, v + p * vplane, u + p * uplane, NULL, m + p * mplane);
    }
    wino_output(g, m, b, y);
}
