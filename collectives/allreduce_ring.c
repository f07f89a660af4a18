/*
 * Ring allreduce: a reduce-scatter ring followed by an allgather ring, each
 * moving count/size elements per step. Within a step the segment travels in
 * chunks and the reduction of chunk k overlaps the transfer of chunk k+1.
 * Out of place, the first step reduces sendbuf and the incoming chunk straight
 * into recvbuf (dst = a op b), so no copy is made. AVG is summed and then
 * scaled once by the owner of each segment before the allgather, so every rank
 * ends with bit-identical results.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "dc_reduce.h"

#define RING_DEFAULT_CHUNK (1u << 20)
#define RING_MAX_WINDOW    8

static int ring_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && dc_reduce_supported(args->dtype, args->op);
}

/* One reduce-scatter step: send `snd` (snd_len bytes) to the right and receive
 * the left neighbour's segment (len bytes), both in chunks of the same size on
 * every rank, reducing dst = mine op incoming as each chunk lands. */
static dc_status_t rs_step(const dc_coll_ctx_t *ctx, dc_endpoint_t *left, dc_endpoint_t *right,
                           const char *snd, size_t snd_len, const char *mine, char *dst,
                           size_t len, const dc_coll_args_t *args, size_t esize)
{
    size_t chunk = ctx->chunk_bytes ? ctx->chunk_bytes : RING_DEFAULT_CHUNK;
    size_t window, nrecv, nsend, nmax, posted = 0, done = 0;
    dc_request_t *sreq, *rreq;
    dc_request_t *wait[2];
    dc_status_t status;

    chunk -= chunk % esize;
    if (chunk == 0) {
        chunk = esize;
    }
    window = DC_MIN(RING_MAX_WINDOW, ctx->scratch_size / chunk);
    sreq = &ctx->reqs[0];
    rreq = &ctx->reqs[RING_MAX_WINDOW];
    nrecv = (len + chunk - 1) / chunk;
    nsend = (snd_len + chunk - 1) / chunk;
    nmax = DC_MAX(nrecv, nsend);

    while (done < nmax) {
        while (posted < nmax && posted - done < window) {
            size_t off = posted * chunk, k = posted % window;

            if (posted < nrecv) {
                status = dc_ep_irecv(left, (char *)ctx->scratch + k * chunk,
                                     DC_MIN(chunk, len - off), ctx->tag, &rreq[k]);
                if (status < 0) {
                    return status;
                }
            }
            if (posted < nsend) {
                status = dc_ep_isend(right, snd + off, DC_MIN(chunk, snd_len - off), ctx->tag,
                                     &sreq[k]);
                if (status < 0) {
                    return status;
                }
            }
            posted++;
        }
        {
            size_t k = done % window, off = done * chunk, n = 0;

            if (done < nrecv) {
                wait[n++] = &rreq[k];
            }
            if (done < nsend) {
                wait[n++] = &sreq[k];
            }
            /* Errors leave other requests posted: the caller treats any error
             * as fatal and closes the network before buffers go away. */
            status = dc_net_wait(ctx->net, wait, (int)n, NULL, NULL);
            if (status < 0) {
                return status;
            }
            if (done < nrecv) {
                dc_reduce3(dst + off, mine + off, (const char *)ctx->scratch + k * chunk,
                           DC_MIN(chunk, len - off) / esize, args->dtype, args->op);
            }
        }
        done++;
    }
    return DCOMM_OK;
}

static dc_status_t ring_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype);
    const char *send = args->sendbuf;
    char *recv = args->recvbuf;
    int n = ctx->size, r = ctx->rank;
    dc_endpoint_t *left, *right;
    dc_status_t status;

    if (n == 1 || args->count == 0) {
        if (send != recv && args->count > 0) {
            memcpy(recv, send, args->count * esize);
        }
        return DCOMM_OK;
    }
    left = dc_net_ep(ctx->net, ctx->ranks[(r - 1 + n) % n]);
    right = dc_net_ep(ctx->net, ctx->ranks[(r + 1) % n]);

    /* Reduce-scatter: after n-1 steps this rank owns segment (r+1) % n. */
    for (int s = 0; s < n - 1; s++) {
        int sseg, rseg;
        size_t soff, slen, roff, rlen;

        dc_ring_rs_step(r, n, s, &sseg, &rseg);
        dc_ring_segment(args->count, n, sseg, &soff, &slen);
        dc_ring_segment(args->count, n, rseg, &roff, &rlen);
        /* Step 0 sends our own input; later steps what we reduced before. */
        status = rs_step(ctx, left, right, (s == 0 ? send : recv) + soff * esize, slen * esize,
                         send + roff * esize, recv + roff * esize, rlen * esize, args, esize);
        if (status < 0) {
            return status;
        }
    }
    if (args->op == DCOMM_AVG) {
        size_t off, len;

        dc_ring_segment(args->count, n, (r + 1) % n, &off, &len);
        dc_reduce_scale(recv + off * esize, len, args->dtype, 1.0 / n);
    }

    /* Allgather: pass the finished segments around the ring. */
    for (int s = 0; s < n - 1; s++) {
        int sseg = ((r + 1 - s) % n + n) % n, rseg = ((r - s) % n + n) % n;
        size_t soff, slen, roff, rlen;
        dc_request_t *rreq = &ctx->reqs[0], *sreq = &ctx->reqs[1];
        dc_request_t *reqs[2] = {rreq, sreq};

        dc_ring_segment(args->count, n, sseg, &soff, &slen);
        dc_ring_segment(args->count, n, rseg, &roff, &rlen);
        status = dc_ep_irecv(left, recv + roff * esize, rlen * esize, ctx->tag, rreq);
        if (status < 0) {
            return status;
        }
        status = dc_ep_isend(right, recv + soff * esize, slen * esize, ctx->tag, sreq);
        if (status < 0) {
            return status;
        }
        status = dc_net_wait(ctx->net, reqs, 2, NULL, NULL);
        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): 2(p-1)a + (p-1)/p n (b + max(b, g)). */
static double ring_cost(const dc_cost_in_t *in)
{
    double n = in->n, p = in->p, a = in->a, b = in->b, g = in->g;

    if (in->p <= 1) {
        return 0.0;
    }
    return 2 * (p - 1) * a + (p - 1) / p * n * (b + DC_MAX(b, g));
}

const dc_coll_algo_t dc_allreduce_ring_algo = {
    .name = "ring",
    .doc = "reduce-scatter + allgather rings, chunk-pipelined; bandwidth-optimal",
    .supported = ring_supported,
    .run = ring_run,
    .cost = ring_cost,
};
