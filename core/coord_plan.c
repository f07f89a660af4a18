/* Grouping of a cycle's agreed work (coord_plan.h). */
#include "coord_plan.h"
#include "dc_reduce.h"

void dc_plan_init(dc_plan_t *p, uint64_t fusion_threshold, size_t bypass_bytes)
{
    p->fusion_threshold = fusion_threshold;
    p->bypass_bytes = bypass_bytes;
}

void dc_plan_set_threshold(dc_plan_t *p, uint64_t fusion_threshold)
{
    p->fusion_threshold = fusion_threshold;
}

uint64_t dc_plan_threshold(const dc_plan_t *p)
{
    return p->fusion_threshold;
}

/* A tensor this large runs alone, in place, without the copy into the fusion
 * buffer: beyond it, the copy costs more than the collective's own overhead
 * (unless the group runs as segments, without any copy: fused_end). */
static size_t fusion_bypass(const dc_plan_t *p)
{
    size_t half = p->fusion_threshold / 2, limit = p->bypass_bytes;

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
static size_t group_end(const dc_plan_t *p, const dc_work_t *w, size_t i)
{
    const exec_item_t *a = &w->items[i];
    size_t esize = dc_reduce_dtype_size(a->req.dtype), bytes = a->req.count * esize, j;

    if (!fuses_with(a, a) || p->fusion_threshold == 0 || bytes > fusion_bypass(p)) {
        return i + 1;
    }
    for (j = i + 1; j < w->n; j++) {
        const exec_item_t *b = &w->items[j];
        size_t b_bytes = b->req.count * esize;

        if (!fuses_with(a, b) || b_bytes > fusion_bypass(p) ||
            bytes + b_bytes > p->fusion_threshold) {
            break;
        }
        bytes += b_bytes;
    }
    return j;
}

size_t dc_plan_group(const dc_plan_t *p, dc_fusion_t *f, dc_runner_t *run, const dc_work_t *w,
                     size_t i, const dc_comm_t *cm, const dc_coll_ctx_t *ctx,
                     const dc_coll_algo_t **seg_algo_p)
{
    const exec_item_t *a = &w->items[i];
    size_t esize = dc_reduce_dtype_size(a->req.dtype), j, total = 0;
    dc_coll_seg_t *segs = NULL;

    *seg_algo_p = NULL;
    if (!fuses_with(a, a) || p->fusion_threshold == 0 || cm->rank < 0 ||
        a->req.device == DC_WIRE_DEVICE) {
        return group_end(p, w, i);
    }
    for (j = i; j < w->n; j++) {
        const exec_item_t *b = &w->items[j];

        if (!fuses_with(a, b) || (total + b->req.count) * esize > p->fusion_threshold) {
            break;
        }
        segs = dc_fusion_segs(f, j - i + 1);
        if (segs == NULL) {
            return group_end(p, w, i); /* the copying way needs no memory of its own */
        }
        segs[j - i] = (dc_coll_seg_t){
            .sendbuf = b->op ? b->op->sendbuf : NULL,
            .recvbuf = b->op ? b->op->recvbuf : NULL,
            .off = total,
            .count = b->req.count,
        };
        total += b->req.count;
    }
    if (j - i > 1) {
        dc_coll_args_t args = {.count = total, .dtype = a->req.dtype, .op = a->req.op,
                               .segs = segs, .nsegs = j - i};
        const dc_coll_algo_t *algo = dc_run_pick(run, DC_COLL_ALLREDUCE, ctx, &args, a->req.name);

        if (algo != NULL && algo->segments) {
            *seg_algo_p = algo;
            return j;
        }
    }
    return group_end(p, w, i);
}
