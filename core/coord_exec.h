/*
 * Execution of one cycle's agreed work (coord_exec.c), in the same order on
 * every rank: groups as planned (coord_plan.h) run through the selector
 * (coord_run.h), device tensors through NCCL or staged (coord_dev.h), fused
 * tensors through the fusion buffers (fusion.h); handles complete here.
 */
#ifndef DC_COORD_EXEC_H
#define DC_COORD_EXEC_H

#include "coord_dev.h"
#include "coord_plan.h"
#include "coord_run.h"
#include "coord_work.h"
#include "fusion.h"
#include "timeline.h"

typedef struct dc_exec_stats {
    uint64_t fused_groups, fused_tensors, fused_bytes;
    uint64_t zero_copy_groups;      /* fused groups run as segments, without a copy */
} dc_exec_stats_t;

typedef struct dc_exec {
    dc_state_t *st;
    dc_plan_t plan;
    dc_fusion_t fusion;
    coord_dev_t dev;
    dc_exec_stats_t stats;
} dc_exec_t;

void dc_exec_init(dc_exec_t *x, dc_state_t *st, uint64_t fusion_threshold, size_t bypass_bytes);
void dc_exec_free(dc_exec_t *x);

/* Runs every item of w (base: the world's context; tl: rank 0's timeline or
 * NULL; *tag_p: the next tag, advanced by one per group). Each item's op is
 * completed and freed as it runs. An error is fatal (the ranks are out of
 * step) and names the tensor. */
dc_status_t dc_exec_run(dc_exec_t *x, dc_runner_t *run, dc_work_t *w, const dc_coll_ctx_t *base,
                        dc_timeline_t *tl, uint64_t *tag_p);

#endif
