/*
 * The coordinator's way to run collectives: through the selector's ranking,
 * never a hard-wired algorithm (coord_run.h).
 */
#include <stdio.h>

#include "coord_run.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"


dc_status_t dc_run_init(dc_runner_t *r, const char *tune, dc_net_t *net)
{
    dc_status_t status = dc_select_create(tune, &r->sel);

    if (status < 0) {
        return dc_error_set(status, "DCOMM_TUNE: %s", dc_error_get());
    }
    dc_run_links_from(r->sel, net);
    return DCOMM_OK;
}

void dc_run_links_from(dc_select_t *sel, dc_net_t *net)
{
    for (int i = 0; i < dc_net_transport_count(net); i++) {
        dc_transport_attr_t attr;
        int cls = dc_link_class_from_name(dc_net_transport_at(net, i, &attr));

        if (cls >= 0) {
            dc_select_set_link(sel, (dc_link_class_t)cls, attr.latency_us, attr.bandwidth_gbs);
        }
    }
}

void dc_run_free(dc_runner_t *r)
{
    dc_select_destroy(r->sel);
    r->sel = NULL;
}

dc_status_t dc_run_calibrate(dc_runner_t *r, dc_net_t *net, int rank, int size, uint64_t tag)
{
    return dc_select_calibrate(r->sel, net, rank, size, tag);
}

void dc_run_set_alpha_scale(dc_runner_t *r, double scale)
{
    dc_select_set_alpha_scale(r->sel, scale);
}

dc_coll_ctx_t dc_run_comm_ctx(const dc_coll_ctx_t *base, const dc_comm_t *cm, int32_t comm,
                              uint64_t tag)
{
    dc_coll_ctx_t ctx = *base;

    ctx.tag = tag;
    ctx.rank = cm->rank;
    ctx.size = cm->size;
    ctx.ranks = cm->ranks;
    ctx.host_of = cm->host_of;
    ctx.nhosts = cm->nhosts;
    if (comm != DCOMM_COMM_WORLD) {
        ctx.shm_group = NULL; /* the shared segment spans COMM_WORLD */
    }
    return ctx;
}

/* Candidate algorithms for one collective, best first: the cost model of the
 * comm's slowest link (a peer on another host when the comm spans hosts),
 * after DCOMM_TUNE. Depends only on values equal on every member. */
static int candidates(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                               const dc_coll_args_t *args, const dc_coll_algo_t **out, int max)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = 0;
    dc_link_class_t cls = DC_LINK_SELF;

    for (int i = 0; i < ctx->size; i++) {
        if (i != ctx->rank && (ctx->nhosts == 1 || ctx->host_of[i] != ctx->host_of[ctx->rank])) {
            int k = dc_link_class_from_name(dc_net_transport_name(ctx->net, ctx->ranks[i]));

            cls = k >= 0 ? (dc_link_class_t)k : DC_LINK_TCP;
            break;
        }
    }
    switch (coll) {
    case DC_COLL_ALLGATHER:
        for (int i = 0; i < ctx->size; i++) {
            bytes += args->counts[i] * esize;
        }
        break;
    case DC_COLL_ALLTOALL:
        /* What one rank sends differs per rank: use the mean, the same everywhere. */
        for (int i = 0; i < ctx->size; i++) {
            bytes += args->recv_counts[i] * esize;
        }
        break;
    case DC_COLL_BARRIER:
        break;
    default:
        bytes = args->count * esize;
        break;
    }
    return dc_select_candidates(r->sel, coll, bytes, ctx->size, ctx->nhosts, cls, out, max);
}

static void stat_algo(dc_runner_t *r, int coll, const dc_coll_algo_t *algo, size_t bytes,
                      uint64_t ns)
{
    int i;

    for (i = 0; i < r->nalgos && (r->algos[i].algo != algo || r->algos[i].coll != coll); i++) {
    }
    if (i == r->nalgos) {
        if (r->nalgos == (int)(sizeof(r->algos) / sizeof(r->algos[0]))) {
            return;
        }
        r->algos[r->nalgos++] = (algo_stat_t){.algo = algo, .coll = coll};
    }
    r->algos[i].calls++;
    r->algos[i].bytes += bytes;
    r->algos[i].ns += ns;
}

