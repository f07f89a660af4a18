/*
 * The nccl module (libdcomm-nccl.so): device-buffer collectives through NCCL.
 * One NCCL communicator per dcomm comm (unique id through the rendezvous
 * store), one non-blocking stream per communicator, and a ring of CUDA events:
 * each operation records one, and test() polls it, so the coordinator never
 * waits on the GPU (except when more than NCCL_RING operations are in flight,
 * where the oldest is waited for before its event is reused).
 */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "module_shim.h"

#define NCCL_RING 256

struct dc_nccl_comm {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t events[NCCL_RING];
    uint64_t next;   /* ticket of the next operation */
    uint64_t done;   /* every ticket below this one is complete */
    int rank, nranks, device;
};

static dc_status_t nccl_error(ncclResult_t rc, const char *what)
{
    return dc_error_set(DCOMM_ERR_TRANSPORT, "nccl: %s failed: %s", what,
                        ncclGetErrorString(rc));
}

static dc_status_t cuda_error(cudaError_t err, const char *what)
{
    return dc_error_set(DCOMM_ERR_INTERNAL, "nccl: %s failed: %s", what, cudaGetErrorString(err));
}

static int nccl_dtype(int dtype, ncclDataType_t *t_p)
{
    static const ncclDataType_t map[DCOMM_DTYPE_COUNT] = {
        [DCOMM_UINT8] = ncclUint8,     [DCOMM_INT8] = ncclInt8,
        [DCOMM_INT32] = ncclInt32,     [DCOMM_INT64] = ncclInt64,
        [DCOMM_FLOAT16] = ncclFloat16, [DCOMM_BFLOAT16] = ncclBfloat16,
        [DCOMM_FLOAT32] = ncclFloat32, [DCOMM_FLOAT64] = ncclFloat64,
    };

    if (dtype < 0 || dtype >= DCOMM_DTYPE_COUNT) {
        return -1;
    }
    *t_p = map[dtype];
    return 0;
}

static int nccl_op(int op, ncclRedOp_t *o_p)
{
    static const ncclRedOp_t map[DCOMM_OP_COUNT] = {
        [DCOMM_SUM] = ncclSum, [DCOMM_AVG] = ncclAvg, [DCOMM_MIN] = ncclMin,
        [DCOMM_MAX] = ncclMax, [DCOMM_PROD] = ncclProd,
    };

    if (op < 0 || op >= DCOMM_OP_COUNT) {
        return -1;
    }
    *o_p = map[op];
    return 0;
}

static void comm_free(dc_nccl_comm_t *c)
{
    for (int i = 0; i < NCCL_RING; i++) {
        if (c->events[i] != NULL) {
            cudaEventDestroy(c->events[i]);
        }
    }
    if (c->stream != NULL) {
        cudaStreamDestroy(c->stream);
    }
    free(c);
}

static dc_status_t get_id(dc_store_t *store, const char *key, int rank, int nranks,
                          int timeout_ms, ncclUniqueId *id)
{
    ncclResult_t rc;
    size_t len = 0;
    dc_status_t status;

    if (rank == 0) {
        rc = ncclGetUniqueId(id);
        if (rc != ncclSuccess) {
            return nccl_error(rc, "ncclGetUniqueId");
        }
        return nranks == 1 ? DCOMM_OK : dc_store_set(store, key, id, sizeof(*id));
    }
    status = dc_store_get(store, key, id, sizeof(*id), &len, timeout_ms);
    if (status < 0) {
        return dc_error_set(status, "nccl: rank %d: no unique id at '%s': %s", rank, key,
                            dc_error_get());
    }
    if (len != sizeof(*id)) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "nccl: unique id at '%s' has %zu bytes", key,
                            len);
    }
    return DCOMM_OK;
}

static dc_status_t nccl_comm_open(dc_store_t *store, const char *key, int rank, int nranks,
                                  int device, int timeout_ms, dc_nccl_comm_t **comm_p)
{
    dc_nccl_comm_t *c = calloc(1, sizeof(*c));
    ncclUniqueId id;
    dc_status_t status;
    cudaError_t err;
    ncclResult_t rc;

    if (c == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "nccl: out of memory");
    }
    c->rank = rank;
    c->nranks = nranks;
    c->device = device;
    err = cudaSetDevice(device);
    if (err == cudaSuccess) {
        err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    }
    for (int i = 0; i < NCCL_RING && err == cudaSuccess; i++) {
        err = cudaEventCreateWithFlags(&c->events[i], cudaEventDisableTiming);
    }
    if (err != cudaSuccess) {
        status = cuda_error(err, "stream/event set-up");
        goto err;
    }
    DC_CHECK_GOTO(get_id(store, key, rank, nranks, timeout_ms, &id), status, err);
    rc = ncclCommInitRank(&c->comm, nranks, id, rank);
    if (rc != ncclSuccess) {
        status = nccl_error(rc, "ncclCommInitRank");
        goto err;
    }
    *comm_p = c;
    return DCOMM_OK;
