/*
 * Rank 1 submits a different count for tensor "mismatch.t": every rank must
 * get DCOMM_ERR_MISMATCH with a message naming the tensor, the field and the
 * ranks, and the next allreduce must work.
 */
#include <string.h>

#include "rank_util.h"

int main(void)
{
    float buf[16] = {0};
    dcomm_status_t s;
    int rank, size, ok = 1;

    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    size = dcomm_size();
    if (size < 2) {
        fprintf(stderr, "mismatch needs at least 2 ranks\n");
        return 1;
    }
    s = dcomm_allreduce(DCOMM_COMM_WORLD, "mismatch.t", buf, buf, rank == 1 ? 9 : 8,
                        DCOMM_FLOAT32, DCOMM_SUM);
    if (s != DCOMM_ERR_MISMATCH || strstr(dcomm_last_error(), "mismatch.t") == NULL ||
        strstr(dcomm_last_error(), "count") == NULL) {
        fprintf(stderr, "rank %d: expected DCOMM_ERR_MISMATCH naming the tensor, got %s: %s\n",
                rank, dcomm_status_string(s), dcomm_last_error());
        ok = 0;
    } else {
        printf("rank %d: got the expected error: %s\n", rank, dcomm_last_error());
    }
    /* Different ops on another tensor: also a mismatch, naming the op. */
    s = dcomm_allreduce(DCOMM_COMM_WORLD, "mismatch.op", buf, buf, 8, DCOMM_FLOAT32,
                        rank == 0 ? DCOMM_MAX : DCOMM_SUM);
    if (s != DCOMM_ERR_MISMATCH || strstr(dcomm_last_error(), "op") == NULL) {
        fprintf(stderr, "rank %d: op mismatch gave %s: %s\n", rank, dcomm_status_string(s),
                dcomm_last_error());
        ok = 0;
    }
    for (int i = 0; i < 16; i++) {
        buf[i] = (float)(rank + i);
    }
    CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "after.mismatch", buf, buf, 16, DCOMM_FLOAT32,
                             DCOMM_SUM));
    for (int i = 0; i < 16; i++) {
        if (buf[i] != (float)(size * i + size * (size - 1) / 2)) {
            fprintf(stderr, "rank %d: allreduce after the mismatch is wrong at %d\n", rank, i);
            ok = 0;
            break;
        }
    }
    CHECK_OK(dcomm_shutdown());
    return ok ? 0 : 1;
}
