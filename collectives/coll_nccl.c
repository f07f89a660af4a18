/*
 * The "nccl" algorithms: the whole collective enqueued on the comm's NCCL
 * communicator (the nccl module's ops) over device buffers, for allreduce,
 * broadcast, allgather(v), reducescatter (equal or uneven segments) and
 * alltoall(v). Five thin rows over one context (ctx->dev), hence one file.
 * Results of allgather, reducescatter and alltoall are gathered in device
 * scratch and copied into the caller's (host) result buffer. Every operation
 * ends in the caller's finish(), which owns the deadline and failure policy.
 */
#include "coll.h"
#include "dc_reduce.h"

static int nccl_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    (void)args;
    return ctx->dev != NULL && ctx->dev->nccl != NULL && ctx->dev->nccl_comm != NULL;
}

/* A joined rank's input: bytes of zeros in device scratch (in place: its
 * result lands there and is dropped). */
static dc_status_t joined_zeros(const dc_coll_dev_t *dev, size_t bytes, void **buf_p)
{
    dc_status_t status = dev->scratch(dev->owner, bytes, buf_p);

    return status < 0 ? status : dev->zero(dev->owner, *buf_p, bytes);
}

/* The finished result, from device scratch into the host result buffer. */
static dc_status_t copy_out(const dc_coll_dev_t *dev, dc_status_t status, void *recvbuf,
                            const void *from, size_t bytes)
{
    return status == DCOMM_OK ? dev->copy(dev->owner, recvbuf, from, bytes) : status;
}

static dc_status_t allreduce_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    const dc_coll_dev_t *dev = ctx->dev;
    size_t bytes = args->count * dc_reduce_dtype_size(args->dtype);
    const void *send = args->sendbuf;
    void *recv = args->recvbuf, *buf;
    uint64_t ticket = 0;
    dc_status_t status;

    if (args->count == 0) {
        return DCOMM_OK;
    }
    if (dev->joined) {
        DC_CHECK_GOTO(joined_zeros(dev, bytes, &buf), status, out);
        send = recv = buf;
    }
    status = dev->nccl->allreduce(dev->nccl_comm, send, recv, args->count, args->dtype, args->op,
                                  &ticket);
    status = dev->finish(dev->owner, status, ticket, DC_COLL_ALLREDUCE, bytes);
out:
    return status;
}

static dc_status_t bcast_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    const dc_coll_dev_t *dev = ctx->dev;
    size_t bytes = args->count * dc_reduce_dtype_size(args->dtype);
    void *buf = args->recvbuf;
    uint64_t ticket = 0;
    dc_status_t status;

    if (args->count == 0) {
        return DCOMM_OK;
    }
    if (dev->joined) {
        DC_CHECK_GOTO(joined_zeros(dev, bytes, &buf), status, out);
    }
    status = dev->nccl->broadcast(dev->nccl_comm, buf, args->count, args->dtype, args->root,
                                  &ticket);
    status = dev->finish(dev->owner, status, ticket, DC_COLL_BROADCAST, bytes);
out:
    return status;
}

static int allgather_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return args->counts != NULL && nccl_supported(ctx, args);
}

static size_t counts_total(const size_t *counts, int n)
{
    size_t total = 0;

    for (int i = 0; i < n; i++) {
        total += counts[i];
    }
    return total;
}

static int counts_equal(const size_t *counts, int n)
{
    for (int i = 1; i < n; i++) {
        if (counts[i] != counts[0]) {
            return 0;
        }
    }
    return 1;
}

/* NCCL's own allgather when every rank sends as much, else the module's
 * grouped broadcasts (allgatherv). */
static dc_status_t allgather_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    const dc_coll_dev_t *dev = ctx->dev;
    const dc_nccl_ops_t *n = dev->nccl;
    size_t esize = dc_reduce_dtype_size(args->dtype);
    size_t total = counts_total(args->counts, ctx->size);
    uint64_t ticket = 0;
    dc_status_t status;
    void *buf;

    if (total == 0) {
        return DCOMM_OK;
    }
    DC_CHECK_GOTO(dev->scratch(dev->owner, total * esize, &buf), status, out);
    status = counts_equal(args->counts, ctx->size)
                 ? n->allgather(dev->nccl_comm, args->sendbuf, buf, args->counts[0], args->dtype,
                                &ticket)
                 : n->allgatherv(dev->nccl_comm, args->sendbuf, buf, args->counts, args->dtype,
                                 &ticket);
    status = dev->finish(dev->owner, status, ticket, DC_COLL_ALLGATHER,
                         DC_MAX(total, args->count) * esize);
    status = copy_out(dev, status, args->recvbuf, buf, total * esize);
