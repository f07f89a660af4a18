/*
 * The shm transport between forked processes (shm_procs.c): message sizes
 * around the ring size, bursts (FIFO order and tags), tag/length mismatches,
 * a process serving itself and shutdown with pending requests, bad input, and
 * a rough 64 MiB bandwidth figure. Peers that die, exit, fail or lie in their
 * segment header: test_shm_peers.c.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/shm.h"
#include "shm_ptracer.h"
#include "shm_procs.h"

/* ---- scenarios ---- */

#define TEST_RING (1u << 20)

static int body_sizes(ctx_t *c)
{
    const size_t sizes[] = {0, 1, 4095, TEST_RING - 1, TEST_RING + 1, 64u << 20};
    enum { N = DC_ARRAY_SIZE(sizes), CANARY = 16 };
    int peer = 1 - c->rank;
    uint8_t *sbuf[N], *rbuf[N];
    dc_request_t sreq[N], rreq[N];
    dc_request_t *reqs[2 * N];

    for (int i = 0; i < N; i++) {
        sbuf[i] = malloc(sizes[i] + 1);
        rbuf[i] = malloc(sizes[i] + CANARY);
        CHECK(sbuf[i] != NULL && rbuf[i] != NULL);
        fill(sbuf[i], sizes[i], c->rank, peer, (uint64_t)i);
        memset(rbuf[i], 0xa5, sizes[i] + CANARY);
    }
    /* receives posted longer than the message: len must come back as the actual */
    for (int i = 0; i < N; i++) {
        CHECK(ops->irecv(c->eps[peer], rbuf[i], sizes[i] + CANARY, 100 + (uint64_t)i,
                         &rreq[i]) == DCOMM_OK);
        CHECK(rreq[i].status == DCOMM_INPROGRESS);
        reqs[i] = &rreq[i];
    }
    for (int i = 0; i < N; i++) {
        CHECK(ops->isend(c->eps[peer], sbuf[i], sizes[i], 100 + (uint64_t)i, &sreq[i]) ==
              DCOMM_OK);
        CHECK(sreq[i].status == DCOMM_INPROGRESS); /* only progress() completes */
        reqs[N + i] = &sreq[i];
    }
    drive_ok(c, reqs, 2 * N, __LINE__);
    for (int i = 0; i < N; i++) {
        CHECK(rreq[i].len == sizes[i]);
        CHECK(verify(rbuf[i], sizes[i], peer, c->rank, (uint64_t)i));
        for (int k = 0; k < CANARY; k++) {
            CHECK(rbuf[i][sizes[i] + (size_t)k] == 0xa5);
        }
        free(sbuf[i]);
        free(rbuf[i]);
    }
    return 0;
}

static void test_sizes(void **state)
{
    scenario_t sc = {.nprocs = 2, .ring_size = 1u << 20, .killed_rank = -1, .body = body_sizes};

    (void)state;
    run_scenario(&sc);
}

/* Many small messages to every peer at once through a 4 KiB ring: sends queue
 * up at the sender, order and tags must hold. */
#define BURST 2000

static size_t burst_len(uint64_t i)
{
    return (size_t)((i * 37) % 300);
}

static int body_burst(ctx_t *c)
{
    int n = 0;
    dc_request_t *sreq = calloc(MAX_PROCS * BURST, sizeof(*sreq));
    dc_request_t *rreq = calloc(MAX_PROCS * BURST, sizeof(*rreq));
    dc_request_t **reqs = calloc(2 * MAX_PROCS * BURST, sizeof(*reqs));
    uint8_t *sbuf = malloc((size_t)MAX_PROCS * BURST * 300);
    uint8_t *rbuf = malloc((size_t)MAX_PROCS * BURST * 300);

    CHECK(sreq && rreq && reqs && sbuf && rbuf);
    for (int p = 0; p < c->nprocs; p++) {
        if (p == c->rank) {
            continue;
        }
        for (uint64_t i = 0; i < (uint64_t)BURST; i++) {
            size_t off = ((size_t)p * BURST + i) * 300;
            dc_request_t *r = &rreq[p * BURST + (int)i], *s = &sreq[p * BURST + (int)i];

            CHECK(ops->irecv(c->eps[p], rbuf + off, 300, ((uint64_t)p << 32) | i, r) ==
                  DCOMM_OK);
            fill(sbuf + off, burst_len(i), c->rank, p, i);
            CHECK(ops->isend(c->eps[p], sbuf + off, burst_len(i),
                             ((uint64_t)c->rank << 32) | i, s) == DCOMM_OK);
            reqs[n++] = r;
            reqs[n++] = s;
        }
    }
    drive_ok(c, reqs, n, __LINE__);
    for (int p = 0; p < c->nprocs; p++) {
        for (uint64_t i = 0; p != c->rank && i < (uint64_t)BURST; i++) {
            CHECK(rreq[p * BURST + (int)i].len == burst_len(i));
            CHECK(verify(rbuf + ((size_t)p * BURST + i) * 300, burst_len(i), p, c->rank, i));
        }
    }
    free(sreq);
    free(rreq);
    free(reqs);
    free(sbuf);
    free(rbuf);
    return 0;
}

