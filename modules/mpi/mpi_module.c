/*
 * The mpi module (libdcomm-mpi.so): point-to-point over MPI for jobs started by
 * mpirun, and the broadcast the core uses to bootstrap such jobs without dlaunch.
 *
 * Threads: dcomm_init's thread opens the transport, then only the coordinator
 * thread calls MPI, never two threads at once, so MPI_THREAD_SERIALIZED is what
 * we ask for (and need, when the application initialized MPI itself).
 *
 * Matching: each endpoint's receives are posted with MPI_ANY_TAG from one peer
 * on our own communicator; MPI's non-overtaking rule then gives the FIFO order
 * of transport.h, and the tag carried (64 bits folded into 31) is checked.
 *
 * Native collectives (the "mpi" algorithms of collectives/coll_mpi.c): MPI's
 * nonblocking allreduce/allgatherv/bcast on our communicator, or on one made
 * per group of ranks with MPI_Comm_create_group (kept until the transport
 * closes), tested until done or DCOMM_TIMEOUT passes.
 */
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dc_time.h"

#include "module_shim.h"


typedef struct mpi_pending {
    MPI_Request mreq;
    dc_request_t *req;
    int is_recv;
} mpi_pending_t;

/* An MPI communicator over a group of ranks (in group order). */
typedef struct mpi_group_comm {
    int n;
    int *ranks;
    MPI_Comm comm;
} mpi_group_comm_t;

struct dc_transport {
    int rank, size;
    int timeout_ms;            /* DCOMM_TIMEOUT, bounds a native collective */
    int spin_limit;            /* MPI_Test polls before napping (as dc_net_wait) */
    mpi_group_comm_t *groups;  /* communicators of groups other than the world */
    int ngroups;
    int *icounts, *idispls;    /* [size] allgatherv arguments */
    dc_endpoint_t *eps;        /* [size] */
    mpi_pending_t *pend;       /* active requests, compacted after each progress */
    MPI_Request *mreqs;        /* [cap] scratch for MPI_Testsome */
    int *done_idx;             /* [cap] */
    MPI_Status *stats;         /* [cap] */
    int npend, cap;
};

static MPI_Comm dc_mpi_comm = MPI_COMM_NULL; /* our duplicate of MPI_COMM_WORLD */
static int tag_ub = 32767;
static int we_initialized;
static int thread_level = -1;

static dc_status_t mpi_error(int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;

    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) {
        len = 0;
    }
    text[len] = '\0';
    return dc_error_set(DCOMM_ERR_TRANSPORT, "mpi: %s failed: %s", what, text);
}

static void mpi_finalize_at_exit(void)
{
    int finalized = 0;

    MPI_Finalized(&finalized);
    if (!finalized) {
        if (dc_mpi_comm != MPI_COMM_NULL) {
            MPI_Comm_free(&dc_mpi_comm);
        }
        MPI_Finalize();
    }
}

static int mpi_launched_by(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMIX_RANK") != NULL;
}

/* MPI_Init_thread once (unless the application did), and our communicator. */
static dc_status_t mpi_ensure(void)
{
    int inited = 0, finalized = 0, rc, *ub = NULL, flag = 0;

    if (dc_mpi_comm != MPI_COMM_NULL) {
        return DCOMM_OK;
    }
    MPI_Finalized(&finalized);
    if (finalized) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "mpi: MPI was already finalized");
    }
    MPI_Initialized(&inited);
    if (!inited) {
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &thread_level);
        if (rc != MPI_SUCCESS) {
            return mpi_error(rc, "MPI_Init_thread");
        }
        we_initialized = 1;
        /* At exit, not at dcomm_shutdown: MPI cannot be initialized twice, and
         * dcomm may be. */
        atexit(mpi_finalize_at_exit);
    } else {
        MPI_Query_thread(&thread_level);
    }
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &dc_mpi_comm);
    if (rc != MPI_SUCCESS) {
        return mpi_error(rc, "MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(dc_mpi_comm, MPI_ERRORS_RETURN);
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
    if (flag && ub != NULL) {
        tag_ub = *ub;
    }
    DC_DEBUG("mpi: initialized (%s), thread level %d, tag ub %d",
             we_initialized ? "by dcomm" : "by the application", thread_level, tag_ub);
    return DCOMM_OK;
}

static dc_status_t mpi_boot_bcast(void *buf, size_t len, int root)
{
    dc_status_t status = mpi_ensure();
    int rc;

    if (status < 0) {
        return status;
    }
    if (len > INT_MAX) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "mpi: broadcast of %zu bytes", len);
    }
    rc = MPI_Bcast(buf, (int)len, MPI_BYTE, root, dc_mpi_comm);
    return rc == MPI_SUCCESS ? DCOMM_OK : mpi_error(rc, "MPI_Bcast (bootstrap)");
}

