/*
 * Execution of one cycle's agreed work, in the same order on every rank:
 * neighbouring allreduces of one comm, dtype, op and buffer kind (host or
 * device) are fused into a persistent fusion buffer up to
 * DCOMM_FUSION_THRESHOLD (larger tensors go alone, without a copy) -- or, for
 * host tensors whose algorithm takes segments (shm-direct), into one
 * collective over the tensors' own buffers, whatever their size; every other
 * collective runs on its own. Device tensors go to NCCL or are staged through
 * pinned host memory (coord_dev.c). A rank that joined takes part with zeros
 * (or nothing) in tensors it did not submit. Afterwards the cache learns the
 * slow-path responses, in the same order everywhere.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "config.h"
#include "coord.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"
#include "module.h"
#include "result_size.h"

_Static_assert((int)DC_SELECT_ALLREDUCE == (int)DC_COLL_ALLREDUCE &&
                   (int)DC_SELECT_BROADCAST == (int)DC_COLL_BROADCAST &&
                   (int)DC_SELECT_ALLGATHER == (int)DC_COLL_ALLGATHER &&
                   (int)DC_SELECT_ALLTOALL == (int)DC_COLL_ALLTOALL &&
                   (int)DC_SELECT_REDUCESCATTER == (int)DC_COLL_REDUCESCATTER &&
                   (int)DC_SELECT_BARRIER == (int)DC_COLL_BARRIER,
               "select.h and wire.h number the collectives alike");

/* Candidate algorithms for one collective, best first: the cost model of the
 * comm's slowest link (a peer on another host when the comm spans hosts),
 * after DCOMM_TUNE. Depends only on values equal on every member. */
static int dc_coord_candidates(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
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
    return dc_select_candidates(c->sel, coll, bytes, ctx->size, ctx->nhosts, cls, out, max);
}

static void stat_algo(coord_t *c, int coll, const dc_coll_algo_t *algo, size_t bytes,
                      uint64_t ns)
{
    coord_stats_t *s = &c->stats;
    int i;

    for (i = 0; i < s->nalgos && (s->algos[i].algo != algo || s->algos[i].coll != coll); i++) {
    }
    if (i == s->nalgos) {
        if (s->nalgos == (int)(sizeof(s->algos) / sizeof(s->algos[0]))) {
            return;
        }
        s->algos[s->nalgos++] = (algo_stat_t){.algo = algo, .coll = coll};
    }
    s->algos[i].calls++;
    s->algos[i].bytes += bytes;
    s->algos[i].ns += ns;
}

/* The algorithm for one collective: the candidates in order of preference,
 * the first that accepts the arguments; declines are logged. NULL: none. */
static const dc_coll_algo_t *pick_algo(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
                                       const dc_coll_args_t *args, const char *name)
{
    const dc_coll_algo_t *cand[DC_SELECT_MAX_ROWS];
    int n = dc_coord_candidates(c, coll, ctx, args, cand, DC_SELECT_MAX_ROWS);

    for (int i = 0; i < n; i++) {
        if (cand[i]->supported(ctx, args)) {
            return cand[i];
        }
        DC_DEBUG("%s '%s': algorithm '%s' declined, trying the next", dc_coll_name(coll), name,
                 cand[i]->name);
    }
    return NULL;
}

/* Runs algo (from pick_algo; NULL: none accepted) and counts it. */
static dc_status_t run_picked(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
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
    stat_algo(c, coll, algo, bytes, dc_now_ns() - t0);
    c->cycle_bytes += bytes;
    *algo_p = algo->name;
    return status;
}

/* Runs the algorithm pick_algo chooses. */
dc_status_t dc_coord_run_algo(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
                              const dc_coll_args_t *args, const char *name, const char **algo_p)
{
    return run_picked(c, coll, ctx, args, name, pick_algo(c, coll, ctx, args, name), algo_p);
}

/* The result's element count from the ranks' counts (peer-supplied), checked
 * for overflow and against this host's memory before alloc_result sizes it. */
static dc_status_t result_total(const size_t *counts, int n, size_t esize, size_t *total_p)
{
    size_t bytes;

    /* the caller's error prefix names the collective and the tensor */
    return dc_result_size("result size", counts, n, esize, dc_result_size_limit(), total_p,
                          &bytes);
}

