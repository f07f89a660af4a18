/* The "nccl" device rows (collectives/coll_nccl.c) without a GPU: a recording
 * stand-in for the nccl module's ops, working on host memory as if every rank
 * of the comm held this rank's input, and a stand-in for the caller's services
 * (scratch, copies, zeros, finish). Checks which NCCL operation each
 * collective enqueues with which buffers, counts, dtype, op and root; that
 * every enqueue (and a failed reducescatter preparation) ends in finish() with
 * its status, ticket, collective and bytes; that results reach the caller's
 * buffer only after a finished operation; that a joined rank sends zeros from
 * scratch; and the device table the selector offers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "select.h"

#define SIZE 4 /* ranks of the pretend comm */
#define RANK 1 /* this rank */

enum {
    OP_NONE,
    OP_ALLREDUCE,
    OP_BROADCAST,
    OP_ALLGATHER,
    OP_ALLGATHERV,
    OP_REDUCESCATTER,
    OP_ALLTOALLV
};

/* What the stand-ins saw. */
static struct {
    int calls, which;
    const void *send;
    void *recv;
    size_t count;
    const size_t *counts, *recv_counts;
    int dtype, op, root;
    dc_status_t enqueue_status; /* what an enqueue returns */
    int finishes, finish_coll;
    dc_status_t finish_in, finish_out; /* finish_out 0: pass finish_in on */
    uint64_t finish_ticket;
    size_t finish_bytes;
    int copies, zeros, scratch_fail;
    size_t scratch_bytes;
    char scratch[4096];
} seen;

static dc_nccl_comm_t *const fake_comm = (dc_nccl_comm_t *)&seen;

#define TICKET 77u

static dc_status_t enqueued(int which, const void *send, void *recv, size_t count, int dtype,
                            uint64_t *ticket_p)
{
    seen.calls++;
    seen.which = which;
    seen.send = send;
    seen.recv = recv;
    seen.count = count;
    seen.dtype = dtype;
    *ticket_p = TICKET;
    return seen.enqueue_status;
}

/* Every rank holds this rank's input: a sum is SIZE times it. */
static dc_status_t fake_allreduce(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                  int dtype, int op, uint64_t *ticket_p)
{
    float tmp[512];

    assert_ptr_equal(c, fake_comm);
    seen.op = op;
    for (size_t i = 0; i < count; i++) {
        tmp[i] = SIZE * ((const float *)send)[i];
    }
    memcpy(recv, tmp, count * sizeof(float));
    return enqueued(OP_ALLREDUCE, send, recv, count, dtype, ticket_p);
}

static dc_status_t fake_broadcast(dc_nccl_comm_t *c, void *buf, size_t count, int dtype, int root,
                                  uint64_t *ticket_p)
{
    assert_ptr_equal(c, fake_comm);
    seen.root = root;
    return enqueued(OP_BROADCAST, buf, buf, count, dtype, ticket_p);
}

/* Block r of a gathered result: r * 100 + i. */
static void fill_blocks(float *recv, const size_t *counts, size_t each)
{
    size_t k = 0;

    for (int r = 0; r < SIZE; r++) {
        for (size_t i = 0; i < (counts ? counts[r] : each); i++) {
            recv[k++] = (float)(r * 100 + (int)i);
        }
    }
}

static dc_status_t fake_allgather(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                  int dtype, uint64_t *ticket_p)
{
    assert_ptr_equal(c, fake_comm);
    fill_blocks(recv, NULL, count);
    return enqueued(OP_ALLGATHER, send, recv, count, dtype, ticket_p);
}

static dc_status_t fake_allgatherv(dc_nccl_comm_t *c, const void *send, void *recv,
                                   const size_t *counts, int dtype, uint64_t *ticket_p)
{
    assert_ptr_equal(c, fake_comm);
    seen.counts = counts;
    fill_blocks(recv, counts, 0);
    return enqueued(OP_ALLGATHERV, send, recv, 0, dtype, ticket_p);
}

