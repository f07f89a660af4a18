/*
 * Submission through the public C ABI: argument checks (a refused call says
 * which argument), then one request queued for the coordinator and a handle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"
#include "module.h"

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
/* This thread's dcomm_set_shape for its next submission. */
static _Thread_local struct {
    int set;
    uint8_t ndims;
    uint64_t dims[DC_WIRE_DIMS_MAX];
} next_shape;

DCOMM_API dcomm_status_t dcomm_set_shape(int ndims, const int64_t *dims)
{
    uint64_t tail = 1;

    next_shape.set = 0;
    if (ndims < 0 || ndims > DC_WIRE_NDIMS_MAX || (ndims > 0 && dims == NULL)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_set_shape: ndims %d must be 0 to %d, "
                            "with dims non-NULL when positive", ndims, DC_WIRE_NDIMS_MAX);
    }
    for (int i = 0; i < ndims; i++) {
        if (dims[i] < 0) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_set_shape: dimension %d is %lld",
                                i, (long long)dims[i]);
        }
        if (i < DC_WIRE_DIMS_MAX - 1 || ndims <= DC_WIRE_DIMS_MAX) {
            next_shape.dims[i] = (uint64_t)dims[i];
        } else if (__builtin_mul_overflow(tail, (uint64_t)dims[i], &tail)) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_set_shape: the dimensions' "
                                "product overflows");
        }
    }
    if (ndims > DC_WIRE_DIMS_MAX) {
        next_shape.dims[DC_WIRE_DIMS_MAX - 1] = tail;
    }
    next_shape.ndims = (uint8_t)ndims;
    next_shape.set = 1;
    return DCOMM_OK;
}

/* Moves this thread's dcomm_set_shape into req (unknown when none). */
static void take_shape(dc_wire_req_t *req)
{
    req->has_shape = 0;
    if (next_shape.set) {
        req->has_shape = 1;
        req->ndims = next_shape.ndims;
        memcpy(req->dims, next_shape.dims, sizeof(req->dims));
        next_shape.set = 0;
    }
}

dc_status_t dc_api_submit(dc_wire_req_t *req, const char *name, const void *sendbuf,
                          void *recvbuf, size_t *counts, dcomm_handle_t *handle_p,
                          const char *fn)
{
    dc_state_t *st = dc_state;
    char key[DC_WIRE_NAME_MAX + 16];
    dc_comm_t *comm;
    dc_op_t *op;
    dc_status_t status;

    if (st == NULL) {
        free(counts);
        return dc_api_not_initialized();
    }
    if (handle_p == NULL) {
        status = dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: handle_p is NULL", fn);
        goto out;
    }
    DC_CHECK_GOTO(check_name(name, fn), status, out);
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "%s: out of memory", fn);
        goto out;
    }
    op->counts = counts;
    counts = NULL;
    pthread_mutex_lock(&st->lock);
    if (st->fatal_status == DCOMM_ERR_SHUT_DOWN) {
        status = dc_error_set(DCOMM_ERR_SHUT_DOWN, "%s: dcomm has shut down: %s", fn,
                              st->fatal_msg);
        goto err_unlock;
    }
    if (st->fatal_status < 0) {
        status = dc_error_set(DCOMM_ERR_SHUT_DOWN, "%s: dcomm stopped after an earlier error "
                              "(%s): %s", fn, dcomm_status_string(st->fatal_status),
                              st->fatal_msg);
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
    dc_coord_notify(st, dc_api_wait_follows);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
err_unlock:
    pthread_mutex_unlock(&st->lock);
    dc_op_free(op);
out:
    free(counts);
    return status;
}

/* The kind of one user buffer (DC_WIRE_HOST, _DEVICE, or _NOBUF for NULL).
 * Only asked of the cuda module when it is loaded; without it every buffer is
 * host memory, at no cost. Device buffers must all be on one device. */
