/*
 * Length-prefixed messages between a root and every other rank of a context:
 * the gather and broadcast of byte strings whose sizes only their sender knows
 * (the coordinator's negotiation: each rank's request list up to rank 0, the
 * response list back down). Each message travels as a uint64_t length, then
 * the bytes; a receiver bounds the length (max) before it sizes a buffer, and
 * the caller gives the buffer (reserve), so the pattern owns no memory.
 *
 * Post, then wait: the root posts the length receives (dc_coll_vmsg_gather_post),
 * does its own share meanwhile, then completes the gather
 * (dc_coll_vmsg_gather_wait). Every wait goes through dc_net_wait (deadline,
 * peer loss); after an error requests may stay posted until the caller closes
 * the network, so reqs/wait and the buffers must outlive the call.
 */
#ifndef DC_COLL_VMSG_H
#define DC_COLL_VMSG_H

#include <stdint.h>

#include "coll.h"

/* A buffer of len bytes for rank's message (the caller keeps it until the
 * next use of the rank's slot); NULL with dc_error_set on failure. */
typedef void *(*dc_coll_vmsg_reserve_fn)(void *arg, int rank, size_t len);

typedef struct dc_coll_vmsg {
    const dc_coll_ctx_t *ctx;  /* ranks, tag and net; ctx->reqs unused (reqs below) */
    int root;                  /* comm rank */
    uint64_t max;              /* longest message a peer may announce */
    const char *what;          /* "request list": names the messages in errors */
    dc_coll_vmsg_reserve_fn reserve;
    void *arg;
    uint64_t *lens;            /* [size]: each rank's length (the root's
                                * outgoing one at [root]) */
    dc_request_t *reqs;        /* [2 * size] */
    dc_request_t **wait;       /* [2 * size] */
} dc_coll_vmsg_t;

/* Root: posts the length receives from every other rank. */
dc_status_t dc_coll_vmsg_gather_post(dc_coll_vmsg_t *v);

/* Root, after dc_coll_vmsg_gather_post: waits for the lengths, refuses one
 * over v->max (naming the rank), reserves each rank's buffer, receives the
 * messages and waits for them. Then lens[r] and rank r's buffer hold its
 * message (r != root). */
dc_status_t dc_coll_vmsg_gather_wait(dc_coll_vmsg_t *v);

/* Root: sends len bytes of data to every other rank and waits. */
dc_status_t dc_coll_vmsg_bcast(dc_coll_vmsg_t *v, const void *data, uint64_t len);

/* Any other rank: sends len bytes of data to the root (its part of the
 * gather), then receives the root's message (its part of the broadcast) into
 * the buffer reserve gives for the root; *down_len_p: its length. */
dc_status_t dc_coll_vmsg_exchange(dc_coll_vmsg_t *v, const void *data, uint64_t len,
                                  uint64_t *down_len_p);

#endif