static dc_status_t fake_reducescatter(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                      int dtype, int op, uint64_t *ticket_p)
{
    assert_ptr_equal(c, fake_comm);
    seen.op = op;
    for (size_t i = 0; i < count; i++) {
        ((float *)recv)[i] = SIZE * ((const float *)send)[RANK * count + i];
    }
    return enqueued(OP_REDUCESCATTER, send, recv, count, dtype, ticket_p);
}

static dc_status_t fake_alltoallv(dc_nccl_comm_t *c, const void *send, const size_t *sendcounts,
                                  void *recv, const size_t *recvcounts, int dtype,
                                  uint64_t *ticket_p)
{
    assert_ptr_equal(c, fake_comm);
    seen.counts = sendcounts;
    seen.recv_counts = recvcounts;
    fill_blocks(recv, recvcounts, 0);
    return enqueued(OP_ALLTOALLV, send, recv, 0, dtype, ticket_p);
}

static const dc_nccl_ops_t fake_ops = {
    .allreduce = fake_allreduce,
    .broadcast = fake_broadcast,
    .allgather = fake_allgather,
    .reducescatter = fake_reducescatter,
    .allgatherv = fake_allgatherv,
    .alltoallv = fake_alltoallv,
};

static dc_status_t fake_scratch(void *owner, size_t bytes, void **buf_p)
{
    assert_ptr_equal(owner, &seen);
    assert_true(bytes <= sizeof(seen.scratch));
    seen.scratch_bytes = bytes;
    *buf_p = seen.scratch;
    return seen.scratch_fail ? DCOMM_ERR_NO_MEMORY : DCOMM_OK;
}

static dc_status_t fake_copy(void *owner, void *dst, const void *src, size_t bytes)
{
    assert_ptr_equal(owner, &seen);
    seen.copies++;
    memmove(dst, src, bytes);
    return DCOMM_OK;
}

static dc_status_t fake_zero(void *owner, void *dptr, size_t bytes)
{
    assert_ptr_equal(owner, &seen);
    seen.zeros++;
    memset(dptr, 0, bytes);
    return DCOMM_OK;
}

static dc_status_t fake_finish(void *owner, dc_status_t status, uint64_t ticket, int coll,
                               size_t bytes)
{
    assert_ptr_equal(owner, &seen);
    seen.finishes++;
    seen.finish_in = status;
    seen.finish_ticket = ticket;
    seen.finish_coll = coll;
    seen.finish_bytes = bytes;
    return seen.finish_out != 0 ? seen.finish_out : status;
}

static dc_coll_dev_t dev;
static dc_coll_ctx_t ctx;

static int setup(void **state)
{
    (void)state;
    memset(&seen, 0, sizeof(seen));
    memset(seen.scratch, 0x55, sizeof(seen.scratch)); /* not zeros: zero() must be called */
    dev = (dc_coll_dev_t){
        .nccl = &fake_ops,
        .nccl_comm = fake_comm,
        .owner = &seen,
        .scratch = fake_scratch,
        .copy = fake_copy,
        .zero = fake_zero,
        .finish = fake_finish,
    };
    ctx = (dc_coll_ctx_t){.rank = RANK, .size = SIZE, .dev = &dev};
    return 0;
}

static dc_coll_args_t f32(const void *send, void *recv, size_t count)
{
    return (dc_coll_args_t){.sendbuf = send,
                            .recvbuf = recv,
                            .count = count,
                            .dtype = DCOMM_FLOAT32,
                            .op = DCOMM_SUM};
}

static void iota(float *x, size_t n, float base)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = base + (float)i;
    }
}

/* The row of coll the selector offers for device buffers. */
static const dc_coll_algo_t *row(int coll)
{
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    int n = dc_select_device(coll, out, DC_SELECT_MAX_ROWS);

    assert_int_equal(n, 1);
    return out[0];
}

static void expect_finished(int coll, size_t bytes)
{
    assert_int_equal(seen.finishes, 1);
    assert_int_equal(seen.finish_in, DCOMM_OK);
    assert_int_equal(seen.finish_ticket, TICKET);
    assert_int_equal(seen.finish_coll, coll);
    assert_int_equal(seen.finish_bytes, bytes);
}

