/*
 * The cuda module (libdcomm-cuda.so): tells device from host pointers (CUDA
 * pointer attributes), reduces on the GPU for every dtype/op (cuda_kernels.cu),
 * and gives pinned host buffers for staging through transports that cannot
 * read device memory. One non-blocking stream of its own; calls come from the
 * coordinator thread only. Declines at init where no device is present.
 */
#include <cuda_runtime_api.h>

#include "cuda_kernels.h"
#include "module_shim.h"

static cudaStream_t cuda_stream;
static int cuda_stream_device = -1; /* the device cuda_stream belongs to */
static int cuda_ndevices;

static dc_status_t cuda_error(cudaError_t err, const char *what)
{
    return dc_error_set(DCOMM_ERR_INTERNAL, "cuda: %s failed: %s (%s)", what,
                        cudaGetErrorString(err), cudaGetErrorName(err));
}

static int cuda_device_of(const void *ptr)
{
    struct cudaPointerAttributes attr;

    if (ptr == NULL || cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
        cudaGetLastError(); /* a plain host pointer may report an error: clear it */
        return -1;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged
               ? attr.device : -1;
}

static int cuda_is_device_ptr(const void *ptr)
{
    return cuda_device_of(ptr) >= 0;
}

/* The current device is per thread (the coordinator's starts at 0), and the
 * stream belongs to the device current when it was made: a kernel on it must
 * not touch another device's memory, so a change of device remakes it. */
static dc_status_t cuda_use_device(int device)
{
    cudaError_t err = cudaSetDevice(device);

    if (err != cudaSuccess) {
        return cuda_error(err, "cudaSetDevice");
    }
    if (device == cuda_stream_device) {
        return DCOMM_OK;
    }
    if (cuda_stream != NULL) {
        cudaStreamDestroy(cuda_stream);
        cuda_stream = NULL;
    }
    err = cudaStreamCreateWithFlags(&cuda_stream, cudaStreamNonBlocking);
    if (err != cudaSuccess) {
        cuda_stream_device = -1;
        return cuda_error(err, "cudaStreamCreate");
    }
    cuda_stream_device = device;
    return DCOMM_OK;
}

static dc_status_t cuda_sync(cudaError_t err, const char *what)
{
    if (err == cudaSuccess) {
        err = cudaStreamSynchronize(cuda_stream);
    }
    return err == cudaSuccess ? DCOMM_OK : cuda_error(err, what);
}

static dc_status_t cuda_reduce(void *dst, const void *src, size_t count, int dtype, int op)
{
    return cuda_sync(dc_cuda_reduce_launch(dst, src, count, dtype, op, cuda_stream), "reduce");
}

static dc_status_t cuda_scale(void *buf, size_t count, int dtype, double factor)
{
    return cuda_sync(dc_cuda_scale_launch(buf, count, dtype, factor, cuda_stream), "scale");
}

static dc_status_t cuda_copy(void *dst, const void *src, size_t len)
{
    return cuda_sync(cudaMemcpyAsync(dst, src, len, cudaMemcpyDefault, cuda_stream), "memcpy");
}

static dc_status_t cuda_host_alloc(size_t len, void **ptr_p)
{
    cudaError_t err = cudaHostAlloc(ptr_p, len ? len : 1, cudaHostAllocPortable);

    return err == cudaSuccess ? DCOMM_OK : cuda_error(err, "cudaHostAlloc");
}

static void cuda_host_free(void *ptr)
{
    cudaFreeHost(ptr);
}

static dc_status_t cuda_device_alloc(size_t len, void **ptr_p)
{
    cudaError_t err = cudaMalloc(ptr_p, len ? len : 1);

    return err == cudaSuccess ? DCOMM_OK : cuda_error(err, "cudaMalloc");
}

static void cuda_device_free(void *ptr)
{
    cudaFree(ptr);
}

static int cuda_device_count(void)
{
    return cuda_ndevices;
}

static const dc_cuda_ops_t cuda_ops = {
    .is_device_ptr = cuda_is_device_ptr,
    .reduce = cuda_reduce,
    .scale = cuda_scale,
    .memcpy = cuda_copy,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .device_alloc = cuda_device_alloc,
    .device_free = cuda_device_free,
    .device_count = cuda_device_count,
    .device_of = cuda_device_of,
    .use_device = cuda_use_device,
};

static dc_status_t cuda_module_init(const dc_module_host_t *host)
{
    cudaError_t err;

    dc_module_shim_init(host);
    err = cudaGetDeviceCount(&cuda_ndevices);
    if (err != cudaSuccess || cuda_ndevices == 0) {
        cuda_ndevices = 0;
        return dc_error_set(DCOMM_ERR_UNSUPPORTED, "no CUDA device: %s",
                            err != cudaSuccess ? cudaGetErrorString(err) : "count is 0");
    }
    err = cudaGetDevice(&cuda_stream_device);
    if (err == cudaSuccess) {
        err = cudaStreamCreateWithFlags(&cuda_stream, cudaStreamNonBlocking);
    }
    if (err != cudaSuccess) {
        cuda_stream_device = -1;
        return cuda_error(err, "cudaStreamCreate");
    }
    DC_DEBUG("cuda: %d device(s)", cuda_ndevices);
    return DCOMM_OK;
}

__attribute__((visibility("default"))) const dc_module_t dcomm_module_v1_cuda = {
    .abi_version = DC_MODULE_ABI_VERSION,
    .name = "cuda",
    .init = cuda_module_init,
    .cuda = &cuda_ops,
};
