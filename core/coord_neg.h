/*
 * Negotiation: how the ranks agree on the work of a cycle. One part, one
 * state (dc_neg_t), in five files, each calling only those listed after it:
 *   coord_neg.c        set-up, and failing everything pending
 *   neg_fast.c         intake of the user's queue, the fast path (a bit per
 *                      cached tensor, one small allreduce), the cache's learning
 *   neg_slow.c         the slow path: request lists to rank 0, responses back
 *   neg_deadlock.c     ranks blocked in waits that can never end
 *   neg_table.c        rank 0's table of tensors being negotiated, stalls
 *   neg_local.c        this rank's taken operations, not yet executed
 * The agreed work goes into a dc_work_t (coord_work.h).
 */
#ifndef DC_COORD_NEG_H
#define DC_COORD_NEG_H

#include "cache.h"
#include "coll.h"
#include "coord_work.h"
#include "core.h"
#include "map.h"
#include "timeline.h"
#include "wire.h"

/* Rank 0's record of one rank's last wait report (neg_deadlock.c). */
typedef struct dl_rec {
    int valid;               /* the rank is blocked in a wait (as of the last slow round) */
    uint64_t since_ns;       /* its state has not changed since (rank 0's clock) */
    uint32_t n, cap;
    dc_wire_req_t *reqs;     /* [n] its tensors submitted, not executed */
    uint8_t *waited;         /* [n] a user thread waits on it */
} dl_rec_t;

typedef struct dc_neg_stats {
    uint64_t slow_rounds, fast_rounds;
    uint64_t last_slow_cycle;       /* cycle of the latest slow round */
    uint64_t negotiate_ns;          /* time spent agreeing (both paths) */
} dc_neg_stats_t;

typedef struct dc_neg {
    dc_state_t *st;
    int rank, size;

    /* neg_local.c: taken, not yet executed */
    dc_map_t local;                 /* key -> dc_op_t* */
    const dc_wire_req_t **new_reqs; /* for the next slow round */
    size_t nnew, new_cap;
    dc_op_t **by_bit;               /* [capacity]: our op waiting on each cache bit */
    int local_joined[DC_MAX_COMMS]; /* this rank joined the comm, join not done */
    int shutdown_flag;              /* this rank asked to shut down */

    /* neg_fast.c: the response cache and one bit vector per cycle */
    dc_cache_t cache;
    uint8_t *inval;                 /* [capacity]: we invalidate this bit */
    uint8_t *vec;                   /* bits, invalidations, flags */
    size_t vec_len;

    /* neg_slow.c: buffers reused every round */
    dc_wire_buf_t up, down;
    dc_wire_resp_t resp;
    uint64_t *resp_counts;          /* [size]: storage of resp.counts */
    /* The gather up and broadcast down (collectives/coll_vmsg.h) */
    dc_request_t *reqs;             /* [2 * size + 2] */
    dc_request_t **preqs;           /* [2 * size + 2] */
    dc_wire_buf_t *rx;              /* rank 0: [size] each rank's list */
    uint64_t *rx_len;               /* [size]: the messages' lengths */
    int shutdown_rank;

    /* neg_table.c, rank 0 only */
    dc_map_t table;                 /* key -> neg_entry_t* */
    int nresps;                     /* responses in down this round */
    uint8_t *joined[DC_MAX_COMMS];  /* [size] world ranks that joined each comm */
    int join_last[DC_MAX_COMMS];
    int njoined[DC_MAX_COMMS];
    char stall_fatal[DC_WIRE_ERROR_MAX]; /* stall shutdown to announce */
    uint64_t next_stall_check_ns;

    /* neg_deadlock.c */
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
    uint64_t dl_idle_check_ns;      /* rank 0, idle: next look at the reports */

    dc_neg_stats_t stats;
} dc_neg_t;

/* coord_neg.c */
/* cache_capacity: agreed by every rank (0: every cycle is a slow round). */
dc_status_t dc_neg_init(dc_neg_t *ng, dc_state_t *st, int cache_capacity);
void dc_neg_free(dc_neg_t *ng);
/* Completes every local operation (queued, taken, or in w) with status. */
void dc_neg_fail_all(dc_neg_t *ng, dc_work_t *w, dc_status_t status, const char *msg);

/* neg_fast.c */
dc_status_t dc_neg_cache_init(dc_neg_t *ng, int capacity);
/* Takes the user's queue: each request waits on its cache bit, or goes to
 * the slow path. */
