/*
 * The coordinator's private state, shared by its three files: coord.c (the
 * loop: queue, fast path, idle, failure), coord_neg.c (the slow path: rank 0's
 * negotiation table, mismatch messages, stall inspector) and coord_exec.c
 * (execution of the agreed work: fusion, algorithms, results, join).
 */
#ifndef DC_COORD_H
#define DC_COORD_H

#include <stdio.h>

#include "cache.h"
#include "coll.h"
#include "core.h"
#include "map.h"
#include "select.h"
#include "timeline.h"
#include "wire.h"

/* One agreed operation of a cycle, in the order every rank runs them. */
typedef struct exec_item {
    dc_wire_req_t req;
    dc_op_t *op;          /* this rank's operation; NULL: not a member, or joined */
    int32_t error;        /* < 0: the tensor failed negotiation (text says why) */
    char *text;
    size_t counts_off;    /* allgather: per-rank counts in c->counts_arena */
    uint32_t ncounts;
    int bit;              /* cache bit when agreed on the fast path, else -1 */
    uint64_t ready_ns;
} exec_item_t;

/* Device (CUDA) tensors, coord_dev.c. Per comm: NCCL is tried on the first
 * device collective; every member then knows whether it serves the comm. */
enum { DC_DEV_UNDECIDED = 0, DC_DEV_NCCL, DC_DEV_STAGED };

typedef struct coord_dev {
    const struct dc_cuda_ops *cuda; /* NULL: the cuda module is not loaded */
    const struct dc_nccl_ops *nccl; /* NULL: not loaded, or not in DCOMM_TRANSPORTS */
    int ready;                      /* the fields above are set, the device chosen */
    int device;                     /* the CUDA device in use */
    void *stage;                    /* pinned host: staging and staged fusion */
    size_t stage_size;
    void *dbuf;                     /* device: NCCL fusion buffer and scratch */
    size_t dbuf_size;
    struct {
        int mode;                   /* DC_DEV_* */
        struct dc_nccl_comm *nccl;
        int failed;                 /* an operation failed: abort, do not close */
    } comms[DC_MAX_COMMS];
} coord_dev_t;

typedef struct algo_stat {
    const dc_coll_algo_t *algo;
    int coll;
    uint64_t calls, bytes, ns;
} algo_stat_t;

typedef struct coord_stats {
    uint64_t cycles, slow_rounds, fast_rounds, idle_periods;
    uint64_t last_slow_cycle;       /* cycle of the latest slow round */
    uint64_t negotiate_ns;          /* time spent agreeing (both paths) */
    uint64_t fused_groups, fused_tensors, fused_bytes;
    uint64_t zero_copy_groups;      /* fused groups run as segments, without a copy */
    algo_stat_t algos[48];
    int nalgos;
} coord_stats_t;

/* Rank 0's record of one rank's last wait report (coord_neg.c). */
typedef struct dl_rec {
    int valid;               /* the rank is blocked in a wait (as of the last slow round) */
    uint64_t since_ns;       /* its state has not changed since (rank 0's clock) */
    uint32_t n, cap;
    dc_wire_req_t *reqs;     /* [n] its tensors submitted, not executed */
    uint8_t *waited;         /* [n] a user thread waits on it */
} dl_rec_t;

