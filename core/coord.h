/*
 * The coordinator thread (coord.c): the loop that owns all communication.
 * Its parts, each with its own state, are called from here only:
 * negotiation (coord_neg.h), the cycle's work list (coord_work.h), execution
 * (coord_exec.h: planning, fusion, device staging), the runner over the
 * selector (coord_run.h) and autotune (autotune.h). Failure causes:
 * coord_cause.c.
 */
#ifndef DC_COORD_H
#define DC_COORD_H

#include "autotune.h"
#include "coll.h"
#include "coord_exec.h"
#include "coord_neg.h"
#include "coord_run.h"
#include "coord_work.h"
#include "core.h"
#include "timeline.h"

typedef struct coord {
    dc_state_t *st;
    dc_net_t *net;
    int rank, size;
    uint64_t tag;                   /* same sequence on every rank */
    uint64_t cycle_ns;              /* agreed at start-up, moved by autotune */

    /* collectives over the world */
    dc_coll_ctx_t ctx;
    int *world_ranks;               /* identity map for COMM_WORLD */
    dc_request_t coll_reqs[DC_COLL_MAX_REQS];
    size_t scratch_size;

    /* idle periods */
    dc_request_t *wake_rx, *wake_tx; /* [size] */
    dc_request_t **wake_preqs;       /* [2 * size] */
    int wake_posted;
    uint64_t epoch;
    uint64_t idle_deadline_ns;      /* rank 0 leaves idle then to check stalls */
    uint64_t idle_checked_ns;       /* liveness last checked while idle */

    /* the parts */
    dc_neg_t neg;
    dc_work_t work;
    dc_runner_t run;
    dc_exec_t exec;
    dc_tune_t tune;

    dc_timeline_t *tl;              /* rank 0, when a timeline is on */
    uint64_t cycles, idle_periods;

    /* Who runs it: the coordinator thread, or a thread blocked in dcomm_wait
     * (coord.c, "the role"). Everything above belongs to the role's holder. */
    pthread_mutex_t role;
    int idle;                       /* in an idle period: WAKE receives posted */
    _Atomic int stopped;            /* shut down or failed: nobody runs cycles now */
    _Atomic int drivers;            /* waiting threads inside dc_coord_drive */
    _Atomic int bg_counted;         /* the thread is among the network's sleepers */
    _Atomic uint32_t bg_word;       /* the thread parks on it while the role is taken */
    _Atomic int bg_parked;
    _Atomic int bg_nice;            /* the thread's nice level (DCOMM_COORD_PRIORITY) */
    _Atomic uint32_t started;       /* the thread runs, named, at its priority */
    int may_drive;                  /* DCOMM_WAIT_PROGRESS, and no device module */
    dc_status_t fail_status;        /* a waiter's cycle failed: the thread handles it */
    int fail_quiet;
    char fail_text[1024];
    uint64_t driven_cycles;
    _Atomic uint64_t drive_tries, drive_busy;
} coord_t;

/* coord_cause.c: text (this rank's view of the failure, status) becomes the
 * first cause as far as it can be told (dlaunch's word, the causes other
 * ranks published); this rank's cause is published. quiet: the rank we
 * waited on in vain (-1: none). */
void dc_cause_explain(dc_state_t *st, dc_status_t status, int quiet, char *text, size_t cap);

#endif