/* Output buffer owned by the handle; at least one byte so that a result of
 * zero elements still has a valid pointer. count * esize was checked by
 * result_total (or is a slice of an agreed count). */
static dc_status_t alloc_result(size_t count, size_t esize, int size, void **result_p,
                                size_t **counts_p)
{
    *result_p = malloc(count * esize > 0 ? count * esize : 1);
    *counts_p = calloc((size_t)size, sizeof(size_t));
    if (*result_p == NULL || *counts_p == NULL) {
        free(*result_p);
        free(*counts_p);
        *result_p = NULL;
        *counts_p = NULL;
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a %zu-element result",
                            count);
    }
    return DCOMM_OK;
}

/* Persistent buffers, grown on demand and pre-faulted (page faults are dear). */
static dc_status_t grow(void **buf, size_t *size, size_t need, const char *what)
{
    void *p;

    if (need <= *size) {
        return DCOMM_OK;
    }
    need = (need + (1u << 21) - 1) & ~(size_t)((1u << 21) - 1);
    p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1,
             0);
    if (p == MAP_FAILED) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "cannot map a %zu-byte %s buffer", need, what);
    }
    if (*buf != NULL) {
        munmap(*buf, *size);
    }
    *buf = p;
    *size = need;
    return DCOMM_OK;
}

