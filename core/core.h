/*
 * Internal state of a dcomm process: identity, communicators, the user-request
 * queue, the handle table and the coordinator thread that owns all
 * communication.
 */
#ifndef DC_CORE_H
#define DC_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "dcomm.h"
#include "net.h"
#include "map.h"
#include "status.h"
#include "store.h"
#include "wire.h"

#define DC_MAX_COMMS 256

/* One collective a user submitted, queued for the coordinator. */
typedef struct dc_op {
    dc_wire_req_t req;    /* what is negotiated: name, coll, dtype, op, count, root, comm */
    const void *sendbuf;
    void *recvbuf;
    size_t *counts;       /* alltoall: elements sent to each comm rank (owned copy) */
    dcomm_handle_t handle;
    uint64_t submit_ns;
    struct dc_op *next;   /* queue link */
} dc_op_t;

static inline void dc_op_free(dc_op_t *op)
{
    if (op != NULL) {
        free(op->counts);
        free(op);
    }
}

/* A communicator (process set); world is id 0. */
typedef struct dc_comm {
    int in_use;
    int size;
    int rank;          /* this process's rank in the comm, -1 when not a member */
    int *ranks;        /* [size] world ranks in comm order */
    int *host_of;      /* [size] host index (0 .. nhosts-1) of each comm rank */
    int nhosts;
    uint64_t noname_seq[DC_COLL_COUNT]; /* numbering of NULL names, per op */
} dc_comm_t;

/* Handle table entry. */
typedef struct dc_handle_slot {
    uint32_t gen;          /* bumped on release, so stale handles are refused */
    int in_use;
    _Atomic int done;
    dc_status_t status;
    char *error;           /* message for dcomm_last_error when status < 0 */
    char key[DC_WIRE_NAME_MAX + 16]; /* "<comm>:<name>", for the in-flight set */
    dcomm_comm_t comm;
    void *result;          /* allgather/alltoall/reducescatter/join output */
    size_t result_count;
    size_t *rank_counts;
    int waiters;           /* user threads blocked in a wait on it (deadlock detection) */
} dc_handle_slot_t;

typedef struct dc_state {
    /* identity */
    int rank, size, local_rank, local_size, cross_rank, cross_size;
    int *host_of, *local_rank_of;
    dc_topo_t topo;
    char job_id[64];
    uint8_t secret[32];

    dc_store_t *store;
    int events_fd;         /* dlaunch's event channel, -1 when none */
    uint64_t hosts_stamp;  /* elastic: dlaunch's hosts notice when this round formed */
    dc_net_t *net;
    /* Device buffers: the cuda module's services (NULL when it is not loaded,
     * e.g. no GPU), and the CUDA device this process's device tensors are on
     * (the first one seen; -1 before). */
    const struct dc_cuda_ops *cuda;
    _Atomic int cuda_device;

    /* everything below is guarded by lock */
    pthread_mutex_t lock;
    pthread_cond_t done_cond;  /* handle completions */
    dc_comm_t comms[DC_MAX_COMMS];
    dc_op_t *queue_head, *queue_tail;  /* submitted, not yet taken by the coordinator */
    _Atomic int queue_nonempty;
    dc_handle_slot_t *slots;
    uint32_t nslots;
    uint32_t free_hint;
    /* keys ("<comm>:<name>") in flight, for DCOMM_ERR_DUPLICATE_NAME */
    dc_map_t inflight;
    /* Deadlock detection: user threads blocked in a wait on an unfinished
     * handle, and when a wait last began or ended (read by the coordinator
     * without the lock). */
    _Atomic int nwaiters;
    _Atomic uint64_t wait_change_ns;

    /* timeline: dcomm_timeline_start/stop ask the coordinator (1 start, 2 stop) */
    char timeline_path[512];
    _Atomic int timeline_cmd;

    /* life cycle */
    pthread_t coord_thread;
    struct coord *coord;       /* under lock: the running coordinator, for dc_coord_drive */
    _Atomic int shutdown_requested;
    _Atomic int coord_exited;
    dc_status_t fatal_status;  /* first fatal error, 0 when none */
    char fatal_msg[1024];
} dc_state_t;

extern dc_state_t *dc_state;