/* The 64-bit tag folded into MPI's tag space (at least 15 bits by the standard;
 * Open MPI gives 31). Equal tags fold equally; the check is a consistency guard. */
static int tag_fold(uint64_t tag)
{
    uint64_t ub = (uint64_t)tag_ub + 1, t = tag;

    t ^= t >> 31;
    t ^= t >> 17;
    return (int)(t % ub);
}

static dc_status_t mpi_query(const dc_topo_t *topo, dc_transport_attr_t *attr_p)
{
    const char *size = getenv("OMPI_COMM_WORLD_SIZE"), *rank = getenv("OMPI_COMM_WORLD_RANK");
    int inited = 0, level = MPI_THREAD_SERIALIZED;

    *attr_p = (dc_transport_attr_t){.usable = 0};
    if (size == NULL || rank == NULL || atoi(size) != topo->size || atoi(rank) != topo->rank) {
        DC_DEBUG("mpi: not usable: this job was not started by mpirun with ranks as dcomm's");
        return DCOMM_OK;
    }
    MPI_Initialized(&inited);
    if (inited) {
        MPI_Query_thread(&level);
    }
    if (level < MPI_THREAD_SERIALIZED) {
        DC_INFO("mpi: not usable: the application initialized MPI with thread level %d; "
                "dcomm's coordinator thread needs MPI_THREAD_SERIALIZED",
                level);
        return DCOMM_OK;
    }
    *attr_p = (dc_transport_attr_t){.usable = 1, .same_host_only = 0, .priority = 30,
                                    .latency_us = 5.0, .bandwidth_gbs = 5.0};
    return DCOMM_OK;
}

static void mpi_tp_free(dc_transport_t *tp)
{
    for (int i = 0; i < tp->ngroups; i++) {
        MPI_Comm_free(&tp->groups[i].comm);
        free(tp->groups[i].ranks);
    }
    free(tp->groups);
    free(tp->icounts);
    free(tp->idispls);
    free(tp->eps);
    free(tp->pend);
    free(tp->mreqs);
    free(tp->done_idx);
    free(tp->stats);
    free(tp);
}

static const dc_transport_ops_t mpi_transport_ops;

static dc_status_t mpi_open(const dc_bootstrap_t *boot, dc_transport_t **tp_p)
{
    int size = 0, rank = -1;
    dc_status_t status = mpi_ensure();
    dc_transport_t *tp;

    if (status < 0) {
        return status;
    }
    if (thread_level < MPI_THREAD_SERIALIZED) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "mpi: thread level %d < SERIALIZED",
                            thread_level);
    }
    MPI_Comm_size(dc_mpi_comm, &size);
    MPI_Comm_rank(dc_mpi_comm, &rank);
    if (size != boot->topo->size || rank != boot->topo->rank) {
        return dc_error_set(DCOMM_ERR_TRANSPORT,
                            "mpi: MPI_COMM_WORLD is rank %d of %d but dcomm is rank %d of %d",
                            rank, size, boot->topo->rank, boot->topo->size);
    }
    tp = calloc(1, sizeof(*tp));
    if (tp == NULL || (tp->eps = calloc((size_t)size, sizeof(*tp->eps))) == NULL ||
        (tp->icounts = calloc((size_t)size, sizeof(int))) == NULL ||
        (tp->idispls = calloc((size_t)size, sizeof(int))) == NULL) {
        if (tp != NULL) {
            free(tp->icounts);
            free(tp->eps);
        }
        free(tp);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "mpi: out of memory");
    }
    tp->rank = rank;
    tp->size = size;
    tp->timeout_ms = boot->timeout_ms;
    tp->spin_limit = boot->topo->local_size <= boot->topo->ncores ? 20000 : 20;
    *tp_p = tp;
    return DCOMM_OK;
}