static dc_coll_ctx_t comm_ctx(coord_t *c, const dc_comm_t *cm, int32_t comm, uint64_t tag)
{
    dc_coll_ctx_t ctx = c->ctx;

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

static const char *transport_of(coord_t *c, const dc_comm_t *cm)
{
    for (int i = 0; i < cm->size; i++) {
        if (i != cm->rank) {
            return dc_net_transport_name(c->net, cm->ranks[i]);
        }
    }
    return "self";
}

static void timeline_op(coord_t *c, const exec_item_t *it, const char *algo, const dc_comm_t *cm,
                        size_t bytes, uint64_t t0, uint64_t t1)
{
    char args[256], phase[32];

    if (c->tl == NULL || it->op == NULL) {
        return;
    }
    snprintf(args, sizeof(args), "\"algorithm\":\"%s\",\"transport\":\"%s\",\"bytes\":%zu",
             algo ? algo : "", transport_of(c, cm), bytes);
    snprintf(phase, sizeof(phase), "%s", dc_coll_name(it->req.coll));
    for (char *p = phase; *p; p++) {
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    }
    dc_timeline_span(c->tl, it->req.name, phase, t0, t1, args);
}

/* Zeros a joined rank contributes: at least bytes of them. */
static dc_status_t zeros(coord_t *c, size_t bytes, const void **p)
{
    dc_status_t status = grow(&c->zeros, &c->zeros_size, bytes ? bytes : 1, "zero");

    *p = c->zeros;
    return status;
}

/* Device tensors on a comm that NCCL serves run there; everything else
 * (staged device tensors too) on the host algorithms. */
static dc_status_t run_item(coord_t *c, const exec_item_t *it, int mode, const dc_coll_ctx_t *ctx,
                            const dc_coll_args_t *args, const char **algo_p)
{
    if (mode == DC_DEV_NCCL) {
        *algo_p = "nccl";
        c->cycle_bytes += args->count * dc_reduce_dtype_size(args->dtype);
        return dc_coord_dev_native(c, it->req.coll, it->req.comm, it->op == NULL, ctx, args);
    }
    return dc_coord_run_algo(c, it->req.coll, ctx, args, it->req.name, algo_p);
}

/* Runs one item that is not fused; completes its handle on success. */
static dc_status_t execute_one(coord_t *c, exec_item_t *it, const dc_comm_t *cm, uint64_t tag)
{
    dc_coll_ctx_t ctx = comm_ctx(c, cm, it->req.comm, tag);
    dc_op_t *op = it->op;
    size_t esize = dc_reduce_dtype_size(it->req.dtype), total = 0, off, len;
    dc_coll_args_t args = {
        .sendbuf = op ? op->sendbuf : NULL,
        .recvbuf = op ? op->recvbuf : NULL,
        .count = it->req.count,
        .dtype = it->req.dtype,
        .op = it->req.op,
        .root = it->req.root,
    };
    const char *algo = NULL;
    void *result = NULL;
    size_t *counts = NULL, *sendcounts = NULL;
    uint64_t t0 = dc_now_ns();
    dc_status_t status = DCOMM_OK;
    int coll = it->req.coll, mode = 0;

    if (it->req.device == DC_WIRE_DEVICE) {
        DC_CHECK_GOTO(dc_coord_dev_prepare(c, &ctx, it->req.comm, &mode), status, out);
        if (mode == DC_DEV_STAGED) {
            DC_CHECK_GOTO(dc_coord_dev_stage_in(c, it, cm, &args), status, out);
        }
    }
    switch (coll) {
    case DC_COLL_ALLREDUCE:
    case DC_COLL_BROADCAST:
        if (op == NULL) { /* joined: zeros in, the result is thrown away */
            DC_CHECK_GOTO(zeros(c, it->req.count * esize, &args.sendbuf), status, out);
            DC_CHECK_GOTO(grow(&c->fusion, &c->fusion_size, it->req.count * esize, "fusion"),
                          status, out);
            args.recvbuf = c->fusion;
            if (coll == DC_COLL_BROADCAST) {
                args.sendbuf = args.recvbuf;
            }
        }
        status = run_item(c, it, mode, &ctx, &args, &algo);
        break;
    case DC_COLL_BARRIER:
        status = run_item(c, it, mode, &ctx, &args, &algo);
        break;
    case DC_COLL_ALLGATHER:
        if (it->ncounts != (uint32_t)cm->size) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "allgather '%s': %u counts for %d ranks",
                                it->req.name, it->ncounts, cm->size);
        }
        DC_CHECK_GOTO(result_total(&c->counts_arena[it->counts_off], cm->size, esize, &total),
                      status, out);
        DC_CHECK_GOTO(alloc_result(total, esize, cm->size, &result, &counts), status, out);
        for (int i = 0; i < cm->size; i++) {
            counts[i] = c->counts_arena[it->counts_off + (size_t)i];
        }
        args.count = counts[cm->rank];
        args.counts = counts;
        args.recvbuf = result;
        status = run_item(c, it, mode, &ctx, &args, &algo);
        break;
    case DC_COLL_REDUCESCATTER:
        dc_ring_segment(it->req.count, cm->size, cm->rank, &off, &total);
        DC_CHECK_GOTO(alloc_result(total, esize, cm->size, &result, &counts), status, out);
        for (int i = 0; i < cm->size; i++) {
            dc_ring_segment(it->req.count, cm->size, i, &off, &len);
            counts[i] = len;
        }
        if (op == NULL) {
            DC_CHECK_GOTO(zeros(c, it->req.count * esize, &args.sendbuf), status, out);
        }
        args.recvbuf = result;
        status = run_item(c, it, mode, &ctx, &args, &algo);
        break;
    case DC_COLL_ALLTOALL: {
        size_t *recv = calloc((size_t)cm->size, sizeof(size_t));

        if (op == NULL) { /* joined: sends nothing */
            sendcounts = calloc((size_t)cm->size, sizeof(size_t));
        }
        if (recv == NULL || (op == NULL && sendcounts == NULL)) {
            free(recv);
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
            goto out;
        }
        args.counts = op ? op->counts : sendcounts;
        status = dc_alltoall_counts(&ctx, args.counts, recv);
        if (status == DCOMM_OK) {
            status = result_total(recv, cm->size, esize, &total);
        }
        if (status == DCOMM_OK) {
            status = alloc_result(total, esize, cm->size, &result, &counts);
        }
        if (status == DCOMM_OK) {
            memcpy(counts, recv, (size_t)cm->size * sizeof(size_t));
            args.recv_counts = counts;
            args.recvbuf = result;
            status = run_item(c, it, mode, &ctx, &args, &algo);
        }
        free(recv);
        break;
    }
    case DC_COLL_COMM_DESTROY:
        dc_coord_dev_comm_close(c, it->req.root);
        /* fall through */
    case DC_COLL_JOIN:
    case DC_COLL_COMM_CREATE:
        status = DCOMM_OK; /* agreement was the point */
        if (coll == DC_COLL_JOIN) {
            int32_t *last = malloc(sizeof(*last));

            counts = calloc(1, sizeof(size_t));
            if (last == NULL || counts == NULL) {
                free(last);
                status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
                goto out;
            }
            *last = it->req.root;
            counts[0] = 1;
            result = last;
            total = 1;
            c->local_joined[it->req.comm] = 0;
        }
        break;
    default:
        status = dc_error_set(DCOMM_ERR_INTERNAL, "no algorithm for %s", dc_coll_name(coll));
        break;
    }
    if (status == DCOMM_OK && mode == DC_DEV_STAGED) {
        status = dc_coord_dev_stage_out(c, it, cm, &args);
    }
