/*
 * GPU reductions for the cuda module: one grid-stride kernel per (dtype, op),
 * instantiated from templates. Integer SUM/PROD wrap (computed unsigned, so
 * signed overflow is defined); fp16/bf16 go through float with one rounding per
 * operation, as the CPU kernels do, so both give the same bits for non-NaN data.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda_kernels.h"
#include "dcomm.h"

namespace {

template <typename T> struct Wide { typedef T type; };
template <> struct Wide<int8_t> { typedef uint8_t type; };
template <> struct Wide<int32_t> { typedef uint32_t type; };
template <> struct Wide<int64_t> { typedef uint64_t type; };

/* Storage types for the 16-bit floats: their raw bits. */
struct Half { uint16_t bits; };
struct Bf16 { uint16_t bits; };

__device__ inline float to_f(Half h) { return __half2float(__ushort_as_half(h.bits)); }
__device__ inline float to_f(Bf16 h) { return __bfloat162float(__ushort_as_bfloat16(h.bits)); }

/* NaN keeps the CPU rule: quiet bit set, top payload bits. */
__device__ inline Half from_f(float f, Half)
{
    if (isnan(f)) {
        uint32_t b = __float_as_uint(f);
        return Half{(uint16_t)(((b >> 16) & 0x8000u) | 0x7e00u | ((b & 0x7fffffu) >> 13))};
    }
    return Half{__half_as_ushort(__float2half_rn(f))};
}
__device__ inline Bf16 from_f(float f, Bf16)
{
    if (isnan(f)) {
        return Bf16{(uint16_t)((__float_as_uint(f) >> 16) | 0x40u)};
    }
    return Bf16{__bfloat16_as_ushort(__float2bfloat16_rn(f))};
}
__device__ inline bool is_nan16(Half h) { return (h.bits & 0x7c00u) == 0x7c00u && (h.bits & 0x3ffu); }
__device__ inline bool is_nan16(Bf16 h) { return (h.bits & 0x7f80u) == 0x7f80u && (h.bits & 0x7fu); }
__device__ inline uint16_t quiet16(Half) { return 0x200u; }
__device__ inline uint16_t quiet16(Bf16) { return 0x40u; }

struct OpSum {
    template <typename T> __device__ static T f(T a, T b)
    {
        typedef typename Wide<T>::type W;
        return (T)((W)a + (W)b);
    }
    __device__ static float f(float a, float b) { return a + b; }
    __device__ static double f(double a, double b) { return a + b; }
    template <typename H> __device__ static H h(H a, H b) { return from_f(to_f(a) + to_f(b), a); }
};
struct OpProd {
    template <typename T> __device__ static T f(T a, T b)
    {
        typedef typename Wide<T>::type W;
        return (T)((W)a * (W)b);
    }
    __device__ static float f(float a, float b) { return a * b; }
    __device__ static double f(double a, double b) { return a * b; }
    template <typename H> __device__ static H h(H a, H b) { return from_f(to_f(a) * to_f(b), a); }
};
/* MIN/MAX: b (src) NaN wins, then a (dst); on a tie a is kept. */
struct OpMin {
    template <typename T> __device__ static T f(T a, T b) { return b < a ? b : a; }
    __device__ static float f(float a, float b) { return isnan(b) ? b : (b < a ? b : a); }
    __device__ static double f(double a, double b) { return isnan(b) ? b : (b < a ? b : a); }
    template <typename H> __device__ static H h(H a, H b)
    {
        if (is_nan16(b)) return H{(uint16_t)(b.bits | quiet16(b))};
        if (is_nan16(a)) return H{(uint16_t)(a.bits | quiet16(a))};
        return to_f(b) < to_f(a) ? b : a;
    }
};
struct OpMax {
    template <typename T> __device__ static T f(T a, T b) { return b > a ? b : a; }
    __device__ static float f(float a, float b) { return isnan(b) ? b : (b > a ? b : a); }
    __device__ static double f(double a, double b) { return isnan(b) ? b : (b > a ? b : a); }
    template <typename H> __device__ static H h(H a, H b)
    {
        if (is_nan16(b)) return H{(uint16_t)(b.bits | quiet16(b))};
        if (is_nan16(a)) return H{(uint16_t)(a.bits | quiet16(a))};
        return to_f(b) > to_f(a) ? b : a;
    }
};

