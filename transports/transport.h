/*
 * The transport interface: one const ops table per backend (self, shm, tcp built
 * in; mpi, ucx, nccl as modules). Collectives see only endpoints and requests.
 *
 * Message semantics, the same for every backend:
 *  - isend/irecv on an endpoint are point-to-point with one peer.
 *  - Per endpoint and direction, messages are delivered in send order and
 *    matched to receives in post order (strict FIFO, no wildcards). The tag of
 *    the message must equal the tag of the receive it matches, and its length
 *    must not exceed the receive's; otherwise the receive completes with
 *    DCOMM_ERR_INTERNAL (the ranks disagree on the schedule: a bug).
 *  - A message whose receive is not posted yet waits at the sender or in the
 *    transport; transports never allocate per message on the data path.
 *  - Zero-length messages are legal and still carry their tag.
 *  - Requests complete only inside progress(); a request's status is
 *    DCOMM_INPROGRESS until then, and DCOMM_OK or a negative status after.
 *  - A lost peer completes every request on its endpoints with
 *    DCOMM_ERR_PEER_LOST and a dc_error_set() message naming the rank.
 */
#ifndef DC_TRANSPORT_H
#define DC_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "dc_coll.h"
#include "futex.h"
#include "status.h"
#include "store.h"

#define DC_TRANSPORT_ABI_VERSION 3 /* 2: dc_request_t.expect, notify_failure;
                                      3: attr.shared_memory, no allreduce slot */

typedef struct dc_transport dc_transport_t; /* backend's instance, opaque */
typedef struct dc_endpoint dc_endpoint_t;
typedef struct dc_request dc_request_t;
typedef struct dc_transport_ops dc_transport_ops_t;

/* Which ranks share a host. Built before transports open (core/bootstrap). */
typedef struct dc_topo {
    int rank, size;
    int nhosts;
    const int *host_of;    /* [size] host index of each rank */
    const int *local_rank_of; /* [size] index of each rank among its host's ranks */
    int local_size;        /* ranks on this rank's host */
    int ncores;            /* cores usable by this process's host (hwloc) */
} dc_topo_t;

/* What a transport gets at open(). */
typedef struct dc_bootstrap {
    const dc_topo_t *topo;
    dc_store_t *store;            /* address exchange; keys are job-scoped */
    const uint8_t *secret;        /* DC_AUTH_SECRET_LEN bytes */
    const char *ifname;           /* DCOMM_IFNAME or NULL */
    const char *local_addr;       /* this host's address as peers reach it, or NULL */
    int timeout_ms;               /* DCOMM_TIMEOUT: deadline for any wait on a peer */
    int *peers;                   /* [npeers] ranks this transport will be asked to serve */
    int npeers;
    int tcp_encrypt;              /* DCOMM_TCP_ENCRYPT: seal tcp streams after the handshake */
    /* NULL, or a descriptor that turns readable once the job has failed
     * (dlaunch's event channel): a set-up wait for a peer that may never come
     * polls it too and gives up with DCOMM_ERR_PEER_LOST, leaving its data
     * unread (the caller reads the cause). */
    const int *abort_fd;
    uint64_t shm_ring_size;       /* DCOMM_SHM_RING_SIZE: bytes per shm ring, 0: automatic */
} dc_bootstrap_t;

/* Every backend's endpoint starts with this header so generic code can reach
 * the ops table. */
struct dc_endpoint {
    const dc_transport_ops_t *ops;
    dc_transport_t *tp;
    int peer; /* world rank */
};

/* A point-to-point request. Owned by the caller, who must keep it alive (and
 * not touch it) until status != DCOMM_INPROGRESS. */
struct dc_request {
    dc_status_t status; /* DCOMM_INPROGRESS, then DCOMM_OK or an error */
    size_t len;         /* bytes: posted length; on receive completion the actual */
    uint64_t tag;
    void *buf;
    size_t done;        /* backend use: bytes moved so far */
    dc_request_t *next; /* backend use: queue link */
    dc_endpoint_t *ep;  /* set by isend/irecv */
    size_t expect;      /* a receive posted with dc_ep_irecv: the length it must get
                         * (dc_net_wait checks); SIZE_MAX: any up to len */
};

/* Helpers for backends: start a request, and FIFO queues of requests linked
 * through req->next (head/tail pointers owned by the backend). */
static inline void dc_request_start(dc_request_t *req, dc_endpoint_t *ep, const void *buf,
                                    size_t len, uint64_t tag)
{
    req->status = DCOMM_INPROGRESS;
    req->buf = (void *)buf;
    req->len = len;
    req->tag = tag;
    req->done = 0;
    req->next = NULL;
    req->ep = ep;
    req->expect = SIZE_MAX;
}

static inline void dc_reqq_push(dc_request_t **head, dc_request_t **tail, dc_request_t *req)
{
    req->next = NULL;
    if (*tail != NULL) {
        (*tail)->next = req;
    } else {
        *head = req;
    }
    *tail = req;
}

static inline dc_request_t *dc_reqq_pop(dc_request_t **head, dc_request_t **tail)
{
    dc_request_t *req = *head;

    *head = req->next;
    if (*head == NULL) {
        *tail = NULL;
    }
    req->next = NULL;
    return req;
}