out:
    free(sendcounts);
    if (status < 0 || op == NULL) {
        free(result);
        free(counts);
        return status;
    }
    timeline_op(c, it, algo, cm, it->req.count * esize, t0, dc_now_ns());
    if (counts != NULL) {
        dc_handle_complete_result(c->st, op->handle, result, total, counts);
    } else {
        dc_handle_complete(c->st, op->handle, DCOMM_OK, NULL);
    }
    return DCOMM_OK;
}

/* Where a fused group is packed: host tensors in the host fusion buffer;
 * device tensors in the device buffer (NCCL) or, staged, straight in pinned
 * host memory (one copy each way rather than two through a device buffer). */
static dc_status_t fusion_buffer(coord_t *c, int mode, size_t bytes, char **buf_p)
{
    void *p = NULL;
    dc_status_t status;

    if (mode == DC_DEV_NCCL) {
        status = dc_coord_dev_dbuf(c, bytes, &p);
    } else if (mode == DC_DEV_STAGED && c->dev.cuda != NULL) {
        status = dc_coord_dev_stage(c, bytes, &p);
    } else {
        status = grow(&c->fusion, &c->fusion_size, bytes, "fusion");
        p = c->fusion;
    }
    *buf_p = p;
    return status;
}

/* One tensor into the fusion buffer at dst (zeros for a joined rank). */
static dc_status_t fusion_in(coord_t *c, int mode, const exec_item_t *it, char *dst, size_t bytes)
{
    const void *z;
    dc_status_t status;

    if (mode == 0) {
        if (it->op != NULL) {
            memcpy(dst, it->op->sendbuf, bytes);
        } else {
            memset(dst, 0, bytes);
        }
        return DCOMM_OK;
    }
    if (it->op != NULL) {
        return dc_coord_dev_copy(c, dst, it->op->sendbuf, bytes);
    }
    status = zeros(c, bytes, &z);
    return status < 0 ? status : dc_coord_dev_copy(c, dst, z, bytes);
}

/* One tensor out of the fusion buffer; staged AVG is scaled on the device. */
static dc_status_t fusion_out(coord_t *c, int mode, const exec_item_t *it, const char *src,
                              size_t bytes, int size)
{
    dc_status_t status;

    if (it->op == NULL) {
        return DCOMM_OK;
    }
    if (mode == 0) {
        memcpy(it->op->recvbuf, src, bytes);
        return DCOMM_OK;
    }
    status = dc_coord_dev_copy(c, it->op->recvbuf, src, bytes);
    if (status == DCOMM_OK && mode == DC_DEV_STAGED && it->req.op == DCOMM_AVG) {
        status = dc_coord_dev_scale(c, it->op->recvbuf, it->req.count, it->req.dtype, size);
    }
    return status;
}

/* Runs items[i0 .. i1) (>= 2 allreduces of one comm, dtype, op and buffer
 * kind) as one allreduce over a fusion buffer. */
