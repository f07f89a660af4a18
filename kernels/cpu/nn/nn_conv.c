/* Stride-1 convolution on NHWC tensors by im2col + one GEMM per batch: the
 * patches of all n images form one [n*oh*ow][k*k*c] matrix, so OpenBLAS sees
 * a single large product instead of n small ones, and the GEMM's output is
 * already the NHWC activation. */
#include <string.h>

#include <cblas.h>

#include "nn.h"
#include "nn_internal.h"

int nn_conv_out_h(const nn_conv_t *s)
{
    return s->h + 2 * s->pad - s->k + 1;
}

int nn_conv_out_w(const nn_conv_t *s)
{
    return s->w + 2 * s->pad - s->k + 1;
}

size_t nn_conv_col_floats(const nn_conv_t *s)
{
    return (size_t)s->n * (size_t)nn_conv_out_h(s) * (size_t)nn_conv_out_w(s) * (size_t)s->k *
           (size_t)s->k * (size_t)s->c;
}

/* Columns [kw_lo, kw_hi) of kernel row kh land inside the image for output
 * column ow; in NHWC they are one contiguous run of the input row. */
static void kw_range(const nn_conv_t *s, int ow, int *lo_p, int *hi_p)
{
    int lo = s->pad - ow, hi = s->w + s->pad - ow;

    *lo_p = lo < 0 ? 0 : lo;
    *hi_p = hi > s->k ? s->k : hi;
}

static void im2col(const nn_conv_t *s, const float *x, float *col)
{
    const int oh_n = nn_conv_out_h(s), ow_n = nn_conv_out_w(s);
    const size_t kc = (size_t)s->k * s->c;
    float *row = col;

    for (int n = 0; n < s->n; n++) {
        const float *img = x + (size_t)n * s->h * s->w * s->c;
        for (int oh = 0; oh < oh_n; oh++) {
            for (int ow = 0; ow < ow_n; ow++) {
                int lo, hi;
                kw_range(s, ow, &lo, &hi);
                for (int kh = 0; kh < s->k; kh++, row += kc) {
                    int ih = oh - s->pad + kh;
                    if (ih < 0 || ih >= s->h || hi <= lo) {
                        memset(row, 0, kc * sizeof(float));
                        continue;
                    }
                    const float *src = img + ((size_t)ih * s->w + (ow - s->pad + lo)) * s->c;
                    memset(row, 0, (size_t)lo * s->c * sizeof(float));
                    memcpy(row + (size_t)lo * s->c, src, (size_t)(hi - lo) * s->c * sizeof(float));
                    memset(row + (size_t)hi * s->c, 0, (size_t)(s->k - hi) * s->c * sizeof(float));
                }
            }
        }
    }
}

/* The adjoint of im2col: every patch element is added back to the input pixel
 * it was copied from. */
static void col2im(const nn_conv_t *s, const float *col, float *dx)
{
    const int oh_n = nn_conv_out_h(s), ow_n = nn_conv_out_w(s);
    const size_t kc = (size_t)s->k * s->c;
    const float *row = col;

    memset(dx, 0, (size_t)s->n * s->h * s->w * s->c * sizeof(float));
    for (int n = 0; n < s->n; n++) {
        float *img = dx + (size_t)n * s->h * s->w * s->c;
        for (int oh = 0; oh < oh_n; oh++) {
            for (int ow = 0; ow < ow_n; ow++) {
                int lo, hi;
                kw_range(s, ow, &lo, &hi);
                for (int kh = 0; kh < s->k; kh++, row += kc) {
                    int ih = oh - s->pad + kh;
                    if (ih < 0 || ih >= s->h || hi <= lo) {
                        continue;
                    }
                    float *dst = img + ((size_t)ih * s->w + (ow - s->pad + lo)) * s->c;
                    const float *src = row + (size_t)lo * s->c;
                    size_t len = (size_t)(hi - lo) * s->c;
                    for (size_t i = 0; i < len; i++) {
                        dst[i] += src[i];
                    }
                }
            }
        }
    }
}

/* Adds b to every row of y [rows][cols]. */
static void add_bias_rows(size_t rows, int cols, const float *b, float *y)
{
    for (size_t r = 0; r < rows; r++) {
        float *yr = y + r * (size_t)cols;
        for (int j = 0; j < cols; j++) {
            yr[j] += b[j];
        }
    }
}

/* db[j] = sum over rows of dy[r][j]. */
static void sum_rows(size_t rows, int cols, const float *dy, float *db)
{
    memset(db, 0, (size_t)cols * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        const float *dr = dy + r * (size_t)cols;
        for (int j = 0; j < cols; j++) {
            db[j] += dr[j];
        }
    }
}

void nn_conv2d_forward(const nn_conv_t *s, const float *x, const float *w, const float *b,
                       float *col, float *y)
{
    const int m = s->n * nn_conv_out_h(s) * nn_conv_out_w(s);
    const int kkc = s->k * s->k * s->c;

    im2col(s, x, col);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, s->oc, kkc, 1.0f, col, kkc, w, kkc,
                0.0f, y, s->oc);
    add_bias_rows((size_t)m, s->oc, b, y);
}

void nn_conv2d_backward(const nn_conv_t *s, const float *col, const float *w, const float *dy,
                        float *dw, float *db, float *dcol, float *dx)
{
    const int m = s->n * nn_conv_out_h(s) * nn_conv_out_w(s);
    const int kkc = s->k * s->k * s->c;

    /* dw [oc][kkc] = dy^T [oc][m] x col [m][kkc] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->oc, kkc, m, 1.0f, dy, s->oc, col, kkc,
                0.0f, dw, kkc);
    sum_rows((size_t)m, s->oc, dy, db);
    if (dx != NULL) {
        /* dcol [m][kkc] = dy [m][oc] x w [oc][kkc] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, kkc, s->oc, 1.0f, dy, s->oc, w,
                    kkc, 0.0f, dcol, kkc);
        col2im(s, dcol, dx);
    }
}

/* Linear layers are the same products with the patch matrix replaced by x;
 * with AVX-512 our own tiles (nn_dense.c) do them, else the BLAS. */
void nn_linear_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                       float *y)
{
    if (nn_dense_forward(n, in, out, x, w, b, y)) {
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 0.0f, y,
                out);
    add_bias_rows((size_t)n, out, b, y);
}

void nn_linear_backward(int n, int in, int out, const float *x, const float *w, const float *dy,
                        float *dw, float *db, float *dx)
{
    sum_rows((size_t)n, out, dy, db);
    if (nn_dense_backward(n, in, out, x, w, dy, dw, dx)) {
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw,
                in);
    if (dx != NULL) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in,
                    0.0f, dx, in);
    }
}