static dc_status_t mpi_connect(dc_transport_t *tp, int peer, dc_endpoint_t **ep_p)
{
    if (peer < 0 || peer >= tp->size) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "mpi: no rank %d in a job of %d", peer,
                            tp->size);
    }
    tp->eps[peer] = (dc_endpoint_t){.ops = &mpi_transport_ops, .tp = tp, .peer = peer};
    *ep_p = &tp->eps[peer];
    return DCOMM_OK;
}

/* Grows the pending tables geometrically: no allocation in the steady state. */
static dc_status_t pend_reserve(dc_transport_t *tp)
{
    int cap = tp->cap ? tp->cap * 2 : 64;
    void *a, *b, *c, *d;

    if (tp->npend < tp->cap) {
        return DCOMM_OK;
    }
    a = realloc(tp->pend, (size_t)cap * sizeof(*tp->pend));
    if (a != NULL) {
        tp->pend = a;
    }
    b = realloc(tp->mreqs, (size_t)cap * sizeof(*tp->mreqs));
    if (b != NULL) {
        tp->mreqs = b;
    }
    c = realloc(tp->done_idx, (size_t)cap * sizeof(*tp->done_idx));
    if (c != NULL) {
        tp->done_idx = c;
    }
    d = realloc(tp->stats, (size_t)cap * sizeof(*tp->stats));
    if (d != NULL) {
        tp->stats = d;
    }
    if (a == NULL || b == NULL || c == NULL || d == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "mpi: out of memory for %d requests", cap);
    }
    tp->cap = cap;
    return DCOMM_OK;
}

static dc_status_t mpi_post(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                            dc_request_t *req, int is_recv)
{
    dc_transport_t *tp = ep->tp;
    mpi_pending_t *p;
    dc_status_t status;
    int rc;

    if (len > INT_MAX) {
        return dc_error_set(DCOMM_ERR_UNSUPPORTED,
                            "mpi: rank %d: message of %zu bytes to/from rank %d exceeds "
                            "MPI's int count (2 GiB); use a smaller DCOMM_FUSION_THRESHOLD or "
                            "another transport",
                            tp->rank, len, ep->peer);
    }
    status = pend_reserve(tp);
    if (status < 0) {
        return status;
    }
    dc_request_start(req, ep, buf, len, tag);
    p = &tp->pend[tp->npend];
    p->req = req;
    p->is_recv = is_recv;
    if (is_recv) {
        rc = MPI_Irecv(buf, (int)len, MPI_BYTE, ep->peer, MPI_ANY_TAG, dc_mpi_comm, &p->mreq);
    } else {
        rc = MPI_Isend(buf, (int)len, MPI_BYTE, ep->peer, tag_fold(tag), dc_mpi_comm, &p->mreq);
    }
    if (rc != MPI_SUCCESS) {
        return mpi_error(rc, is_recv ? "MPI_Irecv" : "MPI_Isend");
    }
    tp->npend++;
    return DCOMM_OK;
}

static dc_status_t mpi_isend(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                             dc_request_t *req)
{
    return mpi_post(ep, (void *)buf, len, tag, req, 0);
}

static dc_status_t mpi_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                             dc_request_t *req)
{
    return mpi_post(ep, buf, len, tag, req, 1);
}

