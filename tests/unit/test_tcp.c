/*
 * Tests of the tcp transport's data path with real processes: each test forks
 * 2-4 ranks that meet through a directory store on loopback (tcp_procs.c) and
 * moves messages of every size, plain and encrypted, in and out of order, with
 * mismatched tags, and with a rank killed mid-job. Children report failure
 * through their exit status. Handshakes: test_tcp_handshake.c; records and
 * tampered streams: test_tcp_records.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp_procs.h"

/* ---- single-process tests -------------------------------------------------- */

static void test_query(void **state)
{
    dc_transport_attr_t attr;

    (void)state;
    assert_int_equal(tcp->query(NULL, &attr), DCOMM_OK);
    assert_int_equal(attr.usable, 1);
    assert_int_equal(attr.same_host_only, 0);
    assert_true(attr.priority > 0 && attr.priority < 100);
    assert_true(attr.latency_us > 0 && attr.bandwidth_gbs > 0);
    assert_string_equal(tcp->name, "tcp");
    assert_int_equal(tcp->abi_version, DC_TRANSPORT_ABI_VERSION);
}

static void test_open_addresses(void **state)
{
    rank_ctx_t ctx;
    dc_store_t *store;
    dc_transport_t *tp = NULL;
    char val[64] = {0};
    size_t len;

    (void)state;
    snprintf(store_dir, sizeof(store_dir), "/tmp/dcomm-test-tcp-XXXXXX");
    assert_non_null(mkdtemp(store_dir));
    assert_int_equal(dc_filestore_open(store_dir, &store), DCOMM_OK);
    ctx_init(&ctx, 1, 2);
    ctx.boot.store = store;

    /* Bad input is refused with a clear status. */
    ctx.boot.local_addr = "not-an-address";
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    ctx.boot.local_addr = NULL;
    ctx.boot.ifname = "no-such-if0";
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "no-such-if0"));
    ctx.boot.ifname = NULL;
    ctx.boot.store = NULL;
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    ctx.boot.store = store;
    ctx.peers[0] = 1; /* itself */
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    ctx.peers[0] = 0;
    assert_null(tp);

    /* By interface name: lo is 127.0.0.1, published under tcp/<rank>. */
    ctx.boot.ifname = "lo";
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_OK);
    assert_int_equal(dc_store_get(store, "tcp/1", val, sizeof(val) - 1, &len, 0), DCOMM_OK);
    assert_true(len < sizeof(val));
    assert_memory_equal(val, "127.0.0.1:", 10);
    assert_true(atoi(val + 10) > 0);
    /* A rank it does not serve. */
    dc_endpoint_t *ep = NULL;
    assert_int_equal(tcp->connect(tp, 5, &ep), DCOMM_ERR_INVALID_ARG);
    tcp->close(tp);
    store->ops->close(store);
    remove_store_dir();
}

/* ---- multi-process tests ---------------------------------------------------- */

static const size_t sizes[] = {0, 1, 65537, BIG};
#define NSIZES ((int)DC_ARRAY_SIZE(sizes))

/* Both ranks send every size to each other at once; then rank 0 streams 64 MiB
 * messages to rank 1 for a bandwidth figure. */
