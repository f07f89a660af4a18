/*
 * Stall inspector: rank 1 never submits tensor "x". The other ranks submit it
 * and wait; rank 1 waits on a barrier submitted later. With
 * DCOMM_STALL_SHUTDOWN set, every rank's wait must return DCOMM_ERR_TIMEOUT
 * with a message naming x and rank 1, shortly after the stall deadline (the
 * warning itself goes to rank 0's stderr; stall_test.sh checks it and its
 * timing).
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rank_util.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    double limit = argc > 1 ? atof(argv[1]) : 3.0, t0;
    float x[16] = {0};
    dcomm_handle_t h;
    dcomm_status_t s;
    int rank;

    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    t0 = now_s();
    if (rank != 1) {
        CHECK_OK(dcomm_allreduce_async(DCOMM_COMM_WORLD, "x", x, x, 16, DCOMM_FLOAT32, DCOMM_SUM,
                                       &h));
        printf("rank %d: submitted x\n", rank);
        fflush(stdout);
    } else {
        usleep(300000);
        CHECK_OK(dcomm_barrier_async(DCOMM_COMM_WORLD, &h));
    }
    s = dcomm_wait(h);
    printf("rank %d: wait returned %s after %.1f s: %s\n", rank, dcomm_status_string(s),
           now_s() - t0, s < 0 ? dcomm_last_error() : "");
    fflush(stdout);
    if (s != DCOMM_ERR_TIMEOUT || strstr(dcomm_last_error(), "'x'") == NULL ||
        strstr(dcomm_last_error(), "rank 1") == NULL || now_s() - t0 > limit + 2.0) {
        fprintf(stderr, "rank %d: expected DCOMM_ERR_TIMEOUT naming 'x' and rank 1 within "
                "%.1f s\n", rank, limit + 2.0);
        return 1;
    }
    dcomm_release(h);
    dcomm_shutdown();
    return 0;
}
