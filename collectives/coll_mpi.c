/*
 * The "mpi" algorithms of allreduce, allgather(v) and broadcast: the whole
 * collective handed to MPI (MPI_Iallreduce, MPI_Iallgatherv, MPI_Ibcast in the
 * mpi module) when every peer of the comm is served by the mpi transport, as
 * under `mpirun` with DCOMM_TRANSPORTS=mpi. Three thin rows over one path,
 * hence one file. They decline, so that dcomm's own algorithms run, when a
 * peer uses another transport, for float16/bfloat16 (MPI has no such types)
 * and beyond MPI's int counts; each reason is logged once at info level.
 * AVG runs as SUM and is scaled here.
 */
#include <limits.h>
#include <stdatomic.h>
#include <string.h>

#include "coll.h"
#include "coll_cost.h"
#include "coll_p2p.h"
#include "dc_reduce.h"
#include "log.h"

enum { WHY_TRANSPORT, WHY_FLOAT16, WHY_BFLOAT16, WHY_COUNT, WHY_OTHER };

/* Logs each decline reason once per process (any thread). */
static void decline_once(int why, const char *why_text)
{
    static atomic_uint logged;
    unsigned bit = 1u << why;

    if ((atomic_fetch_or(&logged, bit) & bit) == 0) {
        DC_INFO("mpi algorithm: declined %s; dcomm's own algorithms run", why_text);
    }
}

/* The mpi endpoint of the comm's first peer when every peer is served by a
 * transport named "mpi" with native collectives (one transport per process
 * serves them all); NULL otherwise. */
static dc_endpoint_t *mpi_endpoint(const dc_coll_ctx_t *ctx)
{
    dc_endpoint_t *first = NULL;

    for (int i = 0; i < ctx->size; i++) {
        dc_endpoint_t *ep;

        if (i == ctx->rank) {
            continue;
        }
        ep = dc_coll_ep(ctx, i);
        if (ep == NULL || strcmp(ep->ops->name, "mpi") != 0 || ep->ops->native == NULL ||
            ep->ops->native_supported == NULL) {
            return NULL;
        }
        first = first ? first : ep;
    }
    return first;
}

static int mpi_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args,
                         dc_coll_t kind)
{
    dc_endpoint_t *ep = mpi_endpoint(ctx);
    dcomm_op_t op = args->op == DCOMM_AVG ? DCOMM_SUM : args->op;
    size_t total = args->count;

    if (ctx->size < 2) {
        return 0;
    }
    if (ep == NULL) {
        decline_once(WHY_TRANSPORT, "where a comm peer is not served by the mpi transport "
                                    "(run under mpirun with DCOMM_TRANSPORTS=mpi)");
        return 0;
    }
    if (kind == DC_COLL_ALLGATHER) {
        if (args->counts == NULL) {
            return 0;
        }
        total = 0;
        for (int i = 0; i < ctx->size; i++) {
            total += args->counts[i];
        }
    }
    if (args->dtype == DCOMM_FLOAT16 || args->dtype == DCOMM_BFLOAT16) {
        decline_once(args->dtype == DCOMM_FLOAT16 ? WHY_FLOAT16 : WHY_BFLOAT16,
                     args->dtype == DCOMM_FLOAT16 ? "for float16 (MPI has no such type)"
                                                  : "for bfloat16 (MPI has no such type)");
        return 0;
    }
    if (total > INT_MAX) {
        decline_once(WHY_COUNT, "for more than INT_MAX elements (MPI's int counts)");
        return 0;
    }
    if (!ep->ops->native_supported(kind, args->dtype, op) ||
        (args->op == DCOMM_AVG && !dc_reduce_supported(args->dtype, args->op))) {
        decline_once(WHY_OTHER, "for a dtype/op the mpi module has no native form for");
        return 0;
    }
    return 1;
}

