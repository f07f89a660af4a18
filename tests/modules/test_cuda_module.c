/*
 * The cuda module on a GPU: pointer kinds (device, pageable host, pinned host),
 * GPU reductions for every dtype/op against the CPU kernels (bit for bit; inputs
 * are small integers so every op is exact, plus NaNs for floating MIN/MAX), the
 * AVG scaling (within one ulp of the CPU's single rounding), staging through a
 * pinned buffer, and a bandwidth figure. Exits 77 (skip) without a GPU.
 */
#include <inttypes.h>
#include <math.h>
#include <time.h>

#include "dc_reduce.h"
#include "gpu_util.h"

static const char *const dtype_names[] = {"uint8", "int8", "int32", "int64",
                                          "float16", "bfloat16", "float32", "float64"};
static const char *const op_names[] = {"sum", "avg", "min", "max", "prod"};

static const dc_cuda_ops_t *cu;
static int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                           \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

/* Small values (|v| <= 3, nonzero for PROD) so results are exact in every dtype. */
static void fill(void *buf, size_t n, int dtype, unsigned seed, int with_nan)
{
    size_t es = dc_reduce_dtype_size((dcomm_dtype_t)dtype);

    for (size_t i = 0; i < n; i++) {
        int v = (int)((seed * 2654435761u + (unsigned)i * 40503u) % 7u) - 3;
        uint8_t *p = (uint8_t *)buf + i * es;

        v = v == 0 ? 1 : v;
        switch (dtype) {
        case DCOMM_UINT8: *p = (uint8_t)(v + 3); break;
        case DCOMM_INT8: *(int8_t *)p = (int8_t)v; break;
        case DCOMM_INT32: memcpy(p, &(int32_t){v}, 4); break;
        case DCOMM_INT64: memcpy(p, &(int64_t){v}, 8); break;
        case DCOMM_FLOAT16:
            memcpy(p, &(uint16_t){with_nan && i % 97 == seed % 5 ? 0x7d01 : dc_float_to_half((float)v)}, 2);
            break;
        case DCOMM_BFLOAT16:
            memcpy(p, &(uint16_t){with_nan && i % 97 == seed % 5 ? 0x7f81 : dc_float_to_bf16((float)v)}, 2);
            break;
        case DCOMM_FLOAT32: memcpy(p, &(float){with_nan && i % 97 == seed % 5 ? NAN : (float)v}, 4); break;
        case DCOMM_FLOAT64: memcpy(p, &(double){with_nan && i % 97 == seed % 5 ? NAN : (double)v}, 8); break;
        }
    }
}

static void check_pointers(void)
{
    void *dev = NULL, *pinned = NULL, *host = malloc(64);
    int stack_var = 0;

    CHECK(cu->device_alloc(64, &dev) == DCOMM_OK, "device_alloc");
    CHECK(cu->host_alloc(64, &pinned) == DCOMM_OK, "host_alloc");
    CHECK(cu->is_device_ptr(dev) == 1, "device pointer seen as host");
    CHECK(cu->is_device_ptr(host) == 0, "malloc'd pointer seen as device");
    CHECK(cu->is_device_ptr(&stack_var) == 0, "stack pointer seen as device");
    CHECK(cu->is_device_ptr(pinned) == 0, "pinned host pointer seen as device");
    CHECK(cu->is_device_ptr(NULL) == 0, "NULL seen as device");
    cu->device_free(dev);
    cu->host_free(pinned);
    free(host);
}

/* One (dtype, op, n) case: GPU result against dc_reduce on the host. */
static void check_case(int dtype, int op, size_t n, void *ha, void *hb, void *hout, void *da,
                       void *db)
{
    size_t es = dc_reduce_dtype_size((dcomm_dtype_t)dtype), bytes = n * es;
    int nan = (op == DCOMM_MIN || op == DCOMM_MAX) && dtype >= DCOMM_FLOAT16;

    fill(ha, n, dtype, 1, nan);
    fill(hb, n, dtype, 2, nan);
    CHECK(cu->memcpy(da, ha, bytes) == DCOMM_OK && cu->memcpy(db, hb, bytes) == DCOMM_OK,
          "upload");
    CHECK(cu->reduce(da, db, n, dtype, op) == DCOMM_OK, "reduce %s %s", dtype_names[dtype],
          op_names[op]);
    CHECK(cu->memcpy(hout, da, bytes) == DCOMM_OK, "download");
    dc_reduce(ha, hb, n, (dcomm_dtype_t)dtype, (dcomm_op_t)op);
    for (size_t i = 0; i < n; i++) {
        if (memcmp((char *)ha + i * es, (char *)hout + i * es, es) != 0) {
            CHECK(0, "%s %s n=%zu: element %zu differs from the CPU kernel", dtype_names[dtype],
                  op_names[op], n, i);
            break;
        }
    }
}

