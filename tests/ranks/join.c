/*
 * Uneven data with join: rank r runs steps(r) steps of an allreduce (SUM) and
 * an allgather, then joins; a joined rank contributes zeros to allreduces
 * until every rank has joined, and, as in Horovod, an allgather while some
 * rank has joined fails with DCOMM_ERR_UNSUPPORTED naming the joined ranks.
 * Every rank checks its sums and gathers against a reference, and the join
 * result (the last rank to join) against the rank with the most steps.
 * steps(r) = 10 - 3 * r (at least 1): rank 0 runs 10, rank 1 runs 7, ...
 */
#include <string.h>

#include "rank_util.h"

static int steps_of(int r)
{
    int s = 10 - 3 * r;

    return s < 1 ? 1 : s;
}

int main(void)
{
    enum { N = 1000 };
    static float v[N];
    int rank, size, failures = 0, last_expected = 0;
    dcomm_handle_t h;
    const void *data;
    size_t count;

    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    size = dcomm_size();
    for (int r = 0; r < size; r++) {
        if (steps_of(r) >= steps_of(last_expected)) {
            last_expected = steps_of(r) > steps_of(last_expected) ? r : last_expected;
        }
    }
    for (int s = 0; s < steps_of(rank); s++) {
        float want = 0;
        size_t want_count = 0;
        const size_t *rc;
        char name[32];
        float mine[3] = {(float)rank, (float)s, 1};

        for (int r = 0; r < size; r++) {
            if (s < steps_of(r)) {
                want += (float)((r + 1) * (s + 1));
                want_count += 3;
            }
        }
        for (int i = 0; i < N; i++) {
            v[i] = (float)((rank + 1) * (s + 1));
        }
        CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "grad", v, v, N, DCOMM_FLOAT32, DCOMM_SUM));
        if (v[0] != want || v[N - 1] != want) {
            fprintf(stderr, "rank %d: step %d: sum %g, want %g\n", rank, s, v[0], want);
            failures++;
        }
        snprintf(name, sizeof(name), "gather");
        CHECK_OK(dcomm_allgather_async(DCOMM_COMM_WORLD, name, mine, 3, DCOMM_FLOAT32, &h));
        if (s >= steps_of(size - 1)) {
            /* The allreduce above needed rank size-1's join: it has joined. */
            dcomm_status_t st = dcomm_wait(h);

            if (st != DCOMM_ERR_UNSUPPORTED || strstr(dcomm_last_error(), "joined") == NULL) {
                fprintf(stderr, "rank %d: step %d: allgather after a join gave %s (%s), want "
                        "DCOMM_ERR_UNSUPPORTED naming the joined ranks\n", rank, s,
                        dcomm_status_string(st), dcomm_last_error());
                failures++;
            }
            CHECK_OK(dcomm_release(h));
            continue;
        }
        CHECK_OK(dcomm_wait(h));
        CHECK_OK(dcomm_result(h, &data, &count, &rc));
        if (count != want_count) {
            fprintf(stderr, "rank %d: step %d: gathered %zu, want %zu\n", rank, s, count,
                    want_count);
            failures++;
        }
        CHECK_OK(dcomm_release(h));
    }
    CHECK_OK(dcomm_join_async(DCOMM_COMM_WORLD, &h));
    CHECK_OK(dcomm_wait(h));
    CHECK_OK(dcomm_result(h, &data, &count, NULL));
    if (count != 1 || *(const int32_t *)data != last_expected) {
        fprintf(stderr, "rank %d: join says the last rank was %d, want %d\n", rank,
                count == 1 ? *(const int32_t *)data : -1, last_expected);
        failures++;
    }
    CHECK_OK(dcomm_release(h));
    /* After the join everything works as before. */
    for (int i = 0; i < N; i++) {
        v[i] = 1;
    }
    CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "after", v, v, N, DCOMM_FLOAT32, DCOMM_SUM));
    if (v[0] != (float)size) {
        fprintf(stderr, "rank %d: after join: %g, want %d\n", rank, v[0], size);
        failures++;
    }
    if (rank == 0 && failures == 0) {
        printf("join test: uneven steps on %d ranks correct, last to join %d\n", size,
               last_expected);
    }
    CHECK_OK(dcomm_shutdown());
    return failures ? 1 : 0;
}