static void test_burst(void **state)
{
    scenario_t sc = {.nprocs = 4, .ring_size = 4096, .killed_rank = -1, .body = body_burst};

    (void)state;
    run_scenario(&sc);
}

/* A wrong tag or a message longer than the receive fails that receive with
 * DCOMM_ERR_INTERNAL; the stream stays in step for the next ones. */
static int body_mismatch(ctx_t *c)
{
    static const struct {
        uint64_t send_tag;
        size_t send_len;
        uint64_t recv_tag;
        size_t recv_len;
        dc_status_t want;
    } msgs[] = {
        {1, 100, 9, 100, DCOMM_ERR_INTERNAL},     /* wrong tag */
        {2, 10000, 2, 9999, DCOMM_ERR_INTERNAL},  /* too long, and longer than the ring */
        {3, 50, 3, 64, DCOMM_OK},
        {4, 0, 5, 0, DCOMM_ERR_INTERNAL},         /* empty message, wrong tag */
        {6, 0, 6, 8, DCOMM_OK},
        {7, 5000, 7, 5000, DCOMM_OK},
    };
    enum { N = DC_ARRAY_SIZE(msgs) };
    static uint8_t bufs[N][10000];
    dc_request_t req[N];
    dc_request_t *reqs[N];

    for (int i = 0; i < N; i++) {
        reqs[i] = &req[i];
        if (c->rank == 0) {
            fill(bufs[i], msgs[i].send_len, 0, 1, (uint64_t)i);
            CHECK(ops->isend(c->eps[1], bufs[i], msgs[i].send_len, msgs[i].send_tag, &req[i]) ==
                  DCOMM_OK);
        } else {
            CHECK(ops->irecv(c->eps[0], bufs[i], msgs[i].recv_len, msgs[i].recv_tag, &req[i]) ==
                  DCOMM_OK);
        }
    }
    if (c->rank == 0) {
        drive_ok(c, reqs, N, __LINE__); /* the sender never knows */
        return 0;
    }
    CHECK(drive(c, reqs, N, DRIVE_MS, NULL) == 0);
    for (int i = 0; i < N; i++) {
        if (req[i].status != msgs[i].want) {
            child_fail(__LINE__, "receive %d: status %d, want %d", i, req[i].status,
                       msgs[i].want);
        }
        if (msgs[i].want == DCOMM_OK) {
            CHECK(req[i].len == msgs[i].send_len);
            CHECK(verify(bufs[i], msgs[i].send_len, 0, 1, (uint64_t)i));
        }
    }
    return 0;
}

static void test_mismatch(void **state)
{
    scenario_t sc = {.nprocs = 2, .ring_size = 4096, .killed_rank = -1, .body = body_mismatch};

    (void)state;
    run_scenario(&sc);
}

/* One process that serves itself: loopback through its own ring, then close()
 * with requests pending fails them with DCOMM_ERR_SHUT_DOWN. */
static int body_self_close(ctx_t *c)
{
    static uint8_t out[100000], in[100000];
    dc_request_t s, r, *reqs[2] = {&s, &r};

    fill(out, sizeof(out), 0, 0, 3);
    CHECK(ops->isend(c->eps[0], out, sizeof(out), 3, &s) == DCOMM_OK); /* > 64K ring */
    CHECK(ops->irecv(c->eps[0], in, sizeof(in), 3, &r) == DCOMM_OK);
    drive_ok(c, reqs, 2, __LINE__);
    CHECK(verify(in, sizeof(in), 0, 0, 3));
    /* no progress() from here on: neither can complete */
    CHECK(ops->irecv(c->eps[0], in, sizeof(in), 4, &r) == DCOMM_OK);
    CHECK(ops->isend(c->eps[0], out, sizeof(out), 4, &s) == DCOMM_OK);
    CHECK(r.status == DCOMM_INPROGRESS && s.status == DCOMM_INPROGRESS);
    ops->close(c->tp);
    c->tp = NULL;
    CHECK(r.status == DCOMM_ERR_SHUT_DOWN);
    CHECK(s.status == DCOMM_ERR_SHUT_DOWN);
    return 0;
}

static void test_self_and_close(void **state)
{
    scenario_t sc = {.nprocs = 1, .ring_size = 64u << 10, .serve_self = 1, .killed_rank = -1,
                     .body = body_self_close};

    (void)state;
    run_scenario(&sc);
}

