/*
 * Recursive-doubling allreduce for small messages: log2(size) rounds, in each
 * of which partners at distance 2^k swap their whole vectors and both reduce.
 * Both partners compute lower-rank data op higher-rank data, so the copies stay
 * bit-identical (MIN/MAX of +0/-0 and NaN payloads depend on operand order).
 * A size that is not a power of two first folds the first 2*rem ranks in
 * pairs (the even rank hands its vector to the odd one and waits for the
 * result at the end). The incoming vector lands in the scratch, so the
 * algorithm declines vectors larger than the scratch.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

static int rd_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype);

    return ctx->size >= 1 && dc_reduce_supported(args->dtype, args->op) &&
           args->count <= ctx->scratch_size / esize;
}

/* The real comm rank of virtual rank v (rem ranks folded into their neighbour). */
static int rd_real(int v, int rem)
{
    return v < rem ? 2 * v + 1 : v + rem;
}

static dc_status_t rd_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = args->count * esize;
    int n = ctx->size, r = ctx->rank, p = 1, rem, v;
    char *buf = args->recvbuf;
    dc_status_t status;

    if (args->sendbuf != args->recvbuf && bytes > 0) {
        memcpy(buf, args->sendbuf, bytes);
    }
    if (n == 1 || bytes == 0) {
        return DCOMM_OK;
    }
    while (p * 2 <= n) {
        p *= 2;
    }
    rem = n - p;
    /* Fold: even ranks below 2*rem hand their vector to the next odd rank. */
    if (r < 2 * rem && r % 2 == 0) {
        status = dc_coll_sendrecv(ctx, r + 1, buf, bytes, -1, NULL, 0);
        if (status < 0) {
            return status;
        }
        return dc_coll_sendrecv(ctx, -1, NULL, 0, r + 1, buf, bytes);
    }
    if (r < 2 * rem) {
        status = dc_coll_sendrecv(ctx, -1, NULL, 0, r - 1, ctx->scratch, bytes);
        if (status < 0) {
            return status;
        }
        dc_reduce3(buf, ctx->scratch, buf, args->count, args->dtype, args->op);
        v = r / 2;
    } else {
        v = r - rem;
    }
    for (int mask = 1; mask < p; mask <<= 1) {
        int pv = v ^ mask, peer = rd_real(pv, rem);

        status = dc_coll_sendrecv(ctx, peer, buf, bytes, peer, ctx->scratch, bytes);
        if (status < 0) {
            return status;
        }
        if (pv < v) {
            dc_reduce3(buf, ctx->scratch, buf, args->count, args->dtype, args->op);
        } else {
            dc_reduce(buf, ctx->scratch, args->count, args->dtype, args->op);
        }
    }
    if (args->op == DCOMM_AVG) {
        dc_reduce_scale(buf, args->count, args->dtype, 1.0 / n);
    }
    if (r < 2 * rem) {
        return dc_coll_sendrecv(ctx, r - 1, buf, bytes, -1, NULL, 0);
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): L' (a + n b' + n g) + f (2a + 2n b' + n g), L' = log2 q. */
static double rd_cost(const dc_cost_in_t *in)
{
    double n = in->n, a = in->a, bs = in->b_shared, g = in->g;
    dc_cost_fold_t fo = dc_cost_fold(in->p);

    if (in->p <= 1) {
        return 0.0;
    }
    return fo.lq * (a + n * bs + n * g) + fo.f * (2 * a + 2 * n * bs + n * g);
}

const dc_coll_algo_t dc_allreduce_rd_algo = {
    .name = "rd",
    .doc = "recursive doubling, log2(size) rounds of whole-vector swaps; small messages",
    .supported = rd_supported,
    .run = rd_run,
    .cost = rd_cost,
};
