/* CNN layers for dtrain on the CPU: float32, NHWC activations, stride-1
 * convolutions (direct register-tiled AVX-512/AVX2 kernels, or im2col + GEMM
 * through OpenBLAS), 2x2 max-pool, ReLU, linear (AVX-512 tiles or OpenBLAS),
 * dropout, softmax cross-entropy and SGD with momentum and weight decay. Every
 * function works on caller-owned buffers so the trainer allocates once and
 * reuses them. */
#ifndef DC_NN_H
#define DC_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets the thread count of the BLAS (OpenBLAS) and of our kernels (at most
 * NN_MAX_THREADS); 0 or less keeps the defaults (the library's, and 1). The
 * direct convolutions' scratch grows with it: size buffers after setting it.
 * Their results do not depend on it. */
enum { NN_MAX_THREADS = 64 };
void nn_set_threads(int threads);
/* Caps the instruction set of our own kernels (direct convolutions, dense
 * products): the widest the CPU has is used up to the cap (default
 * NN_ISA_AVX512). Returns the previous cap; tests use it to run every variant
 * on one machine. Not thread-safe: set it before training. */
enum { NN_ISA_PLAIN = 0, NN_ISA_AVX2 = 1, NN_ISA_AVX512 = 2 };
int nn_set_isa(int max_isa);
/* What runs the convolutions and dense layers on this CPU, for people
 * ("direct convolutions and dense tiles: AVX-512, 1 thread"). */
const char *nn_kernels_config(void);
/* The BLAS library's own description ("OpenBLAS 0.3.21 ... Haswell ...". */
const char *nn_blas_config(void);

/* ---- counter-based random numbers (splitmix64): the same (seed, counter) gives
 * the same value on every rank and after a resume, with no state to save. ---- */
uint64_t nn_rand_u64(uint64_t seed, uint64_t counter);
/* Uniform in [0, 1) with 24 random bits. */
float nn_rand_uniform(uint64_t seed, uint64_t counter);

/* ---- convolution: x [n][h][w][c] -> y [n][oh][ow][oc], weights [oc][k][k][c],
 * oh = h + 2*pad - k + 1 (stride 1). ---- */
typedef struct nn_conv {
    int n, h, w, c; /* input */
    int oc, k, pad;
} nn_conv_t;

int nn_conv_out_h(const nn_conv_t *s);
int nn_conv_out_w(const nn_conv_t *s);
/* Floats the im2col buffer needs: n*oh*ow rows of k*k*c. */
size_t nn_conv_col_floats(const nn_conv_t *s);
/* col is scratch of nn_conv_col_floats() floats; it keeps the patches for backward. */
void nn_conv2d_forward(const nn_conv_t *s, const float *x, const float *w, const float *b,
                       float *col, float *y);
/* col: as left by forward. dw, db: overwritten. dx == NULL skips the input gradient
 * (the first layer); otherwise dcol is scratch of nn_conv_col_floats() floats. */
void nn_conv2d_backward(const nn_conv_t *s, const float *col, const float *w, const float *dy,
                        float *dw, float *db, float *dcol, float *dx);

/* Direct convolution (nn_direct.c): the same layer without the im2col matrix,
 * register-tiled AVX2+FMA kernels reading each zero-bordered image in place
 * (plain loops where AVX2 is missing). scratch: nn_conv_direct_scratch_floats()
 * floats (which depends on nn_set_threads). Backward takes the forward's input x instead of the patch matrix;
 * dw, db are overwritten; dx == NULL skips the input gradient. Supported when
 * k - 1 - pad >= 0 (every "same" or "valid" convolution). */
int nn_conv_direct_supported(const nn_conv_t *s);
size_t nn_conv_direct_scratch_floats(const nn_conv_t *s);
void nn_conv2d_direct_forward(const nn_conv_t *s, const float *x, const float *w, const float *b,
                              float *scratch, float *y);
void nn_conv2d_direct_backward(const nn_conv_t *s, const float *x, const float *w, const float *dy,
                               float *dw, float *db, float *scratch, float *dx);

/* ---- 2x2 max-pool with stride 2 (h and w even): x [n][h][w][c] -> y
 * [n][h/2][w/2][c]; idx records each maximum's offset in x for backward. ---- */
void nn_maxpool2_forward(int n, int h, int w, int c, const float *x, float *y, int32_t *idx);
/* dx [n][h][w][c] is overwritten: zero except the recorded maxima. */
void nn_maxpool2_backward(int n, int h, int w, int c, const float *dy, const int32_t *idx,
                          float *dx);

/* ReLU and 2x2 max-pool in one pass (max commutes with ReLU): y = max(0, the
 * window's maximum); idx is the maximum's offset in x, or -1 where y is 0 (no
 * gradient flows). Backward overwrites all of dx [n][h][w][c]: dy at the
 * recorded maxima, 0 elsewhere -- the gradient of ReLU then max-pool. */
void nn_relu_maxpool2_forward(int n, int h, int w, int c, const float *x, float *y, int32_t *idx);
void nn_relu_maxpool2_backward(int n, int h, int w, int c, const float *dy, const int32_t *idx,
                               float *dx);

/* ---- ReLU (in place allowed): y = max(x, 0); dx = dy where y > 0. ---- */
void nn_relu_forward(size_t count, const float *x, float *y);
void nn_relu_backward(size_t count, const float *y, const float *dy, float *dx);

/* ---- linear: x [n][in] -> y [n][out] = x w^T + b, w [out][in]. ---- */
void nn_linear_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                       float *y);
/* dw, db overwritten; dx == NULL skips the input gradient. */
void nn_linear_backward(int n, int in, int out, const float *x, const float *w, const float *dy,
                        float *dw, float *db, float *dx);

/* ---- inverted dropout: keeps each element with probability 1 - rate and scales
 * it by 1 / (1 - rate); mask[i] = the factor applied (0 or 1/(1-rate)). Element i
 * draws nn_rand_uniform(seed, counter + i). rate 0 copies. ---- */
void nn_dropout_forward(size_t count, float rate, uint64_t seed, uint64_t counter,
                        const float *x, float *mask, float *y);
void nn_dropout_backward(size_t count, const float *mask, const float *dy, float *dx);

/* ---- softmax cross-entropy over n rows of `classes` logits. Returns the mean
 * loss; dlogits (may be NULL) gets d(mean loss)/d(logits); *correct_p (may be
 * NULL) the number of rows whose largest logit is the label. ---- */
double nn_softmax_xent(int n, int classes, const float *logits, const uint8_t *labels,
                       float *dlogits, int *correct_p);
/* Index of the largest of each row's logits into pred[n]. */
void nn_argmax(int n, int classes, const float *logits, uint8_t *pred);

/* ---- SGD with momentum and L2 weight decay (PyTorch's formulation):
 * v = momentum * v + (g + weight_decay * w);  w -= lr * v. ---- */
void nn_sgd_step(size_t count, float lr, float momentum, float weight_decay, const float *g,
                 float *v, float *w);

#ifdef __cplusplus
}
#endif

#endif /* DC_NN_H */