static dc_status_t mpi_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args,
                           dc_coll_t kind)
{
    dc_endpoint_t *ep = mpi_endpoint(ctx);
    dc_native_coll_t nc = {
        .kind = kind, .ranks = ctx->ranks, .nranks = ctx->size, .rank = ctx->rank,
        .sendbuf = args->sendbuf, .recvbuf = args->recvbuf, .count = args->count,
        .dtype = args->dtype, .op = args->op == DCOMM_AVG ? DCOMM_SUM : args->op,
        .root = args->root, .counts = args->counts,
    };
    dc_status_t status;

    if (ep == NULL) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "mpi algorithm: a comm peer is not on the mpi "
                                                "transport (supported() should have declined)");
    }
    status = ep->ops->native(ep->tp, &nc);
    if (status == DCOMM_OK && kind == DC_COLL_ALLREDUCE && args->op == DCOMM_AVG) {
        dc_reduce_scale(args->recvbuf, args->count, args->dtype, 1.0 / ctx->size);
    }
    return status;
}

static int allreduce_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return dc_reduce_supported(args->dtype, args->op) &&
           mpi_supported(ctx, args, DC_COLL_ALLREDUCE);
}

static dc_status_t allreduce_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return mpi_run(ctx, args, DC_COLL_ALLREDUCE);
}

static int allgather_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return mpi_supported(ctx, args, DC_COLL_ALLGATHER);
}

static dc_status_t allgather_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return mpi_run(ctx, args, DC_COLL_ALLGATHER);
}

static int bcast_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return args->root >= 0 && args->root < ctx->size &&
           mpi_supported(ctx, args, DC_COLL_BROADCAST);
}

static dc_status_t bcast_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return mpi_run(ctx, args, DC_COLL_BROADCAST);
}

/* Cost: the cheapest of dcomm's own flat schedules for the collective (MPI
 * libraries pick among the same ones, without dcomm's per-message layer);
 * inapplicable unless the class is mpi (every peer over mpi), whatever p. */
static double mpi_cost(const dc_cost_in_t *in, const dc_coll_algo_t *const *own, size_t n)
{
    double best = INFINITY;

    if (in->cls != DC_LINK_MPI) {
        return INFINITY;
    }
    for (size_t i = 0; i < n; i++) {
        best = DC_MIN(best, own[i]->cost(in));
    }
    return best;
}

static double allreduce_cost(const dc_cost_in_t *in)
{
    static const dc_coll_algo_t *const own[] = {&dc_allreduce_ring_algo, &dc_allreduce_rd_algo,
                                                &dc_allreduce_rab_algo, &dc_allreduce_dbtree_algo};

    return mpi_cost(in, own, DC_ARRAY_SIZE(own));
}

static double allgather_cost(const dc_cost_in_t *in)
{
    static const dc_coll_algo_t *const own[] = {&dc_allgather_ring_algo, &dc_allgather_bruck_algo};

    return mpi_cost(in, own, DC_ARRAY_SIZE(own));
}

static double bcast_cost(const dc_cost_in_t *in)
{
    static const dc_coll_algo_t *const own[] = {&dc_bcast_binomial_algo, &dc_bcast_chain_algo};

    return mpi_cost(in, own, DC_ARRAY_SIZE(own));
}

const dc_coll_algo_t dc_allreduce_mpi_algo = {
    .name = "mpi",
    .doc = "MPI_Iallreduce on the mpi module's communicator; every peer over mpi",
    .supported = allreduce_supported,
    .run = allreduce_run,
    .cost = allreduce_cost,
};

const dc_coll_algo_t dc_allgather_mpi_algo = {
    .name = "mpi",
    .doc = "MPI_Iallgatherv on the mpi module's communicator; every peer over mpi",
    .supported = allgather_supported,
    .run = allgather_run,
    .cost = allgather_cost,
};

const dc_coll_algo_t dc_bcast_mpi_algo = {
    .name = "mpi",
    .doc = "MPI_Ibcast on the mpi module's communicator; every peer over mpi",
    .supported = bcast_supported,
    .run = bcast_run,
    .cost = bcast_cost,
};