static void pend_complete(dc_transport_t *tp, mpi_pending_t *p, MPI_Status *st)
{
    dc_request_t *req = p->req;
    int count = 0;

    if (st->MPI_ERROR != MPI_SUCCESS) {
        req->status = mpi_error(st->MPI_ERROR, p->is_recv ? "receive" : "send");
        if (p->is_recv) {
            req->status = dc_error_set(DCOMM_ERR_INTERNAL,
                                       "mpi: rank %d: receive of %zu bytes (tag 0x%llx) from "
                                       "rank %d failed: %s (a longer message than posted?)",
                                       tp->rank, req->len, (unsigned long long)req->tag,
                                       req->ep->peer, dc_error_get());
        }
        return;
    }
    if (p->is_recv) {
        MPI_Get_count(st, MPI_BYTE, &count);
        if (st->MPI_TAG != tag_fold(req->tag)) {
            req->status = dc_error_set(DCOMM_ERR_INTERNAL,
                                       "mpi: rank %d: message from rank %d carries tag %d, "
                                       "the receive expects 0x%llx (%d): schedules disagree",
                                       tp->rank, req->ep->peer, st->MPI_TAG,
                                       (unsigned long long)req->tag, tag_fold(req->tag));
            return;
        }
        req->len = (size_t)count;
    }
    req->done = req->len;
    req->status = DCOMM_OK;
}

static int mpi_progress(dc_transport_t *tp)
{
    int ndone = 0, rc, keep = 0;

    if (tp->npend == 0) {
        return 0;
    }
    for (int i = 0; i < tp->npend; i++) {
        tp->mreqs[i] = tp->pend[i].mreq;
    }
    rc = MPI_Testsome(tp->npend, tp->mreqs, &ndone, tp->done_idx, tp->stats);
    if (ndone == MPI_UNDEFINED || ndone == 0) {
        return 0;
    }
    for (int k = 0; k < ndone; k++) {
        int i = tp->done_idx[k];

        if (rc == MPI_SUCCESS) {
            tp->stats[k].MPI_ERROR = MPI_SUCCESS; /* only valid with MPI_ERR_IN_STATUS */
        }
        pend_complete(tp, &tp->pend[i], &tp->stats[k]);
        tp->pend[i].req = NULL;
    }
    for (int i = 0; i < tp->npend; i++) {
        if (tp->pend[i].req != NULL) {
            tp->pend[keep] = tp->pend[i];
            tp->pend[keep++].mreq = tp->mreqs[i];
        }
    }
    tp->npend = keep;
    return ndone;
}

static void mpi_close(dc_transport_t *tp)
{
    for (int i = 0; i < tp->npend; i++) {
        mpi_pending_t *p = &tp->pend[i];

        if (p->is_recv) {
            MPI_Cancel(&p->mreq);
            MPI_Wait(&p->mreq, MPI_STATUS_IGNORE);
        } else {
            MPI_Request_free(&p->mreq); /* completes in the background */
        }
        p->req->status = dc_error_set(DCOMM_ERR_SHUT_DOWN, "mpi: transport closed");
    }
    mpi_tp_free(tp);
}

/* ---- native collectives ------------------------------------------------- */

/* MPI's type for a dtype; MPI_DATATYPE_NULL for float16/bfloat16 (none in MPI). */
static MPI_Datatype mpi_dtype(dcomm_dtype_t dt)
{
    switch (dt) {
    case DCOMM_UINT8: return MPI_UINT8_T;
    case DCOMM_INT8: return MPI_INT8_T;
    case DCOMM_INT32: return MPI_INT32_T;
    case DCOMM_INT64: return MPI_INT64_T;
    case DCOMM_FLOAT32: return MPI_FLOAT;
    case DCOMM_FLOAT64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;
    }
}

/* MPI_OP_NULL for AVG (the caller sums and scales) and unknown ops. */
static MPI_Op mpi_op(dcomm_op_t op)
{
    switch (op) {
    case DCOMM_SUM: return MPI_SUM;
    case DCOMM_MIN: return MPI_MIN;
    case DCOMM_MAX: return MPI_MAX;
    case DCOMM_PROD: return MPI_PROD;
    default: return MPI_OP_NULL;
    }
}

