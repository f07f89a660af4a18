/*
 * Ring reduce-scatter: the reduce-scatter half of the ring allreduce, shifted
 * by one so rank r ends with segment r (dc_ring_segment). sendbuf is read-only
 * and recvbuf holds one segment, so partial sums live in the scratch: the
 * segments are worked through in column pieces (piece j of every segment),
 * each a full ring of size-1 steps; the last step reduces into recvbuf.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

#define RSRING_DEFAULT_PIECE (1u << 20)

static int rsring_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && dc_reduce_supported(args->dtype, args->op);
}

/* Elements of piece j (pe elements per piece) of segment i, and its start. */
static size_t piece_of(const dc_coll_args_t *args, int n, int i, size_t j, size_t pe,
                       size_t *start_p)
{
    size_t off, len;

    dc_ring_segment(args->count, n, i, &off, &len);
    *start_p = off + j * pe;
    return len > j * pe ? DC_MIN(pe, len - j * pe) : 0;
}

static dc_status_t rsring_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype);
    size_t pe = dc_coll_piece_bytes(ctx, esize, RSRING_DEFAULT_PIECE, 3) / esize;
    int n = ctx->size, r = ctx->rank, rs = (r - 1 + n) % n;
    int left = (r - 1 + n) % n, right = (r + 1) % n;
    const char *send = args->sendbuf;
    char *in = ctx->scratch, *acc[2] = {in + pe * esize, in + 2 * pe * esize};
    size_t my_off, my_len, npieces;
    dc_status_t status;

    dc_ring_segment(args->count, n, r, &my_off, &my_len);
    if (n == 1) {
        if (args->count > 0 && send != args->recvbuf) {
            memcpy(args->recvbuf, send, args->count * esize);
        }
        return DCOMM_OK;
    }
    dc_ring_segment(args->count, n, 0, &(size_t){0}, &npieces); /* longest segment */
    npieces = (npieces + pe - 1) / pe;
    for (size_t j = 0; j < npieces; j++) {
        for (int s = 0; s < n - 1; s++) {
            int sseg, rseg;
            size_t sstart, rstart, slen, rlen;
            char *dst;

            /* Rank rs of the allreduce schedule ends owning segment rs + 1 = r. */
            dc_ring_rs_step(rs, n, s, &sseg, &rseg);
            slen = piece_of(args, n, sseg, j, pe, &sstart);
            rlen = piece_of(args, n, rseg, j, pe, &rstart);
            status = dc_coll_sendrecv(ctx, right, s == 0 ? send + sstart * esize : acc[(s - 1) % 2],
                                      slen * esize, left, in, rlen * esize);
            if (status < 0) {
                return status;
            }
            dst = s == n - 2 ? (char *)args->recvbuf + (rstart - my_off) * esize : acc[s % 2];
            dc_reduce3(dst, send + rstart * esize, in, rlen, args->dtype, args->op);
        }
    }
    if (args->op == DCOMM_AVG) {
        dc_reduce_scale(args->recvbuf, my_len, args->dtype, 1.0 / n);
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): (p-1) a k + (p-1)/p n (b + g), n one rank's input,
 * k = dc_cost_scratch_pieces(n). */
static double rsring_cost(const dc_cost_in_t *in)
{
    double n = in->n, p = in->p, k = dc_cost_scratch_pieces(n);

    if (in->p <= 1) {
        return 0.0;
    }
    return (p - 1) * in->a * k + (p - 1) / p * n * (in->b + in->g);
}

const dc_coll_algo_t dc_reducescatter_ring_algo = {
    .name = "ring",
    .doc = "ring reduce-scatter, size-1 steps per column piece; bandwidth-optimal",
    .supported = rsring_supported,
    .run = rsring_run,
    .cost = rsring_cost,
};