err:
    comm_free(c);
    return status;
}

static void nccl_comm_close(dc_nccl_comm_t *c)
{
    if (c == NULL) {
        return;
    }
    cudaStreamSynchronize(c->stream);
    ncclCommDestroy(c->comm);
    comm_free(c);
}

/* No stream synchronisation and no ncclCommDestroy: both can wait forever for
 * an operation whose peer is gone. ncclCommAbort stops NCCL's work on the
 * communicator; the stream and events are then destroyed without waiting. */
static void nccl_comm_abort(dc_nccl_comm_t *c)
{
    ncclResult_t rc;

    if (c == NULL) {
        return;
    }
    rc = ncclCommAbort(c->comm);
    if (rc != ncclSuccess) {
        DC_WARN("nccl: ncclCommAbort: %s", ncclGetErrorString(rc));
    }
    comm_free(c);
}

/* Records the event of a just-enqueued operation; frees a ring slot first. */
static dc_status_t op_begin(dc_nccl_comm_t *c)
{
    if (c->next - c->done >= NCCL_RING) {
        cudaError_t err = cudaEventSynchronize(c->events[c->done % NCCL_RING]);

        if (err != cudaSuccess) {
            return cuda_error(err, "cudaEventSynchronize");
        }
        c->done++;
    }
    return DCOMM_OK;
}

static dc_status_t op_end(dc_nccl_comm_t *c, ncclResult_t rc, const char *what,
                          uint64_t *ticket_p)
{
    cudaError_t err;

    if (rc != ncclSuccess) {
        return nccl_error(rc, what);
    }
    err = cudaEventRecord(c->events[c->next % NCCL_RING], c->stream);
    if (err != cudaSuccess) {
        return cuda_error(err, "cudaEventRecord");
    }
    *ticket_p = c->next++;
    return DCOMM_OK;
}

static dc_status_t types(int dtype, int op, ncclDataType_t *t_p, ncclRedOp_t *o_p)
{
    if (nccl_dtype(dtype, t_p) < 0 || (o_p != NULL && nccl_op(op, o_p) < 0)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "nccl: unknown dtype %d or op %d", dtype, op);
    }
    return DCOMM_OK;
}

/* Checks dtype (and op when o_p is given) and frees a ring slot. */
static dc_status_t op_prepare(dc_nccl_comm_t *c, int dtype, int op, ncclDataType_t *t_p,
                              ncclRedOp_t *o_p)
{
    dc_status_t status = types(dtype, op, t_p, o_p);

    return status < 0 ? status : op_begin(c);
}

static dc_status_t nccl_allreduce(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                  int dtype, int op, uint64_t *ticket_p)
{
    ncclDataType_t t = ncclFloat32;
    ncclRedOp_t o = ncclSum;
    dc_status_t status = op_prepare(c, dtype, op, &t, &o);

    if (status < 0) {
        return status;
    }
    return op_end(c, ncclAllReduce(send, recv, count, t, o, c->comm, c->stream), "ncclAllReduce",
                  ticket_p);
}

static dc_status_t nccl_broadcast(dc_nccl_comm_t *c, void *buf, size_t count, int dtype,
                                  int root, uint64_t *ticket_p)
{
    ncclDataType_t t = ncclFloat32;
    dc_status_t status = op_prepare(c, dtype, 0, &t, NULL);

    if (status < 0) {
        return status;
    }
    return op_end(c, ncclBroadcast(buf, buf, count, t, root, c->comm, c->stream),
                  "ncclBroadcast", ticket_p);
}

static dc_status_t nccl_allgather(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                  int dtype, uint64_t *ticket_p)
{
    ncclDataType_t t = ncclFloat32;
    dc_status_t status = op_prepare(c, dtype, 0, &t, NULL);

    if (status < 0) {
        return status;
    }
    return op_end(c, ncclAllGather(send, recv, count, t, c->comm, c->stream), "ncclAllGather",
                  ticket_p);
}

static dc_status_t nccl_reducescatter(dc_nccl_comm_t *c, const void *send, void *recv,
                                      size_t count, int dtype, int op, uint64_t *ticket_p)
{
    ncclDataType_t t = ncclFloat32;
    ncclRedOp_t o = ncclSum;
    dc_status_t status = op_prepare(c, dtype, op, &t, &o);

    if (status < 0) {
        return status;
    }
    return op_end(c, ncclReduceScatter(send, recv, count, t, o, c->comm, c->stream),
                  "ncclReduceScatter", ticket_p);
}

static size_t dtype_size(int dtype)
{
    switch (dtype) {
    case DCOMM_UINT8:
    case DCOMM_INT8: return 1;
    case DCOMM_FLOAT16:
    case DCOMM_BFLOAT16: return 2;
    case DCOMM_INT32:
    case DCOMM_FLOAT32: return 4;
    default: return 8;
    }
}

/* NCCL has no alltoall(v): grouped sends and receives, one pair per peer.
 * sendcounts/recvcounts NULL: count to and from every rank. */
