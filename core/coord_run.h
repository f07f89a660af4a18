/*
 * How the coordinator runs a collective: it asks the selector (collectives/
 * select.h) for the candidates, best first, and runs the first that accepts;
 * its own agreement messages take the selector's control rows, tensors in
 * device memory its device rows. Counts calls, bytes and time per algorithm
 * (DCOMM_STATS) and the bytes of the cycle (autotune).
 */
#ifndef DC_COORD_RUN_H
#define DC_COORD_RUN_H

#include "coll.h"
#include "core.h"
#include "select.h"

typedef struct algo_stat {
    const dc_coll_algo_t *algo;
    int coll;
    uint64_t calls, bytes, ns;
} algo_stat_t;

typedef struct dc_runner {
    dc_select_t *sel;
    algo_stat_t algos[48];
    int nalgos;
    uint64_t cycle_bytes;           /* bytes run since dc_run_cycle_begin */
} dc_runner_t;

/* tune: DCOMM_TUNE (a bad rule fails with its message); the link costs of
 * net's transports, as their query() reports them. */
dc_status_t dc_run_init(dc_runner_t *r, const char *tune, dc_net_t *net);
/* The selector's link costs: those of net's transports, as their query()
 * reports them (also the direct mode's). */
void dc_run_links_from(dc_select_t *sel, dc_net_t *net);
void dc_run_free(dc_runner_t *r);

/* Calibrates the selector's link and compute costs (collective over net). */
dc_status_t dc_run_calibrate(dc_runner_t *r, dc_net_t *net, int rank, int size, uint64_t tag);
/* Autotune's scale of the allreduce models' latency term (same on every rank). */
void dc_run_set_alpha_scale(dc_runner_t *r, double scale);

/* A context for comm cm from the world's base context, on tag. */
dc_coll_ctx_t dc_run_comm_ctx(const dc_coll_ctx_t *base, const dc_comm_t *cm, int32_t comm,
                              uint64_t tag);

/* The algorithm for one collective: the selector's candidates in order of
 * preference, the first that accepts the arguments (declines are logged).
 * NULL: none. Depends only on values equal on every member. */
const dc_coll_algo_t *dc_run_pick(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                                  const dc_coll_args_t *args, const char *name);
/* Runs algo (from dc_run_pick; NULL: an error naming the tensor) and counts it. */
dc_status_t dc_run_picked(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                          const dc_coll_args_t *args, const char *name,
                          const dc_coll_algo_t *algo, const char **algo_p);
/* dc_run_pick, then dc_run_picked. */
dc_status_t dc_run_algo(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                        const dc_coll_args_t *args, const char *name, const char **algo_p);
/* A tensor in device memory (ctx->dev set by device staging, coord_dev.c):
 * the selector's device rows, the first that accepts, run and counted like
 * dc_run_picked. */
dc_status_t dc_run_device(dc_runner_t *r, int coll, const dc_coll_ctx_t *ctx,
                          const dc_coll_args_t *args, const char *name, const char **algo_p);
/* An agreement message of the coordinator itself (the selector's control
 * rows); not counted. */
dc_status_t dc_run_control(int coll, const dc_coll_ctx_t *ctx, const dc_coll_args_t *args);

void dc_run_cycle_begin(dc_runner_t *r);
void dc_run_print_stats(const dc_runner_t *r, int rank);

#endif
