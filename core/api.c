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
#include "module.h"

dc_state_t *dc_state;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

static dc_status_t not_initialized(void)
{
    return dc_error_set(DCOMM_ERR_NOT_INITIALIZED, "dcomm_init has not been called (or "
                                                   "dcomm_shutdown already was)");
}

static void comm_clear(dc_comm_t *cm);
static dc_status_t comm_fill(dc_state_t *st, dc_comm_t *cm, const int *ranks, int n);

static void state_free(dc_state_t *st)
{
    for (int i = 0; i < DC_MAX_COMMS; i++) {
        comm_clear(&st->comms[i]);
    }
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
    atomic_store(&st->cuda_device, -1);
    DC_CHECK_GOTO(dc_config_load(), status, err);
    dc_reduce_set_isa(dc_reduce_isa_choose(dc_config.reduce_isa[0] ? dc_config.reduce_isa : NULL));
    DC_CHECK_GOTO(dc_bootstrap_identity(st), status, err);
    dc_log_set_rank(st->rank);
    DC_CHECK_GOTO(dc_bootstrap_connect(st), status, err); /* loads the modules */
    if (dc_module_find("cuda") != NULL) {
        st->cuda = dc_module_find("cuda")->cuda;
    }
    {
        int *world = malloc((size_t)st->size * sizeof(int));

        if (world == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
            goto err;
        }
        for (int r = 0; r < st->size; r++) {
            world[r] = r;
        }
        status = comm_fill(st, &st->comms[0], world, st->size);
        free(world);
        if (status < 0) {
            goto err;
        }
    }
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
        /* A peer that failed first may have taken down the one this rank
         * was talking to: name what dlaunch saw first. */
        (void)dc_bootstrap_launcher_cause(st, status, msg, sizeof(msg));
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

/* ---- communicators (process sets) --------------------------------------------- */

static dc_status_t submit(dc_wire_req_t *req, const char *name, const void *sendbuf,
                          void *recvbuf, size_t *counts, dcomm_handle_t *handle_p,
                          const char *fn);
static dc_status_t wait_release(dc_status_t status, dcomm_handle_t handle);

static void comm_clear(dc_comm_t *cm)
{
    free(cm->ranks);
    free(cm->host_of);
    memset(cm, 0, sizeof(*cm));
}

/* FNV-1a over the member list: ranks that pass different lists disagree on it
 * in negotiation, and every rank gets DCOMM_ERR_MISMATCH. */
static uint64_t ranks_hash(const int *ranks, int n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ranks[i];

        for (int b = 0; b < 4; b++) {
            h = (h ^ ((v >> (8 * b)) & 0xff)) * 0x100000001b3ull;
        }
    }
    return h;
}

/* Fills a new comm entry: members, this rank's place, hosts renumbered. */
static dc_status_t comm_fill(dc_state_t *st, dc_comm_t *cm, const int *ranks, int n)
{
    cm->ranks = malloc((size_t)n * sizeof(int));
    cm->host_of = malloc((size_t)n * sizeof(int));
    if (cm->ranks == NULL || cm->host_of == NULL) {
        comm_clear(cm);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "dcomm_comm_create: out of memory");
    }
    cm->size = n;
    cm->rank = -1;
    cm->nhosts = 0;
    for (int i = 0; i < n; i++) {
        int h = st->host_of[ranks[i]], j;

        cm->ranks[i] = ranks[i];
        if (ranks[i] == st->rank) {
            cm->rank = i;
        }
        for (j = 0; j < i && st->host_of[ranks[j]] != h; j++) {
        }
        cm->host_of[i] = j < i ? cm->host_of[j] : cm->nhosts++;
    }
    cm->in_use = 1;
    return DCOMM_OK;
}

DCOMM_API dcomm_status_t dcomm_comm_create(const int *ranks, int nranks, dcomm_comm_t *comm_p)
{
    static const char fn[] = "dcomm_comm_create";
    dc_state_t *st = dc_state;
    dc_wire_req_t req = {.coll = DC_COLL_COMM_CREATE, .comm = DCOMM_COMM_WORLD};
    char name[64];
    dcomm_handle_t h = 0;
    dc_status_t status;
    int id;

    if (st == NULL) {
        return not_initialized();
    }
    if (ranks == NULL || comm_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                            ranks == NULL ? "ranks" : "comm_p");
    }
    if (nranks < 1 || nranks > st->size) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: nranks %d is not in 1..%d", fn, nranks,
                            st->size);
    }
    for (int i = 0; i < nranks; i++) {
        if (ranks[i] < 0 || ranks[i] >= st->size) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: ranks[%d] = %d is not a rank of "
                                "COMM_WORLD (size %d)", fn, i, ranks[i], st->size);
        }
        for (int j = 0; j < i; j++) {
            if (ranks[j] == ranks[i]) {
                return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: rank %d is listed twice "
                                    "(ranks[%d] and ranks[%d])", fn, ranks[i], j, i);
            }
        }
    }
    /* Every rank creates comms in the same order, so the lowest free id is the
     * same everywhere; negotiation checks that the lists agree. */
    pthread_mutex_lock(&st->lock);
    for (id = 1; id < DC_MAX_COMMS && st->comms[id].in_use; id++) {
    }
    if (id == DC_MAX_COMMS) {
        pthread_mutex_unlock(&st->lock);
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: all %d comms are in use", fn,
                            DC_MAX_COMMS - 1);
    }
    status = comm_fill(st, &st->comms[id], ranks, nranks);
    pthread_mutex_unlock(&st->lock);
    if (status < 0) {
        return status;
    }
    snprintf(name, sizeof(name), "comm.create.%d", id);
    req.count = ranks_hash(ranks, nranks);
    req.root = nranks;
    status = submit(&req, name, NULL, NULL, NULL, &h, fn);
    status = wait_release(status, h);
    if (status < 0) {
        pthread_mutex_lock(&st->lock);
        comm_clear(&st->comms[id]);
        pthread_mutex_unlock(&st->lock);
        return status;
    }
    *comm_p = id;
    return DCOMM_OK;
}

