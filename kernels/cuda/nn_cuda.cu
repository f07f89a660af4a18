/* dtrain's layers in CUDA: im2col/col2im, pooling, activations, dropout, the
 * loss and SGD as our kernels, GEMMs by cuBLAS on the row-major layouts of the
 * CPU code (a row-major product C = A B is the column-major C^T = B^T A^T).
 * A CUDA or cuBLAS failure ends the process with the call and its reason: the
 * trainer cannot continue from a broken device. */
#include <stdio.h>
#include <stdlib.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "nn_cuda.h"

#define CUDA_OK(call)                                                                      \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "nn_cuda: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, \
                    cudaGetErrorString(e_));                                               \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define CUBLAS_OK(call)                                                                    \
    do {                                                                                   \
        cublasStatus_t s_ = (call);                                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                 \
            fprintf(stderr, "nn_cuda: %s failed at %s:%d: cuBLAS status %d\n", #call,      \
                    __FILE__, __LINE__, (int)s_);                                          \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define KERNEL_OK() CUDA_OK(cudaGetLastError())

static const int THREADS = 256;

static unsigned blocks_for(size_t count)
{
    size_t b = (count + THREADS - 1) / THREADS;
    return (unsigned)(b > 65535u * 16u ? 65535u * 16u : (b ? b : 1));
}

/* grid-stride loop over [0, count) */
#define FOR_EACH(i, count)                                                                 \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (count);            \
         i += (size_t)blockDim.x * gridDim.x)

static cublasHandle_t blas(void)
{
    static cublasHandle_t h;
    static int ready;

    if (!ready) {
        CUBLAS_OK(cublasCreate(&h));
        /* no atomics in cuBLAS's reductions: the same inputs, the same bits */
        CUBLAS_OK(cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
        CUBLAS_OK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
        ready = 1;
    }
    return h;
}

/* Row-major C[m][n] = op(A) op(B) + beta C with op(A) m x k, op(B) k x n. */
static void gemm_rm(int ta, int tb, int m, int n, int k, const float *a, const float *b,
                    float beta, float *c)
{
    const float one = 1.0f;
    int lda = ta ? m : k, ldb = tb ? k : n;

    CUBLAS_OK(cublasSgemm(blas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                          n, m, k, &one, b, ldb, a, lda, &beta, c, n));
}

/* ---- memory ------------------------------------------------------------------ */

extern "C" int nn_cuda_available(char *why, size_t errlen)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);

    if (e != cudaSuccess) {
        snprintf(why, errlen, "no usable GPU: cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return 0;
    }
    if (count == 0) {
        snprintf(why, errlen, "no GPU found (cudaGetDeviceCount = 0)");
        return 0;
    }
    return 1;
}

extern "C" void *nn_cuda_alloc(size_t bytes)
{
    void *p = NULL;

    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    CUDA_OK(cudaMemset(p, 0, bytes ? bytes : 1));
    return p;
}

extern "C" void nn_cuda_free(void *p)
{
    cudaFree(p);
}

extern "C" void nn_cuda_upload(void *dst, const void *src_host, size_t bytes)
{
    CUDA_OK(cudaMemcpy(dst, src_host, bytes, cudaMemcpyHostToDevice));
}

extern "C" void nn_cuda_download(void *dst_host, const void *src, size_t bytes)
{
    CUDA_OK(cudaMemcpy(dst_host, src, bytes, cudaMemcpyDeviceToHost));
}

/* ---- convolution ---------------------------------------------------------------- */

struct conv_dims {
    int n, h, w, c, oc, k, pad, oh, ow;
};

static conv_dims dims_of(const nn_conv_t *s)
{
    conv_dims d = {s->n, s->h, s->w, s->c, s->oc, s->k, s->pad, nn_conv_out_h(s), nn_conv_out_w(s)};
    return d;
}

