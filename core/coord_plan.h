/*
 * Planning: how a cycle's agreed work splits into groups that run as one
 * collective. Neighbouring allreduces of one comm, dtype, op and buffer kind
 * go together up to the fusion threshold: as segments over their own buffers
 * when the algorithm chosen for their total takes segments, else the small
 * ones packed into the fusion buffer; everything else runs alone. The choice
 * depends only on what every member agreed, so all ranks group alike.
 */
#ifndef DC_COORD_PLAN_H
#define DC_COORD_PLAN_H

#include "coord_run.h"
#include "coord_work.h"
#include "fusion.h"

typedef struct dc_plan {
    uint64_t fusion_threshold;  /* agreed at start-up, moved by autotune */
    size_t bypass_bytes;        /* tensors above it skip the fusion buffer */
} dc_plan_t;

void dc_plan_init(dc_plan_t *p, uint64_t fusion_threshold, size_t bypass_bytes);
void dc_plan_set_threshold(dc_plan_t *p, uint64_t fusion_threshold);
uint64_t dc_plan_threshold(const dc_plan_t *p);

/* Where the group of w->items[i] ends (exclusive); *seg_algo_p: the algorithm
 * when it runs as segments (their list is in f), else NULL. ctx: the comm's,
 * on the group's tag (for the algorithm's choice). */
size_t dc_plan_group(const dc_plan_t *p, dc_fusion_t *f, dc_runner_t *run, const dc_work_t *w,
                     size_t i, const dc_comm_t *cm, const dc_coll_ctx_t *ctx,
                     const dc_coll_algo_t **seg_algo_p);

#endif
