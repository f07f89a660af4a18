/*
 * Hierarchical allgather(v) for jobs on several hosts with several ranks
 * each: the ranks of a host send their blocks to the host's leader (its
 * lowest comm rank) over shm, the leaders pass whole host groups around a
 * ring across hosts (h-1 network steps instead of p-1), and each leader
 * broadcasts the gathered result within its host (pipelined chain). Blocks
 * may differ in length, zero included, and hosts may hold different numbers
 * of ranks or interleave in comm rank order: a host group travels as one
 * message per block, each landing in place in recvbuf, so nothing is staged.
 */
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"

#define AGH_MAX_RANKS 1024

/* The comm's ranks grouped by host: order[first[h] .. first[h+1]) are the comm
 * ranks of host h, ascending (so order[first[h]] is its leader); off[i] is the
 * byte offset of comm rank i's block in recvbuf. */
typedef struct agh_layout {
    int order[AGH_MAX_RANKS], first[AGH_MAX_RANKS + 1], cursor[AGH_MAX_RANKS];
    size_t off[AGH_MAX_RANKS];
} agh_layout_t;

static int agh_applicable(const dc_coll_ctx_t *ctx)
{
    if (ctx->nhosts < 2 || ctx->host_of == NULL || ctx->size > AGH_MAX_RANKS ||
        ctx->nhosts > ctx->size) {
        return 0;
    }
    for (int i = 0; i < ctx->size; i++) {
        if (ctx->host_of[i] < 0 || ctx->host_of[i] >= ctx->nhosts) {
            return 0;
        }
    }
    return 1;
}

static int agh_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return args->counts != NULL && dc_reduce_dtype_size(args->dtype) > 0 && agh_applicable(ctx);
}

/* Counting sort of the comm ranks by host (stable: ascending within a host). */
static void agh_layout(const dc_coll_ctx_t *ctx, const size_t *counts, size_t esize,
                       agh_layout_t *l)
{
    size_t off = 0;

    memset(l->first, 0, sizeof(l->first[0]) * (size_t)(ctx->nhosts + 1));
    for (int i = 0; i < ctx->size; i++) {
        l->first[ctx->host_of[i] + 1]++;
        l->off[i] = off;
        off += counts[i] * esize;
    }
    for (int h = 0; h < ctx->nhosts; h++) {
        l->first[h + 1] += l->first[h];
        l->cursor[h] = l->first[h];
    }
    for (int i = 0; i < ctx->size; i++) {
        l->order[l->cursor[ctx->host_of[i]]++] = i;
    }
}

/* Posts the next nonempty blocks order[*k .. end) (at most `room`) as sends to
 * `peer` or receives from it (peer == -2: each block from its owner). Blocks
 * of no elements are skipped by sender and receiver alike, so batch i on both
 * ends holds the same messages; a receive skips this rank's own block. */
static dc_status_t agh_post(const dc_coll_ctx_t *ctx, const agh_layout_t *l, const size_t *counts,
                            size_t esize, char *recv, int is_send, int peer, int *k, int end,
                            int room, dc_request_t **wait, int *nw)
{
    dc_status_t status = DCOMM_OK;

    for (int posted = 0; status == DCOMM_OK && posted < room && *k < end; (*k)++) {
        int b = l->order[*k];

        if (counts[b] > 0 && (is_send || b != ctx->rank)) {
            status = dc_coll_post(ctx, is_send, peer >= 0 ? peer : b, recv + l->off[b],
                                  counts[b] * esize, wait, nw);
            posted++;
        }
    }
    return status;
}

/* Sends the blocks of host sg to comm rank `to` and receives those of host rg
 * from `from` (either skipped when -1; from == -2: each block from its owner).
 * Each batch holds at most half of DC_COLL_MAX_REQS messages each way, so a
 * sender's batch i meets its receiver's batch i and a ring cannot deadlock
 * when sends wait for their receives. */
static dc_status_t agh_move(const dc_coll_ctx_t *ctx, const agh_layout_t *l, const size_t *counts,
                            size_t esize, char *recv, int to, int sg, int from, int rg)
{
    int ks = to >= 0 ? l->first[sg] : 0, ke = to >= 0 ? l->first[sg + 1] : 0;
    int kr = from != -1 ? l->first[rg] : 0, kre = from != -1 ? l->first[rg + 1] : 0;
    dc_status_t status = DCOMM_OK;

    while (status == DCOMM_OK && (ks < ke || kr < kre)) {
        dc_request_t *wait[DC_COLL_MAX_REQS];
        int nw = 0;

        status = agh_post(ctx, l, counts, esize, recv, 0, from, &kr, kre, DC_COLL_MAX_REQS / 2,
                          wait, &nw);
        if (status == DCOMM_OK) {
            status = agh_post(ctx, l, counts, esize, recv, 1, to, &ks, ke,
                              DC_COLL_MAX_REQS / 2, wait, &nw);
        }
        if (status == DCOMM_OK && nw > 0) {
            status = dc_net_wait(ctx->net, wait, nw, NULL, NULL);
        }
    }
    return status;
}

