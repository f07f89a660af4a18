/* The dense layer's three products with AVX-512 register tiles, for the CPUs
 * that have it (elsewhere, and when a buffer cannot be allocated, the layer
 * uses OpenBLAS). Each product is C [rows][cols] = sum over k of A(r, k) B[k][cols]
 * with B contiguous along the columns: a tile of 7 rows x 64 columns (28 zmm
 * accumulators, 4 vectors of B and one broadcast of A per k) runs the whole k
 * loop in registers and stores C once, with no packing copy of the weights:
 *   forward  y^T [out][n]  = W [out][in]   x^T [in][n]   (x^T packed: n x in floats)
 *   input    dx  [n][in]   = dy [n][out]   W [out][in]
 *   weights  dW  [out][in] = dy^T [out][n] x [n][in]
 * Column blocks are the outer loop, so a block of B (at most 64 columns) stays
 * in cache while every row tile passes over it. Sums run in k order: results
 * are deterministic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NN_DENSE_X86 1
#endif

#include "nn.h"
#include "nn_internal.h"

#ifdef NN_DENSE_X86
#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX512_INLINE __attribute__((target("avx512f,fma"), always_inline)) static inline

enum { ROWS = 7, VECS = 4 };

typedef struct product {
    int rows, cols, k;          /* cols: a multiple of 16 */
    const float *a;             /* A(r, k) = a[r * ars + k * aks] */
    size_t ars, aks;
    const float *b;             /* B[k][j] = b[k * bks + j] */
    size_t bks;
    float *c;                   /* C[r][j] = c[r * crs + j] */
    size_t crs;
    int stream;                 /* C aligned: stores bypass the cache */
} product_t;

/* nr rows x nv vectors of 16 columns at (r0, j0); nr, nv constant after inlining */
AVX512_INLINE void tile(int nr, int nv, const product_t *p, int r0, int j0)
{
    __m512 acc[ROWS][VECS];
    const float *a = p->a + (size_t)r0 * p->ars, *b = p->b + j0;

    for (int r = 0; r < nr; r++) {
        for (int v = 0; v < nv; v++) {
            acc[r][v] = _mm512_setzero_ps();
        }
    }
    for (int k = 0; k < p->k; k++, a += p->aks, b += p->bks) {
        __m512 bv[VECS];
        for (int v = 0; v < nv; v++) {
            bv[v] = _mm512_loadu_ps(b + 16 * v);
        }
        for (int r = 0; r < nr; r++) {
            __m512 av = _mm512_set1_ps(a[(size_t)r * p->ars]);
            for (int v = 0; v < nv; v++) {
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
            }
        }
    }
    for (int r = 0; r < nr; r++) {
        float *c = p->c + (size_t)(r0 + r) * p->crs + j0;
        for (int v = 0; v < nv; v++) {
            if (p->stream) {
                _mm512_stream_ps(c + 16 * v, acc[r][v]);
            } else {
                _mm512_storeu_ps(c + 16 * v, acc[r][v]);
            }
        }
    }
}

/* rows [r_lo, r_hi) of the column block at j0 */
AVX512_INLINE void column_block(int nv, const product_t *p, int j0, int r_lo, int r_hi)
{
    int r = r_lo;

    for (; r + ROWS <= r_hi; r += ROWS) {
        tile(ROWS, nv, p, r, j0);
    }
    for (; r < r_hi; r++) {
        tile(1, nv, p, r, j0);
    }
}

/* column blocks [b_lo, b_hi) (of 16 * VECS columns, the last one narrower) */
AVX512 static void product_part(const product_t *p, int b_lo, int b_hi, int r_lo, int r_hi)
{
    for (int blk = b_lo; blk < b_hi; blk++) {
        int j = blk * 16 * VECS;
        switch ((p->cols - j) / 16) {
        case 1: column_block(1, p, j, r_lo, r_hi); break;
        case 2: column_block(2, p, j, r_lo, r_hi); break;
        case 3: column_block(3, p, j, r_lo, r_hi); break;
        default: column_block(VECS, p, j, r_lo, r_hi); break;
        }
    }
    _mm_sfence(); /* the non-temporal stores, before another thread reads C */
}

static int col_blocks(const product_t *p)
{
    return (p->cols + 16 * VECS - 1) / (16 * VECS);
}

/* Threads take column blocks where there are enough, else row tiles; every
 * output is summed the same way whatever the split. */
static void share_cols(void *ctx, int t, int lo, int hi)
{
    const product_t *p = ctx;

    (void)t;
    product_part(p, lo, hi, 0, p->rows);
}

static void share_rows(void *ctx, int t, int lo, int hi)
{
    const product_t *p = ctx;

    (void)t;
    product_part(p, 0, col_blocks(p), lo * ROWS, hi * ROWS < p->rows ? hi * ROWS : p->rows);
}

static void product_run(const product_t *p)
{
    if (col_blocks(p) >= 2 * nn_threads()) {
        nn_parallel_run(col_blocks(p), share_cols, (void *)p);
    } else {
        nn_parallel_run((p->rows + ROWS - 1) / ROWS, share_rows, (void *)p);
    }
}

int nn_dense_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                     float *y)
{
    if (nn_isa() < NN_ISA_AVX512) {
        return 0;
    }
    /* x^T [in][np] and y^T [out][np], np = n rounded up to 16 (zero columns) */
    const size_t np = ((size_t)n + 15) / 16 * 16;
    float *xt = malloc(((size_t)in + out) * np * sizeof(float));
    if (xt == NULL) {
        return 0;
    }
    float *yt = xt + (size_t)in * np;
    for (int k = 0; k < in; k++) {
        float *row = xt + (size_t)k * np;
        for (int i = 0; i < n; i++) {
            row[i] = x[(size_t)i * in + k];
        }
        memset(row + n, 0, (np - (size_t)n) * sizeof(float));
    }
    product_t p = {.rows = out, .cols = (int)np, .k = in, .a = w, .ars = (size_t)in, .aks = 1,
                   .b = xt, .bks = np, .c = yt, .crs = np};
    product_run(&p);
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * out;
        for (int o = 0; o < out; o++) {
            yi[o] = yt[(size_t)o * np + i] + b[o];
        }
    }
    free(xt);
    return 1;
}

int nn_dense_backward(int n, int in, int out, const float *x, const float *w, const float *dy,
                      float *dw, float *dx)
{
    if (nn_isa() < NN_ISA_AVX512 || in % 16 != 0) {
        return 0;
    }
    product_t pw = {.rows = out, .cols = in, .k = n, .a = dy, .ars = 1, .aks = (size_t)out,
                    .b = x, .bks = (size_t)in, .c = dw, .crs = (size_t)in};
    /* dW is large and read next by the reduction or the optimizer, not by us:
     * non-temporal stores save reading every line before writing it */
    pw.stream = ((uintptr_t)dw % 64 == 0 && in % 16 == 0);
    product_run(&pw);
    if (dx != NULL) {
        product_t px = {.rows = n, .cols = in, .k = out, .a = dy, .ars = (size_t)out, .aks = 1,
                        .b = w, .bks = (size_t)in, .c = dx, .crs = (size_t)in};
        product_run(&px);
    }
    return 1;
}
#else
int nn_dense_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                     float *y)
{
    (void)n, (void)in, (void)out, (void)x, (void)w, (void)b, (void)y;
    return 0;
}

int nn_dense_backward(int n, int in, int out, const float *x, const float *w, const float *dy,
                      float *dw, float *dx)
{
    (void)n, (void)in, (void)out, (void)x, (void)w, (void)dy, (void)dw, (void)dx;
    return 0;
}
#endif
