/*
 * Shm-direct allreduce: the ranks of one host reduce through one shared segment
 * (transports/shm/shm_group.h) instead of exchanging messages. The data moves in
 * chunks small enough to stay in cache. For chunk k every rank copies its input
 * into its slot (all but its own slice, which it reads from its buffer), rank i
 * reduces slice i of the chunk over every rank's input into the shared result
 * (writing it to its own buffer as it goes), and every rank copies the other
 * slices of the result out. Two buffers per slot: a rank copies in chunk k+1
 * while the others still reduce chunk k.
 *
 * Fused tensors may come as segments (zero-copy fusion): they are gathered
 * straight into the slots and the result scattered straight back.
 *
 * Each slice has one owner that reduces inputs in rank order 0, 1, ..., n-1 and
 * scales AVG once, so every rank gets bit-identical results that do not depend
 * on the chunk size.
 *
 * For small messages (dc_shm_group_onephase) the chunks take one phase
 * instead: every rank copies its whole chunk into its slot and reduces all
 * slots itself, in the same rank order. That costs n times the reduction, but
 * a rank never waits for a peer to finish reducing: one hand-off per chunk
 * instead of two, which is what counts for latency when the ranks outnumber
 * the cores and every hand-off may wait for a peer to be scheduled. For large
 * messages the two phases are faster, also with two ranks (both cores copy and
 * reduce half of the data each).
 */
#include <string.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "coll.h"
#include "coll_cost.h"
#include "dc_reduce.h"
#include "shm_group.h"

/* From this many bytes on, the result goes to the caller's buffer with
 * non-temporal stores: a buffer this large leaves the cache anyway, and
 * streaming stores skip reading every destination line before writing it
 * (a third of the memory traffic of a plain copy). */
#define SD_NT_MIN (4u << 20)

/* One phase with streaming stores reduces this many bytes at a time into
 * scratch (it stays in L1/L2) and streams them out. */
#define SD_NT_PIECE (16u << 10)

/* memcpy with streaming stores for the aligned middle (x86-64; elsewhere memcpy).
 * The caller issues the store fence. */
static void copy_nt(void *dst, const void *src, size_t len)
{
#if defined(__x86_64__)
    char *d = dst;
    const char *s = src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;

    if (len < 256) {
        memcpy(d, s, len);
        return;
    }
    memcpy(d, s, head);
    d += head;
    s += head;
    len -= head;
    for (; len >= 64; d += 64, s += 64, len -= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));

        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, len);
#else
    memcpy(dst, src, len);
#endif
}

static void copy_plain(void *dst, const void *src, size_t len)
{
    memcpy(dst, src, len);
}

static void store_fence(void)
{
#if defined(__x86_64__)
    _mm_sfence();
#endif
}

typedef struct sd_chunk {
    uint32_t step; /* across collectives: the same on every rank */
    int buf;       /* which of the double buffers */
    size_t off;    /* first element of the chunk */
    size_t len;    /* elements */
    int nt;        /* copy the result out with streaming stores */
    int onephase;  /* every rank reduces the whole chunk (see the top) */
} sd_chunk_t;

static int shmdirect_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->shm_group != NULL && ctx->nhosts == 1 &&
           dc_reduce_supported(args->dtype, args->op) &&
           dc_shm_group_matches(ctx->shm_group, ctx->ranks, ctx->size, ctx->rank);
}

/* Slice i of a chunk of len elements: whole cache lines, so that owners do not
 * write the same line of the result. */
static void slice_of(size_t len, size_t esize, int n, int i, size_t *off_p, size_t *len_p)
{
    size_t per_line = (DC_CACHE_LINE % esize == 0) ? DC_CACHE_LINE / esize : 1;
    size_t lines = (len + per_line - 1) / per_line, loff, llen;

    dc_ring_segment(lines, n, i, &loff, &llen);
    *off_p = DC_MIN(len, loff * per_line);
    *len_p = DC_MIN(len, (loff + llen) * per_line) - *off_p;
}

