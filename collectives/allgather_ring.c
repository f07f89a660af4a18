/*
 * Ring allgather(v): size-1 steps, in each of which every rank passes the
 * block it received last to its right neighbour. Blocks may differ in length
 * (args->counts), zero included; blocks land directly in recvbuf.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

static int agring_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && args->counts != NULL && dc_reduce_dtype_size(args->dtype) > 0;
}

/* Byte offset of block b in recvbuf. */
static size_t block_offset(const size_t *counts, int b, size_t esize)
{
    size_t off = 0;

    for (int i = 0; i < b; i++) {
        off += counts[i];
    }
    return off * esize;
}

static dc_status_t agring_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype);
    int n = ctx->size, r = ctx->rank, left = (r - 1 + n) % n, right = (r + 1) % n;
    char *recv = args->recvbuf;
    size_t my_off = block_offset(args->counts, r, esize);
    size_t soff = my_off, roff;
    dc_status_t status;

    if (args->counts[r] > 0 && args->sendbuf != recv + my_off) {
        memmove(recv + my_off, args->sendbuf, args->counts[r] * esize);
    }
    /* At step s we send block (r - s) and receive block (r - s - 1); the
     * offsets walk down the buffer, wrapping at block 0. */
    for (int s = 0; s < n - 1; s++) {
        int sb = ((r - s) % n + n) % n, rb = (sb - 1 + n) % n;

        roff = rb == n - 1 ? block_offset(args->counts, n - 1, esize)
                           : soff - args->counts[rb] * esize;
        status = dc_coll_sendrecv(ctx, right, recv + soff, args->counts[sb] * esize, left,
                                  recv + roff, args->counts[rb] * esize);
        if (status < 0) {
            return status;
        }
        soff = roff;
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): (p-1)a + (p-1)/p n b. */
static double agring_cost(const dc_cost_in_t *in)
{
    double n = in->n, p = in->p, a = in->a, b = in->b;

    if (in->p <= 1) {
        return 0.0;
    }
    return (p - 1) * a + (p - 1) / p * n * b;
}

const dc_coll_algo_t dc_allgather_ring_algo = {
    .name = "ring",
    .doc = "ring allgatherv, size-1 steps of one block each; bandwidth-optimal",
    .supported = agring_supported,
    .run = agring_run,
    .cost = agring_cost,
};
