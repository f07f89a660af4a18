/*
 * dcomm's own tools only: an UNSTABLE interface that libdcomm exports for
 * dbench's direct mode and dcomm-info, so that they link libdcomm alone
 * instead of a second, static copy of the runtime. Not installed, not part of
 * the C ABI (include/dcomm.h): names and signatures change with the library.
 */
#ifndef DCOMM_INTERNAL_H
#define DCOMM_INTERNAL_H

#include <stddef.h>
#include <stdio.h>

#include "dcomm.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DCOMM_BUILDING_LIBRARY)
#define DC_INTERNAL_API __attribute__((visibility("default")))
#else
#define DC_INTERNAL_API
#endif

/* ---- Blocking calls of the Python binding -------------------------------------
 * on: the submissions this thread makes until off are waited on at once (the
 * binding's synchronous calls, _async then synchronize), so they need not wake
 * the coordinator thread: the wait runs the cycles itself (DCOMM_WAIT_PROGRESS),
 * or wakes the thread when it cannot. The C blocking calls do the same inside. */
DC_INTERNAL_API void dc_api_hint_wait_follows(int on);

/* ---- Direct mode (core/direct.c) ----------------------------------------------
 * One collective algorithm alone on the transport, without the coordinator:
 * the world comes from the same bootstrap as dcomm_init's (identity, store,
 * hosts, network, the same DCOMM_* settings); the algorithm is the one the
 * coordinator would pick (the selector after DCOMM_TUNE, calibrated as at
 * init, shm-direct's segment when every rank is on one host over shm). Every
 * rank must make the same calls in the same order. Not in a process that
 * calls dcomm_init, and one at a time. */
typedef struct dc_direct dc_direct_t;

/* What one collective works on; counts in elements, buffers the caller's.
 *  allreduce:     sendbuf -> recvbuf, count (sendbuf == recvbuf: in place)
 *  broadcast:     recvbuf, count, from rank root
 *  allgather:     sendbuf holds counts[rank]; recvbuf receives all counts[]
 *  reducescatter: sendbuf holds count; recvbuf receives this rank's segment
 *  alltoall:      sendbuf holds counts[r] for each rank r; recvbuf receives
 *                 recv_counts[r] from each r
 *  barrier:       nothing */
typedef struct dc_direct_args {
    const void *sendbuf;
    void *recvbuf;
    size_t count;
    dcomm_dtype_t dtype;
    dcomm_op_t op;
    int root;
    const size_t *counts;      /* [size] */
    const size_t *recv_counts; /* [size] */
} dc_direct_args_t;

DC_INTERNAL_API dcomm_status_t dc_direct_open(dc_direct_t **d_p);
DC_INTERNAL_API void dc_direct_close(dc_direct_t *d);
DC_INTERNAL_API int dc_direct_rank(const dc_direct_t *d);
DC_INTERNAL_API int dc_direct_size(const dc_direct_t *d);
/* Transport serving the next rank ("shm", "tcp"; "self" for one rank). */
DC_INTERNAL_API const char *dc_direct_transport(const dc_direct_t *d);
/* The id of a collective named as in DCOMM_TUNE ("allreduce", "broadcast",
 * "allgather", "alltoall", "reducescatter", "barrier"), for dc_direct_run;
 * -1 when unknown. */
DC_INTERNAL_API int dc_direct_coll(const char *name);
/* 1 when the reduction kernels can reduce dtype with op. */
DC_INTERNAL_API int dc_direct_reducible(dcomm_dtype_t dtype, dcomm_op_t op);
/* Picks coll's algorithm for args and runs it. *algo_p: the algorithm's name
 * once one is picked (also when it then fails), else NULL. Errors are also in
 * dcomm_last_error(). */
DC_INTERNAL_API dcomm_status_t dc_direct_run(dc_direct_t *d, int coll,
                                             const dc_direct_args_t *args, const char **algo_p);

/* ---- dcomm-info (core/info.c) ---------------------------------------------- */

/* The built-in transports, then each module: loaded, or why not. */
DC_INTERNAL_API void dc_info_print_transports(FILE *out);
/* The machine's topology (hwloc, or DCOMM_TOPO_FILE). */
DC_INTERNAL_API void dc_info_print_topology(FILE *out);
/* Reads the settings from the environment (as dcomm_init does); a malformed
 * one is an error that dcomm_last_error() names. */
DC_INTERNAL_API dcomm_status_t dc_info_load_settings(void);
/* Every setting: value, where it came from, default, doc. */
DC_INTERNAL_API void dc_info_print_settings(FILE *out);
/* Every setting as README's table of environment variables (no values). */
DC_INTERNAL_API void dc_info_print_settings_markdown(FILE *out);
/* 1 when this process is a rank of a job (dlaunch, mpirun or srun set its
 * identity), as dcomm_init would see it. */
DC_INTERNAL_API int dc_info_launched(void);
/* After dcomm_init: the host index of world rank peer and the transport
 * serving it; DCOMM_ERR_NOT_INITIALIZED or _INVALID_ARG otherwise. */
DC_INTERNAL_API dcomm_status_t dc_info_peer(int peer, int *host_p, const char **transport_p);

#ifdef __cplusplus
}
#endif

#endif /* DCOMM_INTERNAL_H */