typedef struct coord {
    dc_state_t *st;
    dc_net_t *net;
    int rank, size;

    dc_map_t local;                 /* key -> dc_op_t*: taken, not yet executed */
    const dc_wire_req_t **new_reqs; /* for the next slow round */
    size_t nnew, new_cap;
    int shutdown_flag;              /* this rank asked to shut down */
    uint64_t tag;                   /* same sequence on every rank */

    /* agreed at start-up (rank 0's values) */
    uint64_t fusion_threshold;
    uint64_t cycle_ns;
    size_t bypass_bytes;            /* tensors above it skip the fusion buffer */

    /* slow path buffers, reused every cycle */
    dc_wire_buf_t up, down;
    uint64_t up_len, down_len;
    dc_wire_resp_t resp;
    uint64_t *resp_counts;          /* [size]: storage of resp.counts */
    dc_request_t *reqs;             /* [2 * size + 2] */
    dc_request_t **preqs;           /* [2 * size + 2] */

    /* rank 0 only */
    dc_map_t table;                 /* key -> neg_entry_t* */
    dc_wire_buf_t *rx;              /* [size] */
    uint64_t *rx_len;               /* [size] */
    int nresps;
    int shutdown_rank;
    uint8_t *joined[DC_MAX_COMMS];  /* [size] world ranks that joined each comm */
    int join_last[DC_MAX_COMMS];
    int njoined[DC_MAX_COMMS];
    char stall_fatal[DC_WIRE_ERROR_MAX]; /* stall shutdown to announce */
    uint64_t next_stall_check_ns;
    uint64_t idle_deadline_ns;      /* rank 0 leaves idle then to check stalls */

    /* fast path: the response cache and one bit vector per cycle */
    dc_cache_t cache;
    dc_op_t **by_bit;               /* [capacity]: our op waiting on each bit */
    uint8_t *inval;                 /* [capacity]: we invalidate this bit */
    uint8_t *vec;                   /* bits, invalidations, flags */
    size_t vec_len;
    int local_joined[DC_MAX_COMMS]; /* this rank joined the comm, join not done */

    /* the work of one cycle */
    exec_item_t *items;
    size_t nitems, items_cap;
    uint64_t *counts_arena;
    size_t counts_len, counts_cap;

    /* idle periods */
    dc_request_t *wake_rx, *wake_tx; /* [size] */
    int wake_posted;
    uint64_t epoch;

    /* collectives */
    dc_select_t *sel;
    dc_coll_ctx_t ctx;
    int *world_ranks;               /* identity map for COMM_WORLD */
    dc_request_t coll_reqs[DC_COLL_MAX_REQS];
    size_t scratch_size;
    void *fusion;                   /* persistent, grown on demand, pre-faulted */
    size_t fusion_size;
    dc_coll_seg_t *segs;            /* a zero-copy fused group's segments */
    size_t segs_cap;
    void *zeros;                    /* a joined rank's contribution */
    size_t zeros_size;
    coord_dev_t dev;

    struct {                        /* autotune.c (rank 0) */
        int enabled, done, current, best, cycles;
        int phase;                  /* 0: fusion/cycle grid, 1: alpha scales */
        double best_gbs;
        uint64_t bytes, ns;
        FILE *log;
    } tune;
    uint64_t cycle_bytes;           /* bytes executed this cycle */

    /* deadlock detection (coord_neg.c) */
    uint64_t dl_local_ns;           /* our pending set last changed then */
    int dl_sent;                    /* rank 0 holds our report of being blocked */
    uint8_t dl_touched[DC_MAX_COMMS]; /* comms with work agreed this cycle */
    int dl_any_touched;
    const dc_wire_req_t **dl_reqs;  /* our report, built per slow round */
    uint8_t *dl_waited;
    size_t dl_n, dl_cap;
    dl_rec_t *dl_recs;              /* rank 0: [size] */
    uint8_t *dl_dead;               /* rank 0: [size] scratch */
    int dl_due;                     /* rank 0: a deadlock held for the grace time */
    uint64_t dl_next_check_ns;

    dc_timeline_t *tl;              /* rank 0, when a timeline is on */
    coord_stats_t stats;
} coord_t;

/* coord.c */
const dc_comm_t *dc_coord_comm(coord_t *c, int32_t id);
int dc_coord_comm_rank_of(const dc_comm_t *cm, int world_rank);
dc_status_t dc_coord_queue_slow(coord_t *c, const dc_wire_req_t *req);
dc_status_t dc_coord_add_item(coord_t *c, const dc_wire_req_t *req, dc_op_t *op, int32_t error,
                              const char *text, const uint64_t *counts, uint32_t ncounts,
                              int bit);

