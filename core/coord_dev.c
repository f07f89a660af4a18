/*
 * Device (CUDA) tensors in the coordinator. The collectives of a comm's device
 * tensors run on NCCL when every member has the nccl module (and
 * DCOMM_TRANSPORTS allows it): this part opens the comm's communicator and
 * hands it, with its scratch, copies and waits, to the selector's device rows
 * (collectives/coll_nccl.c), which enqueue each collective; otherwise the
 * tensors are staged: device data is copied into pinned host memory, the
 * host algorithms run there, and results are copied back (AVG is summed on
 * the host and scaled on the device).
 *
 * An NCCL operation is enqueued on the module's stream and polled with test(),
 * never waited for with a blocking CUDA call; but the coordinator polls it to
 * completion before the next item, because items run in the agreed order on
 * this one thread, the fusion and scratch buffers are reused by the next item,
 * and the loop's idle and failure paths (coord.c) know nothing of work in
 * flight on the GPU. Overlapping NCCL operations would need all three changed.
 * While it waits, peers' liveness is checked; how long it waits, and why not
 * DCOMM_TIMEOUT flat, is in dev_deadline.h. A comm whose operation failed, or
 * any comm after the job failed, is aborted (ncclCommAbort), never closed.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "coord_dev.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "dev_deadline.h"
#include "log.h"
#include "module.h"

#define DEV_CHECK_NS 100000000ull /* liveness checks while an NCCL operation runs */

/* The modules, and the device: the one the API saw first, else the usual
 * local-rank choice (this rank has no device buffer yet: it joined, or sends
 * nothing). */
static dc_status_t dev_init(coord_dev_t *d)
{
    const dc_module_t *m = dc_module_find("nccl");
    int expected = -1, n;

    d->cuda = d->st->cuda;
    d->nccl = m != NULL && d->cuda != NULL && dc_net_spec_allows(dc_config.transports, "nccl")
                  ? m->nccl : NULL;
    d->ready = 1;
    if (d->cuda == NULL) {
        return DCOMM_OK;
    }
    n = d->cuda->device_count();
    d->device = d->st->local_rank % (n > 0 ? n : 1);
    if (!atomic_compare_exchange_strong(&d->st->cuda_device, &expected, d->device)) {
        d->device = expected;
    }
    return d->cuda->use_device(d->device);
}

/* MIN over the comm's members of *v, on ctx's tag. */
static dc_status_t agree(dc_runner_t *run, const dc_coll_ctx_t *ctx, int32_t *v)
{
    dc_coll_args_t args = {.sendbuf = v, .recvbuf = v, .count = 1, .dtype = DCOMM_INT32,
                           .op = DCOMM_MIN};
    const char *algo;

    return ctx->size > 1 ? dc_run_algo(run, DC_COLL_ALLREDUCE, ctx, &args, "nccl.agree", &algo)
                         : DCOMM_OK;
}

/* First device collective of comm: NCCL when every member can open it, else
 * staged. The unique id travels through the rendezvous store under a key made
 * of the comm id and the item's tag (the same on every member, never reused). */
static dc_status_t dev_open(coord_dev_t *d, dc_runner_t *run, const dc_coll_ctx_t *ctx,
                            int32_t comm)
{
    int32_t ok = d->nccl != NULL;
    dc_nccl_comm_t *nc = NULL;
    char key[64], why[512] = "";
    dc_status_t status = agree(run, ctx, &ok);

    if (status < 0) {
        return status;
    }
    if (!ok) {
        snprintf(why, sizeof(why), "%s", d->nccl == NULL ? "no nccl module here, or "
                                                           "DCOMM_TRANSPORTS leaves it out"
                                                         : "a member has no nccl module");
    } else {
        snprintf(key, sizeof(key), "nccl.%d.%llu", (int)comm, (unsigned long long)ctx->tag);
        if (d->nccl->comm_open(d->st->store, key, ctx->rank, ctx->size, d->device,
                               dc_dev_wait_ms(dc_config.timeout_ms), &nc) < 0) {
            snprintf(why, sizeof(why), "%s", dc_error_get());
            nc = NULL;
            ok = 0;
        }
        status = agree(run, ctx, &ok);
        if ((status < 0 || !ok) && nc != NULL) {
            d->nccl->comm_close(nc);
            nc = NULL;
            snprintf(why, sizeof(why), "another member could not open its NCCL communicator");
        }
        if (status < 0) {
            return status;
        }
    }
    d->comms[comm].mode = ok ? DC_DEV_NCCL : DC_DEV_STAGED;
    d->comms[comm].nccl = nc;
    if (ok) {
        DC_INFO("comm %d: device tensors through NCCL (CUDA device %d)", (int)comm, d->device);
    } else {
        DC_INFO("comm %d: device tensors staged through pinned host memory: %s", (int)comm, why);
    }
    return DCOMM_OK;
}