/* col[(n,oh,ow)][(kh,kw,c)] = x[n][oh-pad+kh][ow-pad+kw][c] or 0 outside */
__global__ void im2col_kernel(conv_dims d, const float *x, float *col, size_t total)
{
    const size_t kkc = (size_t)d.k * d.k * d.c;

    FOR_EACH(i, total) {
        size_t row = i / kkc;
        int j = (int)(i % kkc);
        int c = j % d.c, kw = (j / d.c) % d.k, kh = j / (d.c * d.k);
        int ow = (int)(row % d.ow), oh = (int)((row / d.ow) % d.oh), n = (int)(row / ((size_t)d.ow * d.oh));
        int ih = oh - d.pad + kh, iw = ow - d.pad + kw;
        col[i] = (ih >= 0 && ih < d.h && iw >= 0 && iw < d.w)
                     ? x[(((size_t)n * d.h + ih) * d.w + iw) * d.c + c]
                     : 0.0f;
    }
}

/* The adjoint of im2col as a gather: each input element sums the patch entries
 * copied from it, in a fixed order (no atomics). */
__global__ void col2im_kernel(conv_dims d, const float *col, float *dx, size_t total)
{
    const size_t kkc = (size_t)d.k * d.k * d.c;

    FOR_EACH(i, total) {
        int c = (int)(i % d.c), iw = (int)((i / d.c) % d.w), ih = (int)((i / ((size_t)d.c * d.w)) % d.h);
        int n = (int)(i / ((size_t)d.c * d.w * d.h));
        float acc = 0.0f;
        for (int kh = 0; kh < d.k; kh++) {
            int oh = ih + d.pad - kh;
            if (oh < 0 || oh >= d.oh) {
                continue;
            }
            for (int kw = 0; kw < d.k; kw++) {
                int ow = iw + d.pad - kw;
                if (ow < 0 || ow >= d.ow) {
                    continue;
                }
                size_t row = ((size_t)n * d.oh + oh) * d.ow + ow;
                acc += col[row * kkc + ((size_t)kh * d.k + kw) * d.c + c];
            }
        }
        dx[i] = acc;
    }
}

__global__ void add_bias_kernel(const float *b, int cols, float *y, size_t total)
{
    FOR_EACH(i, total) {
        y[i] += b[i % cols];
    }
}

/* db[j] = sum over rows of dy[r][j]: one thread per column, rows in order. */
__global__ void sum_rows_kernel(const float *dy, size_t rows, int cols, float *db)
{
    FOR_EACH(j, (size_t)cols) {
        float acc = 0.0f;
        for (size_t r = 0; r < rows; r++) {
            acc += dy[r * cols + j];
        }
        db[j] = acc;
    }
}

static void add_bias(size_t rows, int cols, const float *b, float *y)
{
    size_t total = rows * cols;
    add_bias_kernel<<<blocks_for(total), THREADS>>>(b, cols, y, total);
    KERNEL_OK();
}

static void sum_rows(size_t rows, int cols, const float *dy, float *db)
{
    sum_rows_kernel<<<blocks_for((size_t)cols), THREADS>>>(dy, rows, cols, db);
    KERNEL_OK();
}

extern "C" void nn_cuda_conv2d_forward(const nn_conv_t *s, const float *x, const float *w,
                                       const float *b, float *col, float *y)
{
    conv_dims d = dims_of(s);
    int m = d.n * d.oh * d.ow, kkc = d.k * d.k * d.c;
    size_t total = (size_t)m * kkc;

    im2col_kernel<<<blocks_for(total), THREADS>>>(d, x, col, total);
    KERNEL_OK();
    gemm_rm(0, 1, m, d.oc, kkc, col, w, 0.0f, y);
    add_bias((size_t)m, d.oc, b, y);
}

extern "C" void nn_cuda_conv2d_backward(const nn_conv_t *s, const float *col, const float *w,
                                        const float *dy, float *dw, float *db, float *dcol,
                                        float *dx)
{
    conv_dims d = dims_of(s);
    int m = d.n * d.oh * d.ow, kkc = d.k * d.k * d.c;

    gemm_rm(1, 0, d.oc, kkc, m, dy, col, 0.0f, dw);
    sum_rows((size_t)m, d.oc, dy, db);
    if (dx != NULL) {
        gemm_rm(0, 0, m, kkc, d.oc, dy, w, 0.0f, dcol);
        size_t total = (size_t)d.n * d.h * d.w * d.c;
        col2im_kernel<<<blocks_for(total), THREADS>>>(d, dcol, dx, total);
        KERNEL_OK();
    }
}

