/* Reduction kernels of the cuda module: every dcomm dtype/op on device memory,
 * with kernels/cpu/dc_reduce.h's semantics (AVG reduces as SUM; 16-bit floats
 * are computed in float and rounded to nearest even after each operation;
 * floating MIN/MAX propagate NaN, src's first). */
#ifndef DC_CUDA_KERNELS_H
#define DC_CUDA_KERNELS_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst[i] = dst[i] op src[i] on stream; cudaErrorInvalidValue for an unknown
 * (dtype, op). Asynchronous: the caller synchronizes. */
cudaError_t dc_cuda_reduce_launch(void *dst, const void *src, size_t n, int dtype, int op,
                                  cudaStream_t stream);

/* buf[i] *= factor for floating dtypes, rounded once (AVG's final scaling). */
cudaError_t dc_cuda_scale_launch(void *buf, size_t n, int dtype, double factor,
                                 cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