dc_status_t dc_dev_prepare(coord_dev_t *d, dc_runner_t *run, const dc_coll_ctx_t *ctx,
                           int32_t comm, int *mode_p)
{
    dc_status_t status = d->ready ? DCOMM_OK : dev_init(d);

    if (status == DCOMM_OK && d->comms[comm].mode == DC_DEV_UNDECIDED) {
        status = dev_open(d, run, ctx, comm);
    }
    if (status == DCOMM_OK) {
        *mode_p = d->comms[comm].mode;
    }
    return status;
}

void dc_dev_init(coord_dev_t *d, dc_state_t *st)
{
    d->st = st;
}

int dc_dev_has_cuda(const coord_dev_t *d)
{
    return d->cuda != NULL;
}

dc_status_t dc_dev_copy(coord_dev_t *d, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) {
        return DCOMM_OK;
    }
    if (d->cuda == NULL) {
        memcpy(dst, src, bytes);
        return DCOMM_OK;
    }
    return d->cuda->memcpy(dst, src, bytes);
}

/* Grows a persistent buffer (2 MiB steps): pinned host or device memory. */
static dc_status_t dev_grow(coord_dev_t *d, int device, void **buf, size_t *size, size_t need)
{
    const dc_cuda_ops_t *cu = d->cuda;
    void *p = NULL;
    dc_status_t status;

    if (need <= *size && *buf != NULL) {
        return DCOMM_OK;
    }
    if (cu == NULL) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "device buffer wanted without the cuda module");
    }
    need = (need + (1u << 21) - 1) & ~(size_t)((1u << 21) - 1);
    status = device ? cu->device_alloc(need, &p) : cu->host_alloc(need, &p);
    if (status < 0) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "cannot allocate %zu bytes of %s memory: %s",
                            need, device ? "device" : "pinned host", dc_error_get());
    }
    if (*buf != NULL) {
        (device ? cu->device_free : cu->host_free)(*buf);
    }
    *buf = p;
    *size = need;
    return DCOMM_OK;
}

dc_status_t dc_dev_stage(coord_dev_t *d, size_t bytes, void **buf_p)
{
    dc_status_t status = dev_grow(d, 0, &d->stage, &d->stage_size, bytes);

    *buf_p = d->stage;
    return status;
}

dc_status_t dc_dev_dbuf(coord_dev_t *d, size_t bytes, void **buf_p)
{
    dc_status_t status = dev_grow(d, 1, &d->dbuf, &d->dbuf_size, bytes);

    *buf_p = d->dbuf;
    return status;
}

/* Zeros bytes of device memory (a joined rank's contribution), through the
 * pinned buffer: the cuda module has no memset. */
static dc_status_t dev_zero(coord_dev_t *d, void *dptr, size_t bytes)
{
    void *z;
    dc_status_t status = dc_dev_stage(d, bytes, &z);

    if (status < 0) {
        return status;
    }
    memset(z, 0, bytes);
    return dc_dev_copy(d, dptr, z, bytes);
}

/* Polls an NCCL operation of bytes to completion (see the top of the file);
 * sleeps between polls once the first ones found it busy. Every ~100 ms the
 * peers' liveness is checked (a lost peer ends the wait with its cause); the
 * deadline is dev_deadline.h's: DCOMM_TIMEOUT beyond what the bytes could take
 * at a floor rate, none with DCOMM_TIMEOUT=0. */
