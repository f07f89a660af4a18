/*
 * The bundled example: every rank allreduces a float32 buffer (64 MiB by
 * default) whose exact sum is known, checks every element and prints the
 * bandwidth. Run it with `dlaunch -np 4 ./allreduce_check [MiB] [iterations]`.
 */
#include <dcomm.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
    int iters = argc > 2 ? atoi(argv[2]) : 3;
    size_t count = mib * (1u << 20) / sizeof(float);
    float *buf = malloc(count * sizeof(float) + 1);
    size_t wrong = 0;
    dcomm_status_t status;
    double best = 1e30;
    int rank, size;

    if (buf == NULL || iters < 1) {
        fprintf(stderr, "usage: %s [MiB (64)] [iterations (3)]\n", argv[0]);
        free(buf);
        return 2;
    }
    status = dcomm_init();
    if (status != DCOMM_OK) {
        fprintf(stderr, "dcomm_init: %s: %s\n", dcomm_status_string(status), dcomm_last_error());
        free(buf);
        return 1;
    }
    rank = dcomm_rank();
    size = dcomm_size();
    for (int it = 0; it < iters; it++) {
        double t0;

        /* Element i of rank r is (i % 1000) + r: small integers, so the float
         * sum is exact and the check can demand equality. */
        for (size_t i = 0; i < count; i++) {
            buf[i] = (float)(i % 1000) + (float)rank;
        }
        t0 = now_s();
        status = dcomm_allreduce(DCOMM_COMM_WORLD, "example.grad", buf, buf, count, DCOMM_FLOAT32,
                                 DCOMM_SUM);
        if (now_s() - t0 < best) {
            best = now_s() - t0;
        }
        if (status != DCOMM_OK) {
            fprintf(stderr, "rank %d: dcomm_allreduce: %s: %s\n", rank,
                    dcomm_status_string(status), dcomm_last_error());
            dcomm_shutdown();
            free(buf);
            return 1;
        }
        for (size_t i = 0; i < count; i++) {
            float want = (float)size * (float)(i % 1000) + (float)(size * (size - 1) / 2);

            wrong += buf[i] != want;
        }
    }
    if (rank == 0 || wrong != 0) {
        printf("rank %d: allreduce of %zu MiB float32 over %d ranks: %s (%zu wrong), best %.2f ms,"
               " busbw %.2f GB/s\n", rank, mib, size, wrong ? "FAILED" : "correct", wrong,
               best * 1e3, best > 0 ? 2.0 * (size - 1) / size * (double)(count * 4) / best / 1e9 : 0);
    }
    dcomm_shutdown();
    free(buf);
    return wrong ? 1 : 0;
}
