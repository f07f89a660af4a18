/*
 * Execution of one cycle's agreed work, in the same order on every rank:
 * groups of neighbouring allreduces (coord_plan.c) run as one collective over
 * the fusion buffer or as segments over the tensors' own buffers; every other
 * collective runs on its own. Device tensors go to NCCL or are staged through
 * pinned host memory (coord_dev.c). A rank that joined takes part with zeros
 * (or nothing) in tensors it did not submit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "coord_exec.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"
#include "result_size.h"

/* One cycle's execution: the parts it works with. */
typedef struct cyc {
    dc_exec_t *x;
    dc_runner_t *run;
    dc_work_t *w;
    const dc_coll_ctx_t *base;
    dc_timeline_t *tl;
} cyc_t;

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

static const char *transport_of(dc_net_t *net, const dc_comm_t *cm)
{
    for (int i = 0; i < cm->size; i++) {
        if (i != cm->rank) {
            return dc_net_transport_name(net, cm->ranks[i]);
        }
    }
    return "self";
}

static void timeline_op(dc_timeline_t *tl, const dc_coll_ctx_t *ctx, const exec_item_t *it,
                        const char *algo, const dc_comm_t *cm, size_t bytes, uint64_t t0,
                        uint64_t t1)
{
    char args[256], phase[32];

    if (tl == NULL || it->op == NULL) {
        return;
    }
    snprintf(args, sizeof(args), "\"algorithm\":\"%s\",\"transport\":\"%s\",\"bytes\":%zu",
             algo ? algo : "", transport_of(ctx->net, cm), bytes);
    snprintf(phase, sizeof(phase), "%s", dc_coll_name(it->req.coll));
    for (char *p = phase; *p; p++) {
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    }
    dc_timeline_span(tl, it->req.name, phase, t0, t1, args);
}

/* Device tensors on a comm that NCCL serves run on the selector's device
 * rows; everything else (staged device tensors too) on the host algorithms. */
static dc_status_t run_item(cyc_t *e, const exec_item_t *it, int mode, const dc_coll_ctx_t *ctx,
                            const dc_coll_args_t *args, const char **algo_p)
{
    if (mode == DC_DEV_NCCL) {
        return dc_dev_run(&e->x->dev, e->run, it->req.coll, it->req.comm, it->op == NULL, ctx, args,
                          it->req.name, algo_p);
    }
    return dc_run_algo(e->run, it->req.coll, ctx, args, it->req.name, algo_p);
}