/* Attributes from query(). */
typedef struct dc_transport_attr {
    int usable;          /* 0: this backend cannot run here (reason logged) */
    int same_host_only;  /* shm: can serve only peers on this host */
    int priority;        /* higher wins among usable backends for a pair */
    int shared_memory;   /* peers map each other's memory (/proc/<pid>/fd): a host's
                          * segment group (collectives/shm_group.h) works over them */
    /* The link cost the algorithm selector starts from (collectives/select.c),
     * until calibration measures it: */
    double latency_us;   /* alpha: seconds per message, in microseconds */
    double bandwidth_gbs;/* 1/beta: 10^9 bytes per second */
} dc_transport_attr_t;

/* A whole collective that a backend runs natively over a group of ranks (the
 * mpi module: MPI_Iallreduce, MPI_Iallgatherv, MPI_Ibcast): DC_COLL_ALLREDUCE,
 * _BROADCAST or _ALLGATHER (counts[nranks]; sendbuf may be recvbuf + this
 * rank's offset). Counts in elements; buffers as in collectives/coll.h's
 * dc_coll_args_t. */
typedef struct dc_native_coll {
    dc_coll_t kind;       /* DC_COLL_ALLREDUCE, _BROADCAST or _ALLGATHER */
    const int *ranks;     /* [nranks] world ranks in group order; group rank i = ranks[i] */
    int nranks, rank;     /* this process is ranks[rank] */
    const void *sendbuf;  /* allreduce: == recvbuf for in place */
    void *recvbuf;
    size_t count;         /* allreduce, broadcast */
    dcomm_dtype_t dtype;
    dcomm_op_t op;        /* allreduce; never DCOMM_AVG (the caller sums and scales) */
    int root;             /* broadcast: group rank */
    const size_t *counts; /* allgather */
} dc_native_coll_t;

struct dc_transport_ops {
    uint32_t abi_version;
    const char *name; /* "self", "shm", "tcp" ... */

    /* Can this backend run here, and how good is it? */
    dc_status_t (*query)(const dc_topo_t *topo, dc_transport_attr_t *attr_p);
    /* Collective over the ranks in boot->peers plus this rank: every one of them
     * opens this transport at the same time (address exchange over the store). */
    dc_status_t (*open)(const dc_bootstrap_t *boot, dc_transport_t **tp_p);
    /* Endpoint for one peer of boot->peers. Called by the core for every peer,
     * in ascending rank order; may block up to timeout_ms. */
    dc_status_t (*connect)(dc_transport_t *tp, int peer, dc_endpoint_t **ep_p);

    /* Data path: post, then drive with progress(). */
    dc_status_t (*isend)(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                         dc_request_t *req);
    dc_status_t (*irecv)(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                         dc_request_t *req);
    /* Moves data, completes requests; returns how many events it handled
     * (bytes moved or requests completed count as events), never blocks. */
    int (*progress)(dc_transport_t *tp);

    /* Sleeping, so waiting ranks do not spin. A backend offers a file
     * descriptor to poll (tcp) and/or a doorbell that remote writers ring (shm).
     * Either may be absent (NULL op, or *fd_p = -1 / NULL). */
    dc_status_t (*wait_fd)(dc_transport_t *tp, int *fd_p);
    dc_doorbell_t *(*doorbell)(dc_transport_t *tp);

    /* Liveness: called while the core sleeps (every ~100 ms). Fails the requests
     * of peers that died (process gone, connection closed) and returns
     * DCOMM_ERR_PEER_LOST for the first such peer, else DCOMM_OK. Optional. */
    dc_status_t (*check)(dc_transport_t *tp);

    /* Closes every endpoint; pending requests complete with DCOMM_ERR_SHUT_DOWN. */
    void (*close)(dc_transport_t *tp);

    /* Optional, both or neither: native group collectives (dc_native_coll_t).
     * native_supported says, without side effects and alike on every rank,
     * whether native() can run this kind, dtype and op (0: no; the caller runs
     * another algorithm). native() runs it to completion, every rank of the
     * group calling it in the same order, within the backend's timeout. */
    int (*native_supported)(dc_coll_t kind, dcomm_dtype_t dtype, dcomm_op_t op);
    dc_status_t (*native)(dc_transport_t *tp, const dc_native_coll_t *nc);

    /* Optional: this process has failed (why names the rank and the cause) but
     * lives on; tell the peers now, so that their waits end with the real
     * cause rather than a timeout. Called before close(). */
    void (*notify_failure)(dc_transport_t *tp, const char *why);
};

/* Generic helpers over the ep header. */
static inline dc_status_t dc_ep_isend(dc_endpoint_t *ep, const void *buf, size_t len,
                                      uint64_t tag, dc_request_t *req)
{
    return ep->ops->isend(ep, buf, len, tag, req);
}

/* The library's receives are exact: every caller knows the length it will get
 * (sizes are agreed, or sent ahead), so dc_net_wait fails a shorter message
 * instead of completing it with the buffer's tail unwritten. Backends still
 * report the actual length (the contract above), for their own tests. */
static inline dc_status_t dc_ep_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                                      dc_request_t *req)
{
    dc_status_t status = ep->ops->irecv(ep, buf, len, tag, req);

    req->expect = len;
    return status;
}

/* Built-in backends. */
extern const dc_transport_ops_t dc_transport_self_ops;
extern const dc_transport_ops_t dc_transport_shm_ops;
extern const dc_transport_ops_t dc_transport_tcp_ops;

#endif
