/*
 * Bruck allgather(v): ceil(log2 size) rounds; in round k rank r sends the
 * blocks it holds, r .. r + 2^k - 1 (mod size), to rank r - 2^k and receives
 * blocks r + 2^k ... from rank r + 2^k. Without the usual rotated staging
 * buffer: a run of blocks wraps at most once around recvbuf, so it moves as
 * at most two messages, cut the same way by sender and receiver, straight
 * into place. Blocks may differ in length (args->counts), zero included.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

static int bruck_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && args->counts != NULL && dc_reduce_dtype_size(args->dtype) > 0;
}

static size_t elems_before(const size_t *counts, int b)
{
    size_t off = 0;

    for (int i = 0; i < b; i++) {
        off += counts[i];
    }
    return off;
}

/* Blocks [first, first + m) mod n as up to two byte ranges of recvbuf. */
static int block_run(const size_t *counts, int n, int first, int m, size_t esize,
                     size_t off_p[2], size_t len_p[2])
{
    int end = first + m, pieces = 0;

    if (end > n) {
        off_p[pieces] = 0;
        len_p[pieces] = elems_before(counts, end - n) * esize;
        pieces++;
        end = n;
    }
    off_p[pieces] = elems_before(counts, first) * esize;
    len_p[pieces] = (elems_before(counts, end) - elems_before(counts, first)) * esize;
    return pieces + 1;
}

static dc_status_t bruck_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype);
    int n = ctx->size, r = ctx->rank;
    char *recv = args->recvbuf;
    size_t my_off = elems_before(args->counts, r) * esize;
    dc_status_t status;

    if (args->counts[r] > 0 && args->sendbuf != recv + my_off) {
        memmove(recv + my_off, args->sendbuf, args->counts[r] * esize);
    }
    for (int dist = 1; dist < n; dist *= 2) {
        int m = DC_MIN(dist, n - dist), to = (r - dist + n) % n, from = (r + dist) % n;
        size_t soff[2], slen[2], roff[2], rlen[2];
        int ns = block_run(args->counts, n, r, m, esize, soff, slen);
        int nr = block_run(args->counts, n, from, m, esize, roff, rlen);
        dc_request_t *wait[4];
        int nw = 0;

        for (int i = 0; i < nr; i++) {
            status = dc_coll_post(ctx, 0, from, recv + roff[i], rlen[i], wait, &nw);
            if (status < 0) {
                return status;
            }
        }
        for (int i = 0; i < ns; i++) {
            status = dc_coll_post(ctx, 1, to, (void *)(recv + soff[i]), slen[i], wait, &nw);
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

/* Cost (coll_cost.h): L a + (p-1)/p n b' (blocks land in place: no rotation). */
static double bruck_cost(const dc_cost_in_t *in)
{
    double n = in->n, p = in->p, a = in->a, bs = in->b_shared, l = dc_cost_ceil_log2(in->p);

    if (in->p <= 1) {
        return 0.0;
    }
    return l * a + (p - 1) / p * n * bs;
}

const dc_coll_algo_t dc_allgather_bruck_algo = {
    .name = "bruck",
    .doc = "Bruck allgatherv, ceil(log2 size) rounds, no staging copy; small messages",
    .supported = bruck_supported,
    .run = bruck_run,
    .cost = bruck_cost,
};
