/*
 * A rank that fails with an error but lives on (np 2): rank 1's share of an
 * alltoall is larger than its host can allocate, so its coordinator fails (a
 * collective that cannot run leaves the ranks out of step) while the process
 * sleeps on. Rank 0, blocked sending its share over shm, must fail with
 * DCOMM_ERR_PEER_LOST naming rank 1 and that cause within a few seconds, not
 * as a TIMEOUT after DCOMM_TIMEOUT (the test sets 30 s).
 */
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "rank_util.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(void)
{
    /* More than any host running the tests has: rank 1 cannot hold it. Rank 0
     * "has" it as a read-only reservation of zero pages, of which the transport
     * reads a few MiB before rank 1's failure ends the send. */
    const size_t huge = (size_t)1 << 42; /* 4 TiB of floats */
    size_t counts[2] = {1, 1};
    float small[2] = {1, 2}, x = 1;
    const void *send = small;
    dcomm_handle_t h;
    dcomm_status_t s;
    double t0;
    int rank;

    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    if (dcomm_size() != 2) {
        fprintf(stderr, "failalive: needs 2 ranks\n");
        return 1;
    }
    CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "warm", &x, &x, 1, DCOMM_FLOAT32, DCOMM_SUM));
    if (rank == 0) {
        void *reserve = mmap(NULL, (huge + 1) * sizeof(float), PROT_READ,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

        if (reserve == MAP_FAILED) {
            perror("failalive: mmap");
            return 1;
        }
        send = reserve;
        counts[1] = huge;
    }
    t0 = now_s();
    CHECK_OK(dcomm_alltoall_async(DCOMM_COMM_WORLD, "a2a", send, counts, DCOMM_FLOAT32, &h));
    s = dcomm_wait(h);
    printf("rank %d: %s after %.2f s: %s\n", rank, dcomm_status_string(s), now_s() - t0,
           dcomm_last_error());
    fflush(stdout);
    if (rank == 1) {
        if (s == DCOMM_OK || strstr(dcomm_last_error(), "can allocate") == NULL) {
            return 1;
        }
        sleep(5); /* failed, but alive while rank 0 finds out */
        return 0;
    }
    if (s != DCOMM_ERR_PEER_LOST || strstr(dcomm_last_error(), "rank 1") == NULL ||
        strstr(dcomm_last_error(), "can allocate") == NULL || now_s() - t0 > 4.0) {
        fprintf(stderr, "rank 0: expected PEER_LOST naming rank 1 and its cause within 4 s\n");
        return 1;
    }
    return 0;
}