/* Runs one item that is not fused; completes its handle on success. */
static dc_status_t execute_one(cyc_t *e, exec_item_t *it, const dc_comm_t *cm, uint64_t tag)
{
    dc_coll_ctx_t ctx = dc_run_comm_ctx(e->base, cm, it->req.comm, tag);
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
        DC_CHECK_GOTO(dc_dev_prepare(&e->x->dev, e->run, &ctx, it->req.comm, &mode), status, out);
        if (mode == DC_DEV_STAGED) {
            DC_CHECK_GOTO(dc_dev_stage_in(&e->x->dev, it, cm, &args), status, out);
        }
    }
    switch (coll) {
    case DC_COLL_ALLREDUCE:
    case DC_COLL_BROADCAST:
        if (op == NULL) { /* joined: zeros in, the result is thrown away */
            DC_CHECK_GOTO(dc_fusion_zeros(&e->x->fusion, it->req.count * esize, &args.sendbuf),
                          status, out);
            DC_CHECK_GOTO(dc_fusion_buffer(&e->x->fusion, it->req.count * esize, &args.recvbuf),
                          status, out);
            if (coll == DC_COLL_BROADCAST) {
                args.sendbuf = args.recvbuf;
            }
        }
        status = run_item(e, it, mode, &ctx, &args, &algo);
        break;
    case DC_COLL_BARRIER:
        status = run_item(e, it, mode, &ctx, &args, &algo);
        break;
    case DC_COLL_ALLGATHER:
        if (it->ncounts != (uint32_t)cm->size) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "allgather '%s': %u counts for %d ranks",
                                it->req.name, it->ncounts, cm->size);
        }
        DC_CHECK_GOTO(result_total(dc_work_counts(e->w, it), cm->size, esize, &total),
                      status, out);
        DC_CHECK_GOTO(alloc_result(total, esize, cm->size, &result, &counts), status, out);
        for (int i = 0; i < cm->size; i++) {
            counts[i] = dc_work_counts(e->w, it)[i];
        }
        args.count = counts[cm->rank];
        args.counts = counts;
        args.recvbuf = result;
        status = run_item(e, it, mode, &ctx, &args, &algo);
        break;
    case DC_COLL_REDUCESCATTER:
        dc_ring_segment(it->req.count, cm->size, cm->rank, &off, &total);
        DC_CHECK_GOTO(alloc_result(total, esize, cm->size, &result, &counts), status, out);
        for (int i = 0; i < cm->size; i++) {
            dc_ring_segment(it->req.count, cm->size, i, &off, &len);
            counts[i] = len;
        }
        if (op == NULL) {
            DC_CHECK_GOTO(dc_fusion_zeros(&e->x->fusion, it->req.count * esize, &args.sendbuf),
                          status, out);
        }
        args.recvbuf = result;
        status = run_item(e, it, mode, &ctx, &args, &algo);
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
            status = run_item(e, it, mode, &ctx, &args, &algo);
        }
        free(recv);
        break;
    }
    case DC_COLL_COMM_DESTROY:
        dc_dev_comm_close(&e->x->dev, it->req.root);
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
        }
        break;
    default:
        status = dc_error_set(DCOMM_ERR_INTERNAL, "no algorithm for %s", dc_coll_name(coll));
        break;
    }
    if (status == DCOMM_OK && mode == DC_DEV_STAGED) {
        status = dc_dev_stage_out(&e->x->dev, it, cm, &args);
    }
out:
    free(sendcounts);
    if (status < 0 || op == NULL) {
        free(result);
        free(counts);
        return status;
    }
    timeline_op(e->tl, &ctx, it, algo, cm, it->req.count * esize, t0, dc_now_ns());
    if (counts != NULL) {
        dc_handle_complete_result(e->x->st, op->handle, result, total, counts);
    } else {
        dc_handle_complete(e->x->st, op->handle, DCOMM_OK, NULL);
    }
    return DCOMM_OK;
}

/* Where a fused group is packed: host tensors in the host fusion buffer;
 * device tensors in the device buffer (NCCL) or, staged, straight in pinned
 * host memory (one copy each way rather than two through a device buffer). */
static dc_status_t fusion_buffer(cyc_t *e, int mode, size_t bytes, char **buf_p)
{
    void *p = NULL;
    dc_status_t status;

    if (mode == DC_DEV_NCCL) {
        status = dc_dev_dbuf(&e->x->dev, bytes, &p);
    } else if (mode == DC_DEV_STAGED && dc_dev_has_cuda(&e->x->dev)) {
        status = dc_dev_stage(&e->x->dev, bytes, &p);
    } else {
        status = dc_fusion_buffer(&e->x->fusion, bytes, &p);
    }
    *buf_p = p;
    return status;
}

/* One tensor into the fusion buffer at dst (zeros for a joined rank). */
static dc_status_t fusion_in(cyc_t *e, int mode, const exec_item_t *it, char *dst, size_t bytes)
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
        return dc_dev_copy(&e->x->dev, dst, it->op->sendbuf, bytes);
    }
    status = dc_fusion_zeros(&e->x->fusion, bytes, &z);
    return status < 0 ? status : dc_dev_copy(&e->x->dev, dst, z, bytes);
}

/* One tensor out of the fusion buffer; staged AVG is scaled on the device. */
static dc_status_t fusion_out(cyc_t *e, int mode, const exec_item_t *it, const char *src,
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
    status = dc_dev_copy(&e->x->dev, it->op->recvbuf, src, bytes);
    if (status == DCOMM_OK && mode == DC_DEV_STAGED && it->req.op == DCOMM_AVG) {
        status = dc_dev_scale(&e->x->dev, it->op->recvbuf, it->req.count, it->req.dtype, size);
    }
    return status;
}