static void sizes_fn(rank_ctx_t *ctx)
{
    int peer = 1 - ctx->rank;
    dc_request_t reqs[2 * NSIZES];
    uint8_t *sbuf[NSIZES], *rbuf[NSIZES];

    for (int i = 0; i < NSIZES; i++) {
        sbuf[i] = malloc(DC_MAX(sizes[i], 1));
        rbuf[i] = malloc(DC_MAX(sizes[i], 1));
        CHECK(sbuf[i] != NULL && rbuf[i] != NULL);
        fill(sbuf[i], ctx->rank, sizes[i]);
        memset(rbuf[i], 0, DC_MAX(sizes[i], 1));
    }
    for (int i = 0; i < NSIZES; i++) {
        CHECK_EQ(tcp->irecv(ctx->eps[peer], rbuf[i], sizes[i], 100 + i, &reqs[i]), DCOMM_OK);
        CHECK_EQ(tcp->isend(ctx->eps[peer], sbuf[i], sizes[i], 100 + i, &reqs[NSIZES + i]),
                 DCOMM_OK);
    }
    /* Nothing completes outside progress(). */
    for (int i = 0; i < 2 * NSIZES; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_INPROGRESS);
    }
    drive(ctx, reqs, 2 * NSIZES);
    for (int i = 0; i < NSIZES; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_OK);
        CHECK_EQ(reqs[NSIZES + i].status, DCOMM_OK);
        CHECK_EQ(reqs[i].len, sizes[i]);
        verify(rbuf[i], peer, sizes[i]);
    }

    enum { REPS = 4 };
    dc_request_t bw[REPS + 1];
    uint8_t *big = ctx->rank == 0 ? sbuf[NSIZES - 1] : rbuf[NSIZES - 1];
    uint64_t t0 = dc_now_ns();

    for (int i = 0; i < REPS; i++) {
        if (ctx->rank == 0) {
            CHECK_EQ(tcp->isend(ctx->eps[1], big, BIG, 7, &bw[i]), DCOMM_OK);
        } else {
            CHECK_EQ(tcp->irecv(ctx->eps[0], big, BIG, 7, &bw[i]), DCOMM_OK);
        }
    }
    /* A zero-byte acknowledgement closes the timing on rank 0. */
    if (ctx->rank == 0) {
        CHECK_EQ(tcp->irecv(ctx->eps[1], NULL, 0, 8, &bw[REPS]), DCOMM_OK);
    } else {
        CHECK_EQ(tcp->isend(ctx->eps[0], NULL, 0, 8, &bw[REPS]), DCOMM_OK);
    }
    drive(ctx, bw, REPS + 1);
    for (int i = 0; i <= REPS; i++) {
        CHECK_EQ(bw[i].status, DCOMM_OK);
    }
    if (ctx->rank == 0) {
        double s = (double)(dc_now_ns() - t0) / 1e9;
        printf("[          ] tcp loopback%s: %d x 64 MiB in %.3f s = %.2f GB/s\n",
               ctx->boot.tcp_encrypt ? " (encrypted)" : "", REPS, s,
               REPS * (double)BIG / s / 1e9);
        fflush(stdout);
    } else {
        verify(big, 0, BIG);
    }
    for (int i = 0; i < NSIZES; i++) {
        free(sbuf[i]);
        free(rbuf[i]);
    }
}

static void test_sizes(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .fn = sizes_fn};

    (void)state;
    run_procs(&spec);
}

/* The same over encrypted streams: 0 B to 64 MiB both ways at once, records
 * that straddle messages and messages that span a thousand records. */
static void test_sizes_encrypted(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .encrypt = 3, .fn = sizes_fn};

    (void)state;
    run_procs(&spec);
}

/* Every rank sends many small messages with distinct tags to every other rank;
 * a tag or length out of order would fail the receive. */
enum { NSMALL = 1500, SMALL_MAX = 97 };

static void many_small_fn(rank_ctx_t *ctx)
{
    int npeers = ctx->size - 1, n = 2 * NSMALL * npeers, k = 0;
    dc_request_t *reqs = calloc((size_t)n, sizeof(*reqs));
    uint8_t *sbuf = malloc(SMALL_MAX), *rbuf = malloc((size_t)NSMALL * npeers * SMALL_MAX);

    CHECK(reqs != NULL && sbuf != NULL && rbuf != NULL);
    for (int i = 0; i < SMALL_MAX; i++) {
        sbuf[i] = (uint8_t)(ctx->rank * 50 + i);
    }
    /* Half the receives before the sends, half after some traffic. */
    for (int half = 0; half < 2; half++) {
        for (int p = 0, pi = 0; p < ctx->size; p++) {
            if (p == ctx->rank) {
                continue;
            }
            for (int i = half * NSMALL / 2; i < (half + 1) * NSMALL / 2; i++) {
                uint8_t *dst = rbuf + ((size_t)pi * NSMALL + i) * SMALL_MAX;
                CHECK_EQ(tcp->irecv(ctx->eps[p], dst, SMALL_MAX, ((uint64_t)i << 8) | p,
                                    &reqs[k++]),
                         DCOMM_OK);
            }
            pi++;
        }
        if (half == 0) {
            for (int p = 0; p < ctx->size; p++) {
                for (int i = 0; i < NSMALL && p != ctx->rank; i++) {
                    CHECK_EQ(tcp->isend(ctx->eps[p], sbuf, (size_t)i % SMALL_MAX,
                                        ((uint64_t)i << 8) | (uint64_t)ctx->rank, &reqs[k++]),
                             DCOMM_OK);
                }
            }
            for (int i = 0; i < 50; i++) {
                tcp->progress(ctx->tp);
            }
        }
    }
    CHECK_EQ(k, n);
    drive(ctx, reqs, n);
    for (int i = 0; i < n; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_OK);
        if (reqs[i].buf != sbuf) { /* a receive */
            size_t off = (size_t)((uint8_t *)reqs[i].buf - rbuf) / SMALL_MAX;
            int idx = (int)(off % NSMALL), src = (int)(reqs[i].tag & 0xff);

            CHECK_EQ(reqs[i].tag >> 8, idx);
            CHECK_EQ(reqs[i].len, (size_t)idx % SMALL_MAX);
            for (size_t j = 0; j < reqs[i].len; j++) {
                CHECK_EQ(((uint8_t *)reqs[i].buf)[j], (uint8_t)(src * 50 + j));
            }
        }
    }
    free(reqs);
    free(sbuf);
    free(rbuf);
}

