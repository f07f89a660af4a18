/*
 * Recursive-halving reduce-scatter: log2(p) rounds over p = 2^k virtual
 * ranks; each round swaps half of the current range of segments with the
 * partner and reduces the half kept. A size that is not a power of two first
 * folds the first 2*rem ranks in pairs (even into odd); virtual rank v then
 * finishes the segments of the real ranks it stands for (one or two) and
 * hands the even rank its segment. sendbuf is read-only and recvbuf holds one
 * segment, so the work runs in the scratch on column pieces: piece j of every
 * segment, packed back to back.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

typedef struct rh_piece {
    const dc_coll_args_t *args;
    int n;
    size_t j, pe;    /* piece index, elements per segment piece */
    size_t esize;
} rh_piece_t;

/* Elements per segment piece: the packed pieces of all segments plus as much
 * again for the incoming half must fit in DC_COLL_SCRATCH_MIN. */
static size_t rh_piece_elems(int n, size_t esize)
{
    return DC_COLL_SCRATCH_MIN / (2 * (size_t)n * esize);
}

static int rh_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && dc_reduce_supported(args->dtype, args->op) &&
           rh_piece_elems(ctx->size, dc_reduce_dtype_size(args->dtype)) > 0;
}

/* Length of segment i's piece, its start in sendbuf (elements), and its
 * offset in the packed buffer (elements). */
static size_t rh_len(const rh_piece_t *pc, int i, size_t *start_p, size_t *packed_p)
{
    size_t base = pc->args->count / (size_t)pc->n, extra = pc->args->count % (size_t)pc->n;
    size_t jp = pc->j * pc->pe, ui = (size_t)i;
    size_t a = base + 1 > jp ? DC_MIN(pc->pe, base + 1 - jp) : 0; /* long segments */
    size_t b = base > jp ? DC_MIN(pc->pe, base - jp) : 0;         /* short segments */
    size_t off, len;

    dc_ring_segment(pc->args->count, pc->n, i, &off, &len);
    if (start_p != NULL) {
        *start_p = off + jp;
    }
    if (packed_p != NULL) {
        *packed_p = DC_MIN(ui, extra) * a + (ui > extra ? ui - extra : 0) * b;
    }
    return ui < extra ? a : b;
}

/* Packed byte range of segments [lo, hi). */
static void rh_range(const rh_piece_t *pc, int lo, int hi, size_t *off_p, size_t *len_p)
{
    size_t a, b;

    rh_len(pc, lo, NULL, &a);
    rh_len(pc, hi - 1, NULL, &b);
    b += rh_len(pc, hi - 1, NULL, NULL);
    *off_p = a * pc->esize;
    *len_p = (b - a) * pc->esize;
}

/* First segment of virtual rank v's final range: the even and odd rank of a
 * folded pair both belong to v. */
static int rh_first(int v, int rem, int p, int n)
{
    return v >= p ? n : (v < rem ? 2 * v : v + rem);
}

static int rh_real(int v, int rem)
{
    return v < rem ? 2 * v + 1 : v + rem;
}