/* coord_neg.c: the slow path */
dc_status_t dc_coord_negotiate(coord_t *c, uint32_t *flags_p);
void dc_coord_neg_free(coord_t *c);
/* rank 0: warns about (and with DCOMM_STALL_SHUTDOWN, fails) stalled tensors */
void dc_coord_stall_check(coord_t *c);

/* Deadlock detection. A rank whose user thread stays blocked in a wait tells
 * rank 0 in the slow rounds (its pending tensors, the waited ones marked);
 * rank 0 fails the waits of ranks that wait on tensors that can never all be
 * submitted once that has held DCOMM_DEADLOCK_TIMEOUT. */
/* Every cycle after take_queue: nonzero when this rank needs a slow round to
 * report (or withdraw) its wait. */
int dc_coord_dl_report_due(coord_t *c, uint64_t now);
/* rank 0, every cycle: decides whether a deadlock has held long enough. */
void dc_coord_dl_check(coord_t *c);
/* After execution: the work agreed this cycle changed its comms' members. */
void dc_coord_dl_cycle_end(coord_t *c);
/* While idle: leave to report, or (rank 0) to check. */
int dc_coord_dl_idle_stop(coord_t *c, uint64_t now);

/* autotune.c */
void dc_autotune_init(coord_t *c);
void dc_autotune_free(coord_t *c);
void dc_autotune_apply(coord_t *c, int index);
void dc_autotune_sample(coord_t *c, uint64_t bytes, uint64_t ns);

/* coord_exec.c */
dc_status_t dc_coord_execute(coord_t *c);
void dc_coord_print_stats(coord_t *c);
/* The first of the selected algorithms that accepts args runs the collective. */
dc_status_t dc_coord_run_algo(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
                              const dc_coll_args_t *args, const char *name, const char **algo_p);

/* coord_dev.c: device tensors (items whose agreed req.device is DC_WIRE_DEVICE) */
/* Before the first device work of an item: the device, and the comm's mode
 * (NCCL opened on first use, agreed by the members; else staged). Collective
 * over the comm's members, on ctx's tag. */
dc_status_t dc_coord_dev_prepare(coord_t *c, const dc_coll_ctx_t *ctx, int32_t comm,
                                 int *mode_p);
/* Copies between any mix of host and device memory (plain memcpy host-host). */
dc_status_t dc_coord_dev_copy(coord_t *c, void *dst, const void *src, size_t bytes);
/* Persistent buffers, grown on demand: pinned host / device. */
dc_status_t dc_coord_dev_stage(coord_t *c, size_t bytes, void **buf_p);
dc_status_t dc_coord_dev_dbuf(coord_t *c, size_t bytes, void **buf_p);
/* Runs collective coll natively on comm's NCCL communicator, args as prepared
 * for the host path (results into host memory; a joined rank's own buffers
 * are ignored, it sends zeros from the device), and waits for it (see
 * coord_dev.c for why). */
dc_status_t dc_coord_dev_native(coord_t *c, int coll, int32_t comm, int joined,
                                const dc_coll_ctx_t *ctx, const dc_coll_args_t *args);
/* A staged device tensor of item it: this rank's input into pinned host
 * memory (args then point there), and the result back to the device. */
dc_status_t dc_coord_dev_stage_in(coord_t *c, const exec_item_t *it, const dc_comm_t *cm,
                                  dc_coll_args_t *args);
dc_status_t dc_coord_dev_stage_out(coord_t *c, const exec_item_t *it, const dc_comm_t *cm,
                                   const dc_coll_args_t *args);
/* Staged device tensors: AVG's final 1/size on the device. */
dc_status_t dc_coord_dev_scale(coord_t *c, void *buf, size_t count, int dtype, int size);
/* The NCCL communicator of a destroyed comm; everything at shutdown. */
void dc_coord_dev_comm_close(coord_t *c, int32_t comm);
void dc_coord_dev_free(coord_t *c);

#endif
