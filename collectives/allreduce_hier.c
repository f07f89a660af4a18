/*
 * Hierarchical allreduce for jobs on several hosts with several ranks each:
 * the ranks of a host reduce-scatter the vector among themselves (shm), the
 * ranks with the same local index on every host allreduce their segment across
 * hosts (the network: one flow per local rank, each 1/local_size of the data),
 * and the ranks of a host allgather the segments. Network messages drop from
 * 2(p-1) per rank (ring) to 2 log2(hosts) (Rabenseifner across hosts).
 * Each phase is an existing algorithm run on a sub-context of the comm's
 * ranks. Needs the same number of ranks on every host. AVG sums throughout
 * and scales each segment once, before the allgather, so every rank ends
 * bit-identical.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

#define HIER_MAX_LOCAL 256  /* ranks per host */
#define HIER_MAX_HOSTS 1024

/* The comm's layout seen from this rank: the comm ranks of its host and of
 * its peers (same local index) on the other hosts, each in ascending order. */
typedef struct hier_layout {
    int local[HIER_MAX_LOCAL], nlocal, my_local;
    int cross[HIER_MAX_HOSTS], ncross, my_cross;
} hier_layout_t;

/* 0 when every host has the same number of ranks (and limits hold). */
static int hier_layout(const dc_coll_ctx_t *ctx, hier_layout_t *l)
{
    int per_host[HIER_MAX_HOSTS] = {0};

    if (ctx->nhosts < 2 || ctx->nhosts > HIER_MAX_HOSTS || ctx->host_of == NULL) {
        return -1;
    }
    l->nlocal = 0;
    for (int i = 0; i < ctx->size; i++) {
        int h = ctx->host_of[i];

        if (h < 0 || h >= ctx->nhosts || per_host[h] >= HIER_MAX_LOCAL) {
            return -1;
        }
        if (h == ctx->host_of[ctx->rank]) {
            l->my_local = i == ctx->rank ? l->nlocal : l->my_local;
            l->local[l->nlocal++] = i;
        }
        per_host[h]++;
    }
    for (int h = 0; h < ctx->nhosts; h++) {
        if (per_host[h] != l->nlocal) {
            return -1;
        }
    }
    /* Hosts in order of their first comm rank, as host indices are numbered. */
    l->ncross = 0;
    for (int h = 0; h < ctx->nhosts; h++) {
        int seen = 0;

        for (int i = 0; i < ctx->size; i++) {
            if (ctx->host_of[i] == h && seen++ == l->my_local) {
                l->my_cross = i == ctx->rank ? l->ncross : l->my_cross;
                l->cross[l->ncross++] = i;
                break;
            }
        }
    }
    return 0;
}

static int hier_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    hier_layout_t l;

    return dc_reduce_supported(args->dtype, args->op) && hier_layout(ctx, &l) == 0;
}

static dc_status_t hier_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    static __thread hier_layout_t l; /* ~5 KiB: kept off the coordinator's stack */
    static __thread int world[HIER_MAX_HOSTS], hosts[HIER_MAX_HOSTS];
    size_t esize = dc_reduce_dtype_size(args->dtype), counts[HIER_MAX_LOCAL], off = 0, len;
    dcomm_op_t op = args->op == DCOMM_AVG ? DCOMM_SUM : args->op;
    char *recv = args->recvbuf;
    dc_coll_args_t a = *args;
    dc_coll_ctx_t sub;
    dc_status_t status;

    if (hier_layout(ctx, &l) != 0) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "hier allreduce: hosts hold different rank "
                                                "counts (supported() should have declined)");
    }
    for (int i = 0; i < l.nlocal; i++) {
        dc_ring_segment(args->count, l.nlocal, i, &off, &counts[i]);
    }
    dc_ring_segment(args->count, l.nlocal, l.my_local, &off, &len);

    /* 1. Within the host: this rank's segment, reduced over the host, lands in
     *    place in recvbuf (the other segments of sendbuf are only read). */
    sub = dc_coll_sub_ctx(ctx, l.local, l.nlocal, l.my_local, world, hosts, 1);
    a.recvbuf = recv + off * esize;
    a.op = op;
    status = dc_reducescatter_ring_algo.run(&sub, &a);
    if (status < 0) {
        return status;
    }
    /* 2. Across hosts: the same segment of every host, in place. */
    sub = dc_coll_sub_ctx(ctx, l.cross, l.ncross, l.my_cross, world, hosts, l.ncross);
    a.sendbuf = a.recvbuf;
    a.count = len;
    status = dc_allreduce_rab_algo.run(&sub, &a);
    if (status < 0) {
        return status;
    }
    if (args->op == DCOMM_AVG) {
        dc_reduce_scale(a.recvbuf, len, args->dtype, 1.0 / ctx->size);
    }
    /* 3. Within the host: every segment to every rank. */
    sub = dc_coll_sub_ctx(ctx, l.local, l.nlocal, l.my_local, world, hosts, 1);
    a.sendbuf = a.recvbuf;
    a.recvbuf = recv;
    a.counts = counts;
    return dc_allgather_ring_algo.run(&sub, &a);
}

/* Cost (coll_cost.h), m = p/h ranks per host, k as for the reduce-scatters:
 *   (m-1) as k + (m-1)/m n (bs + g)                      local reduce-scatter
 *   + rab over h ranks of n/m bytes with b' = m b  (m flows share a host's link)
 *   + (m-1) as + (m-1)/m n bs                            local allgather;
 * inapplicable unless h > 1, m > 1 and h divides p. */
static double hier_cost(const dc_cost_in_t *in)
{
    int p = in->p, h = in->h;
    double n = in->n, a = in->a, g = in->g, sa = in->shm_a, sb = in->shm_b;
    double k = dc_cost_scratch_pieces(n), m, bx, nx;
    dc_cost_fold_t fo;

    if (p <= 1) {
        return 0.0;
    }
    if (h < 2 || p % h != 0 || p / h < 2) {
        return INFINITY;
    }
    m = (double)(p / h);
    bx = m * in->b;
    nx = n / m;
    fo = dc_cost_fold(h);
    return (m - 1) * sa * k + (m - 1) / m * n * (sb + g) + 2 * fo.lq * a +
           (fo.q - 1) / fo.q * nx * (bx + DC_MAX(bx, g)) + fo.f * (2 * a + 2 * nx * bx + nx * g) +
           (m - 1) * sa + (m - 1) / m * n * sb;
}

const dc_coll_algo_t dc_allreduce_hier_algo = {
    .name = "hier",
    .doc = "hierarchical: reduce-scatter within each host, allreduce across hosts, "
           "allgather within each host; same rank count on every host",
    .supported = hier_supported,
    .run = hier_run,
    .cost = hier_cost,
};