static dc_status_t execute_fused(coord_t *c, size_t i0, size_t i1, const dc_comm_t *cm,
                                 uint64_t tag)
{
    exec_item_t *first = &c->items[i0];
    size_t esize = dc_reduce_dtype_size(first->req.dtype), total = 0, off = 0;
    dc_coll_ctx_t ctx = comm_ctx(c, cm, first->req.comm, tag);
    dc_coll_args_t args = {.dtype = first->req.dtype, .op = first->req.op};
    const char *algo = "nccl";
    uint64_t t0, t1, t2;
    dc_status_t status = DCOMM_OK;
    int mode = 0;
    char *buf;

    for (size_t i = i0; i < i1; i++) {
        total += c->items[i].req.count;
    }
    if (first->req.device == DC_WIRE_DEVICE) {
        DC_CHECK_GOTO(dc_coord_dev_prepare(c, &ctx, first->req.comm, &mode), status, out);
    }
    DC_CHECK_GOTO(fusion_buffer(c, mode, total * esize, &buf), status, out);
    t0 = dc_now_ns();
    for (size_t i = i0; i < i1; i++) {
        size_t bytes = c->items[i].req.count * esize;

        DC_CHECK_GOTO(fusion_in(c, mode, &c->items[i], buf + off, bytes), status, out);
        off += bytes;
    }
    t1 = dc_now_ns();
    args.sendbuf = args.recvbuf = buf;
    args.count = total;
    if (mode == DC_DEV_NCCL) {
        c->cycle_bytes += total * esize;
        status = dc_coord_dev_native(c, DC_COLL_ALLREDUCE, first->req.comm, 0, &ctx, &args);
    } else {
        if (mode == DC_DEV_STAGED && args.op == DCOMM_AVG) {
            args.op = DCOMM_SUM; /* scaled on the device (fusion_out) */
        }
        status = dc_coord_run_algo(c, DC_COLL_ALLREDUCE, &ctx, &args, first->req.name, &algo);
    }
    if (status < 0) {
        goto out;
    }
    t2 = dc_now_ns();
    off = 0;
    for (size_t i = i0; i < i1; i++) {
        size_t bytes = c->items[i].req.count * esize;

        DC_CHECK_GOTO(fusion_out(c, mode, &c->items[i], buf + off, bytes, cm->size), status,
                      out);
        off += bytes;
    }
    if (c->tl != NULL) {
        uint64_t t3 = dc_now_ns();

        for (size_t i = i0; i < i1; i++) {
            if (c->items[i].op != NULL) {
                dc_timeline_span(c->tl, c->items[i].req.name, "MEMCPY_IN_FUSION", t0, t1, NULL);
                timeline_op(c, &c->items[i], algo, cm, total * esize, t1, t2);
                dc_timeline_span(c->tl, c->items[i].req.name, "MEMCPY_OUT_FUSION", t2, t3, NULL);
            }
        }
    }
    for (size_t i = i0; i < i1; i++) {
        if (c->items[i].op != NULL) {
            dc_handle_complete(c->st, c->items[i].op->handle, DCOMM_OK, NULL);
        }
    }
    c->stats.fused_groups++;
    c->stats.fused_tensors += i1 - i0;
    c->stats.fused_bytes += total * esize;
out:
    return status;
}

/* Runs items[i0 .. i1) as one allreduce over their own buffers (zero-copy
 * fusion), with the segments fused_end built in c->segs and the algorithm it
 * picked for them. */
static dc_status_t execute_segments(coord_t *c, size_t i0, size_t i1, const dc_comm_t *cm,
                                    uint64_t tag, const dc_coll_algo_t *seg_algo)
{
    exec_item_t *first = &c->items[i0];
    const dc_coll_seg_t *last = &c->segs[i1 - i0 - 1];
    dc_coll_ctx_t ctx = comm_ctx(c, cm, first->req.comm, tag);
    dc_coll_args_t args = {
        .count = last->off + last->count,
        .dtype = first->req.dtype,
        .op = first->req.op,
        .segs = c->segs,
        .nsegs = i1 - i0,
    };
    const char *algo = NULL;
    uint64_t t0 = dc_now_ns(), t1;
    dc_status_t status =
        run_picked(c, DC_COLL_ALLREDUCE, &ctx, &args, first->req.name, seg_algo, &algo);

    if (status < 0) {
        return status;
    }
    t1 = dc_now_ns();
    for (size_t i = i0; i < i1; i++) {
        if (c->items[i].op != NULL) {
            timeline_op(c, &c->items[i], algo, cm, args.count * dc_reduce_dtype_size(args.dtype),
                        t0, t1);
            dc_handle_complete(c->st, c->items[i].op->handle, DCOMM_OK, NULL);
        }
    }
    c->stats.fused_groups++;
    c->stats.zero_copy_groups++;
    c->stats.fused_tensors += i1 - i0;
    c->stats.fused_bytes += args.count * dc_reduce_dtype_size(args.dtype);
    return DCOMM_OK;
}

/* A tensor this large runs alone, in place, without the copy into the fusion
 * buffer: beyond it, the copy costs more than the collective's own overhead
 * (unless the group runs as segments, without any copy: fused_end). */
static size_t fusion_bypass(const coord_t *c)
{
    size_t half = c->fusion_threshold / 2, limit = c->bypass_bytes;

    return limit > 0 && limit < half ? limit : half;
}

