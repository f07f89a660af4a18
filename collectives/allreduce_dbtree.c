/*
 * Double-binary-tree allreduce: two binary trees over the ranks, each carrying
 * half of the vector. In the first tree rank r sits at position r of an
 * in-order balanced tree (odd-size subtrees put their leaves at even
 * positions); the second tree uses mirrored positions (size even) or positions
 * shifted by one (size odd), so most ranks that are leaves in one tree are
 * inner nodes of the other and both halves use every rank's links. Each half
 * travels in chunks: reduced up to the root (children's chunks staged in the
 * scratch), then broadcast down, both phases pipelined over a window of
 * chunks. Each element is reduced once, along one path, so every rank ends
 * bit-identical.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

#define DBT_WINDOW        4   /* chunks in flight per tree */
#define DBT_DEFAULT_CHUNK (128u << 10)

typedef struct dbt_tree {
    int parent;      /* comm rank, -1 at the root */
    int child[2];    /* comm ranks, -1 when absent; child[0] has the lower position */
    size_t off, len; /* bytes of the vector this tree carries */
    size_t nchunks;
} dbt_tree_t;

static int dbt_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return ctx->size >= 1 && dc_reduce_supported(args->dtype, args->op);
}

/* Position of rank r in tree t, and back. */
static int dbt_pos(int t, int n, int r)
{
    if (t == 0) {
        return r;
    }
    return (n % 2 == 0) ? n - 1 - r : (r + 1) % n;
}

static int dbt_rank(int t, int n, int pos)
{
    if (t == 0) {
        return pos;
    }
    return (n % 2 == 0) ? n - 1 - pos : (pos - 1 + n) % n;
}

/* Links of rank r in tree t: walk down the in-order tree of positions [0, n),
 * whose root is the middle position, until reaching r's position. */
static void dbt_links(int t, int n, int r, dbt_tree_t *tree)
{
    int lo = 0, hi = n, pos = dbt_pos(t, n, r), parent = -1;

    for (;;) {
        int mid = lo + (hi - lo) / 2;

        if (mid == pos) {
            tree->parent = parent < 0 ? -1 : dbt_rank(t, n, parent);
            tree->child[0] = lo < mid ? dbt_rank(t, n, lo + (mid - lo) / 2) : -1;
            tree->child[1] = mid + 1 < hi ? dbt_rank(t, n, mid + 1 + (hi - mid - 1) / 2) : -1;
            return;
        }
        parent = mid;
        if (pos < mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
}

/* Reduces chunk k of tree tr in position order (left, mine, right) into
 * recvbuf, then sends it to the parent (at the root: scales for AVG). */
static dc_status_t dbt_reduce_chunk(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args,
                                    const dbt_tree_t *tr, size_t k, size_t chunk,
                                    const char *in0, dc_request_t *sreq)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), off = tr->off + k * chunk;
    size_t len = DC_MIN(chunk, tr->len - k * chunk), n = len / esize;
    const char *in1 = in0 + chunk, *mine = (const char *)args->sendbuf + off;
    char *dst = (char *)args->recvbuf + off;

    if (tr->child[0] >= 0) {
        dc_reduce3(dst, in0, mine, n, args->dtype, args->op);
        mine = dst;
    }
    if (tr->child[1] >= 0) {
        dc_reduce3(dst, mine, in1, n, args->dtype, args->op);
        mine = dst;
    }
    if (tr->parent < 0) {
        if (mine != dst) {
            memcpy(dst, mine, len);
        }
        if (args->op == DCOMM_AVG) {
            dc_reduce_scale(dst, n, args->dtype, 1.0 / ctx->size);
        }
        return DCOMM_OK;
    }
    /* A leaf sends its input as is; recvbuf is only written by the broadcast,
     * after every send of this phase has completed. */
    return dc_ep_isend(dc_coll_ep(ctx, tr->parent), mine, len, ctx->tag, sreq);
}

/* Reduce phase: for each chunk, children's chunks land in the scratch, are
 * reduced with ours in position order (left, mine, right) into recvbuf, and
 * the result goes to the parent. Request slots per window entry: per tree,
 * two receives and one send. */
static dc_status_t dbt_reduce(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args,
                              dbt_tree_t *trees, size_t chunk, size_t nmax)
{
    size_t posted = 0;
    char *scratch = ctx->scratch;
    dc_status_t status;

    for (size_t k = 0; k < nmax + DBT_WINDOW; k++) {
        /* Receives run DBT_WINDOW chunks ahead of the reductions. */
        while (posted < nmax && posted < k + DBT_WINDOW) {
            size_t w = posted % DBT_WINDOW;

            for (int t = 0; t < 2; t++) {
                dbt_tree_t *tr = &trees[t];
                size_t off = posted * chunk;

                for (int c = 0; c < 2 && posted < tr->nchunks; c++) {
                    if (tr->child[c] < 0) {
                        continue;
                    }
                    status = dc_ep_irecv(dc_coll_ep(ctx, tr->child[c]),
                                         scratch + ((w * 2 + (size_t)t) * 2 + (size_t)c) * chunk,
                                         DC_MIN(chunk, tr->len - off), ctx->tag,
                                         &ctx->reqs[(w * 2 + (size_t)t) * 3 + (size_t)c]);
                    if (status < 0) {
                        return status;
                    }
                }
            }
            posted++;
        }
        /* Tree by tree: a rank may be its parent's parent in the other tree,
         * so waiting on both trees' inputs at once could deadlock. Wait for
         * chunk k's inputs and for the send that used this slot DBT_WINDOW
         * chunks ago, reduce, pass the chunk up. */
        size_t w = k % DBT_WINDOW;

        for (int t = 0; t < 2; t++) {
            dbt_tree_t *tr = &trees[t];
            dc_request_t *slot = &ctx->reqs[(w * 2 + (size_t)t) * 3], *wait[3];
            int nw = 0;

            if (k >= DBT_WINDOW && k - DBT_WINDOW < tr->nchunks && tr->parent >= 0) {
                wait[nw++] = &slot[2];
            }
            for (int c = 0; c < 2 && k < tr->nchunks; c++) {
                if (tr->child[c] >= 0) {
                    wait[nw++] = &slot[c];
                }
            }
            status = dc_net_wait(ctx->net, wait, nw, NULL, NULL);
            if (status < 0) {
                return status;
            }
            if (k >= tr->nchunks) {
                continue;
            }
            status = dbt_reduce_chunk(ctx, args, tr, k, chunk,
                                      scratch + ((w * 2 + (size_t)t) * 2) * chunk, &slot[2]);
            if (status < 0) {
                return status;
            }
        }
    }
    return DCOMM_OK;
}