static dc_status_t buf_kind(dc_state_t *st, const void *buf, const char *arg, const char *fn,
                            uint8_t *kind_p)
{
    int dev, expected = -1;

    if (buf == NULL) {
        *kind_p = DC_WIRE_NOBUF;
        return DCOMM_OK;
    }
    dev = st->cuda->device_of(buf);
    if (dev < 0) {
        *kind_p = DC_WIRE_HOST;
        return DCOMM_OK;
    }
    if (!atomic_compare_exchange_strong(&st->cuda_device, &expected, dev) && expected != dev) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: %s is on CUDA device %d, but this "
                            "process's device tensors are on device %d (one device per "
                            "process)", fn, arg, dev, expected);
    }
    *kind_p = DC_WIRE_DEVICE;
    return DCOMM_OK;
}

/* Sets req->device from the call's buffers (b may be NULL): host or device,
 * never a mix of the two. */
static dc_status_t classify(dc_wire_req_t *req, const void *a, const char *a_name, const void *b,
                            const char *b_name, const char *fn)
{
    dc_state_t *st = dc_state;
    uint8_t ka = DC_WIRE_HOST, kb = DC_WIRE_NOBUF;
    dc_status_t status;

    if (st == NULL || st->cuda == NULL) {
        req->device = a == NULL && b == NULL ? DC_WIRE_NOBUF : DC_WIRE_HOST;
        return DCOMM_OK;
    }
    status = buf_kind(st, a, a_name, fn, &ka);
    if (status == DCOMM_OK && b_name != NULL) {
        status = buf_kind(st, b, b_name, fn, &kb);
    }
    if (status < 0) {
        return status;
    }
    if (ka != DC_WIRE_NOBUF && kb != DC_WIRE_NOBUF && ka != kb) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: %s is %s memory but %s is %s memory "
                            "(one call takes buffers of one kind)", fn, a_name,
                            ka == DC_WIRE_DEVICE ? "device" : "host", b_name,
                            kb == DC_WIRE_DEVICE ? "device" : "host");
    }
    req->device = ka != DC_WIRE_NOBUF ? ka : kb;
    return DCOMM_OK;
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

    take_shape(&req);

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
    DC_CHECK_GOTO(classify(&req, sendbuf, "sendbuf", recvbuf, "recvbuf", fn), status, out);
    req.dtype = (uint8_t)dtype;
    req.op = (uint8_t)op;
    return dc_api_submit(&req, name, sendbuf, recvbuf, NULL, handle_p, fn);
out:
    return status;
}

DCOMM_API dcomm_status_t dcomm_broadcast_async(dcomm_comm_t comm, const char *name, void *buf,
                                               size_t count, dcomm_dtype_t dtype, int root,
                                               dcomm_handle_t *handle_p)
{
    static const char fn[] = "dcomm_broadcast_async";
    dc_wire_req_t req = {.coll = DC_COLL_BROADCAST, .comm = comm, .count = count, .root = root};
    dc_status_t status = check_dtype_op(dtype, -1, fn);
    int size = dcomm_comm_size(comm);

    take_shape(&req);

    if (status < 0) {
        return status;
    }
    if (count > 0 && buf == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: buf is NULL with count %zu", fn, count);
    }
    if (count > SIZE_MAX / 8) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: count %zu is too large", fn, count);
    }
    if (size > 0 && (root < 0 || root >= size)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: root %d is outside comm %d of size %d",
                            fn, root, (int)comm, size);
    }
    DC_CHECK_GOTO(classify(&req, buf, "buf", NULL, NULL, fn), status, out);
    req.dtype = (uint8_t)dtype;
    return dc_api_submit(&req, name, buf, buf, NULL, handle_p, fn);
out:
    return status;
}

DCOMM_API dcomm_status_t dcomm_barrier_async(dcomm_comm_t comm, dcomm_handle_t *handle_p)
{
    dc_wire_req_t req = {.coll = DC_COLL_BARRIER, .comm = comm};

    take_shape(&req);

    return dc_api_submit(&req, NULL, NULL, NULL, NULL, handle_p, "dcomm_barrier_async");
}