/* 1 when b may join a fusion group that a starts: both good allreduces of
 * one comm, dtype, op and buffer kind (fuses_with(a, a): a may start one). */
static int fuses_with(const exec_item_t *a, const exec_item_t *b)
{
    return b->req.coll == DC_COLL_ALLREDUCE && b->error == 0 && b->req.comm == a->req.comm &&
           b->req.dtype == a->req.dtype && b->req.op == a->req.op &&
           b->req.device == a->req.device;
}

/* Where a fusion group starting at items[i] ends (exclusive). */
static size_t group_end(coord_t *c, size_t i)
{
    const exec_item_t *a = &c->items[i];
    size_t esize = dc_reduce_dtype_size(a->req.dtype), bytes = a->req.count * esize, j;

    if (!fuses_with(a, a) || c->fusion_threshold == 0 || bytes > fusion_bypass(c)) {
        return i + 1;
    }
    for (j = i + 1; j < c->nitems; j++) {
        const exec_item_t *b = &c->items[j];
        size_t b_bytes = b->req.count * esize;

        if (!fuses_with(a, b) || b_bytes > fusion_bypass(c) ||
            bytes + b_bytes > c->fusion_threshold) {
            break;
        }
        bytes += b_bytes;
    }
    return j;
}

/* Where the group of items[i] ends (exclusive), and the algorithm when it runs
 * as segments (else NULL): neighbouring host allreduces of one comm, dtype and
 * op up to the fusion threshold, whatever their size, go as one collective
 * over their own buffers when the algorithm chosen for their total size takes
 * segments; otherwise small ones share the fusion buffer (group_end). The choice depends only on
 * what every member agreed, so all ranks group alike. */
static size_t fused_end(coord_t *c, size_t i, const dc_comm_t *cm, uint64_t tag,
                        const dc_coll_algo_t **seg_algo_p)
{
    const exec_item_t *a = &c->items[i];
    size_t esize = dc_reduce_dtype_size(a->req.dtype), j, total = 0;

    *seg_algo_p = NULL;
    if (!fuses_with(a, a) || c->fusion_threshold == 0 || cm->rank < 0 ||
        a->req.device == DC_WIRE_DEVICE) {
        return group_end(c, i);
    }
    for (j = i; j < c->nitems; j++) {
        const exec_item_t *b = &c->items[j];

        if (!fuses_with(a, b) || (total + b->req.count) * esize > c->fusion_threshold) {
            break;
        }
        if (j - i == c->segs_cap) {
            size_t cap = c->segs_cap ? 2 * c->segs_cap : 64;
            dc_coll_seg_t *segs = realloc(c->segs, cap * sizeof(*segs));

            if (segs == NULL) {
                return group_end(c, i); /* the copying way needs no memory of its own */
            }
            c->segs = segs;
            c->segs_cap = cap;
        }
        c->segs[j - i] = (dc_coll_seg_t){
            .sendbuf = b->op ? b->op->sendbuf : NULL,
            .recvbuf = b->op ? b->op->recvbuf : NULL,
            .off = total,
            .count = b->req.count,
        };
        total += b->req.count;
    }
    if (j - i > 1) {
        dc_coll_ctx_t ctx = comm_ctx(c, cm, a->req.comm, tag);
        dc_coll_args_t args = {.count = total, .dtype = a->req.dtype, .op = a->req.op,
                               .segs = c->segs, .nsegs = j - i};
        const dc_coll_algo_t *algo = pick_algo(c, DC_COLL_ALLREDUCE, &ctx, &args, a->req.name);

        if (algo != NULL && algo->segments) {
            *seg_algo_p = algo;
            return j;
        }
    }
    return group_end(c, i);
}

/* The cache learns what ran, in the same order on every rank; an op of ours
 * that waited on an evicted bit goes to the slow path. */
