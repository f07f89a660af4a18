/*
 * dbench: collective bandwidth of dcomm with the flags and columns of
 * nccl-tests (bench_common.h). Default mode: the public async API, as an
 * application sees it (negotiation, fusion, handles). --direct: the selected
 * algorithm alone on the transport (libdcomm's internal direct mode,
 * dcomm_internal.h), for raw speed. --blocking: allreduce and broadcast
 * through the blocking calls (dcomm_allreduce), as a synchronous caller uses
 * them.
 *   dlaunch -np 4 dbench -b 8 -e 256M -f 2 -o allreduce
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "dcomm.h"
#include "dcomm_internal.h"

static const dcomm_dtype_t to_dtype[B_NTYPES] = {
    DCOMM_INT8, DCOMM_UINT8, DCOMM_INT32, DCOMM_INT64,
    DCOMM_FLOAT16, DCOMM_BFLOAT16, DCOMM_FLOAT32, DCOMM_FLOAT64};
static const dcomm_op_t to_op[B_NOPS] = {DCOMM_SUM, DCOMM_PROD, DCOMM_MIN, DCOMM_MAX,
                                         DCOMM_AVG};
static const dcomm_op_t agg_op[3] = {DCOMM_SUM, DCOMM_MIN, DCOMM_MAX};

static int supports_common(int dtype, int op, const char **why)
{
    if (op == B_AVG && dtype < B_FLOAT16) {
        *why = "avg is defined for floating types only";
        return 0;
    }
    return 1;
}

/* ---- public API ------------------------------------------------------------ */

typedef struct pub_ctx {
    size_t *counts; /* [size] for alltoall */
    int blocking;   /* --blocking */
} pub_ctx_t;

static int pub_supports(void *ctx, int coll, int dtype, int op, const char **why)
{
    (void)ctx;
    (void)coll;
    return supports_common(dtype, op, why);
}

static int pub_fail(const char *what, dcomm_status_t st)
{
    fprintf(stderr, "dbench: rank %d: %s: %s (%s)\n", dcomm_rank(), what,
            dcomm_status_string(st), dcomm_last_error());
    return -1;
}

/* Waits for h; copies a handle-owned result of want elements into out. */
static int pub_finish(dcomm_handle_t h, void *out, size_t want, size_t esize, const char *name)
{
    dcomm_status_t st = dcomm_wait(h);
    const void *data;
    size_t count;
    const size_t *counts;

    if (st == DCOMM_OK && out != NULL) {
        st = dcomm_result(h, &data, &count, &counts);
        if (st == DCOMM_OK && count != want) {
            fprintf(stderr, "dbench: rank %d: %s returned %zu elements, expected %zu\n",
                    dcomm_rank(), name, count, want);
            dcomm_release(h);
            return -1;
        }
        if (st == DCOMM_OK) {
            memcpy(out, data, count * esize);
        }
    }
    dcomm_release(h);
    return st == DCOMM_OK ? 0 : pub_fail(name, st);
}