/* Broadcast phase: chunks from the parent land in recvbuf and are forwarded
 * to the children. Request slots per window entry: per tree, one receive and
 * two sends. */
static dc_status_t dbt_bcast(const dc_coll_ctx_t *ctx, dbt_tree_t *trees, char *recv,
                             size_t chunk, size_t nmax)
{
    size_t posted = 0;
    dc_status_t status;

    for (size_t k = 0; k < nmax + DBT_WINDOW; k++) {
        while (posted < nmax && posted < k + DBT_WINDOW) {
            size_t w = posted % DBT_WINDOW;

            for (int t = 0; t < 2; t++) {
                dbt_tree_t *tr = &trees[t];
                size_t off = posted * chunk;

                if (tr->parent < 0 || posted >= tr->nchunks) {
                    continue;
                }
                status = dc_ep_irecv(dc_coll_ep(ctx, tr->parent), recv + tr->off + off,
                                     DC_MIN(chunk, tr->len - off), ctx->tag,
                                     &ctx->reqs[(w * 2 + (size_t)t) * 3]);
                if (status < 0) {
                    return status;
                }
            }
            posted++;
        }
        size_t w = k % DBT_WINDOW, off = k * chunk;

        /* Tree by tree, as in the reduce phase. */
        for (int t = 0; t < 2; t++) {
            dbt_tree_t *tr = &trees[t];
            dc_request_t *slot = &ctx->reqs[(w * 2 + (size_t)t) * 3], *wait[3];
            int nw = 0;

            for (int c = 0; c < 2; c++) {
                if (k >= DBT_WINDOW && k - DBT_WINDOW < tr->nchunks && tr->child[c] >= 0) {
                    wait[nw++] = &slot[1 + c];
                }
            }
            if (k < tr->nchunks && tr->parent >= 0) {
                wait[nw++] = &slot[0];
            }
            status = dc_net_wait(ctx->net, wait, nw, NULL, NULL);
            if (status < 0) {
                return status;
            }
            for (int c = 0; c < 2 && k < tr->nchunks; c++) {
                if (tr->child[c] < 0) {
                    continue;
                }
                status = dc_ep_isend(dc_coll_ep(ctx, tr->child[c]), recv + tr->off + off,
                                     DC_MIN(chunk, tr->len - off), ctx->tag, &slot[1 + c]);
                if (status < 0) {
                    return status;
                }
            }
        }
    }
    return DCOMM_OK;
}

static dc_status_t dbt_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), half = args->count / 2;
    /* Scratch: per window entry, per tree, one chunk per child. */
    size_t chunk = dc_coll_piece_bytes(ctx, esize, DBT_DEFAULT_CHUNK, DBT_WINDOW * 4);
    dbt_tree_t trees[2];
    dc_status_t status;
    size_t nmax;

    if (ctx->size == 1 || args->count == 0) {
        if (args->sendbuf != args->recvbuf && args->count > 0) {
            memcpy(args->recvbuf, args->sendbuf, args->count * esize);
        }
        return DCOMM_OK;
    }
    for (int t = 0; t < 2; t++) {
        dbt_links(t, ctx->size, ctx->rank, &trees[t]);
        trees[t].off = t == 0 ? 0 : half * esize;
        trees[t].len = (t == 0 ? half : args->count - half) * esize;
        trees[t].nchunks = (trees[t].len + chunk - 1) / chunk;
    }
    nmax = DC_MAX(trees[0].nchunks, trees[1].nchunks);
    status = dbt_reduce(ctx, args, trees, chunk, nmax);
    if (status < 0) {
        return status;
    }
    return dbt_bcast(ctx, trees, args->recvbuf, chunk, nmax);
}

/* Cost (coll_cost.h): 2L a + n (b' + max(b', g)): each rank is inner in one
 * tree, leaf in the other, so it receives and sends ~n per phase. */
static double dbt_cost(const dc_cost_in_t *in)
{
    double n = in->n, a = in->a, bs = in->b_shared, g = in->g, l = dc_cost_ceil_log2(in->p);

    if (in->p <= 1) {
        return 0.0;
    }
    return 2 * l * a + n * (bs + DC_MAX(bs, g));
}

const dc_coll_algo_t dc_allreduce_dbtree_algo = {
    .name = "dbtree",
    .doc = "double binary tree: two complementary trees, half the vector each, chunks "
           "reduced up then broadcast down",
    .supported = dbt_supported,
    .run = dbt_run,
    .cost = dbt_cost,
};