static dc_status_t dev_wait(coord_dev_t *d, dc_net_t *net, dc_nccl_comm_t *nc, uint64_t ticket,
                            int coll, size_t bytes)
{
    uint64_t start = dc_now_ns(), next_check = start + DEV_CHECK_NS;
    uint64_t deadline = dc_dev_op_deadline(start, dc_config.timeout_ms, bytes);
    unsigned polls = 0;

    for (;;) {
        dc_status_t status = d->nccl->test(nc, ticket);
        uint64_t now;

        if (status != DCOMM_INPROGRESS) {
            return status;
        }
        now = dc_now_ns();
        if (now > deadline) {
            return dc_error_set(DCOMM_ERR_TIMEOUT, "NCCL %s of %zu bytes not done after %llu "
                                "ms (DCOMM_TIMEOUT %llu ms beyond %llu MiB/s), while every "
                                "peer looked alive", dc_coll_name(coll), bytes,
                                (unsigned long long)((now - start) / 1000000),
                                (unsigned long long)dc_config.timeout_ms,
                                (unsigned long long)(DC_DEV_FLOOR_BYTES_PER_S >> 20));
        }
        if (now >= next_check && net != NULL) {
            next_check = now + DEV_CHECK_NS;
            status = dc_net_check(net);
            if (status < 0) {
                return status; /* the cause (e.g. dlaunch's "rank 2 killed") is set */
            }
        }
        if (++polls > 64) {
            struct timespec ts = {0, 20000};

            if (net != NULL) {
                dc_net_progress(net); /* keep host traffic moving meanwhile */
            }
            nanosleep(&ts, NULL);
        }
    }
}

/* A staged device tensor: this rank's input goes into the pinned buffer,
 * where the host algorithm works (allreduce and broadcast in place). AVG is
 * summed there on every rank alike and scaled on the device (dc_dev_stage_out). A
 * rank without device buffers (joined; no cuda module) keeps the host path. */
dc_status_t dc_dev_stage_in(coord_dev_t *d, const exec_item_t *it, const dc_comm_t *cm,
                                  dc_coll_args_t *args)
{
    int coll = it->req.coll;
    size_t bytes;
    void *stage;
    dc_status_t status;

    if (coll == DC_COLL_ALLREDUCE && args->op == DCOMM_AVG) {
        args->op = DCOMM_SUM;
    }
    if (it->op == NULL || d->cuda == NULL) {
        return DCOMM_OK;
    }
    bytes = it->op->req.count * dc_reduce_dtype_size(it->req.dtype); /* this rank's own */
    DC_CHECK_GOTO(dc_dev_stage(d, bytes, &stage), status, out);
    if (coll != DC_COLL_BROADCAST || cm->rank == args->root) {
        DC_CHECK_GOTO(dc_dev_copy(d, stage, args->sendbuf, bytes), status, out);
    }
    args->sendbuf = stage;
    if (coll == DC_COLL_ALLREDUCE || coll == DC_COLL_BROADCAST) {
        args->recvbuf = stage;
    }
out:
    return status;
}

/* The staged result back to the device (the results of allgather,
 * reducescatter and alltoall stay on the host: dcomm_result). */
dc_status_t dc_dev_stage_out(coord_dev_t *d, const exec_item_t *it, const dc_comm_t *cm,
                                   const dc_coll_args_t *args)
{
    dc_op_t *op = it->op;
    size_t bytes = it->req.count * dc_reduce_dtype_size(it->req.dtype);
    dc_status_t status = DCOMM_OK;

    if (op == NULL || d->cuda == NULL) {
        return DCOMM_OK;
    }
    if (it->req.coll == DC_COLL_ALLREDUCE) {
        status = dc_dev_copy(d, op->recvbuf, args->recvbuf, bytes);
        if (status == DCOMM_OK && it->req.op == DCOMM_AVG) {
            status = dc_dev_scale(d, op->recvbuf, it->req.count, it->req.dtype, cm->size);
        }
    } else if (it->req.coll == DC_COLL_BROADCAST && cm->rank != args->root) {
        status = dc_dev_copy(d, op->recvbuf, args->recvbuf, bytes);
    }
    return status;
}

