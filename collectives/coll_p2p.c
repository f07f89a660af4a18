/*
 * Point-to-point patterns shared by the collective algorithms (coll_p2p.h).
 */
#include "coll_p2p.h"

#include "dc_reduce.h"

size_t dc_coll_piece_bytes(const dc_coll_ctx_t *ctx, size_t esize, size_t def, size_t slots)
{
    size_t piece = ctx->chunk_bytes ? ctx->chunk_bytes : def;

    piece = DC_MIN(piece, DC_COLL_SCRATCH_MIN / DC_MAX(slots, 1));
    piece -= piece % esize;
    return piece ? piece : esize;
}

dc_coll_ctx_t dc_coll_sub_ctx(const dc_coll_ctx_t *ctx, const int *members, int n, int me,
                              int *world, int *hosts, int nhosts)
{
    dc_coll_ctx_t sub = *ctx;

    for (int i = 0; i < n; i++) {
        world[i] = ctx->ranks[members[i]];
        hosts[i] = nhosts == 1 ? 0 : i;
    }
    sub.rank = me;
    sub.size = n;
    sub.ranks = world;
    sub.host_of = hosts;
    sub.nhosts = nhosts;
    sub.shm_group = NULL;
    return sub;
}

dc_status_t dc_coll_sendrecv(const dc_coll_ctx_t *ctx, int to, const void *sbuf, size_t slen,
                             int from, void *rbuf, size_t rlen)
{
    dc_request_t *wait[2];
    dc_status_t status;
    int n = 0;

    if (from >= 0) {
        status = dc_ep_irecv(dc_coll_ep(ctx, from), rbuf, rlen, ctx->tag, &ctx->reqs[0]);
        if (status < 0) {
            return status;
        }
        wait[n++] = &ctx->reqs[0];
    }
    if (to >= 0) {
        status = dc_ep_isend(dc_coll_ep(ctx, to), sbuf, slen, ctx->tag, &ctx->reqs[1]);
        if (status < 0) {
            return status;
        }
        wait[n++] = &ctx->reqs[1];
    }
    return dc_net_wait(ctx->net, wait, n, NULL, NULL);
}

dc_status_t dc_coll_exchange_reduce(const dc_coll_ctx_t *ctx, int to, const void *snd,
                                    size_t snd_len, int from, const void *mine, void *dst,
                                    size_t rlen, size_t piece, int in_first,
                                    dcomm_dtype_t dtype, dcomm_op_t op)
{
    size_t esize = dc_reduce_dtype_size(dtype);
    size_t nsend = to >= 0 ? (snd_len + piece - 1) / piece : 0;
    size_t nrecv = from >= 0 ? (rlen + piece - 1) / piece : 0;
    size_t nmax = DC_MAX(nsend, nrecv), posted = 0, done = 0;
    dc_request_t *rreq = &ctx->reqs[0], *sreq = &ctx->reqs[DC_COLL_P2P_WINDOW];
    char *slots = ctx->scratch;
    dc_status_t status;

    while (done < nmax) {
        while (posted < nmax && posted - done < DC_COLL_P2P_WINDOW) {
            size_t off = posted * piece, k = posted % DC_COLL_P2P_WINDOW;

            if (posted < nrecv) {
                status = dc_ep_irecv(dc_coll_ep(ctx, from), slots + k * piece,
                                     DC_MIN(piece, rlen - off), ctx->tag, &rreq[k]);
                if (status < 0) {
                    return status;
                }
            }
            if (posted < nsend) {
                status = dc_ep_isend(dc_coll_ep(ctx, to), (const char *)snd + off,
                                     DC_MIN(piece, snd_len - off), ctx->tag, &sreq[k]);
                if (status < 0) {
                    return status;
                }
            }
            posted++;
        }
        size_t k = done % DC_COLL_P2P_WINDOW, off = done * piece;
        dc_request_t *wait[2];
        int n = 0;

        if (done < nrecv) {
            wait[n++] = &rreq[k];
        }
        if (done < nsend) {
            wait[n++] = &sreq[k];
        }
        /* On error, requests may stay posted: the caller closes the network. */
        status = dc_net_wait(ctx->net, wait, n, NULL, NULL);
        if (status < 0) {
            return status;
        }
        if (done < nrecv) {
            size_t len = DC_MIN(piece, rlen - off) / esize;
            const char *in = slots + k * piece, *me = (const char *)mine + off;

            if (in_first) {
                dc_reduce3((char *)dst + off, in, me, len, dtype, op);
            } else {
                dc_reduce3((char *)dst + off, me, in, len, dtype, op);
            }
        }
        done++;
    }
    return DCOMM_OK;
}