static dc_status_t alltoall_group(dc_nccl_comm_t *c, const void *send, const size_t *sendcounts,
                                  void *recv, const size_t *recvcounts, size_t count, int dtype,
                                  uint64_t *ticket_p)
{
    size_t esize = dtype_size(dtype), soff = 0, roff = 0;
    ncclDataType_t t = ncclFloat32;
    ncclResult_t rc = ncclSuccess, end;
    dc_status_t status = op_prepare(c, dtype, 0, &t, NULL);

    if (status < 0) {
        return status;
    }
    ncclGroupStart();
    for (int r = 0; r < c->nranks && rc == ncclSuccess; r++) {
        size_t sn = sendcounts ? sendcounts[r] : count, rn = recvcounts ? recvcounts[r] : count;

        if (sn > 0) {
            rc = ncclSend((const char *)send + soff * esize, sn, t, r, c->comm, c->stream);
        }
        if (rc == ncclSuccess && rn > 0) {
            rc = ncclRecv((char *)recv + roff * esize, rn, t, r, c->comm, c->stream);
        }
        soff += sn;
        roff += rn;
    }
    end = ncclGroupEnd();
    return op_end(c, rc != ncclSuccess ? rc : end, "alltoall (ncclSend/ncclRecv)", ticket_p);
}

static dc_status_t nccl_alltoall(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                 int dtype, uint64_t *ticket_p)
{
    return alltoall_group(c, send, NULL, recv, NULL, count, dtype, ticket_p);
}

static dc_status_t nccl_alltoallv(dc_nccl_comm_t *c, const void *send, const size_t *sendcounts,
                                  void *recv, const size_t *recvcounts, int dtype,
                                  uint64_t *ticket_p)
{
    return alltoall_group(c, send, sendcounts, recv, recvcounts, 0, dtype, ticket_p);
}

/* Allgather with a count per rank: one broadcast per rank into its place,
 * grouped (NCCL's own advice for allgatherv). */
static dc_status_t nccl_allgatherv(dc_nccl_comm_t *c, const void *send, void *recv,
                                   const size_t *counts, int dtype, uint64_t *ticket_p)
{
    size_t esize = dtype_size(dtype), off = 0;
    ncclDataType_t t = ncclFloat32;
    ncclResult_t rc = ncclSuccess, end;
    dc_status_t status = op_prepare(c, dtype, 0, &t, NULL);

    if (status < 0) {
        return status;
    }
    ncclGroupStart();
    for (int r = 0; r < c->nranks && rc == ncclSuccess; r++) {
        char *dst = (char *)recv + off * esize;

        if (counts[r] > 0) {
            rc = ncclBroadcast(r == c->rank ? send : dst, dst, counts[r], t, r, c->comm,
                               c->stream);
        }
        off += counts[r];
    }
    end = ncclGroupEnd();
    return op_end(c, rc != ncclSuccess ? rc : end, "allgatherv (ncclBroadcast)", ticket_p);
}

static dc_status_t nccl_test(dc_nccl_comm_t *c, uint64_t ticket)
{
    ncclResult_t async = ncclSuccess;

    if (ticket >= c->next) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "nccl: no operation %llu",
                            (unsigned long long)ticket);
    }
    /* Operations finish in stream order: advance over every finished one. */
    while (c->done <= ticket) {
        cudaError_t err = cudaEventQuery(c->events[c->done % NCCL_RING]);

        if (err == cudaErrorNotReady) {
            if (ncclCommGetAsyncError(c->comm, &async) == ncclSuccess && async != ncclSuccess &&
                async != ncclInProgress) {
                return nccl_error(async, "an operation in flight");
            }
            return DCOMM_INPROGRESS;
        }
        if (err != cudaSuccess) {
            return cuda_error(err, "cudaEventQuery");
        }
        c->done++;
    }
    return DCOMM_OK;
}

static const dc_nccl_ops_t nccl_ops = {
    .comm_open = nccl_comm_open,
    .comm_close = nccl_comm_close,
    .allreduce = nccl_allreduce,
    .broadcast = nccl_broadcast,
    .allgather = nccl_allgather,
    .reducescatter = nccl_reducescatter,
    .alltoall = nccl_alltoall,
    .allgatherv = nccl_allgatherv,
    .alltoallv = nccl_alltoallv,
    .test = nccl_test,
    .comm_abort = nccl_comm_abort,
};

static dc_status_t nccl_module_init(const dc_module_host_t *host)
{
    int n = 0;
    cudaError_t err;

    dc_module_shim_init(host);
    err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        return dc_error_set(DCOMM_ERR_UNSUPPORTED, "no CUDA device: %s",
                            err != cudaSuccess ? cudaGetErrorString(err) : "count is 0");
    }
    return DCOMM_OK;
}

__attribute__((visibility("default"))) const dc_module_t dcomm_module_v1_nccl = {
    .abi_version = DC_MODULE_ABI_VERSION,
    .name = "nccl",
    .init = nccl_module_init,
    .nccl = &nccl_ops,
};