/* Runs items[i0 .. i1) (>= 2 allreduces of one comm, dtype, op and buffer
 * kind) as one allreduce over a fusion buffer. */
static dc_status_t execute_fused(cyc_t *e, size_t i0, size_t i1, const dc_comm_t *cm,
                                 uint64_t tag)
{
    exec_item_t *first = &e->w->items[i0];
    size_t esize = dc_reduce_dtype_size(first->req.dtype), total = 0, off = 0;
    dc_coll_ctx_t ctx = dc_run_comm_ctx(e->base, cm, first->req.comm, tag);
    dc_coll_args_t args = {.dtype = first->req.dtype, .op = first->req.op};
    const char *algo = NULL;
    uint64_t t0, t1, t2;
    dc_status_t status = DCOMM_OK;
    int mode = 0;
    char *buf;

    for (size_t i = i0; i < i1; i++) {
        total += e->w->items[i].req.count;
    }
    if (first->req.device == DC_WIRE_DEVICE) {
        DC_CHECK_GOTO(dc_dev_prepare(&e->x->dev, e->run, &ctx, first->req.comm, &mode), status,
                      out);
    }
    DC_CHECK_GOTO(fusion_buffer(e, mode, total * esize, &buf), status, out);
    t0 = dc_now_ns();
    for (size_t i = i0; i < i1; i++) {
        size_t bytes = e->w->items[i].req.count * esize;

        DC_CHECK_GOTO(fusion_in(e, mode, &e->w->items[i], buf + off, bytes), status, out);
        off += bytes;
    }
    t1 = dc_now_ns();
    args.sendbuf = args.recvbuf = buf;
    args.count = total;
    if (mode == DC_DEV_NCCL) {
        status = dc_dev_run(&e->x->dev, e->run, DC_COLL_ALLREDUCE, first->req.comm, 0, &ctx, &args,
                            first->req.name, &algo);
    } else {
        if (mode == DC_DEV_STAGED && args.op == DCOMM_AVG) {
            args.op = DCOMM_SUM; /* scaled on the device (fusion_out) */
        }
        status = dc_run_algo(e->run, DC_COLL_ALLREDUCE, &ctx, &args, first->req.name, &algo);
    }
    if (status < 0) {
        goto out;
    }
    t2 = dc_now_ns();
    off = 0;
    for (size_t i = i0; i < i1; i++) {
        size_t bytes = e->w->items[i].req.count * esize;

        DC_CHECK_GOTO(fusion_out(e, mode, &e->w->items[i], buf + off, bytes, cm->size), status,
                      out);
        off += bytes;
    }
    if (e->tl != NULL) {
        uint64_t t3 = dc_now_ns();

        for (size_t i = i0; i < i1; i++) {
            if (e->w->items[i].op != NULL) {
                dc_timeline_span(e->tl, e->w->items[i].req.name, "MEMCPY_IN_FUSION", t0, t1, NULL);
                timeline_op(e->tl, &ctx, &e->w->items[i], algo, cm, total * esize, t1, t2);
                dc_timeline_span(e->tl, e->w->items[i].req.name, "MEMCPY_OUT_FUSION", t2, t3, NULL);
            }
        }
    }
    for (size_t i = i0; i < i1; i++) {
        if (e->w->items[i].op != NULL) {
            dc_handle_complete(e->x->st, e->w->items[i].op->handle, DCOMM_OK, NULL);
        }
    }
    e->x->stats.fused_groups++;
    e->x->stats.fused_tensors += i1 - i0;
    e->x->stats.fused_bytes += total * esize;
out:
    return status;
}

/* Runs items[i0 .. i1) as one allreduce over their own buffers (zero-copy
 * fusion), with the segments dc_plan_group built in e->x->fusion.segs and the algorithm it
 * picked for them. */