static void test_table(void **state)
{
    const int colls[] = {DC_COLL_ALLREDUCE, DC_COLL_BROADCAST, DC_COLL_ALLGATHER,
                         DC_COLL_REDUCESCATTER, DC_COLL_ALLTOALL};
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    size_t counts[SIZE] = {0};
    dc_coll_args_t args = f32(NULL, NULL, 0);

    (void)state;
    args.counts = args.recv_counts = counts;
    for (size_t i = 0; i < sizeof(colls) / sizeof(colls[0]); i++) {
        const dc_coll_algo_t *a = row(colls[i]);
        dc_coll_ctx_t host = ctx;

        assert_string_equal(a->name, "nccl"); /* stats and timeline say "nccl" */
        assert_false(a->segments);
        assert_true(a->supported(&ctx, &args));
        /* Host buffers (no dev), no nccl module, no communicator: declined. */
        host.dev = NULL;
        assert_false(a->supported(&host, &args));
        dev.nccl = NULL;
        assert_false(a->supported(&ctx, &args));
        dev.nccl = &fake_ops;
        dev.nccl_comm = NULL;
        assert_false(a->supported(&ctx, &args));
        dev.nccl_comm = fake_comm;
    }
    assert_int_equal(dc_select_device(DC_COLL_BARRIER, out, DC_SELECT_MAX_ROWS), 0);
    /* The host selector never offers them. */
    for (int i = 0; i < dc_algo_table_len; i++) {
        assert_string_not_equal(dc_algo_table[i].algo->name, "nccl");
    }
}

static void test_allreduce(void **state)
{
    float x[10] = {0};
    dc_coll_args_t args = f32(x, x, 10);

    (void)state;
    iota(x, 10, 1);
    args.op = DCOMM_MAX;
    assert_int_equal(row(DC_COLL_ALLREDUCE)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_ALLREDUCE);
    assert_ptr_equal(seen.send, x);
    assert_ptr_equal(seen.recv, x);
    assert_int_equal(seen.count, 10);
    assert_int_equal(seen.dtype, DCOMM_FLOAT32);
    assert_int_equal(seen.op, DCOMM_MAX);
    expect_finished(DC_COLL_ALLREDUCE, 40);
    assert_true(x[9] == SIZE * 10.0f);
    assert_int_equal(seen.copies + seen.zeros, 0); /* in the caller's device buffer */

    /* Nothing to do: nothing enqueued, nothing waited for. */
    args.count = 0;
    setup(NULL);
    assert_int_equal(row(DC_COLL_ALLREDUCE)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.calls + seen.finishes, 0);
}

/* A joined rank: its arguments are host buffers the row must not hand to
 * NCCL; it reduces zeros in scratch, in place. */
static void test_allreduce_joined(void **state)
{
    float host[6] = {9, 9, 9, 9, 9, 9};
    dc_coll_args_t args = f32(host, host, 6);

    (void)state;
    dev.joined = 1;
    assert_int_equal(row(DC_COLL_ALLREDUCE)->run(&ctx, &args), DCOMM_OK);
    assert_ptr_equal(seen.send, seen.scratch);
    assert_ptr_equal(seen.recv, seen.scratch);
    assert_int_equal(seen.scratch_bytes, 24);
    assert_int_equal(seen.zeros, 1);
    assert_true(((float *)seen.scratch)[5] == 0.0f);
    assert_true(host[0] == 9.0f);
    expect_finished(DC_COLL_ALLREDUCE, 24);

    /* Scratch it cannot have: that error, nothing enqueued. */
    setup(NULL);
    dev.joined = 1;
    seen.scratch_fail = 1;
    assert_int_equal(row(DC_COLL_ALLREDUCE)->run(&ctx, &args), DCOMM_ERR_NO_MEMORY);
    assert_int_equal(seen.calls + seen.finishes, 0);
}