static int pub_run(void *vctx, const bench_call_t *c)
{
    pub_ctx_t *ctx = vctx;
    dcomm_dtype_t dt = to_dtype[c->dtype];
    size_t esize = bench_type_size(c->dtype), n = (size_t)dcomm_size();
    dcomm_handle_t h = 0;
    dcomm_status_t st;

    if (ctx->blocking && (c->coll == B_ALLREDUCE || c->coll == B_BROADCAST)) {
        st = c->coll == B_ALLREDUCE
                 ? dcomm_allreduce(DCOMM_COMM_WORLD, c->name, c->sendbuf, c->recvbuf, c->count, dt,
                                   to_op[c->op])
                 : dcomm_broadcast(DCOMM_COMM_WORLD, c->name, c->recvbuf, c->count, dt, c->root);
        return st == DCOMM_OK ? 0 : pub_fail(c->name, st);
    }
    switch (c->coll) {
    case B_ALLREDUCE:
        st = dcomm_allreduce_async(DCOMM_COMM_WORLD, c->name, c->sendbuf, c->recvbuf, c->count,
                                   dt, to_op[c->op], &h);
        break;
    case B_BROADCAST:
        st = dcomm_broadcast_async(DCOMM_COMM_WORLD, c->name, c->recvbuf, c->count, dt, c->root,
                                   &h);
        break;
    case B_ALLGATHER:
        st = dcomm_allgather_async(DCOMM_COMM_WORLD, c->name, c->sendbuf, c->count, dt, &h);
        break;
    case B_REDUCESCATTER:
        st = dcomm_reducescatter_async(DCOMM_COMM_WORLD, c->name, c->sendbuf, c->count * n, dt,
                                       to_op[c->op], &h);
        break;
    default:
        for (size_t i = 0; i < n; i++) {
            ctx->counts[i] = c->count;
        }
        st = dcomm_alltoall_async(DCOMM_COMM_WORLD, c->name, c->sendbuf, ctx->counts, dt, &h);
        break;
    }
    if (st != DCOMM_OK) {
        return pub_fail(c->name, st);
    }
    /* The results of allgather, reducescatter and alltoall belong to the handle:
     * the copy into recvbuf is what an application pays to keep them. */
    switch (c->coll) {
    case B_ALLGATHER:
    case B_ALLTOALL:
        return pub_finish(h, c->recvbuf, c->count * n, esize, c->name);
    case B_REDUCESCATTER:
        return pub_finish(h, c->recvbuf, c->count, esize, c->name);
    default:
        return pub_finish(h, NULL, 0, esize, c->name);
    }
}

static double pub_agg(void *ctx, double v, int how)
{
    double out = v;
    dcomm_status_t st;

    (void)ctx;
    st = dcomm_allreduce(DCOMM_COMM_WORLD, "bench.agg", &v, &out, 1, DCOMM_FLOAT64, agg_op[how]);
    if (st != DCOMM_OK) {
        pub_fail("aggregating the timings", st);
        exit(2); /* the ranks are out of step: nothing more can be measured */
    }
    return out;
}

static void pub_barrier(void *ctx)
{
    dcomm_status_t st = dcomm_barrier(DCOMM_COMM_WORLD);

    (void)ctx;
    if (st != DCOMM_OK) {
        pub_fail("barrier", st);
        exit(2);
    }
}

/* ---- direct: the algorithm alone -------------------------------------------- */

typedef struct direct_ctx {
    dc_direct_t *d;
    size_t *counts; /* [size] */
    const char *algo;
    int coll[B_NCOLLS], barrier; /* dc_direct_coll ids */
} direct_ctx_t;

static int direct_supports(void *ctx, int coll, int dtype, int op, const char **why)
{
    (void)ctx;
    if (!supports_common(dtype, op, why)) {
        return 0;
    }
    if ((coll == B_ALLREDUCE || coll == B_REDUCESCATTER) &&
        !dc_direct_reducible(to_dtype[dtype], to_op[op])) {
        *why = "no reduction kernel for this type and op";
        return 0;
    }
    return 1;
}

static int direct_call(direct_ctx_t *ctx, int coll, const dc_direct_args_t *args,
                       const char *what)
{
    const char *algo;
    dcomm_status_t st = dc_direct_run(ctx->d, coll, args, &algo);

    if (st != DCOMM_OK) {
        if (algo == NULL) {
            fprintf(stderr, "dbench: rank %d: %s: %s\n", dc_direct_rank(ctx->d), what,
                    dcomm_last_error());
        } else {
            fprintf(stderr, "dbench: rank %d: %s (%s): %s\n", dc_direct_rank(ctx->d), what,
                    algo, dcomm_last_error());
        }
        return -1;
    }
    ctx->algo = algo;
    return 0;
}

static int direct_run(void *vctx, const bench_call_t *c)
{
    direct_ctx_t *ctx = vctx;
    size_t n = (size_t)dc_direct_size(ctx->d);
    dc_direct_args_t a = {.sendbuf = c->sendbuf, .recvbuf = c->recvbuf, .count = c->count,
                          .dtype = to_dtype[c->dtype], .op = to_op[c->op], .root = c->root,
                          .counts = ctx->counts, .recv_counts = ctx->counts};

    for (size_t i = 0; i < n; i++) {
        ctx->counts[i] = c->count;
    }
    if (c->coll == B_REDUCESCATTER) {
        a.count = c->count * n;
    }
    return direct_call(ctx, ctx->coll[c->coll], &a, c->name);
}

