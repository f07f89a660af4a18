/*
 * step_bench: a synthetic data-parallel training step. Each step allreduces
 * (AVG, float32) the 161 gradient tensors of ResNet-50 with their real sizes
 * (25,557,032 floats), submitted asynchronously in backward order (last layer
 * first) and then waited for, as a framework's gradient hooks would.
 * Usage: dlaunch -np N step_bench [steps] [warmup]      (default 50, 5)
 * Prints steps/s and ms per step on rank 0. DCOMM_STATS=1 adds the
 * coordinator's counters (slow/fast negotiations, fusion) at shutdown.
 */
#include <dcomm.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_TENSORS 200

static size_t sizes[MAX_TENSORS];
static int ntensors;

static void add(size_t n)
{
    sizes[ntensors++] = n;
}

static void add_bn(size_t c)
{
    add(c); /* weight */
    add(c); /* bias */
}

/* torchvision's resnet50: conv1, bn1, four stages of bottlenecks, fc. */
static void resnet50(void)
{
    static const int blocks[4] = {3, 4, 6, 3}, planes[4] = {64, 128, 256, 512};
    size_t in = 64;

    add(64 * 3 * 7 * 7);
    add_bn(64);
    for (int s = 0; s < 4; s++) {
        size_t p = (size_t)planes[s], out = p * 4;

        for (int b = 0; b < blocks[s]; b++) {
            add(p * in);        /* 1x1 */
            add_bn(p);
            add(p * p * 9);     /* 3x3 */
            add_bn(p);
            add(out * p);       /* 1x1 */
            add_bn(out);
            if (b == 0) {       /* downsample */
                add(out * in);
                add_bn(out);
            }
            in = out;
        }
    }
    add(1000 * 2048);
    add(1000);
}

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

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 50, warmup = argc > 2 ? atoi(argv[2]) : 5;
    float *grads[MAX_TENSORS];
    dcomm_handle_t h[MAX_TENSORS];
    char names[MAX_TENSORS][32];
    double *times;
    size_t total = 0;
    int rank, size;

    if (steps < 1 || warmup < 0) {
        fprintf(stderr, "usage: step_bench [steps >= 1] [warmup >= 0]\n");
        return 2;
    }
    if (dcomm_init() != DCOMM_OK) {
        fprintf(stderr, "dcomm_init: %s\n", dcomm_last_error());
        return 1;
    }
    rank = dcomm_rank();
    size = dcomm_size();
    resnet50();
    times = calloc((size_t)steps, sizeof(double));
    for (int t = 0; t < ntensors; t++) {
        grads[t] = malloc(sizes[t] * sizeof(float));
        if (grads[t] == NULL || times == NULL) {
            fprintf(stderr, "rank %d: out of memory\n", rank);
            return 1;
        }
        for (size_t i = 0; i < sizes[t]; i++) {
            grads[t][i] = (float)(rank + 1);
        }
        snprintf(names[t], sizeof(names[t]), "grad.%d", t);
        total += sizes[t];
    }
    for (int s = 0; s < warmup + steps; s++) {
        double t0 = now_s();

        for (int t = ntensors - 1; t >= 0; t--) {
            if (dcomm_allreduce_async(DCOMM_COMM_WORLD, names[t], grads[t], grads[t], sizes[t],
                                      DCOMM_FLOAT32, DCOMM_AVG, &h[t]) != DCOMM_OK) {
                fprintf(stderr, "rank %d: allreduce %s: %s\n", rank, names[t], dcomm_last_error());
                return 1;
            }
        }
        for (int t = ntensors - 1; t >= 0; t--) {
            if (dcomm_wait(h[t]) != DCOMM_OK) {
                fprintf(stderr, "rank %d: %s: %s\n", rank, names[t], dcomm_last_error());
                return 1;
            }
            dcomm_release(h[t]);
        }
        if (s >= warmup) {
            times[s - warmup] = now_s() - t0;
        }
    }
    /* Every rank starts with rank+1 and averages: the mean of 1..size stays. */
    for (int t = 0; t < ntensors; t++) {
        float want = (float)(size + 1) / 2.0f;

        if (grads[t][0] != want || grads[t][sizes[t] - 1] != want) {
            fprintf(stderr, "rank %d: %s is %g, want %g\n", rank, names[t], grads[t][0], want);
            return 1;
        }
    }
    qsort(times, (size_t)steps, sizeof(double), cmp_double);
    if (rank == 0) {
        printf("step_bench: %d ranks, %d tensors, %zu floats per step; %d steps after %d "
               "warm-up: median %.2f ms/step, %.2f steps/s\n",
               size, ntensors, total, steps, warmup, times[steps / 2] * 1e3,
               1.0 / times[steps / 2]);
    }
    for (int t = 0; t < ntensors; t++) {
        free(grads[t]);
    }
    free(times);
    return dcomm_shutdown() == DCOMM_OK ? 0 : 1;
}
