/*
 * Shapes and lives. Ranks that give dcomm_set_shape must agree on the shape
 * (Horovod's rule): equal element counts with other shapes fail on every rank
 * with DCOMM_ERR_MISMATCH naming both shapes, also once the tensor is in the
 * response cache; allgather compares all but the first dimension. Then the
 * process shuts dcomm down and initializes it again, three lives in all, each
 * with correct collectives (the store keys of one life never leak into the
 * next).
 */
#include <stdint.h>
#include <string.h>

#include "rank_util.h"

static int failures;

static void expect(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "rank %d: %s: %s\n", dcomm_rank(), what, dcomm_last_error());
        failures++;
    }
}

static dcomm_status_t shaped_allreduce(const char *name, float *v, size_t n, int ndims,
                                       const int64_t *dims)
{
    CHECK_OK(dcomm_set_shape(ndims, dims));
    return dcomm_allreduce(DCOMM_COMM_WORLD, name, v, v, n, DCOMM_FLOAT32, DCOMM_SUM);
}

static dcomm_status_t shaped_allgather(const char *name, const float *v, size_t n, int ndims,
                                       const int64_t *dims)
{
    dcomm_handle_t h;
    dcomm_status_t st;

    CHECK_OK(dcomm_set_shape(ndims, dims));
    CHECK_OK(dcomm_allgather_async(DCOMM_COMM_WORLD, name, v, n, DCOMM_FLOAT32, &h));
    st = dcomm_wait(h);
    CHECK_OK(dcomm_release(h));
    return st;
}

static void check_shapes(void)
{
    enum { N = 17 * 23 * 57 };
    static float v[N];
    int rank = dcomm_rank(), size = dcomm_size();
    const int64_t flat[2] = {17, 23 * 57}, cube[3] = {17, 23, 57};
    const int64_t *mine = rank == 0 ? flat : cube;
    int nd = rank == 0 ? 2 : 3;
    dcomm_status_t st;

    /* Same shape: fine, twice (the second from the response cache). */
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < N; k++) {
            v[k] = 1;
        }
        expect(shaped_allreduce("same", v, N, 3, cube) == DCOMM_OK && v[0] == (float)size &&
                   v[N - 1] == (float)size, "allreduce with agreeing shapes");
    }
    /* Same count, other shapes: a mismatch on every rank, naming both. */
    st = shaped_allreduce("reshaped", v, N, nd, mine);
    expect(st == DCOMM_ERR_MISMATCH && strstr(dcomm_last_error(), "shape") &&
               strstr(dcomm_last_error(), "[17, 1311]") &&
               strstr(dcomm_last_error(), "[17, 23, 57]"),
           "allreduce of [17, 1311] against [17, 23, 57] must fail naming both");
    /* A cached tensor submitted again with another shape is caught too. */
    st = shaped_allreduce("same", v, N, nd, mine);
    expect(st == DCOMM_ERR_MISMATCH, "a cached tensor with another shape must fail");
    /* Allgather: rows may differ, the other dimensions may not. */
    {
        const int64_t rows[2] = {rank + 1, 4}, other[2] = {2, 2 + 2 * rank};

        expect(shaped_allgather("rows", v, (size_t)(rank + 1) * 4, 2, rows) == DCOMM_OK,
               "allgather of a different number of equal rows");
        st = shaped_allgather("cols", v, (size_t)(4 + 4 * rank), 2, other);
        expect(st == DCOMM_ERR_MISMATCH && strstr(dcomm_last_error(), "shape"),
               "allgather of rows of different widths must fail");
    }
    /* A bad shape is refused by the call itself. */
    {
        const int64_t neg[1] = {-1};

        expect(dcomm_set_shape(1, neg) == DCOMM_ERR_INVALID_ARG, "negative dimension refused");
        expect(dcomm_set_shape(65, cube) == DCOMM_ERR_INVALID_ARG, "65 dimensions refused");
    }
}

int main(void)
{
    for (int life = 1; life <= 3; life++) {
        float x;

        CHECK_OK(dcomm_init());
        if (life == 1) {
            check_shapes();
        }
        x = (float)(dcomm_rank() + life);
        CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "life", &x, &x, 1, DCOMM_FLOAT32, DCOMM_SUM));
        expect(x == (float)(dcomm_size() * (dcomm_size() - 1) / 2 + dcomm_size() * life),
               "allreduce in a later life");
        CHECK_OK(dcomm_barrier(DCOMM_COMM_WORLD));
        if (life == 3 && dcomm_rank() == 0 && failures == 0) {
            printf("shape test: shapes agreed and refused as Horovod does; 3 lives on %d ranks\n",
                   dcomm_size());
        }
        CHECK_OK(dcomm_shutdown());
        expect(!dcomm_is_initialized(), "not initialized after shutdown");
    }
    return failures ? 1 : 0;
}