dc_status_t dc_neg_intake(dc_neg_t *ng);
/* One bit-vector allreduce over base's ranks (on *tag_p, advanced); appends
 * the tensors ready everywhere to w. tune: rank 0's autotune setting to
 * announce (255: none); *tune_p: the agreed one (255: none). *slow_p: some
 * rank needs a slow round; *shutdown_p: some rank shuts down. */
dc_status_t dc_neg_fast_round(dc_neg_t *ng, const dc_coll_ctx_t *base, uint64_t *tag_p,
                              dc_work_t *w, int tune, int *slow_p, int *shutdown_p, int *tune_p);
/* After execution: the cache learns what ran, in the same order everywhere. */
void dc_neg_learn(dc_neg_t *ng, const dc_work_t *w);
int dc_neg_cache_on(const dc_neg_t *ng);
const dc_cache_t *dc_neg_cache(const dc_neg_t *ng);

/* neg_slow.c: one slow round on tag; the responses become items of w.
 * cycle: the loop's cycle count (statistics). */
dc_status_t dc_neg_slow_round(dc_neg_t *ng, dc_net_t *net, uint64_t tag, dc_work_t *w,
                              dc_timeline_t *tl, uint64_t cycle, uint32_t *flags_p);

/* neg_deadlock.c. A rank whose user thread stays blocked in a wait tells
 * rank 0 in the slow rounds (its pending tensors, the waited ones marked);
 * rank 0 fails the waits of ranks that wait on tensors that can never all be
 * submitted once that has held DCOMM_DEADLOCK_TIMEOUT. */
/* Every cycle after the intake: nonzero when this rank needs a slow round to
 * report (or withdraw) its wait. */
int dc_neg_dl_report_due(dc_neg_t *ng, uint64_t now);
/* rank 0, every cycle: decides whether a deadlock has held long enough. */
void dc_neg_dl_check(dc_neg_t *ng);
/* After execution: the work agreed this cycle changed its comms' members. */
void dc_neg_dl_cycle_end(dc_neg_t *ng);
/* Entering idle at now; while idle: leave to report, or (rank 0) to check. */
void dc_neg_dl_idle_begin(dc_neg_t *ng, uint64_t now);
int dc_neg_dl_idle_stop(dc_neg_t *ng, uint64_t now);
/* This rank's pending set changed at now. */
void dc_neg_dl_local_changed(dc_neg_t *ng, uint64_t now);
/* A comm with work agreed this cycle. */
void dc_neg_dl_touch(dc_neg_t *ng, int32_t comm);
/* This rank's request list for rank 0 into ng->up, with its wait report
 * when it is due. */
dc_status_t dc_neg_encode_up(dc_neg_t *ng);
/* rank 0: rank r's wait report (rd after its requests); none: r is not blocked. */
dc_status_t dc_neg_dl_take(dc_neg_t *ng, int r, dc_wire_reader_t *rd, int present);
/* rank 0, in a slow round: fails a deadlock that still holds. */
dc_status_t dc_neg_dl_fail(dc_neg_t *ng, uint32_t *flags_p);
void dc_neg_dl_free(dc_neg_t *ng);

/* neg_table.c (rank 0) */
/* Takes one request of rank r; appends a response to ng->down when every
 * member of its comm has sent it. */
dc_status_t dc_neg_table_add(dc_neg_t *ng, int r, const dc_wire_req_t *req, dc_timeline_t *tl);
/* After joins: tensors that now have every member present. */
dc_status_t dc_neg_table_rescan(dc_neg_t *ng);
/* Has member m of t's comm submitted t (or joined the comm), as rank 0's table says? */
int dc_neg_table_has(dc_neg_t *ng, int m, const dc_wire_req_t *t);
/* t's entry is gone (its name free again); a join resets the comm's joins. */
void dc_neg_table_forget(dc_neg_t *ng, const dc_wire_req_t *t);
/* Tensors waiting in the table. */
size_t dc_neg_table_count(const dc_neg_t *ng);
/* Warns about (and with DCOMM_STALL_SHUTDOWN, fails) stalled tensors. */
void dc_neg_stall_check(dc_neg_t *ng);
void dc_neg_table_free(dc_neg_t *ng);

/* neg_local.c */
dc_status_t dc_neg_queue_slow(dc_neg_t *ng, const dc_wire_req_t *req);
/* Takes a failed tensor's op off its cache bit; a failed join ends ours. */
void dc_neg_unbit(dc_neg_t *ng, dc_op_t *op);
/* Fails every taken op (status, msg) and forgets the slow queue and bits. */
void dc_neg_local_fail(dc_neg_t *ng, dc_status_t status, const char *msg);

#endif