/* AVG's final scaling: within one unit in the last place of the CPU result. */
static void check_scale(int dtype, size_t n, void *ha, void *hout, void *da)
{
    size_t es = dc_reduce_dtype_size((dcomm_dtype_t)dtype);
    double factor = 1.0 / 3.0;
    size_t exact = 0;

    fill(ha, n, dtype, 3, 0);
    CHECK(cu->memcpy(da, ha, n * es) == DCOMM_OK, "upload");
    CHECK(cu->scale(da, n, dtype, factor) == DCOMM_OK, "scale %s", dtype_names[dtype]);
    CHECK(cu->memcpy(hout, da, n * es) == DCOMM_OK, "download");
    dc_reduce_scale(ha, n, (dcomm_dtype_t)dtype, factor);
    for (size_t i = 0; i < n; i++) {
        int64_t a = 0, b = 0;

        memcpy(&a, (char *)ha + i * es, es);
        memcpy(&b, (char *)hout + i * es, es);
        exact += a == b;
        if (llabs(a - b) > 1) {
            CHECK(0, "scale %s: element %zu more than one ulp off", dtype_names[dtype], i);
            break;
        }
    }
    printf("scale %-8s: %zu of %zu bit-identical to the CPU\n", dtype_names[dtype], exact, n);
}

static void check_staging(size_t n)
{
    char *pinned = NULL, *host = malloc(n);
    void *dev = NULL;

    for (size_t i = 0; i < n; i++) {
        host[i] = (char)(i * 7);
    }
    CHECK(cu->host_alloc(n, (void **)&pinned) == DCOMM_OK && cu->device_alloc(n, &dev) == DCOMM_OK,
          "staging buffers");
    CHECK(cu->memcpy(dev, host, n) == DCOMM_OK, "host -> device");
    CHECK(cu->memcpy(pinned, dev, n) == DCOMM_OK, "device -> pinned");
    CHECK(memcmp(pinned, host, n) == 0, "staged copy differs");
    cu->host_free(pinned);
    cu->device_free(dev);
    free(host);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bandwidth(void)
{
    size_t n = 64u << 20; /* float32 elements: 256 MiB per buffer */
    void *a = NULL, *b = NULL;
    double t;

    if (cu->device_alloc(n * 4, &a) < 0 || cu->device_alloc(n * 4, &b) < 0) {
        CHECK(0, "device_alloc for the bandwidth figure");
        return;
    }
    cu->reduce(a, b, n, DCOMM_FLOAT32, DCOMM_SUM); /* warm-up */
    t = now_s();
    for (int i = 0; i < 10; i++) {
        cu->reduce(a, b, n, DCOMM_FLOAT32, DCOMM_SUM);
    }
    t = (now_s() - t) / 10;
    printf("float32 sum of 256 MiB: %.3f ms, %.1f GB/s (3 x 256 MiB moved)\n", t * 1e3,
           3.0 * n * 4 / t / 1e9);
    cu->device_free(a);
    cu->device_free(b);
}

int main(void)
{
    static const size_t counts[] = {0, 1, 7, 1000003};
    size_t maxn = 1000003, maxb = maxn * 8;
    void *ha = malloc(maxb), *hb = malloc(maxb), *hout = malloc(maxb), *da = NULL, *db = NULL;
    int cases = 0;

    cu = gpu_module_or_skip("cuda")->cuda;
    printf("cuda module: %d device(s)\n", cu->device_count());
    check_pointers();
    if (cu->device_alloc(maxb, &da) < 0 || cu->device_alloc(maxb, &db) < 0) {
        fprintf(stderr, "FAIL: device_alloc\n");
        return 1;
    }
    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (int op = 0; op < DCOMM_OP_COUNT; op++) {
            if (!dc_reduce_supported((dcomm_dtype_t)dt, (dcomm_op_t)op)) {
                CHECK(cu->reduce(da, db, 1, dt, op) < 0, "%s %s accepted", dtype_names[dt],
                      op_names[op]);
                continue;
            }
            for (size_t c = 0; c < DC_ARRAY_SIZE(counts); c++, cases++) {
                check_case(dt, op, counts[c], ha, hb, hout, da, db);
            }
        }
        check_scale(dt, maxn, ha, hout, da);
    }
    check_staging(3u << 20);
    bandwidth();
    cu->device_free(da);
    cu->device_free(db);
    free(ha);
    free(hb);
    free(hout);
    printf("%s: %d reduction cases, %d failures\n", failures ? "FAIL" : "PASS", cases, failures);
    return failures ? 1 : 0;
}