static dc_status_t rh_piece_run(const dc_coll_ctx_t *ctx, const rh_piece_t *pc, int p, int rem)
{
    const dc_coll_args_t *args = pc->args;
    size_t esize = pc->esize, total, start, len, poff, off;
    int n = pc->n, r = ctx->rank, v, lo = 0, hi = p;
    char *work = ctx->scratch, *in = work + (DC_COLL_SCRATCH_MIN / 2);
    dc_status_t status;

    rh_range(pc, 0, n, &off, &total);
    for (int i = 0; i < n; i++) {
        len = rh_len(pc, i, &start, &poff);
        memcpy(work + poff * esize, (const char *)args->sendbuf + start * esize, len * esize);
    }
    if (r < 2 * rem && r % 2 == 0) {
        len = rh_len(pc, r, NULL, NULL);
        status = dc_coll_sendrecv(ctx, r + 1, work, total, -1, NULL, 0);
        if (status < 0) {
            return status;
        }
        return dc_coll_sendrecv(ctx, -1, NULL, 0, r + 1,
                                (char *)args->recvbuf + pc->j * pc->pe * esize, len * esize);
    }
    if (r < 2 * rem) {
        status = dc_coll_sendrecv(ctx, -1, NULL, 0, r - 1, in, total);
        if (status < 0) {
            return status;
        }
        dc_reduce3(work, in, work, total / esize, args->dtype, args->op);
        v = r / 2;
    } else {
        v = r - rem;
    }
    for (int mask = p / 2; mask > 0; mask >>= 1) {
        int pv = v ^ mask, peer = rh_real(pv, rem), mid = lo + mask;
        int klo = (v & mask) ? mid : lo, khi = (v & mask) ? hi : mid;
        int slo = (v & mask) ? lo : mid, shi = (v & mask) ? mid : hi;
        size_t koff, klen, soff, slen;

        rh_range(pc, rh_first(klo, rem, p, n), rh_first(khi, rem, p, n), &koff, &klen);
        rh_range(pc, rh_first(slo, rem, p, n), rh_first(shi, rem, p, n), &soff, &slen);
        status = dc_coll_sendrecv(ctx, peer, work + soff, slen, peer, in, klen);
        if (status < 0) {
            return status;
        }
        /* The lower virtual rank's data comes first in every reduction. */
        if (pv < v) {
            dc_reduce3(work + koff, in, work + koff, klen / esize, args->dtype, args->op);
        } else {
            dc_reduce(work + koff, in, klen / esize, args->dtype, args->op);
        }
        lo = klo;
        hi = khi;
    }
    /* Segments of v: r's own, and before it the folded even rank's. */
    len = rh_len(pc, r, NULL, &poff);
    memcpy((char *)args->recvbuf + pc->j * pc->pe * esize, work + poff * esize, len * esize);
    if (r < 2 * rem) {
        len = rh_len(pc, r - 1, NULL, &poff);
        return dc_coll_sendrecv(ctx, r - 1, work + poff * esize, len * esize, -1, NULL, 0);
    }
    return DCOMM_OK;
}

static dc_status_t rh_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), my_off, my_len, longest, zero;
    int n = ctx->size, p = 1;
    rh_piece_t pc = {.args = args, .n = n, .pe = rh_piece_elems(n, esize), .esize = esize};
    dc_status_t status;

    dc_ring_segment(args->count, n, ctx->rank, &my_off, &my_len);
    if (n == 1) {
        if (args->count > 0 && args->sendbuf != args->recvbuf) {
            memcpy(args->recvbuf, args->sendbuf, args->count * esize);
        }
        return DCOMM_OK;
    }
    while (p * 2 <= n) {
        p *= 2;
    }
    dc_ring_segment(args->count, n, 0, &zero, &longest);
    for (pc.j = 0; pc.j * pc.pe < longest; pc.j++) {
        status = rh_piece_run(ctx, &pc, p, n - p);
        if (status < 0) {
            return status;
        }
    }
    if (args->op == DCOMM_AVG) {
        dc_reduce_scale(args->recvbuf, my_len, args->dtype, 1.0 / n);
    }
    return DCOMM_OK;
}

/* Cost (coll_cost.h): L' a k + (q-1)/q n (b' + g) + f (2a + n b' + n g + n/p b'),
 * L' = log2 q, k = dc_cost_scratch_pieces(n). */
static double rh_cost(const dc_cost_in_t *in)
{
    double n = in->n, p = in->p, a = in->a, bs = in->b_shared, g = in->g;
    double k = dc_cost_scratch_pieces(n);
    dc_cost_fold_t fo = dc_cost_fold(in->p);

    if (in->p <= 1) {
        return 0.0;
    }
    return fo.lq * a * k + (fo.q - 1) / fo.q * n * (bs + g) +
           fo.f * (2 * a + n * bs + n * g + n / p * bs);
}

const dc_coll_algo_t dc_reducescatter_rhalving_algo = {
    .name = "rhalving",
    .doc = "recursive-halving reduce-scatter, log2(size) rounds, any size (pairs fold first)",
    .supported = rh_supported,
    .run = rh_run,
    .cost = rh_cost,
};