/* What the device rows call back for one item of comm (dc_coll_dev_t.owner). */
typedef struct dev_call {
    coord_dev_t *d;
    int32_t comm;
    dc_net_t *net;
} dev_call_t;

static dc_status_t call_scratch(void *owner, size_t bytes, void **buf_p)
{
    return dc_dev_dbuf(((dev_call_t *)owner)->d, bytes, buf_p);
}

static dc_status_t call_copy(void *owner, void *dst, const void *src, size_t bytes)
{
    return dc_dev_copy(((dev_call_t *)owner)->d, dst, src, bytes);
}

static dc_status_t call_zero(void *owner, void *dptr, size_t bytes)
{
    return dev_zero(((dev_call_t *)owner)->d, dptr, bytes);
}

/* An enqueued operation, polled to completion (dev_wait); a failure other
 * than a refused argument marks the comm's communicator failed: its
 * operations may never finish, so it is aborted, not closed. */
static dc_status_t call_finish(void *owner, dc_status_t status, uint64_t ticket, int coll,
                               size_t bytes)
{
    dev_call_t *c = owner;

    if (status == DCOMM_OK) {
        status = dev_wait(c->d, c->net, c->d->comms[c->comm].nccl, ticket, coll, bytes);
    }
    if (status < 0 && status != DCOMM_ERR_INVALID_ARG) {
        c->d->comms[c->comm].failed = 1;
    }
    return status;
}

dc_status_t dc_dev_run(coord_dev_t *d, dc_runner_t *run, int coll, int32_t comm, int joined,
                       const dc_coll_ctx_t *ctx, const dc_coll_args_t *args, const char *name,
                       const char **algo_p)
{
    dev_call_t call = {.d = d, .comm = comm, .net = ctx->net};
    dc_coll_dev_t dev = {
        .nccl = d->nccl,
        .nccl_comm = d->comms[comm].nccl,
        .joined = joined,
        .owner = &call,
        .scratch = call_scratch,
        .copy = call_copy,
        .zero = call_zero,
        .finish = call_finish,
    };
    dc_coll_ctx_t dctx = *ctx;

    dctx.dev = &dev;
    return dc_run_device(run, coll, &dctx, args, name, algo_p);
}

dc_status_t dc_dev_scale(coord_dev_t *d, void *buf, size_t count, int dtype, int size)
{
    if (count == 0 || d->cuda == NULL) {
        return DCOMM_OK;
    }
    return d->cuda->scale(buf, count, dtype, 1.0 / size);
}

void dc_dev_comm_close(coord_dev_t *d, int32_t comm)
{
    if (comm < 0 || comm >= DC_MAX_COMMS) {
        return;
    }
    if (d->comms[comm].nccl != NULL) {
        int lost;

        pthread_mutex_lock(&d->st->lock);
        lost = d->st->fatal_status != 0;
        pthread_mutex_unlock(&d->st->lock);
        /* After a failure or a peer loss an operation may be stuck in flight, and
         * closing would wait for it (and for peers) forever. */
        if (d->comms[comm].failed || lost) {
            d->nccl->comm_abort(d->comms[comm].nccl);
        } else {
            d->nccl->comm_close(d->comms[comm].nccl);
        }
    }
    d->comms[comm].nccl = NULL;
    d->comms[comm].failed = 0;
    d->comms[comm].mode = DC_DEV_UNDECIDED;
}

void dc_dev_free(coord_dev_t *d)
{

    for (int i = 0; i < DC_MAX_COMMS; i++) {
        dc_dev_comm_close(d, i);
    }
    if (d->cuda != NULL) {
        if (d->stage != NULL) {
            d->cuda->host_free(d->stage);
        }
        if (d->dbuf != NULL) {
            d->cuda->device_free(d->dbuf);
        }
    }
    d->stage = d->dbuf = NULL;
    d->stage_size = d->dbuf_size = 0;
}
