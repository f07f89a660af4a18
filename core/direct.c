/*
 * The direct mode (dcomm_internal.h): one algorithm alone on the transport,
 * for dbench --direct. The world is core/bootstrap.c's, as dcomm_init sets it
 * up; the selector, its calibration and shm-direct's segment are made as the
 * coordinator makes them, so the algorithm timed is the one an application's
 * tensor of that size would get.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "coll.h"
#include "config.h"
#include "core.h"
#include "dc_reduce.h"
#include "dcomm_internal.h"
#include "log.h"
#include "select.h"
#include "coord_run.h"
#include "shm_group.h"

struct dc_direct {
    dc_state_t *st;   /* identity, store, hosts and network, from the bootstrap */
    dc_select_t *sel;
    dc_coll_ctx_t ctx;
    int *ranks;       /* world rank r at r */
    dc_request_t reqs[DC_COLL_MAX_REQS];
    uint64_t tag;     /* the next collective's; the same sequence on every rank */
};

/* The settings, identity and network, in dcomm_init's order. */
static dc_status_t direct_bootstrap(dc_state_t *st)
{
    dc_status_t status;

    st->events_fd = -1;
    DC_CHECK_GOTO(dc_config_load(), status, out);
    DC_CHECK_GOTO(dc_bootstrap_identity(st), status, out);
    dc_log_set_rank(st->rank);
    status = dc_bootstrap_connect(st);
out:
    return status;
}

/* Collective set-up, in the same order on every rank: calibration of the cost
 * model, then the host's segment for shm-direct when every rank is on this
 * host over shm (without it, shm-direct declines, as under the coordinator). */
static dc_status_t direct_collective_setup(dc_direct_t *d)
{
    dc_state_t *st = d->st;

    if (dc_config.calibrate && st->size > 1) {
        dc_status_t status = dc_select_calibrate(d->sel, st->net, st->rank, st->size, d->tag++);

        if (status < 0) {
            return status;
        }
    }
    if (st->size > 1 && st->cross_size == 1 &&
        dc_net_shares_memory(st->net, (st->rank + 1) % st->size) &&
        dc_shm_group_create(st->net, d->ranks, st->size, st->rank, 0, (int)dc_config.timeout_ms,
                            d->tag++, &d->ctx.shm_group) < 0) {
        DC_WARN("shm-direct allreduce disabled: %s", dc_error_get());
        d->ctx.shm_group = NULL;
    }
    return DCOMM_OK;
}

DC_INTERNAL_API dcomm_status_t dc_direct_open(dc_direct_t **d_p)
{
    dc_direct_t *d = calloc(1, sizeof(*d));
    char msg[1024];
    dc_status_t status;

    if (d == NULL || (d->st = calloc(1, sizeof(*d->st))) == NULL) {
        free(d);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "direct mode: out of memory");
    }
    DC_CHECK_GOTO(direct_bootstrap(d->st), status, err);
    d->ranks = calloc((size_t)d->st->size, sizeof(int));
    /* Allocated once and pre-faulted: page faults cost ~12 us here. */
    d->ctx.scratch = mmap(NULL, DC_COLL_SCRATCH_MIN, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (d->ctx.scratch == MAP_FAILED) {
        d->ctx.scratch = NULL;
    }
    if (d->ranks == NULL || d->ctx.scratch == NULL) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "direct mode: out of memory");
        goto err;
    }
    for (int r = 0; r < d->st->size; r++) {
        d->ranks[r] = r;
    }
    d->ctx.net = d->st->net;
    d->ctx.rank = d->st->rank;
    d->ctx.size = d->st->size;
    d->ctx.ranks = d->ranks;
    d->ctx.host_of = d->st->host_of;
    d->ctx.nhosts = d->st->cross_size;
    d->ctx.scratch_size = DC_COLL_SCRATCH_MIN;
    d->ctx.reqs = d->reqs;
    status = dc_select_create(dc_config.tune, &d->sel);
    if (status < 0) {
        status = dc_error_set(status, "DCOMM_TUNE: %s", dc_error_get());
        goto err;
    }
    dc_run_links_from(d->sel, d->st->net);
    DC_CHECK_GOTO(direct_collective_setup(d), status, err);
    *d_p = d;
    return DCOMM_OK;