/* Leaders only: a ring over the hosts' leaders, host h's leader at position h.
 * At step s the leader of host j sends group (j - s) and receives (j - s - 1). */
static dc_status_t agh_cross(const dc_coll_ctx_t *ctx, const agh_layout_t *l,
                             const size_t *counts, size_t esize, char *recv, int me)
{
    int h = ctx->nhosts, right = l->order[l->first[(me + 1) % h]];
    int left = l->order[l->first[(me - 1 + h) % h]];

    for (int s = 0; s < h - 1; s++) {
        int sg = ((me - s) % h + h) % h, rg = (sg - 1 + h) % h;
        dc_status_t status = agh_move(ctx, l, counts, esize, recv, right, sg, left, rg);

        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

static dc_status_t agh_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    static __thread agh_layout_t l; /* ~20 KiB: kept off the coordinator's stack */
    static __thread int world[AGH_MAX_RANKS], hosts[AGH_MAX_RANKS];
    size_t esize = dc_reduce_dtype_size(args->dtype), total = 0;
    int me = ctx->host_of[ctx->rank], leader, nlocal, my_local = 0;
    const size_t *counts = args->counts;
    char *recv = args->recvbuf;
    dc_coll_args_t b = *args;
    dc_coll_ctx_t sub;
    dc_status_t status;

    if (!agh_applicable(ctx)) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "hier allgather: the comm does not span hosts "
                                                "(supported() should have declined)");
    }
    agh_layout(ctx, counts, esize, &l);
    for (int i = 0; i < ctx->size; i++) {
        total += counts[i];
    }
    leader = l.order[l.first[me]];
    nlocal = l.first[me + 1] - l.first[me];
    for (int k = 0; k < nlocal; k++) {
        my_local = l.order[l.first[me] + k] == ctx->rank ? k : my_local;
    }
    /* 1. Gather the host's blocks in place at its leader. */
    if (ctx->rank == leader) {
        if (counts[leader] > 0 && args->sendbuf != recv + l.off[leader]) {
            memmove(recv + l.off[leader], args->sendbuf, counts[leader] * esize);
        }
        status = agh_move(ctx, &l, counts, esize, recv, -1, 0, -2, me);
        /* 2. Host groups around the leaders' ring. */
        if (status == DCOMM_OK) {
            status = agh_cross(ctx, &l, counts, esize, recv, me);
        }
    } else {
        status = counts[ctx->rank] == 0 ? DCOMM_OK
                                        : dc_coll_sendrecv(ctx, leader, args->sendbuf,
                                                           counts[ctx->rank] * esize, -1, NULL, 0);
    }
    if (status < 0 || nlocal == 1 || total == 0) {
        return status;
    }
    /* 3. The whole result from the leader to the host's other ranks (a
     *    non-leader's own block is overwritten with the same bytes). */
    sub = dc_coll_sub_ctx(ctx, &l.order[l.first[me]], nlocal, my_local, world, hosts, 1);
    b.recvbuf = recv;
    b.count = total;
    b.root = 0;
    return dc_bcast_chain_algo.run(&sub, &b);
}

/* Cost (coll_cost.h), m = ceil(p/h):
 *   (m-1) as + (m-1)/p n bs          gather to each host's leader
 *   + (h-1) a + (h-1)/h n b          ring of the h leaders
 *   + the chain broadcast's cost over m ranks of the shm link, in each host;
 * inapplicable unless h > 1 and p > h (a host with 2+ ranks): it saves
 * network steps (latency), the rings keep bandwidth. */
static double agh_cost(const dc_cost_in_t *in)
{
    int p = in->p, h = in->h;
    double n = in->n, m = ceil((double)p / h);
    dc_cost_in_t host = *in;

    if (p <= 1) {
        return 0.0;
    }
    if (h < 2 || p <= h) {
        return INFINITY;
    }
    host.p = (int)m;
    host.h = 1;
    host.cls = DC_LINK_SHM;
    host.a = in->shm_a;
    host.b = host.b_shared = in->shm_b;
    return (m - 1) * in->shm_a + (m - 1) / p * n * in->shm_b + (h - 1) * in->a +
           (double)(h - 1) / h * n * in->b + dc_bcast_chain_algo.cost(&host);
}

const dc_coll_algo_t dc_allgather_hier_algo = {
    .name = "hier",
    .doc = "hierarchical allgatherv: gather to a leader per host, ring across the leaders, "
           "broadcast within each host; any ranks per host, comm spanning 2+ hosts",
    .supported = agh_supported,
    .run = agh_run,
    .cost = agh_cost,
};