static int mpi_native_supported(dc_coll_t kind, dcomm_dtype_t dtype, dcomm_op_t op)
{
    if (mpi_dtype(dtype) == MPI_DATATYPE_NULL) {
        return 0;
    }
    return kind != DC_COLL_ALLREDUCE || mpi_op(op) != MPI_OP_NULL;
}

/* The communicator of a group: ours for the whole world in rank order, else one
 * made on first use (collective over the group's ranks, which all get here
 * for the same collective) and kept until the transport closes. */
static dc_status_t group_comm(dc_transport_t *tp, const dc_native_coll_t *nc, MPI_Comm *comm_p)
{
    int world = nc->nranks == tp->size, rc;
    MPI_Group all, sub;
    mpi_group_comm_t *g;
    void *grown;

    for (int i = 0; world && i < nc->nranks; i++) {
        world = nc->ranks[i] == i;
    }
    if (world) {
        *comm_p = dc_mpi_comm;
        return DCOMM_OK;
    }
    for (int i = 0; i < tp->ngroups; i++) {
        g = &tp->groups[i];
        if (g->n == nc->nranks && memcmp(g->ranks, nc->ranks, sizeof(int) * (size_t)g->n) == 0) {
            *comm_p = g->comm;
            return DCOMM_OK;
        }
    }
    grown = realloc(tp->groups, sizeof(*tp->groups) * (size_t)(tp->ngroups + 1));
    if (grown == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "mpi: out of memory for a communicator");
    }
    tp->groups = grown;
    g = &tp->groups[tp->ngroups];
    g->n = nc->nranks;
    g->ranks = malloc(sizeof(int) * (size_t)g->n);
    if (g->ranks == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "mpi: out of memory for a communicator");
    }
    memcpy(g->ranks, nc->ranks, sizeof(int) * (size_t)g->n);
    MPI_Comm_group(dc_mpi_comm, &all);
    rc = MPI_Group_incl(all, g->n, g->ranks, &sub);
    if (rc == MPI_SUCCESS) {
        rc = MPI_Comm_create_group(dc_mpi_comm, sub, 0, &g->comm);
        MPI_Group_free(&sub);
    }
    MPI_Group_free(&all);
    if (rc != MPI_SUCCESS) {
        free(g->ranks);
        return mpi_error(rc, "MPI_Comm_create_group");
    }
    MPI_Comm_set_errhandler(g->comm, MPI_ERRORS_RETURN);
    DC_DEBUG("mpi: rank %d: communicator for a group of %d ranks", tp->rank, g->n);
    tp->ngroups++;
    *comm_p = g->comm;
    return DCOMM_OK;
}

/* Tests mreq until done (MPI progresses the collective only inside the tests):
 * spins, yielding now and then, while ranks do not outnumber cores, else only
 * briefly, then naps 20 us at a time, as dc_net_wait does for a transport
 * without a file descriptor; gives up after the transport's timeout. */
static dc_status_t native_wait(dc_transport_t *tp, MPI_Request *mreq, const char *what, int n)
{
    uint64_t deadline = dc_deadline_ms(tp->timeout_ms);
    struct timespec nap = {.tv_sec = 0, .tv_nsec = 20000};
    int done = 0, rc;

    for (uint64_t polls = 0;; polls++) {
        rc = MPI_Test(mreq, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            return mpi_error(rc, what);
        }
        if (done) {
            return DCOMM_OK;
        }
        if ((polls & 63) == 0 && dc_now_ns() > deadline) {
            return dc_error_set(DCOMM_ERR_TIMEOUT,
                                "mpi: rank %d: %s over %d ranks not done after %d ms "
                                "(DCOMM_TIMEOUT)", tp->rank, what, n, tp->timeout_ms);
        }
        if (polls >= (uint64_t)tp->spin_limit) {
            nanosleep(&nap, NULL);
        } else if ((polls & 63) == 63) {
            sched_yield();
        }
    }
}

