/*
 * Binomial-tree broadcast: in round k, every rank that has the data sends it to
 * the rank 2^k further (relative to the root), so size ranks are reached in
 * ceil(log2 size) rounds.
 */
#include "coll.h"
#include "coll_cost.h"
#include "dc_reduce.h"

static int binomial_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return args->root >= 0 && args->root < ctx->size;
}

static dc_status_t binomial_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t bytes = args->count * dc_reduce_dtype_size(args->dtype);
    int n = ctx->size, vr = (ctx->rank - args->root + n) % n;
    dc_request_t *reqs = ctx->reqs;
    dc_request_t *preqs[32];
    int nreqs = 0, mask = 1;
    dc_status_t status = DCOMM_OK;

    if (n == 1) {
        return DCOMM_OK;
    }
    /* Receive from the parent: vr with its lowest set bit cleared. */
    while (mask < n) {
        if (vr & mask) {
            int parent = (vr - mask + args->root) % n;

            status = dc_ep_irecv(dc_net_ep(ctx->net, ctx->ranks[parent]), args->recvbuf, bytes,
                                 ctx->tag, &reqs[0]);
            if (status < 0) {
                return status;
            }
            preqs[0] = &reqs[0];
            status = dc_net_wait(ctx->net, preqs, 1, NULL, NULL);
            if (status < 0) {
                return status;
            }
            break;
        }
        mask <<= 1;
    }
    /* Send to the children: vr + m for every m below our lowest set bit. */
    for (mask >>= 1; mask > 0; mask >>= 1) {
        if (vr + mask < n) {
            int child = (vr + mask + args->root) % n;

            status = dc_ep_isend(dc_net_ep(ctx->net, ctx->ranks[child]), args->recvbuf, bytes,
                                 ctx->tag, &reqs[nreqs]);
            if (status < 0) {
                break;
            }
            preqs[nreqs] = &reqs[nreqs];
            nreqs++;
        }
    }
    {
        dc_status_t st2 = dc_net_wait(ctx->net, preqs, nreqs, NULL, NULL);

        return status < 0 ? status : st2;
    }
}

/* Cost (coll_cost.h): L (a + n b'). */
static double binomial_cost(const dc_cost_in_t *in)
{
    double l = dc_cost_ceil_log2(in->p);

    if (in->p <= 1) {
        return 0.0;
    }
    return l * (in->a + in->n * in->b_shared);
}

const dc_coll_algo_t dc_bcast_binomial_algo = {
    .name = "binomial",
    .doc = "binomial tree from the root, log2(size) rounds",
    .supported = binomial_supported,
    .run = binomial_run,
    .cost = binomial_cost,
};
