/*
 * A collective context of its own over every rank of a job that dlaunch
 * started, without dcomm_init and its coordinator: for benchmarks and tools
 * that time one algorithm alone on the transport (dbench --direct). It opens
 * the rendezvous store, learns which ranks share a host, opens the network,
 * calibrates the cost model, creates the host's shm-direct segment when all
 * ranks are on one host over shm, and picks algorithms as the coordinator
 * does. The settings come from the caller, who reads them from the config
 * table. Do not mix with dcomm_init in one process.
 */
#ifndef DC_COLL_WORLD_H
#define DC_COLL_WORLD_H

#include "coll.h"
#include "select.h"

typedef struct dc_coll_world dc_coll_world_t;

/* The job's settings (core/config.c's rows of the same names). */
typedef struct dc_coll_world_env {
    int64_t rank, size;     /* DCOMM_RANK, DCOMM_SIZE; size 0: not in a job (one rank) */
    const char *rendezvous; /* DCOMM_RENDEZVOUS */
    const char *job_secret; /* DCOMM_JOB_SECRET, or NULL */
    const char *transports; /* DCOMM_TRANSPORTS */
    const char *tune;       /* DCOMM_TUNE */
    uint64_t shm_ring_size; /* DCOMM_SHM_RING_SIZE */
} dc_coll_world_env_t;

/* Collective over all ranks. timeout_ms bounds every wait on a peer. */
dc_status_t dc_coll_world_open(const dc_coll_world_env_t *env, int timeout_ms,
                               dc_coll_world_t **w_p);
void dc_coll_world_close(dc_coll_world_t *w);

int dc_coll_world_rank(const dc_coll_world_t *w);
int dc_coll_world_size(const dc_coll_world_t *w);
/* Transport serving the next rank ("shm", "tcp", "self"). */
const char *dc_coll_world_transport(const dc_coll_world_t *w);

/* The algorithm the coordinator would run for coll (DC_SELECT_*) and args
 * (allgather: counts; alltoall: counts and recv_counts filled), or NULL with
 * the error set. */
const dc_coll_algo_t *dc_coll_world_pick(dc_coll_world_t *w, int coll,
                                         const dc_coll_args_t *args);

/* Runs algo with a fresh tag; every rank must make the same calls in order. */
dc_status_t dc_coll_world_run(dc_coll_world_t *w, const dc_coll_algo_t *algo,
                              const dc_coll_args_t *args);

/* Alltoall prelude (dc_alltoall_counts) with a fresh tag. */
dc_status_t dc_coll_world_alltoall_counts(dc_coll_world_t *w, const size_t *send_counts,
                                          size_t *recv_counts);

#endif