static void cache_learn(coord_t *c, const exec_item_t *it)
{
    int evicted, bit;

    if (it->error != 0 || c->cache.capacity == 0) {
        return;
    }
    if (it->req.coll == DC_COLL_COMM_DESTROY) {
        for (int b = 0; b < c->cache.capacity; b++) {
            const dc_cache_entry_t *e = dc_cache_get(&c->cache, b);

            if (e != NULL && e->req.comm == it->req.root) {
                dc_cache_erase(&c->cache, b);
            }
        }
        return;
    }
    if (it->bit >= 0) {
        dc_cache_touch(&c->cache, it->bit);
        return;
    }
    bit = dc_cache_put(&c->cache, &it->req, c->counts_arena + it->counts_off, it->ncounts,
                       &evicted);
    if (evicted >= 0 && c->by_bit[evicted] != NULL) {
        dc_op_t *op = c->by_bit[evicted];

        c->by_bit[evicted] = NULL;
        dc_coord_queue_slow(c, &op->req);
    }
    (void)bit;
}

dc_status_t dc_coord_execute(coord_t *c)
{
    dc_status_t status = DCOMM_OK;
    size_t i = 0;

    while (i < c->nitems) {
        exec_item_t *it = &c->items[i];
        const dc_comm_t *cm = dc_coord_comm(c, it->req.comm);
        uint64_t tag = c->tag++;
        const dc_coll_algo_t *seg_algo;
        size_t j;

        if (cm == NULL) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "tensor '%s' on unknown comm %d",
                                it->req.name, it->req.comm);
        }
        j = fused_end(c, i, cm, tag, &seg_algo);
        if (c->tl != NULL) {
            uint64_t now = dc_now_ns();

            for (size_t k = i; k < j; k++) {
                if (c->items[k].op != NULL) {
                    dc_timeline_span(c->tl, c->items[k].req.name, "NEGOTIATE",
                                     c->items[k].op->submit_ns, c->items[k].ready_ns, NULL);
                    dc_timeline_span(c->tl, c->items[k].req.name, "QUEUE",
                                     c->items[k].ready_ns, now, NULL);
                }
            }
        }
        if (it->error != 0) {
            if (it->op != NULL) {
                dc_handle_complete(c->st, it->op->handle, it->error, it->text);
            }
        } else if (cm->rank >= 0) {
            status = seg_algo    ? execute_segments(c, i, j, cm, tag, seg_algo)
                     : j - i > 1 ? execute_fused(c, i, j, cm, tag)
                                 : execute_one(c, it, cm, tag);
            if (status < 0) {
                /* A failed collective leaves the ranks out of step: fatal. */
                char text[1024];

                snprintf(text, sizeof(text), "%s '%s': %s", dc_coll_name(it->req.coll),
                         it->req.name, dc_error_get());
                return dc_error_set(status, "%s", text);
            }
        }
        for (size_t k = i; k < j; k++) {
            cache_learn(c, &c->items[k]);
            dc_op_free(c->items[k].op);
            c->items[k].op = NULL;
            free(c->items[k].text);
            c->items[k].text = NULL;
        }
        i = j;
    }
    c->nitems = 0;
    c->counts_len = 0;
    return status;
}

void dc_coord_print_stats(coord_t *c)
{
    coord_stats_t *s = &c->stats;

    fprintf(stderr,
            "dcomm stats rank %d: %llu cycles, %llu slow-path negotiations (the last in cycle "
            "%llu) and %llu fast-path, %.3f s negotiating, cache %llu hits / %llu misses, %llu "
            "idle periods, fused %llu tensors in %llu groups (%llu bytes; %llu groups without a "
            "copy)\n",
            c->rank, (unsigned long long)s->cycles, (unsigned long long)s->slow_rounds,
            (unsigned long long)s->last_slow_cycle, (unsigned long long)s->fast_rounds,
            (double)s->negotiate_ns / 1e9, (unsigned long long)c->cache.hits,
            (unsigned long long)c->cache.misses, (unsigned long long)s->idle_periods,
            (unsigned long long)s->fused_tensors, (unsigned long long)s->fused_groups,
            (unsigned long long)s->fused_bytes, (unsigned long long)s->zero_copy_groups);
    for (int i = 0; i < s->nalgos; i++) {
        const algo_stat_t *a = &s->algos[i];

        fprintf(stderr, "dcomm stats rank %d: %s %s: %llu calls, %llu bytes, %.3f s, %.2f GB/s\n",
                c->rank, dc_coll_name(a->coll), a->algo->name, (unsigned long long)a->calls,
                (unsigned long long)a->bytes, (double)a->ns / 1e9,
                a->ns ? (double)a->bytes / (double)a->ns : 0.0);
    }
}