template <typename Op, typename T> struct Apply {
    __device__ static T run(T a, T b) { return Op::f(a, b); }
};
template <typename Op> struct Apply<Op, Half> {
    __device__ static Half run(Half a, Half b) { return Op::h(a, b); }
};
template <typename Op> struct Apply<Op, Bf16> {
    __device__ static Bf16 run(Bf16 a, Bf16 b) { return Op::h(a, b); }
};

template <typename Op, typename T>
__global__ void reduce_kernel(T *dst, const T *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        dst[i] = Apply<Op, T>::run(dst[i], src[i]);
    }
}

template <typename T> __device__ inline T scale_one(T x, double f) { return x; }
template <> __device__ inline float scale_one(float x, double f) { return (float)((double)x * f); }
template <> __device__ inline double scale_one(double x, double f) { return x * f; }
template <> __device__ inline Half scale_one(Half x, double f)
{
    return is_nan16(x) ? from_f(to_f(x), x)
                       : Half{__half_as_ushort(__double2half((double)to_f(x) * f))};
}
template <> __device__ inline Bf16 scale_one(Bf16 x, double f)
{
    return is_nan16(x) ? from_f(to_f(x), x)
                       : Bf16{__bfloat16_as_ushort(__double2bfloat16((double)to_f(x) * f))};
}

template <typename T> __global__ void scale_kernel(T *buf, size_t n, double f)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        buf[i] = scale_one(buf[i], f);
    }
}

const int kThreads = 256;

unsigned blocks_for(size_t n)
{
    size_t b = (n + kThreads - 1) / kThreads;
    return (unsigned)(b < 65535 ? (b ? b : 1) : 65535);
}

template <typename T>
cudaError_t launch_op(void *dst, const void *src, size_t n, int op, cudaStream_t s)
{
    T *d = (T *)dst;
    const T *c = (const T *)src;

    switch (op) {
    case DCOMM_SUM:
    case DCOMM_AVG: reduce_kernel<OpSum, T><<<blocks_for(n), kThreads, 0, s>>>(d, c, n); break;
    case DCOMM_PROD: reduce_kernel<OpProd, T><<<blocks_for(n), kThreads, 0, s>>>(d, c, n); break;
    case DCOMM_MIN: reduce_kernel<OpMin, T><<<blocks_for(n), kThreads, 0, s>>>(d, c, n); break;
    case DCOMM_MAX: reduce_kernel<OpMax, T><<<blocks_for(n), kThreads, 0, s>>>(d, c, n); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

} // namespace

extern "C" cudaError_t dc_cuda_reduce_launch(void *dst, const void *src, size_t n, int dtype,
                                             int op, cudaStream_t stream)
{
    if (n == 0) {
        return cudaSuccess;
    }
    if (op == DCOMM_AVG && dtype < DCOMM_FLOAT16) {
        return cudaErrorInvalidValue;
    }
    switch (dtype) {
    case DCOMM_UINT8: return launch_op<uint8_t>(dst, src, n, op, stream);
    case DCOMM_INT8: return launch_op<int8_t>(dst, src, n, op, stream);
    case DCOMM_INT32: return launch_op<int32_t>(dst, src, n, op, stream);
    case DCOMM_INT64: return launch_op<int64_t>(dst, src, n, op, stream);
    case DCOMM_FLOAT16: return launch_op<Half>(dst, src, n, op, stream);
    case DCOMM_BFLOAT16: return launch_op<Bf16>(dst, src, n, op, stream);
    case DCOMM_FLOAT32: return launch_op<float>(dst, src, n, op, stream);
    case DCOMM_FLOAT64: return launch_op<double>(dst, src, n, op, stream);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t dc_cuda_scale_launch(void *buf, size_t n, int dtype, double factor,
                                            cudaStream_t stream)
{
    if (n == 0) {
        return cudaSuccess;
    }
    switch (dtype) {
    case DCOMM_FLOAT16: scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>((Half *)buf, n, factor); break;
    case DCOMM_BFLOAT16: scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>((Bf16 *)buf, n, factor); break;
    case DCOMM_FLOAT32: scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>((float *)buf, n, factor); break;
    case DCOMM_FLOAT64: scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>((double *)buf, n, factor); break;
    default: return cudaSuccess; /* integers are left untouched */
    }
    return cudaGetLastError();
}