static double direct_agg(void *vctx, double v, int how)
{
    direct_ctx_t *ctx = vctx;
    double out = v;
    const char *keep = ctx->algo;
    dc_direct_args_t a = {.sendbuf = &v, .recvbuf = &out, .count = 1, .dtype = DCOMM_FLOAT64,
                          .op = agg_op[how]};

    if (direct_call(ctx, ctx->coll[B_ALLREDUCE], &a, "aggregating the timings") != 0) {
        exit(2);
    }
    ctx->algo = keep;
    return out;
}

static void direct_barrier(void *vctx)
{
    direct_ctx_t *ctx = vctx;
    const char *keep = ctx->algo;
    dc_direct_args_t a = {.dtype = DCOMM_UINT8};

    if (direct_call(ctx, ctx->barrier, &a, "barrier") != 0) {
        exit(2);
    }
    ctx->algo = keep;
}

static const char *direct_algo(void *vctx)
{
    return ((direct_ctx_t *)vctx)->algo;
}

static int direct_main(const bench_opts_t *o)
{
    direct_ctx_t ctx = {0};
    bench_backend_t be;
    char info[256];
    int rc;
    dcomm_status_t st = dc_direct_open(&ctx.d);

    if (st != DCOMM_OK) {
        fprintf(stderr, "dbench --direct: cannot set up: %s\n", dcomm_last_error());
        return 2;
    }
    for (int c = 0; c < B_NCOLLS; c++) {
        ctx.coll[c] = dc_direct_coll(bench_coll_names[c]);
    }
    ctx.barrier = dc_direct_coll("barrier");
    ctx.counts = calloc((size_t)dc_direct_size(ctx.d), sizeof(size_t));
    if (ctx.counts == NULL) {
        fprintf(stderr, "dbench: out of memory\n");
        dc_direct_close(ctx.d);
        return 2;
    }
    snprintf(info, sizeof(info), "mode: direct (algorithm alone on the transport), "
             "transport %s", dc_direct_size(ctx.d) > 1 ? dc_direct_transport(ctx.d) : "self");
    be = (bench_backend_t){.name = "dcomm-direct", .rank = dc_direct_rank(ctx.d),
                           .size = dc_direct_size(ctx.d), .ctx = &ctx,
                           .supports = direct_supports, .run = direct_run, .agg = direct_agg,
                           .barrier = direct_barrier, .algo = direct_algo, .info = info};
    rc = bench_main(o, &be);
    free(ctx.counts);
    dc_direct_close(ctx.d);
    return rc;
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    bench_backend_t be = {0};
    char info[256];
    int rc = bench_parse(argc, argv, "dbench", 1, &o);

    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    if (o.direct) {
        return direct_main(&o);
    }
    dcomm_status_t st = dcomm_init();
    if (st != DCOMM_OK) {
        fprintf(stderr, "dbench: dcomm_init failed: %s (%s)\n", dcomm_status_string(st),
                dcomm_last_error());
        return 2;
    }
    pub_ctx_t ctx = {.counts = calloc((size_t)dcomm_size(), sizeof(size_t)),
                     .blocking = o.blocking};
    if (ctx.counts == NULL) {
        fprintf(stderr, "dbench: out of memory\n");
        dcomm_shutdown();
        return 2;
    }
    snprintf(info, sizeof(info), "mode: public %s API (dcomm %s; negotiation included)",
             o.blocking ? "blocking" : "async", dcomm_version());
    be = (bench_backend_t){.name = "dcomm", .rank = dcomm_rank(), .size = dcomm_size(),
                           .ctx = &ctx, .supports = pub_supports, .run = pub_run,
                           .agg = pub_agg, .barrier = pub_barrier, .info = info};
    rc = bench_main(&o, &be);
    free(ctx.counts);
    st = dcomm_shutdown();
    if (st != DCOMM_OK) {
        fprintf(stderr, "dbench: rank %d: dcomm_shutdown: %s\n", be.rank, dcomm_last_error());
        rc = rc ? rc : 1;
    }
    return rc;
}