extern "C" void nn_cuda_linear_forward(int n, int in, int out, const float *x, const float *w,
                                       const float *b, float *y)
{
    gemm_rm(0, 1, n, out, in, x, w, 0.0f, y);
    add_bias((size_t)n, out, b, y);
}

extern "C" void nn_cuda_linear_backward(int n, int in, int out, const float *x, const float *w,
                                        const float *dy, float *dw, float *db, float *dx)
{
    gemm_rm(1, 0, out, in, n, dy, x, 0.0f, dw);
    sum_rows((size_t)n, out, dy, db);
    if (dx != NULL) {
        gemm_rm(0, 0, n, in, out, dy, w, 0.0f, dx);
    }
}

/* ---- pooling and element-wise layers ---------------------------------------------- */

__global__ void maxpool2_fwd_kernel(int h, int w, int c, const float *x, float *y, int32_t *idx,
                                    size_t total)
{
    const int oh_n = h / 2, ow_n = w / 2;

    FOR_EACH(o, total) {
        int ch = (int)(o % c), ow = (int)((o / c) % ow_n), oh = (int)((o / ((size_t)c * ow_n)) % oh_n);
        size_t b = o / ((size_t)c * ow_n * oh_n);
        size_t p00 = ((b * h + 2 * oh) * w + 2 * ow) * c + ch;
        size_t cand[4] = {p00, p00 + c, p00 + (size_t)w * c, p00 + (size_t)w * c + c};
        size_t best = cand[0];
        for (int k = 1; k < 4; k++) {
            if (x[cand[k]] > x[best]) {
                best = cand[k];
            }
        }
        y[o] = x[best];
        idx[o] = (int32_t)best;
    }
}

__global__ void scatter_kernel(const float *dy, const int32_t *idx, float *dx, size_t total)
{
    /* 2x2 windows with stride 2 do not overlap: every target is written once */
    FOR_EACH(o, total) {
        dx[idx[o]] = dy[o];
    }
}

extern "C" void nn_cuda_maxpool2_forward(int n, int h, int w, int c, const float *x, float *y,
                                         int32_t *idx)
{
    size_t total = (size_t)n * (h / 2) * (w / 2) * c;
    maxpool2_fwd_kernel<<<blocks_for(total), THREADS>>>(h, w, c, x, y, idx, total);
    KERNEL_OK();
}

extern "C" void nn_cuda_maxpool2_backward(int n, int h, int w, int c, const float *dy,
                                          const int32_t *idx, float *dx)
{
    size_t total = (size_t)n * (h / 2) * (w / 2) * c;
    CUDA_OK(cudaMemset(dx, 0, (size_t)n * h * w * c * sizeof(float)));
    scatter_kernel<<<blocks_for(total), THREADS>>>(dy, idx, dx, total);
    KERNEL_OK();
}

__global__ void relu_fwd_kernel(const float *x, float *y, size_t total)
{
    FOR_EACH(i, total) {
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    }
}

