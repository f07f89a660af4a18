/*
 * Dissemination barrier: in round k every rank signals rank + 2^k and waits
 * for rank - 2^k, so after ceil(log2 size) rounds every rank has heard,
 * directly or not, from every other. Messages are empty.
 */
#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"

static int dissem_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    (void)args;
    return ctx->size >= 1;
}

static dc_status_t dissem_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    int n = ctx->size, r = ctx->rank;

    (void)args;
    for (int dist = 1; dist < n; dist *= 2) {
        dc_status_t status = dc_coll_sendrecv(ctx, (r + dist) % n, ctx->scratch, 0,
                                              (r - dist + n) % n, ctx->scratch, 0);

        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): L a. */
static double dissem_cost(const dc_cost_in_t *in)
{
    double l = dc_cost_ceil_log2(in->p);

    if (in->p <= 1) {
        return 0.0;
    }
    return l * in->a;
}

const dc_coll_algo_t dc_barrier_dissemination_algo = {
    .name = "dissemination",
    .doc = "dissemination barrier, ceil(log2 size) rounds of empty messages",
    .supported = dissem_supported,
    .run = dissem_run,
    .cost = dissem_cost,
};