static dc_status_t wait_all(dc_shm_group_t *g, dc_shm_group_seq_t which, uint32_t step)
{
    for (int i = 1; i < g->n; i++) {
        dc_status_t status = dc_shm_group_wait(g, (g->me + i) % g->n, which, step);

        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

/* Our input of the chunk into our slot; in two phases, all but our own slice. */
static dc_status_t copy_in(dc_shm_group_t *g, const dc_coll_args_t *args, size_t esize,
                           const sd_chunk_t *c)
{
    uint8_t *slot = dc_shm_group_slot(g, g->me, c->buf);
    size_t so = c->len, sl = 0;
    /* every reader of this buffer's previous chunk is done with it (both
     * paths publish RED once they have read the slots) */
    dc_status_t status = wait_all(g, DC_SHM_SEQ_RED, c->step - DC_SHM_GROUP_NBUF);

    if (status < 0) {
        return status;
    }
    if (!c->onephase) {
        slice_of(c->len, esize, g->n, g->me, &so, &sl);
    }
    dc_coll_gather(args, esize, c->off, so, slot);
    dc_coll_gather(args, esize, c->off + so + sl, c->len - so - sl, slot + (so + sl) * esize);
    dc_shm_group_post(g, DC_SHM_SEQ_IN, c->step);
    return DCOMM_OK;
}

/* The last step of our slice's reduction (dst = a op b; with a == dst when
 * b is not the second input), piece by piece: each piece is scaled for AVG
 * and copied out to our own buffer while it is still in L1, which saves
 * reading the slice back from the shared result in copy_out (at 1 MiB, np=2,
 * 17 against 11 GB/s). In place, the piece's lines of our buffer were just
 * read as input: plain stores hit the cache, streaming ones would evict them. */
static void reduce_last(uint8_t *res, const void *a, const void *b, const dc_coll_args_t *args,
                        size_t esize, const sd_chunk_t *c, size_t so, size_t sl, int n)
{
    size_t piece = SD_NT_PIECE / esize;
    void (*copy)(void *, const void *, size_t) =
        (c->nt && args->sendbuf != args->recvbuf) ? copy_nt : copy_plain;

    for (size_t o = 0; o < sl; o += piece) {
        size_t len = DC_MIN(piece, sl - o);
        uint8_t *out = res + o * esize;

        if (a == res) {
            dc_reduce(out, (const uint8_t *)b + o * esize, len, args->dtype, args->op);
        } else {
            dc_reduce3(out, (const uint8_t *)a + o * esize, (const uint8_t *)b + o * esize, len,
                       args->dtype, args->op);
        }
        if (args->op == DCOMM_AVG) {
            dc_reduce_scale(out, len, args->dtype, 1.0 / n);
        }
        dc_coll_scatter(args, esize, c->off + so + o, len, out, copy);
    }
}

/* Our slice of the chunk over every rank's input, in rank order, into the
 * result and out to our buffer. */
static dc_status_t reduce_slice(dc_shm_group_t *g, const dc_coll_args_t *args, size_t esize,
                                const sd_chunk_t *c)
{
    size_t so, sl;
    uint8_t *res;
    const void *first = NULL;
    dc_status_t status = wait_all(g, DC_SHM_SEQ_OUT, c->step - DC_SHM_GROUP_NBUF);

    if (status < 0) {
        return status;
    }
    slice_of(c->len, esize, g->n, g->me, &so, &sl);
    res = dc_shm_group_result(g, c->buf) + so * esize;
    for (int j = 0; j < g->n; j++) {
        /* our own input is read in place; our slot's part for it is free
         * (copy_in skips it) and serves where it spans segments */
        const void *src = (j == g->me)
                              ? dc_coll_input(args, esize, c->off + so, sl,
                                              dc_shm_group_slot(g, j, c->buf) + so * esize)
                              : (const void *)(dc_shm_group_slot(g, j, c->buf) + so * esize);

        if (j != g->me) {
            status = dc_shm_group_wait(g, j, DC_SHM_SEQ_IN, c->step);
            if (status < 0) {
                return status;
            }
        }
        if (j == g->n - 1) {
            reduce_last(res, j == 1 ? first : res, src, args, esize, c, so, sl, g->n);
        } else if (j == 0) {
            first = src;
        } else if (j == 1) {
            dc_reduce3(res, first, src, sl, args->dtype, args->op);
        } else {
            dc_reduce(res, src, sl, args->dtype, args->op);
        }
    }
    dc_shm_group_post(g, DC_SHM_SEQ_RED, c->step);
    return DCOMM_OK;
}

/* Every other slice of the result as its owner finishes it (reduce_slice
 * wrote our own). */
static dc_status_t copy_out(dc_shm_group_t *g, const dc_coll_args_t *args, size_t esize,
                            const sd_chunk_t *c)
{
    const uint8_t *res = dc_shm_group_result(g, c->buf);

    for (int i = 1; i < g->n; i++) {
        int owner = (g->me + i) % g->n;
        size_t so, sl;
        dc_status_t status = dc_shm_group_wait(g, owner, DC_SHM_SEQ_RED, c->step);

        if (status < 0) {
            return status;
        }
        slice_of(c->len, esize, g->n, owner, &so, &sl);
        dc_coll_scatter(args, esize, c->off + so, sl, res + so * esize,
                        c->nt ? copy_nt : copy_plain);
    }
    dc_shm_group_post(g, DC_SHM_SEQ_OUT, c->step);
    return DCOMM_OK;
}

/* Every slot's chunk in rank order over [off, off + len) of the chunk into dst. */
static void reduce_slots(void *dst, dc_shm_group_t *g, const dc_coll_args_t *args, size_t esize,
                         const sd_chunk_t *c, size_t off, size_t len)
{
    size_t at = off * esize;

    dc_reduce3(dst, dc_shm_group_slot(g, 0, c->buf) + at, dc_shm_group_slot(g, 1, c->buf) + at,
               len, args->dtype, args->op);
    for (int j = 2; j < g->n; j++) {
        dc_reduce(dst, dc_shm_group_slot(g, j, c->buf) + at, len, args->dtype, args->op);
    }
    if (args->op == DCOMM_AVG) {
        dc_reduce_scale(dst, len, args->dtype, 1.0 / g->n);
    }
}

/* One phase: the whole chunk over every rank's slot, straight into recvbuf;
 * with streaming stores (or into segments) through a cache-sized piece of
 * scratch. RED and OUT both say we are done with this step's slots, for
 * either path that follows. */
static dc_status_t reduce_all(dc_shm_group_t *g, const dc_coll_ctx_t *ctx,
                              const dc_coll_args_t *args, size_t esize, const sd_chunk_t *c)
{
    dc_status_t status = wait_all(g, DC_SHM_SEQ_IN, c->step);

    if (status < 0) {
        return status;
    }
    if (!c->nt && args->nsegs == 0) {
        reduce_slots((char *)args->recvbuf + c->off * esize, g, args, esize, c, 0, c->len);
    } else {
        size_t piece = SD_NT_PIECE / esize;

        for (size_t o = 0; o < c->len; o += piece) {
            size_t len = DC_MIN(piece, c->len - o);

            reduce_slots(ctx->scratch, g, args, esize, c, o, len);
            dc_coll_scatter(args, esize, c->off + o, len, ctx->scratch,
                            c->nt ? copy_nt : copy_plain);
        }
    }
    dc_shm_group_post(g, DC_SHM_SEQ_RED, c->step);
    dc_shm_group_post(g, DC_SHM_SEQ_OUT, c->step);
    return DCOMM_OK;
}

static void chunk_at(const dc_shm_group_t *g, size_t count, size_t chunk_elems, size_t k,
                     sd_chunk_t *c)
{
    c->step = g->step + 1 + (uint32_t)k;
    c->buf = (int)(c->step % DC_SHM_GROUP_NBUF);
    c->off = k * chunk_elems;
    c->len = DC_MIN(chunk_elems, count - c->off);
}

static dc_status_t shmdirect_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    dc_shm_group_t *g = ctx->shm_group;
    size_t esize = dc_reduce_dtype_size(args->dtype);
    size_t chunk = ctx->chunk_bytes ? DC_MIN(ctx->chunk_bytes, g->chunk) : g->chunk;
    size_t chunk_elems, nchunks;
    sd_chunk_t cur, next = {0};
    dc_status_t status = DCOMM_OK;

    if (g->failed) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "shmdirect: an earlier collective failed on "
                            "this shm group; its ranks are out of step");
    }
    if (args->count == 0) {
        return DCOMM_OK;
    }
    if (g->n == 1) {
        for (size_t i = 0; i < DC_MAX(args->nsegs, (size_t)1); i++) {
            const dc_coll_seg_t one = {args->sendbuf, args->recvbuf, 0, args->count};
            const dc_coll_seg_t *sg = args->nsegs ? &args->segs[i] : &one;

            if (sg->recvbuf != NULL && sg->sendbuf == NULL) {
                memset(sg->recvbuf, 0, sg->count * esize);
            } else if (sg->recvbuf != NULL && sg->sendbuf != sg->recvbuf) {
                memcpy(sg->recvbuf, sg->sendbuf, sg->count * esize);
            }
        }
        return DCOMM_OK;
    }
    chunk -= chunk % DC_CACHE_LINE;
    chunk_elems = DC_MAX(chunk, (size_t)DC_CACHE_LINE) / esize;
    nchunks = (args->count + chunk_elems - 1) / chunk_elems;

    chunk_at(g, args->count, chunk_elems, 0, &cur);
    cur.nt = args->count * esize >= SD_NT_MIN;
    cur.onephase = dc_shm_group_onephase(g->n, args->count * esize);
    /* in place, recvbuf's lines are in the cache already (we read them): plain
     * stores cost no extra read there */
    cur.nt &= !cur.onephase || args->sendbuf != args->recvbuf;
    next = cur;
    DC_CHECK_GOTO(copy_in(g, args, esize, &cur), status, err);
    for (size_t k = 0; k < nchunks; k++) {
        if (!cur.onephase) {
            DC_CHECK_GOTO(reduce_slice(g, args, esize, &cur), status, err);
        }
        if (k + 1 < nchunks) { /* overlaps the others' reductions of chunk k */
            chunk_at(g, args->count, chunk_elems, k + 1, &next);
            DC_CHECK_GOTO(copy_in(g, args, esize, &next), status, err);
        }
        if (cur.onephase) {
            DC_CHECK_GOTO(reduce_all(g, ctx, args, esize, &cur), status, err);
        } else {
            DC_CHECK_GOTO(copy_out(g, args, esize, &cur), status, err);
        }
        cur = next;
    }
    if (cur.nt) {
        store_fence();
    }
    g->step += (uint32_t)nchunks;
    return DCOMM_OK;

