/*
 * reduce_bw: throughput of dc_reduce (dst op= src) per ISA level, dtype and
 * buffer size. GB/s counts the bytes of dst and src read plus dst written.
 * Usage: reduce_bw [max_bytes]   (default 64 MiB)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dc_reduce.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best of a few timed batches, each at least ~50 ms. */
static double measure(void *dst, const void *src, size_t n, dcomm_dtype_t dt, dcomm_op_t op)
{
    size_t reps = 1, bytes = n * dc_reduce_dtype_size(dt);
    double best = 0.0, t0, dt_s;

    for (;;) {
        t0 = now_s();
        for (size_t r = 0; r < reps; r++) {
            dc_reduce(dst, src, n, dt, op);
        }
        dt_s = now_s() - t0;
        if (dt_s > 0.05) {
            break;
        }
        reps *= 2;
    }
    for (int trial = 0; trial < 3; trial++) {
        double gbs;

        t0 = now_s();
        for (size_t r = 0; r < reps; r++) {
            dc_reduce(dst, src, n, dt, op);
        }
        gbs = 3.0 * (double)bytes * (double)reps / (now_s() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    static const char *const isas[]  = {"scalar", "avx2", "avx512"};
    static const struct {
        dcomm_dtype_t dt;
        const char *name;
    } dtypes[] = {{DCOMM_FLOAT32, "f32"}, {DCOMM_FLOAT16, "f16"}, {DCOMM_BFLOAT16, "bf16"},
                  {DCOMM_INT8, "i8"},     {DCOMM_INT64, "i64"},   {DCOMM_FLOAT64, "f64"}};
    size_t max_bytes = (argc > 1) ? strtoull(argv[1], NULL, 0) : (64u << 20);
    unsigned char *dst = malloc(max_bytes), *src = malloc(max_bytes);

    if (!dst || !src) {
        fprintf(stderr, "reduce_bw: cannot allocate 2 x %zu bytes\n", max_bytes);
        return 1;
    }
    /* small values: sums stay finite, no denormals or NaN slow paths */
    for (size_t i = 0; i < max_bytes; i++) {
        dst[i] = (unsigned char)(i % 13 == 0 ? 0x3c : 0);
        src[i] = (unsigned char)(i % 7 == 0 ? 0x3c : 0);
    }
    printf("%-7s %-5s %12s %10s\n", "isa", "dtype", "bytes", "GB/s");
    for (size_t i = 0; i < sizeof(isas) / sizeof(isas[0]); i++) {
        if (dc_reduce_set_isa(isas[i]) != 0) {
            continue;
        }
        for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++) {
            for (size_t bytes = 32 << 10; bytes <= max_bytes; bytes *= 32) {
                size_t n = bytes / dc_reduce_dtype_size(dtypes[d].dt);

                printf("%-7s %-5s %12zu %10.2f\n", isas[i], dtypes[d].name, bytes,
                       measure(dst, src, n, dtypes[d].dt, DCOMM_SUM));
            }
        }
    }
    free(src);
    free(dst);
    return 0;
}
