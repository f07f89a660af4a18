/*
 * The public C ABI: argument checks, life cycle, handles. User threads only
 * validate, queue a request and get a handle; the coordinator thread does the
 * rest (coord.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core.h"
#include "dc_reduce.h"
#include "log.h"
#include "dc_time.h"

dc_state_t *dc_state;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

static dc_status_t not_initialized(void)
{
    return dc_error_set(DCOMM_ERR_NOT_INITIALIZED, "dcomm_init has not been called (or "
                                                   "dcomm_shutdown already was)");
}

static void state_free(dc_state_t *st)
{
    dc_bootstrap_close(st);
    dc_handle_table_free(st);
    dc_map_free(&st->inflight);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->done_cond);
    free(st);
}

DCOMM_API dcomm_status_t dcomm_init(void)
{
    dc_state_t *st;
    dc_status_t status;

    pthread_mutex_lock(&init_lock);
    if (dc_state != NULL) {
        pthread_mutex_unlock(&init_lock);
        return DCOMM_OK;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        pthread_mutex_unlock(&init_lock);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
    }
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->done_cond, NULL);
    st->events_fd = -1;
    DC_CHECK_GOTO(dc_config_load(), status, err);
    DC_CHECK_GOTO(dc_bootstrap_identity(st), status, err);
    dc_log_set_rank(st->rank);
    DC_CHECK_GOTO(dc_bootstrap_connect(st), status, err);
    st->comms[0].in_use = 1;
    st->comms[0].size = st->size;
    st->comms[0].rank = st->rank;
    DC_CHECK_GOTO(dc_coord_start(st), status, err);
    dc_state = st;
    pthread_mutex_unlock(&init_lock);
    DC_INFO("initialized: rank %d of %d, local %d of %d, host %d of %d", st->rank, st->size,
            st->local_rank, st->local_size, st->cross_rank, st->cross_size);
    return DCOMM_OK;
err:
    {
        char msg[1024];

        snprintf(msg, sizeof(msg), "%s", dc_error_get());
        DC_ERROR("dcomm_init failed: %s", msg);
        state_free(st);
        pthread_mutex_unlock(&init_lock);
        return dc_error_set(status, "%s", msg);
    }
}

DCOMM_API dcomm_status_t dcomm_shutdown(void)
{
    dc_state_t *st;

    pthread_mutex_lock(&init_lock);
    st = dc_state;
    if (st == NULL) {
        pthread_mutex_unlock(&init_lock);
        return not_initialized();
    }
    dc_coord_stop(st);
    /* Handles stay readable until now; the state goes away with them. */
    dc_state = NULL;
    state_free(st);
    pthread_mutex_unlock(&init_lock);
    return DCOMM_OK;
}

DCOMM_API int dcomm_is_initialized(void)
{
    return dc_state != NULL;
}

#define IDENTITY(fn, field)                                                                \
    DCOMM_API int fn(void)                                                                 \
    {                                                                                      \
        dc_state_t *st = dc_state;                                                         \
        return st != NULL ? st->field : -1;                                                \
    }
IDENTITY(dcomm_rank, rank)
IDENTITY(dcomm_size, size)
IDENTITY(dcomm_local_rank, local_rank)
IDENTITY(dcomm_local_size, local_size)
IDENTITY(dcomm_cross_rank, cross_rank)
IDENTITY(dcomm_cross_size, cross_size)

/* ---- communicators: only COMM_WORLD until process sets land ---------------- */

DCOMM_API dcomm_status_t dcomm_comm_create(const int *ranks, int nranks, dcomm_comm_t *comm_p)
{
    (void)ranks;
    (void)nranks;
    (void)comm_p;
    if (dc_state == NULL) {
        return not_initialized();
    }
    return dc_error_set(DCOMM_ERR_UNSUPPORTED, "dcomm_comm_create: process sets are not "
                                               "implemented yet");
}

DCOMM_API dcomm_status_t dcomm_comm_destroy(dcomm_comm_t comm)
{
    if (dc_state == NULL) {
        return not_initialized();
    }
    return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_comm_destroy: comm %d %s", (int)comm,
                        comm == DCOMM_COMM_WORLD ? "is COMM_WORLD, which cannot be destroyed"
                                                 : "is unknown");
}