typedef struct inflight_count {
    const char *prefix;
    size_t len;
    int n;
} inflight_count_t;

static void count_prefix(const char *key, void *value, void *arg)
{
    inflight_count_t *ic = arg;

    (void)value;
    if (strncmp(key, ic->prefix, ic->len) == 0) {
        ic->n++;
    }
}

DCOMM_API dcomm_status_t dcomm_comm_destroy(dcomm_comm_t comm)
{
    static const char fn[] = "dcomm_comm_destroy";
    dc_state_t *st = dc_state;
    dc_wire_req_t req = {.coll = DC_COLL_COMM_DESTROY, .comm = DCOMM_COMM_WORLD};
    char name[64], prefix[32];
    inflight_count_t ic = {prefix, 0, 0};
    dcomm_handle_t h = 0;
    dc_status_t status;

    if (st == NULL) {
        return not_initialized();
    }
    if (comm == DCOMM_COMM_WORLD) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: COMM_WORLD cannot be destroyed", fn);
    }
    pthread_mutex_lock(&st->lock);
    if (comm < 0 || comm >= DC_MAX_COMMS || !st->comms[comm].in_use) {
        pthread_mutex_unlock(&st->lock);
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: comm %d is unknown", fn, (int)comm);
    }
    snprintf(prefix, sizeof(prefix), "%d:", (int)comm);
    ic.len = strlen(prefix);
    dc_map_foreach(&st->inflight, count_prefix, &ic);
    pthread_mutex_unlock(&st->lock);
    if (ic.n > 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: comm %d has %d operations in flight; "
                            "wait for them first", fn, (int)comm, ic.n);
    }
    snprintf(name, sizeof(name), "comm.destroy.%d", (int)comm);
    req.root = comm; /* every rank drops the comm's cached tensors */
    status = submit(&req, name, NULL, NULL, NULL, &h, fn);
    status = wait_release(status, h);
    if (status < 0) {
        return status;
    }
    pthread_mutex_lock(&st->lock);
    comm_clear(&st->comms[comm]);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
}

static int comm_field(dcomm_comm_t comm, int want_size)
{
    dc_state_t *st = dc_state;
    int v = -1;

    if (st == NULL || comm < 0 || comm >= DC_MAX_COMMS) {
        return -1;
    }
    pthread_mutex_lock(&st->lock);
    if (st->comms[comm].in_use) {
        v = want_size ? st->comms[comm].size : st->comms[comm].rank;
    }
    pthread_mutex_unlock(&st->lock);
    return v;
}

DCOMM_API int dcomm_comm_rank(dcomm_comm_t comm)
{
    return comm_field(comm, 0);
}

DCOMM_API int dcomm_comm_size(dcomm_comm_t comm)
{
    return comm_field(comm, 1);
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

static dc_status_t submit(dc_wire_req_t *req, const char *name, const void *sendbuf,
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
        return not_initialized();
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
    dc_coord_wake(st);
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
    return submit(&req, name, sendbuf, recvbuf, NULL, handle_p, fn);
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
    return submit(&req, name, buf, buf, NULL, handle_p, fn);
out:
    return status;
}

DCOMM_API dcomm_status_t dcomm_barrier_async(dcomm_comm_t comm, dcomm_handle_t *handle_p)
{
    dc_wire_req_t req = {.coll = DC_COLL_BARRIER, .comm = comm};

    take_shape(&req);

    return submit(&req, NULL, NULL, NULL, NULL, handle_p, "dcomm_barrier_async");
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
    return submit(&req, name, sendbuf, NULL, NULL, handle_p, fn);
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
    return submit(&req, name, sendbuf, NULL, counts, handle_p, fn);
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
    return submit(&req, name, sendbuf, NULL, NULL, handle_p, fn);
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
    return submit(&req, name, NULL, NULL, NULL, handle_p, fn);
}

DCOMM_API dcomm_status_t dcomm_timeline_start(const char *path)
{
    dc_state_t *st = dc_state;

    if (st == NULL) {
        return not_initialized();
    }
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(st->timeline_path)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_timeline_start: path must be 1 to "
                            "%zu bytes", sizeof(st->timeline_path) - 1);
    }
    pthread_mutex_lock(&st->lock);
    snprintf(st->timeline_path, sizeof(st->timeline_path), "%s", path);
    atomic_store(&st->timeline_cmd, 1);
    dc_coord_wake(st);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
}

DCOMM_API dcomm_status_t dcomm_timeline_stop(void)
{
    dc_state_t *st = dc_state;

    if (st == NULL) {
        return not_initialized();
    }
    pthread_mutex_lock(&st->lock);
    atomic_store(&st->timeline_cmd, 2);
    dc_coord_wake(st);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
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