static void test_broadcast(void **state)
{
    float x[5] = {0};
    dc_coll_args_t args = f32(x, x, 5);

    (void)state;
    args.root = 3;
    assert_int_equal(row(DC_COLL_BROADCAST)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_BROADCAST);
    assert_ptr_equal(seen.recv, x);
    assert_int_equal(seen.count, 5);
    assert_int_equal(seen.root, 3);
    expect_finished(DC_COLL_BROADCAST, 20);

    setup(NULL);
    dev.joined = 1;
    args.root = 2;
    assert_int_equal(row(DC_COLL_BROADCAST)->run(&ctx, &args), DCOMM_OK);
    assert_ptr_equal(seen.recv, seen.scratch);
    assert_int_equal(seen.zeros, 1);
    assert_int_equal(seen.root, 2);
}

static void test_allgather(void **state)
{
    float send[3] = {0}, result[12];
    size_t even[SIZE] = {3, 3, 3, 3}, uneven[SIZE] = {2, 0, 3, 1}, none[SIZE] = {0};
    dc_coll_args_t args = f32(send, result, 3);

    (void)state;
    args.counts = even;
    assert_int_equal(row(DC_COLL_ALLGATHER)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_ALLGATHER);
    assert_ptr_equal(seen.send, send);
    assert_ptr_equal(seen.recv, seen.scratch);
    assert_int_equal(seen.count, 3);
    assert_int_equal(seen.scratch_bytes, 48);
    expect_finished(DC_COLL_ALLGATHER, 48);
    assert_true(result[0] == 0.0f && result[5] == 102.0f && result[11] == 302.0f);

    setup(NULL);
    args.counts = uneven;
    args.count = 0;
    memset(result, 0, sizeof(result));
    assert_int_equal(row(DC_COLL_ALLGATHER)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_ALLGATHERV);
    assert_ptr_equal(seen.counts, uneven);
    expect_finished(DC_COLL_ALLGATHER, 24);
    assert_true(result[1] == 1.0f && result[2] == 200.0f && result[5] == 300.0f);

    /* Nothing gathered anywhere: nothing enqueued. */
    setup(NULL);
    args.counts = none;
    assert_int_equal(row(DC_COLL_ALLGATHER)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.calls + seen.finishes, 0);
}

/* Equal segments: NCCL's reducescatter reads the input in place and writes
 * past it in scratch. */
static void test_reducescatter_equal(void **state)
{
    float send[8] = {0}, result[2] = {0};
    dc_coll_args_t args = f32(send, result, 8);

    (void)state;
    iota(send, 8, 0);
    args.op = DCOMM_PROD;
    assert_int_equal(row(DC_COLL_REDUCESCATTER)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_REDUCESCATTER);
    assert_ptr_equal(seen.send, send);
    assert_ptr_equal(seen.recv, seen.scratch + 32);
    assert_int_equal(seen.count, 2);
    assert_int_equal(seen.op, DCOMM_PROD);
    assert_int_equal(seen.scratch_bytes, 32 + 8);
    expect_finished(DC_COLL_REDUCESCATTER, 32);
    assert_true(result[0] == SIZE * 2.0f && result[1] == SIZE * 3.0f);
    assert_int_equal(seen.copies, 1);

    /* Joined: zeros in scratch are the input. */
    setup(NULL);
    dev.joined = 1;
    assert_int_equal(row(DC_COLL_REDUCESCATTER)->run(&ctx, &args), DCOMM_OK);
    assert_ptr_equal(seen.send, seen.scratch);
    assert_int_equal(seen.zeros, 1);
    assert_true(result[0] == 0.0f);
}

/* Uneven segments (10 over 4: this rank's is [3, 6)): an allreduce of a copy
 * in scratch, and this rank's segment of it. */
static void test_reducescatter_uneven(void **state)
{
    float send[10] = {0}, result[3] = {0};
    dc_coll_args_t args = f32(send, result, 10);

    (void)state;
    iota(send, 10, 0);
    assert_int_equal(row(DC_COLL_REDUCESCATTER)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_ALLREDUCE);
    assert_ptr_equal(seen.send, seen.scratch);
    assert_ptr_equal(seen.recv, seen.scratch);
    assert_int_equal(seen.count, 10);
    assert_int_equal(seen.scratch_bytes, 40 + 12);
    expect_finished(DC_COLL_REDUCESCATTER, 40);
    assert_true(result[0] == SIZE * 3.0f && result[2] == SIZE * 5.0f);
    assert_true(send[0] == 0.0f); /* the input is not reduced in place */
    assert_int_equal(seen.copies, 2);
}