static void test_many_small(void **state)
{
    test_spec_t spec = {.nranks = 4, .killed_rank = -1, .fn = many_small_fn};

    (void)state;
    run_procs(&spec);
}

/* Many small messages gathered into shared records, 4 ranks, encrypted. */
static void test_many_small_encrypted(void **state)
{
    test_spec_t spec = {.nranks = 4, .killed_rank = -1, .encrypt = 0xf, .fn = many_small_fn};

    (void)state;
    run_procs(&spec);
}

/* Rank 1 posts its receives late: until then its transport must not read, so
 * rank 0's big send stays incomplete (TCP flow control, no buffering). */
static void late_recv_fn(rank_ctx_t *ctx)
{
    uint8_t *buf = malloc(BIG), small[3] = {0};
    dc_request_t reqs[2];

    CHECK(buf != NULL);
    if (ctx->rank == 0) {
        fill(buf, 0, BIG);
        CHECK_EQ(tcp->isend(ctx->eps[1], buf, BIG, 1, &reqs[0]), DCOMM_OK);
        CHECK_EQ(tcp->isend(ctx->eps[1], "abc", 3, 2, &reqs[1]), DCOMM_OK);
        CHECK(drive_for(ctx, reqs, 1, 400) < 0);
        CHECK_EQ(reqs[0].status, DCOMM_INPROGRESS);
        store_flag(ctx, "late/checked");
        drive(ctx, reqs, 2);
    } else {
        uint64_t until = dc_deadline_ms(300);

        while (dc_now_ns() < until) {
            CHECK_EQ(tcp->progress(ctx->tp), 0);
            usleep(1000);
        }
        store_wait(ctx, "late/checked");
        memset(buf, 0, BIG);
        CHECK_EQ(tcp->irecv(ctx->eps[0], buf, BIG, 1, &reqs[0]), DCOMM_OK);
        CHECK_EQ(tcp->irecv(ctx->eps[0], small, sizeof(small), 2, &reqs[1]), DCOMM_OK);
        drive(ctx, reqs, 2);
        verify(buf, 0, BIG);
        CHECK(memcmp(small, "abc", 3) == 0);
    }
    CHECK_EQ(reqs[0].status, DCOMM_OK);
    CHECK_EQ(reqs[1].status, DCOMM_OK);
    free(buf);
}

static void test_late_recv(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .fn = late_recv_fn};

    (void)state;
    run_procs(&spec);
}

/* Mismatched tags and too-long messages fail their receive with
 * DCOMM_ERR_INTERNAL; the stream stays in step for the next message. Closing
 * with a receive pending completes it with DCOMM_ERR_SHUT_DOWN. */
static void mismatch_fn(rank_ctx_t *ctx)
{
    static const struct {
        uint64_t send_tag, recv_tag;
        size_t send_len, recv_len;
        dc_status_t expect;
    } cases[] = {
        {5, 4, 10, 10, DCOMM_ERR_INTERNAL},     /* wrong tag */
        {6, 6, 100, 50, DCOMM_ERR_INTERNAL},    /* too long */
        {7, 8, 0, 0, DCOMM_ERR_INTERNAL},       /* zero bytes still carry their tag */
        {9, 9, 8, 64, DCOMM_OK},                /* shorter than posted */
        {10, 11, 200000, 10, DCOMM_ERR_INTERNAL},
        {12, 12, 70000, 70000, DCOMM_OK},
        {13, 13, 0, 16, DCOMM_OK},
    };
    enum { N = (int)DC_ARRAY_SIZE(cases) };
    dc_request_t reqs[N], extra;
    uint8_t *bufs[N];

    for (int i = 0; i < N; i++) {
        size_t len = ctx->rank == 0 ? cases[i].send_len : cases[i].recv_len;

        bufs[i] = calloc(1, DC_MAX(len, 1));
        CHECK(bufs[i] != NULL);
        if (ctx->rank == 0) {
            fill(bufs[i], 0, len);
            CHECK_EQ(tcp->isend(ctx->eps[1], bufs[i], len, cases[i].send_tag, &reqs[i]),
                     DCOMM_OK);
        } else {
            CHECK_EQ(tcp->irecv(ctx->eps[0], bufs[i], len, cases[i].recv_tag, &reqs[i]),
                     DCOMM_OK);
        }
    }
    drive(ctx, reqs, N);
    for (int i = 0; i < N; i++) {
        if (ctx->rank == 0) {
            CHECK_EQ(reqs[i].status, DCOMM_OK); /* the sender cannot know */
            continue;
        }
        CHECK_EQ(reqs[i].status, cases[i].expect);
        if (cases[i].expect == DCOMM_OK) {
            CHECK_EQ(reqs[i].len, cases[i].send_len);
            verify(bufs[i], 0, cases[i].send_len);
        }
    }
    if (ctx->rank == 1) {
        CHECK_EQ(tcp->irecv(ctx->eps[0], bufs[0], 1, 99, &extra), DCOMM_OK);
        tcp->progress(ctx->tp);
        CHECK_EQ(extra.status, DCOMM_INPROGRESS);
        tcp->close(ctx->tp);
        ctx->tp = NULL;
        CHECK_EQ(extra.status, DCOMM_ERR_SHUT_DOWN);
        store_flag(ctx, "mismatch/closed");
    } else {
        store_wait(ctx, "mismatch/closed"); /* else rank 1 sees us leave first */
    }
    for (int i = 0; i < N; i++) {
        free(bufs[i]);
    }
}

