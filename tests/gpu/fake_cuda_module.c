/*
 * A stand-in libdcomm-cuda.so for machines without a GPU, for tests only: its
 * "device memory" is a memfd mapped twice, once PROT_NONE (the address the
 * program and the core see, so that any host access to it by the core, such
 * as a memcpy on the host path, crashes as it would on a GPU) and once
 * read-write (the module's own view, through which its copies, reductions and
 * scaling work). Lets CI run the coordinator's routing of device tensors:
 * classification, agreement, fusion by kind and staging (and, with
 * fake_nccl_module.c in the same library, the NCCL path of one rank).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dc_reduce.h"
#include "fake_device.h"
#include "module_shim.h"

#define FAKE_REGIONS 1024

typedef struct region {
    char *dev;    /* PROT_NONE */
    char *shadow; /* the same pages, read-write */
    size_t len;
} region_t;

static region_t regions[FAKE_REGIONS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static region_t *find(const void *ptr)
{
    const char *p = ptr;

    for (int i = 0; i < FAKE_REGIONS; i++) {
        if (regions[i].dev != NULL && p >= regions[i].dev && p < regions[i].dev + regions[i].len) {
            return &regions[i];
        }
    }
    return NULL;
}

void *dc_fake_view(const void *ptr, size_t len, dc_status_t *status)
{
    region_t *r;
    void *v = (void *)ptr;

    pthread_mutex_lock(&lock);
    r = find(ptr);
    if (r != NULL) {
        size_t off = (size_t)((const char *)ptr - r->dev);

        v = off + len <= r->len ? r->shadow + off : NULL;
    }
    pthread_mutex_unlock(&lock);
    if (v == NULL) {
        *status = dc_error_set(DCOMM_ERR_INVALID_ARG, "fake cuda: %zu bytes at %p overrun a "
                               "device allocation", len, ptr);
    }
    return v;
}

static int fake_device_of(const void *ptr)
{
    int dev;

    pthread_mutex_lock(&lock);
    dev = ptr != NULL && find(ptr) != NULL ? 0 : -1;
    pthread_mutex_unlock(&lock);
    return dev;
}

static int fake_is_device_ptr(const void *ptr)
{
    return fake_device_of(ptr) >= 0;
}

static dc_status_t fake_memcpy(void *dst, const void *src, size_t len)
{
    dc_status_t status = DCOMM_OK;
    void *d = dc_fake_view(dst, len, &status);
    const void *s = dc_fake_view(src, len, &status);

    if (status == DCOMM_OK && len > 0) {
        memmove(d, s, len);
    }
    return status;
}

static dc_status_t fake_reduce(void *dst, const void *src, size_t count, int dtype, int op)
{
    size_t len = count * dc_reduce_dtype_size((dcomm_dtype_t)dtype);
    dc_status_t status = DCOMM_OK;
    void *d = dc_fake_view(dst, len, &status);
    const void *s = dc_fake_view(src, len, &status);

    if (status == DCOMM_OK) {
        dc_reduce(d, s, count, (dcomm_dtype_t)dtype, (dcomm_op_t)op);
    }
    return status;
}

static dc_status_t fake_scale(void *buf, size_t count, int dtype, double factor)
{
    dc_status_t status = DCOMM_OK;
    void *b = dc_fake_view(buf, count * dc_reduce_dtype_size((dcomm_dtype_t)dtype), &status);

    if (status == DCOMM_OK) {
        dc_reduce_scale(b, count, (dcomm_dtype_t)dtype, factor);
    }
    return status;
}

static dc_status_t fake_host_alloc(size_t len, void **ptr_p)
{
    *ptr_p = malloc(len ? len : 1);
    return *ptr_p ? DCOMM_OK : dc_error_set(DCOMM_ERR_NO_MEMORY, "fake cuda: out of memory");
}

static void fake_host_free(void *ptr)
{
    free(ptr);
}

static dc_status_t fake_device_alloc(size_t len, void **ptr_p)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), size = (len + page - 1) / page * page;
    int fd = memfd_create("dcomm-fake-device", MFD_CLOEXEC);
    char *dev = MAP_FAILED, *shadow = MAP_FAILED;
    region_t *slot = NULL;

    size = size ? size : page;
    if (fd >= 0 && ftruncate(fd, (off_t)size) == 0) {
        dev = mmap(NULL, size, PROT_NONE, MAP_SHARED, fd, 0);
        shadow = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (fd >= 0) {
        close(fd);
    }
    pthread_mutex_lock(&lock);
    for (int i = 0; i < FAKE_REGIONS && slot == NULL; i++) {
        slot = regions[i].dev == NULL ? &regions[i] : NULL;
    }
    if (slot != NULL && dev != MAP_FAILED && shadow != MAP_FAILED) {
        *slot = (region_t){dev, shadow, size};
        pthread_mutex_unlock(&lock);
        *ptr_p = dev;
        return DCOMM_OK;
    }
    pthread_mutex_unlock(&lock);
    if (dev != MAP_FAILED) {
        munmap(dev, size);
    }
    if (shadow != MAP_FAILED) {
        munmap(shadow, size);
    }
    return dc_error_set(DCOMM_ERR_NO_MEMORY, "fake cuda: cannot map %zu bytes", size);
}

static void fake_device_free(void *ptr)
{
    region_t *r;

    pthread_mutex_lock(&lock);
    r = find(ptr);
    if (r != NULL) {
        munmap(r->dev, r->len);
        munmap(r->shadow, r->len);
        memset(r, 0, sizeof(*r));
    }
    pthread_mutex_unlock(&lock);
}

static int fake_device_count(void)
{
    return 1;
}

static dc_status_t fake_use_device(int device)
{
    return device == 0 ? DCOMM_OK
                       : dc_error_set(DCOMM_ERR_INVALID_ARG, "fake cuda: no device %d", device);
}

static const dc_cuda_ops_t fake_ops = {
    .is_device_ptr = fake_is_device_ptr,
    .reduce = fake_reduce,
    .scale = fake_scale,
    .memcpy = fake_memcpy,
    .host_alloc = fake_host_alloc,
    .host_free = fake_host_free,
    .device_alloc = fake_device_alloc,
    .device_free = fake_device_free,
    .device_count = fake_device_count,
    .device_of = fake_device_of,
    .use_device = fake_use_device,
};

static dc_status_t fake_init(const dc_module_host_t *host)
{
    dc_module_shim_init(host);
    return DCOMM_OK;
}

__attribute__((visibility("default"))) const dc_module_t dcomm_module_v1_cuda = {
    .abi_version = DC_MODULE_ABI_VERSION,
    .name = "cuda",
    .init = fake_init,
    .cuda = &fake_ops,
};