/* Posts MPI_Iallgatherv; counts and displacements must fit MPI's int. */
static dc_status_t native_allgatherv(dc_transport_t *tp, const dc_native_coll_t *nc,
                                     MPI_Datatype type, MPI_Comm comm, MPI_Request *mreq,
                                     int *rc_p)
{
    size_t total = 0;
    const char *mine;
    int tsize = 0;

    for (int i = 0; i < nc->nranks; i++) {
        if (nc->counts[i] > (size_t)INT_MAX - total) {
            return dc_error_set(DCOMM_ERR_UNSUPPORTED, "mpi: rank %d: allgather of more than "
                                "INT_MAX elements", tp->rank);
        }
        tp->idispls[i] = (int)total;
        tp->icounts[i] = (int)nc->counts[i];
        total += nc->counts[i];
    }
    MPI_Type_size(type, &tsize);
    mine = (const char *)nc->recvbuf + (size_t)tp->idispls[nc->rank] * (size_t)tsize;
    *rc_p = MPI_Iallgatherv(mine == nc->sendbuf ? MPI_IN_PLACE : nc->sendbuf,
                            tp->icounts[nc->rank], type, nc->recvbuf, tp->icounts, tp->idispls,
                            type, comm, mreq);
    return DCOMM_OK;
}

static dc_status_t mpi_native(dc_transport_t *tp, const dc_native_coll_t *nc)
{
    MPI_Datatype type = mpi_dtype(nc->dtype);
    MPI_Request mreq;
    const char *what = "MPI_Iallreduce";
    MPI_Comm comm = MPI_COMM_NULL;
    dc_status_t status;
    int rc = MPI_SUCCESS;

    if (!mpi_native_supported(nc->kind, nc->dtype, nc->op) || nc->nranks > tp->size ||
        (nc->kind != DC_COLL_ALLGATHER && nc->count > INT_MAX)) {
        return dc_error_set(DCOMM_ERR_UNSUPPORTED, "mpi: rank %d: no native collective for "
                            "kind %d, dtype %d, op %d, %zu elements", tp->rank, (int)nc->kind,
                            (int)nc->dtype, (int)nc->op, nc->count);
    }
    status = group_comm(tp, nc, &comm);
    if (status < 0) {
        return status;
    }
    switch (nc->kind) {
    case DC_COLL_ALLREDUCE:
        rc = MPI_Iallreduce(nc->sendbuf == nc->recvbuf ? MPI_IN_PLACE : nc->sendbuf,
                            nc->recvbuf, (int)nc->count, type, mpi_op(nc->op), comm, &mreq);
        break;
    case DC_COLL_BROADCAST:
        what = "MPI_Ibcast";
        rc = MPI_Ibcast(nc->recvbuf, (int)nc->count, type, nc->root, comm, &mreq);
        break;
    case DC_COLL_ALLGATHER:
    default:
        what = "MPI_Iallgatherv";
        status = native_allgatherv(tp, nc, type, comm, &mreq, &rc);
        if (status < 0) {
            return status;
        }
        break;
    }
    if (rc != MPI_SUCCESS) {
        return mpi_error(rc, what);
    }
    return native_wait(tp, &mreq, what, nc->nranks);
}

static const dc_transport_ops_t mpi_transport_ops = {
    .abi_version = DC_TRANSPORT_ABI_VERSION,
    .name = "mpi",
    .query = mpi_query,
    .open = mpi_open,
    .connect = mpi_connect,
    .isend = mpi_isend,
    .irecv = mpi_irecv,
    .progress = mpi_progress,
    .close = mpi_close,
    .native_supported = mpi_native_supported,
    .native = mpi_native,
};

static dc_status_t mpi_module_init(const dc_module_host_t *host)
{
    dc_module_shim_init(host);
    return DCOMM_OK;
}

__attribute__((visibility("default"))) const dc_module_t dcomm_module_v1_mpi = {
    .abi_version = DC_MODULE_ABI_VERSION,
    .name = "mpi",
    .init = mpi_module_init,
    .transport = &mpi_transport_ops,
    .launched_by = mpi_launched_by,
    .boot_bcast = mpi_boot_bcast,
};