/* The first of cand[0 .. n-1] that accepts the arguments; declines are
 * logged. NULL: none. */
static const dc_coll_algo_t *first_accepting(const dc_coll_algo_t *const *cand, int n, int coll,
                                             const dc_coll_ctx_t *ctx,
                                             const dc_coll_args_t *args, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (cand[i]->supported(ctx, args)) {
            return cand[i];
        }
        DC_DEBUG("%s '%s': algorithm '%s' declined, trying the next", dc_coll_name(coll), name,
                 cand[i]->name);
    }
    return NULL;
}

/* The algorithm for one collective: the candidates in order of preference,
 * the first that accepts the arguments. NULL: none. */
const dc_coll_algo_t *dc_run_pick(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                                  const dc_coll_args_t *args, const char *name)
{
    const dc_coll_algo_t *cand[DC_SELECT_MAX_ROWS];
    int n = candidates(r, coll, ctx, args, cand, DC_SELECT_MAX_ROWS);

    return first_accepting(cand, n, coll, ctx, args, name);
}

/* Runs algo (from pick_algo; NULL: none accepted) and counts it. */
dc_status_t dc_run_picked(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                          const dc_coll_args_t *args, const char *name,
                          const dc_coll_algo_t *algo, const char **algo_p)
{
    size_t bytes = args->count * dc_reduce_dtype_size(args->dtype);
    uint64_t t0 = dc_now_ns();
    dc_status_t status;

    if (algo == NULL) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "no %s algorithm accepts tensor '%s'",
                            dc_coll_name(coll), name);
    }
    DC_DEBUG("%s '%s': %s, %zu elements, %d ranks%s", dc_coll_name(coll), name, algo->name,
             args->count, ctx->size, args->nsegs ? " (segments)" : "");
    status = algo->run(ctx, args);
    stat_algo(r, coll, algo, bytes, dc_now_ns() - t0);
    r->cycle_bytes += bytes;
    *algo_p = algo->name;
    return status;
}

dc_status_t dc_run_algo(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                        const dc_coll_args_t *args, const char *name, const char **algo_p)
{
    return dc_run_picked(r, coll, ctx, args, name, dc_run_pick(r, coll, ctx, args, name), algo_p);
}

dc_status_t dc_run_device(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                          const dc_coll_args_t *args, const char *name, const char **algo_p)
{
    const dc_coll_algo_t *cand[DC_SELECT_MAX_ROWS];
    int n = dc_select_device(coll, cand, DC_SELECT_MAX_ROWS);

    return dc_run_picked(r, coll, ctx, args, name, first_accepting(cand, n, coll, ctx, args, name),
                         algo_p);
}

dc_status_t dc_run_control(int coll, const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    const dc_coll_algo_t *cand[DC_SELECT_MAX_ROWS];
    int n = dc_select_control(coll, cand, DC_SELECT_MAX_ROWS);

    for (int i = 0; i < n; i++) {
        if (cand[i]->supported(ctx, args)) {
            return cand[i]->run(ctx, args);
        }
    }
    return dc_error_set(DCOMM_ERR_INTERNAL, "no control algorithm for %s", dc_coll_name(coll));
}

void dc_run_cycle_begin(dc_runner_t *r)
{
    r->cycle_bytes = 0;
}

void dc_run_print_stats(const dc_runner_t *r, int rank)
{
    for (int i = 0; i < r->nalgos; i++) {
        const algo_stat_t *a = &r->algos[i];

        fprintf(stderr, "dcomm stats rank %d: %s %s: %llu calls, %llu bytes, %.3f s, %.2f GB/s\n",
                rank, dc_coll_name(a->coll), a->algo->name, (unsigned long long)a->calls,
                (unsigned long long)a->bytes, (double)a->ns / 1e9,
                a->ns ? (double)a->bytes / (double)a->ns : 0.0);
    }
}
