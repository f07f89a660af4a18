/* A program built against an installed dcomm (find_package and pkg-config):
 * allreduces rank+1 over every rank and checks the sum. */
#include <dcomm.h>
#include <stdio.h>

int main(void)
{
    float x[4];
    dcomm_status_t status;
    int rank, size;

    if (dcomm_init() != DCOMM_OK) {
        fprintf(stderr, "dcomm_init: %s\n", dcomm_last_error());
        return 1;
    }
    rank = dcomm_rank();
    size = dcomm_size();
    for (int i = 0; i < 4; i++) {
        x[i] = (float)(rank + 1);
    }
    status = dcomm_allreduce(DCOMM_COMM_WORLD, "consumer.x", x, x, 4, DCOMM_FLOAT32,
                             DCOMM_SUM);
    if (status != DCOMM_OK || x[3] != (float)(size * (size + 1) / 2)) {
        fprintf(stderr, "rank %d: allreduce: %s (x[3]=%g)\n", rank,
                dcomm_status_string(status), (double)x[3]);
        dcomm_shutdown();
        return 1;
    }
    printf("rank %d of %d: installed dcomm works\n", rank, size);
    dcomm_shutdown();
    return 0;
}