DCOMM_API int dcomm_comm_rank(dcomm_comm_t comm)
{
    dc_state_t *st = dc_state;

    return (st != NULL && comm == DCOMM_COMM_WORLD) ? st->rank : -1;
}

DCOMM_API int dcomm_comm_size(dcomm_comm_t comm)
{
    dc_state_t *st = dc_state;

    return (st != NULL && comm == DCOMM_COMM_WORLD) ? st->size : -1;
}

/* ---- submission ---------------------------------------------------------------- */

static dc_status_t check_comm(dc_state_t *st, dcomm_comm_t comm, const char *fn)
{
    if (comm < 0 || comm >= DC_MAX_COMMS || !st->comms[comm].in_use) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: unknown comm %d", fn, (int)comm);
    }
    if (st->comms[comm].rank < 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: rank %d is not a member of comm %d", fn,
                            st->rank, (int)comm);
    }
    return DCOMM_OK;
}

static dc_status_t check_name(const char *name, const char *fn)
{
    if (name != NULL && (name[0] == '\0' || strlen(name) >= DC_WIRE_NAME_MAX - 16)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: name must be 1 to %d bytes", fn,
                            DC_WIRE_NAME_MAX - 17);
    }
    return DCOMM_OK;
}

/* Queues one request: the checks common to every collective, the name, the
 * duplicate check, the handle. */
static dc_status_t submit(dc_wire_req_t *req, const char *name, const void *sendbuf,
                          void *recvbuf, dcomm_handle_t *handle_p, const char *fn)
{
    dc_state_t *st = dc_state;
    char key[DC_WIRE_NAME_MAX + 16];
    dc_comm_t *comm;
    dc_op_t *op;
    dc_status_t status;

    if (st == NULL) {
        return not_initialized();
    }
    if (handle_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: handle_p is NULL", fn);
    }
    DC_CHECK_GOTO(check_name(name, fn), status, out);
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "%s: out of memory", fn);
    }
    pthread_mutex_lock(&st->lock);
    if (st->fatal_status < 0) {
        status = dc_error_set(st->fatal_status, "%s: %s", fn, st->fatal_msg);
        goto err_unlock;
    }
    if (atomic_load(&st->shutdown_requested)) {
        status = dc_error_set(DCOMM_ERR_SHUT_DOWN, "%s: dcomm is shutting down", fn);
        goto err_unlock;
    }
    DC_CHECK_GOTO(check_comm(st, req->comm, fn), status, err_unlock);
    comm = &st->comms[req->comm];
    if (name == NULL) {
        snprintf(req->name, sizeof(req->name), "%s.noname.%llu", dc_coll_name(req->coll),
                 (unsigned long long)++comm->noname_seq[req->coll]);
    } else {
        snprintf(req->name, sizeof(req->name), "%s", name);
    }
    dc_op_key(key, sizeof(key), req->comm, req->name);
    switch (dc_map_put(&st->inflight, key, op)) {
    case 0:
        status = dc_error_set(DCOMM_ERR_DUPLICATE_NAME,
                              "%s: tensor '%s' is already in flight on comm %d", fn, req->name,
                              (int)req->comm);
        goto err_unlock;
    case -1:
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "%s: out of memory", fn);
        goto err_unlock;
    }
    status = dc_handle_alloc(st, key, &op->handle);
    if (status < 0) {
        dc_map_remove(&st->inflight, key);
        goto err_unlock;
    }
    op->req = *req;
    op->sendbuf = sendbuf;
    op->recvbuf = recvbuf;
    op->submit_ns = dc_now_ns();
    *handle_p = op->handle;
    dc_coord_enqueue(st, op);
    dc_coord_wake(st);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
err_unlock:
    pthread_mutex_unlock(&st->lock);
    free(op);
out:
    return status;
}

static dc_status_t check_dtype_op(dcomm_dtype_t dtype, int op, const char *fn)
{
    if ((unsigned)dtype >= DCOMM_DTYPE_COUNT) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: unknown dtype %d", fn, (int)dtype);
    }
    if (op < 0) {
        return DCOMM_OK;
    }
    if ((unsigned)op >= DCOMM_OP_COUNT) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: unknown op %d", fn, op);
    }
    if (!dc_reduce_supported(dtype, (dcomm_op_t)op)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: op AVG needs a floating dtype, got "
                                                   "dtype %d", fn, (int)dtype);
    }
    return DCOMM_OK;
}

