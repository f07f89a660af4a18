/*
 * Point-to-point patterns shared by the collective algorithms: a send/receive
 * pair with one peer each way, and a chunked exchange that reduces each
 * incoming piece as it lands, staged through the scratch memory.
 */
#ifndef DC_COLL_P2P_H
#define DC_COLL_P2P_H

#include "coll.h"

/* Pieces of a chunked exchange in flight at once (scratch slots). */
#define DC_COLL_P2P_WINDOW 4

static inline dc_endpoint_t *dc_coll_ep(const dc_coll_ctx_t *ctx, int comm_rank)
{
    return dc_net_ep(ctx->net, ctx->ranks[comm_rank]);
}

/* Posts a send (is_send) or receive of len bytes with comm rank `peer` into
 * ctx->reqs[*n] and appends it to wait[]; *n grows by one on success. */
static inline dc_status_t dc_coll_post(const dc_coll_ctx_t *ctx, int is_send, int peer,
                                       void *buf, size_t len, dc_request_t **wait, int *n)
{
    dc_status_t status = is_send
                             ? dc_ep_isend(dc_coll_ep(ctx, peer), buf, len, ctx->tag,
                                           &ctx->reqs[*n])
                             : dc_ep_irecv(dc_coll_ep(ctx, peer), buf, len, ctx->tag,
                                           &ctx->reqs[*n]);

    if (status == DCOMM_OK) {
        wait[*n] = &ctx->reqs[*n];
        (*n)++;
    }
    return status;
}

/* A context over some of ctx's ranks (members: comm ranks, me: this rank's
 * index among them) for running one phase of a hierarchical algorithm:
 * world[] and hosts[] ([n], caller's storage) receive the world ranks and the
 * host indices (all 0 when nhosts == 1, else member i on host i). No shm-direct
 * segment. */
dc_coll_ctx_t dc_coll_sub_ctx(const dc_coll_ctx_t *ctx, const int *members, int n, int me,
                              int *world, int *hosts, int nhosts);

/* Piece size in bytes: ctx->chunk_bytes (def when 0), at most
 * DC_COLL_SCRATCH_MIN / slots, a multiple of esize, at least esize. It depends
 * only on values every rank shares, so sender and receiver cut alike. */
size_t dc_coll_piece_bytes(const dc_coll_ctx_t *ctx, size_t esize, size_t def, size_t slots);

/* Sends slen bytes to comm rank `to` and receives rlen bytes from `from`
 * (either skipped when negative), then waits for both. Uses ctx->reqs[0..1]. */
dc_status_t dc_coll_sendrecv(const dc_coll_ctx_t *ctx, int to, const void *sbuf, size_t slen,
                             int from, void *rbuf, size_t rlen);

/* Sends snd_len bytes to `to` while receiving rlen bytes from `from`, both cut
 * into pieces of `piece` bytes; each incoming piece lands in the scratch and
 * is reduced into dst: dst = in op mine when in_first, else dst = mine op in
 * (dst may equal mine). Either side is skipped when its peer is negative.
 * Uses ctx->reqs[0 .. 2 * DC_COLL_P2P_WINDOW) and DC_COLL_P2P_WINDOW pieces
 * of scratch. */
dc_status_t dc_coll_exchange_reduce(const dc_coll_ctx_t *ctx, int to, const void *snd,
                                    size_t snd_len, int from, const void *mine, void *dst,
                                    size_t rlen, size_t piece, int in_first,
                                    dcomm_dtype_t dtype, dcomm_op_t op);

#endif
