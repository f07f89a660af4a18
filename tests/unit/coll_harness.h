/*
 * Many ranks in one process, one thread each, for fast collective tests under
 * sanitizers: every rank opens its own dc_net_t (shm or tcp) over an in-memory
 * store shared by the threads, and gets a ready dc_coll_ctx_t.
 */
#ifndef COLL_HARNESS_H
#define COLL_HARNESS_H

#include <stddef.h>

#include "coll.h"

#define COLL_MAX_RANKS 8

typedef struct coll_world coll_world_t;

typedef struct coll_rank {
    int rank, size; /* in the comm (ctx.rank); the thread's world rank is ranks[rank] */
    coll_world_t *world;
    dc_net_t *net;
    dc_coll_ctx_t ctx; /* tag left to the test; scratch and reqs allocated */
    int ranks[COLL_MAX_RANKS], host_of[COLL_MAX_RANKS];
    dc_request_t reqs[DC_COLL_MAX_REQS];
} coll_rank_t;

/* Opens size ranks over transport spec ("shm" or "tcp"), each with
 * scratch_size bytes of scratch; every peer must be served by that transport.
 * The comm's ranks are the world's rotated by shift (comm rank c is world
 * rank (c + shift) % size), so algorithms must map through ctx->ranks.
 * Returns 0, or -1 with a message on stderr. */
int coll_world_open(int size, const char *spec, size_t scratch_size, int shift,
                    coll_world_t **world_p);
void coll_world_close(coll_world_t *world);

/* Runs fn on every rank, each in its own thread; returns the number of ranks
 * whose fn returned nonzero. */
int coll_world_run(coll_world_t *world, int (*fn)(coll_rank_t *rk, void *arg), void *arg);

/* Thread barrier over the world's ranks (no network). Returns -1 once a rank
 * has called coll_world_abort, so failing ranks cannot hang the others. */
int coll_world_sync(coll_rank_t *rk);
void coll_world_abort(coll_world_t *world);

/* Per-rank pointers the threads publish to each other (e.g. result buffers). */
void **coll_world_shared(coll_world_t *world);

#endif