out:
    return status;
}

/* NCCL's own reducescatter when the segments are equal, else an allreduce in
 * device scratch and this rank's segment of it. The input goes to scratch
 * first where NCCL cannot read it in place: uneven segments (the allreduce
 * works in place there), or a joined rank (zeros). Scratch: the input's
 * bytes, then this rank's segment. */
static dc_status_t reducescatter_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    const dc_coll_dev_t *dev = ctx->dev;
    const dc_nccl_ops_t *n = dev->nccl;
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = args->count * esize, off, len;
    int equal;
    const void *send = args->sendbuf;
    const char *from = NULL;
    char *buf;
    uint64_t ticket = 0;
    dc_status_t status;

    if (args->count == 0) {
        return DCOMM_OK;
    }
    equal = args->count % (size_t)ctx->size == 0;
    dc_ring_segment(args->count, ctx->size, ctx->rank, &off, &len);
    status = dev->scratch(dev->owner, bytes + len * esize, (void **)&buf);
    if (status == DCOMM_OK && (dev->joined || !equal)) {
        status = dev->joined ? dev->zero(dev->owner, buf, bytes)
                             : dev->copy(dev->owner, buf, send, bytes);
        send = buf;
    }
    if (status == DCOMM_OK && equal) {
        from = buf + bytes;
        status = n->reducescatter(dev->nccl_comm, send, buf + bytes, len, args->dtype, args->op,
                                  &ticket);
    } else if (status == DCOMM_OK) {
        from = buf + off * esize;
        status = n->allreduce(dev->nccl_comm, buf, buf, args->count, args->dtype, args->op,
                              &ticket);
    }
    /* a failed preparation ends here too: the caller's policy sees it */
    status = dev->finish(dev->owner, status, ticket, DC_COLL_REDUCESCATTER, bytes);
    return copy_out(dev, status, args->recvbuf, from, len * esize);
}

static int alltoall_supported(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    return args->counts != NULL && args->recv_counts != NULL && nccl_supported(ctx, args);
}

/* Every rank takes part, even one with nothing to send or receive. */
static dc_status_t alltoall_run(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args)
{
    const dc_coll_dev_t *dev = ctx->dev;
    size_t esize = dc_reduce_dtype_size(args->dtype);
    size_t total = counts_total(args->recv_counts, ctx->size);
    uint64_t ticket = 0;
    dc_status_t status;
    void *buf;

    DC_CHECK_GOTO(dev->scratch(dev->owner, total * esize, &buf), status, out);
    status = dev->nccl->alltoallv(dev->nccl_comm, args->sendbuf, args->counts, buf,
                                  args->recv_counts, args->dtype, &ticket);
    status = dev->finish(dev->owner, status, ticket, DC_COLL_ALLTOALL,
                         DC_MAX(total, args->count) * esize);
    status = copy_out(dev, status, args->recvbuf, buf, total * esize);
out:
    return status;
}

const dc_coll_algo_t dc_allreduce_nccl_algo = {
    .name = "nccl",
    .doc = "ncclAllReduce on the comm's NCCL communicator; device buffers",
    .supported = nccl_supported,
    .run = allreduce_run,
};

const dc_coll_algo_t dc_bcast_nccl_algo = {
    .name = "nccl",
    .doc = "ncclBroadcast on the comm's NCCL communicator; device buffers",
    .supported = nccl_supported,
    .run = bcast_run,
};

const dc_coll_algo_t dc_allgather_nccl_algo = {
    .name = "nccl",
    .doc = "ncclAllGather (uneven counts: grouped broadcasts) on the comm's NCCL "
           "communicator; device buffers",
    .supported = allgather_supported,
    .run = allgather_run,
};

const dc_coll_algo_t dc_reducescatter_nccl_algo = {
    .name = "nccl",
    .doc = "ncclReduceScatter (uneven segments: ncclAllReduce) on the comm's NCCL "
           "communicator; device buffers",
    .supported = nccl_supported,
    .run = reducescatter_run,
};

const dc_coll_algo_t dc_alltoall_nccl_algo = {
    .name = "nccl",
    .doc = "grouped ncclSend/ncclRecv on the comm's NCCL communicator; device buffers",
    .supported = alltoall_supported,
    .run = alltoall_run,
};
