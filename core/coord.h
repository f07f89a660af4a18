/* The coordinator's private state (coord.c); one per process. */
#ifndef DC_COORD_H
#define DC_COORD_H

#include "coll.h"
#include "select.h"
#include "core.h"
#include "map.h"
#include "wire.h"

typedef struct coord {
    dc_state_t *st;
    dc_net_t *net;
    int rank, size;

    dc_map_t local;                 /* key -> dc_op_t*: taken, not yet executed */
    const dc_wire_req_t **new_reqs; /* taken this cycle, to report */
    size_t nnew, new_cap;
    int shutdown_flag;              /* this rank asked to shut down */
    uint64_t tag;                   /* same sequence on every rank */

    /* negotiation buffers, reused every cycle */
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
} coord_t;

#endif
