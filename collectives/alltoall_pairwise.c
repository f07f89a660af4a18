/*
 * Pairwise alltoall(v): in step s (1 .. size-1) rank r sends its block for
 * r + s and receives the block of r - s, so every rank talks to one peer each
 * way at a time; steps go DC_ALLTOALL_BATCH at a time to hide latency. Also
 * the counts prelude, the same pattern with one size_t per pair.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

#define A2A_BATCH 16 /* steps in flight: 2 requests each */

static int a2a_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && args->counts != NULL && args->recv_counts != NULL &&
           dc_reduce_dtype_size(args->dtype) > 0;
}

dc_status_t dc_alltoall_counts(const dc_coll_ctx_t *ctx, const size_t *send_counts,
                               size_t *recv_counts)
{
    int n = ctx->size, r = ctx->rank;
    dc_request_t *wait[2 * A2A_BATCH];
    dc_status_t status;

    recv_counts[r] = send_counts[r];
    for (int s0 = 1; s0 < n; s0 += A2A_BATCH) {
        int nw = 0;

        for (int s = s0; s < n && s < s0 + A2A_BATCH; s++) {
            int to = (r + s) % n, from = (r - s + n) % n;

            status = dc_coll_post(ctx, 0, from, &recv_counts[from], sizeof(size_t), wait, &nw);
            if (status < 0) {
                return status;
            }
            status = dc_coll_post(ctx, 1, to, (void *)&send_counts[to], sizeof(size_t), wait, &nw);
            if (status < 0) {
                return status;
            }
        }
        status = dc_net_wait(ctx->net, wait, nw, NULL, NULL);
        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

static size_t prefix(const size_t *counts, int b)
{
    size_t sum = 0;

    for (int i = 0; i < b; i++) {
        sum += counts[i];
    }
    return sum;
}

static dc_status_t a2a_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype);
    const size_t *sc = args->counts, *rc = args->recv_counts;
    int n = ctx->size, r = ctx->rank;
    const char *send = args->sendbuf;
    char *recv = args->recvbuf;
    dc_request_t *wait[2 * A2A_BATCH];
    /* Element offsets of the next peer each way, kept up to date as the
     * destination walks up and the source walks down (wrapping). */
    int to = (r + 1) % n, from = (r - 1 + n) % n;
    size_t soff = prefix(sc, to), roff = prefix(rc, from);
    dc_status_t status;

    if (sc[r] != rc[r]) {
        return dc_error_set(DCOMM_ERR_MISMATCH,
                            "alltoall: rank %d sends itself %zu elements but expects %zu", r,
                            sc[r], rc[r]);
    }
    if (sc[r] > 0) {
        memmove(recv + prefix(rc, r) * esize, send + prefix(sc, r) * esize, sc[r] * esize);
    }
    for (int s0 = 1; s0 < n; s0 += A2A_BATCH) {
        int nw = 0;

        for (int s = s0; s < n && s < s0 + A2A_BATCH; s++) {
            status = dc_coll_post(ctx, 0, from, recv + roff * esize, rc[from] * esize, wait, &nw);
            if (status < 0) {
                return status;
            }
            status = dc_coll_post(ctx, 1, to, (void *)(send + soff * esize),
                                  sc[to] * esize, wait, &nw);
            if (status < 0) {
                return status;
            }
            soff = (to == n - 1) ? 0 : soff + sc[to];
            to = (to + 1) % n;
            from = (from - 1 + n) % n;
            roff = (from == n - 1) ? prefix(rc, n - 1) : roff - rc[from];
        }
        status = dc_net_wait(ctx->net, wait, nw, NULL, NULL);
        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): (p-1)(a + n/p b'), n what one rank sends. */
static double a2a_cost(const dc_cost_in_t *in)
{
    double p = in->p;

    if (in->p <= 1) {
        return 0.0;
    }
    return (p - 1) * (in->a + in->n / p * in->b_shared);
}

const dc_coll_algo_t dc_alltoall_pairwise_algo = {
    .name = "pairwise",
    .doc = "pairwise exchange, size-1 steps with one peer each way, batched",
    .supported = a2a_supported,
    .run = a2a_run,
    .cost = a2a_cost,
};