/* Rough one-way bandwidth of 64 MiB messages between two processes. */
static int body_bandwidth(ctx_t *c)
{
    const size_t size = 64u << 20;
    enum { ITERS = 5 };
    uint8_t *buf = malloc(size), ack = 0;
    dc_request_t data, ackreq, *reqs[1];
    uint64_t t0 = 0;

    CHECK(buf != NULL);
    if (c->rank == 0) {
        fill(buf, size, 0, 1, 0);
    } else {
        memset(buf, 0, size); /* fault the pages in before timing */
    }
    for (int it = -1; it < ITERS; it++) { /* iteration -1 warms up */
        if (it == 0) {
            t0 = dc_now_ns();
        }
        /* stamp each iteration so a message that did not move cannot pass */
        const size_t at[3] = {0, size / 2, size - 1};
        if (c->rank == 0) {
            for (int k = 0; k < 3; k++) {
                buf[at[k]] = (uint8_t)(it + 11 * k + 1);
            }
            CHECK(ops->isend(c->eps[1], buf, size, 1, &data) == DCOMM_OK);
            CHECK(ops->irecv(c->eps[1], &ack, 0, 2, &ackreq) == DCOMM_OK);
        } else {
            CHECK(ops->irecv(c->eps[0], buf, size, 1, &data) == DCOMM_OK);
            reqs[0] = &data;
            drive_ok(c, reqs, 1, __LINE__);
            for (int k = 0; k < 3; k++) {
                CHECK(buf[at[k]] == (uint8_t)(it + 11 * k + 1));
                buf[at[k]] = pattern(0, 1, 0, at[k]);
            }
            CHECK(ops->isend(c->eps[0], &ack, 0, 2, &ackreq) == DCOMM_OK);
        }
        dc_request_t *both[2] = {&data, &ackreq};
        drive_ok(c, both, 2, __LINE__);
    }
    if (c->rank == 1) {
        double s = (double)(dc_now_ns() - t0) / 1e9;
        printf("[ shm bw   ] 64 MiB x %d: %.3f s, %.2f GB/s (default ring)\n", ITERS, s,
               (double)size * ITERS / s / 1e9);
        fflush(stdout);
        CHECK(verify(buf, size, 0, 1, 0));
    }
    free(buf);
    return 0;
}

static void test_bandwidth(void **state)
{
    scenario_t sc = {.nprocs = 2, .killed_rank = -1, .body = body_bandwidth};

    (void)state;
    run_scenario(&sc);
}

/* ---- in-process checks of bad input ---- */

static void test_bad_input(void **state)
{
    char dir[] = "/tmp/dcomm-test-shm-XXXXXX";
    int host_of[3] = {0, 0, 1}, local_rank_of[3] = {0, 1, 0}, peers[2];
    dc_topo_t topo = {.rank = 0, .size = 3, .nhosts = 2, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = 2, .ncores = 2};
    dc_bootstrap_t boot = {.topo = &topo, .timeout_ms = 100, .peers = peers};
    dc_transport_attr_t attr;
    dc_transport_t *tp;
    dc_endpoint_t *ep;
    dc_store_t *store;
    dc_request_t req;

    (void)state;
    assert_int_equal(ops->abi_version, DC_TRANSPORT_ABI_VERSION);
    assert_string_equal(ops->name, "shm");
    assert_int_equal(ops->query(&topo, &attr), DCOMM_OK);
    assert_int_equal(attr.usable, 1);
    assert_int_equal(attr.same_host_only, 1);
    assert_true(attr.priority > 0);

    assert_non_null(mkdtemp(dir));
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_OK);
    boot.store = store;

    peers[0] = 2; /* other host */
    boot.npeers = 1;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "rank 2"));
    peers[0] = 5; /* no such rank */
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);
    peers[0] = peers[1] = 1; /* twice */
    boot.npeers = 2;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);

    boot.shm_ring_size = 12; /* below the 4 KiB minimum */
    boot.npeers = 0;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "DCOMM_SHM_RING_SIZE=12"));
    boot.shm_ring_size = 2ull << 30; /* above the 1 GiB maximum */
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);
    boot.shm_ring_size = 0;

    /* rank 1 never shows up: open times out instead of hanging */
    peers[0] = 1;
    boot.npeers = 1;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_TIMEOUT);
    assert_int_equal(dc_shm_ptracer_windows(), 0); /* a failed open withdraws it too */

    /* no peers: still a doorbell to sleep on */
    boot.npeers = 0;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_OK);
    assert_non_null(ops->doorbell(tp));
    int fd = 0;
    assert_int_equal(ops->wait_fd(tp, &fd), DCOMM_OK);
    assert_int_equal(fd, -1);
    assert_int_equal(ops->connect(tp, 1, &ep), DCOMM_ERR_INVALID_ARG);
    assert_int_equal(ops->progress(tp), 0);
    assert_int_equal(ops->check(tp), DCOMM_OK);
    ops->close(tp);

    /* NULL buffer with a length */
    peers[0] = 0;
    boot.npeers = 1;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_OK);
    assert_int_equal(ops->connect(tp, 0, &ep), DCOMM_OK);
    assert_int_equal(ops->isend(ep, NULL, 10, 1, &req), DCOMM_ERR_INVALID_ARG);
    assert_int_equal(ops->irecv(ep, NULL, 10, 1, &req), DCOMM_ERR_INVALID_ARG);
    assert_int_equal(ops->isend(ep, NULL, 0, 1, NULL), DCOMM_ERR_INVALID_ARG);
    ops->close(tp);

    store->ops->close(store);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_self_and_close),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_burst),
        cmocka_unit_test(test_mismatch),
        cmocka_unit_test(test_bandwidth),
    };

    return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
