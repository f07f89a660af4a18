/*
 * Rabenseifner allreduce: reduce-scatter by recursive halving, then allgather
 * by recursive doubling, moving about 2 * count elements per rank in
 * 2 * log2(size) rounds. Any size: the first 2*rem ranks (rem = size minus the
 * largest power of two below it) fold in pairs first, the even rank handing
 * its vector to the odd one and getting the result back at the end. The
 * vector is cut into p = 2^k segments (dc_ring_segment), so every exchange is
 * a contiguous range of segments; each segment is reduced by one owner only
 * and then copied, so every rank ends bit-identical. Incoming data is staged
 * through the scratch in pieces, so vectors of any length work.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

#define RAB_DEFAULT_PIECE (512u << 10)

static int rab_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && dc_reduce_supported(args->dtype, args->op);
}

static int rab_real(int v, int rem)
{
    return v < rem ? 2 * v + 1 : v + rem;
}

/* Byte range of segments [lo, hi) of count elements over p segments. */
static void seg_range(size_t count, int p, int lo, int hi, size_t esize, size_t *off_p,
                      size_t *len_p)
{
    size_t off, len, end_off, end_len;

    dc_ring_segment(count, p, lo, &off, &len);
    dc_ring_segment(count, p, hi - 1, &end_off, &end_len);
    *off_p = off * esize;
    *len_p = (end_off + end_len - off) * esize;
}

static dc_status_t rab_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = args->count * esize;
    size_t piece = dc_coll_piece_bytes(ctx, esize, RAB_DEFAULT_PIECE, DC_COLL_P2P_WINDOW);
    int n = ctx->size, r = ctx->rank, p = 1, rem, v, lo, hi;
    const char *src = args->sendbuf; /* my data until the first reduction */
    char *buf = args->recvbuf;
    dc_status_t status;

    if (n == 1 || bytes == 0) {
        if (src != buf && bytes > 0) {
            memcpy(buf, src, bytes);
        }
        return DCOMM_OK;
    }
    while (p * 2 <= n) {
        p *= 2;
    }
    rem = n - p;
    if (r < 2 * rem && r % 2 == 0) {
        status = dc_coll_exchange_reduce(ctx, r + 1, src, bytes, -1, NULL, NULL, 0, piece, 0,
                                         args->dtype, args->op);
        if (status < 0) {
            return status;
        }
        return dc_coll_sendrecv(ctx, -1, NULL, 0, r + 1, buf, bytes);
    }
    if (r < 2 * rem) {
        status = dc_coll_exchange_reduce(ctx, -1, NULL, 0, r - 1, src, buf, bytes, piece, 1,
                                         args->dtype, args->op);
        if (status < 0) {
            return status;
        }
        src = buf;
        v = r / 2;
    } else {
        v = r - rem;
    }

    /* Reduce-scatter by recursive halving: keep the half of the current
     * segment range that holds segment v, send the other half. */
    lo = 0;
    hi = p;
    for (int mask = p / 2; mask > 0; mask >>= 1) {
        int pv = v ^ mask, peer = rab_real(pv, rem), mid = lo + mask;
        int klo = (v & mask) ? mid : lo, khi = (v & mask) ? hi : mid;
        int slo = (v & mask) ? lo : mid, shi = (v & mask) ? mid : hi;
        size_t koff, klen, soff, slen;

        seg_range(args->count, p, klo, khi, esize, &koff, &klen);
        seg_range(args->count, p, slo, shi, esize, &soff, &slen);
        /* The lower virtual rank's data comes first in every reduction. */
        status = dc_coll_exchange_reduce(ctx, peer, src + soff, slen, peer, src + koff,
                                         buf + koff, klen, piece, pv < v, args->dtype,
                                         args->op);
        if (status < 0) {
            return status;
        }
        src = buf;
        lo = klo;
        hi = khi;
    }
    if (args->op == DCOMM_AVG) {
        size_t off, len;

        dc_ring_segment(args->count, p, v, &off, &len);
        dc_reduce_scale(buf + off * esize, len, args->dtype, 1.0 / n);
    }

    /* Allgather by recursive doubling: swap aligned blocks of mask segments. */
    for (int mask = 1; mask < p; mask <<= 1) {
        int pv = v ^ mask, peer = rab_real(pv, rem);
        int mlo = v & ~(mask - 1), plo = pv & ~(mask - 1);
        size_t moff, mlen, poff, plen;

        seg_range(args->count, p, mlo, mlo + mask, esize, &moff, &mlen);
        seg_range(args->count, p, plo, plo + mask, esize, &poff, &plen);
        status = dc_coll_sendrecv(ctx, peer, buf + moff, mlen, peer, buf + poff, plen);
        if (status < 0) {
            return status;
        }
    }
    if (r < 2 * rem) {
        return dc_coll_sendrecv(ctx, r - 1, buf, bytes, -1, NULL, 0);
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): 2L' a + (q-1)/q n (b' + max(b', g)) + f (2a + 2n b' + n g). */
static double rab_cost(const dc_cost_in_t *in)
{
    double n = in->n, a = in->a, bs = in->b_shared, g = in->g;
    dc_cost_fold_t fo = dc_cost_fold(in->p);

    if (in->p <= 1) {
        return 0.0;
    }
    return 2 * fo.lq * a + (fo.q - 1) / fo.q * n * (bs + DC_MAX(bs, g)) +
           fo.f * (2 * a + 2 * n * bs + n * g);
}

const dc_coll_algo_t dc_allreduce_rab_algo = {
    .name = "rab",
    .doc = "Rabenseifner: recursive-halving reduce-scatter + recursive-doubling allgather, "
           "any size",
    .supported = rab_supported,
    .run = rab_run,
    .cost = rab_cost,
};
