/*
 * Pipelined chain broadcast: ranks in order from the root (root, root+1, ...)
 * form a chain; each receives chunk k from its predecessor straight into
 * recvbuf and forwards it while later chunks are still arriving. Time is about
 * (size - 2 + nchunks) chunk transfers: for large messages nearly the
 * bandwidth of one link, whatever the size.
 */
#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

#define CHAIN_WINDOW        8 /* chunks in flight each way */
#define CHAIN_DEFAULT_CHUNK (256u << 10)

static int chain_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return args->root >= 0 && args->root < ctx->size && dc_reduce_dtype_size(args->dtype) > 0;
}

static dc_status_t chain_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = args->count * esize;
    size_t chunk = dc_coll_piece_bytes(ctx, esize, CHAIN_DEFAULT_CHUNK, 1);
    size_t nchunks = (bytes + chunk - 1) / chunk, posted = 0;
    int n = ctx->size, vr = (ctx->rank - args->root + n) % n;
    int prev = vr > 0 ? (ctx->rank - 1 + n) % n : -1;
    int next = vr < n - 1 ? (ctx->rank + 1) % n : -1;
    dc_request_t *rreq = &ctx->reqs[0], *sreq = &ctx->reqs[CHAIN_WINDOW];
    char *buf = args->recvbuf;
    dc_status_t status;

    if (n == 1) {
        return DCOMM_OK;
    }
    for (size_t k = 0; k < nchunks + CHAIN_WINDOW; k++) {
        size_t w = k % CHAIN_WINDOW, off = k * chunk;
        dc_request_t *wait[2];
        int nw = 0;

        while (prev >= 0 && posted < nchunks && posted < k + CHAIN_WINDOW) {
            size_t poff = posted * chunk;

            status = dc_ep_irecv(dc_coll_ep(ctx, prev), buf + poff, DC_MIN(chunk, bytes - poff),
                                 ctx->tag, &rreq[posted % CHAIN_WINDOW]);
            if (status < 0) {
                return status;
            }
            posted++;
        }
        /* Chunk k has arrived, and the send that used this slot is done. */
        if (prev >= 0 && k < nchunks) {
            wait[nw++] = &rreq[w];
        }
        if (next >= 0 && k >= CHAIN_WINDOW && k - CHAIN_WINDOW < nchunks) {
            wait[nw++] = &sreq[w];
        }
        status = dc_net_wait(ctx->net, wait, nw, NULL, NULL);
        if (status < 0) {
            return status;
        }
        if (next >= 0 && k < nchunks) {
            status = dc_ep_isend(dc_coll_ep(ctx, next), buf + off, DC_MIN(chunk, bytes - off),
                                 ctx->tag, &sreq[w]);
            if (status < 0) {
                return status;
            }
        }
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): (p-2+k)(a + n b / k), k = ceil(n / the default chunk)
 * pieces (DCOMM's chunk setting aside). */
static double chain_cost(const dc_cost_in_t *in)
{
    double n = in->n, p = in->p, k = DC_MAX(1.0, ceil(n / (double)CHAIN_DEFAULT_CHUNK));

    if (in->p <= 1) {
        return 0.0;
    }
    return (p - 2.0 + k) * (in->a + n * in->b / k);
}

const dc_coll_algo_t dc_bcast_chain_algo = {
    .name = "chain",
    .doc = "pipelined chain from the root, chunked; large messages",
    .supported = chain_supported,
    .run = chain_run,
    .cost = chain_cost,
};