/* Errors end in finish() (the caller marks the communicator failed), and
 * nothing is copied out: an enqueue that fails, a wait that fails, and a
 * reducescatter whose input cannot be prepared. */
static void test_errors(void **state)
{
    float send[8] = {0}, result[8] = {0};
    size_t counts[SIZE] = {2, 2, 2, 2};
    dc_coll_args_t args = f32(send, result, 8);

    (void)state;
    iota(send, 8, 1);
    seen.enqueue_status = DCOMM_ERR_TRANSPORT;
    assert_int_equal(row(DC_COLL_REDUCESCATTER)->run(&ctx, &args), DCOMM_ERR_TRANSPORT);
    assert_int_equal(seen.finishes, 1);
    assert_int_equal(seen.finish_in, DCOMM_ERR_TRANSPORT);
    assert_int_equal(seen.copies, 0);
    assert_true(result[0] == 0.0f);

    setup(NULL);
    seen.finish_out = DCOMM_ERR_TIMEOUT;
    args.counts = counts;
    args.count = 2;
    assert_int_equal(row(DC_COLL_ALLGATHER)->run(&ctx, &args), DCOMM_ERR_TIMEOUT);
    assert_int_equal(seen.copies, 0);
    assert_true(result[0] == 0.0f);

    setup(NULL);
    seen.scratch_fail = 1;
    args.count = 8;
    assert_int_equal(row(DC_COLL_REDUCESCATTER)->run(&ctx, &args), DCOMM_ERR_NO_MEMORY);
    assert_int_equal(seen.calls, 0);
    assert_int_equal(seen.finishes, 1);
    assert_int_equal(seen.finish_in, DCOMM_ERR_NO_MEMORY);

    /* Allgather's scratch: that error, before anything is enqueued or waited. */
    setup(NULL);
    seen.scratch_fail = 1;
    args.count = 2;
    assert_int_equal(row(DC_COLL_ALLGATHER)->run(&ctx, &args), DCOMM_ERR_NO_MEMORY);
    assert_int_equal(seen.calls + seen.finishes, 0);
}

static void test_alltoall(void **state)
{
    float send[6] = {0}, result[5] = {0};
    size_t sendcounts[SIZE] = {1, 2, 0, 3}, recvcounts[SIZE] = {2, 0, 1, 2}, none[SIZE] = {0};
    dc_coll_args_t args = f32(send, result, 6);

    (void)state;
    args.counts = sendcounts;
    args.recv_counts = recvcounts;
    assert_int_equal(row(DC_COLL_ALLTOALL)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_ALLTOALLV);
    assert_ptr_equal(seen.send, send);
    assert_ptr_equal(seen.counts, sendcounts);
    assert_ptr_equal(seen.recv_counts, recvcounts);
    assert_ptr_equal(seen.recv, seen.scratch);
    expect_finished(DC_COLL_ALLTOALL, 24); /* the larger of sent and received */
    assert_true(result[1] == 1.0f && result[2] == 200.0f && result[4] == 301.0f);

    /* A rank with nothing to send or receive still takes part. */
    setup(NULL);
    args.counts = args.recv_counts = none;
    args.count = 0;
    assert_int_equal(row(DC_COLL_ALLTOALL)->run(&ctx, &args), DCOMM_OK);
    assert_int_equal(seen.which, OP_ALLTOALLV);
    expect_finished(DC_COLL_ALLTOALL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_table, setup),
        cmocka_unit_test_setup(test_allreduce, setup),
        cmocka_unit_test_setup(test_allreduce_joined, setup),
        cmocka_unit_test_setup(test_broadcast, setup),
        cmocka_unit_test_setup(test_allgather, setup),
        cmocka_unit_test_setup(test_reducescatter_equal, setup),
        cmocka_unit_test_setup(test_reducescatter_uneven, setup),
        cmocka_unit_test_setup(test_errors, setup),
        cmocka_unit_test_setup(test_alltoall, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