DCOMM_API dcomm_status_t dcomm_allgather_async(dcomm_comm_t comm, const char *name,
                                               const void *sendbuf, size_t count,
                                               dcomm_dtype_t dtype, dcomm_handle_t *handle_p)
{
    static const char fn[] = "dcomm_allgather_async";
    dc_wire_req_t req = {.coll = DC_COLL_ALLGATHER, .comm = comm, .count = count};
    dc_status_t status = check_dtype_op(dtype, -1, fn);

    take_shape(&req);

    if (status < 0) {
        return status;
    }
    if (count > 0 && sendbuf == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: sendbuf is NULL with count %zu", fn,
                            count);
    }
    if (count > SIZE_MAX / 8) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: count %zu is too large", fn, count);
    }
    DC_CHECK_GOTO(classify(&req, sendbuf, "sendbuf", NULL, NULL, fn), status, out);
    req.dtype = (uint8_t)dtype;
    return dc_api_submit(&req, name, sendbuf, NULL, NULL, handle_p, fn);
out:
    return status;
}

DCOMM_API dcomm_status_t dcomm_alltoall_async(dcomm_comm_t comm, const char *name,
                                              const void *sendbuf, const size_t *sendcounts,
                                              dcomm_dtype_t dtype, dcomm_handle_t *handle_p)
{
    static const char fn[] = "dcomm_alltoall_async";
    dc_wire_req_t req = {.coll = DC_COLL_ALLTOALL, .comm = comm};
    dc_status_t status = check_dtype_op(dtype, -1, fn);
    int size = dcomm_comm_size(comm);
    size_t total = 0, *counts;

    take_shape(&req);

    if (status < 0) {
        return status;
    }
    if (size < 1) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: unknown comm %d", fn, (int)comm);
    }
    if (sendcounts == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: sendcounts is NULL", fn);
    }
    for (int i = 0; i < size; i++) {
        if (sendcounts[i] > SIZE_MAX / 8 - total) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: sendcounts add up to too much", fn);
        }
        total += sendcounts[i];
    }
    if (total > 0 && sendbuf == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: sendbuf is NULL with %zu elements to "
                            "send", fn, total);
    }
    DC_CHECK_GOTO(classify(&req, sendbuf, "sendbuf", NULL, NULL, fn), status, out);
    /* The counts are copied: the caller may reuse its array at once. */
    counts = malloc((size_t)size * sizeof(size_t));
    if (counts == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "%s: out of memory", fn);
    }
    memcpy(counts, sendcounts, (size_t)size * sizeof(size_t));
    req.dtype = (uint8_t)dtype;
    req.count = total;
    return dc_api_submit(&req, name, sendbuf, NULL, counts, handle_p, fn);
out:
    return status;
}

DCOMM_API dcomm_status_t dcomm_reducescatter_async(dcomm_comm_t comm, const char *name,
                                                   const void *sendbuf, size_t count,
                                                   dcomm_dtype_t dtype, dcomm_op_t op,
                                                   dcomm_handle_t *handle_p)
{
    static const char fn[] = "dcomm_reducescatter_async";
    dc_wire_req_t req = {.coll = DC_COLL_REDUCESCATTER, .comm = comm, .count = count};
    dc_status_t status = check_dtype_op(dtype, (int)op, fn);

    take_shape(&req);

    if (status < 0) {
        return status;
    }
    if (count > 0 && sendbuf == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: sendbuf is NULL with count %zu", fn,
                            count);
    }
    if (count > SIZE_MAX / 8) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: count %zu is too large", fn, count);
    }
    DC_CHECK_GOTO(classify(&req, sendbuf, "sendbuf", NULL, NULL, fn), status, out);
    req.dtype = (uint8_t)dtype;
    req.op = (uint8_t)op;
    return dc_api_submit(&req, name, sendbuf, NULL, NULL, handle_p, fn);
out:
    return status;
}

DCOMM_API dcomm_status_t dcomm_join_async(dcomm_comm_t comm, dcomm_handle_t *handle_p)
{
    static const char fn[] = "dcomm_join_async";
    dc_wire_req_t req = {.coll = DC_COLL_JOIN, .comm = comm, .dtype = DCOMM_INT32};
    char name[32];

    take_shape(&req);

    snprintf(name, sizeof(name), "join.%d", (int)comm);
    return dc_api_submit(&req, name, NULL, NULL, NULL, handle_p, fn);
}