DCOMM_API dcomm_status_t dcomm_allreduce_async(dcomm_comm_t comm, const char *name,
                                               const void *sendbuf, void *recvbuf, size_t count,
                                               dcomm_dtype_t dtype, dcomm_op_t op,
                                               dcomm_handle_t *handle_p)
{
    static const char fn[] = "dcomm_allreduce_async";
    dc_wire_req_t req = {.coll = DC_COLL_ALLREDUCE, .comm = comm, .count = count};
    dc_status_t status = check_dtype_op(dtype, (int)op, fn);

    if (status < 0) {
        return status;
    }
    if (count > 0 && (sendbuf == NULL || recvbuf == NULL)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: %s is NULL with count %zu", fn,
                            sendbuf == NULL ? "sendbuf" : "recvbuf", count);
    }
    if (count > SIZE_MAX / 8) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: count %zu is too large", fn, count);
    }
    req.dtype = (uint8_t)dtype;
    req.op = (uint8_t)op;
    return submit(&req, name, sendbuf, recvbuf, handle_p, fn);
}

DCOMM_API dcomm_status_t dcomm_broadcast_async(dcomm_comm_t comm, const char *name, void *buf,
                                               size_t count, dcomm_dtype_t dtype, int root,
                                               dcomm_handle_t *handle_p)
{
    static const char fn[] = "dcomm_broadcast_async";
    dc_wire_req_t req = {.coll = DC_COLL_BROADCAST, .comm = comm, .count = count, .root = root};
    dc_status_t status = check_dtype_op(dtype, -1, fn);
    int size = dcomm_comm_size(comm);

    if (status < 0) {
        return status;
    }
    if (count > 0 && buf == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: buf is NULL with count %zu", fn, count);
    }
    if (size > 0 && (root < 0 || root >= size)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: root %d is outside comm %d of size %d",
                            fn, root, (int)comm, size);
    }
    req.dtype = (uint8_t)dtype;
    return submit(&req, name, buf, buf, handle_p, fn);
}

DCOMM_API dcomm_status_t dcomm_barrier_async(dcomm_comm_t comm, dcomm_handle_t *handle_p)
{
    dc_wire_req_t req = {.coll = DC_COLL_BARRIER, .comm = comm};

    return submit(&req, NULL, NULL, NULL, handle_p, "dcomm_barrier_async");
}

static dc_status_t unsupported(const char *fn)
{
    if (dc_state == NULL) {
        return not_initialized();
    }
    return dc_error_set(DCOMM_ERR_UNSUPPORTED, "%s is not implemented yet in this build of "
                                               "dcomm", fn);
}

DCOMM_API dcomm_status_t dcomm_allgather_async(dcomm_comm_t comm, const char *name,
                                               const void *sendbuf, size_t count,
                                               dcomm_dtype_t dtype, dcomm_handle_t *handle_p)
{
    (void)comm, (void)name, (void)sendbuf, (void)count, (void)dtype, (void)handle_p;
    return unsupported("dcomm_allgather_async");
}

DCOMM_API dcomm_status_t dcomm_alltoall_async(dcomm_comm_t comm, const char *name,
                                              const void *sendbuf, const size_t *sendcounts,
                                              dcomm_dtype_t dtype, dcomm_handle_t *handle_p)
{
    (void)comm, (void)name, (void)sendbuf, (void)sendcounts, (void)dtype, (void)handle_p;
    return unsupported("dcomm_alltoall_async");
}

DCOMM_API dcomm_status_t dcomm_reducescatter_async(dcomm_comm_t comm, const char *name,
                                                   const void *sendbuf, size_t count,
                                                   dcomm_dtype_t dtype, dcomm_op_t op,
                                                   dcomm_handle_t *handle_p)
{
    (void)comm, (void)name, (void)sendbuf, (void)count, (void)dtype, (void)op, (void)handle_p;
    return unsupported("dcomm_reducescatter_async");
}

DCOMM_API dcomm_status_t dcomm_join_async(dcomm_comm_t comm, dcomm_handle_t *handle_p)
{
    (void)comm, (void)handle_p;
    return unsupported("dcomm_join_async");
}

