/* dtrain's CNN layers on an NVIDIA GPU: the functions of kernels/cpu/nn/nn.h
 * with the same arguments and layouts (NHWC, float32), every pointer in device
 * memory. GEMMs go through cuBLAS; the rest are our kernels. Results match the
 * CPU layers to float rounding (tests/unit/test_nn_cuda.c states the tolerance);
 * the reductions are written without atomics, so a run is deterministic. */
#ifndef DC_NN_CUDA_H
#define DC_NN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when a usable GPU is present; else 0 and the reason in why (errlen bytes). */
int nn_cuda_available(char *why, size_t errlen);

void *nn_cuda_alloc(size_t bytes); /* zeroed device memory, NULL on failure */
void nn_cuda_free(void *p);
void nn_cuda_upload(void *dst, const void *src_host, size_t bytes);
void nn_cuda_download(void *dst_host, const void *src, size_t bytes);

void nn_cuda_conv2d_forward(const nn_conv_t *s, const float *x, const float *w, const float *b,
                            float *col, float *y);
void nn_cuda_conv2d_backward(const nn_conv_t *s, const float *col, const float *w,
                             const float *dy, float *dw, float *db, float *dcol, float *dx);
void nn_cuda_maxpool2_forward(int n, int h, int w, int c, const float *x, float *y, int32_t *idx);
void nn_cuda_maxpool2_backward(int n, int h, int w, int c, const float *dy, const int32_t *idx,
                               float *dx);
void nn_cuda_relu_forward(size_t count, const float *x, float *y);
void nn_cuda_relu_backward(size_t count, const float *y, const float *dy, float *dx);
void nn_cuda_linear_forward(int n, int in, int out, const float *x, const float *w,
                            const float *b, float *y);
void nn_cuda_linear_backward(int n, int in, int out, const float *x, const float *w,
                             const float *dy, float *dw, float *db, float *dx);
void nn_cuda_dropout_forward(size_t count, float rate, uint64_t seed, uint64_t counter,
                             const float *x, float *mask, float *y);
void nn_cuda_dropout_backward(size_t count, const float *mask, const float *dy, float *dx);
/* logits and labels in device memory; the loss comes back to the host. */
double nn_cuda_softmax_xent(int n, int classes, const float *logits, const uint8_t *labels,
                            float *dlogits, int *correct_p);
void nn_cuda_sgd_step(size_t count, float lr, float momentum, float weight_decay,
                      const float *g, float *v, float *w);

#ifdef __cplusplus
}
#endif

#endif