/* handle.c */
/* Lock held by the caller for alloc and lookup. */
dc_status_t dc_handle_alloc(dc_state_t *st, const char *key, dcomm_handle_t *handle_p);
dc_handle_slot_t *dc_handle_lookup(dc_state_t *st, dcomm_handle_t handle);
/* Completes a handle; msg is copied (NULL when status >= 0). Takes the lock. */
void dc_handle_complete(dc_state_t *st, dcomm_handle_t handle, dc_status_t status,
                        const char *msg);
/* Completes a handle with DCOMM_OK and a result buffer (allgather, alltoall,
 * reducescatter), which the handle owns from now on (freed on release). */
void dc_handle_complete_result(dc_state_t *st, dcomm_handle_t handle, void *result,
                               size_t count, size_t *rank_counts);
/* Waits (lock held) until the handle completes; NULL when it is not (or no
 * longer) a valid handle. */
dc_handle_slot_t *dc_handle_wait_locked(dc_state_t *st, dcomm_handle_t handle);
/* Lock held: this thread begins / ends a wait on handle (deadlock detection
 * counts it); begin returns 0 when the handle is already complete or unknown. */
int dc_handle_wait_begin(dc_state_t *st, dcomm_handle_t handle);
void dc_handle_wait_end(dc_state_t *st, dcomm_handle_t handle);
void dc_handle_free_slot(dc_state_t *st, dc_handle_slot_t *slot);
void dc_handle_table_free(dc_state_t *st);

/* "<comm>:<name>": the key of a tensor among the in-flight ones. */
void dc_op_key(char *buf, size_t cap, dcomm_comm_t comm, const char *name);

/* comm.c: the comm of a request (NULL when unknown; comms change only through
 * negotiated operations, so an entry holds while requests on it are in
 * flight), and a world rank's index in a comm (-1: not a member). */
const dc_comm_t *dc_comm_get(dc_state_t *st, int32_t id);
int dc_comm_rank_of(const dc_comm_t *cm, int world_rank);
/* Fills a new comm entry: members, this rank's place, hosts renumbered; and
 * empties one. */
dc_status_t dc_comm_fill(dc_state_t *st, dc_comm_t *cm, const int *ranks, int n);
void dc_comm_clear(dc_comm_t *cm);

/* handle.c: completes op's handle with status and "<collective> '<name>': msg",
 * and frees op. */
void dc_op_fail(dc_state_t *st, dc_op_t *op, dc_status_t status, const char *msg);

/* bootstrap.c: identity (environment), store, hosts, network */
/* 1 when a launcher's identity variables are set (dlaunch, mpirun, srun). */
int dc_bootstrap_launched(void);
dc_status_t dc_bootstrap_identity(dc_state_t *st);
dc_status_t dc_bootstrap_connect(dc_state_t *st);
void dc_bootstrap_close(dc_state_t *st);
/* Elastic jobs: dlaunch's latest notice that its hosts changed ("<stamp> <result>",
 * Horovod's HostUpdateResult bits: 1 removed, 2 added); *stamp_p 0 when none. */
dc_status_t dc_bootstrap_hosts_notice(dc_state_t *st, uint64_t *stamp_p, int *result_p);
/* When dlaunch has reported a rank's end, that is the cause to give, not what
 * this rank saw of it: text (this rank's view, cap bytes) becomes "<dlaunch's
 * word> (seen here as: <text>)". Returns the rank dlaunch said exited with an
 * error code (it published a cause of its own), else -1. */
int dc_bootstrap_launcher_cause(dc_state_t *st, dc_status_t status, char *text, size_t cap);

/* coord.c */
dc_status_t dc_coord_start(dc_state_t *st);
void dc_coord_stop(dc_state_t *st);
/* Queues op (takes ownership) / wakes the coordinator. Lock held by caller. */
void dc_coord_enqueue(dc_state_t *st, dc_op_t *op);
void dc_coord_wake(dc_state_t *st);
/* Lock held: work was queued. Wakes the coordinator thread, unless the
 * submitting thread waits on it at once and may run the cycles itself. */
void dc_coord_notify(dc_state_t *st, int wait_follows);
/* A thread about to sleep on handle runs the coordinator meanwhile when it
 * can (DCOMM_WAIT_PROGRESS; coord.c). Returns with the handle complete, or at
 * once; call without st->lock. */
void dc_coord_drive(dc_state_t *st, dcomm_handle_t handle);

#endif