__global__ void relu_bwd_kernel(const float *y, const float *dy, float *dx, size_t total)
{
    FOR_EACH(i, total) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

extern "C" void nn_cuda_relu_forward(size_t count, const float *x, float *y)
{
    relu_fwd_kernel<<<blocks_for(count), THREADS>>>(x, y, count);
    KERNEL_OK();
}

extern "C" void nn_cuda_relu_backward(size_t count, const float *y, const float *dy, float *dx)
{
    relu_bwd_kernel<<<blocks_for(count), THREADS>>>(y, dy, dx, count);
    KERNEL_OK();
}

/* nn_rand_u64/nn_rand_uniform of the CPU code, bit for bit */
__device__ static float rand_uniform(uint64_t seed, uint64_t counter)
{
    uint64_t z = seed * 0xd1342543de82ef95ull + counter * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

__global__ void dropout_fwd_kernel(float rate, float scale, uint64_t seed, uint64_t counter,
                                   const float *x, float *mask, float *y, size_t total)
{
    FOR_EACH(i, total) {
        float m = rate <= 0.0f ? 1.0f : (rand_uniform(seed, counter + i) >= rate ? scale : 0.0f);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

__global__ void mul_kernel(const float *a, const float *b, float *out, size_t total)
{
    FOR_EACH(i, total) {
        out[i] = a[i] * b[i];
    }
}

extern "C" void nn_cuda_dropout_forward(size_t count, float rate, uint64_t seed, uint64_t counter,
                                        const float *x, float *mask, float *y)
{
    float scale = rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;
    dropout_fwd_kernel<<<blocks_for(count), THREADS>>>(rate, scale, seed, counter, x, mask, y, count);
    KERNEL_OK();
}

extern "C" void nn_cuda_dropout_backward(size_t count, const float *mask, const float *dy,
                                         float *dx)
{
    mul_kernel<<<blocks_for(count), THREADS>>>(dy, mask, dx, count);
    KERNEL_OK();
}

/* One thread per row: the row's loss and correctness into per-row slots that the
 * host sums in order. */
__global__ void xent_kernel(int n, int classes, const float *logits, const uint8_t *labels,
                            float *dlogits, double *row_loss, int *row_correct)
{
    FOR_EACH(r, (size_t)n) {
        const float *row = logits + r * classes;
        int best = 0;
        for (int j = 1; j < classes; j++) {
            if (row[j] > row[best]) {
                best = j;
            }
        }
        double max = row[best], sum = 0.0;
        for (int j = 0; j < classes; j++) {
            sum += exp((double)row[j] - max);
        }
        double log_sum = log(sum) + max;
        row_loss[r] = log_sum - row[labels[r]];
        row_correct[r] = best == labels[r];
        if (dlogits != NULL) {
            for (int j = 0; j < classes; j++) {
                double p = exp((double)row[j] - log_sum);
                dlogits[r * classes + j] = (float)((p - (j == labels[r])) / n);
            }
        }
    }
}

extern "C" double nn_cuda_softmax_xent(int n, int classes, const float *logits,
                                       const uint8_t *labels, float *dlogits, int *correct_p)
{
    static double *d_loss, *h_loss;
    static int *d_ok, *h_ok;
    static int cap;

    if (n <= 0) {
        if (correct_p != NULL) {
            *correct_p = 0;
        }
        return 0.0;
    }
    if (n > cap) {
        cudaFree(d_loss), cudaFree(d_ok), free(h_loss), free(h_ok);
        CUDA_OK(cudaMalloc((void **)&d_loss, (size_t)n * sizeof(double)));
        CUDA_OK(cudaMalloc((void **)&d_ok, (size_t)n * sizeof(int)));
        h_loss = (double *)malloc((size_t)n * sizeof(double));
        h_ok = (int *)malloc((size_t)n * sizeof(int));
        if (h_loss == NULL || h_ok == NULL) {
            fprintf(stderr, "nn_cuda: out of host memory\n");
            exit(1);
        }
        cap = n;
    }
    xent_kernel<<<blocks_for((size_t)n), THREADS>>>(n, classes, logits, labels, dlogits, d_loss, d_ok);
    KERNEL_OK();
    CUDA_OK(cudaMemcpy(h_loss, d_loss, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(h_ok, d_ok, (size_t)n * sizeof(int), cudaMemcpyDeviceToHost));
    double loss = 0.0;
    int correct = 0;
    for (int i = 0; i < n; i++) {
        loss += h_loss[i];
        correct += h_ok[i];
    }
    if (correct_p != NULL) {
        *correct_p = correct;
    }
    return loss / n;
}

__global__ void sgd_kernel(float lr, float momentum, float wd, const float *g, float *v, float *w,
                           size_t total)
{
    FOR_EACH(i, total) {
        /* separate multiply and add, as the CPU code compiles them */
        float d = __fadd_rn(g[i], __fmul_rn(wd, w[i]));
        v[i] = __fadd_rn(__fmul_rn(momentum, v[i]), d);
        w[i] = __fsub_rn(w[i], __fmul_rn(lr, v[i]));
    }
}

extern "C" void nn_cuda_sgd_step(size_t count, float lr, float momentum, float weight_decay,
                                 const float *g, float *v, float *w)
{
    sgd_kernel<<<blocks_for(count), THREADS>>>(lr, momentum, weight_decay, g, v, w, count);
    KERNEL_OK();
}