err:
    snprintf(msg, sizeof(msg), "%s", dc_error_get());
    /* As dcomm_init: a peer that failed first may have taken down the one
     * this rank was talking to; name what dlaunch saw first. */
    (void)dc_bootstrap_launcher_cause(d->st, status, msg, sizeof(msg));
    dc_direct_close(d);
    return dc_error_set(status, "%s", msg);
}

DC_INTERNAL_API void dc_direct_close(dc_direct_t *d)
{
    if (d == NULL) {
        return;
    }
    dc_shm_group_destroy(d->ctx.shm_group);
    dc_select_destroy(d->sel);
    dc_bootstrap_close(d->st);
    if (d->ctx.scratch != NULL) {
        munmap(d->ctx.scratch, DC_COLL_SCRATCH_MIN);
    }
    free(d->ranks);
    free(d->st);
    free(d);
}

DC_INTERNAL_API int dc_direct_rank(const dc_direct_t *d)
{
    return d->ctx.rank;
}

DC_INTERNAL_API int dc_direct_size(const dc_direct_t *d)
{
    return d->ctx.size;
}

DC_INTERNAL_API const char *dc_direct_transport(const dc_direct_t *d)
{
    return dc_net_transport_name(d->ctx.net, (d->ctx.rank + 1) % d->ctx.size);
}

DC_INTERNAL_API int dc_direct_coll(const char *name)
{
    for (int coll = 0; coll < DC_COLL_NALGO; coll++) {
        if (name != NULL && strcmp(name, dc_select_coll_name(coll)) == 0) {
            return coll;
        }
    }
    return -1;
}

DC_INTERNAL_API int dc_direct_reducible(dcomm_dtype_t dtype, dcomm_op_t op)
{
    return dc_reduce_supported(dtype, op);
}

/* Bytes the cost model prices (select.h, dc_select_candidates). */
static size_t direct_bytes(const dc_direct_t *d, int coll, const dc_coll_args_t *args)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = 0;

    switch (coll) {
    case DC_COLL_ALLGATHER:
        for (int i = 0; i < d->ctx.size; i++) {
            bytes += args->counts[i] * esize;
        }
        return bytes;
    case DC_COLL_ALLTOALL:
        for (int i = 0; i < d->ctx.size; i++) {
            bytes += args->recv_counts[i] * esize;
        }
        return bytes;
    case DC_COLL_BARRIER:
        return 0;
    default:
        return args->count * esize;
    }
}

/* The class of the world's slowest link, as the coordinator takes it: a peer
 * on another host when there are several, else any peer; self alone. */
static dc_link_class_t direct_link(const dc_direct_t *d)
{
    const dc_coll_ctx_t *ctx = &d->ctx;

    for (int i = 0; i < ctx->size; i++) {
        if (i != ctx->rank && (ctx->nhosts == 1 || ctx->host_of[i] != ctx->host_of[ctx->rank])) {
            int k = dc_link_class_from_name(dc_net_transport_name(ctx->net, ctx->ranks[i]));

            return k >= 0 ? (dc_link_class_t)k : DC_LINK_TCP;
        }
    }
    return DC_LINK_SELF;
}

DC_INTERNAL_API dcomm_status_t dc_direct_run(dc_direct_t *d, int coll,
                                             const dc_direct_args_t *args, const char **algo_p)
{
    const dc_coll_args_t a = {.sendbuf = args->sendbuf, .recvbuf = args->recvbuf,
                              .count = args->count, .dtype = args->dtype, .op = args->op,
                              .root = args->root, .counts = args->counts,
                              .recv_counts = args->recv_counts};
    const dc_coll_algo_t *cand[DC_SELECT_MAX_ROWS];
    int n;

    *algo_p = NULL;
    if (coll < 0 || coll >= DC_COLL_NALGO) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "direct mode: no collective %d", coll);
    }
    n = dc_select_candidates(d->sel, coll, direct_bytes(d, coll, &a), d->ctx.size,
                             d->ctx.nhosts, direct_link(d), cand, DC_SELECT_MAX_ROWS);
    for (int i = 0; i < n; i++) {
        if (cand[i]->supported(&d->ctx, &a)) {
            *algo_p = cand[i]->name;
            d->ctx.tag = d->tag++;
            return cand[i]->run(&d->ctx, &a);
        }
    }
    return dc_error_set(DCOMM_ERR_INTERNAL, "no %s algorithm accepts these arguments",
                        dc_select_coll_name(coll));
}