DCOMM_API dcomm_status_t dcomm_timeline_start(const char *path)
{
    (void)path;
    return unsupported("dcomm_timeline_start");
}

DCOMM_API dcomm_status_t dcomm_timeline_stop(void)
{
    return unsupported("dcomm_timeline_stop");
}

/* ---- handles --------------------------------------------------------------------- */

static dc_status_t bad_handle(dcomm_handle_t handle, const char *fn)
{
    return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: handle %#llx is not valid (zero, unknown "
                                               "or already released)",
                        fn, (unsigned long long)handle);
}

DCOMM_API dcomm_status_t dcomm_poll(dcomm_handle_t handle, int *done_p)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status = DCOMM_OK;

    if (st == NULL) {
        return not_initialized();
    }
    if (done_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_poll: done_p is NULL");
    }
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_lookup(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_poll");
    } else {
        *done_p = atomic_load(&slot->done);
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

DCOMM_API dcomm_status_t dcomm_wait(dcomm_handle_t handle)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status;

    if (st == NULL) {
        return not_initialized();
    }
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_wait_locked(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_wait");
    } else {
        status = slot->status;
        if (status < 0) {
            dc_error_set(status, "%s", slot->error ? slot->error : dcomm_status_string(status));
        }
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

DCOMM_API dcomm_status_t dcomm_result(dcomm_handle_t handle, const void **data_p,
                                      size_t *count_p, const size_t **rank_counts_p)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status = DCOMM_OK;

    if (st == NULL) {
        return not_initialized();
    }
    if (data_p == NULL || count_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_result: data_p and count_p are "
                                                   "required");
    }
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_lookup(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_result");
    } else if (!atomic_load(&slot->done)) {
        status = dc_error_set(DCOMM_INPROGRESS, "dcomm_result: the operation is not done");
    } else if (slot->status < 0) {
        status = dc_error_set(slot->status, "%s", slot->error ? slot->error : "failed");
    } else if (slot->result == NULL) {
        status = dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_result: this operation has no "
                                                     "result buffer (allreduce and broadcast "
                                                     "write into the user's buffer)");
    } else {
        *data_p = slot->result;
        *count_p = slot->result_count;
        if (rank_counts_p != NULL) {
            *rank_counts_p = slot->rank_counts;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

DCOMM_API dcomm_status_t dcomm_release(dcomm_handle_t handle)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status = DCOMM_OK;

    if (st == NULL) {
        return not_initialized();
    }
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_wait_locked(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_release");
    } else {
        dc_handle_free_slot(st, slot);
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

/* ---- blocking forms ------------------------------------------------------------- */

static dc_status_t wait_release(dc_status_t status, dcomm_handle_t handle)
{
    if (status < 0) {
        return status;
    }
    status = dcomm_wait(handle);
    {
        /* Keep the operation's message: release succeeds and would not touch it,
         * but copy defensively in case it does. */
        char msg[1536];

        snprintf(msg, sizeof(msg), "%s", dc_error_get());
        dcomm_release(handle);
        if (status < 0) {
            dc_error_set(status, "%s", msg);
        }
    }
    return status;
}

DCOMM_API dcomm_status_t dcomm_allreduce(dcomm_comm_t comm, const char *name, const void *sendbuf,
                                         void *recvbuf, size_t count, dcomm_dtype_t dtype,
                                         dcomm_op_t op)
{
    dcomm_handle_t h = 0;
    dc_status_t status = dcomm_allreduce_async(comm, name, sendbuf, recvbuf, count, dtype, op, &h);

    return wait_release(status, h);
}

DCOMM_API dcomm_status_t dcomm_broadcast(dcomm_comm_t comm, const char *name, void *buf,
                                         size_t count, dcomm_dtype_t dtype, int root)
{
    dcomm_handle_t h = 0;
    dc_status_t status = dcomm_broadcast_async(comm, name, buf, count, dtype, root, &h);

    return wait_release(status, h);
}

DCOMM_API dcomm_status_t dcomm_barrier(dcomm_comm_t comm)
{
    dcomm_handle_t h = 0;
    dc_status_t status = dcomm_barrier_async(comm, &h);

    return wait_release(status, h);
}