static dc_status_t execute_segments(cyc_t *e, size_t i0, size_t i1, const dc_comm_t *cm,
                                    uint64_t tag, const dc_coll_algo_t *seg_algo)
{
    exec_item_t *first = &e->w->items[i0];
    const dc_coll_seg_t *last = &e->x->fusion.segs[i1 - i0 - 1];
    dc_coll_ctx_t ctx = dc_run_comm_ctx(e->base, cm, first->req.comm, tag);
    dc_coll_args_t args = {
        .count = last->off + last->count,
        .dtype = first->req.dtype,
        .op = first->req.op,
        .segs = e->x->fusion.segs,
        .nsegs = i1 - i0,
    };
    const char *algo = NULL;
    uint64_t t0 = dc_now_ns(), t1;
    size_t bytes;
    dc_status_t status =
        dc_run_picked(e->run, DC_COLL_ALLREDUCE, &ctx, &args, first->req.name, seg_algo, &algo);

    if (status < 0) {
        return status;
    }
    t1 = dc_now_ns();
    bytes = args.count * dc_reduce_dtype_size(args.dtype);
    for (size_t i = i0; i < i1; i++) {
        if (e->w->items[i].op != NULL) {
            timeline_op(e->tl, &ctx, &e->w->items[i], algo, cm, bytes, t0, t1);
            dc_handle_complete(e->x->st, e->w->items[i].op->handle, DCOMM_OK, NULL);
        }
    }
    e->x->stats.fused_groups++;
    e->x->stats.zero_copy_groups++;
    e->x->stats.fused_tensors += i1 - i0;
    e->x->stats.fused_bytes += bytes;
    return DCOMM_OK;
}

dc_status_t dc_exec_run(dc_exec_t *x, dc_runner_t *run, dc_work_t *w, const dc_coll_ctx_t *base,
                        dc_timeline_t *tl, uint64_t *tag_p)
{
    cyc_t cyc = {x, run, w, base, tl}, *e = &cyc;
    dc_status_t status = DCOMM_OK;
    size_t i = 0;

    while (i < w->n) {
        exec_item_t *it = &w->items[i];
        const dc_comm_t *cm = dc_comm_get(x->st, it->req.comm);
        uint64_t tag = (*tag_p)++;
        const dc_coll_algo_t *seg_algo;
        dc_coll_ctx_t gctx;
        size_t j;

        if (cm == NULL) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "tensor '%s' on unknown comm %d",
                                it->req.name, it->req.comm);
        }
        gctx = dc_run_comm_ctx(base, cm, it->req.comm, tag);
        j = dc_plan_group(&x->plan, &x->fusion, run, w, i, cm, &gctx, &seg_algo);
        if (tl != NULL) {
            uint64_t now = dc_now_ns();

            for (size_t k = i; k < j; k++) {
                if (w->items[k].op != NULL) {
                    dc_timeline_span(tl, w->items[k].req.name, "NEGOTIATE",
                                     w->items[k].op->submit_ns, w->items[k].ready_ns, NULL);
                    dc_timeline_span(tl, w->items[k].req.name, "QUEUE",
                                     w->items[k].ready_ns, now, NULL);
                }
            }
        }
        if (it->error != 0) {
            if (it->op != NULL) {
                dc_handle_complete(x->st, it->op->handle, it->error, it->text);
            }
        } else if (cm->rank >= 0) {
            status = seg_algo    ? execute_segments(e, i, j, cm, tag, seg_algo)
                     : j - i > 1 ? execute_fused(e, i, j, cm, tag)
                                 : execute_one(e, it, cm, tag);
            if (status < 0) {
                /* A failed collective leaves the ranks out of step: fatal. */
                char text[1024];

                snprintf(text, sizeof(text), "%s '%s': %s", dc_coll_name(it->req.coll),
                         it->req.name, dc_error_get());
                return dc_error_set(status, "%s", text);
            }
        }
        dc_work_done(w, i, j);
        i = j;
    }
    return status;
}

void dc_exec_init(dc_exec_t *x, dc_state_t *st, uint64_t fusion_threshold, size_t bypass_bytes)
{
    x->st = st;
    dc_plan_init(&x->plan, fusion_threshold, bypass_bytes);
    dc_dev_init(&x->dev, st);
}

void dc_exec_free(dc_exec_t *x)
{
    dc_dev_free(&x->dev);
    dc_fusion_free(&x->fusion);
}
