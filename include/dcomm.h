/*
 * dcomm: collective communication for data-parallel training.
 *
 * This is the only public header. Ranks hand named tensors to a background
 * coordinator thread, which agrees with the other ranks on which tensors are
 * ready everywhere and runs the collectives. Every function is thread-safe.
 *
 * Ownership: user buffers passed to an *_async call are borrowed until the
 * handle completes (dcomm_wait returns, or dcomm_poll reports done). Results
 * returned by dcomm_result are owned by the handle until dcomm_release.
 *
 * Buffers may be host memory or CUDA device memory when the cuda module is
 * loaded (the runtime tells them apart by CUDA's pointer attributes); one call
 * takes buffers of one kind, and every rank must pass the same kind for a
 * tensor (else DCOMM_ERR_MISMATCH). Device tensors run on NCCL or are staged
 * through pinned host memory (README, "GPU buffers").
 *
 * Errors: every call returns a dcomm_status_t; on a negative status,
 * dcomm_last_error() gives this thread's message with the detail (which
 * argument, which rank, which tensor).
 */
#ifndef DCOMM_H
#define DCOMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DCOMM_BUILDING_LIBRARY)
#define DCOMM_API __attribute__((visibility("default")))
#else
#define DCOMM_API
#endif

#define DCOMM_VERSION_MAJOR 0
#define DCOMM_VERSION_MINOR 1
#define DCOMM_VERSION_PATCH 0

/* Status codes: 0 ok, 1 in progress, errors negative. One table generates the
 * enum and the strings of dcomm_status_string(). */
#define DCOMM_STATUS_MAP(X)                                                               \
    X(OK, 0, "success")                                                                   \
    X(INPROGRESS, 1, "operation in progress")                                             \
    X(ERR_INVALID_ARG, -1, "invalid argument")                                            \
    X(ERR_NOT_INITIALIZED, -2, "dcomm is not initialized")                                \
    X(ERR_MISMATCH, -3, "ranks submitted mismatching requests for a tensor")              \
    X(ERR_DUPLICATE_NAME, -4, "a tensor with this name is already in flight")             \
    X(ERR_PEER_LOST, -5, "a peer rank was lost")                                          \
    X(ERR_TIMEOUT, -6, "operation timed out")                                             \
    X(ERR_TRANSPORT, -7, "transport error")                                               \
    X(ERR_NO_MEMORY, -8, "out of memory")                                                 \
    X(ERR_UNSUPPORTED, -9, "operation not supported")                                     \
    X(ERR_SHUT_DOWN, -10, "dcomm has shut down")                                          \
    X(ERR_AUTH, -11, "authentication failed")                                             \
    X(ERR_INTERNAL, -12, "internal error")

typedef enum dcomm_status {
#define DCOMM_STATUS_ENUM_(name, value, text) DCOMM_##name = (value),
    DCOMM_STATUS_MAP(DCOMM_STATUS_ENUM_)
#undef DCOMM_STATUS_ENUM_
} dcomm_status_t;

typedef enum dcomm_dtype {
    DCOMM_UINT8 = 0,
    DCOMM_INT8 = 1,
    DCOMM_INT32 = 2,
    DCOMM_INT64 = 3,
    DCOMM_FLOAT16 = 4,
    DCOMM_BFLOAT16 = 5,
    DCOMM_FLOAT32 = 6,
    DCOMM_FLOAT64 = 7,
    DCOMM_DTYPE_COUNT = 8
} dcomm_dtype_t;

typedef enum dcomm_op {
    DCOMM_SUM = 0,
    DCOMM_AVG = 1, /* floating types only */
    DCOMM_MIN = 2,
    DCOMM_MAX = 3,
    DCOMM_PROD = 4,
    DCOMM_OP_COUNT = 5
} dcomm_op_t;

typedef int32_t dcomm_comm_t;   /* DCOMM_COMM_WORLD, or from dcomm_comm_create */
typedef uint64_t dcomm_handle_t; /* 0 is never a valid handle */

#define DCOMM_COMM_WORLD ((dcomm_comm_t)0)

/* ---- Life cycle ------------------------------------------------------------ */

/* Joins the job: reads identity from dlaunch's DCOMM_* variables, Open MPI's
 * OMPI_COMM_WORLD_* or Slurm's SLURM_* (single rank when none), connects to the
 * peers and starts the coordinator thread. Collective over all ranks. Calling it
 * again while initialized is a no-op returning DCOMM_OK. */
