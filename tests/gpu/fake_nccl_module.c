/*
 * A stand-in libdcomm-nccl.so for machines without a GPU, for tests only: the
 * nccl module's ops over the fake cuda module's memory (built into the same
 * library, which the test directory offers under both names, so one copy of
 * the memory serves both tables). One rank only, where every collective is a
 * copy (or nothing); an operation reports "in progress" at its first poll, so
 * the coordinator's wait loop runs too. Lets CI run the coordinator's NCCL
 * path: the agreement, the selector's device rows, their scratch, copies and
 * waits, and closing the communicator.
 */
#include <stdlib.h>
#include <string.h>

#include "dc_reduce.h"
#include "fake_device.h"
#include "module_shim.h"

struct dc_nccl_comm {
    uint64_t next; /* ticket of the next operation */
    uint64_t busy; /* the ticket test() has reported in progress, plus one */
};

static dc_status_t fake_open(dc_store_t *store, const char *key, int rank, int nranks, int device,
                             int timeout_ms, dc_nccl_comm_t **comm_p)
{
    dc_nccl_comm_t *c;

    (void)store, (void)key, (void)timeout_ms;
    if (nranks != 1 || rank != 0 || device != 0) {
        return dc_error_set(DCOMM_ERR_UNSUPPORTED,
                            "fake nccl: one rank on device 0 only "
                            "(rank %d of %d, device %d)",
                            rank, nranks, device);
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "fake nccl: out of memory");
    }
    *comm_p = c;
    return DCOMM_OK;
}

static void fake_close(dc_nccl_comm_t *c)
{
    free(c);
}

/* One operation of one rank: count elements of dtype from send to recv, and
 * its ticket. Both must be device memory, as NCCL wants (a host buffer handed
 * to NCCL is a bug of the caller's). */
static dc_status_t fake_op(dc_nccl_comm_t *c, const void *send, void *recv, size_t count, int dtype,
                           uint64_t *ticket_p)
{
    dc_status_t status = DCOMM_OK;
    size_t len;
    void *d;
    const void *s;

    if (dtype < 0 || dtype >= DCOMM_DTYPE_COUNT) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "fake nccl: unknown dtype %d", dtype);
    }
    len = count * dc_reduce_dtype_size((dcomm_dtype_t)dtype);
    if (len > 0) {
        d = dc_fake_view(recv, len, &status);
        s = dc_fake_view(send, len, &status);
        if (status < 0) {
            return status;
        }
        if (d == recv || s == send) { /* the view of host memory is itself */
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "fake nccl: host memory (%p -> %p)", send,
                                recv);
        }
        memmove(d, s, len);
    }
    *ticket_p = c->next++;
    return DCOMM_OK;
}

static dc_status_t fake_reduce_op(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                  int dtype, int op, uint64_t *ticket_p)
{
    if (op < 0 || op >= DCOMM_OP_COUNT) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "fake nccl: unknown op %d", op);
    }
    return fake_op(c, send, recv, count, dtype, ticket_p); /* one rank: its own input */
}

static dc_status_t fake_broadcast(dc_nccl_comm_t *c, void *buf, size_t count, int dtype, int root,
                                  uint64_t *ticket_p)
{
    if (root != 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "fake nccl: root %d of one rank", root);
    }
    return fake_op(c, buf, buf, count, dtype, ticket_p);
}

static dc_status_t fake_gather(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                               int dtype, uint64_t *ticket_p)
{
    return fake_op(c, send, recv, count, dtype, ticket_p);
}

static dc_status_t fake_gatherv(dc_nccl_comm_t *c, const void *send, void *recv,
                                const size_t *counts, int dtype, uint64_t *ticket_p)
{
    return fake_op(c, send, recv, counts[0], dtype, ticket_p);
}

static dc_status_t fake_alltoallv(dc_nccl_comm_t *c, const void *send, const size_t *sendcounts,
                                  void *recv, const size_t *recvcounts, int dtype,
                                  uint64_t *ticket_p)
{
    if (sendcounts[0] != recvcounts[0]) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "fake nccl: sends %zu to itself, receives %zu",
                            sendcounts[0], recvcounts[0]);
    }
    return fake_op(c, send, recv, sendcounts[0], dtype, ticket_p);
}

static dc_status_t fake_test(dc_nccl_comm_t *c, uint64_t ticket)
{
    if (ticket >= c->next) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "fake nccl: no operation %llu",
                            (unsigned long long)ticket);
    }
    if (c->busy != ticket + 1) {
        c->busy = ticket + 1;
        return DCOMM_INPROGRESS;
    }
    return DCOMM_OK;
}

static const dc_nccl_ops_t fake_nccl_ops = {
    .comm_open = fake_open,
    .comm_close = fake_close,
    .allreduce = fake_reduce_op,
    .broadcast = fake_broadcast,
    .allgather = fake_gather,
    .reducescatter = fake_reduce_op,
    .alltoall = fake_gather,
    .allgatherv = fake_gatherv,
    .alltoallv = fake_alltoallv,
    .test = fake_test,
    .comm_abort = fake_close,
};

static dc_status_t fake_nccl_init(const dc_module_host_t *host)
{
    dc_module_shim_init(host);
    return DCOMM_OK;
}

__attribute__((visibility("default"))) const dc_module_t dcomm_module_v1_nccl = {
    .abi_version = DC_MODULE_ABI_VERSION,
    .name = "nccl",
    .init = fake_nccl_init,
    .nccl = &fake_nccl_ops,
};