err:
    g->failed = 1; /* steps on the ranks no longer agree */
    return status;
}

/* Cost (coll_cost.h): 2L a + 2n c + (p-1)/p n g (copy in, reduce a 1/p slice
 * of every input, copy out; two barriers); one phase (p = 2, or p n small:
 * dc_shm_group_onephase): a + n c + (p-1) n g (copy in, every rank reduces
 * every input; one hand-off). Only for one host over shm, else inapplicable,
 * whatever p. */
static double shmdirect_cost(const dc_cost_in_t *in)
{
    double n = in->n, p = in->p, a = in->a, c = in->c, g = in->g, l = dc_cost_ceil_log2(in->p);

    if (in->h != 1 || in->cls != DC_LINK_SHM) {
        return INFINITY;
    }
    if (in->p <= 1) {
        return 0.0;
    }
    if (dc_shm_group_onephase(in->p, in->bytes)) {
        return a + n * c + (p - 1) * n * g;
    }
    return 2 * l * a + 2 * n * c + (p - 1) / p * n * g;
}

const dc_coll_algo_t dc_allreduce_shmdirect_algo = {
    .name = "shmdirect",
    .doc = "one host: every rank reduces its slice of a shared segment, chunk-pipelined",
    .supported = shmdirect_supported,
    .run = shmdirect_run,
    .cost = shmdirect_cost,
    .segments = 1,
};