DCOMM_API dcomm_status_t dcomm_init(void);

/* Completes every outstanding handle with DCOMM_ERR_SHUT_DOWN, stops the
 * coordinator and frees everything. Handles become invalid. */
DCOMM_API dcomm_status_t dcomm_shutdown(void);

/* 1 between a successful dcomm_init and dcomm_shutdown, else 0. */
DCOMM_API int dcomm_is_initialized(void);

/* Elastic jobs (dlaunch --min-np / --max-np / --host-discovery-script): each
 * dcomm_init joins dlaunch's next membership round, with new rank numbers. A
 * collective that fails because a peer was lost returns DCOMM_ERR_PEER_LOST
 * naming it; the program then calls dcomm_shutdown and dcomm_init to carry on
 * with the survivors (and any workers added meanwhile).
 *
 * dlaunch's latest notice that its hosts changed since this rank's round was
 * formed: *stamp_p grows with each change (0: none since, or not an elastic
 * job); *result_p says how, as
 * Horovod's HostUpdateResult: 1 hosts removed, 2 added, 3 both. Local, not
 * collective: ranks agree on it by a broadcast from rank 0 (the Python
 * package's State.commit does that). */
DCOMM_API dcomm_status_t dcomm_hosts_updated(uint64_t *stamp_p, int *result_p);

/* Identity; -1 when not initialized. local_*: ranks on this host;
 * cross_rank: index of this rank's host, cross_size: number of hosts. */
DCOMM_API int dcomm_rank(void);
DCOMM_API int dcomm_size(void);
DCOMM_API int dcomm_local_rank(void);
DCOMM_API int dcomm_local_size(void);
DCOMM_API int dcomm_cross_rank(void);
DCOMM_API int dcomm_cross_size(void);

/* ---- Communicators (process sets) ------------------------------------------ */

/* Collective over all ranks of the job, each passing the same list of world
 * ranks (no duplicates); comm ranks follow the order given. Ranks not in the
 * list get a comm id too, but are not members. */
DCOMM_API dcomm_status_t dcomm_comm_create(const int *ranks, int nranks, dcomm_comm_t *comm_p);
/* DCOMM_COMM_WORLD and unknown ids are DCOMM_ERR_INVALID_ARG. */
DCOMM_API dcomm_status_t dcomm_comm_destroy(dcomm_comm_t comm);
/* This rank's rank in comm, -1 when not a member (or unknown comm). */
DCOMM_API int dcomm_comm_rank(dcomm_comm_t comm);
/* Number of members, -1 for an unknown comm. */
DCOMM_API int dcomm_comm_size(dcomm_comm_t comm);

/* ---- Collectives -------------------------------------------------------------
 * name identifies the tensor across ranks and must be unique among the in-flight
 * operations of the comm (else DCOMM_ERR_DUPLICATE_NAME). NULL means
 * "<op>.noname.<n>", n counted per comm, so ranks must then call in the same
 * order. Counts are in elements. On success *handle_p is set; the caller owns
 * the handle and must dcomm_release it after completion. */

/* Optional: the shape of the tensor that this thread's next *_async call
 * submits (ndims 0: a scalar; at most 64 dimensions, each >= 0). Ranks then
 * also have to agree on the shape, as Horovod requires: the whole shape for
 * allreduce, broadcast and reducescatter, all but the first dimension for
 * allgather and alltoall; a difference fails that tensor on every rank with
 * DCOMM_ERR_MISMATCH naming the shapes. Consumed by that call (also when it
 * fails); without it only the counts are compared. Copies dims. */
DCOMM_API dcomm_status_t dcomm_set_shape(int ndims, const int64_t *dims);

/* recvbuf[i] = op over ranks of sendbuf[i]. sendbuf == recvbuf: in place. */
DCOMM_API dcomm_status_t dcomm_allreduce_async(dcomm_comm_t comm, const char *name,
                                               const void *sendbuf, void *recvbuf, size_t count,
                                               dcomm_dtype_t dtype, dcomm_op_t op,
                                               dcomm_handle_t *handle_p);

/* buf on every rank becomes buf of comm rank root. */
DCOMM_API dcomm_status_t dcomm_broadcast_async(dcomm_comm_t comm, const char *name, void *buf,
                                               size_t count, dcomm_dtype_t dtype, int root,
                                               dcomm_handle_t *handle_p);

/* Concatenation of every rank's sendbuf in comm-rank order; count may differ
 * per rank. Output through dcomm_result. */
