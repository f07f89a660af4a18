/*
 * reduce_vs_memcpy: is the reduction kernel as fast as copying? Times memcpy,
 * dc_reduce (dst op= src) and dc_reduce3 (dst = a op b, dst apart) of float32
 * SUM on buffers of 64 MiB (or argv[1] bytes), interleaved, median of REPS
 * each, and prints the bandwidths and their ratio against the target "reduce
 * runs at >= 80% of memcpy bandwidth". Bandwidth counts bytes read plus bytes
 * written for all three: memcpy 2n, dc_reduce 3n, dc_reduce3 3n.
 * Usage: reduce_vs_memcpy [bytes] [reps]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "dc_reduce.h"

#define TARGET 0.8

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *alloc_buf(size_t bytes, float value)
{
    float *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        return NULL;
    }
    for (size_t i = 0; i < bytes / sizeof(float); i++) {
        p[i] = value; /* faults every page in before timing */
    }
    return p;
}

int main(int argc, char **argv)
{
    size_t bytes = argc > 1 ? strtoull(argv[1], NULL, 0) : (64u << 20);
    int reps = argc > 2 ? atoi(argv[2]) : 9;
    size_t n = bytes / sizeof(float);
    float *a = alloc_buf(bytes, 1.0f), *b = alloc_buf(bytes, 0.5f), *c = alloc_buf(bytes, 0.0f);
    double *t_copy = calloc((size_t)reps, sizeof(double));
    double *t_red = calloc((size_t)reps, sizeof(double));
    double *t_red3 = calloc((size_t)reps, sizeof(double));

    if (a == NULL || b == NULL || c == NULL || t_copy == NULL || t_red == NULL ||
        t_red3 == NULL || reps < 1) {
        fprintf(stderr, "reduce_vs_memcpy: cannot allocate 3 x %zu bytes\n", bytes);
        return 1;
    }
    for (int r = -1; r < reps; r++) { /* rep -1 warms up */
        double t0 = now_s();
        memcpy(c, a, bytes);
        double t1 = now_s();
        dc_reduce(c, b, n, DCOMM_FLOAT32, DCOMM_SUM);
        double t2 = now_s();
        dc_reduce3(c, a, b, n, DCOMM_FLOAT32, DCOMM_SUM);
        double t3 = now_s();
        if (r >= 0) {
            t_copy[r] = t1 - t0;
            t_red[r] = t2 - t1;
            t_red3[r] = t3 - t2;
        }
    }
    if (c[n - 1] != 1.5f || c[0] != 1.5f) {
        fprintf(stderr, "reduce_vs_memcpy: wrong result %g\n", (double)c[0]);
        return 1;
    }
    qsort(t_copy, (size_t)reps, sizeof(double), cmp_double);
    qsort(t_red, (size_t)reps, sizeof(double), cmp_double);
    qsort(t_red3, (size_t)reps, sizeof(double), cmp_double);
    double copy_gbs = 2.0 * (double)bytes / t_copy[reps / 2] / 1e9;
    double red_gbs = 3.0 * (double)bytes / t_red[reps / 2] / 1e9;
    double red3_gbs = 3.0 * (double)bytes / t_red3[reps / 2] / 1e9;
    printf("%zu MiB float32 SUM, isa %s, median of %d (bytes read + written):\n", bytes >> 20,
           dc_reduce_isa(), reps);
    printf("  memcpy      %7.2f GB/s  (%.2f ms)\n", copy_gbs, t_copy[reps / 2] * 1e3);
    printf("  dc_reduce   %7.2f GB/s  (%.2f ms)  ratio %.2f\n", red_gbs, t_red[reps / 2] * 1e3,
           red_gbs / copy_gbs);
    printf("  dc_reduce3  %7.2f GB/s  (%.2f ms)  ratio %.2f\n", red3_gbs,
           t_red3[reps / 2] * 1e3, red3_gbs / copy_gbs);
    printf("target: reduce >= %.0f%% of memcpy: %s\n", TARGET * 100,
           red_gbs >= TARGET * copy_gbs && red3_gbs >= TARGET * copy_gbs ? "met" : "NOT met");
    munmap(a, bytes);
    munmap(b, bytes);
    munmap(c, bytes);
    free(t_copy);
    free(t_red);
    free(t_red3);
    return 0;
}
