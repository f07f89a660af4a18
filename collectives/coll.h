/*
 * Collective algorithms over endpoints. Each algorithm is one file with a row
 * {name, doc, supported, run}; the coordinator (and later select.c) picks a
 * row, and an algorithm that declines via supported() passes to the next.
 */
#ifndef DC_COLL_H
#define DC_COLL_H

#include <stddef.h>
#include <stdint.h>

#include "dcomm.h"
#include "net.h"

/* Everything an algorithm may use: the comm's ranks, one tag for the whole
 * collective (messages are FIFO per peer, so one tag suffices), and persistent,
 * pre-faulted scratch memory owned by the caller. */
typedef struct dc_coll_ctx {
    dc_net_t *net;
    int rank, size;      /* within the comm */
    const int *ranks;    /* comm rank -> world rank */
    uint64_t tag;
    void *scratch;
    size_t scratch_size; /* at least DC_COLL_SCRATCH_MIN */
    size_t chunk_bytes;  /* pipeline chunk; 0: the algorithm's default */
    /* Request storage that outlives the call: after an error, requests may
     * still be posted until the caller closes the network. */
    dc_request_t *reqs;  /* [DC_COLL_MAX_REQS] */
} dc_coll_ctx_t;

#define DC_COLL_MAX_REQS 64

#define DC_COLL_SCRATCH_MIN (4u << 20)

typedef struct dc_coll_args {
    const void *sendbuf; /* == recvbuf: in place */
    void *recvbuf;       /* broadcast: the buffer */
    size_t count;
    dcomm_dtype_t dtype;
    dcomm_op_t op;
    int root;            /* broadcast: comm rank of the root */
} dc_coll_args_t;

typedef struct dc_coll_algo {
    const char *name;
    const char *doc;
    int (*supported)(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args);
    dc_status_t (*run)(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args);
} dc_coll_algo_t;

extern const dc_coll_algo_t dc_allreduce_ring_algo;
extern const dc_coll_algo_t dc_bcast_binomial_algo;

/* Ring schedule of the reduce-scatter phase, exposed for unit tests: at step s
 * (0 .. size-2) rank r sends segment send_seg and receives recv_seg. */
void dc_ring_rs_step(int rank, int size, int step, int *send_seg_p, int *recv_seg_p);
/* Segment i of count elements split over size ranks: the first count % size
 * segments get one element more. */
void dc_ring_segment(size_t count, int size, int i, size_t *offset_p, size_t *len_p);

#endif