DCOMM_API dcomm_status_t dcomm_allgather_async(dcomm_comm_t comm, const char *name,
                                               const void *sendbuf, size_t count,
                                               dcomm_dtype_t dtype, dcomm_handle_t *handle_p);

/* sendbuf holds sendcounts[0] elements for comm rank 0, then sendcounts[1] for
 * rank 1, ... Output (what every rank sent to this one, in rank order) through
 * dcomm_result. */
DCOMM_API dcomm_status_t dcomm_alltoall_async(dcomm_comm_t comm, const char *name,
                                              const void *sendbuf, const size_t *sendcounts,
                                              dcomm_dtype_t dtype, dcomm_handle_t *handle_p);

/* Reduces count elements over ranks; comm rank r receives count/size elements,
 * the first count%size ranks one more. Output through dcomm_result. */
DCOMM_API dcomm_status_t dcomm_reducescatter_async(dcomm_comm_t comm, const char *name,
                                                   const void *sendbuf, size_t count,
                                                   dcomm_dtype_t dtype, dcomm_op_t op,
                                                   dcomm_handle_t *handle_p);

DCOMM_API dcomm_status_t dcomm_barrier_async(dcomm_comm_t comm, dcomm_handle_t *handle_p);

/* Uneven data: a joined rank contributes zeros until every rank has joined; the
 * result (one INT32 via dcomm_result) is the last rank to join. */
DCOMM_API dcomm_status_t dcomm_join_async(dcomm_comm_t comm, dcomm_handle_t *handle_p);

/* Chrome-trace timeline written by rank 0. */
DCOMM_API dcomm_status_t dcomm_timeline_start(const char *path);
DCOMM_API dcomm_status_t dcomm_timeline_stop(void);

/* ---- Handles ------------------------------------------------------------------ */

/* DCOMM_OK with *done_p 0 or 1 while the handle is valid; a released, zero or
 * unknown handle gives DCOMM_ERR_INVALID_ARG. */
DCOMM_API dcomm_status_t dcomm_poll(dcomm_handle_t handle, int *done_p);

/* Blocks until the handle completes; returns the operation's status (its
 * message through dcomm_last_error). The handle stays valid until released.
 * When ranks block in waits on tensors that can never all be submitted (e.g.
 * rank 0 on 'a', rank 1 on 'b') for DCOMM_DEADLOCK_TIMEOUT, those waits
 * return DCOMM_ERR_MISMATCH naming each rank's wait. */
DCOMM_API dcomm_status_t dcomm_wait(dcomm_handle_t handle);

/* Output of allgather/alltoall/reducescatter/join, owned by the handle until
 * dcomm_release. rank_counts_p (may be NULL) gets one count per comm rank.
 * The output is host memory, also when the inputs were device memory. */
DCOMM_API dcomm_status_t dcomm_result(dcomm_handle_t handle, const void **data_p,
                                      size_t *count_p, const size_t **rank_counts_p);

/* Frees the handle. Releasing a handle that is still in flight waits for it
 * first, so borrowed buffers are never touched after release returns. */
DCOMM_API dcomm_status_t dcomm_release(dcomm_handle_t handle);

/* ---- Blocking forms: async + wait + release ----------------------------------- */

DCOMM_API dcomm_status_t dcomm_allreduce(dcomm_comm_t comm, const char *name, const void *sendbuf,
                                         void *recvbuf, size_t count, dcomm_dtype_t dtype,
                                         dcomm_op_t op);
DCOMM_API dcomm_status_t dcomm_broadcast(dcomm_comm_t comm, const char *name, void *buf,
                                         size_t count, dcomm_dtype_t dtype, int root);
DCOMM_API dcomm_status_t dcomm_barrier(dcomm_comm_t comm);

/* ---- Errors and version ------------------------------------------------------- */

/* Static text for a status; "unknown status" for a value outside the table. */
DCOMM_API const char *dcomm_status_string(dcomm_status_t status);
/* This thread's last error with detail; "" when none. Valid until this thread's
 * next dcomm call. */
DCOMM_API const char *dcomm_last_error(void);
DCOMM_API const char *dcomm_version(void);

/* Size in bytes of one element of dtype; 0 for an unknown dtype. */
DCOMM_API size_t dcomm_dtype_size(dcomm_dtype_t dtype);

#ifdef __cplusplus
}
#endif

#endif /* DCOMM_H */