static void test_mismatch(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .fn = mismatch_fn};

    (void)state;
    run_procs(&spec);
    /* Mismatched messages are drained record by record when encrypted. */
    spec.encrypt = 3;
    run_procs(&spec);
}

/* ---- hostile clients ---------------------------------------------------------- */
/* ---- lost peer ------------------------------------------------------------------ */

/* Rank 1 dies of SIGKILL: rank 0's pending send and receive to it fail with
 * DCOMM_ERR_PEER_LOST naming rank 1, so does check(), and later requests too;
 * ranks 0 and 2 keep working. */
static void killed_fn(rank_ctx_t *ctx)
{
    dc_request_t reqs[3];
    int one = 1, got = 0;

    if (ctx->rank == 1) {
        CHECK_EQ(tcp->isend(ctx->eps[0], &one, sizeof(one), 1, &reqs[0]), DCOMM_OK);
        drive(ctx, reqs, 1);
        store_wait(ctx, "kill/posted");
        raise(SIGKILL);
        child_fail(__LINE__, "still alive");
    }
    if (ctx->rank == 2) {
        CHECK_EQ(tcp->irecv(ctx->eps[0], &got, sizeof(got), 2, &reqs[0]), DCOMM_OK);
        drive(ctx, reqs, 1);
        CHECK_EQ(got, 42);
        return;
    }
    uint8_t *big = calloc(1, BIG);
    CHECK(big != NULL);
    CHECK_EQ(tcp->irecv(ctx->eps[1], &got, sizeof(got), 1, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(got, 1);
    CHECK_EQ(tcp->irecv(ctx->eps[1], &got, sizeof(got), 1, &reqs[0]), DCOMM_OK);
    CHECK_EQ(tcp->isend(ctx->eps[1], big, BIG, 1, &reqs[1]), DCOMM_OK);
    tcp->progress(ctx->tp);
    store_flag(ctx, "kill/posted");
    drive(ctx, reqs, 2);
    CHECK_EQ(reqs[0].status, DCOMM_ERR_PEER_LOST);
    CHECK_EQ(reqs[1].status, DCOMM_ERR_PEER_LOST);
    CHECK(strstr(dc_error_get(), "rank 1") != NULL);
    CHECK_EQ(tcp->check(ctx->tp), DCOMM_ERR_PEER_LOST);
    CHECK(strstr(dc_error_get(), "rank 1") != NULL);
    CHECK_EQ(tcp->isend(ctx->eps[1], &one, sizeof(one), 1, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(reqs[0].status, DCOMM_ERR_PEER_LOST);
    /* The other peer is unaffected. */
    got = 42;
    CHECK_EQ(tcp->isend(ctx->eps[2], &got, sizeof(got), 2, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(reqs[0].status, DCOMM_OK);
    free(big);
}

static void test_peer_killed(void **state)
{
    test_spec_t spec = {.nranks = 3, .killed_rank = 1, .fn = killed_fn};

    (void)state;
    run_procs(&spec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_open_addresses),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_many_small),
        cmocka_unit_test(test_late_recv),
        cmocka_unit_test(test_mismatch),
        cmocka_unit_test(test_peer_killed),
        cmocka_unit_test(test_sizes_encrypted),
        cmocka_unit_test(test_many_small_encrypted),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
